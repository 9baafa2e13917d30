"""Issue 23, item 3, through the CLI: small or degenerate data that crashed a classifier with a traceback in 0.2."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run

from deepfeat import FeatureSet

META = {"backbone": "tiny_darknet", "weights": "none", "layer": "logits", "input_size": [3, 32, 32]}
CV = ["--folds", "2", "--quiet", "--baseline", "majority", "--fold-cache", "none"]


def _features(path, X, y):
    FeatureSet(np.asarray(X, np.float32), y=np.asarray(y), meta=dict(META)).save(path)
    return path


def _small_binary(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    return _features(tmp_path / "small.features", rng.normal(size=(10, 4)) + np.repeat([0, 3], 5)[:, None],
                     np.repeat(["a", "b"], 5))


@pytest.mark.parametrize("classifier", ["ann", "ann-es", "sgd"])
def test_cv_with_early_stopping_on_a_small_set(tmp_path, capsys, classifier):
    # 2 folds of 10 images: 5 training images, 1 for validation < 2 classes (0.2: scikit-learn's ValueError)
    code, _, err = run(capsys, "cv", _small_binary(tmp_path), "-o", tmp_path / "rep", "--classifier", classifier,
                       "--select", "none", *CV)
    assert code in (0, None), err
    assert "Traceback" not in err
    per_fold = pd.read_csv(tmp_path / "rep" / "per_fold.csv")
    assert per_fold[per_fold.classifier == classifier].accuracy.notna().all()


def test_curve_with_the_ann_preset_on_a_small_set(tmp_path, capsys):
    with pytest.warns(UserWarning, match="early stopping is off for this fit"):  # the classifier's note
        code, _, err = run(capsys, "curve", _small_binary(tmp_path, seed=1), "-o", tmp_path / "curve",
                           "--classifier", "ann-es", "--select", "none", "--sizes", "2,3", "--repeats", "1",
                           "--baseline", "none")
    assert code in (0, None), err
    assert len(pd.read_csv(tmp_path / "curve" / "curve.csv")) == 2


def test_cv_nb_on_constant_features_scores_the_priors(tmp_path, capsys):
    src = _features(tmp_path / "const.features", np.ones((20, 6)), np.repeat(["a", "b"], 10))
    code, _, err = run(capsys, "cv", src, "-o", tmp_path / "rep", "--classifier", "nb", "--select", "none", *CV)
    assert code in (0, None), err  # 0.2: "ValueError: Input contains NaN" from the AUC
    per_fold = pd.read_csv(tmp_path / "rep" / "per_fold.csv")
    assert (per_fold[per_fold.classifier == "nb"].roc_auc == 0.5).all()


def test_cv_on_a_feature_file_with_complex_values_is_one_error_line(tmp_path, capsys):
    good = _features(tmp_path / "real.features", np.zeros((20, 6)), np.repeat(["a", "b"], 10))
    with np.load(good) as f:
        members = {k: f[k] for k in f.files}
    members["X"] = (1j * np.ones((20, 6))).astype(np.complex64)  # 0.2 cast it to zeros with a warning
    np.savez(tmp_path / "complex.npz", **members)
    code, _, err = run(capsys, "cv", tmp_path / "complex.npz", "-o", tmp_path / "rep", "--classifier", "nb", *CV)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: {tmp_path / 'complex.npz'}: FeatureSet: X is complex (complex64); "
                                            "features must be real numbers. Pass X.real or np.abs(X) yourself if "
                                            "that is what you mean")


def test_a_threshold_that_keeps_no_feature_runs_with_the_best_one(tmp_path, capsys):
    rng = np.random.default_rng(2)
    src = _features(tmp_path / "f.features", rng.normal(size=(30, 5)) + np.repeat([0, 2], 15)[:, None],
                    np.repeat(["a", "b"], 15))
    with pytest.warns(UserWarning, match=r"reaches threshold=1000000000.0 .* keeps one feature"):
        code, _, err = run(capsys, "cv", src, "-o", tmp_path / "rep", "--classifier", "knn", "--select", "mrmr",
                           "--mrmr-threshold", "1e9", *CV)
    assert code in (0, None), err  # 0.2: "Found array with 0 feature(s)" from KNeighborsClassifier
    per_fold = pd.read_csv(tmp_path / "rep" / "per_fold.csv")
    assert (per_fold[per_fold.selection == "mrmr"].n_features == 1).all()
    code, _, err = run(capsys, "fit", src, "-o", tmp_path / "m.joblib", "--classifier", "knn", "--select", "mrmr",
                       "--mrmr-threshold", "1e9")
    assert code in (0, None), err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_threshold_that_is_not_a_finite_number_is_one_error_line(tmp_path, capsys, value):
    src = _small_binary(tmp_path)
    code, _, err = run(capsys, "cv", src, "-o", tmp_path / "rep", "--select", "mrmr", "--mrmr-threshold", value, *CV)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: --mrmr-threshold must be a float in the range (-inf, inf) or "
                                            f"None. Got {value} instead.")
    assert not (tmp_path / "rep").exists()  # refused before any fold ran
