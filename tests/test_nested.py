"""Grids on identical folds, the fold-result cache, nested CV (instrumented: no outer test row reaches inner
selection), determinism, and the CLI / TOML doors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import fold_work
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.features import FeatureSet
from deepfeat.selection.mrmr import MRMRSelector

N_BITS = 7  # row ids 0..119 written in binary into the last columns: a standardised bit column is > 0 iff the bit is 1


def _features(n=120, d=5, seed=0, bits=False, noise=0.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, d)) + y[:, None] * 0.8
    X += noise * np.random.default_rng(seed + 1).normal(size=X.shape)
    if bits:
        X = np.hstack([X, (np.arange(n)[:, None] >> np.arange(N_BITS)) & 1])
    return FeatureSet(X.astype(np.float32), [f"c{v}" for v in y], sha256=[f"{i:064x}" for i in range(n)])


def _decode(X) -> frozenset:
    B = np.asarray(X)[:, -N_BITS:] > 0
    return frozenset(int(v) for v in (B * (1 << np.arange(N_BITS))).sum(1))


class SpyLogistic(LogisticRegression):
    """Records the row ids of every fit and predict it sees (at full width: the id columns are all present)."""

    calls: list = []
    width = None

    def fit(self, X, y):
        if X.shape[1] == SpyLogistic.width:
            SpyLogistic.calls.append(("fit", _decode(X)))
        return super().fit(X, y)

    def predict(self, X):
        if X.shape[1] == SpyLogistic.width:
            SpyLogistic.calls.append(("predict", _decode(X)))
        return super().predict(X)


def test_nested_never_lets_an_outer_test_row_into_inner_selection(monkeypatch):
    fs = _features(bits=True)
    SpyLogistic.calls, SpyLogistic.width = [], fs.n_features
    seen_by_mrmr = []
    real_fit = MRMRSelector.fit
    monkeypatch.setattr(MRMRSelector, "fit", lambda self, X, y: (seen_by_mrmr.append(_decode(X)),
                                                                  real_fit(self, X, y))[1])
    res = cross_validate(fs, classifiers=[SpyLogistic(max_iter=200), "nb"], folds=4, nested=True, inner_folds=3,
                         baseline="majority", fold_cache=None, progress=False)
    pred = res.predictions[res.predictions.config == "baseline-majority"]
    outer_test = [frozenset(p["row"]) for _, p in pred.groupby(["repeat", "fold"])]
    everything = frozenset(range(len(fs)))
    outer_train = [everything - t for t in outer_test]
    assert len(outer_test) == 4 and frozenset().union(*outer_test) == everything

    fits = [ids for kind, ids in SpyLogistic.calls if kind == "fit"]
    preds = [ids for kind, ids in SpyLogistic.calls if kind == "predict"]
    assert len(fits) == len(preds)  # each fit is followed by one predict
    n_outer = n_inner = 0
    for fitted, predicted in zip(fits, preds):
        assert not fitted & predicted
        if predicted in outer_test:  # ordinary table or the nested final score: trained on that outer train
            assert fitted == outer_train[outer_test.index(predicted)]
            n_outer += 1
            continue
        owners = [f for f in range(4) if fitted | predicted <= outer_train[f]]
        assert len(owners) == 1, "an inner fit/predict touched rows outside one outer training part"
        assert fitted | predicted == outer_train[owners[0]]  # inner folds partition the outer training part
        assert not (fitted | predicted) & outer_test[owners[0]]
        n_inner += 1
    assert n_inner == 4 * 3  # one full-width spy candidate per inner split
    assert n_outer >= 4  # the ordinary table's 4 folds (+ the folds where nested chose the spy at full width)
    for ids in seen_by_mrmr:  # every mRMR ranking was fitted on one outer training part or inside it
        owners = [f for f in range(4) if ids <= outer_train[f]]
        assert len(owners) == 1 and not ids & outer_test[owners[0]]
    # one per outer fold (shared by the table's classifiers) + one per inner split (shared by sizes and
    # classifiers) + the nested refit of folds that chose an mRMR size (no fold cache here to share it)
    refits = int((res.nested["outer"]["n_features"] < fs.n_features).sum())
    assert len(seen_by_mrmr) == 4 + 4 * 3 + refits

    n = res.nested
    assert set(n["outer"]["fold"]) == {0, 1, 2, 3}
    assert n["estimate"] == pytest.approx(n["outer"]["accuracy"].mean())
    assert n["ci_low"] < n["estimate"] < n["ci_high"]
    assert n["gap"] == pytest.approx(n["best_of_table_accuracy"] - n["estimate"])
    assert n["baseline"]["config"] == "baseline-majority" and 0 <= n["baseline"]["p_value"] <= 1


def test_nested_is_deterministic_and_searches_the_main_hyperparameter():
    fs = _features()
    a = cross_validate(fs, classifiers=("svm", "knn"), folds=3, nested=True, inner_folds=3, baseline="majority",
                       fold_cache=None, progress=False)
    b = cross_validate(fs, classifiers=("svm", "knn"), folds=3, nested=True, inner_folds=3, baseline="majority",
                       fold_cache=None, progress=False)
    pd.testing.assert_frame_equal(a.nested["outer"], b.nested["outer"])
    pd.testing.assert_frame_equal(a.comparisons, b.comparisons)
    assert {"svm(C=1)+all", "svm(C=10)+all", "knn(n_neighbors=5)+mrmr2", "knn(n_neighbors=10)+all"} \
        <= set(a.nested["candidates"])
    with pytest.raises(DeepfeatError, match="inner_folds=50 but the training part of outer fold"):
        cross_validate(fs, classifiers=("nb",), folds=3, nested=True, inner_folds=50, fold_cache=None,
                       progress=False)


def test_nested_svm_candidates_share_one_kernel_matrix_and_score_as_separate_fits(monkeypatch):
    from deepfeat.classifiers.estimators import GramSVC

    fs = _features(n=150, d=12, noise=1.5)
    y = np.unique(fs.y, return_inverse=True)[1]
    tr, te = np.arange(0, 150, 2), np.arange(1, 150, 2)
    calls = []
    real = fold_work.rbf_kernel
    monkeypatch.setattr(fold_work, "rbf_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    fold = fold_work.Fold(fs.X, y, tr, te)
    a, b = fold.view()
    for C in (1.0, 10.0, 100.0):
        separate = float(np.mean(GramSVC(C=C).fit(a, y[tr]).predict(b) == y[te]))
        assert fold.accuracy(GramSVC(C=C), 12) == separate
    assert len(calls) == 2  # one training and one test kernel matrix for the three C values
    fold.accuracy(GramSVC(C=1.0, kernel_scale=2.0), 12)
    assert len(calls) == 4  # another kernel scale is another kernel


def test_nested_cv_with_all_four_classifiers_runs_the_ann_preset():
    res = cross_validate(_features(n=150, noise=0.5), classifiers=("svm", "knn", "ann", "nb"), folds=3, nested=True,
                         inner_folds=3, baseline="majority", fold_cache=None, progress=False)
    assert {"ann+all", "nb+all", "svm(C=10)+all"} <= set(res.nested["candidates"])
    assert res.nested["outer"]["accuracy"].between(0, 1).all() and len(res.nested["outer"]) == 3


def test_grid_scores_every_set_on_identical_folds_and_aligns_rows_by_sha256():
    fs = _features()
    other = _features(seed=5)
    other = FeatureSet(other.X, fs.y, sha256=fs.sha256)
    perm = np.random.default_rng(1).permutation(len(fs))
    single = cross_validate(fs, classifiers=("nb", "knn"), folds=4, baseline="majority", fold_cache=None, progress=False)
    res = cross_validate({"a": fs, "b": other.subset(perm)}, classifiers=("nb", "knn"), folds=4,
                         baseline="majority", fold_cache=None, progress=False)
    assert list(res.summary["features"].unique()) == ["a", "baseline", "b"]
    folds = {cfg: sorted(map(tuple, p[["repeat", "fold", "sha256"]].to_numpy()))
             for cfg, p in res.predictions.groupby("config")}
    assert len({tuple(v) for v in folds.values()}) == 1  # every configuration: the same images in the same folds
    # one FeatureSet in a grid gives the numbers it gives alone
    alone = single.per_fold.set_index(["config", "repeat", "fold"])["accuracy"]
    in_grid = res.per_fold[res.per_fold.features == "a"].copy()
    in_grid["config"] = in_grid["config"].str.removeprefix("a/")
    pd.testing.assert_series_equal(in_grid.set_index(["config", "repeat", "fold"])["accuracy"],
                                   alone.loc[in_grid.set_index(["config", "repeat", "fold"]).index])
    assert {"config_a", "config_b", "mean_diff", "ci_low", "ci_high", "p_value"} <= set(res.comparisons.columns)
    assert len(res.comparisons) == 9 * 8 // 2  # 2 sets x nb/knn x none/mrmr + majority: 9 configs, 36 pairs
    with pytest.raises(DeepfeatError, match="hold different images .*1 only in 'a'"):
        cross_validate({"a": fs, "b": other.subset(np.arange(1, len(fs)))}, classifiers=("nb",), folds=4,
                       progress=False)


def test_fold_cache_computes_only_new_cells(monkeypatch, tmp_path):
    fs = _features()
    calls, mrmr_fits = [], []
    real_fit_score, real_fit = fold_work.fit_score, MRMRSelector.fit
    monkeypatch.setattr(fold_work, "fit_score", lambda est, *a: (calls.append(type(est).__name__),
                                                             real_fit_score(est, *a))[1])
    monkeypatch.setattr(MRMRSelector, "fit", lambda self, X, y: (mrmr_fits.append(1), real_fit(self, X, y))[1])
    opts = dict(folds=3, baseline="majority", fold_cache=tmp_path / "fc", progress=False)
    first = cross_validate(fs, classifiers=("nb",), **opts)
    assert calls.count("FlooredGaussianNB") == 3 * 2 and len(mrmr_fits) == 3
    calls.clear(), mrmr_fits.clear()
    second = cross_validate(fs, classifiers=("nb", "knn"), **opts)
    assert calls.count("FlooredGaussianNB") == 0 and calls.count("KNeighborsClassifier") == 3 * 2
    assert len(mrmr_fits) == 0  # the mRMR rankings came from the cache too
    pd.testing.assert_frame_equal(first.per_fold[first.per_fold.classifier == "nb"].drop(columns=["fit_time",
                                  "predict_time", "mrmr_time"]).reset_index(drop=True),
                                  second.per_fold[second.per_fold.classifier == "nb"].drop(
                                      columns=["fit_time", "predict_time", "mrmr_time"]).reset_index(drop=True))
    calls.clear()
    cross_validate(fs, classifiers=("nb", "knn"), repeats=2, **opts)
    assert calls.count("FlooredGaussianNB") == 3 * 2 and calls.count("KNeighborsClassifier") == 3 * 2  # repeat 1 only
    uncached = cross_validate(fs, classifiers=("nb", "knn"), folds=3, baseline="majority", fold_cache=None,
                              progress=False)
    cols = ["config", "repeat", "fold", "accuracy", "roc_auc", "f1_macro"]
    pd.testing.assert_frame_equal(uncached.per_fold[cols], second.per_fold[cols])


def test_cli_grid_and_nested(tmp_path):
    from typer.testing import CliRunner

    from deepfeat.cli import app

    fs = _features()
    fs.save(tmp_path / "alpha.features")
    FeatureSet(_features(seed=4).X, fs.y, sha256=fs.sha256).save(tmp_path / "beta.features")
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["cv", str(tmp_path / "alpha.features"), str(tmp_path / "beta.features"), "-o",
                                 str(out), "--classifier", "nb", "--folds", "3", "--repeats", "2", "--nested",
                                 "--inner-folds", "2", "--fold-cache", "none", "--quiet"])
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(out / "results.csv")
    assert set(summary["features"]) == {"alpha", "beta", "baseline"}
    nested = pd.read_csv(out / "nested.csv")
    assert len(nested) == 6 and set(nested["repeat"]) == {0, 1}
    assert (out / "comparisons.csv").is_file()
    text = (out / "report.md").read_text()
    assert "Nested CV estimate (THE headline)" in text and "## Which configurations differ" in text
    assert "Nested CV estimate" in r.output


def test_toml_accepts_nested_keys(tmp_path):
    from deepfeat.experiments import Experiment

    p = tmp_path / "x.toml"
    p.write_text('[experiment]\nname = "x"\n[cv]\nnested = true\ninner_folds = 3\nrepeats = 2\n')
    exp = Experiment.from_toml(p)
    assert exp.cv == {"nested": True, "inner_folds": 3, "repeats": 2}
