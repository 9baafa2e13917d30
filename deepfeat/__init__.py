"""deepfeat: deep CNN features + mRMR selection + shallow classifiers, measured honestly.

Public names are imported lazily so that ``import deepfeat`` (and ``deepfeat --help``) stays fast and does
not import torch until a backbone is actually needed.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from deepfeat.lazy import lazy_exports

try:
    __version__ = _dist_version("deepfeat")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.2.0+unknown"

# public name -> module that defines it
_LAZY = {
    "FeatureSet": "deepfeat.features",
    "load_features": "deepfeat.features",
    "fuse_features": "deepfeat.extraction.fusion",
    "DeepfeatError": "deepfeat.errors",
    "MRMRSelector": "deepfeat.selection.mrmr",
    "FeatureExtractor": "deepfeat.extraction.engine",
    "extract_features": "deepfeat.extraction.api",
    "FeatureCache": "deepfeat.extraction.cache",
    "create_backbone": "deepfeat.backbones",
    "DeepFeatureClassifier": "deepfeat.classifiers.deep_classifier",
    "make_pipeline": "deepfeat.classifiers.deep_classifier",
    "cross_validate": "deepfeat.evaluation.cross_validation",
    "CVResults": "deepfeat.evaluation.cross_validation",
    "write_report": "deepfeat.reporting.report",
    "finetune": "deepfeat.finetuning.run",
    "FinetuneConfig": "deepfeat.finetuning.run",
    "cross_validate_finetuned": "deepfeat.evaluation.infold",
    "load_finetuned": "deepfeat.finetuning.checkpoints",
    "save_model": "deepfeat.classifiers.model_files",
    "load_model": "deepfeat.classifiers.model_files",
    "open_source": "deepfeat.data.sources",
    "few_shot_evaluate": "deepfeat.fewshot.evaluate",
    "learning_curve": "deepfeat.fewshot.curves",
    "check_report": "deepfeat.reporting.writing",
    "run_experiment": "deepfeat.experiments",
}

__all__, __getattr__, __dir__ = lazy_exports("deepfeat", _LAZY, globals(), extra=["__version__"])
