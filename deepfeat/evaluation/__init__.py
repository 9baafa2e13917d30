"""Stage 5, evaluation: cross-validation (``cross_validation``), its results (``results``), honesty checks and
baselines (``honesty``), in-fold fine-tuned CV (``infold``), the report (``report``) and its plots (``plots``)."""
