"""deepfeat.workers: the forked fold / figure workers give what joblib's and this process give, and fail clearly."""
from __future__ import annotations

import os

import numpy as np
import pytest
from joblib import cpu_count, parallel_config

from deepfeat import workers
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.features import FeatureSet

pytestmark = pytest.mark.skipif(not workers.warm_up(), reason="no forkserver start method here (Windows)")


def _row_sums(shared, i, scale):
    return i, float(shared[i].sum() * scale), os.getpid()


def _threads(shared, i):
    from threadpoolctl import threadpool_info

    return i, sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})


def _fail(shared, i):
    if i == 2:
        raise ValueError(f"job {i} failed on purpose")
    return i


def _die(shared, i):
    os._exit(3)


def test_forked_workers_compute_every_job_once_with_the_shared_data():
    X = np.arange(20.0).reshape(10, 2)
    got = list(workers.imap_unordered(_row_sums, [(i, 2.0) for i in range(10)], n_jobs=2, shared=X))
    assert sorted(g[:2] for g in got) == [(i, 2 * X[i].sum()) for i in range(10)]
    assert os.getpid() not in {g[2] for g in got}  # computed in other processes
    assert workers.available()


def test_a_closure_from_the_caller_travels_by_value():
    offset = 7
    got = sorted(workers.imap_unordered(lambda shared, i: i + offset + shared, [(i,) for i in range(4)], n_jobs=2,
                                        shared=100))
    assert got == [107, 108, 109, 110]


def test_each_worker_caps_its_blas_threads_at_its_share_of_the_cores():
    got = dict(workers.imap_unordered(_threads, [(i,) for i in range(2)], n_jobs=2))
    assert all(threads == [max(1, cpu_count() // 2)] for threads in got.values() if threads)


def test_a_job_error_is_raised_here_with_its_message():
    with pytest.raises(ValueError, match="job 2 failed on purpose"):
        list(workers.imap_unordered(_fail, [(i,) for i in range(5)], n_jobs=2))


def test_a_dead_worker_is_a_clear_error_naming_the_way_out():
    with pytest.raises(DeepfeatError, match="worker process died.*--n-jobs 1"):
        list(workers.imap_unordered(_die, [(0,)], n_jobs=2))


def test_a_joblib_backend_chosen_by_the_caller_is_used_instead():
    with parallel_config(backend="threading"):
        assert not workers.available()
        got = list(workers.imap_unordered(_row_sums, [(i, 1.0) for i in range(3)], n_jobs=2, shared=np.ones((3, 2))))
    assert {g[2] for g in got} == {os.getpid()}  # threads of this process


def test_cv_on_forked_workers_equals_one_process():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    X = rng.normal(size=(90, 30))
    X[:, :4] += y[:, None]
    fs = FeatureSet(X, [f"c{v}" for v in y])
    kw = dict(classifiers=("svm", "knn", "ann", "nb"), folds=3, progress=False, baseline="majority", n_features=10)
    a, b = cross_validate(fs, n_jobs=1, **kw), cross_validate(fs, n_jobs=2, **kw)
    assert b.config["parameters"]["n_jobs"] == 2
    cols = ["config", "fold", "accuracy", "roc_auc"]
    assert a.per_fold[cols].equals(b.per_fold[cols])
    score_cols = [c for c in a.predictions.columns if c.startswith("score_")]
    np.testing.assert_array_equal(a.predictions[score_cols].to_numpy(), b.predictions[score_cols].to_numpy())


def test_nested_cv_on_forked_workers_equals_one_process():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 2
    X = rng.normal(size=(60, 12))
    X[:, :3] += y[:, None]
    fs = FeatureSet(X, [f"c{v}" for v in y])
    kw = dict(classifiers=("knn", "nb"), folds=3, progress=False, baseline="majority", n_features=4, nested=True,
              inner_folds=2, fold_cache="none")
    a, b = cross_validate(fs, n_jobs=1, **kw), cross_validate(fs, n_jobs=2, **kw)
    cols = ["repeat", "fold", "config", "accuracy"]
    assert a.nested["outer"][cols].equals(b.nested["outer"][cols])


def _describe(shared, i):
    big, small = shared
    return i, type(big).__name__, bool(big.flags.writeable), float(big[i].sum()), type(small).__name__


def test_large_arrays_reach_the_workers_as_one_shared_read_only_map():
    big = np.arange(workers.MEMMAP_BYTES // 8 * 2, dtype=np.float64).reshape(-1, 1024)
    small = np.ones(10)
    got = sorted(workers.imap_unordered(_describe, [(i,) for i in range(3)], n_jobs=2, shared=(big, small)))
    assert got == [(i, "memmap", False, float(big[i].sum()), "ndarray") for i in range(3)]
