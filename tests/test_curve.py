"""Learning curves: fixed test set per repeat, nested training sets, grouping, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfeat.cli import app
from deepfeat.errors import DeepfeatError
from deepfeat.fewshot.curves import curve_splits, learning_curve
from deepfeat.features import FeatureSet


def _features(n_classes=3, per_class=40, d=12, seed=0, groups=False, sep=1.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(0, 1, (len(y), d)) + sep * np.eye(n_classes, d)[y]
    g = [f"s{i // 4}" for i in range(len(y))] if groups else None
    return FeatureSet(X, y=[f"c{v}" for v in y], groups=g, sha256=[f"h{i}" for i in range(len(y))])


def test_splits_grouped_and_test_fixed():
    fs = _features(groups=True)
    y = np.unique(fs.y, return_inverse=True)[1]
    for train, test in curve_splits(y, fs.groups, 3, 0.3, 0):
        assert not set(fs.groups[train]) & set(fs.groups[test])
        assert not set(train) & set(test)
    r = learning_curve(fs, sizes=[5, 10, "all"], classifier="knn", select="none", repeats=3, baseline=None)
    per = r.per_repeat
    # one test-set size per repeat, shared by every training size
    assert per.groupby("repeat")["n_test"].nunique().eq(1).all()
    assert sorted(per["n_per_class"].unique())[:2] == [5, 10]
    assert r.summary["ci95"].notna().all()
    assert any("grouped by subject" in line for line in r.honesty_lines())


def test_curve_learns_and_skips_large_sizes():
    fs = _features(sep=3.0)
    with pytest.warns(UserWarning, match="size 100 skipped"):
        r = learning_curve(fs, sizes="2,20,100,all", classifier="svm", select="mrmr", repeats=2, baseline="none")
    s = r.summary.set_index("size")
    assert "100" not in s.index and s.loc["all", "accuracy_mean"] > 0.8
    assert s.loc["all", "accuracy_mean"] >= s.loc["2", "accuracy_mean"] - 0.05


def test_curve_nested_training_sets():
    """The 5-per-class training set of a repeat is a subset of its 10-per-class one (seeded permutation)."""
    fs = _features()
    r1 = learning_curve(fs, sizes=[5], classifier="knn-fine", select="none", repeats=2, baseline=None, seed=4)
    r2 = learning_curve(fs, sizes=[5], classifier="knn-fine", select="none", repeats=2, baseline=None, seed=4)
    assert r1.per_repeat["accuracy"].tolist() == r2.per_repeat["accuracy"].tolist()


def test_curve_bad_parameters():
    fs = _features()
    with pytest.raises(DeepfeatError, match="'select' parameter must be 'mrmr' or 'none'"):
        learning_curve(fs, select="pca")
    with pytest.raises(DeepfeatError, match="no training size could be run"):
        learning_curve(fs, sizes=[500], repeats=1, baseline=None)
    with pytest.raises(DeepfeatError, match="needs the images"):
        learning_curve(fs, sizes=[5], repeats=1, baseline="histogram")


def test_curve_histogram_baseline_same_splits(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, y = [], []
    for c in range(2):
        for i in range(20):
            px = np.clip(rng.normal(80 + 90 * c, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            p = tmp_path / f"{c}_{i}.png"
            Image.fromarray(px).save(p)
            paths.append(str(p))
            y.append(c)
    fs = FeatureSet(rng.normal(0, 1, (40, 5)), y=y, paths=paths)
    r = learning_curve(fs, sizes=[5, "all"], classifier="knn", select="none", repeats=2)
    assert set(r.summary["features"]) == {"features", "colour-histogram"}
    hist = r.summary[r.summary.features == "colour-histogram"].set_index("size")
    assert hist.loc["all", "accuracy_mean"] > 0.9  # the colours separate these classes


def test_cli_curve(tmp_path):
    path = _features().save(tmp_path / "f.features")
    out = tmp_path / "curve"
    res = CliRunner().invoke(app, ["curve", str(path), "-o", str(out), "--sizes", "5,all", "--classifier", "knn",
                                   "--select", "none", "--repeats", "2"])
    assert res.exit_code == 0, res.output
    for name in ("curve.csv", "curve_summary.csv", "curve.png", "config.json", "report.md", "report.html"):
        assert (out / name).is_file()
    assert json.loads((out / "config.json").read_text())["repeats"] == 2
