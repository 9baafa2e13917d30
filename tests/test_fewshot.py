"""Few-shot episodes and evaluation: leaks, determinism, CI coverage, errors, CLI."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

from deepfeat.cli import app
from deepfeat.errors import DeepfeatError
from deepfeat.fewshot.episodes import EpisodeSampler
from deepfeat.fewshot.evaluate import episode_accuracies, few_shot_evaluate
from deepfeat.features import FeatureSet


def _features(n_classes=4, per_class=40, d=6, dup_every=7, subjects_per_class=8, seed=0, sep=2.0):
    """Gaussian classes; every ``dup_every``-th row repeats the sha256 of the row before it (a duplicate);
    subjects shared across classes so the cross-class subject rule is exercised too."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(0, 1, (len(y), d)) + sep * np.eye(n_classes, d)[y]
    sha = np.asarray([f"h{i}" for i in range(len(y))])
    dup = np.arange(1, len(y))[np.arange(1, len(y)) % dup_every == 0]
    dup = dup[y[dup] == y[dup - 1]]
    sha[dup] = sha[dup - 1]
    groups = np.asarray([f"s{rng.integers(subjects_per_class * n_classes // 2)}" for _ in y])
    return FeatureSet(X, y=[f"c{v}" for v in y], sha256=sha, groups=groups)


def test_episodes_never_share_image_or_subject():
    fs = _features()
    sampler = EpisodeSampler(fs.y, sha256=fs.sha256, groups=fs.groups)
    assert sampler.n_duplicates > 0
    plan = sampler.plan(3, 2, 3, 300, seed=1)
    for e in range(plan.n_episodes):
        s, q = plan.support[e].ravel(), plan.query[e].ravel()
        assert not set(fs.sha256[s]) & set(fs.sha256[q])
        assert not set(fs.groups[s]) & set(fs.groups[q])
        assert len(set(fs.sha256[np.r_[s, q]])) == len(s) + len(q)  # no duplicate anywhere in the episode
        # every support / query row carries the label of its way
        labels = plan.class_names[plan.classes[e]]
        assert (fs.y[plan.support[e]] == labels[:, None]).all() and (fs.y[plan.query[e]] == labels[:, None]).all()


def test_ungrouped_episodes_never_share_image():
    fs = _features()
    sampler = EpisodeSampler(fs.y, sha256=fs.sha256)
    plan = sampler.plan("all", 5, 10, 500, seed=3)
    assert plan.n_ways == 4
    both = np.concatenate([plan.support.reshape(500, -1), plan.query.reshape(500, -1)], axis=1)
    hashes = fs.sha256[both]
    assert all(len(set(h)) == both.shape[1] for h in hashes)


def test_episodes_deterministic_by_seed():
    fs = _features()
    a = EpisodeSampler(fs.y, sha256=fs.sha256, groups=fs.groups).plan(2, 3, 4, 50, seed=7)
    b = EpisodeSampler(fs.y, sha256=fs.sha256, groups=fs.groups).plan(2, 3, 4, 50, seed=7)
    c = EpisodeSampler(fs.y, sha256=fs.sha256, groups=fs.groups).plan(2, 3, 4, 50, seed=8)
    assert np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query)
    assert not np.array_equal(a.support, c.support)
    r1 = few_shot_evaluate(fs, ways=[2], shots=[1, 3], queries=4, episodes=40, classifiers=["prototype", "knn"], seed=5)
    r2 = few_shot_evaluate(fs, ways=[2], shots=[1, 3], queries=4, episodes=40, classifiers=["prototype", "knn"], seed=5)
    assert r1.per_episode["accuracy"].tolist() == r2.per_episode["accuracy"].tolist()


def _one_shot_truth(mu):
    """Exact expected accuracy of the 1-shot 2-way Euclidean prototype classifier for 1-D classes N(-mu, 1),
    N(mu, 1): correct when sign(x - m) is opposite to sign(p1 - p0), with x - m ~ N(-mu, 1.5) independent of
    p1 - p0 ~ N(2 mu, 2) (the midpoint m and the difference are independent)."""
    a, b = norm.cdf(mu / np.sqrt(1.5)), norm.cdf(2 * mu / np.sqrt(2))
    return a * b + (1 - a) * (1 - b)


def test_ci_covers_known_accuracy():
    mu, truth, covered, runs = 0.5, _one_shot_truth(0.5), 0, 60
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        y = np.repeat([0, 1], 1000)
        X = (rng.normal(0, 1, len(y)) + np.where(y == 1, mu, -mu))[:, None]
        r = few_shot_evaluate(FeatureSet(X, y=y), ways=[2], shots=[1], queries=15, episodes=200,
                              classifiers=["prototype_euc"], seed=seed, baseline="none")
        row = r.table.iloc[0]
        covered += row["ci_low"] <= truth <= row["ci_high"]
    assert 0.85 <= covered / runs <= 1.0, (covered, runs, truth)


def test_vectorised_prototypes_match_sklearn():
    from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

    fs = _features(sep=0.8)
    plan = EpisodeSampler(fs.y).plan(3, 4, 5, 30, seed=0)
    acc_euc = episode_accuracies(fs.X, plan, "prototype_euc")
    acc_knn = episode_accuracies(fs.X, plan, "knn", standardize="none")
    truth = np.repeat(np.arange(3), 5)
    for e in range(30):
        S, Q = fs.X[plan.support[e]].reshape(12, -1), fs.X[plan.query[e]].reshape(15, -1)
        ys = np.repeat(np.arange(3), 4)
        assert acc_euc[e] == pytest.approx((NearestCentroid().fit(S, ys).predict(Q) == truth).mean())
        assert acc_knn[e] == pytest.approx((KNeighborsClassifier(1).fit(S, ys).predict(Q) == truth).mean())


def test_results_table_methods_and_skips():
    fs = _features()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = few_shot_evaluate(fs, ways=[2, 9, "all"], shots=[1, 50], queries=5, episodes=10,
                              classifiers=["prototype", "logreg", "svm"], baseline="none")
    assert set(r.table["method"]) == {"prototype_cos", "prototype_euc", "logreg", "svm"}
    assert set(r.table["ways"]) == {"2", "all (4)"}
    reasons = " ".join(s["reason"] for s in r.skipped)
    assert "9-way asked for, but the FeatureSet has only 4 classes" in reasons
    assert "needs 2 classes with >= 55 distinct images" in reasons
    assert any("skipped" in str(w.message) for w in caught)
    assert (r.table["ci_low"] <= r.table["accuracy_mean"]).all()
    assert (r.table["accuracy_mean"] > 1 / r.table["n_ways"] + 0.1).all()  # well above chance: sep=2 classes
    assert r.table["episodes_per_s"].gt(0).all()


def test_bad_parameters_are_named():
    fs = _features()
    with pytest.raises(DeepfeatError, match="unknown few-shot method 'proto'"):
        few_shot_evaluate(fs, classifiers=["proto"])
    with pytest.raises(DeepfeatError, match="The 'shots' parameter must be a comma list of integers"):
        few_shot_evaluate(fs, shots="1,x")
    with pytest.raises(DeepfeatError, match="'standardize' parameter must be 'none' or 'support'"):
        few_shot_evaluate(fs, standardize="all")
    with pytest.warns(UserWarning, match="same episodes as 2-way 1-shot"):
        r = few_shot_evaluate(fs.subset(np.isin(fs.y, ["c0", "c1"])), ways=[2, "all"], shots=[1], queries=3,
                              episodes=5, classifiers=["knn"])
    assert r.table["ways"].tolist() == ["2"]
    with pytest.raises(DeepfeatError, match="no few-shot configuration could be run"):
        few_shot_evaluate(fs, ways=[7], shots=[1], episodes=5)


def test_standardize_support_and_baseline_same_episodes():
    fs = _features()
    hist = fs.X * 3 + 1  # a "baseline" that prototypes-euc cannot tell apart from X up to scale
    r = few_shot_evaluate(fs, ways=[2], shots=[3], queries=4, episodes=30, classifiers=["prototype_euc", "svm"],
                          standardize="support", baseline=("scaled", hist))
    pe = r.per_episode
    a = pe[(pe.features == "features") & (pe.method == "prototype_euc")]["accuracy"].to_numpy()
    b = pe[(pe.features == "scaled") & (pe.method == "prototype_euc")]["accuracy"].to_numpy()
    assert np.array_equal(a, b)  # same episodes, affine-equivalent features -> identical per-episode accuracy
    assert any("scaler fitted on the support set only" in line for line in r.honesty_lines())


def test_finetune_overlap_reported():
    fs = _features()
    fs.meta["finetune"] = {"train_sha256": list(fs.sha256[:10])}
    r = few_shot_evaluate(fs, ways=[2], shots=[1], queries=30, episodes=30, classifiers=["prototype_euc"])
    assert any(line.startswith("WARNING: the backbone was fine-tuned (or validated) on") for line in r.honesty_lines())
    fs.meta["finetune"] = {"train_sha256": ["not-here"]}
    r = few_shot_evaluate(fs, ways=[2], shots=[1], queries=5, episodes=10, classifiers=["prototype_euc"])
    assert any("none of which appears in any query set" in line for line in r.honesty_lines())


def test_cli_fewshot(tmp_path):
    path = _features().save(tmp_path / "f.features")
    out = tmp_path / "fs"
    res = CliRunner().invoke(app, ["fewshot", str(path), "-o", str(out), "--ways", "2,all", "--shots", "1,5",
                                   "--queries", "5", "--episodes", "20", "--method", "prototype,knn",
                                   "--seed", "3"])
    assert res.exit_code == 0, res.output
    for name in ("fewshot.csv", "fewshot.png", "config.json", "report.md", "report.html", "episodes.csv"):
        assert (out / name).is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["episodes"] == 20 and cfg["versions"]["deepfeat"]
    assert "support and query never share a subject" in (out / "report.md").read_text().lower()


def test_cli_fewshot_bad_input(tmp_path):
    from deepfeat.cli import main

    path = _features().save(tmp_path / "f.features")
    with pytest.raises(SystemExit) as exc:
        main(["fewshot", str(path), "-o", str(tmp_path / "o"), "--method", "nope"])
    assert exc.value.code == 2
