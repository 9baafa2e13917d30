"""Classifier presets, the extra estimators (GramSVC, KernelNaiveBayes, BalancedSampleWeight), build_pipeline."""
from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepfeat.classifiers.estimators import (
    BalancedSampleWeight,
    FullBatchMLP,
    GramSVC,
    KernelNaiveBayes,
)
from deepfeat.classifiers.small_data import (
    EarlyStoppingMLP,
    EarlyStoppingSGD,
    FlooredGaussianNB,
    early_stopping_problem,
)
from deepfeat.classifiers.small_data import KNeighborsClassifier as SmallDataKNN
from deepfeat.classifiers.presets import (
    PRESETS,
    build_pipeline,
    describe_presets,
    final_estimator,
    get_classifier,
)
from deepfeat.errors import DeepfeatError


def _pipelines():
    out = []
    for name in ("svm", "knn", "ann", "nb"):
        out.append(build_pipeline(name))
        out.append(build_pipeline(name, selector="mrmr", n_features=2))
    return out


_PIPELINE_XFAIL = {
    "check_estimators_overwrite_params": "scikit-learn's Pipeline fits its step objects in place (as in sklearn)",
    "check_dont_overwrite_parameters": "scikit-learn's Pipeline fits its step objects in place (as in sklearn)",
}
_MRMR_MULTI_XFAIL = {c: "MRMRSelector takes a 1-d y; the Pipeline inherits multi-output tags from its classifier"
                     for c in ("check_classifier_multioutput", "check_classifiers_multilabel_representation_invariance",
                               "check_classifiers_multilabel_output_format_predict",
                               "check_classifiers_multilabel_output_format_predict_proba",
                               "check_classifiers_multilabel_output_format_decision_function")}


# scikit-learn's own MLPClassifier(early_stopping=True) fails these too (plus one_label, nan_inf, fit2d_1feature,
# which the small-data switch fixes); SGDClassifier(early_stopping=True) fails 14, these 4 among them.
_PARTIAL_FIT = "scikit-learn's partial_fit refuses early_stopping=True (as for its own estimator)"
_WEIGHTS = ("early stopping holds out a random part of the rows, so sample weights are not repeated rows (as for "
            "scikit-learn's own estimator with early_stopping=True)")
_EARLY_STOPPING_XFAIL = {
    EarlyStoppingMLP: {"check_fit_score_takes_y": _PARTIAL_FIT, "check_n_features_in_after_fitting": _PARTIAL_FIT,
                       "check_estimators_partial_fit_n_features": _PARTIAL_FIT,
                       "check_sample_weight_equivalence_on_dense_data": _WEIGHTS,
                       "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS},
    FullBatchMLP: {"check_sample_weight_equivalence_on_dense_data": _WEIGHTS},
    EarlyStoppingSGD: {"check_n_features_in_after_fitting": _PARTIAL_FIT,
                       "check_estimators_partial_fit_n_features": _PARTIAL_FIT,
                       "check_sample_weight_equivalence_on_dense_data": _WEIGHTS,
                       "check_sample_weight_equivalence_on_sparse_data": _WEIGHTS},
}


def _expected_failures(estimator):
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, FullBatchMLP) and not estimator.early_stopping:
        return {"check_sample_weight_equivalence_on_dense_data": "float32 matrix products: repeated rows reach the "
                "same optimum up to float32 rounding, not to the check's rtol 1e-7"}
    if type(estimator) in _EARLY_STOPPING_XFAIL:
        return _EARLY_STOPPING_XFAIL[type(estimator)]
    if isinstance(estimator, GramSVC):
        return {"check_sample_weight_equivalence_on_dense_data":
                "libsvm scales C per sample: weights are not equivalent to repeated rows (as for sklearn's SVC)"}
    if not isinstance(estimator, Pipeline):
        return {}
    out = dict(_PIPELINE_XFAIL)
    clf = final_estimator(estimator)
    if "select" in estimator.named_steps and isinstance(clf, (MLPClassifier, KNeighborsClassifier)):
        out.update(_MRMR_MULTI_XFAIL)
    return out


@parametrize_with_checks([KernelNaiveBayes(), GramSVC(), BalancedSampleWeight(GaussianNB()), FlooredGaussianNB(),
                          EarlyStoppingMLP(early_stopping=True, max_iter=50), EarlyStoppingSGD(early_stopping=True),
                          SmallDataKNN(), FullBatchMLP(), FullBatchMLP(early_stopping=False),
                          *_pipelines()],
                         expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_every_preset_builds_a_fresh_classifier_with_documented_parameters():
    assert len(describe_presets().splitlines()) == len(PRESETS)
    a, b = get_classifier("svm"), get_classifier("svm")
    assert a is not b
    assert get_classifier("knn-fine").n_neighbors == 1
    assert get_classifier("knn-medium").n_neighbors == 10
    assert get_classifier("knn-coarse").n_neighbors == 100
    assert get_classifier("knn-cosine").metric == "cosine"
    assert get_classifier("ann-narrow").hidden_layer_sizes == (10,)
    assert get_classifier("ann-wide").hidden_layer_sizes == (100,)
    assert get_classifier("ann-trilayered").hidden_layer_sizes == (10, 10, 10)
    assert get_classifier("ann", seed=7).random_state == 7
    assert get_classifier("ann").early_stopping is False and get_classifier("ann-es").early_stopping is True
    assert get_classifier("svm-cubic").degree == 3
    assert isinstance(get_classifier("nb-kernel"), KernelNaiveBayes)


@pytest.mark.parametrize("name,factor", [("svm-fine-gaussian", 0.25), ("svm-medium-gaussian", 1.0),
                                         ("svm-coarse-gaussian", 4.0)])
def test_matlab_gaussian_kernel_scale_is_factor_times_sqrt_p(name, factor):
    X, y = make_classification(80, 12, random_state=0)
    X = StandardScaler().fit_transform(X)
    clf = get_classifier(name).fit(X, y)
    assert clf.gamma_ == pytest.approx(1.0 / (factor * np.sqrt(12)) ** 2)
    ref = SVC(kernel="rbf", gamma=1.0 / (factor * np.sqrt(12)) ** 2).fit(X, y)
    np.testing.assert_allclose(clf.decision_function(X), ref.decision_function(X), rtol=1e-6, atol=1e-6)


def test_gram_svc_is_the_same_model_as_svc_gamma_scale():
    X, y = make_classification(150, 30, n_classes=3, n_informative=6, random_state=1)
    ours, ref = GramSVC().fit(X[:120], y[:120]), SVC(gamma="scale").fit(X[:120], y[:120])
    np.testing.assert_array_equal(ours.predict(X[120:]), ref.predict(X[120:]))
    np.testing.assert_allclose(ours.decision_function(X[120:]), ref.decision_function(X[120:]), atol=1e-6)
    assert ours.svc_.n_support_.tolist() == ref.n_support_.tolist()


def test_kernel_naive_bayes_matches_a_slow_reference():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), np.repeat([0, 1], 20)
    X[y == 1] += 1.0
    clf = KernelNaiveBayes().fit(X, y)
    x = rng.normal(size=(5, 3))
    expected = np.zeros((5, 2))
    for c in (0, 1):
        Xc = X[y == c]
        for j in range(3):
            v = Xc[:, j]
            iqr = (np.percentile(v, 75) - np.percentile(v, 25)) / 1.349
            h = 0.9 * min(v.std(ddof=1), iqr) * len(v) ** -0.2
            for i in range(5):
                dens = np.mean(np.exp(-0.5 * ((x[i, j] - v) / h) ** 2)) / (h * np.sqrt(2 * np.pi))
                expected[i, c] += np.log(dens)
        expected[:, c] += np.log(0.5)
    expected -= np.log(np.exp(expected).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_log_proba(x), expected, rtol=1e-8)


def test_kernel_naive_bayes_balanced_gives_uniform_priors():
    X, y = np.arange(12.0)[:, None], [0] * 9 + [1] * 3
    assert np.allclose(np.exp(KernelNaiveBayes(class_weight="balanced").fit(X, y).class_log_prior_), 0.5)
    assert np.allclose(np.exp(KernelNaiveBayes().fit(X, y).class_log_prior_), [0.75, 0.25])


def test_class_weight_is_set_wrapped_or_warned_never_silent():
    assert get_classifier("svm", class_weight="balanced").class_weight == "balanced"
    assert get_classifier("nb-kernel", class_weight="balanced").class_weight == "balanced"
    assert get_classifier("ann", class_weight="balanced").class_weight == "balanced"
    wrapped = get_classifier("ann-adam", class_weight="balanced")
    assert isinstance(wrapped, BalancedSampleWeight) and isinstance(wrapped.estimator, MLPClassifier)
    with pytest.warns(UserWarning, match="not supported by knn .*trained unweighted"):
        est = get_classifier("knn", class_weight="balanced")
    assert isinstance(est, KNeighborsClassifier)
    X, y = make_classification(60, 5, weights=[0.8], random_state=0)
    bal = BalancedSampleWeight(GaussianNB()).fit(X, y)
    assert np.allclose(bal.estimator_.class_prior_, 0.5)  # balanced weights equalise the class mass


def test_instances_are_cloned_and_bad_names_rejected():
    mine = SVC(C=3.0)
    got = get_classifier(mine)
    assert got is not mine and got.C == 3.0
    with pytest.raises(DeepfeatError, match="unknown classifier 'forest'.*svm, svm-calibrated"):
        get_classifier("forest")
    with pytest.raises(DeepfeatError, match="preset name or a scikit-learn classifier; got StandardScaler"):
        get_classifier(StandardScaler())
    with pytest.raises(DeepfeatError, match="unknown selector 'pca'"):
        build_pipeline("svm", selector="pca")


def test_build_pipeline_steps():
    pipe = build_pipeline("knn-fine", selector="mrmr", n_features=3, mrmr_method="fcd")
    assert list(pipe.named_steps) == ["scale", "select", "classify"]
    assert pipe.named_steps["select"].n_features == 3 and pipe.named_steps["select"].method == "fcd"
    assert list(build_pipeline("nb").named_steps) == ["scale", "classify"]
    X, y = make_classification(60, 8, random_state=0)
    assert build_pipeline("svm-calibrated", selector="mrmr", n_features=3).fit(X, y).predict_proba(X).shape == (60, 2)


# ------------------------------------------------------------------ issue 23: small or degenerate data
def _blobs(n_per_class, n_classes, d=8, seed=0):
    """Class k around 4 x the k-th unit vector: separable one class against the rest."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return rng.normal(size=(len(y), d)) + 4.0 * np.eye(d)[y % d], y


@pytest.mark.parametrize("y, problem", [
    ([0] * 20 + [1] * 20, None),
    ([0] * 12, None),  # 2 validation images of the only class: scikit-learn can split and score that
    (list(range(8)) * 4, r"validation part \(10 % of 32 images = 4\) cannot hold one image of each of the 8 classes"),
    ([0] * 4 + [1] * 4, r"validation part \(10 % of 8 images = 1\) cannot hold one image of each of the 2 classes"),
    ([0] * 10 + [1] * 10 + [2], r"class 2 has a single image"),
    ([0] * 10, r"validation part \(10 % of 10 images = 1\) is below the 2 images a validation score needs"),
])
def test_early_stopping_problem_says_when_the_split_cannot_hold_every_class(y, problem):
    found = early_stopping_problem(y, 0.1)
    if problem is None:
        assert found is None
    else:
        assert found is not None and re.search(problem, found), found


@pytest.mark.parametrize("preset", ["ann-es", "ann-adam", "sgd"])
@pytest.mark.parametrize("n_per_class, n_classes", [(4, 2), (4, 8), (2, 8)])
def test_ann_and_sgd_switch_early_stopping_off_when_the_data_cannot_fill_the_split(preset, n_per_class, n_classes):
    X, y = _blobs(n_per_class, n_classes)
    pipe = build_pipeline(preset)
    with pytest.warns(UserWarning, match=r"early stopping is off for this fit because its validation part "
                                         rf"\(10 % of {len(y)} images = \d+\) cannot hold"):
        pipe.fit(X, y)  # 0.2: ValueError from scikit-learn's stratified split (binary ann, every sgd)
    clf = final_estimator(pipe)
    assert clf.early_stopping is True and clf.early_stopping_ is False and "cannot hold" in clf.early_stopping_note_
    assert (pipe.predict(X) == y).mean() > 0.5


@pytest.mark.parametrize("preset, reference", [("ann-adam", MLPClassifier), ("sgd", SGDClassifier)])
def test_ann_and_sgd_are_scikit_learns_estimators_when_the_split_works(preset, reference, recwarn):
    X, y = make_classification(300, 12, n_informative=6, n_classes=3, random_state=0)
    ours = get_classifier(preset, seed=3)
    theirs = reference(**ours.get_params())
    ours.fit(X, y), theirs.fit(X, y)
    assert ours.early_stopping_ is True and ours.early_stopping_note_ is None
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(ours.decision_function(X) if preset == "sgd" else ours.predict_proba(X),
                                  theirs.decision_function(X) if preset == "sgd" else theirs.predict_proba(X))
    assert not [w for w in recwarn if "early stopping is off" in str(w.message)]


def test_ann_balanced_passes_sample_weights_through_the_switch():
    X, y = _blobs(4, 2)
    with pytest.warns(UserWarning, match="early stopping is off"):
        clf = get_classifier("ann-adam", class_weight="balanced").fit(X, y)
    assert isinstance(clf, BalancedSampleWeight) and clf.estimator_.early_stopping_ is False
    with pytest.warns(UserWarning, match="early stopping is off .* up to max_iter=200 L-BFGS iterations"):
        clf = get_classifier("ann-es", class_weight="balanced").fit(X, y)
    assert clf.early_stopping_ is False and (clf.predict(X) == y).all()


def test_ann_is_a_full_batch_lbfgs_mlp_deterministic_for_a_seed_and_class_balanced():
    X, y = make_classification(400, 20, n_informative=8, n_classes=3, weights=[0.7, 0.2, 0.1], random_state=0)
    a, b = get_classifier("ann-es", seed=4).fit(X, y), get_classifier("ann-es", seed=4).fit(X, y)
    assert isinstance(a, FullBatchMLP) and a.early_stopping_ is True and a.early_stopping_note_ is None
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))  # same seed, same bytes
    assert 1 <= a.best_iter_ <= a.n_iter_ <= 200 and a.validation_loss_ is not None
    assert (a.predict(X) == y).mean() > 0.85
    assert not np.array_equal(a.predict_proba(X), get_classifier("ann-es", seed=5).fit(X, y).predict_proba(X))
    ann = get_classifier("ann", seed=4).fit(X, y)  # the preset: every row, a fixed budget, no validation part
    assert ann.early_stopping_ is False and ann.validation_loss_ is None and ann.best_iter_ == ann.n_iter_ <= 200
    np.testing.assert_array_equal(ann.predict_proba(X), get_classifier("ann", seed=4).fit(X, y).predict_proba(X))
    # class balance: the rare class gets more of the predictions than unweighted
    plain = FullBatchMLP(early_stopping=False, random_state=0).fit(X, y)
    bal = FullBatchMLP(early_stopping=False, class_weight="balanced", random_state=0).fit(X, y)
    assert (bal.predict(X) == 2).sum() >= (plain.predict(X) == 2).sum()
    # the fixed budget: without early stopping it stops at max_iter (or earlier when L-BFGS converges)
    assert FullBatchMLP(early_stopping=False, max_iter=3, random_state=0).fit(X, y).n_iter_ <= 3
    with pytest.raises(ValueError, match="'hidden_units' parameter of FullBatchMLP"):
        FullBatchMLP(hidden_units=0).fit(X, y)


@pytest.mark.parametrize("X", [np.ones((20, 6)), np.full((20, 6), 7, dtype=np.int64)], ids=["float", "int"])
@pytest.mark.parametrize("preset", ["nb", "nb-gaussian"])
def test_gaussian_nb_on_constant_features_gives_the_priors_never_nan(X, preset):
    from sklearn.metrics import roc_auc_score

    y = np.array([0] * 12 + [1] * 8)
    for est in (get_classifier(preset), build_pipeline(preset)):
        proba = est.fit(X, y).predict_proba(X)
        np.testing.assert_allclose(proba, np.tile([0.6, 0.4], (20, 1)))
        assert roc_auc_score(y, proba[:, 1]) == 0.5  # 0.2: "Input contains NaN"
    with np.errstate(all="ignore"):
        assert np.isnan(GaussianNB().fit(X, y).predict_proba(X)).all()  # what scikit-learn's gives


def test_floored_gaussian_nb_is_gaussian_nb_on_ordinary_data():
    X, y = make_classification(200, 8, random_state=0)
    X[:, 3] = 1.0  # one constant column is fine for scikit-learn already (the largest variance is not 0)
    ours, theirs = FlooredGaussianNB().fit(X, y), GaussianNB().fit(X, y)
    np.testing.assert_array_equal(ours.predict_proba(X), theirs.predict_proba(X))
    assert ours.epsilon_ == theirs.epsilon_
    half = FlooredGaussianNB().partial_fit(np.ones((4, 2)), [0, 0, 1, 1], classes=[0, 1])
    half.partial_fit(np.ones((4, 2)), [0, 1, 0, 1])
    assert np.isfinite(half.predict_proba(np.ones((1, 2)))).all()


def test_complex_features_are_refused_not_cast_to_zeros():
    from deepfeat import FeatureSet
    from deepfeat.errors import FeatureFileError

    with pytest.raises(FeatureFileError, match=r"X is complex \(complex128\); features must be real numbers"):
        FeatureSet(1j * np.ones((4, 3)), y=[0, 0, 1, 1])


@pytest.mark.parametrize("threshold", [float("nan"), float("inf")])
def test_a_threshold_that_is_not_finite_is_one_clear_error_before_any_fit(threshold):
    from deepfeat.classifiers.presets import make_selector

    with pytest.raises(DeepfeatError, match=rf"The 'threshold' parameter must be a float in the range \(-inf, "
                                            rf"inf\) or None. Got {threshold} instead"):
        build_pipeline("knn", selector="mrmr", threshold=threshold)
    with pytest.raises(DeepfeatError, match="'threshold' parameter"):
        make_selector("mrmr", threshold=threshold)


def test_a_threshold_that_keeps_nothing_still_gives_the_classifier_one_feature():
    X, y = _blobs(10, 2)
    pipe = build_pipeline("knn", selector="mrmr", threshold=1e12)
    with pytest.warns(UserWarning, match=r"no feature of the 8 reaches threshold=1000000000000.0 .*keeps one"):
        pipe.fit(X, y)  # 0.2: "Found array with 0 feature(s)" from KNeighborsClassifier
    assert pipe.named_steps["select"].ranking_.size == 1 and pipe.predict(X).shape == (20,)
