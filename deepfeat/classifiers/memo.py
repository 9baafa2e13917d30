"""The last answer of an expensive per-row computation, kept for the next call on the same rows.

Scoring a fitted classifier on a test fold asks it twice about the same rows: ``predict`` for the predicted
classes, then ``predict_proba`` or ``decision_function`` for the class scores (ROC AUC, calibration). For
:class:`~deepfeat.classifiers.estimators.GramSVC` both need the RBF kernel of the test rows against the support
vectors, and for :class:`~deepfeat.classifiers.small_data.KNeighborsClassifier` both need the neighbours of every
test row; on 3,256 x 1,000 features each is ~5 % of a default ``deepfeat cv``. :class:`LastRows` keeps the last
answer with a key made from the rows' bytes (shape, dtype and a BLAKE2b digest), so the second call reuses it and
returns exactly what a fresh computation would. The estimator creates a new one in ``fit`` (a refitted model never
sees an old answer) and leaves it out of its pickled state (:func:`without_memo`), so model files (joblib, .skops)
hold what they held before and a loaded model simply computes without it.
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["LastRows", "rows_key", "without_memo"]


def rows_key(X) -> tuple:
    """A key equal for two arrays exactly when they hold the same values in the same shape and dtype."""
    a = np.ascontiguousarray(X)
    return a.shape, a.dtype.str, hashlib.blake2b(a.view(np.uint8).ravel(), digest_size=16).digest()


class LastRows:
    """One-entry memo: :meth:`get` returns ``compute()`` for rows ``X``, reusing the answer of the previous call
    when it was made on the same rows. The entry is one attribute replaced at once, so threads sharing an
    estimator see either the old entry or the new one, never a mix. Compares equal to any other ``LastRows``
    (it is a cache, not state: scikit-learn's checks compare an estimator's ``__dict__`` around predict calls).
    """

    def __init__(self):
        self._last = None

    def get(self, X, compute, *, also=None):
        """``compute()`` for rows ``X``; ``also``: anything else the answer depends on (e.g. parameters that can be
        changed after the fit)."""
        key = (rows_key(X), also)
        last = self._last
        if last is not None and last[0] == key:
            return last[1].copy()
        value = compute()
        self._last = (key, value)
        return value.copy()

    def __eq__(self, other):
        return isinstance(other, LastRows)

    __hash__ = None

    def __repr__(self) -> str:
        return "LastRows()"


def without_memo(state: dict, name: str) -> dict:
    """An estimator's ``__getstate__`` dict without its memo attribute ``name``."""
    state = dict(state)
    state.pop(name, None)
    return state
