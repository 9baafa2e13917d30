"""Honest cross-validation of classifiers on deep features: all features vs mRMR-selected, on the same folds.

For each fold the scaler and the selector are fitted on the training rows only; the mRMR ranking is computed once
per fold and shared by every classifier (it does not depend on the classifier). Baselines (majority class, and a
colour histogram + SVM when the images are reachable) are scored on the same folds. Metrics, honesty checks and
the results object live in :mod:`deepfeat.evaluation.results`.
"""
from __future__ import annotations

import inspect
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

from deepfeat import defaults
from deepfeat.classifiers.presets import get_classifier, make_selector
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import grid, honesty
from deepfeat.evaluation.compare import compare_configs
from deepfeat.evaluation.fold_cache import resolve_fold_cache
from deepfeat.evaluation.results import CVResults, assemble_results
from deepfeat.selection.mrmr import auto_n_features

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


def _run_fold(task, X, y, estimators, selections, selector, majority, hist, fold_features, tick=None, cache=None,
              name=None) -> dict:
    """One fold: scale + select once, then fit and score every classifier and baseline on the same split.

    With ``cache`` (a FoldCache; ``X`` then carries its identity as ``(identity, X)``), cells already computed on
    the same data, rows and configuration are read back and scaling / mRMR run only when some cell is missing.
    ``name`` labels the feature set of a grid (results are keyed ``(name, classifier, selection)``).
    """
    r, k, tr, te, fold_index = task
    data_id = None
    if isinstance(X, tuple):
        data_id, X = X
    extra = {}
    if fold_features is not None:
        got = fold_features(fold_index, tr, te)
        extra = getattr(got, "extra_results", None) or {}  # e.g. the fold's fine-tuned network, end to end
        X = np.asarray(getattr(got, "X", got))
        if X.ndim != 2 or X.shape[0] != len(y) or not np.isfinite(X).all():
            raise DeepfeatError(f"fold_features for fold {fold_index} returned shape {X.shape} or non-finite values; "
                                f"it must return a finite ({len(y)}, d) matrix")
    if data_id is None:
        cache = None
    views = {}

    def view(s):  # scaling and mRMR are computed on the first cell that needs them
        if "none" not in views:
            scaler = StandardScaler().fit(X[tr])
            views["none"] = (scaler.transform(X[tr]), scaler.transform(X[te]), None)
        if s == "mrmr" and "mrmr" not in views and mrmr is not None:  # cached ranking: its prefix, in column order
            Xtr, Xte, _ = views["none"]
            cols = np.sort(mrmr["ranking"][:mrmr["n_selected"]])
            views["mrmr"] = (Xtr[:, cols], Xte[:, cols], mrmr)
        if s == "mrmr" and "mrmr" not in views:
            Xtr, Xte, _ = views["none"]
            t0 = time.perf_counter()
            sel = clone(selector).fit(Xtr, y[tr])
            info = {"ranking": np.asarray(sel.ranking_), "scores": np.asarray(sel.scores_)[np.asarray(sel.ranking_)],
                    "fit_time": time.perf_counter() - t0}
            views["mrmr"] = (sel.transform(Xtr), sel.transform(Xte), info)
            info["n_selected"] = views["mrmr"][0].shape[1]
            if cache is not None:
                cache.put(cache.key(data_id, tr, "mrmr", selector), info)
        return views[s]

    mrmr = None  # view() reads it
    if "mrmr" in selections:
        mrmr = cache.get(cache.key(data_id, tr, "mrmr", selector)) if cache is not None else None
        if mrmr is None:
            mrmr = view("mrmr")[2]
    n_features = {s: (X.shape[1] if s == "none" else mrmr["n_selected"]) for s in selections}
    out = {"repeat": r, "fold": k, "test": te, "mrmr": mrmr, "n_features": n_features, "results": {},
           "features": name}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # class_weight notes were recorded once, up front
        warnings.simplefilter("ignore", ConvergenceWarning)  # MATLAB-style lbfgs presets stop at their limit
        for clf, est in estimators.items():
            for s in selections:
                key = cache.key(data_id, tr, te, "cell", est, s, selector if s == "mrmr" else None) \
                    if cache is not None else None
                res = cache.get(key) if cache is not None else None
                if res is None:
                    a, b, _ = view(s)
                    res = _fit_score(clone(est), a, y[tr], b)
                    if cache is not None:
                        cache.put(key, res)
                out["results"][(clf, s) if name is None else (name, clf, s)] = res
                if tick:
                    tick()
        out["results"].update(extra)
        if majority:
            out["results"][(BASELINE_MAJORITY, "baseline")] = _fit_score(  # the prior ignores X
                DummyClassifier(strategy="prior"), X[tr][:, :1], y[tr], X[te][:, :1])
        if hist is not None:
            hs = StandardScaler().fit(hist[tr])
            out["results"][(BASELINE_HISTOGRAM, "baseline")] = _fit_score(
                SVC(kernel="rbf", C=1.0, gamma="scale"), hs.transform(hist[tr]), y[tr], hs.transform(hist[te]))
    if tick:
        tick(majority + (hist is not None))
    return out


def cross_validate(features, *, classifiers=defaults.CLASSIFIERS, selections=defaults.SELECTIONS,
                   n_features=defaults.N_FEATURES, threshold=None, mrmr_method: str = defaults.MRMR_METHOD,
                   folds: int = defaults.FOLDS, repeats: int = defaults.REPEATS, groups=defaults.GROUPS,
                   seed: int = defaults.SEED, n_jobs: int = defaults.N_JOBS, class_weight=None,
                   baseline=defaults.BASELINE, fold_features: Callable | None = None, progress: bool = True,
                   nested: bool = defaults.NESTED, inner_folds: int = 5, fold_cache=defaults.FOLD_CACHE,
                   rope: float = defaults.ROPE, scheduler=defaults.SCHEDULER) -> CVResults:
    """Cross-validate classifiers on all vs mRMR-selected features, with baselines on the same folds.

    Parameters
    ----------
    features : FeatureSet, list of FeatureSet or dict name -> FeatureSet
        Labelled features (``y``); ``groups``, ``paths`` and ``sha256`` are used when present. Several sets form a
        grid: every set x classifier x selection is scored on identical folds (rows aligned by sha256; an error if
        the sets hold different images); configurations are then named ``<set>/<classifier>+<selection>`` and the
        tables gain a ``features`` column. Folds, groups and baselines come from the first set.
    classifiers : sequence of str or classifier instances
        Preset names (:data:`deepfeat.classifiers.presets.PRESETS`) or scikit-learn classifiers.
    selections : subset of ("none", "mrmr")
    n_features, threshold : int or "auto", float, optional
        mRMR size or score threshold. "auto" (default) without a threshold:
        :func:`~deepfeat.selection.mrmr.auto_n_features` (the reference study's 521 of 1,000 features; half the
        features for narrower sets). ``mrmr_method`` picks the variant ("fcq",
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
        ``fold_features(fold_index, train_idx, test_idx) -> (n, d) array``, or an object with ``X`` and
        ``extra_results`` (``{(classifier, selection): {pred, scores, score_kind, fit_time, predict_time}}``, rows
        scored on the fold's test images without these features, such as the fine-tuned network itself): the features to use for that fold (e.g.
        from a backbone fine-tuned on ``train_idx`` only). ``fold_index = repeat * folds + fold``. Must be
        picklable when ``n_jobs != 1``.
    progress : bool
        tqdm bar over folds x configurations.
    nested : bool
        Also run nested CV (:func:`deepfeat.evaluation.nested.nested_cross_validate`) on the same outer folds: in
        each outer fold the configuration (feature set, mRMR size, classifier and its main hyper-parameter) is
        chosen by ``inner_folds``-fold CV on the outer training rows only, then scored once on the outer test fold.
    inner_folds : int
        Inner folds of the nested CV.
    fold_cache : "auto", str, Path or None
        Where fold results are cached by identity (features content + fold rows + configuration): "auto" is
        ``<deepfeat cache root>/cv-folds``; None disables. Adding repeats or configurations then computes only the
        new cells. Not used with ``fold_features``.
    rope : float
        Region of practical equivalence (accuracy) of the Bayesian comparison (when ``baycomp`` is installed).
    scheduler : str or distributed.Client, optional
        Run the grid on Dask (needs ``pip install "deepfeat[dask]"``): ``"local:N"`` (a LocalCluster of N
        processes), a scheduler address ``"tcp://HOST:8786"`` or a ``distributed.Client``. One task per fold x
        feature set x classifier x selection, each fold's scaler and mRMR ranking computed once and shared, the
        matrix scattered once, dead workers' tasks retried; results equal those of ``n_jobs=1``
        (:mod:`deepfeat.evaluation.distributed`). ``n_jobs`` is then ignored; nested CV runs its outer folds on
        the same cluster (joblib's Dask backend). Not with ``fold_features``.

    Returns
    -------
    CVResults
        ``results.comparisons``: paired statistics of every pair of configurations
        (:func:`deepfeat.evaluation.compare.compare_configs`); ``results.nested``: the nested estimate (dict) or
        None.

    Notes
    -----
    ROC AUC comes from ``predict_proba`` when a classifier has it, else from ``decision_function`` (the ``svm``
    preset); ``predictions.score_kind`` says which.
    """
    if scheduler is not None:
        from deepfeat.dask_client import check_scheduler, connect, is_client

        check_scheduler(scheduler)
        if not is_client(scheduler):  # an address or local:N: connect once, run with the client, close
            args = {k: v for k, v in locals().items() if k in _PARAMETERS}
            with connect(scheduler) as client:
                return cross_validate(**{**args, "scheduler": client})
    baseline = None if baseline == "none" else baseline
    classifiers = [classifiers] if isinstance(classifiers, str) else list(classifiers)
    selections = [selections] if isinstance(selections, str) else list(selections)
    sets = grid.as_feature_sets(features)
    named = sets is not None
    sets = sets if named else {None: features}
    features = next(iter(sets.values()))  # the first set carries labels, groups, paths for folds and honesty
    if not isinstance(nested, bool):
        raise DeepfeatError(f"nested must be True or False; got {nested!r}")
    if nested and (not isinstance(inner_folds, (int, np.integer)) or inner_folds < 2):
        raise DeepfeatError(f"inner_folds must be an int >= 2; got {inner_folds!r}")
    if rope is not None and not (isinstance(rope, (int, float)) and 0 <= rope < 1):
        raise DeepfeatError(f"rope must be an accuracy difference in [0, 1) or None; got {rope!r}")
    if scheduler is not None:
        if fold_features is not None:
            raise DeepfeatError("fold_features cannot run on a Dask scheduler (it is a callable of this process); "
                                "drop scheduler= or fold_features=")
    if fold_features is not None and (named or nested):
        raise DeepfeatError("fold_features works with one FeatureSet and nested=False only")
    sizes = {}
    for name, fs in sets.items():
        size = n_features
        if size == "auto":
            size = None if threshold is not None else auto_n_features(fs.n_features)
        if size is None and threshold is None and "mrmr" in selections:
            size = auto_n_features(fs.n_features)
        _check_inputs(fs, selections, size, threshold, folds, baseline, repeats)
        sizes[name] = size
    group_ids, grouping = honesty.resolve_groups(features, groups)
    classes, y = np.unique(features.y, return_inverse=True)
    tasks = [(r, k, tr, te, r * folds + k) for r, k, tr, te in make_folds(y, group_ids, folds, repeats, seed)]
    cache = resolve_fold_cache(fold_cache) if fold_features is None else None

    notes, estimators, taken = [], {}, set()
    for clf in classifiers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = get_classifier(clf, seed=seed, class_weight=class_weight)
        notes += [str(w.message) for w in caught]
        estimators[_label(clf, taken)] = est
    selectors = {name: make_selector("mrmr", n_features=size, threshold=threshold, mrmr_method=mrmr_method)
                 if "mrmr" in selections else None for name, size in sizes.items()}
    selector = selectors[next(iter(sets))]
    hist, hist_note = (None, "") if baseline in (None, "majority") else honesty.histogram_features(features, baseline)
    if baseline is None:
        notes.append("no baseline was requested (baseline=None)")

    n_configs = len(sets) * len(estimators) * len(selections) + (baseline is not None) + (hist is not None)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks) * n_configs, desc="cv folds x configs", disable=not progress, leave=False)
    t0 = time.perf_counter()
    data = {name: ((fs.identity(), fs.X) if cache is not None else fs.X) for name, fs in sets.items()}
    jobs = [(t, data[name], y, estimators, selections, selectors[name], baseline is not None and i == 0,
             hist if i == 0 else None, fold_features) for t in tasks for i, name in enumerate(sets)]
    names = [name for _ in tasks for name in sets]
    if scheduler is not None:
        from deepfeat.evaluation.distributed import run_fold_tasks

        fold_out = run_fold_tasks(
            scheduler, sets={name: (fs.identity() if cache is not None else None, fs.X) for name, fs in sets.items()},
            y=y, tasks=tasks, estimators=estimators, selections=selections, selectors=selectors,
            majority=baseline is not None, hist=hist, cache=cache, fit_score=_fit_score,
            labels=(BASELINE_MAJORITY, BASELINE_HISTOGRAM), tick=bar.update)
    elif n_jobs == 1:
        fold_out = [_run_fold(*job, tick=lambda n=1: bar.update(n), cache=cache, name=name)
                    for job, name in zip(jobs, names)]
    else:
        from joblib import Parallel, delayed

        fold_out = []
        for res in Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(_run_fold)(*job, cache=cache, name=name) for job, name in zip(jobs, names)):
            fold_out.append(res)
            bar.update(n_configs // len(sets))
        order = {name: i for i, name in enumerate(sets)}
        fold_out.sort(key=lambda f: (f["repeat"], f["fold"], order[f["features"]]))
    bar.close()
    params = {"classifiers": list(estimators), "classifier_params": {n: repr(e) for n, e in estimators.items()},
              "selections": selections, "n_features": n_features if named else sizes[None], "threshold": threshold,
              "mrmr_method": mrmr_method, "selector": repr(selector) if selector is not None else None,
              "folds": folds, "repeats": repeats, "groups": groups if isinstance(groups, str) or groups is None
              else "array", "seed": seed, "n_jobs": n_jobs, "class_weight": class_weight, "baseline": baseline,
              "fold_features": getattr(fold_features, "__qualname__", repr(fold_features)) if fold_features
              else None, "wall_time_s": time.perf_counter() - t0}
    if named:
        params["features"] = list(sets)
    if scheduler is not None:
        params["scheduler"] = f"dask {scheduler.scheduler.address}"
    params.update(fold_cache=str(cache.root) if cache is not None else None, nested=bool(nested),
                  inner_folds=inner_folds if nested else None, rope=rope)
    results = assemble_results(features, classes, y, tasks, fold_out, params=params, grouping=grouping,
                               group_ids=group_ids, notes=notes, hist_note=hist_note,
                               sets=sets if named else None)
    if named:
        results.config["featuresets"] = {name: {"identity": fs.identity(), "n_features": fs.n_features,
                                                "mrmr_n_features": sizes[name], "meta": fs.meta}
                                         for name, fs in sets.items()}
    if nested:
        from deepfeat.evaluation.nested import nested_cross_validate

        nested_args = dict(classifiers=classifiers, seed=seed, class_weight=class_weight, inner_folds=inner_folds,
                           group_ids=group_ids, mrmr_method=mrmr_method, cache=cache, progress=progress,
                           defaults={name: auto_n_features(fs.n_features) for name, fs in sets.items()})
        if scheduler is not None:  # the outer folds as tasks on the same cluster (joblib's Dask backend)
            from joblib import parallel_config

            with parallel_config(backend="dask", client=scheduler):
                results.nested = nested_cross_validate({name: data[name] for name in sets}, y, tasks, results,
                                                       n_jobs=-1, **nested_args)
        else:
            results.nested = nested_cross_validate({name: data[name] for name in sets}, y, tasks, results,
                                                   n_jobs=n_jobs, **nested_args)
    results.comparisons = compare_configs(results, rope=rope)
    return results


_PARAMETERS = tuple(inspect.signature(cross_validate).parameters)
