"""``deepfeat fit --calibrate / --coverage``: calibrate a fitted model's probabilities and store a conformal
calibration with it, both from out-of-fold probabilities of its own training images.

The model keeps two plain records, written into its model file (.joblib and .skops alike) and its sidecar:
``calibration_`` (:func:`deepfeat.evaluation.calibration.choose_calibration`: the map chosen, the out-of-fold ECE
before and after) and ``conformal_`` (:func:`deepfeat.evaluation.conformal.calibrate_conformal`: thresholds,
coverage, score). ``deepfeat predict`` turns ``conformal_`` into a prediction set per image
(:func:`deepfeat.evaluation.conformal.set_columns`).
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.base import clone

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.calibration import choose_calibration, out_of_fold_proba
from deepfeat.evaluation.conformal import METHOD_TEXT, calibrate_conformal, check_coverage

__all__ = ["check_trust_options", "fit_trust", "trust_lines"]


def check_trust_options(*, coverage, conformal_score) -> None:
    """The options of :func:`fit_trust`, checked before any training (CLI names in the messages)."""
    if coverage is not None:
        check_coverage(coverage, "--coverage")
    if conformal_score not in defaults.CONFORMAL_SCORES:
        raise DeepfeatError(f"--conformal-score must be one of {list(defaults.CONFORMAL_SCORES)}; got "
                            f"{conformal_score!r}")


def fit_trust(model, features, *, calibrate: bool = defaults.CALIBRATE, coverage=None,
              conformal_score: str = defaults.CONFORMAL_SCORE, class_conditional: bool = defaults.CLASS_CONDITIONAL,
              non_empty: bool = defaults.NON_EMPTY, folds: int = defaults.INNER_FOLDS, seed: int = defaults.SEED):
    """``model`` (a DeepFeatureClassifier fitted on ``features``), calibrated and/or with a conformal calibration.

    With ``calibrate``, a new model is fitted on all of ``features`` with the chosen ``CalibratedClassifierCV`` as
    its classifier (``class_weight`` already applied inside). With ``coverage``, the conformal thresholds come from
    the ``folds``-fold out-of-fold probabilities of the (calibrated) pipeline on the training images
    (cross-conformal; grouped folds when the FeatureSet has groups).
    """
    check_trust_options(coverage=coverage, conformal_score=conformal_score)
    if not calibrate and coverage is None:
        return model
    y = np.asarray(features.y)
    codes = np.unique(y, return_inverse=True)[1]
    pipe = clone(model.pipeline_)
    if calibrate:
        clf, record, proba = choose_calibration(pipe, features.X, y, folds=folds, seed=seed, groups=features.groups)
        model = type(model)(**{**model.get_params(deep=False), "classifier": clf, "class_weight": None})
        model.fit_features(features)
        model.calibration_ = record
    else:
        if not hasattr(model, "predict_proba"):
            raise DeepfeatError(f"--coverage needs class probabilities, and classifier {model.classifier!r} gives "
                                "none; use --classifier svm-calibrated (the default) or add --calibrate")
        proba = out_of_fold_proba(pipe, features.X, y, folds=folds, seed=seed, groups=features.groups)
    if coverage is not None:
        model.conformal_ = calibrate_conformal(proba, codes, coverage=coverage, classes=model.classes_,
                                               score=conformal_score, class_conditional=class_conditional,
                                               non_empty=non_empty, method=METHOD_TEXT.format(folds=folds))
    return model


def _pct(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def trust_lines(model) -> list[str]:
    """What ``deepfeat fit`` says about the calibration and the conformal sets it stored."""
    lines = []
    cal = getattr(model, "calibration_", None)
    if cal:
        lines.append(f"calibration: {cal['method']} (chosen by {cal['criterion']}); ECE out-of-fold "
                     f"{_pct(cal['ece_before'])} before -> {_pct(cal['ece_after'])} after ({cal['bins']})")
    conf = getattr(model, "conformal_", None)
    if conf:
        kind = "one threshold per class (Mondrian)" if conf["class_conditional"] else "one threshold"
        thr = ", ".join("all classes" if math.isinf(t) else f"{t:.3f}" for t in conf["thresholds"])
        lines.append(f"prediction sets: {100 * conf['coverage']:g} % coverage, {conf['score']} score, {kind} "
                     f"({thr}), {conf['method']}, {conf['n_calibration']} images"
                     + ("; never empty" if conf["non_empty"] else ""))
    return lines
