"""Issue 21, items 1, 2 and 4: calibration measured (ECE, reliability), conformal prediction sets with a coverage
guarantee, `deepfeat fit --calibrate / --coverage`, `deepfeat predict` sets, and the CV report's coverage table."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from report_helpers import make_cells

from deepfeat import FeatureSet
from deepfeat.classifiers.model_files import load_model, sidecar_path
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.calibration import expected_calibration_error, reliability_bins
from deepfeat.evaluation.conformal import (calibrate_conformal, conformal_threshold, nonconformity,
                                           prediction_sets, set_columns)
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.reporting.report import write_report
from deepfeat.workflows import fit_model

K = 4


def _draw(rng, n, *, rare=None, signal=1.2):
    """Softmax probabilities of a noisy classifier: the true class gets ``signal`` more logit. With ``rare``, the
    last class is that share of the rows and the model barely sees it (signal 0.2)."""
    p = None if rare is None else [(1 - rare) / (K - 1)] * (K - 1) + [rare]
    y = rng.choice(K, size=n, p=p)
    logits = rng.normal(size=(n, K))
    boost = np.where(y == K - 1, 0.2, signal) if rare is not None else signal
    logits[np.arange(n), y] += boost
    proba = np.exp(logits)
    return proba / proba.sum(1, keepdims=True), y


# ------------------------------------------------------------------------------------------------ calibration
def test_ece_of_a_known_case():
    # 4 rows at 90 % confidence, 3 right; 4 rows at 60 %, 2 right: ECE = 0.5 * |0.75 - 0.9| + 0.5 * |0.5 - 0.6|
    proba = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    y = np.array([0, 0, 0, 1, 0, 0, 1, 1])
    assert expected_calibration_error(y, proba) == pytest.approx(0.125)
    bins = reliability_bins(y, proba)
    assert bins["count"].tolist() == [4, 4] and bins["accuracy"].tolist() == [0.5, 0.75]
    # a calibrated forecaster: says 70 % and is right 70 % of the time -> 0
    assert expected_calibration_error(np.r_[np.zeros(7), np.ones(3)].astype(int), [[0.7, 0.3]] * 10) == 0


def test_ece_bins_are_equal_width_right_closed():
    proba = np.array([[1.0, 0, 0], [0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])
    bins = reliability_bins([0, 0, 1], proba)
    assert bins["bin"].tolist() == [5, 7, 14]  # 0.4 in (5/15, 6/15], 0.5 in (7/15, 8/15], 1.0 in the last bin
    assert bins["accuracy"].tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(DeepfeatError, match="one row per label"):
        expected_calibration_error([0], proba)


# ------------------------------------------------------------------------------------------------ conformal
def test_threshold_is_the_conformal_rank():
    scores = np.arange(1, 20) / 20  # n = 19: rank ceil(20 * 0.9) = 18
    assert conformal_threshold(scores, 0.9) == pytest.approx(18 / 20)
    assert math.isinf(conformal_threshold(scores[:5], 0.9))  # rank 6 of 5: every class in every set
    aps = nonconformity([[0.2, 0.5, 0.3]], "aps")
    assert aps[0].tolist() == pytest.approx([1.0, 0.5, 0.8])


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_coverage_guarantee_holds_over_many_seeds(score):
    """Split conformal: over 300 independent calibration / test draws, the mean coverage lies in
    [1 - alpha, 1 - alpha + 1 / (n + 1)] up to sampling error (4 standard errors of the mean)."""
    n_cal, n_test, level = 199, 400, 0.9
    covs = []
    for seed in range(300):
        rng = np.random.default_rng(seed)
        (pc, yc), (pt, yt) = _draw(rng, n_cal), _draw(rng, n_test)
        cal = calibrate_conformal(pc, yc, coverage=level, classes=list("abcd"), score=score)
        covs.append(prediction_sets(pt, cal)[np.arange(n_test), yt].mean())
    mean, se = np.mean(covs), np.std(covs) / np.sqrt(len(covs))
    assert level - 4 * se <= mean <= level + 1 / (n_cal + 1) + 4 * se, (mean, se)
    assert np.std(covs) > 0.005  # really random draws, not one fixed case


def test_mondrian_keeps_the_rare_class_covered_where_marginal_does_not():
    level, rare_cov = 0.9, {False: [], True: []}
    for seed in range(150):
        rng = np.random.default_rng(seed)
        (pc, yc), (pt, yt) = _draw(rng, 600, rare=0.1), _draw(rng, 600, rare=0.1)
        for mondrian in (False, True):
            cal = calibrate_conformal(pc, yc, coverage=level, classes=list("abcd"), class_conditional=mondrian)
            hit = prediction_sets(pt, cal)[np.arange(len(yt)), yt]
            rare_cov[mondrian].append(hit[yt == K - 1].mean())
    se = np.std(rare_cov[True]) / np.sqrt(150)
    assert np.mean(rare_cov[True]) >= level - 4 * se
    assert np.mean(rare_cov[False]) < level - 0.05  # the marginal guarantee is not a per-class one


def test_non_empty_sets_are_never_empty():
    rng = np.random.default_rng(0)
    (pc, yc), (pt, _) = _draw(rng, 300), _draw(rng, 2000)
    cal = calibrate_conformal(pc, yc, coverage=0.5, classes=list("abcd"))  # low coverage: some sets empty
    assert (prediction_sets(pt, cal).sum(1) == 0).any()
    cal = calibrate_conformal(pc, yc, coverage=0.5, classes=list("abcd"), non_empty=True)
    member = prediction_sets(pt, cal)
    assert member.sum(1).min() == 1
    assert member[np.arange(len(pt)), pt.argmax(1)].all()


def test_set_columns_name_the_classes_and_refer_the_rest():
    cal = {"thresholds": np.array([0.5, 0.5, 0.5]), "score": "lac", "non_empty": False, "classes": ["x", "y", "z"]}
    out = set_columns(np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.4, 0.4, 0.2], [np.nan] * 3]), cal)
    assert out["set"].tolist() == ["x", "y", "", ""]
    assert out["decision"].tolist() == ["alone", "alone", "refer", ""]
    out = set_columns(np.array([[0.45, 0.55, 0.0]]), {**cal, "thresholds": np.array([0.6] * 3)})
    assert out.loc[0, "set"] == "y|x" and out.loc[0, "set_size"] == 2


@pytest.mark.parametrize("coverage", [0, 1, 1.5, "0.9", True])
def test_bad_coverage_is_refused_naming_the_option(tmp_path, coverage):
    FeatureSet(np.zeros((4, 2)), ["a", "a", "b", "b"]).save(tmp_path / "f.features")
    with pytest.raises(DeepfeatError, match="--coverage must be a probability"):
        fit_model(tmp_path / "f.features", tmp_path / "m.joblib", coverage=coverage)
    with pytest.raises(DeepfeatError, match="--conformal-score must be one of"):
        fit_model(tmp_path / "f.features", tmp_path / "m.joblib", coverage=0.9, conformal_score="raps")


# ------------------------------------------------------------------------------------------------ fit / predict
def _features(tmp_path, n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(["blast", "lymph", "neutro"], n // 3)
    X = rng.normal(size=(n, 6)) + 0.8 * pd.factorize(pd.Series(y))[0][:, None]
    path = tmp_path / "f.features"
    FeatureSet(X.astype(np.float32), y, meta={"backbone": "tf_efficientnet_lite0", "weights": "imagenet",
                                             "layer": "logits"}).save(path)
    return path


@pytest.mark.parametrize("suffix", [".joblib", ".skops"])
def test_fit_calibrates_and_stores_the_conformal_calibration(tmp_path, suffix):
    model, path = fit_model(_features(tmp_path), tmp_path / f"m{suffix}", calibrate=True, coverage=0.9,
                            class_conditional=True, non_empty=True)
    cal, conf = model.calibration_, model.conformal_
    assert cal["method"] in ("sigmoid", "isotonic") and cal["log_loss"][cal["method"]] == min(cal["log_loss"].values())
    assert 0 <= cal["ece_after"] < 1 and 0 <= cal["ece_before"] < 1
    assert conf["coverage"] == 0.9 and conf["n_calibration"] == 90 and len(conf["thresholds"]) == 3
    side = json.loads(sidecar_path(path).read_text())
    assert side["calibration"]["ece_after"] == pytest.approx(cal["ece_after"])
    assert side["conformal"]["class_conditional"] is True
    loaded = load_model(path)
    assert loaded.conformal_["thresholds"].tolist() == conf["thresholds"].tolist()
    sets = prediction_sets(loaded.predict_proba(np.zeros((5, 6), np.float32)), loaded.conformal_)
    assert sets.sum(1).min() >= 1  # non_empty travelled with it
    model.fit(np.random.default_rng(0).normal(size=(20, 6)), ["a", "b"] * 10)  # a refit forgets the old records
    assert not hasattr(model, "conformal_") and not hasattr(model, "calibration_")


def test_coverage_needs_probabilities(tmp_path):
    with pytest.raises(DeepfeatError, match="--coverage needs class probabilities"):
        fit_model(_features(tmp_path), tmp_path / "m.joblib", classifier="svm", coverage=0.9)


def test_predict_writes_sets(tmp_path, monkeypatch):
    from deepfeat import workflows

    model, path = fit_model(_features(tmp_path), tmp_path / "m.joblib", coverage=0.8)
    X = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)

    def fake_paths(self, paths, on_error="skip"):  # the network is not the point here: feature rows stand in
        proba = self.predict_proba(X)
        table = pd.DataFrame({"path": paths, "label": self.predict(X)})
        for j, c in enumerate(self.classes_):
            table[f"proba_{c}"] = proba[:, j]
        return table.assign(error="")

    monkeypatch.setattr(type(model), "predict_paths", fake_paths)
    monkeypatch.setattr("deepfeat.data.sources.expand_image_paths", lambda images: ["a.png", "b.png", "c.png"])
    done = workflows.predict_images(path, ["x"], tmp_path / "p.csv")
    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(table.columns)[-4:] == ["set", "set_size", "decision", "error"]
    expected = set_columns(model.predict_proba(X), model.conformal_)
    assert table["set"].tolist() == expected["set"].tolist() and done.n_predicted == 3
    assert set(table["decision"]) <= {"alone", "refer"}


# ------------------------------------------------------------------------------------------------ cv report
def test_cv_measures_coverage_on_outer_folds_and_the_report_shows_it(tmp_path):
    fs = make_cells(tmp_path / "cells")
    res = cross_validate(fs, classifiers=("nb", "svm"), n_features=4, folds=3, progress=False, coverage=(0.8, 0.9),
                         fold_cache=None)
    conf = res.conformal
    assert set(conf["nominal"]) == {0.8, 0.9}
    overall = conf[conf["class"] == "all"]
    assert set(overall["config"]) == {"nb+none", "nb+mrmr"}  # svm gives decision values only: said in a note
    assert overall["n"].eq(len(fs)).all() and overall["coverage"].between(0, 1).all()
    assert any("svm+none: no class probabilities" in n for n in res.honesty["notes"])
    paths = write_report(res, tmp_path / "report")
    html = paths["report_html"].read_text()
    assert "Prediction sets (conformal)" in html and "expected calibration error" in html
    assert "plot_reliability" in paths and len(pd.read_csv(paths["calibration"]))
    assert len(pd.read_csv(paths["conformal"])) == len(conf)


def test_cv_calibrates_inside_the_training_part_only(tmp_path, monkeypatch):
    """The inner fits that calibrate an outer fold never see its test rows."""
    from deepfeat.evaluation import calibration

    fs = make_cells(tmp_path / "cells", n_per_class=8)
    seen = []
    real = calibration.out_of_fold_proba

    def spy(est, X, y, **kw):
        seen.append(X.copy())
        return real(est, X, y, **kw)

    monkeypatch.setattr(calibration, "out_of_fold_proba", spy)
    res = cross_validate(fs, classifiers=("nb",), selections=("none",), folds=3, progress=False, coverage=0.9,
                         fold_cache=None, baseline="none")
    pred = res.predictions
    assert len(seen) == 3
    for X, (_, part) in zip(seen, pred.groupby(["repeat", "fold"], sort=False)):
        test_rows = {tuple(r) for r in fs.X[part["row"].to_numpy()]}
        assert len(X) == len(fs) - len(part) and not test_rows & {tuple(r) for r in X}


# ------------------------------------------------------------------------------------------------ the commands
def test_cli_fit_prints_the_ece_and_cv_prints_the_coverage(tmp_path, capsys):
    from cli_helpers import run

    feats = _features(tmp_path)
    code, out, err = run(capsys, "fit", feats, "-o", tmp_path / "m.skops", "--calibrate", "--coverage", "0.9",
                         "--conformal-score", "aps")
    assert code == 0, err
    assert "ECE out-of-fold" in out and "prediction sets: 90 % coverage, aps score" in out
    code, out, err = run(capsys, "fit", feats, "-o", tmp_path / "m.skops", "--coverage", "95")
    assert code != 0 and "--coverage must be a probability in (0, 1)" in out + err
    code, out, err = run(capsys, "cv", feats, "-o", tmp_path / "rep", "--classifier", "nb", "--select", "none",
                         "--folds", "3", "--coverage", "0.8", "--coverage", "0.9", "--baseline", "none", "--quiet",
                         "--fold-cache", "none")
    assert code == 0, err
    assert "prediction sets nb+none at 80 %: coverage" in out and "prediction sets nb+none at 90 %" in out
    assert (tmp_path / "rep" / "conformal.csv").is_file()
