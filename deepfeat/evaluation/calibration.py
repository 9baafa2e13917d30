"""How far a predicted probability can be trusted: the expected calibration error (ECE), reliability bins, and the
choice of a calibration map (sigmoid or isotonic) by inner cross-validation for ``deepfeat fit --calibrate``.

ECE here is the **top-label** ECE over **15 equal-width bins** of the predicted class's probability (the
confidence): bin ``b`` holds the rows whose confidence lies in ``(b/15, (b+1)/15]``, and
``ECE = sum_b (n_b / n) * |accuracy_b - mean confidence_b|``. 0 is perfect; a model that says 90 % and is right
60 % of the time has ECE 0.30. It is computed from out-of-fold probabilities only (the CV's predictions, or the
inner folds of ``fit``), never from probabilities of the rows a model was trained on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import log_loss

from deepfeat.errors import DeepfeatError

__all__ = ["CALIBRATION_METHODS", "N_BINS", "calibration_table", "choose_calibration", "expected_calibration_error",
           "out_of_fold_proba", "reliability_bins"]

#: Equal-width confidence bins of the ECE and the reliability diagram.
N_BINS = 15
#: The calibration maps ``fit --calibrate`` chooses between (by inner-CV log loss).
CALIBRATION_METHODS = ("sigmoid", "isotonic")


def _top_label(y, proba) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y)
    if proba.ndim != 2 or len(proba) != len(y):
        raise DeepfeatError(f"proba must be an (n, n_classes) array with one row per label; got shape "
                            f"{proba.shape} for {len(y)} labels")
    return proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)


def reliability_bins(y, proba, n_bins: int = N_BINS) -> pd.DataFrame:
    """One row per non-empty confidence bin: ``low``, ``high``, ``count``, ``confidence`` (mean top-label
    probability) and ``accuracy`` (share of rows whose top label is right). ``y`` are column indices of ``proba``."""
    conf, correct = _top_label(y, proba)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    rows = [{"bin": b, "low": b / n_bins, "high": (b + 1) / n_bins, "count": int(np.sum(idx == b)),
             "confidence": float(conf[idx == b].mean()), "accuracy": float(correct[idx == b].mean())}
            for b in range(n_bins) if np.any(idx == b)]
    return pd.DataFrame(rows, columns=["bin", "low", "high", "count", "confidence", "accuracy"])


def expected_calibration_error(y, proba, n_bins: int = N_BINS) -> float:
    """Top-label ECE over ``n_bins`` equal-width bins (see the module docstring); ``y`` are column indices.

    Examples
    --------
    >>> expected_calibration_error([0, 0, 1, 1], [[.9, .1], [.9, .1], [.9, .1], [.9, .1]])  # says 90 %, right 50 %
    0.4
    """
    bins = reliability_bins(y, proba, n_bins)
    if not len(bins):
        return float("nan")
    return round(float(np.sum(bins["count"] * np.abs(bins["accuracy"] - bins["confidence"])) / bins["count"].sum()),
                 12)


def calibration_table(predictions: pd.DataFrame, classes, n_bins: int = N_BINS) -> pd.DataFrame:
    """ECE per configuration of a CV's out-of-fold ``predictions`` (configurations that give probabilities; those
    with decision values only are left out): ``config``, ``n``, ``ece``, ``mean_confidence``, ``accuracy``."""
    rows = []
    cols = [f"score_{c}" for c in classes]
    for config, part in predictions.groupby("config", sort=False):
        if (part["score_kind"] != "probability").any() or not set(cols) <= set(part.columns):
            continue
        y = pd.Categorical(part["true"].astype(str), categories=[str(c) for c in classes]).codes
        proba = part[cols].to_numpy(float)
        conf, correct = _top_label(y, proba)
        rows.append({"config": config, "n": len(part), "ece": expected_calibration_error(y, proba, n_bins),
                     "mean_confidence": float(conf.mean()), "accuracy": float(correct.mean())})
    return pd.DataFrame(rows, columns=["config", "n", "ece", "mean_confidence", "accuracy"])


def out_of_fold_proba(estimator, X, y, *, folds: int, seed: int, groups=None) -> np.ndarray:
    """Class probabilities of every row from a clone of ``estimator`` fitted without that row (stratified
    ``folds``-fold, shuffled with ``seed``; grouped when ``groups`` is given). Columns follow ``np.unique(y)``."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    if not hasattr(estimator, "predict_proba"):
        raise DeepfeatError(f"{type(estimator).__name__} gives no class probabilities")
    if groups is None:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(clone(estimator), X, y, cv=cv, groups=groups, method="predict_proba")


def _probabilities(pipeline) -> bool:
    try:
        return hasattr(pipeline, "predict_proba")
    except AttributeError:
        return False


def choose_calibration(pipeline, X, y, *, folds: int, seed: int, groups=None, n_bins: int = N_BINS):
    """Calibrate the last step (``classify``) of the unfitted ``pipeline``: sigmoid and isotonic maps
    (``CalibratedClassifierCV(cv=folds, ensemble=False)``) are each scored by ``folds``-fold out-of-fold log loss on
    ``X, y`` (grouped folds when ``groups`` is given), and the lower wins. A classifier that is already a
    ``CalibratedClassifierCV`` (``svm-calibrated``) is re-calibrated from its inner estimator.

    Returns
    -------
    (classifier, record, proba)
        The chosen ``CalibratedClassifierCV`` (unfitted), a record for the model file (``method``, ``criterion``,
        ``log_loss`` per method, ``ece_before`` / ``ece_after``: out-of-fold ECE of the pipeline as given and as
        calibrated, ``bins``, ``folds``), and the chosen pipeline's out-of-fold probabilities.
    """
    y = np.asarray(y)
    codes = np.unique(y, return_inverse=True)[1]
    base = pipeline.steps[-1][1]
    if isinstance(base, CalibratedClassifierCV):
        base = base.estimator
    record = {"criterion": f"{folds}-fold out-of-fold log loss, lower wins", "folds": folds, "seed": seed,
              "bins": f"{n_bins} equal-width bins, top label", "log_loss": {}}
    before = (out_of_fold_proba(pipeline, X, y, folds=folds, seed=seed, groups=groups)
              if _probabilities(pipeline) else None)
    record["ece_before"] = None if before is None else expected_calibration_error(codes, before, n_bins)
    best = None
    for method in CALIBRATION_METHODS:
        clf = CalibratedClassifierCV(clone(base), method=method, cv=folds, ensemble=False)
        proba = out_of_fold_proba(clone(pipeline).set_params(**{pipeline.steps[-1][0]: clf}), X, y, folds=folds,
                                  seed=seed, groups=groups)
        loss = float(log_loss(codes, np.clip(proba, 1e-12, 1), labels=np.arange(proba.shape[1])))
        record["log_loss"][method] = loss
        if best is None or loss < best[0]:
            best = (loss, method, clf, proba)
    _, record["method"], clf, proba = best
    record["ece_after"] = expected_calibration_error(codes, proba, n_bins)
    return clf, record, proba
