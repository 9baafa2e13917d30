"""Honest cross-validation of classifiers on deep features: all features vs mRMR-selected, on the same folds.

For each fold the scaler and the selector are fitted on the training rows only; the mRMR ranking is computed once
per fold and shared by every classifier (it does not depend on the classifier). Baselines (majority class, and a
colour histogram + SVM when the images are reachable) are scored on the same folds. The per-fold work is
:mod:`deepfeat.evaluation.fold_work` (shared with nested CV and the Dask task map); the folds come from
:func:`deepfeat.evaluation.folds.make_folds`; metrics, honesty checks and the results object live in
:mod:`deepfeat.evaluation.results`. This module checks the parameters, plans the runs and gathers them.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from deepfeat import defaults
from deepfeat.classifiers.presets import get_classifier, make_selector
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import grid, honesty
from deepfeat.evaluation.compare import compare_configs
from deepfeat.evaluation.fold_cache import resolve_fold_cache
from deepfeat.evaluation.fold_work import Fold, fold_record
from deepfeat.evaluation.folds import make_folds
from deepfeat.evaluation.parameters import check_count, resolve_baseline, resolve_n_jobs
from deepfeat.evaluation.results import CVResults, assemble_results, fold_metrics
from deepfeat.selection.mrmr import auto_n_features, resolve_n_features

__all__ = ["cross_validate", "CVResults", "make_folds"]

_SELECTIONS = defaults.SELECTIONS


def _label(clf, taken: set) -> str:
    name = clf.lower() if isinstance(clf, str) else type(clf).__name__
    base, i = name, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _estimators(classifiers, seed, class_weight) -> tuple[dict, list[str]]:
    """Label -> estimator, and the notes their construction raised (said once, in the report)."""
    notes, estimators, taken = [], {}, set()
    for clf in classifiers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est = get_classifier(clf, seed=seed, class_weight=class_weight)
        notes += [str(w.message) for w in caught]
        estimators[_label(clf, taken)] = est
    return estimators, notes


def _check_options(*, selections, nested, inner_folds, rope, scheduler, fold_features, named, resources=None):
    """Every option that needs no data, checked once before any work."""
    if not isinstance(nested, bool):
        raise DeepfeatError(f"nested must be True or False; got {nested!r}")
    if nested:
        check_count("inner_folds", inner_folds, 2)
    if rope is not None and not (isinstance(rope, (int, float)) and 0 <= rope < 1):
        raise DeepfeatError(f"rope must be an accuracy difference in [0, 1) or None; got {rope!r}")
    if resources is not None and (scheduler is None or fold_features is None):
        raise DeepfeatError("The 'resources' parameter (--resources) is what each fold_features task needs on a "
                            "Dask scheduler (in-fold fine-tuning: --finetune with --scheduler); "
                            f"got resources={resources!r} with scheduler={scheduler!r}")
    if fold_features is not None and (named or nested):
        raise DeepfeatError("fold_features works with one FeatureSet and nested=False only")
    unknown = [s for s in selections if s not in _SELECTIONS]
    if unknown or not selections:
        raise DeepfeatError(f"selections must be a non-empty subset of {_SELECTIONS}; got {list(selections)}")


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
    fold = Fold(X, y, tr, te, cache=cache, data_id=data_id)
    mrmr = fold.mrmr(selector) if "mrmr" in selections else None
    results = {}
    for clf, est in estimators.items():
        for s in selections:
            results[(clf, s) if name is None else (name, clf, s)] = fold.score(est, s, selector)
            if tick:
                tick()
    results.update(extra)
    results.update(fold.baselines(majority, hist))
    if tick:
        tick(majority + (hist is not None))
    n_classes = int(y.max()) + 1  # y: indices into the run's classes, every class present
    results = {key: {**res, "metrics": fold_metrics(y[te], res["pred"], res["scores"], n_classes)}
               for key, res in results.items()}  # here: in the fold's worker when folds run in parallel
    return fold_record(task, name, X.shape[1], selections, mrmr, results)


@dataclass
class _Plan:
    """What a run needs once the parameters are checked: the sets, labels, folds, estimators and baselines."""

    sets: dict
    named: bool
    y: np.ndarray
    classes: np.ndarray
    tasks: list
    group_ids: object
    grouping: dict
    sizes: dict
    estimators: dict
    selectors: dict
    notes: list
    cache: object
    hist: object = None
    hist_note: str = ""
    inner: list | None = None
    options: dict = field(default_factory=dict)

    @property
    def features(self):
        """The first set: it carries labels, groups and paths for the folds and the honesty checks."""
        return next(iter(self.sets.values()))

    def data(self, name):
        """The set's matrix, with its identity when the fold cache is used."""
        fs = self.sets[name]
        return (fs.identity(), fs.X) if self.cache is not None else fs.X


def _plan(features, o: dict) -> _Plan:
    """Check everything that needs the data, make the folds, and build the estimators and baselines."""
    sets = grid.as_feature_sets(features)
    named = sets is not None
    sets = sets if named else {None: features}
    _check_options(selections=o["selections"], nested=o["nested"],
                   inner_folds=o["inner_folds"], rope=o["rope"], scheduler=o["scheduler"],
                   fold_features=o["fold_features"], named=named, resources=o["resources"])
    if o["resources"] is not None:
        from deepfeat.dask_client import parse_resources

        o["resources"] = parse_resources(o["resources"])
    sizes = {}
    for name, fs in sets.items():
        fs.check_trainable("cross-validation")
        sizes[name] = resolve_n_features(o["n_features"], fs.n_features, threshold=o["threshold"])
    first = next(iter(sets.values()))
    group_ids, grouping = honesty.resolve_groups(first, o["groups"])
    classes, y = np.unique(first.y, return_inverse=True)
    tasks = [(r, k, tr, te, r * o["folds"] + k) for r, k, tr, te in
             make_folds(y, group_ids, o["folds"], o["repeats"], o["seed"], class_names=classes)]
    o["n_jobs"] = resolve_n_jobs(o["n_jobs"], n_values=sum(fs.X.size for fs in sets.values()),
                                 n_tasks=len(tasks) * len(sets), per_fold_features=o["fold_features"] is not None)
    inner = None
    if o["nested"]:  # every inner split is made (and checked) before any work
        from deepfeat.evaluation.nested import inner_splits

        inner = inner_splits(tasks, y, group_ids, o["inner_folds"], o["seed"])
    estimators, notes = _estimators(o["classifiers"], o["seed"], o["class_weight"])
    selectors = {name: make_selector("mrmr", n_features=size, threshold=o["threshold"], mrmr_method=o["mrmr_method"])
                 if "mrmr" in o["selections"] else None for name, size in sizes.items()}
    if o["baseline"] == "none":
        notes.append("no baseline was requested (baseline=None)")
    return _Plan(sets, named, y, classes, tasks, group_ids, grouping, sizes, estimators, selectors, notes,
                 resolve_fold_cache(o["fold_cache"]) if o["fold_features"] is None else None, inner=inner, options=o)


def _fold_job(shared, task, name, y, estimators, selections, selector, majority, with_hist, fold_features,
              tick=None, cache=None) -> dict:
    """:func:`_run_fold` on the set ``name`` of ``shared = (data, hist)`` (sent once to each worker)."""
    data, hist = shared
    return _run_fold(task, data[name], y, estimators, selections, selector, majority, hist if with_hist else None,
                     fold_features, tick=tick, cache=cache, name=name)


def _run_folds(plan: _Plan, client, bar) -> list[dict]:
    """Every fold x feature set: on the Dask client, in local worker processes (:mod:`deepfeat.workers`), or here;
    in the local runner's order."""
    o, majority = plan.options, plan.options["baseline"] != "none"
    fold_features = o["fold_features"]
    if client is not None and fold_features is not None:  # each fold's features as one task; scored here
        from deepfeat.evaluation.distributed import run_fold_features

        fold_features = run_fold_features(client, fold_features, plan.tasks, resources=o["resources"])
    elif client is not None:
        from deepfeat.evaluation.distributed import run_fold_tasks

        return run_fold_tasks(client, sets={name: (fs.identity() if plan.cache is not None else None, fs.X)
                                            for name, fs in plan.sets.items()},
                              y=plan.y, tasks=plan.tasks, estimators=plan.estimators, selections=o["selections"],
                              selectors=plan.selectors, majority=majority, hist=plan.hist, cache=plan.cache,
                              tick=bar.update)
    data = {name: plan.data(name) for name in plan.sets}  # each identity hashed once
    jobs = [(t, name, plan.y, plan.estimators, o["selections"], plan.selectors[name], majority and i == 0,
             i == 0, fold_features) for t in plan.tasks for i, name in enumerate(plan.sets)]
    shared = (data, plan.hist)
    if o["n_jobs"] == 1:
        return [_fold_job(shared, *job, tick=lambda n=1: bar.update(n), cache=plan.cache) for job in jobs]
    from deepfeat.workers import imap_unordered

    out = []
    for res in imap_unordered(_fold_job, [job + (None, plan.cache) for job in jobs], n_jobs=o["n_jobs"],
                              shared=shared):
        out.append(res)
        bar.update(bar.total // len(jobs))
    order = {name: i for i, name in enumerate(plan.sets)}
    return sorted(out, key=lambda f: (f["repeat"], f["fold"], order[f["features"]]))


def _parameters(plan: _Plan, client, wall: float) -> dict:
    """The run's parameters as recorded in ``results.config["parameters"]``."""
    o, est = plan.options, plan.estimators
    selector = plan.selectors[next(iter(plan.sets))]
    groups, fold_features = o["groups"], o["fold_features"]
    params = {"classifiers": list(est), "classifier_params": {n: repr(e) for n, e in est.items()},
              "selections": o["selections"], "n_features": o["n_features"] if plan.named else plan.sizes[None],
              "threshold": o["threshold"], "mrmr_method": o["mrmr_method"],
              "selector": repr(selector) if selector is not None else None, "folds": o["folds"],
              "repeats": o["repeats"], "groups": groups if isinstance(groups, str) or groups is None else "array",
              "seed": o["seed"], "n_jobs": o["n_jobs"], "class_weight": o["class_weight"],
              "baseline": None if o["baseline"] == "none" else o["baseline"],
              "fold_features": getattr(fold_features, "__qualname__", repr(fold_features)) if fold_features
              else None, "wall_time_s": wall}
    if plan.named:
        params["features"] = list(plan.sets)
    if client is not None:
        params["scheduler"] = f"dask {client.scheduler.address}"
        if o["resources"]:
            params["resources"] = o["resources"]
    params.update(fold_cache=str(plan.cache.root) if plan.cache is not None else None, nested=o["nested"],
                  inner_folds=o["inner_folds"] if o["nested"] else None, rope=o["rope"])
    return params


def _run_nested(plan: _Plan, results: CVResults, client) -> dict:
    from deepfeat.evaluation.nested import nested_cross_validate

    o = plan.options
    args = dict(classifiers=o["classifiers"], seed=o["seed"], class_weight=o["class_weight"],
                inner_folds=o["inner_folds"], group_ids=plan.group_ids, mrmr_method=o["mrmr_method"],
                cache=plan.cache, progress=o["progress"], inner=plan.inner,
                defaults={name: auto_n_features(fs.n_features) for name, fs in plan.sets.items()})
    data = {name: plan.data(name) for name in plan.sets}
    if client is None:
        return nested_cross_validate(data, plan.y, plan.tasks, results, n_jobs=o["n_jobs"], **args)
    from joblib import parallel_config

    with parallel_config(backend="dask", client=client):  # the outer folds as tasks on the same cluster
        return nested_cross_validate(data, plan.y, plan.tasks, results, n_jobs=-1, **args)


def _execute(plan: _Plan, client) -> CVResults:
    """Run the planned folds (and nested CV) and assemble the results."""
    from tqdm.auto import tqdm

    o, n_sets = plan.options, len(plan.sets)
    if o["baseline"] in ("auto", "histogram"):  # reads every image: after the checks and the cluster's start
        plan.hist, plan.hist_note = honesty.histogram_features(plan.features, o["baseline"])
    n_configs = (n_sets * len(plan.estimators) * len(o["selections"]) + (o["baseline"] != "none")
                 + (plan.hist is not None))
    bar = tqdm(total=len(plan.tasks) * n_configs, desc="cv folds x configs", disable=not o["progress"], leave=False)
    t0 = time.perf_counter()
    fold_out = _run_folds(plan, client, bar)
    bar.close()
    features = plan.features
    results = assemble_results(features, plan.classes, plan.y, plan.tasks, fold_out,
                               params=_parameters(plan, client, time.perf_counter() - t0), grouping=plan.grouping,
                               group_ids=plan.group_ids, notes=plan.notes, hist_note=plan.hist_note,
                               sets=plan.sets if plan.named else None)
    if plan.named:
        results.config["featuresets"] = {name: {"identity": fs.identity(), "n_features": fs.n_features,
                                                "mrmr_n_features": plan.sizes[name], "meta": fs.meta}
                                         for name, fs in plan.sets.items()}
    if o["nested"]:
        results.nested = _run_nested(plan, results, client)
    results.comparisons = compare_configs(results, rope=o["rope"])
    if o["coverage"]:
        from deepfeat.evaluation.conformal import cv_coverage

        results.conformal, notes = cv_coverage(features, results, o["coverage"], score=o["conformal_score"],
                                               class_conditional=o["class_conditional"],
                                               inner_folds=o["inner_folds"])
        results.honesty["notes"] += notes
    return results


def cross_validate(features, *, classifiers=defaults.CLASSIFIERS, selections=defaults.SELECTIONS,
                   n_features=defaults.N_FEATURES, threshold=None, mrmr_method: str = defaults.MRMR_METHOD,
                   folds: int = defaults.FOLDS, repeats: int = defaults.REPEATS, groups=defaults.GROUPS,
                   seed: int = defaults.SEED, n_jobs: int | str = defaults.N_JOBS, class_weight=None,
                   baseline=defaults.BASELINE, fold_features: Callable | None = None, progress: bool = True,
                   nested: bool = defaults.NESTED, inner_folds: int = defaults.INNER_FOLDS, fold_cache=defaults.FOLD_CACHE,
                   rope: float = defaults.ROPE, scheduler=defaults.SCHEDULER, resources=None,
                   coverage=None,
                   conformal_score: str = defaults.CONFORMAL_SCORE,
                   class_conditional: bool = defaults.CLASS_CONDITIONAL) -> CVResults:
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
        features for narrower sets); more than a set's columns is an error
        (:func:`~deepfeat.selection.mrmr.resolve_n_features`). ``mrmr_method`` picks the variant ("fcq", "fcd",
        "miq", "mid").
    folds, repeats : int
        ``repeats`` x stratified ``folds``-fold CV; repeat r shuffles with ``seed + r``.
    groups : "auto", "none", None or array-like
        "auto": the FeatureSet's subject ids when present (stated in the report), else image-level folds.
    n_jobs : "auto" or int
        Worker processes for the folds (joblib; -1 = every core). "auto": one per core when the features hold
        at least a million values (3,256 x 1,000 does; the 320-image demo does not), else 1; with
        ``fold_features``, 1 (:func:`deepfeat.evaluation.parameters.resolve_n_jobs`). Results are the same for
        every value; ``config["parameters"]`` records the number used.
    class_weight : None or "balanced"
        See :func:`deepfeat.classifiers.presets.get_classifier`; unsupported cases are recorded in the report.
    baseline : "auto", "histogram", "majority" or "none" (None)
        The majority-class baseline is always added (unless "none"); "auto" adds a colour-histogram + SVM baseline
        when every image path is reachable, "histogram" requires it
        (:func:`deepfeat.evaluation.parameters.resolve_baseline`).
    fold_features : callable, optional
        ``fold_features(fold_index, train_idx, test_idx) -> (n, d) array``, or an object with ``X`` and
        ``extra_results`` (``{(classifier, selection): {pred, scores, score_kind, fit_time, predict_time}}``, rows
        scored on the fold's test images without these features, such as the fine-tuned network itself): the
        features to use for that fold (e.g. from a backbone fine-tuned on ``train_idx`` only). ``fold_index = repeat * folds + fold``. Must be
        picklable when ``n_jobs != 1``.
    progress : bool
        tqdm bar over folds x configurations.
    nested : bool
        Also run nested CV (:func:`deepfeat.evaluation.nested.nested_cross_validate`) on the same outer folds: in
        each outer fold the configuration (feature set, mRMR size, classifier and its main hyper-parameter) is
        chosen by ``inner_folds``-fold CV on the outer training rows only, then scored once on the outer test fold.
    inner_folds : int
        Inner folds of the nested CV (default :data:`deepfeat.defaults.INNER_FOLDS`); every outer training part
        is checked before any work.
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
        (:mod:`deepfeat.evaluation.distributed`; the same fold functions as a local run,
        :mod:`deepfeat.evaluation.fold_work`). ``n_jobs`` is then ignored; nested CV runs its outer folds on
        the same cluster (joblib's Dask backend). With ``fold_features``, each fold's ``fold_features`` call is
        one task instead (it must be picklable, and what it reads reachable by the workers) and the classifiers
        are scored here, as without a scheduler.
    resources : str or dict, optional
        Dask worker resources each ``fold_features`` task needs, e.g. ``"GPU=1"`` (workers started with
        ``--resources GPU=1``); only with ``scheduler`` and ``fold_features``.
    coverage : float or sequence of float, optional
        Also measure conformal prediction sets at these nominal coverages (e.g. ``(0.9, 0.95, 0.99)``) on the
        outer test folds, calibrated by cross-conformal scores inside each outer training part only
        (:func:`deepfeat.evaluation.conformal.cv_coverage`, ``inner_folds`` inner fits per configuration and fold,
        run here after the folds): ``results.conformal``. ``conformal_score`` ("lac" or "aps") and
        ``class_conditional`` (Mondrian: one threshold per class) as in ``deepfeat fit``.

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
    options = dict(locals())
    if coverage is not None:  # checked before any work
        from deepfeat.evaluation.conformal import check_coverage, nonconformity

        if fold_features is not None:
            raise DeepfeatError("coverage= re-fits each configuration on the FeatureSet's own features; with "
                                "fold_features (features made per fold) it cannot: drop one of them")

        options["coverage"] = [check_coverage(c) for c in ([coverage] if isinstance(coverage, (int, float))
                                                           else coverage)]
        nonconformity(np.ones((1, 1)), conformal_score)
    options.update(baseline=resolve_baseline(baseline),
                   classifiers=[classifiers] if isinstance(classifiers, str) else list(classifiers),
                   selections=[selections] if isinstance(selections, str) else list(selections))
    plan = _plan(options.pop("features"), options)  # every check, the outer and inner folds: before any work
    if scheduler is None:
        return _execute(plan, None)
    from deepfeat.dask_client import connect

    with connect(scheduler) as client:  # checks scheduler= (the one check); a Client is used as it is
        return _execute(plan, client)
