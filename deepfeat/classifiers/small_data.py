"""What the classifier presets do when the training data is too small or degenerate for them.

Each decision lives in the estimator itself, so every caller (``cv``, nested CV, ``curve``, ``fit``, a Python user)
gets the same behaviour:

- **Early stopping** (``ann``, ``sgd``) holds out ``validation_fraction`` of the training images. When that part
  cannot hold one image of every class (or the rest cannot, or a class has a single image), scikit-learn either
  fails (its stratified split) or stops on a meaningless score. :func:`early_stopping_problem` says so;
  :class:`EarlyStoppingMLP` and :class:`EarlyStoppingSGD` then fit *without* early stopping, with a warning, and record
  it in ``early_stopping_`` / ``early_stopping_note_``. On data where the split works they are exactly
  scikit-learn's ``MLPClassifier`` / ``SGDClassifier`` (same split, same fit).
- **k nearest neighbours** with fewer training images than k: scikit-learn raises at predict time (``Expected
  n_neighbors <= n_samples_fit``), e.g. ``knn`` (k=5) in a learning-curve step of 2 images per class or in an inner
  fold of nested CV. deepfeat's :class:`KNeighborsClassifier` (scikit-learn's, same name) then votes over all
  training images, with a warning, and records it in ``n_neighbors_``.
- **Gaussian naive Bayes** smooths each variance by ``var_smoothing`` x the largest feature variance; when every
  feature is constant that is 0 and the probabilities become NaN. :class:`FlooredGaussianNB` then smooths by
  ``var_smoothing`` itself (as if the largest variance were 1): every class gets the same likelihood, predictions
  follow the class priors, and no probability is ever NaN.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.sparse import issparse
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier as _SklearnKNN
from sklearn.neural_network import MLPClassifier

from deepfeat.classifiers.memo import LastRows, without_memo

__all__ = ["early_stopping_problem", "EarlyStoppingMLP", "EarlyStoppingSGD", "FlooredGaussianNB",
           "KNeighborsClassifier"]


def early_stopping_problem(y, validation_fraction: float) -> str | None:
    """Why a validation part of ``validation_fraction`` of ``y`` cannot hold every class; None when it can.

    The split is scikit-learn's: ``ceil(validation_fraction * n)`` images held out (at least 2), stratified by
    class. It needs at least one image of each class on both sides, so every class needs at least 2 images.

    Examples
    --------
    >>> early_stopping_problem([0] * 20 + [1] * 20, 0.1) is None
    True
    >>> early_stopping_problem(list(range(8)) * 4, 0.1)
    'its validation part (10 % of 32 images = 4) cannot hold one image of each of the 8 classes'
    """
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        return None  # multi-output targets are not split by class; scikit-learn decides
    try:
        classes, counts = np.unique(y, return_counts=True)
    except TypeError:  # mixed label types: scikit-learn's own check reports them
        return None
    n, n_classes = len(y), len(classes)
    n_val = math.ceil(validation_fraction * n)
    part = f"its validation part ({100 * validation_fraction:g} % of {n} images = {n_val})"
    if n_val < n_classes:
        return f"{part} cannot hold one image of each of the {n_classes} classes"
    if n_val < 2:  # scikit-learn's MLP needs 2 to score a validation part
        return f"{part} is below the 2 images a validation score needs"
    if n - n_val < n_classes:
        return (f"after holding out {n_val} of {n} images for validation, the rest cannot hold one image of each "
                f"of the {n_classes} classes")
    if counts.min() < 2:
        return (f"class {classes[np.argmin(counts)].item()!r} has a single image, which cannot be in both the "
                "training and the validation part")
    return None


def _fit_early_stopping_if_possible(estimator, fit, X, y, **fit_params):
    """``fit(X, y, **fit_params)``, with ``estimator.early_stopping`` switched off for this fit when
    :func:`early_stopping_problem` finds one (a warning says why). The parameter is restored afterwards."""
    problem = early_stopping_problem(y, estimator.validation_fraction) if estimator.early_stopping else None
    if problem is None:
        fit(X, y, **fit_params)
        estimator.early_stopping_, estimator.early_stopping_note_ = bool(estimator.early_stopping), None
        return estimator
    budget = getattr(estimator, "_budget_without_validation", None)
    budget = budget() if budget else (f"up to max_iter={estimator.max_iter} epochs, stopping when the training "
                                      f"loss stops improving (n_iter_no_change={estimator.n_iter_no_change})")
    note = (f"{type(estimator).__name__}: early stopping is off for this fit because {problem}; it trains on all "
            f"{len(y)} images for {budget}")
    warnings.warn(note, UserWarning, stacklevel=3)
    estimator.early_stopping = False
    try:
        fit(X, y, **fit_params)
    finally:
        estimator.early_stopping = True
    estimator.early_stopping_, estimator.early_stopping_note_ = False, note
    return estimator


class EarlyStoppingMLP(MLPClassifier):
    """``MLPClassifier`` whose early stopping is switched off, with a warning, when the data cannot fill its split.

    Parameters are scikit-learn's :class:`~sklearn.neural_network.MLPClassifier`'s. With ``early_stopping=True``
    and data on which :func:`early_stopping_problem` finds no problem, ``fit`` is exactly ``MLPClassifier.fit``.

    Attributes
    ----------
    early_stopping_ : bool
        Whether this fit used early stopping.
    early_stopping_note_ : str or None
        Why it did not although ``early_stopping=True`` (the warning's text).

    Examples
    --------
    >>> import warnings
    >>> X, y = np.arange(16.0).reshape(8, 2), [0, 0, 0, 0, 1, 1, 1, 1]
    >>> with warnings.catch_warnings(record=True):
    ...     clf = EarlyStoppingMLP(early_stopping=True, max_iter=20, random_state=0).fit(X, y)
    >>> clf.early_stopping_, clf.early_stopping
    (False, True)
    """

    def fit(self, X, y, sample_weight=None):
        weights = {} if sample_weight is None else {"sample_weight": sample_weight}  # scikit-learn < 1.7: none
        return _fit_early_stopping_if_possible(self, super().fit, X, y, **weights)


class EarlyStoppingSGD(SGDClassifier):
    """``SGDClassifier`` whose early stopping is switched off, with a warning, when the data cannot fill its split.

    As :class:`EarlyStoppingMLP`, for scikit-learn's :class:`~sklearn.linear_model.SGDClassifier` (whose early
    stopping always holds out a stratified part).
    """

    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        return _fit_early_stopping_if_possible(self, super().fit, X, y, coef_init=coef_init,
                                               intercept_init=intercept_init, sample_weight=sample_weight)


class FlooredGaussianNB(GaussianNB):
    """``GaussianNB`` whose variances never reach 0: no NaN probabilities when every feature is constant.

    scikit-learn adds ``var_smoothing * max(feature variances)`` to every variance; that is 0 when all features
    are constant (e.g. standardised features of a network with random weights), and the likelihoods become 0/0.
    Then this adds ``var_smoothing`` itself. On any other data it is exactly ``GaussianNB``.

    Examples
    --------
    >>> nb = FlooredGaussianNB().fit(np.ones((4, 2)), [0, 0, 1, 1])
    >>> nb.predict_proba(np.ones((1, 2))).round(12).tolist()
    [[0.5, 0.5]]
    """

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        return self._floor_variances()

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)
        return self._floor_variances()

    def _floor_variances(self):
        if self.epsilon_ <= 0:  # every feature constant so far: smooth by var_smoothing itself
            self.epsilon_ = float(self.var_smoothing) if self.var_smoothing > 0 else np.finfo(float).tiny
            self.var_ = self.var_ + self.epsilon_
        return self


class KNeighborsClassifier(_SklearnKNN):
    """scikit-learn's ``KNeighborsClassifier``, except that fewer training images than ``n_neighbors`` is no error:
    it then votes over all of them (a warning says so). On any other data it is exactly scikit-learn's.

    Attributes
    ----------
    n_neighbors_ : int
        The neighbours this fit votes over: ``min(n_neighbors, n_samples_fit_)``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     knn = KNeighborsClassifier(5, weights="distance").fit([[0.0], [1.0], [5.0], [6.0]], [0, 0, 1, 1])
    >>> knn.n_neighbors_, knn.predict([[0.2], [5.5]]).tolist()
    (4, [0, 1])
    """

    def fit(self, X, y):
        super().fit(X, y)
        self._proba = LastRows()  # predict (which, for uniform votes, is argmax predict_proba) then predict_proba
        self.n_neighbors_ = min(int(self.n_neighbors), int(self.n_samples_fit_))
        if self.n_neighbors_ < self.n_neighbors:
            warnings.warn(f"KNeighborsClassifier: n_neighbors={self.n_neighbors} but only {self.n_samples_fit_} "
                          f"training images; it votes over all {self.n_neighbors_}", UserWarning, stacklevel=2)
        return self

    def _capped(self, method, X):
        """``method(X)`` with k capped for this call (the parameter itself is left as it was set)."""
        k, wanted = getattr(self, "n_neighbors_", self.n_neighbors), self.n_neighbors
        if k >= wanted:
            return method(X)
        self.n_neighbors = k
        try:
            return method(X)
        finally:
            self.n_neighbors = wanted

    def predict(self, X):
        return self._capped(super().predict, X)

    def __getstate__(self):
        return without_memo(super().__getstate__(), "_proba")

    def predict_proba(self, X):
        memo = getattr(self, "_proba", None)  # not in a loaded model file
        if memo is None or X is None or issparse(X):
            return self._capped(super().predict_proba, X)
        return memo.get(X, lambda: self._capped(super(KNeighborsClassifier, self).predict_proba, X),
                        also=repr(sorted(self.get_params().items())))
