"""cross_validate: selection inside folds, shared mRMR, grouping, input errors, duplicates, baselines."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.features import FeatureSet
from deepfeat.selection.mrmr import MRMRSelector

FAST = dict(classifiers=("nb", "knn"), folds=4, progress=False, baseline="majority")


def _synthetic(n=120, d=50, n_classes=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.normal(size=(n, d))
    X[:, :5] += y[:, None]  # five informative columns
    return FeatureSet(X, [f"c{v}" for v in y], **kw)


def test_selection_inside_folds_keeps_noise_at_chance_while_selecting_first_leaks():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(120, 2000)), rng.permutation(np.repeat(["a", "b"], 60))
    fs = FeatureSet(X, y)
    honest = cross_validate(fs, classifiers=("nb",), selections=("mrmr",), n_features=10, folds=5,
                            progress=False, baseline=None)
    acc_honest = honest.summary.loc[0, "accuracy_mean"]
    leaked_cols = MRMRSelector(n_features=10).fit(X, y).ranking_  # the mistake: select on all rows first
    leaky = cross_validate(FeatureSet(X[:, leaked_cols], y), classifiers=("nb",), selections=("none",), folds=5,
                           progress=False, baseline=None)
    acc_leaky = leaky.summary.loc[0, "accuracy_mean"]
    assert acc_honest < 0.65, acc_honest  # pure noise: chance is 0.5
    assert acc_leaky > 0.7 and acc_leaky - acc_honest > 0.15, (acc_honest, acc_leaky)
    assert "inside each training fold" in honest.honesty_lines()[0]


def test_mrmr_is_fitted_once_per_fold_and_shared_by_all_classifiers(monkeypatch):
    calls = []
    original = MRMRSelector.fit

    def counting(self, X, y):
        calls.append(X.shape)
        return original(self, X, y)

    monkeypatch.setattr(MRMRSelector, "fit", counting)
    res = cross_validate(_synthetic(), classifiers=("nb", "knn", "svm"), n_features=5, folds=4, progress=False,
                         baseline="majority")
    assert len(calls) == 4  # not 4 x 3
    assert all(shape[0] == 90 for shape in calls)  # fitted on the training rows only (3/4 of 120)
    assert set(res.summary["config"]) == {"nb+none", "nb+mrmr", "knn+none", "knn+mrmr", "svm+none", "svm+mrmr",
                                          "baseline-majority"}
    assert (res.summary.loc[res.summary["selection"] == "mrmr", "n_features"] == 5).all()
    assert len(res.mrmr) == 4 * 5 and res.mrmr["score"].notna().all()


def test_grouped_folds_never_split_a_subject_and_auto_says_so():
    fs = _synthetic(groups=[f"patient{i // 4}" for i in range(120)])
    res = cross_validate(fs, **FAST)
    pred = res.predictions[res.predictions["config"] == "nb+none"]
    assert (pred.groupby("group")["fold"].nunique() == 1).all()
    assert res.honesty["grouping"]["grouped"] and "30 subjects" in res.honesty["grouping"]["text"]
    assert "stratified group 4-fold" in res.honesty["folds"]


def test_groups_auto_without_subject_ids_and_none_with_them():
    res = cross_validate(_synthetic(), **FAST)
    assert "NOT grouped by subject: the FeatureSet records no subject ids" in res.honesty["grouping"]["text"]
    with pytest.warns(UserWarning, match="does hold subject ids"):
        res = cross_validate(_synthetic(groups=[f"p{i // 4}" for i in range(120)]), groups="none", **FAST)
    assert not res.honesty["grouping"]["grouped"]
    with pytest.raises(DeepfeatError, match="groups must be 'auto', 'none'"):
        cross_validate(_synthetic(), groups="patient_column", **FAST)


@pytest.mark.parametrize("make,kwargs,message", [
    (lambda: FeatureSet(np.zeros((10, 3)), ["a"] * 10), {}, "at least 2 classes; the FeatureSet has only"),
    (lambda: FeatureSet(np.random.default_rng(0).normal(size=(23, 3)), ["a"] * 20 + ["b"] * 3), {},
     r"class\(es\) \{'b': 3\} have fewer images than folds.*--folds 3"),
    (lambda: _synthetic(), {"n_features": 51}, "n_features=51 but the features have 50 columns"),
    (lambda: _synthetic(), {"n_features": 5, "threshold": 0.2}, "not both"),
    (lambda: _synthetic(), {"selections": ("pca",)}, "selections must be a non-empty subset"),
    (lambda: FeatureSet(np.zeros((4, 2))), {}, "has no labels"),
])
def test_bad_inputs_fail_clearly(make, kwargs, message):
    with pytest.raises(DeepfeatError, match=message):
        cross_validate(make(), **{**FAST, **kwargs})


def test_nonfinite_rows_are_named():
    fs = _synthetic(paths=[f"img{i}.png" for i in range(120)])
    fs.X[[7, 30], 2] = [np.nan, np.inf]
    with pytest.raises(DeepfeatError, match=r"2 of 120 feature rows contain NaN or inf \(first: img7.png, img30.png"):
        cross_validate(fs, **FAST)


def test_duplicates_counted_across_splits_and_conflicting_labels_listed():
    sha = [f"h{i}" for i in range(120)]
    sha[3] = sha[0]  # same class (0 and 3 are both c0); pair position across folds depends on the shuffle
    sha[61] = sha[1]  # rows 1 (c1) and 61 (c1)... make a conflict instead:
    sha[62] = sha[2]  # rows 2 (c2) and 62 (c2)
    fs = _synthetic(paths=[f"img{i}.png" for i in range(120)], sha256=sha)
    fs.y[62] = "c0"  # row 62 now conflicts with row 2
    res = cross_validate(fs, **FAST)
    dups = res.honesty["duplicates"]
    assert dups["n_groups"] == 3 and dups["n_pairs"] == 3
    fold = res.predictions[res.predictions["config"] == "nb+none"].set_index("row")["fold"]
    expected = sum(fold[a] != fold[b] for a, b in ((0, 3), (1, 61), (2, 62)))
    assert dups["pairs_across_split"] == [expected]
    assert [c["paths"] for c in dups["conflicting"]] == [["img2.png", "img62.png"]]
    lines = "\n".join(res.honesty_lines())
    assert "CONFLICTING LABELS: img2.png [c2] = img62.png [c0]" in lines
    assert "WARNING: 1 group(s) of byte-identical images carry different labels" in lines


def test_histogram_baseline_on_reachable_images_and_majority_row(tmp_path):
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(24):
        label = "red" if i % 2 else "blue"
        px = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
        px[..., 0 if label == "red" else 2] += 180
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(px).save(paths[-1])
        labels.append(label)
    fs = FeatureSet(rng.normal(size=(24, 6)), labels, paths=[str(p) for p in paths])
    res = cross_validate(fs, classifiers=("nb",), selections=("none",), folds=3, progress=False)
    acc = res.summary.set_index("config")["accuracy_mean"]
    assert acc["baseline-histogram-svm"] == 1.0 and acc["baseline-majority"] == 0.5
    assert "colour histogram + SVM 100.00 %" in res.honesty["baseline"]["text"]
    assert list(res.table().index) == ["nb", "baseline: majority class", "baseline: colour histogram + SVM"]
    with pytest.raises(DeepfeatError, match="baseline='histogram' needs the images: the FeatureSet records no"):
        cross_validate(_synthetic(), **{**FAST, "baseline": "histogram"})


def test_fold_features_hook_gets_each_fold_and_its_matrix_is_used():
    fs = _synthetic()
    seen = []

    def per_fold(index, train, test):
        seen.append((index, len(train), len(test)))
        assert not set(train) & set(test)
        X = fs.X.copy()
        X[:, 0] = 0.0 if index % 2 else X[:, 0]
        return X

    res = cross_validate(fs, fold_features=per_fold, folds=3, repeats=2, classifiers=("nb",),
                         selections=("none",), progress=False, baseline=None)
    assert sorted(i for i, _, _ in seen) == list(range(6)) and all(t == 40 for _, _, t in seen)
    assert sorted(res.per_fold[["repeat", "fold"]].itertuples(index=False)) == [(r, k) for r in (0, 1)
                                                                                for k in range(3)]
    with pytest.raises(DeepfeatError, match="fold_features for fold 0 returned shape"):
        cross_validate(fs, fold_features=lambda i, tr, te: np.zeros((5, 2)), **FAST)


def test_metrics_tables_and_predictions_are_consistent():
    res = cross_validate(_synthetic(), **FAST)
    s = res.summary.set_index("config")
    assert 0.6 < s.loc["nb+none", "accuracy_mean"] <= 1.0
    assert s.loc["nb+none", "roc_auc_mean"] > 0.8
    cm = res.confusion["nb+none"]["matrix"]
    assert cm.sum() == 120 and res.confusion["nb+none"]["classes"] == ["c0", "c1", "c2"]
    pred = res.predictions[res.predictions["config"] == "nb+none"]
    assert (pred["true"] == pred["pred"]).mean() == pytest.approx(np.trace(cm) / 120)
    assert {"score_c0", "score_c1", "score_c2", "fold", "repeat", "score_kind"} <= set(pred.columns)
    assert set(res.per_class["class"]) == {"c0", "c1", "c2"}
    assert res.config["parameters"]["folds"] == 4 and res.config["versions"]["scikit-learn"]
    assert res.config["featureset"]["identity"] == _synthetic().identity()


def test_parallel_folds_give_the_same_results():
    a = cross_validate(_synthetic(), **FAST)
    b = cross_validate(_synthetic(), **{**FAST, "n_jobs": 2})
    cols = ["config", "accuracy_mean", "f1_macro_mean"]
    assert a.summary[cols].equals(b.summary[cols])


def test_finetune_overlap_is_reported_loudly():
    sha = [f"h{i}" for i in range(120)]
    fs = _synthetic(sha256=sha, meta={"finetune": {"train_sha256": sha[:30], "val_sha256": sha[30:40]}})
    res = cross_validate(fs, **FAST)
    assert res.honesty["finetune"]["train_overlap"] == 30 and res.honesty["finetune"]["val_overlap"] == 10
    assert any(line.startswith("WARNING: the backbone was fine-tuned on 30 of the 120 CV images")
               for line in res.honesty_lines())


def test_class_weight_unsupported_is_recorded_not_silent():
    res = cross_validate(_synthetic(), class_weight="balanced", **FAST)
    assert any("not supported by knn" in n for n in res.honesty["notes"])


def test_mrmr_size_defaults_to_the_study_and_threshold_works():
    from deepfeat.selection.mrmr import auto_n_features

    assert (auto_n_features(1000), auto_n_features(1280), auto_n_features(64)) == (521, 521, 32)
    rng = np.random.default_rng(3)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 40))
    X[:, :3] += (np.arange(60)[:, None] // 20) * 1.5
    fs = FeatureSet(X, y)
    res = cross_validate(fs, classifiers=["nb"], folds=3, baseline=None, progress=False)
    assert res.config["parameters"]["n_features"] == 20
    res = cross_validate(fs, classifiers=["nb"], selections=["mrmr"], threshold=0.5, folds=3, baseline=None,
                         progress=False)
    kept = res.summary.set_index("config").loc["nb+mrmr", "n_features"]
    assert 1 <= kept < 40


def test_groups_from_a_csv_column(tmp_path):
    rng = np.random.default_rng(0)
    paths = [f"/data/cells/img{i}.png" for i in range(40)]
    fs = FeatureSet(rng.normal(size=(40, 6)), np.repeat(["a", "b"], 20), paths=paths)
    table = tmp_path / "subjects.csv"
    pd.DataFrame({"path": [p.split("/")[-1] for p in paths], "patient": [f"P{i // 4}" for i in range(40)]}).to_csv(
        table, index=False)
    res = cross_validate(fs, classifiers=["nb"], selections=["none"], folds=5, groups=f"{table}:patient",
                         baseline=None, progress=False)
    pred = res.predictions
    for patient in {f"P{i}" for i in range(10)}:
        rows = [i for i in range(40) if f"P{i // 4}" == patient]
        assert pred[pred["row"].isin(rows)]["fold"].nunique() == 1
    assert "subjects.csv column 'patient'" in " ".join(res.honesty_lines())
    with pytest.raises(DeepfeatError, match=r"lacks column\(s\) \['subject'\]"):
        cross_validate(fs, classifiers=["nb"], groups=f"{table}:subject", progress=False)
    pd.DataFrame({"path": ["img0.png"], "group": ["x"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DeepfeatError, match="39 of 40 images have no 'group'"):
        cross_validate(fs, classifiers=["nb"], groups=str(tmp_path / "short.csv"), progress=False)
