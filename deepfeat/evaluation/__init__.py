"""Stage 5, evaluation: cross-validation (``cross_validation``), its results (``results``), honesty checks and
baselines (``honesty``), in-fold fine-tuned CV (``infold``), the report (``report``) and its plots (``plots``);
grids of feature sets on identical folds (``grid``), the fold-result cache (``fold_cache``), nested CV (``nested``),
paired statistics (``compare``) and their report sections (``report_stats``)."""
