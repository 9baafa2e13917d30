"""Evaluation: the fold maker (``folds``), the one per-fold pipeline (``fold_work``: prep, cells, baselines; used by
local, nested and Dask runs), cross-validation (``cross_validation``), its parameter checks (``parameters``),
results (``results``), honesty checks and baselines (``honesty``), grids of feature sets on identical folds
(``grid``), the fold-result cache (``fold_cache``), nested CV (``nested``), paired statistics (``compare``), the one
interval of a mean score (``intervals``), the Dask task map (``distributed``) and in-fold fine-tuned CV
(``infold``, ``finetune_compare``)."""
