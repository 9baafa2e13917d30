"""The one per-fold pipeline: prep, cell and baselines. Local CV, nested CV and the Dask task map all call it.

- the **prep** of a fold (:class:`Fold`): a ``StandardScaler`` fitted on the training rows, and the mRMR ranking
  fitted on the standardised training rows (read from / written to the fold cache), each computed once and shared
  by every classifier of the fold. A selection of ``k`` features is the ranking's first ``k`` picks, in column
  order (exactly what ``MRMRSelector.transform`` keeps; a greedy ranking's prefix is the smaller selection).
- a **cell** (:meth:`Fold.score`): one classifier x selection fitted on the training rows and scored on the test
  rows (predictions, class scores, times), read from / written to the fold cache; nested CV's cells
  (:meth:`Fold.accuracy`) keep only the accuracy.
- the **baselines** (:meth:`Fold.baselines`): the majority class and a colour histogram + SVM, on the same split.

A Dask task holds no matrices: the prep task returns :meth:`Fold.state` (the fitted scaler and the ranking,
kilobytes), and each cell task rebuilds the fold from the scattered matrix and that state, so every fit gets the
bytes the local runner gives it.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from deepfeat.classifiers.estimators import GramSVC

__all__ = ["BASELINE", "BASELINE_HISTOGRAM", "BASELINE_MAJORITY", "BASELINE_TEXT", "Fold", "fit_score",
           "fold_record", "quiet_fits"]

#: Configuration names of the two sanity baselines, and their selection name.
BASELINE_MAJORITY = "baseline-majority"
BASELINE_HISTOGRAM = "baseline-histogram-svm"
BASELINE = "baseline"
#: How the report names them.
BASELINE_TEXT = {BASELINE_MAJORITY: "majority class", BASELINE_HISTOGRAM: "colour histogram + SVM"}


@contextlib.contextmanager
def quiet_fits():
    """Silence the warnings a fold's fits repeat, which were said once, up front."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # class_weight notes were recorded once, up front
        warnings.simplefilter("ignore", ConvergenceWarning)  # MATLAB-style lbfgs presets stop at their limit
        yield


def _class_scores(est, X) -> tuple[np.ndarray, str]:
    """Class scores for ROC AUC: probabilities when the estimator has them, else decision values."""
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X), "probability"
    s = est.decision_function(X)
    return (np.c_[-s, s] if s.ndim == 1 else s), "decision"


def fit_score(est, Xtr, ytr, Xte) -> dict:
    """Fit ``est`` on the training rows; its predictions, class scores and times on the test rows."""
    t0 = time.perf_counter()
    est.fit(Xtr, ytr)
    t1 = time.perf_counter()
    pred = est.predict(Xte)
    scores, kind = _class_scores(est, Xte)
    return {"pred": np.asarray(pred), "scores": scores, "score_kind": kind,
            "fit_time": t1 - t0, "predict_time": time.perf_counter() - t1}


class Fold:
    """One training / test split of one feature matrix, and the work its cells share.

    Parameters
    ----------
    X, y : ndarray
        The whole feature matrix and integer labels (rows are selected by ``train`` / ``test``).
    train, test : ndarray of int
    cache : FoldCache, optional
        Used only with ``data_id`` (the identity of ``X``: its content hash).
    scaler, mrmr : optional
        A prep already computed (the Dask prep task's :meth:`state`).
    """

    def __init__(self, X, y, train, test, *, cache=None, data_id=None, scaler=None, mrmr=None):
        self.X, self.y, self.train, self.test = X, y, train, test
        self.cache = cache if data_id is not None else None
        self.data_id = data_id
        self._scaler, self._mrmr, self._views, self._gram = scaler, mrmr, {}, None

    # ---- the prep
    @property
    def scaler(self) -> StandardScaler:
        """Fitted on the training rows, on first use."""
        if self._scaler is None:
            self._scaler = StandardScaler().fit(self.X[self.train])
        return self._scaler

    def mrmr(self, selector) -> dict:
        """The fold's mRMR ranking: ``ranking`` (pick order), ``scores`` (in pick order), ``fit_time``,
        ``n_selected``; fitted on the standardised training rows once, or read from the fold cache."""
        if self._mrmr is None:
            self._mrmr = self._cached(("mrmr", selector), lambda: self._fit_ranking(selector), test=False)
        return self._mrmr

    def _fit_ranking(self, selector) -> dict:
        t0 = time.perf_counter()
        sel = clone(selector).fit(self.view()[0], self.y[self.train])
        ranking = np.asarray(sel.ranking_)
        return {"ranking": ranking, "scores": np.asarray(sel.scores_)[ranking], "fit_time": time.perf_counter() - t0,
                "n_selected": len(ranking)}

    def columns(self, size: int | None = None) -> np.ndarray:
        """The columns of the mRMR selection of ``size`` (default: the ranking's own size), in column order."""
        info = self._mrmr
        return np.sort(info["ranking"][:info["n_selected"] if size is None else size])

    def view(self, columns=None) -> tuple[np.ndarray, np.ndarray]:
        """Standardised training and test rows, restricted to ``columns`` (None: all); computed once per fold."""
        key = None if columns is None else np.asarray(columns).tobytes()
        if key not in self._views:
            if columns is None:
                self._views[None] = (self.scaler.transform(self.X[self.train]),
                                     self.scaler.transform(self.X[self.test]))
            else:
                Xtr, Xte = self.view()
                self._views[key] = (Xtr[:, columns], Xte[:, columns])
        return self._views[key]

    def state(self) -> dict:
        """The prep, small enough for a Dask result: the fitted scaler and the ranking (or None)."""
        return {"scaler": self.scaler, "mrmr": self._mrmr}

    # ---- cells
    def score(self, est, selection: str, selector=None) -> dict:
        """One classifier x selection ("none" or "mrmr") on this fold: :func:`fit_score` of a clone, cached."""
        def compute():
            if selection == "mrmr":
                self.mrmr(selector)
            a, b = self.view(self.columns() if selection == "mrmr" else None)
            with quiet_fits():
                return fit_score(clone(est), a, self.y[self.train], b)

        return self._cached(("cell", est, selection, selector if selection == "mrmr" else None), compute)

    def accuracy(self, est, size: int, selector=None) -> float:
        """Nested CV's cell: accuracy of ``est`` on the first ``size`` mRMR picks (all columns when ``size`` is the
        width), fitted by ``selector``'s ranking."""
        full = size == self.X.shape[1]

        def compute():
            if not full:
                self.mrmr(selector)
            columns = None if full else self.columns(size)
            a, b = self.view(columns)
            with quiet_fits():
                if type(est) is GramSVC:  # the candidates differing only in C share one kernel matrix
                    pred = self._gram_predict(est, columns, a, b)
                else:
                    pred = clone(est).fit(a, self.y[self.train]).predict(b)
            return float(np.mean(pred == self.y[self.test]))

        return self._cached(("nested-cell", est, size, None if full else selector), compute)

    def _gram_predict(self, est, columns, a, b) -> np.ndarray:
        """``GramSVC`` fitted on ``a`` and predicting ``b``, with the RBF kernel matrices of this view and kernel
        scale computed once (the last one is kept: the grid lists a size's C values one after the other)."""
        key = (None if columns is None else np.asarray(columns).tobytes(), est.kernel_scale)
        if self._gram is None or self._gram[0] != key:
            self._gram = None  # free the previous matrices first
            a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            gamma = est.gamma_for(a64)
            self._gram = (key, rbf_kernel(a64, a64, gamma=gamma), rbf_kernel(b64, a64, gamma=gamma))
        _, K_train, K_test = self._gram
        return clone(est).fit_gram(a, K_train, self.y[self.train]).predict_gram(K_test)

    def baselines(self, majority: bool, hist) -> dict:
        """``{(name, "baseline"): cell}``: the majority class (when ``majority``) and the colour histogram + SVM
        (when ``hist``, the histogram matrix of every row, is given), on this split."""
        tr, te, out = self.train, self.test, {}
        with quiet_fits():
            if majority:  # the prior ignores X
                out[(BASELINE_MAJORITY, BASELINE)] = fit_score(DummyClassifier(strategy="prior"), self.X[tr][:, :1],
                                                               self.y[tr], self.X[te][:, :1])
            if hist is not None:
                hs = StandardScaler().fit(hist[tr])
                out[(BASELINE_HISTOGRAM, BASELINE)] = fit_score(SVC(kernel="rbf", C=1.0, gamma="scale"),
                                                                hs.transform(hist[tr]), self.y[tr],
                                                                hs.transform(hist[te]))
        return out

    # ---- the fold cache
    def _cached(self, parts: tuple, compute, test: bool = True):
        """``compute()``, or its value stored under this fold's rows (+ test rows) and ``parts``."""
        if self.cache is None:
            return compute()
        key = self.cache.key(self.data_id, self.train, *((self.test,) if test else ()), *parts)
        value = self.cache.get(key)
        if value is None:
            value = compute()
            self.cache.put(key, value)
        return value


def fold_record(task, name, width: int, selections, mrmr, results: dict) -> dict:
    """What one fold of one feature set gives :func:`deepfeat.evaluation.results.assemble_results`."""
    r, k, _, te, _ = task
    return {"repeat": r, "fold": k, "test": te, "mrmr": mrmr, "results": results, "features": name,
            "n_features": {s: (width if s == "none" else mrmr["n_selected"]) for s in selections}}
