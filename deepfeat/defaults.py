"""One table of defaults and allowed values, shared by the Python API, the CLI and the TOML pipeline files.

Every public function and every ``deepfeat`` command takes its defaults from here, so ``deepfeat extract`` and
``extract_features`` (or ``deepfeat fit`` and ``DeepFeatureClassifier``) can never disagree again;
``tests/test_defaults.py`` pairs every option of every command with its library parameter and checks both
defaults, and checks that the library signatures use this table.

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
| nested / fold_cache / rope | off / ``auto`` / 0.01 | cv, cross_validate, TOML ``[cv]`` |
| tta | ``none`` | extract, extract_features, TOML ``[features]`` |
| runtime | ``auto`` (OpenVINO / ONNX Runtime when installed, for fp32 on the CPU, if it matches eager torch) | extract, extract_features, FeatureExtractor |
| select (fit) | ``none`` | fit, fit_model |
| ways / shots / queries / episodes | (2, 5, all) / (1, 5, 10, 20) / 15 / 1000 | fewshot, few_shot_evaluate |
| classifiers / standardize (few-shot) | prototype, knn, logreg, svm / ``support`` | fewshot, few_shot_evaluate |
| sizes / classifier / select / repeats / test_fraction | (5, 10, 20, 50, 100, all) / svm / mrmr / 5 / 0.3 | curve, learning_curve |
| images per class / n_features (demo) | 40 / 100 | demo, run_demo |
| coverage / conformal_score / class_conditional / non_empty | None (no prediction sets) / ``lac`` / off / off | fit, fit_model, cv, cross_validate (non_empty: fit only) |
| calibrate | off | fit, fit_model |
| folds / nested / reference (compare) | 3 / on / ``reference_lite0_mrmr_svm`` | compare, compare_systems |
| saliency | on (Grad-CAM overlays in the CV report's gallery when the network can be rebuilt offline) | cv, cross_validate_experiment, write_report |

A TOML key left out takes the library default (the keys are the library's parameter names). ``config`` names a
run's settings and ``method`` an mRMR variant only: the experiment file is ``experiment`` and the few-shot
classifiers ``classifiers`` (0.2's ``config`` / ``methods`` still work in 0.3, with a FutureWarning).
"""
from __future__ import annotations

MODEL = "tf_efficientnet_lite0"
WEIGHTS = "imagenet"
LAYER = "logits"
LAYERS = ("logits", "pooled")
DEVICE = "auto"
PRECISION = "auto"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIME = "auto"
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
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
N_JOBS = "auto"
INNER_FOLDS = 5
RECIPE = "transfer"
# few-shot episodes: deepfeat fewshot, few_shot_evaluate (groups, seed and baseline as above)
FEWSHOT_WAYS = (2, 5, "all")
FEWSHOT_SHOTS = (1, 5, 10, 20)
FEWSHOT_QUERIES = 15
FEWSHOT_EPISODES = 1000
FEWSHOT_CLASSIFIERS = ("prototype", "knn", "logreg", "svm")
FEWSHOT_STANDARDIZE = "support"
# learning curves: deepfeat curve, learning_curve (groups, seed and baseline as above)
CURVE_SIZES = (5, 10, 20, 50, 100, "all")
CURVE_CLASSIFIER = "svm"
CURVE_SELECT = "mrmr"
CURVE_REPEATS = 5
CURVE_TEST_FRACTION = 0.3
# nested CV and the comparison statistics: deepfeat cv, cross_validate, TOML [cv]
NESTED = False
FOLD_CACHE = "auto"
ROPE = 0.01
# the other options of extract / fit and of the demo
TTA = "none"
FIT_SELECT = "none"
DEMO_IMAGES_PER_CLASS = 40
DEMO_N_FEATURES = 100
CONFORMAL_SCORE = "lac"
CONFORMAL_SCORES = ("lac", "aps")
CLASS_CONDITIONAL = False
NON_EMPTY = False
CALIBRATE = False
SALIENCY = True
# deepfeat compare: every system fine-tuned per fold costs, so 3 outer folds; the nested estimate of the reference
COMPARE_FOLDS = 3
COMPARE_NESTED = True
REFERENCE_SYSTEM = "reference_lite0_mrmr_svm"
