"""MRMRSelector: exact agreement with mrmr-selection (fcq), MI variants vs a slow reference, edge cases."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from deepfeat.errors import DeepfeatError
from deepfeat.selection.mrmr import MRMRSelector

with warnings.catch_warnings():  # mrmr-selection switches off all warnings on import; keep that local
    from mrmr import mrmr_classif
    from mrmr.pandas import _f_classif


def make_data(n, d, n_classes, *, seed, dtype=np.float64, n_constant=0):
    """Correlated features: informative ones, linear combinations of them, noise; offsets and scales vary."""
    X, y = make_classification(
        n_samples=n, n_features=d, n_informative=max(2, min(40, d // 5)), n_redundant=min(200, d // 3),
        n_classes=n_classes, n_clusters_per_class=1, shuffle=True, random_state=seed,
    )
    rng = np.random.default_rng(seed)
    X = X * rng.uniform(0.2, 5.0, d) + rng.uniform(-3.0, 3.0, d)
    X[:, rng.choice(d, n_constant, replace=False)] = 0.0
    return X.astype(dtype), y


def reference_ranking(X, y, k):
    with warnings.catch_warnings():  # scikit-learn's F-test warns about constant columns
        warnings.simplefilter("ignore")
        picks = mrmr_classif(pd.DataFrame(X), pd.Series(y), K=k, show_progress=False, n_jobs=1)
    return [int(p) for p in picks]


@pytest.mark.parametrize(
    "n, d, n_classes, k, dtype, n_constant",
    [
        (3256, 1000, 4, 40, np.float32, 0),  # the study's shape; mrmr_classif needs ~5 s for K=40
        (300, 60, 2, 60, np.float64, 0),  # rank every feature
        (80, 300, 3, 50, np.float32, 5),  # n_samples < n_features, constant columns
        (500, 120, 6, 100, np.float64, 3),
    ],
)
def test_fcq_picks_equal_mrmr_classif(n, d, n_classes, k, dtype, n_constant):
    X, y = make_data(n, d, n_classes, seed=n + d, dtype=dtype, n_constant=n_constant)
    selector = MRMRSelector(n_features=k).fit(X, y)
    assert selector.ranking_.tolist() == reference_ranking(X, y, k)


def test_fcq_with_dataframe_and_string_labels_equals_mrmr_classif():
    X, y = make_data(150, 40, 3, seed=7)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(40)])
    labels = pd.Series(np.array(["ALL", "healthy", "other"])[y])
    selector = MRMRSelector(n_features=15).fit(df, labels)
    expected = mrmr_classif(df, labels, K=15, show_progress=False, n_jobs=1)
    assert list(selector.feature_names_in_[selector.ranking_]) == list(expected)
    assert set(selector.get_feature_names_out()) == set(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relevance_is_bit_identical_to_mrmr_selection(dtype):
    X, y = make_data(777, 50, 4, seed=3, dtype=dtype)
    X[:, 1] += 1000.0  # large offset: float32 sums lose digits, exactly as scikit-learn's do
    selector = MRMRSelector(n_features=5).fit(X, y)
    expected = _f_classif(pd.DataFrame(X), pd.Series(y)).to_numpy()
    np.testing.assert_array_equal(selector.relevance_, expected)


def test_scores_in_pick_order_and_nan_elsewhere():
    X, y = make_data(200, 30, 3, seed=1)
    selector = MRMRSelector(n_features=8).fit(X, y)
    assert selector.scores_.shape == (30,)
    assert np.isnan(np.delete(selector.scores_, selector.ranking_)).all()
    assert selector.scores_[selector.ranking_[0]] == selector.relevance_.max()
    assert selector.get_support().sum() == 8
    assert selector.transform(X).shape == (200, 8)
    np.testing.assert_array_equal(selector.transform(X), X[:, np.sort(selector.ranking_)])


@pytest.mark.parametrize("method", ["fcq", "fcd"])
def test_threshold_keeps_the_prefix_with_scores_at_or_above_it(method):
    X, y = make_data(300, 50, 3, seed=11)
    full = MRMRSelector(n_features=50, method=method).fit(X, y)
    pick_scores = full.scores_[full.ranking_]
    threshold = float(np.sort(pick_scores)[len(pick_scores) // 2])
    below = np.flatnonzero(pick_scores < threshold)
    expected = full.ranking_[: below[0]]
    selector = MRMRSelector(n_features=None, threshold=threshold, method=method).fit(X, y)
    np.testing.assert_array_equal(selector.ranking_, expected)
    assert (selector.scores_[selector.ranking_] >= threshold).all()
    assert 0 < len(expected) < 50


def test_threshold_above_every_score_keeps_the_most_relevant_feature():
    # 0.2 handed 0 columns to the classifier, which then failed; issue 23 keeps the best one and says so
    X, y = make_data(100, 10, 2, seed=0)
    best = int(np.argmax(MRMRSelector(n_features=1).fit(X, y).relevance_))
    with pytest.warns(UserWarning, match=rf"no feature of the 10 reaches threshold=1e\+300 \(the best, feature "
                                         rf"{best}, scores [0-9.e+]+\), so it keeps one feature"):
        selector = MRMRSelector(n_features=None, threshold=1e300).fit(X, y)
    assert selector.ranking_.tolist() == [best]
    assert selector.transform(X).shape == (100, 1) and np.isnan(selector.scores_).sum() == 9


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf")])
def test_a_threshold_that_is_not_a_finite_number_is_refused(threshold):
    X, y = make_data(50, 5, 2, seed=0)
    with pytest.raises(ValueError, match=r"'threshold' parameter of MRMRSelector must be a float in the range "
                                         r"\(-inf, inf\) or None"):
        MRMRSelector(n_features=None, threshold=threshold).fit(X, y)


def test_constant_columns_are_never_picked_and_raise_no_warning():
    X, y = make_data(120, 12, 3, seed=5)
    X[:, [0, 4]] = 0.1  # constant but non-zero: scikit-learn's F-test would see rounding noise
    X[:, 7] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selector = MRMRSelector(n_features=9).fit(X, y)
    assert not set(selector.ranking_) & {0, 4, 7}
    assert (selector.relevance_[[0, 4, 7]] == 0).all()


def test_fewer_positive_relevance_features_than_asked_warns_and_picks_those():
    X, y = make_data(120, 12, 3, seed=5, n_constant=4)
    with pytest.warns(UserWarning, match=r"Only 8 of the 12 features have positive relevance.*picked 8"):
        selector = MRMRSelector(n_features=10).fit(X, y)
    assert len(selector.ranking_) == 8


def test_more_features_than_columns_clamps_with_warning():
    X, y = make_data(100, 6, 2, seed=2)
    with pytest.warns(UserWarning, match=r"n_features=50 is greater than the 6 features of X; all 6 are ranked"):
        selector = MRMRSelector(n_features=50).fit(X, y)
    assert sorted(selector.ranking_) == list(range(6))


def test_ties_go_to_lowest_index_and_perfect_copies_of_the_picked_set_score_zero():
    X, y = make_data(200, 10, 2, seed=9)
    best = int(np.argmax(MRMRSelector(n_features=1).fit(X, y).relevance_))
    # column 0 is an exact copy of the best feature (same relevance: a tie), column 11 an affine copy
    X = np.hstack([X[:, [best]], X, -2.0 * X[:, [best]] + 1.0])
    selector = MRMRSelector(n_features=2).fit(X, y)
    assert selector.relevance_[0] == selector.relevance_[best + 1]
    assert selector.ranking_[0] == 0
    # after one pick, a copy's mean |r| with the picked set is 1: an infinite denominator, score 0 (with a
    # finite one it would score its relevance, the highest, and be picked second)
    assert selector.ranking_[1] not in (best + 1, 11)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(n_features=5, threshold=0.25), r"either n_features or threshold, not both.*pass n_features=None"),
        (dict(n_features=None), r"needs n_features .* or threshold .*both are None"),
        (dict(n_features=0), r"'n_features' parameter of MRMRSelector must be an int in the range \[1, inf\)"),
        (dict(method="mrmr"), r"'method' parameter of MRMRSelector must be a str among"),
    ],
)
def test_bad_parameters_have_clear_errors(params, match):
    X, y = make_data(50, 5, 2, seed=0)
    with pytest.raises(ValueError, match=match):
        MRMRSelector(**params).fit(X, y)


def test_nonfinite_input_names_the_column():
    X, y = make_data(50, 5, 2, seed=0)
    X[3, 2] = np.nan
    with pytest.raises(DeepfeatError, match=r"contains NaN in column 2 \(1 values\)"):
        MRMRSelector(n_features=2).fit(X, y)
    df = pd.DataFrame(X, columns=list("abcde"))
    df.iloc[:, 2] = 1.0
    df["d"] = np.inf
    with pytest.raises(DeepfeatError, match=r"contains infinity in column 3 \('d'\) \(50 values\)"):
        MRMRSelector(n_features=2).fit(df, y)


def test_one_class_is_an_error():
    X, _ = make_data(50, 5, 2, seed=0)
    with pytest.raises(DeepfeatError, match=r"at least 2 classes in y; got 1 class \('a'\)"):
        MRMRSelector(n_features=2).fit(X, ["a"] * 50)


# ---- mutual-information variants vs a slow, obviously-correct reference --------------------------------

def slow_codes(x, n_bins):
    """Equal-frequency codes of one column, straight from the documented rule."""
    distinct = np.unique(x)
    if len(distinct) <= n_bins:
        return np.searchsorted(distinct, x)
    xs = np.sort(x)
    edges = [xs[(i * len(x)) // n_bins] for i in range(1, n_bins)]
    return np.array([sum(e <= v for e in edges) for v in x])


def slow_mrmr(X, y, k, method, n_bins):
    from sklearn.metrics import mutual_info_score

    codes = [slow_codes(X[:, j], n_bins) for j in range(X.shape[1])]
    relevance = [mutual_info_score(y, c) for c in codes]
    candidates = [j for j in range(X.shape[1]) if relevance[j] > 1e-12]
    picked, scores = [], []
    while candidates and len(picked) < k:
        best_j, best_score = None, -np.inf
        for j in candidates:  # ascending index: a later one must be better by more than rounding
            if picked:
                redundancy = np.mean([mutual_info_score(codes[s], codes[j]) for s in picked])
                score = relevance[j] - redundancy if method == "mid" else relevance[j] / max(redundancy, 1e-12)
            else:
                score = relevance[j]
            if best_j is None or score > best_score + 1e-12 * abs(best_score):
                best_j, best_score = j, score
        picked.append(best_j)
        scores.append(best_score)
        candidates.remove(best_j)
    return picked, scores, relevance


def tied_data(n, d, n_classes, seed):
    X, y = make_data(n, d, n_classes, seed=seed)
    X[:, ::3] = np.round(X[:, ::3])  # heavy ties: bin edges repeat and merge
    X[:, 1] = np.where(X[:, 1] > 0, 1.0, 0.0)  # binary
    return X, y


@pytest.mark.parametrize("n_bins", [2, 3, 5, 16, 256])
def test_equal_frequency_codes_follow_the_documented_rule(n_bins):
    from deepfeat.selection._stats import equal_frequency_codes

    X, _ = tied_data(97, 300, 2, seed=4)  # 300 columns: more than one block of 128
    codes = equal_frequency_codes(X, n_bins)
    assert codes.shape == (300, 97) and codes.dtype == np.uint8
    for j in range(300):
        np.testing.assert_array_equal(codes[j], slow_codes(X[:, j], n_bins))


@pytest.mark.parametrize("method", ["miq", "mid"])
@pytest.mark.parametrize("n, d, n_classes, n_bins, seed", [(150, 14, 3, 6, 0), (60, 25, 2, 10, 1), (90, 12, 4, 256, 2)])
def test_mi_variants_match_slow_reference(method, n, d, n_classes, n_bins, seed):
    X, y = tied_data(n, d, n_classes, seed)
    X[:, 5] = 2.5  # constant: MI 0, never picked
    k = 8
    picked, scores, relevance = slow_mrmr(X, y, k, method, n_bins)
    selector = MRMRSelector(n_features=k, method=method, n_bins=n_bins).fit(X, y)
    np.testing.assert_allclose(selector.relevance_, relevance, rtol=1e-10, atol=1e-12)
    assert selector.ranking_.tolist() == picked
    np.testing.assert_allclose(selector.scores_[selector.ranking_], scores, rtol=1e-10)
    assert 5 not in picked


def test_mi_threshold_and_float32():
    X, y = make_data(200, 20, 3, seed=8, dtype=np.float32)
    full = MRMRSelector(n_features=20, method="mid", n_bins=8).fit(X, y)
    assert full.ranking_.tolist() == slow_mrmr(X, y, 20, "mid", 8)[0]
    pick_scores = full.scores_[full.ranking_]
    threshold = float(pick_scores[5])
    expected = full.ranking_[: np.flatnonzero(pick_scores < threshold)[0]]
    selector = MRMRSelector(n_features=None, threshold=threshold, method="mid", n_bins=8).fit(X, y)
    np.testing.assert_array_equal(selector.ranking_, expected)


def test_one_sample_per_class_gives_zero_relevance_without_numpy_warnings():
    X, _ = make_data(30, 6, 2, seed=0)
    with warnings.catch_warnings(), pytest.warns(UserWarning, match="keeps one"):
        warnings.simplefilter("error", RuntimeWarning)
        selector = MRMRSelector(n_features=2).fit(X[:3], [0, 1, 2])  # no within-class variance: F undefined
    # issue 11: with no relevant feature, one is kept (not none) so a pipeline downstream still runs
    assert (selector.relevance_ == 0).all() and selector.ranking_.size == 1
