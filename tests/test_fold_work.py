"""One fold pipeline, one fold maker, one interval, one check per parameter.

The local runner, nested CV and the Dask task map must compute a fold with the same functions
(:mod:`deepfeat.evaluation.fold_work`), so the same fold computed by each path gives identical cells; every
evaluation parameter is checked in one place, with one message, wherever it is given.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfeat import defaults
from deepfeat.classifiers.presets import get_classifier, make_selector
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import cross_validation as cvmod
from deepfeat.evaluation import distributed as dmod
from deepfeat.evaluation import fold_work, nested
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.evaluation.folds import make_folds
from deepfeat.evaluation.intervals import mean_interval
from deepfeat.features import FeatureSet

ROOT = Path(__file__).resolve().parents[1]
CV = dict(folds=3, progress=False, baseline="majority", fold_cache=None)


def _features(seed=0, n=60, d=24):
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b", "c"], n // 3)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, :3] += (y == "a")[:, None]
    X[:, 3:5] += (y == "b")[:, None]
    return FeatureSet(X, y, sha256=[f"{i:064x}" for i in range(n)])


def _same_cell(a: dict, b: dict):
    assert a["score_kind"] == b["score_kind"]
    np.testing.assert_array_equal(a["pred"], b["pred"])
    np.testing.assert_array_equal(a["scores"], b["scores"])


# ------------------------------------------------------------------------------------------------ one fold pipeline

def test_one_fold_computed_by_the_local_nested_and_dask_paths_gives_identical_cells():
    fs = _features()
    classes, y = np.unique(fs.y, return_inverse=True)
    X = fs.X
    r, k, tr, te = make_folds(y, None, 3, 1, 0)[0]
    task = (r, k, tr, te, 0)
    estimators = {"svm": get_classifier("svm"), "knn": get_classifier("knn"), "nb": get_classifier("nb")}
    selector = make_selector("mrmr", n_features=8)
    hist = np.random.default_rng(1).random((len(y), 6))
    # the fold, by hand
    direct = fold_work.Fold(X, y, tr, te)
    mrmr = direct.mrmr(selector)
    cells = {(c, s): direct.score(est, s, selector) for c, est in estimators.items() for s in ("none", "mrmr")}
    base = direct.baselines(True, hist)
    # the local runner
    local = cvmod._run_fold(task, X, y, estimators, ["none", "mrmr"], selector, True, hist, None)
    # the Dask tasks, called in this process: prep -> cells, baselines
    prep = dmod._prep(X, y, (tr, te), selector, None, None)
    dask_cells = {(c, s): dmod._cell(X, y, (tr, te), prep, est, s, selector if s == "mrmr" else None, None, None)
                  for c, est in estimators.items() for s in ("none", "mrmr")}
    dask_base = dmod._baselines(X, y, (tr, te), True, hist)
    np.testing.assert_array_equal(local["mrmr"]["ranking"], mrmr["ranking"])
    np.testing.assert_array_equal(prep["mrmr"]["ranking"], mrmr["ranking"])
    assert local["n_features"] == {"none": X.shape[1], "mrmr": 8}
    for key, cell in cells.items():
        _same_cell(local["results"][key], cell)
        _same_cell(dask_cells[key], cell)
    assert list(base) == list(dask_base) == [(fold_work.BASELINE_MAJORITY, "baseline"),
                                             (fold_work.BASELINE_HISTOGRAM, "baseline")]
    for key in base:
        _same_cell(local["results"][key], base[key])
        _same_cell(dask_base[key], base[key])
    # nested CV's cell on the same split: the same prep and views, so the accuracy of the same predictions
    cands = [{"estimator": est, "size": size, "features": None} for est in estimators.values()
             for size in (X.shape[1], 8)]
    acc = nested._split_accuracies(X, y, tr, te, cands, "fcq", None)
    expected = [np.mean(cells[(c, s)]["pred"] == y[te]) for c in estimators for s in ("none", "mrmr")]
    np.testing.assert_array_equal(acc, expected)


def test_every_path_goes_through_the_fold_functions(monkeypatch):
    """A spy on Fold: a local run, a nested run and the Dask tasks compute every cell through it."""
    calls = []
    real_score, real_accuracy, real_mrmr = fold_work.Fold.score, fold_work.Fold.accuracy, fold_work.Fold.mrmr
    monkeypatch.setattr(fold_work.Fold, "score", lambda self, est, s, sel=None: (
        calls.append(("score", s)), real_score(self, est, s, sel))[1])
    monkeypatch.setattr(fold_work.Fold, "accuracy", lambda self, est, size, sel=None: (
        calls.append(("accuracy", size)), real_accuracy(self, est, size, sel))[1])
    monkeypatch.setattr(fold_work.Fold, "mrmr", lambda self, sel: (calls.append(("mrmr",)), real_mrmr(self, sel))[1])
    fs = _features()
    res = cross_validate(fs, classifiers=["nb", "knn"], n_features=8, nested=True, inner_folds=2, **CV)
    assert calls.count(("score", "none")) == calls.count(("score", "mrmr")) == 3 * 2  # folds x classifiers
    n_candidates = len(res.nested["candidates"])
    assert sum(c[0] == "accuracy" for c in calls) == 3 * 2 * n_candidates + 3  # inner cells + one refit per fold
    assert len(res.per_fold) == 3 * (2 * 2 + 1)


def test_nested_sizes_use_the_one_auto_rule(monkeypatch):
    assert nested.nested_sizes(1280) == [1280, 521, 100] and nested.nested_sizes(64) == [64, 32]
    monkeypatch.setattr(nested, "auto_n_features", lambda d: 7)  # no 521 rule of its own left in nested
    assert nested.nested_sizes(50) == [50, 7]


# ------------------------------------------------------------------------------------------------ one fold maker

def test_inner_and_curve_splits_are_make_folds():
    from deepfeat.fewshot.curves import curve_splits

    y = np.repeat([0, 1, 2], 20)
    outer = [(r, k, tr, te, k) for r, k, tr, te in make_folds(y, None, 4, 1, 0)]
    inner = nested.inner_splits(outer, y, None, 3, 7)
    for (_, _, tr, _, _), splits in zip(outer, inner):
        again = make_folds(y[tr], None, 3, 1, 7)
        assert all(np.array_equal(a[0], b[2]) and np.array_equal(a[1], b[3]) for a, b in zip(splits, again))
    groups = np.arange(len(y)) // 2
    for (train, test), (_, k, tr, te) in zip(curve_splits(y, groups, 2, 0.3, 5),
                                             [f for f in make_folds(y, groups, 3, 2, 5) if f[1] == 0]):
        assert np.array_equal(train, tr) and np.array_equal(test, te)


def test_an_inner_fold_problem_fails_before_any_fold_is_computed(monkeypatch):
    fits = []
    real = fold_work.fit_score
    monkeypatch.setattr(fold_work, "fit_score", lambda *a: (fits.append(1), real(*a))[1])
    with pytest.raises(DeepfeatError, match=r"inner_folds=30 but the training part of outer fold 0 \(repeat 0\) "
                                            r"has a class with only 13 image\(s\); use inner_folds=13 or fewer"):
        cross_validate(_features(), classifiers=["nb"], nested=True, inner_folds=30, **CV)
    assert fits == []


# ------------------------------------------------------------------------------------------------ one check per parameter

@pytest.mark.parametrize("kwargs, message", [
    ({"folds": 1}, "The 'folds' parameter must be an int >= 2. Got 1 instead."),
    ({"folds": 2.5}, "The 'folds' parameter must be an int >= 2. Got 2.5 instead."),
    ({"repeats": 0}, "The 'repeats' parameter must be an int >= 1. Got 0 instead."),
    ({"nested": True, "inner_folds": 1}, "The 'inner_folds' parameter must be an int >= 2. Got 1 instead."),
    ({"baseline": "majorty"}, "The 'baseline' parameter must be one of 'auto', 'histogram', 'majority', 'none' "
                              "(or None, the same as 'none'). Got 'majorty' instead."),
    ({"n_features": 25}, "n_features=25 but the features have 24 columns (24 feature(s) in X); choose 1..24 or "
                         "'auto'"),
    ({"n_features": 0}, "n_features must be an int >= 1 or 'auto'; got 0"),
    ({"n_features": 5, "threshold": 0.1}, "give n_features or threshold for mRMR, not both"),
    ({"threshold": "high"}, "threshold must be a number"),
])
def test_cross_validate_checks_each_parameter_once_with_one_message(kwargs, message):
    with pytest.raises(DeepfeatError, match=re.escape(message)):
        cross_validate(_features(), classifiers=["nb"], **{**CV, **kwargs})


def test_learning_curves_and_few_shot_give_the_same_messages():
    from deepfeat.fewshot.curves import learning_curve
    from deepfeat.fewshot.evaluate import few_shot_evaluate

    fs = _features()
    with pytest.raises(DeepfeatError, match=re.escape("The 'repeats' parameter must be an int >= 1. Got 0")):
        learning_curve(fs, repeats=0)
    for run in (lambda b: learning_curve(fs, sizes=[5], repeats=2, baseline=b),
                lambda b: few_shot_evaluate(fs, ways=[2], shots=[1], episodes=4, baseline=b)):
        with pytest.raises(DeepfeatError, match=re.escape("The 'baseline' parameter must be one of 'auto', "
                                                          "'histogram', 'majority', 'none'")):
            run("hist")
        run(None), run("none"), run("majority")  # one value set everywhere; no images needed for these
    with pytest.raises(DeepfeatError, match=re.escape("n_features=25 but the features have 24 columns")):
        learning_curve(fs, sizes=[5], repeats=2, baseline="none", n_features=25)
    auto = learning_curve(fs, sizes=[5], repeats=2, baseline="none", n_features="auto", classifier="knn")
    twelve = learning_curve(fs, sizes=[5], repeats=2, baseline="none", n_features=12, classifier="knn")
    pd.testing.assert_frame_equal(auto.per_repeat.drop(columns="seconds"), twelve.per_repeat.drop(columns="seconds"))


def test_fit_and_the_estimator_refuse_more_features_than_columns_as_cv_does(tmp_path):
    from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
    from deepfeat.workflows import fit_model

    fs = _features()
    fs.meta = {"backbone": "test_efficientnet", "weights": "none", "layer": "pooled"}
    path = fs.save(tmp_path / "f.features")
    message = re.escape("n_features=25 but the features have 24 columns")
    with pytest.raises(DeepfeatError, match=message):
        fit_model(path, tmp_path / "m.joblib", classifier="nb", select="mrmr", n_features=25)
    with pytest.raises(DeepfeatError, match=message):
        DeepFeatureClassifier(selector="mrmr", n_features=25, classifier="nb").fit(fs.X, fs.y)
    model, _ = fit_model(path, tmp_path / "m.joblib", classifier="nb", select="mrmr", n_features="auto")
    assert model.selector.n_features == 12  # "auto" resolved by the one rule: half of 24


def test_cli_fit_and_curve_share_cvs_n_features_check(tmp_path, capsys):
    from cli_helpers import run

    fs = _features()
    fs.meta = {"backbone": "test_efficientnet", "weights": "none", "layer": "pooled"}
    path = fs.save(tmp_path / "f.features")
    code, _, err = run(capsys, "fit", path, "-o", tmp_path / "m.joblib", "--select", "mrmr", "--n-features", 5000)
    assert code == 2 and err.startswith("error: --n-features 5000 but the features have 24 columns")
    code, _, err = run(capsys, "curve", path, "-o", tmp_path / "c", "--n-features", 5000, "--baseline", "none")
    assert code == 2 and err.startswith("error: --n-features 5000 but the features have 24 columns")
    code, out, err = run(capsys, "curve", path, "-o", tmp_path / "c", "--sizes", "5", "--repeats", 2,
                         "--n-features", "auto", "--baseline", "none")
    assert code == 0, err
    code, _, err = run(capsys, "cv", path, "-o", tmp_path / "r", "--n-features", "many", "--quiet")
    assert code == 2 and "Invalid value for '--n-features': an int or 'auto'; got 'many'" in err  # typer's parse


def test_a_bad_scheduler_is_refused_before_any_work(monkeypatch):
    from deepfeat.evaluation import honesty

    monkeypatch.setattr(honesty, "histogram_features", lambda *a: pytest.fail("work began before the check"))
    with pytest.raises(DeepfeatError, match="The 'scheduler' parameter must be"):
        cross_validate(_features(), classifiers=["nb"], scheduler="cluster", **{**CV, "baseline": "auto"})


def test_one_cv_run_checks_its_scheduler_once(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from deepfeat import dask_client

    checks = []
    real = dask_client.check_scheduler
    monkeypatch.setattr(dask_client, "check_scheduler", lambda s: (checks.append(s), real(s))[1])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        res = cross_validate(_features(), classifiers=["nb"], scheduler=client, **CV)
    assert len(checks) == 1 and len(res.per_fold) == 3 * 3


def test_defaults_table_holds_the_new_evaluation_defaults():
    import inspect

    assert inspect.signature(cross_validate).parameters["inner_folds"].default == defaults.INNER_FOLDS
    assert inspect.signature(nested.nested_cross_validate).parameters["inner_folds"].default == defaults.INNER_FOLDS
    assert defaults.BASELINES == ("auto", "histogram", "majority", "none")


def test_the_baseline_names_live_in_one_module():
    literal = re.compile(r"[\"']baseline-(histogram-svm|majority)[\"']")
    holders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deepfeat").rglob("*.py")
                     if literal.search(p.read_text(encoding="utf-8")))
    assert holders == ["deepfeat/evaluation/fold_work.py"]


# ------------------------------------------------------------------------------------------------ one interval

def test_one_interval_for_verdict_curves_and_nested():
    from scipy import stats

    from deepfeat.evaluation.compare import corrected_t_test, fold_size_ratio
    from deepfeat.reporting.verdict import fold_intervals

    v = np.array([0.8, 0.9, 1.0, 0.85])
    iv = mean_interval(v)  # not a proportion: the Student-t interval
    half = stats.t.ppf(0.975, 3) * v.std(ddof=1) / np.sqrt(4)
    assert (iv.mean, iv.n) == (v.mean(), 4) and (iv.low, iv.high, iv.half) == pytest.approx(
        (v.mean() - half, v.mean() + half, half))
    corrected = mean_interval(v, test_train_ratio=0.25)  # the corrected t's interval of the same mean
    spread = corrected_t_test(v - v.mean(), 0.25)
    assert (corrected.low, corrected.high) == pytest.approx((v.mean() + spread["ci_low"], v.mean() + spread["ci_high"]))
    assert np.isnan(mean_interval([0.7]).low)
    res = cross_validate(_features(), classifiers=["nb"], nested=True, inner_folds=2, **CV)
    n_rows = res.config["featureset"]["n_rows"]
    n = mean_interval(res.nested["outer"]["accuracy"], test_train_ratio=fold_size_ratio(res), bounds=(0, 1),
                      n_items=n_rows)
    assert (res.nested["ci_low"], res.nested["ci_high"], res.nested["std"]) == (n.low, n.high, n.sd)
    assert "logit-scale" in res.nested["interval"]
    # the verdict's bars: the same helper, over each configuration's fold scores
    row = fold_intervals(res).set_index("config").loc["nb+none"]
    folds = res.per_fold[res.per_fold["config"] == "nb+none"]["accuracy"]
    same = mean_interval(folds, test_train_ratio=fold_size_ratio(res), bounds=(0, 1), n_items=n_rows)
    assert (row["mean"], row["low"], row["high"]) == (same.mean, same.low, same.high)


def _logit_interval_by_hand(scores, n_items, ratio, q):
    """The documented recipe, written out once more: continuity-adjusted mean, delta-method se on the logit
    scale, back through expit; joined with the Wilson interval of the pooled items (computed by hand too)."""
    from scipy.special import expit, logit

    v = np.asarray(scores, dtype=float)
    m, z = v.mean(), 1.959963984540054
    p = (m * n_items + 0.5) / (n_items + 1)
    se = v.std(ddof=1) * np.sqrt(1 / len(v) + ratio) / (p * (1 - p))
    centre = (m + z * z / (2 * n_items)) / (1 + z * z / n_items)
    half = z * np.sqrt(m * (1 - m) / n_items + z * z / (4 * n_items ** 2)) / (1 + z * z / n_items)
    return (min(expit(logit(p) - q * se), centre - half, m), max(expit(logit(p) + q * se), centre + half, m))


@pytest.mark.parametrize("scores", [
    [1.0] * 10,                                               # 100 % on every fold
    [1.0, 1.0, 0.97, 1.0, 1.0, 0.94, 1.0, 1.0, 1.0, 0.97],    # near 100 %: the plain t-interval passes 100
    [0.0] * 10,                                               # 0 %
    [0.5, 0.6, 0.4, 0.55, 0.45, 0.5, 0.6, 0.4, 0.5, 0.5],     # the middle
])
def test_proportion_interval_stays_inside_0_1_and_follows_the_recipe(scores):
    from scipy import stats

    iv = mean_interval(scores, test_train_ratio=1 / 9, bounds=(0, 1), n_items=320)
    assert 0.0 <= iv.low <= iv.mean <= iv.high <= 1.0 and iv.high > iv.low
    lo, hi = _logit_interval_by_hand(scores, 320, 1 / 9, stats.t.ppf(0.975, 9))
    assert (iv.low, iv.high) == pytest.approx((lo, hi))


def test_proportion_interval_edges():
    full = mean_interval([1.0] * 10, test_train_ratio=1 / 9, bounds=(0, 1), n_items=320)
    assert full.high == 1.0 and 0.98 < full.low < 0.99  # all correct still leaves doubt: 320 images, not infinity
    near = mean_interval([1.0, 1.0, 0.97, 1.0, 1.0, 0.94, 1.0, 1.0, 1.0, 0.97], bounds=(0, 1), n_items=320)
    assert mean_interval([1.0, 1.0, 0.97, 1.0, 1.0, 0.94, 1.0, 1.0, 1.0, 0.97]).high > 1.0 > near.high
    zero = mean_interval([0.0] * 5, bounds=(0, 1), n_items=100)
    assert zero.low == 0.0 and 0.03 < zero.high < 0.04  # Wilson's 0 of 100
    one_fold = mean_interval([0.9], bounds=(0, 1), n_items=50)  # one fold: the binomial part alone, normal quantile
    assert one_fold.n == 1 and 0.75 < one_fold.low < 0.9 < one_fold.high < 0.97
    assert np.isnan(mean_interval([0.9], bounds=(0, 1)).low)  # one score of unknown size: nothing to measure
    pct = mean_interval([100.0, 98.0, 99.0], bounds=(0, 100), n_items=90)  # any scale: percent in, percent out
    frac = mean_interval([1.0, 0.98, 0.99], bounds=(0, 1), n_items=90)
    assert (pct.low, pct.high) == pytest.approx((100 * frac.low, 100 * frac.high))
    with pytest.raises(ValueError, match="bounds"):
        mean_interval([0.5, 0.6], bounds=(1, 0))


def test_curve_and_few_shot_honesty_lists_keep_a_deprecated_alias():
    from deepfeat.fewshot.curves import learning_curve

    r = learning_curve(_features(), sizes=[5], repeats=2, baseline="none", classifier="nb", select="none")
    with pytest.warns(FutureWarning, match=r"CurveResults.honesty .* use CurveResults.honesty_lines\(\)"):
        old = r.honesty
    assert old == r.honesty_lines() and any("Splits were" in line for line in old)
    lo, hi = r.summary[["ci_low", "ci_high"]].iloc[0]
    per = r.per_repeat
    iv = mean_interval(per["accuracy"], test_train_ratio=float((per["n_test"] / per["n_train"]).mean()),
                       bounds=(0, 1), n_items=float(per["n_test"].mean()))
    assert (lo, hi) == (iv.low, iv.high) and 0 <= lo <= hi <= 1
