"""Classifier presets, the extra estimators (GramSVC, KernelNaiveBayes, BalancedSampleWeight), build_pipeline."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepfeat.classifiers.estimators import (
    BalancedSampleWeight,
    GramSVC,
    KernelNaiveBayes,
)
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
_MLP_XFAIL = {c: "early stopping needs a stratified validation split with >= 1 sample per class; the check's "
                 "data is too small (or one class)"
              for c in ("check_estimators_nan_inf", "check_classifiers_one_label", "check_fit2d_1feature")}
_MRMR_MULTI_XFAIL = {c: "MRMRSelector takes a 1-d y; the Pipeline inherits multi-output tags from its classifier"
                     for c in ("check_classifier_multioutput", "check_classifiers_multilabel_representation_invariance",
                               "check_classifiers_multilabel_output_format_predict",
                               "check_classifiers_multilabel_output_format_predict_proba",
                               "check_classifiers_multilabel_output_format_decision_function")}


def _expected_failures(estimator):
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, GramSVC):
        return {"check_sample_weight_equivalence_on_dense_data":
                "libsvm scales C per sample: weights are not equivalent to repeated rows (as for sklearn's SVC)"}
    if not isinstance(estimator, Pipeline):
        return {}
    out = dict(_PIPELINE_XFAIL)
    clf = final_estimator(estimator)
    if isinstance(clf, MLPClassifier):
        out.update(_MLP_XFAIL)
        if "select" in estimator.named_steps:  # MRMRSelector rejects one class first, with a proper message
            del out["check_classifiers_one_label"]
    if "select" in estimator.named_steps and isinstance(clf, (MLPClassifier, KNeighborsClassifier)):
        out.update(_MRMR_MULTI_XFAIL)
    return out


@parametrize_with_checks([KernelNaiveBayes(), GramSVC(), BalancedSampleWeight(GaussianNB()), *_pipelines()],
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
    assert get_classifier("ann").early_stopping is True
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
    wrapped = get_classifier("ann", class_weight="balanced")
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
