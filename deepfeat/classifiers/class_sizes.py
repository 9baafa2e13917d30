"""Class sizes a classifier needs before it can be fitted, checked up front with the counts in the message.

A preset such as ``svm-calibrated`` (``CalibratedClassifierCV(cv=5)``) runs its own k-fold split inside ``fit``; a
class with fewer than k images makes scikit-learn fail deep inside with a generic ValueError. This says which
class, how many images every class has, and what to do.
"""
from __future__ import annotations

from collections import Counter

from deepfeat.errors import DeepfeatError


def internal_folds(estimator) -> int:
    """The largest integer ``cv`` of ``estimator`` or any estimator nested in it (1 when none splits)."""
    from sklearn.calibration import CalibratedClassifierCV

    need = 1
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    for key, value in params.items():
        if (key == "cv" or key.endswith("__cv")) and isinstance(value, int) and not isinstance(value, bool):
            need = max(need, value)
        if isinstance(value, CalibratedClassifierCV) and value.cv is None:
            need = max(need, 5)  # scikit-learn's default
    return need


def check_class_sizes(estimator, y, name) -> None:
    """Raise :class:`DeepfeatError` with the class counts when a class is smaller than the folds ``estimator`` needs."""
    need = internal_folds(estimator)
    counts = {str(k): int(v) for k, v in sorted(Counter(y.tolist() if hasattr(y, "tolist") else y).items())}
    small = {c: n for c, n in counts.items() if n < need}
    if small:
        raise DeepfeatError(
            f"classifier {name!r} splits the training images into {need} folds internally (probability "
            f"calibration), but class(es) {small} have fewer than {need} images (class counts: {counts}). Collect "
            f"more images, or choose a classifier without internal folds (e.g. --classifier svm, knn, nb)")
