"""The one interval of a mean score: every "95 % interval" over fold, repeat, episode or outer-fold scores comes
from here.

:func:`mean_interval` is used by the report's verdict and accuracy bars (over the fold scores of one
configuration), the learning curves (over repeats), few-shot evaluation (over episodes) and nested cross-validation
(over the outer folds).

Two cases:

- **A proportion** (accuracy, precision, recall, specificity, F1, AUC: pass ``bounds``, e.g. ``(0, 1)``): the
  interval of :data:`PROPORTION_METHOD`. (a) The spread of the scores, on the logit scale: the mean ``m`` gets a
  continuity adjustment ``p = (m N + 0.5) / (N + 1)`` (``N`` the test items behind the scores, so 0 and 100 % have
  a finite logit); the standard error of ``m`` (``sd * sqrt(1/n + n_test/n_train)`` when folds share training
  data, the corrected resampled t of Nadeau & Bengio 2003, else ``sd / sqrt(n)``) goes to the logit scale by the
  delta method, ``se / (p (1 - p))``, and the interval is ``expit(logit(p) +- t_{n-1} * se)``. (b) The binomial
  error of the ``N`` pooled test items: the Wilson interval of ``m N`` successes in ``N`` (ten folds all at 100 %
  still leave doubt, and one fold has no spread to measure). The interval is the union of (a) and (b) and the
  observed mean, mapped back to ``bounds``: it lies inside them by construction.
- **Anything else** (a difference of scores, a time; no ``bounds``): the Student-t interval
  ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``, inflated by ``sqrt(1 + n * n_test/n_train)`` when folds share
  training data.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["MeanInterval", "PROPORTION_METHOD", "mean_interval", "mean_with_interval", "proportion_method",
           "wilson_interval"]

PROPORTION_METHOD = ("logit-scale t interval over the scores (delta method, +0.5 continuity adjustment), widened "
                     "to hold the Wilson interval of the pooled test images; never outside 0-100 %)")


def proportion_method(corrected: bool) -> str:
    """The name of the proportion interval, as a report states it (``corrected``: folds share training data)."""
    if corrected:
        return PROPORTION_METHOD[:-1] + "; variance corrected for overlapping training sets, Nadeau and Bengio)"
    return PROPORTION_METHOD


def wilson_interval(k: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95 % by default); NaN for ``n == 0``.

    Examples
    --------
    >>> [round(v, 4) for v in wilson_interval(45, 50)]
    [0.7864, 0.9565]
    >>> [round(v, 4) for v in wilson_interval(320, 320)]
    [0.9881, 1.0]
    """
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def mean_with_interval(mean: float, low: float, high: float, digits: int = 1) -> str:
    """``"97.5 (93.1 to 99.2)"``: a proportion and its interval in %, the way every table shows them (intervals
    may be asymmetric, so never as ``mean +- half``); the mean alone when the interval is NaN.

    >>> mean_with_interval(0.975, 0.931, 0.992)
    '97.5 (93.1 to 99.2)'
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{100 * mean:.{digits}f}"
    return f"{100 * mean:.{digits}f} ({100 * low:.{digits}f} to {100 * high:.{digits}f})"


class MeanInterval(NamedTuple):
    """``mean``, ``low``, ``high`` of the interval, the ``n`` finite scores it was computed from, their ``sd``
    (ddof=1) and ``half``, half the interval's width; ``low``/``high``/``half`` are NaN when there is nothing to
    measure a spread from (no score; one score of a proportion with no ``n_items``, or of a non-proportion), and
    ``sd`` is NaN with fewer than 2 scores."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    half: float


def mean_interval(values, *, level: float = 0.95, test_train_ratio: float | None = None,
                  bounds: tuple[float, float] | None = None, n_items: float | None = None) -> MeanInterval:
    """Interval of the mean of ``values`` (non-finite values dropped).

    Parameters
    ----------
    values : array-like of float
        Scores: one per fold, per repeat, per episode or per outer fold.
    level : float
        Coverage of the interval.
    test_train_ratio : float, optional
        ``n_test / n_train`` of the splits when their training sets overlap (cross-validation folds, repeated
        splits): the variance of the mean is inflated to ``sd**2 * (1/n + ratio)`` (Nadeau & Bengio 2003), because
        such scores are not independent.
    bounds : (low, high), optional
        The range of a proportion (``(0, 1)`` for an accuracy): the interval is then the logit-scale interval of
        :data:`PROPORTION_METHOD`, inside ``bounds``. Without it, a Student-t interval.
    n_items : float, optional
        For a proportion, how many test items the scores pool (the images of the data set for one repetition of
        k-fold cross-validation; one test set for repeated splits): sets the continuity adjustment and the Wilson
        interval of the pooled items. Without it each score counts as one item and there is no Wilson part.

    Returns
    -------
    MeanInterval

    Examples
    --------
    >>> m = mean_interval([0.8, 0.9, 1.0])
    >>> round(m.mean, 3), round(m.low, 3), round(m.high, 3), m.n
    (0.9, 0.652, 1.148, 3)
    >>> p = mean_interval([0.8, 0.9, 1.0], bounds=(0, 1), n_items=30)
    >>> round(p.low, 3), round(p.high, 3)
    (0.397, 0.989)
    >>> p = mean_interval([1.0] * 10, bounds=(0, 1), n_items=320)
    >>> round(p.low, 4), p.high
    (0.9881, 1.0)
    """
    from scipy import stats

    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    if bounds is not None:
        return _proportion_interval(v, mean, sd, level, test_train_ratio, bounds, n_items)
    if n == 1:
        return MeanInterval(mean, math.nan, math.nan, 1, math.nan, math.nan)
    se = sd * math.sqrt(1 / n + (test_train_ratio or 0.0))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * se)
    return MeanInterval(mean, mean - half, mean + half, n, sd, half)


def _proportion_interval(v, mean, sd, level, ratio, bounds, n_items) -> MeanInterval:
    """The interval of a mean proportion (see the module's docstring)."""
    from scipy import stats
    from scipy.special import expit, logit

    n = len(v)
    lo_b, hi_b = float(bounds[0]), float(bounds[1])
    if not hi_b > lo_b:
        raise ValueError(f"bounds must be (low, high) with low < high; got {bounds!r}")
    width = hi_b - lo_b
    m = min(max((mean - lo_b) / width, 0.0), 1.0)
    items = float(n_items) if n_items else None
    if n == 1 and items is None:
        return MeanInterval(mean, math.nan, math.nan, 1, math.nan, math.nan)
    low = high = m
    if n > 1:  # (a) the spread of the scores, logit scale
        big_n = items if items is not None else float(n)
        p = (m * big_n + 0.5) / (big_n + 1)
        se = (sd / width) * math.sqrt(1 / n + (ratio or 0.0)) / (p * (1 - p))
        q = stats.t.ppf(0.5 + level / 2, n - 1)
        low, high = min(low, float(expit(logit(p) - q * se))), max(high, float(expit(logit(p) + q * se)))
    if items is not None:  # (b) the binomial error of the pooled test items
        w_low, w_high = wilson_interval(m * items, items, z=float(stats.norm.ppf(0.5 + level / 2)))
        low, high = min(low, w_low), max(high, w_high)
    low, high = lo_b + width * low, lo_b + width * high
    return MeanInterval(mean, low, high, n, sd, (high - low) / 2)
