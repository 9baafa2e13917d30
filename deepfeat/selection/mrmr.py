"""Minimum-redundancy maximum-relevance (mRMR) feature selection as a scikit-learn transformer.

mRMR picks features greedily: first the most relevant one (highest relevance to the class), then at each
step the candidate with the best trade-off between its relevance and its mean redundancy with the features
already picked. Four classic variants are offered (Ding & Peng 2005; Peng, Long & Ding 2005):

========  ===========================  ======================================  =========================
method    relevance of x               redundancy of x (mean over picked s)    score
========  ===========================  ======================================  =========================
``fcq``   ANOVA F-statistic (x; y)     mean of max(|Pearson r(x, s)|, 0.001)   relevance / redundancy
``fcd``   ANOVA F-statistic (x; y)     mean of max(|Pearson r(x, s)|, 0.001)   relevance - redundancy
``miq``   I(x; y), discretised x       mean of I(x; s), discretised            relevance / redundancy
``mid``   I(x; y), discretised x       mean of I(x; s), discretised            relevance - redundancy
========  ===========================  ======================================  =========================

``fcq`` reproduces ``mrmr.mrmr_classif(X, y, K)`` of the mrmr-selection package (defaults) pick for pick.
"""
from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.feature_selection import SelectorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from deepfeat.errors import DeepfeatError
from deepfeat.selection._stats import (
    CorrelationRedundancy,
    MutualInformation,
    equal_frequency_codes,
    f_statistic,
)

__all__ = ["MRMRSelector", "auto_n_features", "resolve_n_features"]

# Redundancy floor of mrmr-selection: each |r| counts as at least this much before averaging.
_CORR_FLOOR = 0.001
# mrmr-selection treats a mean redundancy of exactly 1.0 (the candidate is a perfect copy, up to sign and
# scale, of every picked feature) as infinite, so the candidate scores 0. Whether np.corrcoef returns exactly
# 1.0 for an affine copy depends on its last bit, so within this distance of 1 counts as 1 here.
_PERFECT_TOL = 1e-9
# Scores closer than this (relative) are ties and go to the lowest column index, like mrmr-selection's
# argmax; it absorbs last-bit differences between our matrix products and its per-pair np.corrcoef.
_TIE_RTOL = 1e-12
# Above this many candidate columns the d x d correlation matrix is not precomputed (memory).
_GRAM_MAX = 4096
# miq divides by the mean MI with the picked set; a candidate independent of all of them (MI 0) would
# divide by zero, so the mean counts as at least this much (its score then ranks it by relevance).
_MI_FLOOR = 1e-12


def auto_n_features(d: int) -> int:
    """mRMR size for ``n_features="auto"``: the reference study's 521 for >= 1,000 features, else half of them.

    Examples
    --------
    >>> auto_n_features(1000), auto_n_features(1280), auto_n_features(64)
    (521, 521, 32)
    """
    return 521 if d >= 1000 else max(1, d // 2)


def resolve_n_features(n_features, d: int, *, threshold=None) -> int | None:
    """The one check of ``n_features`` (and ``threshold``) for features of ``d`` columns: the mRMR size to use.

    ``"auto"`` (or None) gives :func:`auto_n_features` of ``d``, or None (no fixed size) with a ``threshold``; an
    int (or a string of digits, as typed on the command line) must lie in ``1..d``: asking for more features than
    there are is an error, never a silent cut (``cross_validate``, ``learning_curve``, ``fit_model`` and
    ``DeepFeatureClassifier`` all refuse it with this message; only a bare ``MRMRSelector``, as a scikit-learn
    step that sees ``d`` at fit time, warns and ranks all columns, like ``SelectKBest``). An int together with a
    threshold is an error.

    Examples
    --------
    >>> resolve_n_features("auto", 1280), resolve_n_features("auto", 64), resolve_n_features("20", 64)
    (521, 32, 20)
    >>> resolve_n_features("auto", 64, threshold=0.25) is None
    True
    >>> resolve_n_features(5000, 1000)
    Traceback (most recent call last):
    ...
    deepfeat.errors.DeepfeatError: n_features=5000 but the features have 1000 columns (1000 feature(s) in X); choose 1..1000 or 'auto'
    """
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, Real)):
        raise DeepfeatError(f"threshold must be a number (an mRMR score) or None; got {threshold!r}")
    if isinstance(n_features, str) and n_features.strip().isdigit():
        n_features = int(n_features)
    if n_features is None or (isinstance(n_features, str) and n_features == "auto"):
        return None if threshold is not None else auto_n_features(d)
    if isinstance(n_features, bool) or not isinstance(n_features, Integral) or n_features < 1:
        raise DeepfeatError(f"n_features must be an int >= 1 or 'auto'; got {n_features!r}")
    if threshold is not None:
        raise DeepfeatError("give n_features or threshold for mRMR, not both")
    if n_features > d:
        # "(d feature(s) in X)": what scikit-learn's estimator checks look for in a too-narrow-X error
        raise DeepfeatError(f"n_features={n_features} but the features have {d} columns ({d} feature(s) in X); "
                            f"choose 1..{d} or 'auto'")
    return int(n_features)


class MRMRSelector(SelectorMixin, BaseEstimator):
    """Select features by minimum redundancy, maximum relevance (mRMR).

    Parameters
    ----------
    n_features : int, "auto" or None, default="auto"
        Number of features to pick. "auto" = :func:`auto_n_features` of the number of columns: the reference
        study's 521 for >= 1,000 features, half of them for narrower sets (the one default of ``deepfeat cv``,
        ``deepfeat fit`` and ``DeepFeatureClassifier``). If it exceeds the number of columns of ``X``, all
        columns are ranked and a warning says so (like ``SelectKBest``). Ignored when ``threshold`` is given
        and left at "auto"; an int together with ``threshold`` is an error.
    threshold : float or None, default=None
        Instead of a fixed number, keep picking while the best candidate's mRMR score is >= ``threshold``
        (the reference study kept "521 features with weight above 0.25"); picking stops at the first step
        whose best score is below it, so later picks are never kept even if they would score higher. The scale
        is the method's: F / |r| for ``fcq`` (often in the tens to thousands), nats ratios or differences for
        ``miq``/``mid``. A finite number; requires ``n_features=None``. When no feature reaches it, the single
        most relevant feature is kept, with a warning naming the threshold and the best score (never 0 columns).
    method : {"fcq", "fcd", "miq", "mid"}, default="fcq"
        Relevance/redundancy definition, see the module docstring. ``"fcq"`` gives the same picks, in
        the same order, as ``mrmr_classif`` of the mrmr-selection package with its defaults.
    n_bins : int, default=256
        For ``"miq"``/``"mid"`` only: each feature is discretised into at most ``n_bins`` equal-frequency
        bins (MATLAB's ``fscmrmr`` uses up to 256 such bins); a feature with at most ``n_bins`` distinct
        values gets one bin per value. Ties never straddle a bin edge (details in
        ``deepfeat.selection._stats.equal_frequency_codes``). Mutual information is the plug-in estimate in nats.

    Attributes
    ----------
    ranking_ : ndarray of shape (n_picked,)
        Indices of the picked features in pick order. ``X[:, ranking_]`` gives them in that order;
        ``transform`` keeps the original column order (scikit-learn's ``SelectorMixin`` convention).
    scores_ : ndarray of shape (n_features_in_,)
        mRMR score of each feature at the step it was picked (the first pick's score is its relevance);
        NaN for features never picked. ``scores_[ranking_]`` is the "feature weights" curve.
    relevance_ : ndarray of shape (n_features_in_,)
        Relevance of every feature (0 for constant features and where the F-test is undefined).
    n_features_in_ : int
        Number of columns seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.

    Notes
    -----
    Features with relevance <= 0 (constant columns, among others) are never picked, as in mrmr-selection.
    When fewer than ``n_features`` features have positive relevance, only those are picked and a warning
    says so; when none has (or none reaches ``threshold``), the most relevant one is kept, with a warning. For ``miq`` a mean redundancy of 0 counts as 1e-12, so such candidates rank by relevance.

    Cost: ``fcq``/``fcd`` standardise ``X`` once in float64 and get each pick's correlations from one
    matrix-vector product, or from one d x d matrix product when many features are picked (O(n*d + d*d)
    memory). ``miq``/``mid`` discretise once and get each pick's MI with all candidates from one row-wise
    sort of combined bin codes (O(n*d) memory; no bins x bins table).

    Differences from ``mrmr_classif``, all in degenerate cases: a column whose values are all equal gets
    relevance 0 here, whereas scikit-learn's F-test may turn its rounding noise into a positive F; and a
    candidate perfectly correlated with every picked feature scores 0 here even when np.corrcoef rounds its
    |r| to 0.9999999999999998 instead of 1.0.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from deepfeat.selection.mrmr import MRMRSelector
    >>> X, y = make_classification(n_samples=200, n_features=30, n_informative=5, random_state=0)
    >>> selector = MRMRSelector(n_features=5).fit(X, y)
    >>> selector.ranking_.shape
    (5,)
    >>> selector.transform(X).shape
    (200, 5)
    """

    _parameter_constraints: dict = {
        "n_features": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "threshold": [Interval(Real, None, None, closed="neither"), None],
        "method": [StrOptions({"fcq", "fcd", "miq", "mid"})],
        "n_bins": [Interval(Integral, 2, 65536, closed="both")],
    }

    def __init__(self, n_features="auto", *, threshold=None, method="fcq", n_bins=256):
        self.n_features = n_features
        self.threshold = threshold
        self.method = method
        self.n_bins = n_bins

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Rank the features of ``X`` by mRMR against the class labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite numeric features; float32 stays float32 for the F-statistic, as in scikit-learn.
        y : array-like of shape (n_samples,)
            Class labels (at least two distinct classes; strings are fine).

        Returns
        -------
        self : MRMRSelector
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_all_finite=False)
        n_select, threshold = self._selection_rule(X.shape[1])
        self._check_finite(X)
        check_classification_targets(y)
        classes, y_codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DeepfeatError(
                f"MRMRSelector needs at least 2 classes in y; got 1 class ({classes[0].item()!r}). "
                "mRMR relevance compares features across classes."
            )
        d = X.shape[1]
        if n_select is not None and n_select > d:
            warnings.warn(
                f"n_features={n_select} is greater than the {d} features of X; all {d} are ranked.",
                UserWarning,
                stacklevel=2,
            )
            n_select = d
        relevance, redundancy_of, combine = self._terms(X, y_codes, len(classes), n_select)
        self.relevance_ = relevance
        self.ranking_, self.scores_ = _greedy_mrmr(
            relevance, redundancy_of, combine, n_select=n_select, threshold=threshold
        )
        if len(self.ranking_) == 0:
            self._keep_the_most_relevant(relevance, threshold)
        elif n_select is not None and len(self.ranking_) < n_select:
            n_positive = int(np.count_nonzero(relevance > 0))
            warnings.warn(
                f"Only {n_positive} of the {d} features have positive relevance, so MRMRSelector picked "
                f"{len(self.ranking_)} instead of n_features={n_select}; features with zero relevance "
                "(e.g. constant columns) are never picked.",
                UserWarning,
                stacklevel=2,
            )
        return self

    def _keep_the_most_relevant(self, relevance, threshold):
        """Nothing was picked: keep the single most relevant feature, so the pipeline downstream still has an
        input, and say why rather than hand on 0 columns."""
        d = len(relevance)
        best = int(np.argmax(relevance))
        self.ranking_ = np.array([best], dtype=np.intp)
        self.scores_ = np.full(d, np.nan)
        self.scores_[best] = float(relevance[best])
        if (relevance > 0).any():  # only a threshold stops before the first pick
            why = (f"no feature of the {d} reaches threshold={threshold!r} (the best, feature {best}, scores "
                   f"{relevance[best]:.4g})")
        else:
            why = f"no feature of the {d} has positive relevance to the classes (constant or uninformative features)"
        warnings.warn(f"MRMRSelector: {why}, so it keeps one feature ({best}) instead of none.", UserWarning,
                      stacklevel=3)

    def _selection_rule(self, d: int):
        """(n_select, threshold) with exactly one of them set, or a clear error."""
        if self.threshold is not None and self.n_features == "auto":
            return None, self.threshold
        if self.n_features == "auto":
            return auto_n_features(d), None
        if self.threshold is not None and self.n_features is not None:
            raise DeepfeatError(
                "MRMRSelector takes either n_features or threshold, not both: got "
                f"n_features={self.n_features!r} and threshold={self.threshold!r}. To keep every feature whose "
                f"score is >= threshold, pass n_features=None, threshold={self.threshold!r}."
            )
        if self.threshold is None and self.n_features is None:
            raise DeepfeatError("MRMRSelector needs n_features (an int >= 1) or threshold (a float); both are None.")
        return self.n_features, self.threshold

    def _check_finite(self, X):
        bad = ~np.isfinite(X)
        if not bad.any():
            return
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        name = f"{col} ({self.feature_names_in_[col]!r})" if hasattr(self, "feature_names_in_") else str(col)
        kind = "NaN" if np.isnan(X[:, col]).any() else "infinity"
        raise DeepfeatError(
            f"Input X contains {kind} in column {name} ({int(bad[:, col].sum())} values); "
            f"{int(bad.any(axis=0).sum())} column(s) in all are not finite. MRMRSelector needs finite "
            "features: drop or impute those rows/columns first."
        )

    def _terms(self, X, y_codes, n_classes, n_select):
        """(relevance, redundancy_of, combine) for the chosen method.

        ``redundancy_of(j, rows)`` gives the redundancy of the columns ``rows`` with column ``j``;
        ``combine(relevance, mean_redundancy)`` gives the mRMR score.
        """
        constant = np.ptp(X, axis=0) == 0
        if self.method in ("fcq", "fcd"):
            relevance = np.nan_to_num(f_statistic(X, y_codes, n_classes), nan=0.0, posinf=np.inf, neginf=0.0)
            relevance[constant] = 0.0
            redundancy_of = _correlation_redundancy(X, relevance, n_select)
        else:
            mi = MutualInformation(equal_frequency_codes(X, self.n_bins), self.n_bins, n_classes)
            relevance = mi(y_codes, np.arange(X.shape[1]))
            relevance[constant] = 0.0
            redundancy_of = mi.with_column
        return relevance, redundancy_of, _COMBINE[self.method]

    def _get_support_mask(self):
        check_is_fitted(self)
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[self.ranking_] = True
        return mask

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def _correlation_redundancy(X, relevance, n_select):
    """``redundancy_of(j, rows)`` = max(|Pearson r|, 0.001), computed among positive-relevance columns only."""
    candidates = np.flatnonzero(relevance > 0)
    # One d x d product beats ~d/4 matrix-vector products; bounded so that memory stays modest.
    many = n_select is None or n_select > len(candidates) // 4
    corr = CorrelationRedundancy(X[:, candidates], gram=many and len(candidates) <= _GRAM_MAX)
    position = np.full(X.shape[1], -1)
    position[candidates] = np.arange(len(candidates))

    def redundancy_of(j, rows):
        return np.maximum(corr(position[j])[position[rows]], _CORR_FLOOR)

    return redundancy_of


def _quotient(relevance, mean_redundancy):
    # mrmr-selection: a mean redundancy of 1 (perfect copies of every pick) is an infinite denominator
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 and inf/inf only occur off the candidates
        return relevance / np.where(mean_redundancy >= 1.0 - _PERFECT_TOL, np.inf, mean_redundancy)


def _mi_quotient(relevance, mean_redundancy):
    return relevance / np.maximum(mean_redundancy, _MI_FLOOR)


def _difference(relevance, mean_redundancy):
    return relevance - mean_redundancy


_COMBINE = {"fcq": _quotient, "fcd": _difference, "miq": _mi_quotient, "mid": _difference}


def _greedy_mrmr(relevance, redundancy_of, combine, *, n_select, threshold):
    """Greedy mRMR forward selection.

    ``redundancy_of(j, rows)`` returns the redundancy of the still-available columns ``rows`` with the
    column ``j`` just picked; a running sum per column turns the mean over the picked set into O(d) work per
    step. Only features with relevance > 0 are candidates. Ties (within ``_TIE_RTOL``) go to the lowest
    column index. Stops after ``n_select`` picks, or, with ``threshold``, when the best score drops below it.
    """
    d = relevance.shape[0]
    available = relevance > 0
    max_picks = int(available.sum()) if n_select is None else min(n_select, int(available.sum()))
    red_sum = np.zeros(d)
    ranking, scores = [], np.full(d, np.nan)
    for step in range(max_picks):
        score = relevance.copy() if step == 0 else combine(relevance, red_sum / step)
        score[~available | np.isnan(score)] = -np.inf
        best = score.max()
        if best == -np.inf or (threshold is not None and best < threshold):
            break
        if np.isinf(best):
            j = int(np.argmax(score == best))
        else:
            j = int(np.argmax(score >= best - _TIE_RTOL * abs(best)))
        ranking.append(j)
        scores[j] = score[j]
        available[j] = False
        if step + 1 < max_picks:
            rows = np.flatnonzero(available)
            red_sum[rows] += redundancy_of(j, rows)
    return np.asarray(ranking, dtype=np.intp), scores
