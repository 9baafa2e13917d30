"""Evaluation: the fold maker (``folds``), the one per-fold pipeline (``fold_work``: prep, cells, baselines; used by
local, nested and Dask runs), cross-validation (``cross_validation``), its parameter checks (``parameters``),
results (``results``), honesty checks and baselines (``honesty``), grids of feature sets on identical folds
(``grid``), the fold-result cache (``fold_cache``), nested CV (``nested``), paired statistics (``compare``), the one
interval of a mean score (``intervals``), the Dask task map (``distributed``) and in-fold fine-tuned CV
(``infold``, ``finetune_compare``)."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "cross_validate": "deepfeat.evaluation.cross_validation",
    "CVResults": "deepfeat.evaluation.cross_validation",
    "make_folds": "deepfeat.evaluation.folds",
    "nested_cross_validate": "deepfeat.evaluation.nested",
    "compare_configs": "deepfeat.evaluation.compare",
    "corrected_t_test": "deepfeat.evaluation.compare",
    "bayesian_t_test": "deepfeat.evaluation.compare",
    "mean_interval": "deepfeat.evaluation.intervals",
    "MeanInterval": "deepfeat.evaluation.intervals",
    "cross_validate_finetuned": "deepfeat.evaluation.infold",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
