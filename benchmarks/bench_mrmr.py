"""Benchmark MRMRSelector against mrmr-selection's mrmr_classif on the study's shape.

    python benchmarks/bench_mrmr.py            # 3,256 x 1,000 float32, 4 classes, k = 521 (a few minutes)
    python benchmarks/bench_mrmr.py --k 100    # quicker

Prints wall-clock times measured side by side in one run, the speedup, whether the picks are identical, and
the peak memory of each fit. Memory is tracemalloc's peak of Python-heap + numpy allocations during the fit
(numpy reports its array buffers to tracemalloc; BLAS scratch space is not included), measured in a second,
untimed run because tracing slows pure-Python code down. mrmr_classif runs with n_jobs=1: on 2 cores its
default n_jobs=-1 (joblib worker processes) is several times slower, so this is the faster baseline.
"""
from __future__ import annotations

import argparse
import os
import time
import tracemalloc
import warnings

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from deepfeat.selection.mrmr import MRMRSelector

with warnings.catch_warnings():  # mrmr-selection switches off all warnings on import
    from mrmr import mrmr_classif


def study_shaped_data(n, d, n_classes, seed=0):
    """Correlated float32 features: 40 informative, 300 linear mixtures of them (fewer if d is small), noise."""
    X, y = make_classification(
        n_samples=n, n_features=d, n_informative=min(40, d // 4), n_redundant=min(300, d // 3), n_classes=n_classes,
        n_clusters_per_class=2, random_state=seed,
    )
    rng = np.random.default_rng(seed)
    X = np.maximum(X * rng.uniform(0.2, 5.0, d) + rng.uniform(-1.0, 3.0, d), 0.0)  # ReLU-like, non-negative
    return X.astype(np.float32), y


def timed(fn):
    """(result, wall seconds, CPU seconds of this process); CPU time shows the cost when cores are shared."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def peak_mib(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3256)
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--k", type=int, default=521)
    parser.add_argument("--n-bins", type=int, default=256)
    args = parser.parse_args()

    X, y = study_shaped_data(args.n, args.d, args.classes)
    df, ys = pd.DataFrame(X), pd.Series(y)
    print(f"data: {args.n} x {args.d} float32, {args.classes} classes, k = {args.k}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    def ours_fcq():
        return MRMRSelector(n_features=args.k).fit(X, y)

    def ours_miq():
        return MRMRSelector(n_features=args.k, method="miq", n_bins=args.n_bins).fit(X, y)

    def reference():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mrmr_classif(df, ys, K=args.k, n_jobs=1, show_progress=False)

    ours_fcq()  # warm-up: imports, BLAS thread pool
    fcq, t_fcq, cpu_fcq = timed(ours_fcq)
    ref, t_ref, cpu_ref = timed(reference)
    miq, t_miq, cpu_miq = timed(ours_miq)
    same = sum(int(a) == int(b) for a, b in zip(fcq.ranking_, ref))
    first_diff = next((i for i, (a, b) in enumerate(zip(fcq.ranking_, ref)) if int(a) != int(b)), None)
    print(f"MRMRSelector(fcq):            wall {t_fcq:8.3f} s, CPU {cpu_fcq:8.3f} s")
    print(f"mrmr_classif (n_jobs=1):      wall {t_ref:8.3f} s, CPU {cpu_ref:8.3f} s")
    print(f"mRMR speedup vs mrmr-selection: {t_ref / t_fcq:.0f}x wall, {cpu_ref / cpu_fcq:.0f}x CPU, "
          f"identical picks: {same}/{len(ref)}"
          + ("" if first_diff is None and len(ref) == len(fcq.ranking_) else f" (first difference at pick {first_diff})"))
    print(f"MRMRSelector(miq, {args.n_bins} bins): wall {t_miq:8.3f} s, CPU {cpu_miq:8.3f} s "
          f"for {len(miq.ranking_)} picks")
    print(f"load average after timing: {os.getloadavg()[0]:.1f}")
    print("peak memory (tracemalloc):")
    print(f"  MRMRSelector(fcq):    {peak_mib(ours_fcq):8.1f} MiB")
    print(f"  MRMRSelector(miq):    {peak_mib(ours_miq):8.1f} MiB")
    print(f"  mrmr_classif:         {peak_mib(reference):8.1f} MiB")
    print(f"  (X itself: {X.nbytes / 2**20:.1f} MiB float32)")


if __name__ == "__main__":
    main()
