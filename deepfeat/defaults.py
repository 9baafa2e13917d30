"""One table of defaults and allowed values, shared by the Python API, the CLI and the TOML pipeline files.

Every public function and every ``deepfeat`` command takes its defaults from here, so ``deepfeat extract`` and
``extract_features`` (or ``deepfeat fit`` and ``DeepFeatureClassifier``) can never disagree again;
``tests/test_defaults.py`` compares the typer signatures with the library signatures.

| parameter | default | where |
| --- | --- | --- |
| model | ``tf_efficientnet_lite0`` (real ImageNet weights installed with deepfeat: works offline) | extract, fit, finetune, TOML ``[features] model`` |
| weights | ``imagenet`` (offline first) | extract, finetune, DeepFeatureClassifier |
| layer | ``logits`` (the 1000 outputs the reference study used) | extract, DeepFeatureClassifier |
| device / precision | ``auto`` / ``auto`` | extract, finetune |
| n_features (mRMR) | ``auto``: 521 for >= 1,000 features, half otherwise | cv, fit, MRMRSelector, DeepFeatureClassifier |
| mrmr_method | ``fcq`` | cv, fit |
| classifiers (cv) | svm, knn, ann, nb | cv |
| selections (cv) | none, mrmr | cv |
| scheduler | None (no Dask: this machine, as before) | cv, extract |
| shard_size | 2048 images per extraction task | extract (with a scheduler) |
| classifier (fit) | ``svm-calibrated`` (Platt probabilities, so predict writes them) | fit, fit_model |
| folds / repeats / seed | 10 / 1 / 0 | cv |
| inner_folds | 5 (inner folds of nested CV) | cv ``--nested``, nested_cross_validate, TOML ``[cv] inner_folds`` |
| groups / baseline | ``auto`` / ``auto`` | cv |
| recipe (fine-tuning) | ``transfer`` (LP-FT, discriminative rates, frozen BN; ``study`` = the paper's MATLAB settings) | finetune, FinetuneConfig, TOML ``[finetune] recipe`` |
"""
from __future__ import annotations

MODEL = "tf_efficientnet_lite0"
WEIGHTS = "imagenet"
LAYER = "logits"
LAYERS = ("logits", "pooled")
DEVICE = "auto"
PRECISION = "auto"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
N_FEATURES = "auto"
MRMR_METHOD = "fcq"
MRMR_METHODS = ("fcq", "fcd", "miq", "mid")
CLASSIFIERS = ("svm", "knn", "ann", "nb")
SELECTIONS = ("none", "mrmr")
SCHEDULER = None
SHARD_SIZE = 2048
FIT_CLASSIFIER = "svm-calibrated"
FOLDS = 10
REPEATS = 1
SEED = 0
GROUPS = "auto"
BASELINE = "auto"
BASELINES = ("auto", "histogram", "majority", "none")
N_JOBS = 1
INNER_FOLDS = 5
RECIPE = "transfer"
