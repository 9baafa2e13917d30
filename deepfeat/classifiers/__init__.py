"""Stage 4, classifiers: presets and Pipelines (``presets``), the extra estimators (``estimators``), the
images-in :class:`~deepfeat.classifiers.deep_classifier.DeepFeatureClassifier` and model files (``model_files``)."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "DeepFeatureClassifier": "deepfeat.classifiers.deep_classifier",
    "make_pipeline": "deepfeat.classifiers.deep_classifier",
    "save_model": "deepfeat.classifiers.model_files",
    "load_model": "deepfeat.classifiers.model_files",
    "describe_model": "deepfeat.classifiers.model_files",
    "PRESETS": "deepfeat.classifiers.presets",
    "get_classifier": "deepfeat.classifiers.presets",
    "build_pipeline": "deepfeat.classifiers.presets",
    "make_selector": "deepfeat.classifiers.presets",
    "describe_presets": "deepfeat.classifiers.presets",
    "GramSVC": "deepfeat.classifiers.estimators",
    "KernelNaiveBayes": "deepfeat.classifiers.estimators",
    "BalancedSampleWeight": "deepfeat.classifiers.estimators",
    "EarlyStoppingMLP": "deepfeat.classifiers.small_data",
    "EarlyStoppingSGD": "deepfeat.classifiers.small_data",
    "FlooredGaussianNB": "deepfeat.classifiers.small_data",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
