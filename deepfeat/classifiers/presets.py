"""Classifier presets by name, and the ``StandardScaler -> [MRMRSelector] -> classifier`` pipeline.

Every preset is a fresh scikit-learn estimator; :data:`PRESETS` documents its exact parameters. The inputs are
always standardised first (``build_pipeline`` and ``cross_validate`` put a ``StandardScaler`` in front), as MATLAB's
Classification Learner does, so "kernel scale" below refers to standardised predictors.

Base presets (the reference study's four)
-----------------------------------------
``svm``  ``GramSVC(C=1)``: the model of ``SVC(kernel="rbf", C=1, gamma="scale")`` with the kernel matrix
         computed by BLAS (4-5x faster on 1,000-d features; see :class:`deepfeat.classifiers.estimators.GramSVC`). On
         standardised data ``gamma="scale"`` is ``1/P`` (P = number of features), i.e. MATLAB kernel scale
         ``sqrt(P)``. No Platt probabilities: scikit-learn 1.9
         deprecates ``SVC(probability=True)`` and its internal 5-fold fit makes every fit ~5x slower; ROC AUC uses
         ``decision_function`` (AUC is rank-based, so nothing is lost). Use ``svm-calibrated`` when class
         probabilities are needed (e.g. ``deepfeat predict`` output).
``svm-calibrated``  ``CalibratedClassifierCV(<svm>, method="sigmoid", cv=5, ensemble=False)``: Platt-scaled
         probabilities (the replacement scikit-learn recommends); predictions are the argmax of those probabilities,
         which can differ from ``svm`` near the decision boundary.
``knn``  ``KNeighborsClassifier(n_neighbors=5)`` (Euclidean, uniform votes; ``knn-fine`` is MATLAB's k=1); every
         ``knn*`` preset is :class:`deepfeat.classifiers.small_data.KNeighborsClassifier` (scikit-learn's, voting
         over all training images when there are fewer than k).
``ann``  ``FullBatchMLP(hidden_units=100, alpha=1e-4, max_iter=200, early_stopping=False, random_state=seed)``:
         one hidden layer of 100 ReLU units, softmax output, trained on every training row at once by L-BFGS in
         float32, as MATLAB's fitcnet (a fixed budget of 200 iterations, fewer when L-BFGS converges). Takes
         ``class_weight``.
``ann-es``  the same with early stopping: the weights of the iteration with the lowest loss on a stratified 10 %
         validation part (patience 10 iterations). When that part cannot hold every class, early stopping is off for
         that fit, with a warning (:mod:`deepfeat.classifiers.small_data`).
``ann-adam``  deepfeat 0.2's ``ann``: ``EarlyStoppingMLP(hidden_layer_sizes=(100,), early_stopping=True,
         validation_fraction=0.1, n_iter_no_change=10, max_iter=300, batch_size=64, random_state=seed)``
         (scikit-learn's MLPClassifier: adam, ReLU, alpha=1e-4; batch 64 rather than 200 so small sets still get
         enough updates before early stopping); slower than ``ann`` (README "Classifier presets").
``nb``   ``FlooredGaussianNB()``: scikit-learn's GaussianNB, except that all-constant features give the class
         priors instead of NaN probabilities.

MATLAB Classification Learner presets
-------------------------------------
SVMs are one-vs-one (as MATLAB's ECOC default and sklearn's SVC), box constraint C=1. Gaussian kernel scales are
``sqrt(P)/4`` (fine), ``sqrt(P)`` (medium), ``4*sqrt(P)`` (coarse): ``GramSVC(kernel_scale=1/4 | 1 | 4)``
computes the scale at fit time (P is known only then, after selection): ``exp(-||x - z||^2 / scale^2)``, MATLAB's
definition (gamma = 1/scale^2). Polynomial SVMs use
``(1 + x.z / P)^q`` (kernel scale sqrt(P)); MATLAB's "automatic" scale is a random-subsample heuristic of the same
order, not reproducible here. KNN presets use Euclidean distance unless stated. ANN presets follow MATLAB: ReLU,
lambda (alpha) = 0, L-BFGS, iteration limit 1000, no early stopping. ``nb-kernel`` is :class:`KernelNaiveBayes`
(Gaussian kernel, Silverman bandwidth; MATLAB uses a normal kernel with its own width rule).

Scalable presets (for 10^5 - 10^6 images)
------------------------------------------
Exact kernel SVMs cost O(n^2) memory and O(n^2 - n^3) time. ``linear-svm`` (``LinearSVC``), ``logreg``
(``LogisticRegression``), ``sgd`` (``SGDClassifier``, hinge loss) and ``svm-nystroem`` (a 1,000-component
Nystroem approximation of the ``svm`` preset's RBF kernel, then ``LinearSVC``) grow linearly with n. ``sgd``
switches its early stopping off, with a warning, when the training set is too small for its validation part
(as ``ann``).

``class_weight="balanced"``: set on estimators that take ``class_weight`` (SVC, GramSVC, KernelNaiveBayes, ...);
estimators whose ``fit`` takes ``sample_weight`` (MLP, GaussianNB) are wrapped in :class:`BalancedSampleWeight`;
KNN supports neither: a ``UserWarning`` says it is trained unweighted (never silently).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from inspect import signature
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

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
    KNeighborsClassifier,
)
from deepfeat.errors import DeepfeatError

__all__ = ["PRESETS", "Preset", "GramSVC", "KernelNaiveBayes", "BalancedSampleWeight", "get_classifier",
           "build_pipeline", "make_selector", "final_estimator", "describe_presets"]


def _squared_inverse(dist):
    """MATLAB "weighted KNN" weights 1/d^2; an exact match (d = 0) takes all the vote, as sklearn's 'distance'."""
    with np.errstate(divide="ignore"):
        w = 1.0 / np.asarray(dist, dtype=float) ** 2
    exact = ~np.isfinite(w)
    rows = exact.any(axis=1)
    w[rows] = exact[rows].astype(float)
    return w


def _poly_svm(degree: int, seed: int):
    return SVC(kernel="poly", degree=degree, coef0=1.0, gamma="scale", C=1.0, random_state=seed)


def _matlab_ann(layers: tuple, seed: int):
    return MLPClassifier(hidden_layer_sizes=layers, activation="relu", alpha=0.0, solver="lbfgs", max_iter=1000,
                         random_state=seed)


@dataclass(frozen=True)
class Preset:
    """A named classifier: ``make(seed)`` returns a fresh estimator; ``description`` is for docs and --help."""

    description: str
    make: Callable[[int], BaseEstimator]


PRESETS: dict[str, Preset] = {
    "svm": Preset("SVC RBF, C=1, gamma='scale' (=1/P on standardised data); AUC from decision_function",
                  lambda s: GramSVC(C=1.0, random_state=s)),
    "svm-calibrated": Preset("svm with Platt-scaled probabilities: CalibratedClassifierCV(sigmoid, cv=5, "
                             "ensemble=False)",
                             lambda s: CalibratedClassifierCV(GramSVC(C=1.0, random_state=s),
                                                              method="sigmoid", cv=5, ensemble=False)),
    "knn": Preset("k-nearest neighbours, k=5, Euclidean, uniform votes",
                  lambda s: KNeighborsClassifier(n_neighbors=5)),
    "ann": Preset("MLP 1x100 ReLU, full-batch L-BFGS (float32) on every training row, at most 200 iterations",
                  lambda s: FullBatchMLP(early_stopping=False, random_state=s)),
    "ann-es": Preset("ann with early stopping: 10% validation loss, patience 10, best iteration kept",
                     lambda s: FullBatchMLP(random_state=s)),
    "ann-adam": Preset("deepfeat 0.2's ann: MLP 1x100 ReLU, adam, batch 64, early stopping (10% validation, "
                       "patience 10), max 300 epochs",
                  lambda s: EarlyStoppingMLP(hidden_layer_sizes=(100,), early_stopping=True, validation_fraction=0.1,
                                            n_iter_no_change=10, max_iter=300, batch_size=64,
                                            random_state=s)),
    "nb": Preset("Gaussian naive Bayes", lambda s: FlooredGaussianNB()),
    "svm-linear": Preset("MATLAB Linear SVM: linear kernel, C=1",
                         lambda s: SVC(kernel="linear", C=1.0, random_state=s)),
    "svm-quadratic": Preset("MATLAB Quadratic SVM: (1 + x.z/P)^2, C=1", lambda s: _poly_svm(2, s)),
    "svm-cubic": Preset("MATLAB Cubic SVM: (1 + x.z/P)^3, C=1", lambda s: _poly_svm(3, s)),
    "svm-fine-gaussian": Preset("MATLAB Fine Gaussian SVM: kernel scale sqrt(P)/4, C=1",
                                lambda s: GramSVC(kernel_scale=0.25, random_state=s)),
    "svm-medium-gaussian": Preset("MATLAB Medium Gaussian SVM: kernel scale sqrt(P), C=1",
                                  lambda s: GramSVC(kernel_scale=1.0, random_state=s)),
    "svm-coarse-gaussian": Preset("MATLAB Coarse Gaussian SVM: kernel scale 4*sqrt(P), C=1",
                                  lambda s: GramSVC(kernel_scale=4.0, random_state=s)),
    "knn-fine": Preset("MATLAB Fine KNN: k=1, Euclidean", lambda s: KNeighborsClassifier(n_neighbors=1)),
    "knn-medium": Preset("MATLAB Medium KNN: k=10, Euclidean", lambda s: KNeighborsClassifier(n_neighbors=10)),
    "knn-coarse": Preset("MATLAB Coarse KNN: k=100, Euclidean", lambda s: KNeighborsClassifier(n_neighbors=100)),
    "knn-cosine": Preset("MATLAB Cosine KNN: k=10, cosine distance",
                         lambda s: KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")),
    "knn-cubic": Preset("MATLAB Cubic KNN: k=10, Minkowski p=3",
                        lambda s: KNeighborsClassifier(n_neighbors=10, p=3)),
    "knn-weighted": Preset("MATLAB Weighted KNN: k=10, Euclidean, weights 1/d^2",
                           lambda s: KNeighborsClassifier(n_neighbors=10, weights=_squared_inverse)),
    "ann-narrow": Preset("MATLAB Narrow NN: 1x10 ReLU, lambda 0, L-BFGS, 1000 iterations",
                         lambda s: _matlab_ann((10,), s)),
    "ann-medium": Preset("MATLAB Medium NN: 1x25 ReLU, lambda 0, L-BFGS, 1000 iterations",
                         lambda s: _matlab_ann((25,), s)),
    "ann-wide": Preset("MATLAB Wide NN: 1x100 ReLU, lambda 0, L-BFGS, 1000 iterations",
                       lambda s: _matlab_ann((100,), s)),
    "ann-bilayered": Preset("MATLAB Bilayered NN: 10-10 ReLU, lambda 0, L-BFGS, 1000 iterations",
                            lambda s: _matlab_ann((10, 10), s)),
    "ann-trilayered": Preset("MATLAB Trilayered NN: 10-10-10 ReLU, lambda 0, L-BFGS, 1000 iterations",
                             lambda s: _matlab_ann((10, 10, 10), s)),
    "nb-gaussian": Preset("MATLAB Gaussian Naive Bayes (= nb)", lambda s: FlooredGaussianNB()),
    "nb-kernel": Preset("MATLAB Kernel Naive Bayes: per-class per-feature Gaussian KDE, Silverman bandwidth",
                        lambda s: KernelNaiveBayes()),
    # Presets whose cost grows linearly with the number of images (exact RBF-SVM grows with n^2): for CV of
    # 10^5 - 10^6 rows, e.g. through a Dask scheduler (see README "Scaling out").
    "linear-svm": Preset("scalable: LinearSVC (liblinear), C=1, one-vs-rest; cost linear in n",
                         lambda s: LinearSVC(C=1.0, random_state=s)),
    "logreg": Preset("scalable: multinomial logistic regression, lbfgs, C=1, max 1000 iterations",
                     lambda s: LogisticRegression(C=1.0, max_iter=1000, random_state=s)),
    "sgd": Preset("scalable: linear SVM by SGD (hinge loss, alpha 1e-4, early stopping); streams well",
                  lambda s: EarlyStoppingSGD(loss="hinge", alpha=1e-4, early_stopping=True, random_state=s)),
    "svm-nystroem": Preset("scalable: Nystroem RBF approximation (1,000 components, gamma 1/P) + LinearSVC C=1",
                           lambda s: _nystroem_svm(s)),
}


def _nystroem_svm(seed: int):
    # gamma=None is 1/P: the same kernel as the svm preset's gamma='scale' on standardised features
    return Pipeline([("nystroem", Nystroem(kernel="rbf", n_components=1000, random_state=seed)),
                     ("svm", LinearSVC(C=1.0, random_state=seed))])


def describe_presets() -> str:
    """One line per preset: ``name  description`` (for docs and ``--help``)."""
    width = max(map(len, PRESETS))
    return "\n".join(f"{name:<{width}}  {p.description}" for name, p in PRESETS.items())


def final_estimator(estimator):
    """The estimator that actually classifies (last step of nested Pipelines, inside BalancedSampleWeight)."""
    while True:
        if isinstance(estimator, Pipeline):
            estimator = estimator.steps[-1][1]
        elif isinstance(estimator, (BalancedSampleWeight, CalibratedClassifierCV)):
            estimator = estimator.estimator
        else:
            return estimator


def _apply_class_weight(estimator, class_weight, label: str):
    if class_weight is None:
        return estimator
    if class_weight != "balanced" and not isinstance(class_weight, dict):
        raise DeepfeatError(f"class_weight must be None, 'balanced' or a dict; got {class_weight!r}")
    inner = final_estimator(estimator)
    if "class_weight" in inner.get_params(deep=False):
        inner.set_params(class_weight=class_weight)
        return estimator
    if class_weight == "balanced" and "sample_weight" in signature(inner.fit).parameters \
            and not isinstance(estimator, Pipeline):
        return BalancedSampleWeight(estimator)
    warnings.warn(f"class_weight={class_weight!r} is not supported by {label} ({type(inner).__name__} takes "
                  "neither class_weight nor sample_weight): it is trained unweighted", UserWarning, stacklevel=3)
    return estimator


def get_classifier(name_or_estimator, *, seed: int = 0, class_weight=None):
    """A fresh classifier: a preset by name (see :data:`PRESETS`) or a clone of a scikit-learn classifier.

    Parameters
    ----------
    name_or_estimator : str or classifier instance
    seed : int, default=0
        ``random_state`` of presets that use randomness (SVC, MLP). Instances keep their own ``random_state``.
    class_weight : None, "balanced" or dict
        See the module docstring: set, done by sample weighting, or warned about -- never ignored silently.

    Examples
    --------
    >>> get_classifier("knn-fine")
    KNeighborsClassifier(n_neighbors=1)
    """
    if isinstance(name_or_estimator, str):
        key = name_or_estimator.lower()
        if key not in PRESETS:
            raise DeepfeatError(f"unknown classifier {name_or_estimator!r}; choose one of: {', '.join(PRESETS)} "
                                "(or pass a scikit-learn classifier instance)")
        return _apply_class_weight(PRESETS[key].make(seed), class_weight, key)
    if not (hasattr(name_or_estimator, "fit") and is_classifier(name_or_estimator)):
        raise DeepfeatError(f"classifier must be a preset name or a scikit-learn classifier; got "
                            f"{type(name_or_estimator).__name__}")
    return _apply_class_weight(clone(name_or_estimator), class_weight, type(name_or_estimator).__name__)


def make_selector(selector="mrmr", *, n_features=None, threshold=None, mrmr_method: str = "fcq"):
    """``None``/"none" -> None; "mrmr" -> a new MRMRSelector; a selector instance -> its clone."""
    if selector is None or (isinstance(selector, str) and selector.lower() == "none"):
        return None
    if isinstance(selector, str):
        if selector.lower() != "mrmr":
            raise DeepfeatError(f"unknown selector {selector!r}; use 'none' or 'mrmr' (or a selector instance)")
        from deepfeat.selection.mrmr import MRMRSelector

        kwargs = {"method": mrmr_method}
        if n_features is not None:
            kwargs["n_features"] = n_features
        if threshold is not None:  # a threshold replaces the selector's default size
            kwargs["threshold"] = threshold
            kwargs.setdefault("n_features", None)
        return _validated(MRMRSelector(**kwargs))
    return clone(selector)


def _validated(estimator):
    """``estimator`` after checking its parameters against its ``_parameter_constraints`` now, so that a bad value
    (a NaN threshold) is one clear :class:`DeepfeatError` before any fold runs, not scikit-learn's error in a fold."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        # "The 'threshold' parameter must be ...": the CLI shows it as "--mrmr-threshold must be ..."
        raise DeepfeatError(str(exc).replace(f" of {type(estimator).__name__} must", " must")) from None
    return estimator


def build_pipeline(classifier="svm", *, selector=None, n_features=None, threshold=None, mrmr_method: str = "fcq",
                   seed: int = 0, class_weight=None) -> Pipeline:
    """``StandardScaler -> [MRMRSelector] -> classifier`` as one scikit-learn Pipeline.

    Steps are named ``scale``, ``select`` (only when a selector is used) and ``classify``.

    Examples
    --------
    >>> build_pipeline("nb").named_steps["classify"]
    FlooredGaussianNB()
    """
    steps = [("scale", StandardScaler())]
    sel = make_selector(selector, n_features=n_features, threshold=threshold, mrmr_method=mrmr_method)
    if sel is not None:
        steps.append(("select", sel))
    steps.append(("classify", get_classifier(classifier, seed=seed, class_weight=class_weight)))
    return Pipeline(steps)
