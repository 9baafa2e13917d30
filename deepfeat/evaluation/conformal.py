"""Prediction sets with a coverage guarantee (conformal prediction), a small own implementation.

Why not MAPIE: its 1.x API was rewritten (``SplitConformalClassifier`` / ``CrossConformalClassifier``) and its
objects would have to be stored in model files, whose ``.skops`` loader admits an explicit allow-list of types only;
the method itself is 40 lines of numpy below, stored as plain arrays.

Method: a **nonconformity score** ``s(x, c)`` for every class (``lac``: ``1 - p_c``, the least ambiguous set-valued
classifier; ``aps``: the probability mass of every class at least as likely as ``c``, adaptive prediction sets,
non-randomised). On calibration rows whose true class is known, the threshold ``q`` is the
``ceil((n + 1) * coverage)``-th smallest score of the true class (infinite when that rank exceeds ``n``: then every
class is in every set). The set of a new image is ``{c : s(x, c) <= q}``. When the calibration rows and the new
image are exchangeable, the true class is in the set with probability >= ``coverage`` (split conformal).
``class_conditional=True`` (Mondrian) computes one threshold per class from that class's rows only, so each class,
rare ones too, keeps the guarantee on its own. ``non_empty=True`` adds the most probable class to an empty set
(coverage can only rise).

Where the calibration rows come from: ``deepfeat fit --coverage`` and the CV's check use **cross-conformal**
scores: out-of-fold probabilities of the training images from ``inner_folds`` models each fitted without them,
while the model that predicts is fitted on all training images. This spends no images on a held-out part; the
exact finite-sample guarantee is that of split conformal, so the CV report measures the coverage actually reached
on held-out outer folds (:func:`cv_coverage`), calibrated inside each outer training part only.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepfeat import defaults
from deepfeat.errors import DeepfeatError

__all__ = ["CONFORMAL_SCORES", "calibrate_conformal", "check_coverage", "conformal_threshold", "cv_coverage",
           "coverage_summary", "nonconformity", "prediction_sets", "set_columns"]

CONFORMAL_SCORES = defaults.CONFORMAL_SCORES
#: How deepfeat calibrates (written into model files and reports).
METHOD_TEXT = ("cross-conformal: out-of-fold probabilities of the training images ({folds}-fold) calibrate the "
               "model fitted on all of them")


def check_coverage(coverage, name: str = "coverage") -> float:
    """``coverage`` as a float in (0, 1), else a :class:`DeepfeatError` naming ``name``."""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0 < coverage < 1:
        raise DeepfeatError(f"{name} must be a probability in (0, 1), e.g. 0.95; got {coverage!r}")
    return float(coverage)


def nonconformity(proba, score: str = defaults.CONFORMAL_SCORE) -> np.ndarray:
    """``(n, n_classes)`` scores ``s(x, c)`` of every row and class (lower = more conforming)."""
    proba = np.asarray(proba, dtype=float)
    if score == "lac":
        return 1.0 - proba
    if score == "aps":
        order = np.argsort(-proba, axis=1, kind="stable")
        cum = np.cumsum(np.take_along_axis(proba, order, axis=1), axis=1)
        out = np.empty_like(proba)
        np.put_along_axis(out, order, cum, axis=1)
        return out
    raise DeepfeatError(f"conformal score must be one of {list(CONFORMAL_SCORES)}; got {score!r}")


def conformal_threshold(scores, coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest of the calibration ``scores`` (inf when that exceeds n)."""
    scores = np.sort(np.asarray(scores, dtype=float))
    k = math.ceil((len(scores) + 1) * coverage - 1e-9)
    return float(scores[k - 1]) if 1 <= k <= len(scores) else math.inf


def calibrate_conformal(proba, y, *, coverage: float, classes, score: str = defaults.CONFORMAL_SCORE,
                        class_conditional: bool = defaults.CLASS_CONDITIONAL, non_empty: bool = defaults.NON_EMPTY,
                        method: str = "") -> dict:
    """The conformal calibration (plain values, stored in model files) from calibration ``proba`` and true class
    indices ``y``: ``thresholds`` (one per class; equal unless ``class_conditional``), ``coverage``, ``score``,
    ``class_conditional``, ``non_empty``, ``n_calibration``, ``calibration_counts``, ``classes``, ``method``."""
    coverage = check_coverage(coverage)
    y = np.asarray(y, dtype=int)
    S = nonconformity(proba, score)
    true = S[np.arange(len(y)), y]
    K = S.shape[1]
    if class_conditional:
        thresholds = [conformal_threshold(true[y == c], coverage) for c in range(K)]
    else:
        thresholds = [conformal_threshold(true, coverage)] * K
    return {"coverage": coverage, "score": score, "class_conditional": bool(class_conditional),
            "non_empty": bool(non_empty), "thresholds": np.asarray(thresholds, dtype=float),
            "n_calibration": len(y), "calibration_counts": [int(n) for n in np.bincount(y, minlength=K)],
            "classes": [str(c) for c in classes], "method": method}


def prediction_sets(proba, calibration: dict) -> np.ndarray:
    """Boolean ``(n, n_classes)``: class ``c`` is in the set of row ``i``."""
    proba = np.asarray(proba, dtype=float)
    thresholds = np.asarray(calibration["thresholds"], dtype=float)
    if proba.ndim != 2 or proba.shape[1] != len(thresholds):
        raise DeepfeatError(f"the conformal calibration has {len(thresholds)} classes but the probabilities have "
                            f"shape {proba.shape}")
    member = nonconformity(proba, calibration["score"]) <= thresholds[None, :]
    if calibration["non_empty"]:
        empty = ~member.any(axis=1)
        member[empty, proba[empty].argmax(axis=1)] = True
    return member


def set_columns(proba, calibration: dict) -> pd.DataFrame:
    """Per row: ``set`` (the classes, most probable first, joined by ``|``), ``set_size`` and ``decision``
    (``alone`` when the set holds one class, ``refer`` when it holds several or none). Rows whose probabilities
    are NaN (unreadable images) get an empty ``set``, no size and no decision."""
    proba = np.asarray(proba, dtype=float)
    ok = ~np.isnan(proba).any(axis=1)
    member = np.zeros(proba.shape, dtype=bool)
    if ok.any():
        member[ok] = prediction_sets(proba[ok], calibration)
    names = np.asarray(calibration["classes"], dtype=object)
    sets, sizes, decisions = [], [], []
    for i in range(len(proba)):
        order = np.argsort(-np.nan_to_num(proba[i], nan=0.0), kind="stable")
        chosen = [names[c] for c in order if member[i, c]]
        sets.append("|".join(chosen))
        sizes.append(len(chosen) if ok[i] else None)
        decisions.append(("alone" if len(chosen) == 1 else "refer") if ok[i] else "")
    return pd.DataFrame({"set": sets, "set_size": pd.array(sizes, dtype="Int64"), "decision": decisions})


def coverage_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per configuration x nominal coverage x class (and ``all``): ``n``, empirical ``coverage``, its binomial
    ``se``, ``mean_set_size`` and ``decided_alone`` (share of sets with exactly one class)."""
    def agg(part):
        c = part["covered"].mean()
        return pd.Series({"n": len(part), "coverage": c, "se": math.sqrt(c * (1 - c) / len(part)),
                          "mean_set_size": part["set_size"].mean(),
                          "decided_alone": (part["set_size"] == 1).mean()})

    keys = ["config", "nominal"]
    overall = rows.groupby(keys, sort=False).apply(agg, include_groups=False).reset_index().assign(**{"class": "all"})
    per = rows.groupby([*keys, "true"], sort=False).apply(agg, include_groups=False).reset_index()
    per = per.rename(columns={"true": "class"})
    out = pd.concat([overall, per], ignore_index=True)
    first = {c: i for i, c in enumerate(dict.fromkeys(rows["config"]))}  # each configuration's rows together
    out = out.sort_values(["config", "nominal"], key=lambda s: s.map(first) if s.name == "config" else s,
                          kind="stable").reset_index(drop=True)
    return out[[*keys, "class", "n", "coverage", "se", "mean_set_size", "decided_alone"]]


def _rebuild(config_row, fold_row, params):
    """The pipeline the CV scored for this configuration and fold, unfitted (None when it cannot be rebuilt)."""
    from deepfeat.classifiers.presets import PRESETS, build_pipeline

    if config_row["kind"] != "deep features" or str(config_row["classifier"]) not in PRESETS:
        return None
    mrmr = config_row["selection"] == "mrmr"
    return build_pipeline(config_row["classifier"], selector="mrmr" if mrmr else None,
                          n_features=int(fold_row["n_features"]) if mrmr else None,
                          mrmr_method=params["mrmr_method"], seed=params["seed"], class_weight=params["class_weight"])


def cv_coverage(features, results, coverages, *, score: str = defaults.CONFORMAL_SCORE,
                class_conditional: bool = defaults.CLASS_CONDITIONAL, non_empty: bool = defaults.NON_EMPTY,
                inner_folds: int = defaults.INNER_FOLDS) -> tuple[pd.DataFrame, list[str]]:
    """Empirical coverage of conformal sets on the held-out outer folds of a CV run, calibrated honestly.

    For every configuration with class probabilities and every outer fold, the configuration's pipeline is
    re-fitted ``inner_folds`` times on the fold's training rows only (mRMR included) to get cross-conformal
    scores of those rows; the thresholds at each nominal ``coverages`` level are applied to the outer test rows'
    probabilities that the CV already holds. The test rows' labels are used only to count coverage.

    Returns ``(summary, notes)``: :func:`coverage_summary` and what was left out and why.
    """
    from deepfeat.evaluation.calibration import out_of_fold_proba

    levels = [check_coverage(c, "coverage") for c in coverages]
    params, classes = results.config["parameters"], list(results.classes)
    if "features" in results.summary.columns:
        return pd.DataFrame(), ["conformal coverage is measured for a single FeatureSet, not a grid"]
    X = np.asarray(features.X)
    codes = pd.Categorical(np.asarray(features.y).astype(str), categories=classes).codes
    cols = [f"score_{c}" for c in classes]
    rows, notes = [], []
    per_fold = results.per_fold.set_index(["config", "repeat", "fold"])
    first = results.predictions.drop_duplicates("row").set_index("row")
    group_of = first["group"] if "group" in first and first["group"].notna().any() else None
    for _, cfg in results.summary.iterrows():
        pred = results.predictions[results.predictions["config"] == cfg["config"]]
        if cfg["kind"] != "deep features" or (pred["score_kind"] != "probability").any():
            if cfg["kind"] == "deep features":
                notes.append(f"{cfg['config']}: no class probabilities (decision values only), no sets")
            continue
        for (r, k), part in pred.groupby(["repeat", "fold"], sort=False):
            pipe = _rebuild(cfg, per_fold.loc[(cfg["config"], r, k)], params)
            if pipe is None:
                notes.append(f"{cfg['config']}: not a preset, cannot be re-fitted for calibration")
                break
            test = part["row"].to_numpy()
            train = np.setdiff1d(np.arange(len(X)), test)
            if len(np.unique(codes[train])) < len(classes):
                notes.append(f"{cfg['config']} repeat {r} fold {k}: a class is absent from the training part, "
                             "no sets for that fold")
                continue
            inner = out_of_fold_proba(pipe, X[train], codes[train], folds=inner_folds, seed=params["seed"] + r,
                                      groups=None if group_of is None else group_of.reindex(train).to_numpy())
            for level in levels:
                cal = calibrate_conformal(inner, codes[train], coverage=level, classes=classes, score=score,
                                          class_conditional=class_conditional, non_empty=non_empty)
                member = prediction_sets(part[cols].to_numpy(float), cal)
                covered = member[np.arange(len(test)), codes[test]]
                rows += [{"config": cfg["config"], "nominal": level, "repeat": r, "fold": k, "true": classes[t],
                          "set_size": int(s), "covered": bool(c)}
                         for t, s, c in zip(codes[test], member.sum(axis=1), covered)]
    if not rows:
        return pd.DataFrame(), notes
    return coverage_summary(pd.DataFrame(rows)), list(dict.fromkeys(notes))
