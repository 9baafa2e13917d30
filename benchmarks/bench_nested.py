"""Benchmark: nested cross-validation on a study-sized matrix (3,256 x 3,000 synthetic features, 4 classes).

Runs, side by side in one process: the ordinary table (classifiers x {all, mRMR 521} x 10 folds), then nested CV
on the same outer folds (10 outer x 5 inner; per outer fold the choice among mRMR sizes {3000, 521, 100} x
classifiers x their main hyper-parameter, SVM C in {1, 10}, KNN k in {5, 10}) with a cold fold cache, then the same
nested CV again with the warm cache. Prints wall times, the number of candidates and fits, and the cold / warm ratio.

``--ann-probe`` also times the ``ann`` and ``ann-adam`` presets' fits on one inner split (3 sizes) and extrapolates
their share of a full nested run (the 0.2 MLP made a 4-classifier nested grid take over an hour).

Run: ``python benchmarks/bench_nested.py [--classifiers svm knn nb] [--n-jobs 2] [--ann-probe] [--one-fold]``
(``--one-fold``: time the first outer fold cold and warm and extrapolate, for a loaded machine).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def make_features(n=3256, d=3000, n_classes=4, seed=0):
    from sklearn.datasets import make_classification

    from deepfeat.features import FeatureSet

    X, y = make_classification(n_samples=n, n_features=d, n_informative=min(60, d // 4),
                               n_redundant=min(140, d // 4), n_repeated=0,
                               n_classes=n_classes, n_clusters_per_class=2, class_sep=0.8, flip_y=0.02,
                               random_state=seed)
    rng = np.random.default_rng(seed)
    if d >= 1000:  # correlated blocks like CNN logits
        X[:, 200:600] += 0.5 * X[:, rng.integers(0, 200, 400)]
    return FeatureSet(X.astype(np.float32), [f"class{v}" for v in y], sha256=[f"{i:064x}" for i in range(n)])


def ann_probe(fs, seed=0, preset="ann"):
    """CPU seconds for an ann preset's 3 size candidates on one inner split (4/5 of 9/10 of the rows)."""
    from sklearn.preprocessing import StandardScaler

    from deepfeat.classifiers.presets import get_classifier

    n = len(fs)
    idx = np.random.default_rng(seed).permutation(n)
    tr = idx[: int(0.72 * n)]
    y = np.unique(fs.y, return_inverse=True)[1]
    sc = StandardScaler().fit(fs.X[tr])
    t0 = time.process_time()
    for size in (fs.n_features, 521, 100):
        get_classifier(preset, seed=seed).fit(sc.transform(fs.X[tr])[:, :size], y[tr])
    return time.process_time() - t0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; ru_maxrss is in kB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_outer_fold(fs, classifiers, folds, inner_folds, cache_dir):
    """Wall and CPU seconds of nested CV's work for the first outer fold (cold cache), then again (warm)."""
    from deepfeat.evaluation.fold_cache import FoldCache
    from deepfeat.evaluation.folds import make_folds
    from deepfeat.evaluation.nested import _outer_fold, candidate_grid, inner_splits

    y = np.unique(fs.y, return_inverse=True)[1]
    r, k, tr, te = make_folds(y, None, folds, 1, 0)[0]
    task = (r, k, tr, te, 0)
    inner = inner_splits([task], y, None, inner_folds, 0)[0]
    cands = candidate_grid({None: fs.n_features}, classifiers)
    data, cache = {None: (fs.identity(), fs.X)}, FoldCache(cache_dir)
    out = []
    for _ in ("cold", "warm"):
        w, c = time.perf_counter(), time.process_time()
        res = _outer_fold(task, inner, data, y, cands, "fcq", cache)
        out.append((time.perf_counter() - w, time.process_time() - c))
    return cands, res, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classifiers", nargs="+", default=["svm", "knn", "ann", "nb"])
    ap.add_argument("--n", type=int, default=3256)
    ap.add_argument("--d", type=int, default=3000)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--ann-probe", action="store_true")
    ap.add_argument("--features", help="a FeatureSet file to use instead of the synthetic matrix (real features)")
    ap.add_argument("--one-fold", action="store_true", help="time the first outer fold only (cold, then warm "
                    "cache) and extrapolate to all outer folds on --n-jobs cores: for loaded machines")
    args = ap.parse_args()

    from deepfeat.evaluation.nested import candidate_grid

    if args.features:
        from deepfeat.features import load_features

        fs = load_features(args.features)
    else:
        fs = make_features(args.n, args.d)
    print(f"features: {len(fs)} rows x {fs.n_features}; classifiers {args.classifiers}; n_jobs {args.n_jobs}; "
          f"cpus {os.cpu_count()}; load avg {os.getloadavg()[0]:.1f}")
    cands = candidate_grid({None: fs.n_features}, args.classifiers)
    n_inner_fits = args.folds * args.inner_folds * len(cands)
    print(f"nested grid: {len(cands)} candidates -> {n_inner_fits} inner fits + {args.folds} outer refits; "
          f"mRMR rankings: {args.folds * args.inner_folds} inner + {args.folds} outer")
    if args.one_fold:
        with tempfile.TemporaryDirectory() as cache:
            cands, res, ((w0, c0), (w1, c1)) = one_outer_fold(fs, args.classifiers, args.folds, args.inner_folds,
                                                              cache)
        print(f"one outer fold ({args.inner_folds} inner splits x {len(cands)} candidates + refit): cold {w0:.1f} s "
              f"wall / {c0:.1f} s CPU; warm cache {w1:.2f} s wall / {c1:.2f} s CPU (cold/warm CPU {c0 / c1:.0f}x)")
        print(f"extrapolated nested CV, {args.folds} outer folds on {args.n_jobs} cores (outer folds run in "
              f"parallel, CPU-bound): {args.folds * c0 / args.n_jobs / 60:.1f} min from CPU time; "
              f"{args.folds * w0 / args.n_jobs / 60:.1f} min from this (loaded) wall time")
        print(f"fold 0 chose {res['config']}: inner {100 * res['inner_accuracy']:.2f} %, outer "
              f"{100 * res['accuracy']:.2f} %; peak RSS {peak_rss_mb():.0f} MB")
    else:
        run_all(fs, args)
    if args.ann_probe:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            times = {p: ann_probe(fs, preset=p) for p in ("ann", "ann-adam")}
        for p, s in times.items():
            total = s * args.folds * args.inner_folds / max(1, args.n_jobs)
            print(f"{p} probe: {s:.1f} s CPU (1 thread) for its 3 size candidates on one inner split -> "
                  f"~{total / 60:.1f} min added to a nested run on {args.n_jobs} cores (extrapolated)")
        print(f"ann-adam / ann CPU ratio: {times['ann-adam'] / times['ann']:.1f}x")


def run_all(fs, args):
    from deepfeat.evaluation.cross_validation import cross_validate

    with tempfile.TemporaryDirectory() as cache:
        opts = dict(classifiers=args.classifiers, folds=args.folds, n_jobs=args.n_jobs, baseline="majority",
                    fold_cache=cache, progress=False)
        t0 = time.perf_counter()
        table = cross_validate(fs, **opts)
        t_table = time.perf_counter() - t0
        print(f"ordinary table (cold cache): {t_table:.1f} s")
        t0 = time.perf_counter()
        res = cross_validate(fs, nested=True, inner_folds=args.inner_folds, **opts)
        t_cold = time.perf_counter() - t0
        print(f"table (warm) + nested CV (cold): {t_cold:.1f} s  [nested part {res.nested['wall_time_s']:.1f} s]")
        t0 = time.perf_counter()
        again = cross_validate(fs, nested=True, inner_folds=args.inner_folds, **opts)
        t_warm = time.perf_counter() - t0
        print(f"table + nested CV, both warm: {t_warm:.1f} s; cold/warm ratio {t_cold / t_warm:.1f}x")
        assert again.nested["estimate"] == res.nested["estimate"]
    n = res.nested
    print(f"nested estimate {100 * n['estimate']:.2f} % [{100 * n['ci_low']:.2f}, {100 * n['ci_high']:.2f}]; "
          f"best of table {n['best_of_table']} {100 * n['best_of_table_accuracy']:.2f} %; gap "
          f"{100 * n['gap']:+.2f} points; table best {100 * table.summary['accuracy_mean'].max():.2f} %")
    print("chosen:", dict(n["outer"]["config"].value_counts()))
    print(f"peak RSS of this process {peak_rss_mb():.0f} MB (joblib workers not counted)")


if __name__ == "__main__":
    main()
