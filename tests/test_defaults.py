"""One name, one default per parameter: the CLI and the Python API agree, and the old darknet19/lite0 split is gone."""
from __future__ import annotations

import inspect
from enum import Enum

import numpy as np
import pytest

from deepfeat import cli, defaults
from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.experiments import Experiment, fit_model, run_experiment
from deepfeat.extraction.api import extract_features
from deepfeat.extraction.engine import FeatureExtractor
from deepfeat.finetuning.run import finetune
from deepfeat.selection.mrmr import MRMRSelector


def _default(func, name):
    value = inspect.signature(func).parameters[name].default
    value = value.value if isinstance(value, Enum) else value
    return list(value) if isinstance(value, (list, tuple)) else value


# (CLI command, library function, {CLI option: library parameter})
PAIRS = [
    (cli.extract, extract_features, {"model": "model", "weights": "weights", "layer": "layer", "device": "device",
                                     "precision": "precision", "batch_size": "batch_size", "workers": "num_workers",
                                     "image_size": "image_size", "crop_border": "crop_border",
                                     "scheduler": "scheduler", "shard_size": "shard_size", "resources": "resources"}),
    (cli.extract, FeatureExtractor.__init__, {"model": "model", "weights": "weights", "layer": "layer",
                                              "device": "device", "precision": "precision"}),
    (cli.cv, cross_validate, {"classifier": "classifiers", "select": "selections", "n_features": "n_features",
                              "mrmr_method": "mrmr_method", "folds": "folds", "repeats": "repeats",
                              "groups": "groups", "seed": "seed", "n_jobs": "n_jobs", "class_weight": "class_weight",
                              "baseline": "baseline", "scheduler": "scheduler"}),
    (cli.fit, fit_model, {"classifier": "classifier", "select": "select", "n_features": "n_features",
                          "mrmr_method": "mrmr_method", "class_weight": "class_weight", "seed": "seed"}),
    # the estimator's classifier stays "svm" (calibrated probabilities need 5 images per class); `deepfeat fit`
    # and fit_model ask for "svm-calibrated" so that predict writes probabilities
    (cli.fit, DeepFeatureClassifier.__init__, {"n_features": "n_features", "seed": "seed",
                                               "class_weight": "class_weight"}),
    (cli.finetune_cmd, finetune, {"model": "model", "weights": "weights"}),
]


@pytest.mark.parametrize("command, function, names", PAIRS, ids=lambda v: getattr(v, "__qualname__", ""))
def test_cli_and_library_share_every_default(command, function, names):
    for option, param in names.items():
        assert _default(command, option) == _default(function, param), (command.__name__, option, function)


def test_the_defaults_table_is_what_the_signatures_use():
    assert _default(extract_features, "model") == _default(finetune, "model") == defaults.MODEL
    assert _default(DeepFeatureClassifier.__init__, "model") == defaults.MODEL
    assert _default(MRMRSelector.__init__, "n_features") == _default(cross_validate, "n_features") == "auto"
    assert _default(DeepFeatureClassifier.__init__, "n_features") == "auto"


def test_deep_feature_classifier_mrmr_uses_the_auto_size_not_10():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 40)), np.repeat([0, 1], 30)
    X[:, :3] += y[:, None]
    clf = DeepFeatureClassifier(selector="mrmr", classifier="svm").fit(X, y)
    assert clf.pipeline_.named_steps["select"].get_support().sum() == 20  # half of 40 (521 of >= 1,000)
    X1000 = rng.normal(size=(60, 1000))
    sel = MRMRSelector().fit(X1000 + y[:, None] * rng.random(1000), y)
    assert sel.get_support().sum() == 521


def test_a_pipeline_with_finetuning_and_no_model_uses_one_model_for_both(tmp_path, monkeypatch):
    """Regression: 0.1 fine-tuned darknet19 and then extracted with tf_efficientnet_lite0 (checkpoint refused)."""
    import deepfeat.evaluation.cross_validation as cvmod
    import deepfeat.extraction.api as api
    import deepfeat.finetuning.run as ftmod

    calls = {}

    class Stop(Exception):
        pass

    def fake_finetune(source, *, model, weights, out, config, progress):
        calls["finetune"] = model
        return type("R", (), {"checkpoint": out})()

    def fake_extract(source, *, model=defaults.MODEL, **kw):
        calls["extract"] = model
        raise Stop

    monkeypatch.setattr(ftmod, "finetune", fake_finetune)
    monkeypatch.setattr(api, "extract_features", fake_extract)
    monkeypatch.setattr(cvmod, "cross_validate", lambda *a, **k: None)
    monkeypatch.setattr("deepfeat.reporting.finetune_report.write_finetune_report", lambda result: {})
    toml = tmp_path / "exp.toml"
    toml.write_text("[finetune]\nenabled = true\nepochs = 1\n[cv]\nfolds = 2\n")
    with pytest.raises(Stop):
        run_experiment(Experiment.from_toml(toml), tmp_path / "out", source=str(tmp_path), log=lambda *_: None)
    assert calls == {"finetune": defaults.MODEL, "extract": defaults.MODEL}
