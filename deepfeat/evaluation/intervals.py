"""The one interval of a mean score: every "95 % interval" over fold, repeat or outer-fold scores comes from here.

:func:`mean_interval` is used by the report's verdict and accuracy bars (over the fold scores of one
configuration), the learning curves (over repeats) and nested cross-validation (over the outer folds, with the
Nadeau & Bengio variance correction for overlapping training sets). Today it is a Student-t interval
``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``, optionally with a variance inflation and clipped to ``bounds``;
a better interval for accuracies (one that can never leave [0, 1]) replaces it here, in one place, for every caller.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["MeanInterval", "mean_interval"]


class MeanInterval(NamedTuple):
    """``mean``, ``low``, ``high`` of the interval, the ``n`` finite scores it was computed from, their ``sd``
    (ddof=1) and ``half``, the half width before any clipping; all but ``mean`` and ``n`` are NaN with fewer than
    2 scores (one score has no spread to measure)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    half: float


def mean_interval(values, *, level: float = 0.95, test_train_ratio: float | None = None,
                  bounds: tuple[float, float] | None = None) -> MeanInterval:
    """Interval of the mean of ``values`` (non-finite values dropped).

    Parameters
    ----------
    values : array-like of float
        Scores: one per fold, per repeat or per outer fold.
    level : float
        Coverage of the interval.
    test_train_ratio : float, optional
        ``n_test / n_train`` of cross-validation folds: the variance is then inflated by ``1 + n * ratio`` (the
        corrected resampled t of :func:`deepfeat.evaluation.compare.corrected_t_test`, Nadeau & Bengio 2003),
        because fold scores that share training rows are not independent.
    bounds : (low, high), optional
        Clip the interval to this range (e.g. ``(0, 1)`` for an accuracy).

    Returns
    -------
    MeanInterval

    Examples
    --------
    >>> m = mean_interval([0.8, 0.9, 1.0])
    >>> round(m.mean, 3), round(m.low, 3), round(m.high, 3), m.n
    (0.9, 0.652, 1.148, 3)
    >>> round(mean_interval([0.8, 0.9, 1.0], bounds=(0, 1)).high, 3)
    1.0
    """
    from scipy import stats

    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return MeanInterval(mean, math.nan, math.nan, 1, math.nan, math.nan)
    sd = float(v.std(ddof=1))
    if test_train_ratio is None:
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
        low, high = mean - half, mean + half
    else:
        from deepfeat.evaluation.compare import corrected_t_test

        # the corrected test of the centred scores is the interval of their mean (computed as nested CV always did)
        spread = corrected_t_test(v - mean, test_train_ratio, confidence=level)
        low, high = mean + spread["ci_low"], mean + spread["ci_high"]
        half = (spread["ci_high"] - spread["ci_low"]) / 2
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return MeanInterval(mean, float(low), float(high), n, sd, float(half))
