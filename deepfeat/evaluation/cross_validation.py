"""Honest cross-validation of classifiers on deep features: all features vs mRMR-selected, on the same folds.

For each fold the scaler and the selector are fitted on the training rows only; the mRMR ranking is computed once
per fold and shared by every classifier (it does not depend on the classifier). Baselines (majority class, and a
colour histogram + SVM when the images are reachable) are scored on the same folds. Metrics, honesty checks and
the results object live in :mod:`deepfeat.evaluation.results`.
"""
from __future__ import annotations

import time
import warnings
from typing import Callable

import numpy as np
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from deepfeat.classifiers.presets import get_classifier, make_selector
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import honesty
from deepfeat.evaluation.results import CVResults, assemble_results

__all__ = ["cross_validate", "CVResults", "make_folds"]

BASELINE_MAJORITY = "baseline-majority"
BASELINE_HISTOGRAM = "baseline-histogram-svm"
_SELECTIONS = ("none", "mrmr")
_BASELINES = ("auto", "histogram", "majority", None)


def _label(clf, taken: set) -> str:
    name = clf.lower() if isinstance(clf, str) else type(clf).__name__
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _check_inputs(features, selections, n_features, threshold, folds, baseline, repeats):
    counts = features.check_trainable("cross-validation")
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise DeepfeatError(f"folds must be an int >= 2; got {folds!r}")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise DeepfeatError(f"repeats must be an int >= 1; got {repeats!r}")
    small = {c: n for c, n in counts.items() if n < folds}
    if small:
        smallest = min(counts.values())
        advice = (f"Use --folds {smallest} (the smallest class size) or fewer, or collect more images."
                  if smallest >= 2 else
                  f"A class of {smallest} image cannot be cross-validated at all (it needs >= 2 images, one per "
                  "side of a split): collect more images of it, or leave that class out.")
        raise DeepfeatError(
            f"folds={folds} but class(es) {small} have fewer images than folds: every test fold needs each class "
            f"(class counts: {counts}). {advice}")
    unknown = [s for s in selections if s not in _SELECTIONS]
    if unknown or not selections:
        raise DeepfeatError(f"selections must be a non-empty subset of {_SELECTIONS}; got {list(selections)}")
    if n_features is not None and threshold is not None:
        raise DeepfeatError("give n_features or threshold for mRMR, not both")
    if n_features is not None and "mrmr" in selections and not 1 <= n_features <= features.n_features:
        raise DeepfeatError(f"n_features={n_features} but the features have {features.n_features} columns; "
                            f"choose 1..{features.n_features}")
    if baseline not in _BASELINES:
        raise DeepfeatError(f"baseline must be one of {_BASELINES}; got {baseline!r}")


def make_folds(y, groups, folds: int, repeats: int, seed: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(repeat, fold, train_idx, test_idx)`` for every fold; stratified, grouped when ``groups`` is given.

    Repeat ``r`` shuffles with ``random_state=seed + r``.
    """
    out = []
    if groups is not None and len(set(groups)) < folds:
        raise DeepfeatError(f"folds={folds} but there are only {len(set(groups))} subjects (groups); "
                            f"use --folds {len(set(groups))} or fewer")
    for r in range(repeats):
        if groups is None:
            splits = StratifiedKFold(folds, shuffle=True, random_state=seed + r).split(np.zeros(len(y)), y)
        else:
            splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + r).split(
                np.zeros(len(y)), y, groups)
        out += [(r, k, tr, te) for k, (tr, te) in enumerate(splits)]
    return out


def _scores(est, X) -> tuple[np.ndarray, str]:
    """Class scores for ROC AUC: probabilities when the estimator has them, else decision values."""
    if hasattr(est, "predict_proba"):
        return est.predict_proba(X), "probability"
    s = est.decision_function(X)
    return (np.c_[-s, s] if s.ndim == 1 else s), "decision"


def _fit_score(est, Xtr, ytr, Xte) -> dict:
    t0 = time.perf_counter()
    est.fit(Xtr, ytr)
    t1 = time.perf_counter()
    pred = est.predict(Xte)
    scores, kind = _scores(est, Xte)
    return {"pred": np.asarray(pred), "scores": scores, "score_kind": kind,
            "fit_time": t1 - t0, "predict_time": time.perf_counter() - t1}


def _run_fold(task, X, y, estimators, selections, selector, majority, hist, fold_features, tick=None) -> dict:
    """One fold: scale + select once, then fit and score every classifier and baseline on the same split."""
    r, k, tr, te, fold_index = task
    if fold_features is not None:
        X = np.asarray(fold_features(fold_index, tr, te))
        if X.ndim != 2 or X.shape[0] != len(y) or not np.isfinite(X).all():
            raise DeepfeatError(f"fold_features for fold {fold_index} returned shape {X.shape} or non-finite values; "
                                f"it must return a finite ({len(y)}, d) matrix")
    scaler = StandardScaler().fit(X[tr])
    Xtr, Xte = scaler.transform(X[tr]), scaler.transform(X[te])
    views, mrmr = {"none": (Xtr, Xte, None)}, None
    if "mrmr" in selections:
        t0 = time.perf_counter()
        sel = clone(selector).fit(Xtr, y[tr])
        mrmr = {"ranking": np.asarray(sel.ranking_), "scores": np.asarray(sel.scores_)[np.asarray(sel.ranking_)],
                "fit_time": time.perf_counter() - t0}
        views["mrmr"] = (sel.transform(Xtr), sel.transform(Xte), mrmr)
    out = {"repeat": r, "fold": k, "test": te, "mrmr": mrmr, "n_features": {s: views[s][0].shape[1] for s in views},
           "results": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # class_weight notes were recorded once, up front
        warnings.simplefilter("ignore", ConvergenceWarning)  # MATLAB-style lbfgs presets stop at their limit
        for name, est in estimators.items():
            for s in selections:
                a, b, _ = views[s]
                out["results"][(name, s)] = _fit_score(clone(est), a, y[tr], b)
                if tick:
                    tick()
        if majority:
            out["results"][(BASELINE_MAJORITY, "baseline")] = _fit_score(
                DummyClassifier(strategy="prior"), Xtr[:, :1], y[tr], Xte[:, :1])
        if hist is not None:
            hs = StandardScaler().fit(hist[tr])
            out["results"][(BASELINE_HISTOGRAM, "baseline")] = _fit_score(
                SVC(kernel="rbf", C=1.0, gamma="scale"), hs.transform(hist[tr]), y[tr], hs.transform(hist[te]))
    if tick:
        tick(majority + (hist is not None))
    return out


def default_n_features(d: int) -> int:
    """mRMR size when none is given: the reference study's 521 for >= 1,000 features, else half of them."""
    return 521 if d >= 1000 else max(1, d // 2)


def cross_validate(features, *, classifiers=("svm", "knn", "ann", "nb"), selections=("none", "mrmr"),
                   n_features=None, threshold=None, mrmr_method: str = "fcq", folds: int = 10, repeats: int = 1,
                   groups="auto", seed: int = 0, n_jobs: int = 1, class_weight=None, baseline="auto",
                   fold_features: Callable | None = None, progress: bool = True) -> CVResults:
    """Cross-validate classifiers on all vs mRMR-selected features, with baselines on the same folds.

    Parameters
    ----------
    features : FeatureSet
        Labelled features (``y``); ``groups``, ``paths`` and ``sha256`` are used when present.
    classifiers : sequence of str or classifier instances
        Preset names (:data:`deepfeat.classifiers.presets.PRESETS`) or scikit-learn classifiers.
    selections : subset of ("none", "mrmr")
    n_features, threshold : int, float, optional
        mRMR size or score threshold (one of them). Neither: :func:`default_n_features` (the reference study's
        521 of 1,000 features; half the features for narrower sets). ``mrmr_method`` picks the variant ("fcq",
        "fcd", "miq", "mid").
    folds, repeats : int
        ``repeats`` x stratified ``folds``-fold CV; repeat r shuffles with ``seed + r``.
    groups : "auto", "none", None or array-like
        "auto": the FeatureSet's subject ids when present (stated in the report), else image-level folds.
    n_jobs : int
        Folds run in parallel with joblib when != 1.
    class_weight : None or "balanced"
        See :func:`deepfeat.classifiers.presets.get_classifier`; unsupported cases are recorded in the report.
    baseline : "auto", "histogram", "majority" or None
        The majority-class baseline is always added (unless None); "auto" adds a colour-histogram + SVM baseline
        when every image path is reachable, "histogram" requires it.
    fold_features : callable, optional
        ``fold_features(fold_index, train_idx, test_idx) -> (n, d) array``: the features to use for that fold (e.g.
        from a backbone fine-tuned on ``train_idx`` only). ``fold_index = repeat * folds + fold``. Must be
        picklable when ``n_jobs != 1``.
    progress : bool
        tqdm bar over folds x configurations.

    Returns
    -------
    CVResults

    Notes
    -----
    ROC AUC comes from ``predict_proba`` when a classifier has it, else from ``decision_function`` (the ``svm``
    preset); ``predictions.score_kind`` says which.
    """
    classifiers = [classifiers] if isinstance(classifiers, str) else list(classifiers)
    selections = [selections] if isinstance(selections, str) else list(selections)
    if n_features is None and threshold is None and "mrmr" in selections:
        n_features = default_n_features(features.n_features)
    _check_inputs(features, selections, n_features, threshold, folds, baseline, repeats)
    group_ids, grouping = honesty.resolve_groups(features, groups)
    classes, y = np.unique(features.y, return_inverse=True)
    tasks = [(r, k, tr, te, r * folds + k) for r, k, tr, te in make_folds(y, group_ids, folds, repeats, seed)]

    notes, estimators, taken = [], {}, set()
    for clf in classifiers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = get_classifier(clf, seed=seed, class_weight=class_weight)
        notes += [str(w.message) for w in caught]
        estimators[_label(clf, taken)] = est
    selector = make_selector("mrmr", n_features=n_features, threshold=threshold, mrmr_method=mrmr_method) \
        if "mrmr" in selections else None
    hist, hist_note = (None, "") if baseline in (None, "majority") else honesty.histogram_features(features, baseline)
    if baseline is None:
        notes.append("no baseline was requested (baseline=None)")

    n_configs = len(estimators) * len(selections) + (baseline is not None) + (hist is not None)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks) * n_configs, desc="cv folds x configs", disable=not progress, leave=False)
    t0 = time.perf_counter()
    args = (features.X, y, estimators, selections, selector, baseline is not None, hist, fold_features)
    if n_jobs == 1:
        fold_out = [_run_fold(t, *args, tick=lambda n=1: bar.update(n)) for t in tasks]
    else:
        from joblib import Parallel, delayed

        fold_out = []
        for res in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(delayed(_run_fold)(t, *args)
                                                                             for t in tasks):
            fold_out.append(res)
            bar.update(n_configs)
        fold_out.sort(key=lambda f: (f["repeat"], f["fold"]))
    bar.close()
    params = {"classifiers": list(estimators), "classifier_params": {n: repr(e) for n, e in estimators.items()},
              "selections": selections, "n_features": n_features, "threshold": threshold,
              "mrmr_method": mrmr_method, "selector": repr(selector) if selector is not None else None,
              "folds": folds, "repeats": repeats, "groups": groups if isinstance(groups, str) or groups is None
              else "array", "seed": seed, "n_jobs": n_jobs, "class_weight": class_weight, "baseline": baseline,
              "fold_features": getattr(fold_features, "__qualname__", repr(fold_features)) if fold_features
              else None, "wall_time_s": time.perf_counter() - t0}
    return assemble_results(features, classes, y, tasks, fold_out, params=params, grouping=grouping,
                            group_ids=group_ids, notes=notes, hist_note=hist_note)
