"""The cross-validation grid as fine Dask tasks (``cross_validate(..., scheduler=...)``).

Every task is a call into :mod:`deepfeat.evaluation.fold_work`, the per-fold code of the local runner and of nested
CV; this module only submits and gathers. Task graph, per fold x feature set:

- one *prep* task fits the fold's ``StandardScaler`` and, when mRMR is asked for, its mRMR ranking (or reads the
  ranking from the fold cache); it returns only the fitted scaler and the ranking (kilobytes, not matrices);
- one *cell* task per classifier x selection depends on the prep future: it standardises the fold's rows with
  that scaler, keeps the ranking's first ``n_selected`` columns (in column order, exactly as
  ``MRMRSelector.transform``) and fits + scores the classifier; so scaling and mRMR run once per fold and are
  shared, and the inputs of every fit are the bytes the local runner would give it;
- one *baseline* task per fold (majority class, colour histogram + SVM), for the first feature set only.

With ``fold_features`` (in-fold fine-tuning: each fold's features come from a network trained on that fold),
:func:`run_fold_features` runs one task per fold instead -- the fold's ``fold_features`` call, with the worker
``resources`` asked for (``GPU=1``) -- and the classifiers are scored by the local runner on what they return.

Each feature matrix, the labels, the histogram features and every fold's row indices are scattered once and
broadcast to every worker (scattered data has no lineage: a copy held by one worker only would die with it and
cancel every task that needs it); tasks receive futures, never copies in the task graph. Every task is submitted with
``retries`` (default 3): when a worker dies, the scheduler reruns its unfinished tasks on another worker, and
since every task is a pure function of its inputs nothing is lost or changed. The progress bar advances as tasks
complete (``distributed.as_completed``). Results are reassembled in the local runner's order, so the tables are
those of ``n_jobs=1``, bit for bit.
"""
from __future__ import annotations

import logging
import uuid

import numpy as np

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.fold_work import Fold, fold_record

__all__ = ["RETRIES", "RUN_TIMEOUT_S", "run_fold_features", "run_fold_tasks"]

log = logging.getLogger("deepfeat.evaluation")
#: How often the scheduler reruns a task whose worker died (or that raised) before the run fails.
RETRIES = 3
#: The whole grid must finish within this many seconds, else the run stops with an error.
RUN_TIMEOUT_S = 7 * 24 * 3600


def _prep(X, y, split, selector, cache, data_id) -> dict:
    """The fold's prep (:meth:`Fold.state`): its fitted scaler and, with a ``selector``, its mRMR ranking."""
    fold = Fold(X, y, *split, cache=cache, data_id=data_id)
    if selector is not None:
        fold.mrmr(selector)
    return fold.state()


def _cell(X, y, split, prep, est, selection, selector, cache, data_id) -> dict:
    """One classifier x selection on one fold, from the prep task's state (:meth:`Fold.score`)."""
    return Fold(X, y, *split, cache=cache, data_id=data_id, **prep).score(est, selection, selector)


def _baselines(X, y, split, majority: bool, hist) -> dict:
    return Fold(X, y, *split).baselines(majority, hist)


def run_fold_tasks(client, *, sets: dict, y, tasks, estimators: dict, selections, selectors: dict, majority: bool,
                   hist, cache, tick=None, retries: int = RETRIES, timeout: float | None = None) -> list[dict]:
    """Every fold x feature set x classifier x selection on ``client``; fold records as the local runner makes.

    Parameters
    ----------
    sets : dict
        Feature-set name (None for a single set) -> ``(data identity or None, X)``.
    tasks : list of ``(repeat, fold, train_idx, test_idx, fold_index)``
    estimators, selections, selectors :
        As in :func:`deepfeat.evaluation.cross_validation.cross_validate` (selectors by set name).
    majority, hist :
        Baselines scored on the first set's folds (``hist``: histogram features or None).
    tick : callable, optional
        Called with the number of finished cells as tasks complete.
    """
    from distributed import as_completed

    timeout = RUN_TIMEOUT_S if timeout is None else timeout  # read at call time (tests lower it)
    run = uuid.uuid4().hex[:8]
    submit = (lambda fn, *a, key: client.submit(fn, *a, key=f"deepfeat-cv-{key}-{run}", pure=False,
                                                retries=retries))
    y_f = client.scatter(y, broadcast=True, hash=False)
    x_f = {name: client.scatter(X, broadcast=True, hash=False) for name, (_, X) in sets.items()}
    hist_f = client.scatter(hist, broadcast=True, hash=False) if hist is not None else None
    # every split on every worker (survives one dying), all scattered before the first task runs: a broadcast
    # scatter waits on every worker, and one that dies meanwhile would make it wait forever
    splits = client.scatter([(tr, te) for _, _, tr, te, _ in tasks], broadcast=True, hash=False)
    first = next(iter(sets))
    cells, owner = {}, {}  # future -> (task position, set name, result key) / what it is
    for pos, (r, k, tr, te, _) in enumerate(tasks):
        split = splits[pos]
        for name, (data_id, _) in sets.items():
            tag = f"r{r}-f{k}-{name or 'x'}"
            prep = submit(_prep, x_f[name], y_f, split, selectors[name] if "mrmr" in selections else None, cache,
                          data_id, key=f"prep-{tag}")
            owner[prep] = (pos, name, "prep")
            for clf, est in estimators.items():
                for s in selections:
                    fut = submit(_cell, x_f[name], y_f, split, prep, est, s, selectors[name] if s == "mrmr" else None,
                                 cache, data_id, key=f"cell-{tag}-{clf}-{s}")
                    cells[fut] = (pos, name, (clf, s) if name is None else (name, clf, s))
            if name == first and (majority or hist is not None):
                fut = submit(_baselines, x_f[name], y_f, split, majority, hist_f, key=f"base-{tag}")
                cells[fut] = (pos, name, "baselines")
    got, prep_out = {}, {}
    for fut in as_completed(list(cells) + list(owner), timeout=timeout):
        value = fut.result()
        if fut in owner:
            prep_out[owner[fut][:2]] = value
            continue
        got[cells[fut]] = value
        if tick:
            tick(1 if cells[fut][2] != "baselines" else majority + (hist is not None))
    out = []
    for pos, task in enumerate(tasks):
        for name, (_, X) in sets.items():  # the local runner's order: classifiers x selections, then baselines
            keys = [(clf, s) if name is None else (name, clf, s) for clf in estimators for s in selections]
            results = {key: got[(pos, name, key)] for key in keys}
            results.update(got.get((pos, name, "baselines"), {}))
            out.append(fold_record(task, name, X.shape[1], selections, prep_out[(pos, name)]["mrmr"], results))
    return out


class FoldOutputs:
    """``fold_features`` answered from the fold tasks' results: ``(fold_index, train_idx, test_idx) -> output``.
    The rows are checked: a split that differs from the one the task was given is an error, never a mix-up."""

    def __init__(self, outputs: dict, splits: dict):
        self.outputs, self.splits = outputs, splits

    def __call__(self, fold_index, train_idx, test_idx):
        tr, te = self.splits[fold_index]
        if not (np.array_equal(tr, train_idx) and np.array_equal(te, test_idx)):
            raise DeepfeatError(f"fold {fold_index}: the rows differ from those its fold_features task was given")
        return self.outputs[fold_index]


def _fold_features(fold_features, fold_index, train_idx, test_idx):
    return fold_features(fold_index, train_idx, test_idx)


def run_fold_features(client, fold_features, tasks, *, resources=None, retries: int = RETRIES,
                      timeout: float | None = None) -> FoldOutputs:
    """Every fold's ``fold_features(fold_index, train_idx, test_idx)`` as one task on ``client`` (with worker
    ``resources`` such as ``{"GPU": 1}``); returns their outputs as a ``fold_features`` for the local runner.

    A fold task that fails is retried ``retries`` times (in-fold fine-tuning resumes from the fold's last
    checkpoint), then the run stops with its error.
    """
    from distributed import as_completed

    timeout = RUN_TIMEOUT_S if timeout is None else timeout
    run = uuid.uuid4().hex[:8]
    fn = client.scatter(fold_features, broadcast=True, hash=False)  # one copy per worker, not one per task
    futures = {client.submit(_fold_features, fn, fold_index, tr, te, key=f"deepfeat-fold-features-{fold_index}-{run}",
                             pure=False, retries=retries, resources=resources): fold_index
               for _, _, tr, te, fold_index in tasks}
    outputs = {}
    for fut in as_completed(list(futures), timeout=timeout):
        outputs[futures[fut]] = fut.result()
        log.info("fold %d features done (%d of %d)", futures[fut], len(outputs), len(futures))
    return FoldOutputs(outputs, {fold_index: (tr, te) for _, _, tr, te, fold_index in tasks})
