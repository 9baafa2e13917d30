"""Nested cross-validation: the honest accuracy of "pick the best configuration, then use it".

Picking the best row of a table scored on the same folds is optimistic. Here, in each outer fold, the configuration
(feature set, mRMR size, classifier and its main hyper-parameter) is chosen by inner cross-validation on the outer
training rows only, then refitted on those rows and scored once on the outer test fold. The mean of those outer
scores is the nested estimate.

Fold-level work is shared: per (inner or outer) training split and feature set, the scaler and one mRMR ranking (for
the largest size) are computed once; every smaller size is a prefix of that greedy ranking, and every classifier
reuses them; the SVM candidates that differ only in C share one RBF kernel matrix per split and size
(:meth:`~deepfeat.evaluation.fold_work.Fold.accuracy`). Cells go through the fold cache, so a re-run, or a run sharing outer folds with the ordinary table,
recomputes nothing.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from sklearn.base import clone

from deepfeat import defaults as _defaults
from deepfeat.classifiers.presets import get_classifier, make_selector
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.compare import compare_scores, fold_size_ratio
from deepfeat.evaluation.fold_work import BASELINE_HISTOGRAM, BASELINE_MAJORITY, Fold, quiet_fits
from deepfeat.evaluation.folds import make_folds
from deepfeat.evaluation.intervals import mean_interval, proportion_method
from deepfeat.selection.mrmr import auto_n_features

__all__ = ["HYPERPARAMETERS", "candidate_grid", "inner_splits", "nested_cross_validate", "nested_sizes"]

#: The main hyper-parameter searched per preset: (parameter name, values).
HYPERPARAMETERS = {"svm": ("C", (1.0, 10.0)), "knn": ("n_neighbors", (5, 10))}


def nested_sizes(d: int, default: int | None = None) -> list[int]:
    """mRMR sizes searched for ``d`` features: all, ``default`` (cross_validate's:
    :func:`~deepfeat.selection.mrmr.auto_n_features`) and 100, clamped to ``d``."""
    default = auto_n_features(d) if default is None else default
    return sorted({d, min(d, default), min(d, 100)}, reverse=True)


def inner_splits(tasks, y, group_ids, inner_folds: int, seed: int) -> list[list[tuple]]:
    """Per outer fold, its inner ``(train, test)`` splits: :func:`~deepfeat.evaluation.folds.make_folds` on the
    outer training rows (stratified, grouped when ``group_ids``, shuffled with ``seed``), as positions within them.

    Made for every outer fold at once, so that an outer training part too small for ``inner_folds`` is an error
    before any fold is computed.
    """
    out = []
    for r, k, tr, _, _ in tasks:
        folds = make_folds(y[tr], None if group_ids is None else group_ids[tr], inner_folds, 1, seed,
                           param="inner_folds", part=f"the training part of outer fold {k} (repeat {r})")
        out.append([(itr, ite) for _, _, itr, ite in folds])
    return out


def _set_main_param(est, param: str, value):
    names = [k for k in est.get_params(deep=True) if k == param or k.endswith("__" + param)]
    if not names:
        raise DeepfeatError(f"{type(est).__name__} has no parameter {param!r} to search")
    return clone(est).set_params(**{names[-1]: value})


def candidate_grid(widths: dict, classifiers, *, seed: int = 0, class_weight=None, defaults=None) -> list[dict]:
    """Every configuration searched: feature set x mRMR size x classifier x its main hyper-parameter.

    ``widths``: feature-set name (None for a single set) -> number of features; ``defaults``: name -> the default
    mRMR size (see :func:`nested_sizes`). Each candidate is a dict with
    ``name``, ``features``, ``size``, ``classifier`` (label) and ``estimator``.
    """
    ests = []
    for clf in classifiers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            est = get_classifier(clf, seed=seed, class_weight=class_weight)
        key = clf.lower() if isinstance(clf, str) else None
        if key in HYPERPARAMETERS:
            param, values = HYPERPARAMETERS[key]
            ests += [(f"{key}({param}={v:g})", _set_main_param(est, param, v)) for v in values]
        else:
            ests.append((key or type(clf).__name__.lower(), est))
    out = []
    for fs, d in widths.items():
        for size in nested_sizes(d, (defaults or {}).get(fs)):
            sel = "all" if size == d else f"mrmr{size}"
            for label, est in ests:
                name = f"{label}+{sel}" if fs is None else f"{fs}/{label}+{sel}"
                out.append({"name": name, "features": fs, "size": size, "classifier": label, "estimator": est})
    return out


def _split_accuracies(data, y, tr, te, cands, mrmr_method, cache) -> np.ndarray:
    """Accuracy on ``te`` of each candidate (all of one feature set) fitted on ``tr``: one fold of
    :mod:`~deepfeat.evaluation.fold_work`, so the scaler and one ranking (for the largest size; smaller sizes are
    its prefixes) are shared by every candidate."""
    data_id, X = data if isinstance(data, tuple) else (None, data)
    d = X.shape[1]
    largest = max((c["size"] for c in cands if c["size"] < d), default=None)
    selector = make_selector("mrmr", n_features=largest, threshold=None, mrmr_method=mrmr_method) \
        if largest else None
    fold = Fold(X, y, tr, te, cache=cache, data_id=data_id)
    return np.array([fold.accuracy(c["estimator"], c["size"], selector) for c in cands])


def _outer_job(shared, task, inner) -> dict:
    return _outer_fold(task, inner, *shared)


def _outer_fold(task, inner, data, y, cands, mrmr_method, cache) -> dict:
    r, k, tr, te, _ = task
    by_set = {}
    for i, c in enumerate(cands):
        by_set.setdefault(c["features"], []).append(i)
    scores = np.empty((len(inner), len(cands)))
    with quiet_fits():  # mRMR's notes too: they were said by the ordinary table
        for j, (itr, ite) in enumerate(inner):
            for fs, idx in by_set.items():  # inner rows are positions within tr: map back to the data's rows
                scores[j, idx] = _split_accuracies(data[fs], y, tr[itr], tr[ite], [cands[i] for i in idx],
                                                   mrmr_method, cache)
        mean = scores.mean(0)
        best = int(np.argmax(mean))  # first of the tied best, in grid order
        c = cands[best]
        acc = _split_accuracies(data[c["features"]], y, tr, te, [c], mrmr_method, cache)[0]
    return {"repeat": r, "fold": k, "features": c["features"], "config": c["name"], "classifier": c["classifier"],
            "n_features": c["size"], "inner_accuracy": float(mean[best]), "accuracy": float(acc),
            "n_test": len(te)}


def nested_cross_validate(data: dict, y, tasks, results, *, classifiers, seed=0, class_weight=None,
                          inner_folds: int = _defaults.INNER_FOLDS, group_ids=None, mrmr_method="fcq", cache=None,
                          n_jobs=1, progress=True, defaults=None, inner=None) -> dict:
    """Nested CV on the outer folds ``tasks`` of ``results`` (an ordinary run on the same folds).

    Parameters
    ----------
    data : dict
        Feature-set name (None for a single set) -> X, or ``(identity, X)`` to use ``cache``.
    y : ndarray of int
    tasks : list of ``(repeat, fold, train_idx, test_idx, fold_index)``
        The outer folds (those of ``results``).
    results : CVResults
        The ordinary table on the same folds: gives the best row and the baseline's per-fold scores.
    classifiers, seed, class_weight :
        As ``cross_validate``; presets in :data:`HYPERPARAMETERS` are searched over their main parameter.
    inner_folds : int
        Stratified (grouped when ``group_ids``) inner folds, shuffled with ``seed``.
    defaults : dict, optional
        Feature-set name -> default mRMR size (``cross_validate`` passes its own).
    inner : list, optional
        The inner splits of every outer fold (:func:`inner_splits`; made here when not given).

    Returns
    -------
    dict
        ``estimate`` (mean outer accuracy), ``ci_low`` / ``ci_high`` (95 %, corrected resampled t over the outer
        folds), ``outer`` (DataFrame: the configuration each outer fold chose, its inner and outer accuracy),
        ``best_of_table`` / ``best_of_table_accuracy``, ``gap`` (best-of-table minus nested: the selection
        optimism), ``baseline`` (nested vs the colour-histogram baseline on the same folds, or the majority
        baseline when there is no histogram; None without baselines), ``candidates``, ``inner_folds``,
        ``wall_time_s``.
    """
    if inner is None:
        inner = inner_splits(tasks, y, group_ids, inner_folds, seed)
    widths = {fs: (x[1] if isinstance(x, tuple) else x).shape[1] for fs, x in data.items()}
    cands = candidate_grid(widths, classifiers, seed=seed, class_weight=class_weight, defaults=defaults)
    t0 = time.perf_counter()
    args = (data, y, cands, mrmr_method, cache)
    if n_jobs == 1:
        from tqdm.auto import tqdm

        outer = [_outer_fold(t, i, *args) for t, i in tqdm(list(zip(tasks, inner)), desc="nested cv outer folds",
                                                            disable=not progress, leave=False)]
    else:  # forked workers after deepfeat.workers.warm_up (the CLI), else joblib's (Dask inside parallel_config)
        from deepfeat.workers import imap_unordered

        outer = list(imap_unordered(_outer_job, list(zip(tasks, inner)), n_jobs=n_jobs, shared=args))
    wall = time.perf_counter() - t0
    outer = pd.DataFrame(outer).sort_values(["repeat", "fold"]).reset_index(drop=True)
    ratio = fold_size_ratio(results)
    accs = outer["accuracy"].to_numpy()
    interval = mean_interval(accs, test_train_ratio=ratio, bounds=(0.0, 1.0),
                             n_items=results.config["featureset"]["n_rows"])
    summary = results.summary
    deep = summary[summary["kind"] != "baseline"]
    best = deep.loc[deep["accuracy_mean"].idxmax()]
    per_fold = results.per_fold
    base_cfg = next((b for b in (BASELINE_HISTOGRAM, BASELINE_MAJORITY)
                     if b in set(per_fold["config"])), None)
    baseline = None
    if base_cfg is not None:
        b = per_fold[per_fold["config"] == base_cfg].set_index(["repeat", "fold"])["accuracy"]
        b = b.reindex(pd.MultiIndex.from_frame(outer[["repeat", "fold"]])).to_numpy()
        repeats = int(results.config["parameters"]["repeats"])
        baseline = {"config": base_cfg, "accuracy": float(b.mean()),
                    **compare_scores(accs, b, ratio, repeats=repeats)}
    return {"estimate": interval.mean, "ci_low": interval.low, "ci_high": interval.high, "std": interval.sd,
            "interval": f"95 % interval over the outer folds: {proportion_method(True)}",
            "outer": outer, "best_of_table": str(best["config"]),
            "best_of_table_accuracy": float(best["accuracy_mean"]),
            "gap": float(best["accuracy_mean"] - accs.mean()), "baseline": baseline,
            "candidates": [c["name"] for c in cands], "inner_folds": int(inner_folds), "wall_time_s": wall}
