"""deepfeat: deep CNN features + mRMR selection + shallow classifiers, measured honestly.

Public names are imported lazily so that ``import deepfeat`` (and ``deepfeat --help``) stays fast and does
not import torch until a backbone is actually needed.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    __version__ = _dist_version("deepfeat")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.1.0+unknown"

# public name -> module that defines it
_LAZY = {
    "FeatureSet": "deepfeat.features",
    "load_features": "deepfeat.features",
    "DeepfeatError": "deepfeat.errors",
    "MRMRSelector": "deepfeat.mrmr",
    "FeatureExtractor": "deepfeat.extract",
    "extract_features": "deepfeat.extract_api",
    "FeatureCache": "deepfeat.cache",
    "create_backbone": "deepfeat.backbones",
    "DeepFeatureClassifier": "deepfeat.pipeline",
    "make_pipeline": "deepfeat.pipeline",
    "cross_validate": "deepfeat.evaluate",
    "CVResults": "deepfeat.evaluate",
    "write_report": "deepfeat.report",
    "finetune": "deepfeat.finetune",
    "FinetuneConfig": "deepfeat.finetune",
    "cross_validate_finetuned": "deepfeat.infold",
    "load_finetuned": "deepfeat.checkpoints",
    "save_model": "deepfeat.persist",
    "load_model": "deepfeat.persist",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'deepfeat' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
