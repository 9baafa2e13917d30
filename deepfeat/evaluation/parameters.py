"""The one check of each evaluation parameter that more than one entry point takes (cross-validation, nested CV,
learning curves, few-shot), so a bad value gets the same message wherever it is given.

Messages name the Python parameter (``The 'repeats' parameter ...``); the CLI rewrites them into option names
(:func:`deepfeat.cli_messages.to_cli`).
"""
from __future__ import annotations

from numbers import Integral

from deepfeat import defaults
from deepfeat.errors import DeepfeatError

__all__ = ["AUTO_PARALLEL_VALUES", "check_count", "resolve_baseline", "resolve_n_jobs"]

#: ``n_jobs="auto"`` runs folds in worker processes from this many feature values (rows x columns of every
#: feature matrix) on: below it a fold is scored in less time than a worker takes to start and import.
AUTO_PARALLEL_VALUES = 1_000_000


def check_count(name: str, value, minimum: int) -> int:
    """``value`` as an int, or a clear error unless it is an integer >= ``minimum`` (booleans refused).

    Examples
    --------
    >>> check_count("folds", 10, 2)
    10
    >>> check_count("repeats", 0, 1)
    Traceback (most recent call last):
    ...
    deepfeat.errors.DeepfeatError: The 'repeats' parameter must be an int >= 1. Got 0 instead.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise DeepfeatError(f"The '{name}' parameter must be an int >= {minimum}. Got {value!r} instead.")
    return int(value)


def resolve_baseline(baseline) -> str:
    """The sanity baselines asked for, as one of :data:`deepfeat.defaults.BASELINES` (None means ``"none"``).

    One meaning everywhere: ``"auto"`` scores every baseline the evaluation has, the colour-histogram + SVM one
    when every image is reachable (said so when not); ``"histogram"`` the same, with the images required (an error
    when they are not); ``"majority"`` no colour histogram, only the majority-class baseline (where the evaluation
    has one: cross-validation; learning curves and few-shot episodes then score no baseline); ``"none"``: none.

    Examples
    --------
    >>> resolve_baseline(None), resolve_baseline("auto")
    ('none', 'auto')
    """
    if baseline is None:
        return "none"
    if not isinstance(baseline, str) or baseline not in defaults.BASELINES:
        allowed = ", ".join(repr(b) for b in defaults.BASELINES)
        raise DeepfeatError(f"The 'baseline' parameter must be one of {allowed} (or None, the same as 'none'). "
                            f"Got {baseline!r} instead.")
    return baseline


def resolve_n_jobs(n_jobs, *, n_values: int, n_tasks: int, per_fold_features: bool = False) -> int:
    """The worker processes the folds run on, for joblib: ``n_jobs`` as given, or for ``"auto"`` one per core
    (``joblib.cpu_count()``: affinity and container limits respected), at most one per task, when the feature
    matrices hold at least :data:`AUTO_PARALLEL_VALUES` values, else 1. ``per_fold_features`` (in-fold
    fine-tuning, where each fold trains a network with torch's own threads): ``"auto"`` is 1. Results do not depend
    on it: each fold's work is the same in a worker as here.

    Examples
    --------
    >>> resolve_n_jobs("auto", n_values=320 * 1000, n_tasks=10)
    1
    >>> resolve_n_jobs(3, n_values=10, n_tasks=10)
    3
    """
    if n_jobs == "auto":
        if per_fold_features or n_values < AUTO_PARALLEL_VALUES:
            return 1
        from joblib import cpu_count

        return max(1, min(cpu_count(), int(n_tasks)))
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0:
        raise DeepfeatError("The 'n_jobs' parameter must be 'auto' or a non-zero int (joblib's: -1 = every core). "
                            f"Got {n_jobs!r} instead.")
    return int(n_jobs)
