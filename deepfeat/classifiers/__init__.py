"""Stage 4, classifiers: presets and Pipelines (``presets``), the extra estimators (``estimators``), the
images-in :class:`~deepfeat.classifiers.deep_classifier.DeepFeatureClassifier` and model files (``model_files``)."""
