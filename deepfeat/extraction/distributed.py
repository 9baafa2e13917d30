"""Sharded extraction on Dask (``extract_features(..., scheduler=...)``, ``deepfeat extract --scheduler``).

Who does what:

- the **driver** (this process) lists the image paths only: it never hashes, decodes or imports torch. It
  submits one *settle* task, then shards of ``shard_size`` paths (at most a few per worker thread in flight, so
  the driver's and the scheduler's memory stay flat however many images there are), and writes each finished
  shard's rows straight into a preallocated float32 file (an unlinked temporary file, memory-mapped at the end:
  the driver never holds all rows in anonymous memory, nor a second copy of them);
- the **settle** task (on a worker, with the same resources as the shards) builds the model once and decides
  device, precision ('auto' checks bf16 on the first images, as locally) and preprocessing; its answer (the model
  key, ``model_sha256``, preprocessing, precision) is pinned in every shard task;
- each **shard** task hashes its images, serves cache hits, computes the misses with the worker's model and writes
  them to the shared cache, then returns rows + sha256 + failures. The model is built once per worker process and
  kept in a module-level dict keyed by the pinned identity (never pickled into tasks). A worker whose model hashes
  differently, or that cannot run the pinned precision / device, raises :class:`WorkerMismatchError`: never a
  silent mix of fp32 and bf16 rows.

Worker threads: each shard runs torch with ``torch_threads`` threads (default 1, or
``$DEEPFEAT_WORKER_TORCH_THREADS``): Dask runs one task per worker thread, so a worker started with ``--nthreads
C`` keeps C cores busy with C shards (Dask itself sets OMP/MKL threads to 1 in worker processes). Decoding runs in
the task's thread (``num_workers=0``: Dask worker processes are daemons and cannot fork DataLoader workers). In a
threads-mode cluster living in the driver's process the thread count is left alone (it is that process's).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import uuid
from datetime import UTC

import numpy as np

from deepfeat import defaults
from deepfeat.errors import DeepfeatError, ExtractionInterrupted

__all__ = ["SHARD_SIZE", "WorkerMismatchError", "extract_on_cluster"]

log = logging.getLogger("deepfeat.extraction")
#: Images per shard task by default (``--shard-size``).
SHARD_SIZE = defaults.SHARD_SIZE
#: Dask reruns a shard this many times when it raises (the cache keeps what was already computed).
RETRIES = 3
#: Seconds the whole extraction may take on the cluster before it stops with an error (None: no limit).
TIMEOUT_S = None
_ENGINES: dict = {}  # per worker process: pinned identity -> built engine
_LOCK = threading.Lock()


class WorkerMismatchError(DeepfeatError):
    """A worker would compute different features than the settled run (model identity, precision, device)."""


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _set_threads(spec) -> int | None:
    import torch

    if os.getpid() == spec["driver_pid"]:
        return None  # a threads-mode cluster inside the driver's process: its thread count is not ours to change
    n = int(os.environ.get("DEEPFEAT_WORKER_TORCH_THREADS") or spec["torch_threads"])
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _build(request, device, precision, cache_root):
    from deepfeat.extraction.engine import Engine  # the engine of every local request, as a one-block request

    return Engine(model=request["model"], weights=request["weights"], layers=[request["layer"]], device=device,
                  precision=precision, channels_last=request["channels_last"], crop_border=request["crop_border"],
                  image_size=request["image_size"], batch_size=request["batch_size"], num_workers=0,
                  cache=cache_root or False, progress=False, runtime="torch")  # one runtime for every worker


def _settle(request, probe_paths, cache_root, driver_pid, torch_threads):
    """Build the model once, settle device / precision / preprocessing; the spec every shard is pinned to."""
    spec = {"driver_pid": driver_pid, "torch_threads": torch_threads}
    threads = _set_threads(spec)
    engine = _build(request, request["device"], request["precision"], cache_root)
    engine.decide_precision(probe_paths)
    meta = engine.meta()
    spec.update(request=request, device=engine.device.type, precision=engine.precision,
                precision_settled=engine.precision_settled, model_sha256=engine.model_sha256,
                preprocessing=engine.preprocessing, key=engine.key(), meta=meta, settled_by=_worker_name(),
                worker_torch_threads=threads)
    with _LOCK:  # this worker's shards reuse the model built here
        _ENGINES.setdefault(_identity(spec, cache_root), engine)
    return spec


def _identity(spec, cache_root) -> tuple:
    return spec["key"], spec["device"], cache_root, spec["request"]["batch_size"]


def _engine_for(spec, cache_root):
    ident = _identity(spec, cache_root)
    with _LOCK:
        engine = _ENGINES.get(ident)
        if engine is None:
            from deepfeat.extraction.device import resolve_precision

            engine = _build(spec["request"], spec["device"], spec["precision"], cache_root)
            where = _worker_name()
            if engine.model_sha256 != spec["model_sha256"] or engine.preprocessing != spec["preprocessing"]:
                raise WorkerMismatchError(
                    f"worker {where} built {spec['request']['model']} with model_sha256 {engine.model_sha256[:12]} "
                    f"(preprocessing {engine.preprocessing}) but the run was settled with "
                    f"{spec['model_sha256'][:12]} ({spec['preprocessing']}): the workers differ in weights files or "
                    "package versions; install the same environment everywhere")
            own = resolve_precision(spec["request"]["precision"], engine.device)[0]
            if spec["request"]["precision"] == "auto" and spec["precision"] != "fp32" and own != spec["precision"]:
                raise WorkerMismatchError(
                    f"worker {where} would choose precision {own} but the run was settled at {spec['precision']} "
                    f"by {spec['settled_by']}: mixed hardware; pass an explicit precision (e.g. precision='fp32')")
            engine.precision, engine.precision_reason, engine.precision_settled = \
                spec["precision"], spec["meta"]["precision_reason"], True
            _ENGINES[ident] = engine
    return engine


def _shard(spec, paths, start, cache_root):
    """Rows of one shard: (start, rows (m, d) float32 of the readable images, their offsets, sha256s, failures,
    hits, misses, worker)."""
    _set_threads(spec)
    engine = _engine_for(spec, cache_root)
    if engine.key() != spec["key"]:
        raise WorkerMismatchError(f"worker {_worker_name()} would write cache key {engine.key()[:12]}, the run "
                                  f"settled on {spec['key'][:12]}")
    run = engine.run(paths)  # unreadable images are the driver's to report
    rows, failures, shas = run.rows[spec["request"]["layer"]], run.failures, run.shas
    hits, misses = run.counts()
    ok = np.asarray([i for i, r in enumerate(rows) if r is not None], dtype=np.int64)
    block = np.stack([rows[i] for i in ok]).astype(np.float32, copy=False) if len(ok) else None
    return {"start": start, "rows": block, "ok": ok, "sha256": shas, "failures": failures, "hits": hits,
            "misses": misses, "worker": _worker_name()}


class _RowFile:
    """n x d float32 rows written by offset into an unlinked temporary file, memory-mapped when complete."""

    def __init__(self, n: int, d: int, where=None):
        self.n, self.d = n, d
        self.fh = tempfile.TemporaryFile(dir=where, prefix="deepfeat-rows-")
        self.fh.truncate(n * d * 4)  # sparse: disk is used as rows arrive

    def write(self, first_row: int, rows: np.ndarray) -> None:
        os.pwrite(self.fh.fileno(), np.ascontiguousarray(rows, dtype="<f4").tobytes(), first_row * self.d * 4)

    def finish(self, keep: np.ndarray) -> np.ndarray:
        """The kept rows (increasing indices) as an (len(keep), d) memory-mapped array, compacted in place."""
        X = np.memmap(self.fh, dtype="<f4", mode="r+", shape=(self.n, self.d))
        if len(keep) < self.n:
            step = max(1, (64 << 20) // (4 * self.d))
            for j in range(0, len(keep), step):  # write position <= read position: never overwrites unread rows
                chunk = keep[j:j + step]
                X[j:j + len(chunk)] = X[chunk]
        self.fh.close()  # the mapping keeps the (already unlinked) file alive
        return X[:len(keep)]


def extract_on_cluster(client, paths, *, request: dict, cache_root, shard_size: int = SHARD_SIZE, resources=None,
                       torch_threads: int = 1, progress: bool = True, spill_dir=None, timeout: float | None = None):
    """Features of ``paths`` computed on the Dask cluster of ``client``.

    Returns ``(X, keep, sha256s, failures, hits, misses, meta)``: ``X`` holds the rows of the readable images
    (indices ``keep``, in input order), ``failures`` lists ``(index, reason)``.
    """
    from distributed import as_completed

    n = len(paths)
    timeout = TIMEOUT_S if timeout is None else timeout
    run = uuid.uuid4().hex[:8]
    opts = {"pure": False, "retries": RETRIES, "resources": resources}
    spec = client.submit(_settle, request, paths[:64], cache_root, os.getpid(), torch_threads,
                         key=f"deepfeat-settle-{run}", **opts).result(timeout=timeout)
    log.info(f"dask: settled on {spec['settled_by']}: {spec['device']}, {spec['meta']['precision_reason']}")
    shas: list = [None] * n
    failures, hits, misses, workers = [], 0, 0, set()
    keep_mask = np.zeros(n, dtype=bool)
    rowfile = None
    starts = list(range(0, n, shard_size))
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
    in_flight = max(2, 2 * threads)
    from tqdm.auto import tqdm

    bar = tqdm(total=n, unit="img", desc=f"{spec['meta']['backbone']} {request['layer']} (dask)",
               disable=not progress)
    submitted = iter(starts)

    def submit_next(queue):
        s = next(submitted, None)
        if s is not None:
            queue.add(client.submit(_shard, spec, paths[s:s + shard_size], s, cache_root,
                                    key=f"deepfeat-shard-{s}-{run}", **opts))

    queue = as_completed([], with_results=False, timeout=timeout)
    for _ in range(in_flight):
        submit_next(queue)
    try:
        with bar:
            for fut in queue:
                res = fut.result(timeout=timeout)
                fut.release()
                submit_next(queue)
                start = res["start"]
                if res["rows"] is not None:
                    if rowfile is None:
                        rowfile = _RowFile(n, res["rows"].shape[1], spill_dir)
                    ok = res["ok"]
                    if len(ok) == ok[-1] + 1:  # no failure in the shard: one contiguous write
                        rowfile.write(start, res["rows"])
                    else:
                        for j, i in enumerate(ok):
                            rowfile.write(start + int(i), res["rows"][j:j + 1])
                    keep_mask[start + ok] = True
                shas[start:start + len(res["sha256"])] = res["sha256"]
                failures += [(start + i, reason) for i, reason in res["failures"]]
                hits, misses = hits + res["hits"], misses + res["misses"]
                workers.add(res["worker"])
                bar.update(len(res["sha256"]))
    except KeyboardInterrupt:
        queue.clear()
        raise ExtractionInterrupted(int(keep_mask.sum()), n, cache_root is not None) from None
    keep = np.flatnonzero(keep_mask)
    X = rowfile.finish(keep) if rowfile is not None else np.zeros((0, 0), np.float32)
    meta = {**spec["meta"], "num_workers": 0,
            "distributed": {"scheduler": str(client.scheduler.address), "shard_size": shard_size,
                            "shards": len(starts), "workers": sorted(workers), "settled_by": spec["settled_by"],
                            "resources": resources, "torch_threads_per_task": spec["worker_torch_threads"],
                            "precision_settled": spec["precision_settled"]}}
    return X, keep, shas, sorted(failures), hits, misses, meta


def extract_with_scheduler(source, *, scheduler, model, weights, layer, batch_size, device, precision, channels_last,
                           crop_border, image_size, cache, on_error, progress, manifest, shard_size, resources,
                           t0):
    """``extract_features(..., scheduler=...)``: open the source (paths only), run the shards, build the FeatureSet.

    One model and one layer without TTA (fused requests run locally); ``model`` must be a name, since a built
    network would be pickled into every task.
    """
    from datetime import datetime

    from deepfeat.dask_client import connect, parse_resources
    from deepfeat.extraction.inputs import feature_set_of, open_cache, open_paths

    if not isinstance(model, str):
        raise DeepfeatError("scheduler= needs the model as a name (e.g. 'tf_efficientnet_lite0'): a built network "
                            "would be pickled into every task; save its weights to a file and pass weights=FILE")
    if not isinstance(shard_size, (int, np.integer)) or isinstance(shard_size, bool) or shard_size < 1:
        raise DeepfeatError(f"The 'shard_size' parameter must be an int >= 1. Got {shard_size!r} instead.")
    resources = parse_resources(resources)
    listed = open_paths(source, manifest)
    paths = listed[0]
    if not paths:
        raise DeepfeatError(f"no images to extract features from in {source!r}")
    store = open_cache(cache)
    cache_root = str(store.root.resolve()) if store is not None else None
    weights = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if isinstance(weights, str) and weights.lower() not in ("none", "imagenet") and os.path.exists(weights):
        weights = os.path.abspath(weights)  # workers resolve it from their own working directory
    request = {"model": model, "weights": weights, "layer": layer, "device": device, "precision": precision,
               "channels_last": channels_last, "crop_border": crop_border, "image_size": image_size,
               "batch_size": batch_size}
    with connect(scheduler) as client:
        X, keep, shas, failures, hits, misses, meta = extract_on_cluster(
            client, paths, request=request, cache_root=cache_root, shard_size=int(shard_size), resources=resources,
            progress=progress)
    meta = {**meta, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    return feature_set_of(X, keep, listed, shas, failures, meta, on_error=on_error, hits=hits, misses=misses,
                          cache_dir=cache_root, t0=t0, progress=progress)
