"""Evaluation: folds and cross-validation (``cross_validation``), results (``results``), honesty checks and
baselines (``honesty``), grids of feature sets on identical folds (``grid``), the fold-result cache
(``fold_cache``), nested CV (``nested``), paired statistics (``compare``), the Dask task map (``distributed``) and
in-fold fine-tuned CV (``infold``, ``finetune_compare``)."""
