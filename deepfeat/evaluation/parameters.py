"""The one check of each evaluation parameter that more than one entry point takes (cross-validation, nested CV,
learning curves, few-shot), so a bad value gets the same message wherever it is given.

Messages name the Python parameter (``The 'repeats' parameter ...``); the CLI rewrites them into option names
(:func:`deepfeat.cli_messages.to_cli`).
"""
from __future__ import annotations

from numbers import Integral

from deepfeat import defaults
from deepfeat.errors import DeepfeatError

__all__ = ["check_count", "resolve_baseline"]


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
