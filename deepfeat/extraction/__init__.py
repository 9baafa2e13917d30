"""Stage 2, images -> features: the torch-free front with its all-cached fast path (``api``), the torch engine
(``engine``), the on-disk cache (``cache``), preprocessing and datasets (``preprocessing``) and the one
device / precision resolver (``device``). Importing this package imports no torch."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "extract_features": "deepfeat.extraction.api",
    "save_features": "deepfeat.extraction.api",
    "UnreadableImagesError": "deepfeat.extraction.api",
    "FeatureExtractor": "deepfeat.extraction.engine",
    "FeatureCache": "deepfeat.extraction.cache",
    "fuse_features": "deepfeat.extraction.fusion",
    "handcrafted_features": "deepfeat.extraction.handcrafted",
    "FeatureSet": "deepfeat.features",
    "load_features": "deepfeat.features",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
