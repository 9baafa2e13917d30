"""Local worker processes for the folds and the report's figures, forked from a server that imported their modules.

joblib's default (loky) starts each worker as a fresh interpreter, which imports scikit-learn, scipy and
matplotlib again: about a second of CPU per worker, every run, on a 2-core machine where the whole default CV is
~15 s. After :func:`warm_up`, the workers come from the standard library's *forkserver* instead: one clean,
single-threaded process imports :data:`PRELOAD` once (started at the top of a command, so its imports run beside
the command's own) and forks a worker in milliseconds each time one is needed. It is fork-safe: the server never
ran a BLAS or OpenMP thread pool, and each worker caps its BLAS / OpenMP threads (:mod:`threadpoolctl`) at its
share of the cores, as joblib does. Tasks travel with cloudpickle, as joblib's do, so classifiers or callables
defined in ``__main__`` or a notebook work the same.

The CLI commands call :func:`warm_up`. A script may call it too, under ``if __name__ == "__main__":`` (the server
imports the main script once, as :mod:`multiprocessing` does with every non-fork start method); without it, and
where there is no forkserver (Windows) or the caller chose a joblib backend (``joblib.parallel_config``),
:func:`imap_unordered` runs on joblib's workers. The results are the same either way.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import tempfile

from deepfeat.errors import DeepfeatError

__all__ = ["PRELOAD", "available", "imap_unordered", "warm_up"]

#: Modules the server imports once, so that a worker starts with them (what fold work and figures need).
PRELOAD = ("numpy", "sklearn.svm", "sklearn.neighbors", "sklearn.naive_bayes", "deepfeat.evaluation.cross_validation",
           "deepfeat.evaluation.nested", "deepfeat.reporting.plots", "matplotlib.pyplot")

_worker_state: dict = {}
_server = {"started": False}


def available() -> bool:
    """Whether :func:`warm_up` started the server here and joblib's active backend is its default (loky): inside
    ``joblib.parallel_config(backend="dask" | "threading" | ...)`` the caller's choice is used instead."""
    if not _server["started"]:
        return False
    from joblib._parallel_backends import LokyBackend
    from joblib.parallel import get_active_backend

    return isinstance(get_active_backend()[0], LokyBackend)


def warm_up(preload=PRELOAD) -> bool:
    """Start the worker server now, its imports beside the caller's; True when it runs (later calls: no-op).

    From then on :func:`imap_unordered` forks its workers from it. Preloading matters only for speed: a module the
    server did not import is imported by the worker that needs it. False where there is no forkserver (Windows).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    if not _server["started"]:
        from multiprocessing import forkserver

        # '__main__' first, as multiprocessing's default: the main script is imported once, in the server, and
        # not again in every worker
        multiprocessing.get_context("forkserver").set_forkserver_preload(["__main__", *preload])
        forkserver.ensure_running()
        _server["started"] = True
    return True


#: Arrays of at least this many bytes reach the workers as read-only memory maps of one file, not as copies.
MEMMAP_BYTES = 1 << 20


def _dumps_shared(shared, folder: str) -> bytes:
    """``shared`` pickled (cloudpickle) with every large array saved once under ``folder`` and memory-mapped by
    each worker (as joblib does), so the workers share its pages instead of holding a copy each."""
    import io

    import cloudpickle
    import numpy as np

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) in (np.ndarray, np.memmap) and obj.nbytes >= MEMMAP_BYTES and not obj.dtype.hasobject:
                path = os.path.join(folder, f"shared{len(os.listdir(folder))}.npy")
                np.save(path, obj)
                return _load_map, (path,)
            return super().reducer_override(obj)

    buf = io.BytesIO()
    Pickler(buf).dump(shared)
    return buf.getvalue()


def _memory_folder() -> str | None:
    """/dev/shm when it exists with at least 2 GB free (joblib's rule; containers often give it 64 MB), else the
    temporary folder."""
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize >= 2e9 else None


def _load_map(path: str):
    import numpy as np

    return np.load(path, mmap_mode="r")


def _init(threads: int, shared: bytes) -> None:
    from threadpoolctl import threadpool_limits

    _worker_state["limits"] = threadpool_limits(threads)  # kept alive: the cap lasts the worker's life
    _worker_state["shared"] = pickle.loads(shared)


def _call(payload: bytes):
    fn, args = pickle.loads(payload)
    return fn(_worker_state["shared"], *args)


def imap_unordered(fn, jobs, *, n_jobs: int, shared=None):
    """``fn(shared, *job)`` for every job in ``n_jobs`` worker processes; yields the results as they finish.

    ``shared`` (e.g. the feature matrices) is sent once to each worker, not once per job. ``n_jobs`` as joblib's
    (-1 = every core). A worker's exception is raised here, and the jobs not yet started are cancelled.
    """
    from joblib import cpu_count, effective_n_jobs

    jobs = list(jobs)
    n = max(1, min(effective_n_jobs(n_jobs), len(jobs)))
    if not available():
        from joblib import Parallel, delayed

        yield from Parallel(n_jobs=n, return_as="generator_unordered")(delayed(fn)(shared, *job) for job in jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, cpu_count() // n)
    folder = tempfile.mkdtemp(prefix="deepfeat-workers-", dir=_memory_folder())
    try:
        ex = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("forkserver"), initializer=_init,
                                 initargs=(threads, _dumps_shared(shared, folder)))
        yield from _run(ex, fn, jobs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(ex, fn, jobs):
    import cloudpickle
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    finished = False
    try:
        pending = {ex.submit(_call, cloudpickle.dumps((fn, job))) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    yield f.result()
                except BrokenProcessPool as exc:
                    raise DeepfeatError(f"a worker process died ({exc}): out of memory, or killed? Results "
                                        "already written are kept; rerun with n_jobs=1 (--n-jobs 1) to run the "
                                        "work in this process") from exc
        finished = True
    finally:
        if not finished:  # an error, Ctrl-C or a caller that stopped reading: do not wait for running jobs
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
        ex.shutdown(wait=finished, cancel_futures=True)
