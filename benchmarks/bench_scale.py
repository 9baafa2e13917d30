"""Benchmark: Dask scale-out (``--scheduler local:2``) against local runs, side by side in one run.

(a) CV: ``cross_validate`` of a synthetic 3,256 x 1,000 FeatureSet (the shape of the Taleqani ALL set; generated
    as in ``bench_cv.py``, 4 classes), classifiers svm, knn, ann, nb x selections none, mRMR 521 x 10 folds, no fold
    cache: local ``n_jobs=2`` vs ``scheduler="local:2"`` (2 worker processes x 1 thread; the cluster's start-up is
    included). Prints both wall times, the ratio, and whether the tables are identical.
(b) extraction of ``../shared/data/pbc_sample`` (1,607 images; ``--images`` for another folder) with
    tf_efficientnet_lite0 ImageNet logits, fp32, empty caches in a temporary folder: local (batch 8, default
    threads) vs ``local:2`` (shards of ``--shard-size`` images, 1 torch thread per task); ratio and equality.
(c) a simulated run of ``--n-sim`` (default 100,000) distinct synthetic 16x16 images written to a temporary
    folder, ``test_efficientnet`` (random weights, 32 px, pooled 256-d) through ``local:2`` with default shards
    (2048): the driver's resident memory (VmRSS, and RssAnon = its own heap, not page cache) sampled every 2 s,
    printed over time, and the peak against the size of X.
(d) the cost of one feature-cache write (1,000-d entry, atomic + fsync) on this disk, for the README's arithmetic,
    and the peak extra anonymous memory of ``FeatureSet.save`` for a 100,000 x 1,000 X memory-mapped vs in RAM.

Run: ``python benchmarks/bench_scale.py [--quick] [--skip-sim]``; ``--quick`` leaves ``ann`` out of (a) and
simulates 20,000 images in (c). Needs ``pip install "deepfeat[dask]"``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _status(field: str) -> float:
    """A /proc/self/status field in MiB (VmRSS, RssAnon, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """Samples VmRSS and RssAnon of this process every ``every`` seconds in a thread."""

    def __init__(self, every=2.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, _status("VmRSS"), _status("RssAnon")))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter() - self._t0, _status("VmRSS"), _status("RssAnon")))


def bench_cv(quick: bool):
    from bench_cv import make_features

    from deepfeat.evaluation.cross_validation import cross_validate

    fs = make_features()
    classifiers = ("svm", "knn", "nb") if quick else ("svm", "knn", "ann", "nb")
    opts = dict(classifiers=classifiers, selections=("none", "mrmr"), n_features=521, folds=10, seed=0,
                baseline="majority", progress=False, fold_cache=None)
    print(f"\n(a) CV {len(fs)} x {fs.n_features} (synthetic), {' '.join(classifiers)} x none, mRMR 521 x 10 folds, "
          "no fold cache")
    t0 = time.perf_counter()
    local = cross_validate(fs, n_jobs=2, **opts)
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist = cross_validate(fs, scheduler="local:2", **opts)
    t_dask = time.perf_counter() - t0
    same = all(local.predictions[c].equals(dist.predictions[c]) for c in local.predictions.columns
               if "time" not in c)
    acc = local.summary.set_index("config")["accuracy_mean"]
    print(f"    local n_jobs=2: {t_local:.1f} s   local:2 (incl. cluster start): {t_dask:.1f} s   "
          f"ratio dask/local {t_dask / t_local:.2f}   predictions identical: {same}")
    print("    accuracy (mean over folds): " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))


def bench_extract(images: Path, shard_size: int):
    from deepfeat.extraction.api import extract_features

    if not images.is_dir():
        print(f"\n(b) skipped: {images} is absent")
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    kw = dict(model="tf_efficientnet_lite0", weights="imagenet", layer="logits", precision="fp32", progress=False,
              on_error="skip")
    try:
        print(f"\n(b) extraction of {images} (tf_efficientnet_lite0 logits, fp32, empty caches)")
        t0 = time.perf_counter()
        local = extract_features(images, cache=tmp / "local", **kw)
        t_local = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = extract_features(images, cache=tmp / "dask", scheduler="local:2", shard_size=shard_size, **kw)
        t_dask = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = extract_features(images, cache=tmp / "dask", scheduler="local:2", shard_size=shard_size, **kw)
        t_again = time.perf_counter() - t0
        diff = float(np.abs(local.X - dist.X).max())
        print(f"    {len(local)} images; local: {t_local:.1f} s ({len(local) / t_local:.1f} img/s)   local:2, "
              f"shards of {shard_size}: {t_dask:.1f} s ({len(dist) / t_dask:.1f} img/s)   ratio dask/local "
              f"{t_dask / t_local:.2f}")
        print(f"    identical rows: {np.array_equal(local.X, dist.X)} (max |diff| {diff:.3g}); second local:2 run "
              f"{t_again:.1f} s, cache hits {again.meta['cache_hits']}/{len(again)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_images(root: Path, n: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sub = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"{i:06d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def bench_simulated(n: int):
    from deepfeat.extraction.api import extract_features

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-sim-"))
    try:
        t0 = time.perf_counter()
        paths = _make_images(tmp / "img", n)
        print(f"\n(c) simulated run: {n:,} distinct 16x16 PNGs written in {time.perf_counter() - t0:.0f} s; "
              "test_efficientnet (random, 32 px, pooled, batch 64) through local:2, shards of 2048, cache off")
        print(f"    driver before: VmRSS {_status('VmRSS'):.0f} MiB, RssAnon {_status('RssAnon'):.0f} MiB; torch "
              f"imported in the driver: {'torch' in sys.modules}")
        with RssSampler() as rss:
            t0 = time.perf_counter()
            fs = extract_features(paths, model="test_efficientnet", weights="none", layer="pooled", image_size=32, batch_size=64,
                                  precision="fp32", cache=False, progress=False, scheduler="local:2")
            wall = time.perf_counter() - t0
        x_mib = fs.X.nbytes / 2**20
        step = max(1, len(rss.samples) // 12)
        print("    t (s)   VmRSS MiB   RssAnon MiB")
        for t, v, a in rss.samples[::step] + [rss.samples[-1]]:
            print(f"    {t:6.0f}   {v:9.0f}   {a:11.0f}")
        anon = [a for _, _, a in rss.samples]
        print(f"    {len(fs):,} x {fs.n_features} rows in {wall:.0f} s ({len(fs) / wall:.0f} img/s); X = {x_mib:.0f} "
              f"MiB (memory-mapped: {isinstance(fs.X.base, np.memmap)}); driver RssAnon min {min(anon):.0f} / max "
              f"{max(anon):.0f} MiB over the run (growth {max(anon) - anon[0]:.0f} MiB); torch imported in the "
              f"driver: {'torch' in sys.modules}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_io():
    from deepfeat.extraction.cache import FeatureCache, model_key
    from deepfeat.features import FeatureSet

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-io-"))
    try:
        cache = FeatureCache(tmp / "cache")
        key = model_key(backbone="bench", weights_id="x", layer="logits", preprocessing={})
        rows = np.random.default_rng(0).normal(size=(2000, 1000)).astype(np.float32)
        shas = [f"{i:064x}" for i in range(len(rows))]
        t0 = time.perf_counter()
        cache.put_many(key, shas, rows)
        w = (time.perf_counter() - t0) / len(rows)
        t0 = time.perf_counter()
        cache.get_many(key, shas, dim=1000)
        r = (time.perf_counter() - t0) / len(rows)
        print(f"\n(d) feature cache on {tmp}: write {w * 1e3:.2f} ms / entry (atomic + fsync), read {r * 1e3:.2f} ms "
              "/ entry (1,000-d)")
        n, d = 100_000, 1000
        mm = np.lib.format.open_memmap(tmp / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
        for i in range(0, n, 10_000):
            mm[i:i + 10_000] = 1.0
        mm.flush()
        for label, X in (("memory-mapped X", np.load(tmp / "X.npy", mmap_mode="r")), ("X in RAM", None)):
            if X is None:
                X = np.ones((n, d), np.float32)
            base = _status("RssAnon")  # X itself (in RAM or not) is already there
            with RssSampler(0.05) as s:
                FeatureSet(X, meta={"bench": True}).save(tmp / "big.features")
            peak = max(a for _, _, a in s.samples) - base
            print(f"    FeatureSet.save of {n:,} x {d:,} float32 ({X.nbytes / 2**20:.0f} MiB), {label}: peak "
                  f"anonymous memory beyond X {peak:.0f} MiB")
            del X
        rows = [np.ones(d, np.float32) for _ in range(n)]  # what extract_features holds before np.stack
        base = _status("RssAnon")
        with RssSampler(0.05) as s:
            X = np.stack(rows)
        print(f"    the local extraction's np.stack of {n:,} row arrays: peak anonymous memory beyond the rows "
              f"{max(a for _, _, a in s.samples) - base:.0f} MiB (the rows themselves: "
              f"{sum(r.nbytes for r in rows) / 2**20:.0f} MiB + per-array overhead)")
        del rows, X
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="no ann in (a); 20,000 images in (c)")
    shared = Path(os.environ.get("DEEPFEAT_SHARED", HERE.parent.parent / "shared"))
    ap.add_argument("--images", type=Path, default=shared / "data" / "pbc_sample")
    ap.add_argument("--shard-size", type=int, default=200, help="shard size of (b) (default 200: 9 tasks for PBC)")
    ap.add_argument("--n-sim", type=int, default=None)
    ap.add_argument("--skip-sim", action="store_true")
    args = ap.parse_args(argv)
    import dask
    import distributed

    print(f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}; dask {dask.__version__}, "
          f"distributed {distributed.__version__}")
    bench_cv(args.quick)
    bench_extract(args.images, args.shard_size)
    if not args.skip_sim:
        bench_simulated(args.n_sim or (20_000 if args.quick else 100_000))
    bench_io()
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
