"""Benchmark: nested cross-validation on a study-sized matrix (3,256 x 3,000 synthetic features, 4 classes).

Runs, side by side in one process: the ordinary table (classifiers x {all, mRMR 521} x 10 folds), then nested CV
on the same outer folds (10 outer x 5 inner; per outer fold the choice among mRMR sizes {3000, 521, 100} x
classifiers x their main hyper-parameter, SVM C in {1, 10}, KNN k in {5, 10}) with a cold fold cache, then the same
nested CV again with the warm cache. Prints wall times, the number of candidates and fits, and the cold / warm ratio.

``--ann-probe`` also times the ``ann`` preset's fits on one inner split (3 sizes) and extrapolates its share of a
full nested run, for machines where the MLP dominates.

Run: ``python benchmarks/bench_nested.py [--classifiers svm knn nb] [--n-jobs 2] [--ann-probe]``.
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


def ann_probe(fs, seed=0):
    """Seconds for the ann preset's 3 size candidates on one inner split (4/5 of 9/10 of the rows)."""
    from sklearn.preprocessing import StandardScaler

    from deepfeat.classifiers.presets import get_classifier

    n = len(fs)
    idx = np.random.default_rng(seed).permutation(n)
    tr = idx[: int(0.72 * n)]
    y = np.unique(fs.y, return_inverse=True)[1]
    sc = StandardScaler().fit(fs.X[tr])
    t0 = time.perf_counter()
    for size in (fs.n_features, 521, 100):
        get_classifier("ann", seed=seed).fit(sc.transform(fs.X[tr])[:, :size], y[tr])
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classifiers", nargs="+", default=["svm", "knn", "ann", "nb"])
    ap.add_argument("--n", type=int, default=3256)
    ap.add_argument("--d", type=int, default=3000)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--ann-probe", action="store_true")
    args = ap.parse_args()

    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.evaluation.nested import candidate_grid

    fs = make_features(args.n, args.d)
    print(f"features: {fs.n_features} x {len(fs)} rows; classifiers {args.classifiers}; n_jobs {args.n_jobs}; "
          f"cpus {os.cpu_count()}; load avg {os.getloadavg()[0]:.1f}")
    cands = candidate_grid({None: fs.n_features}, args.classifiers)
    n_inner_fits = args.folds * args.inner_folds * len(cands)
    print(f"nested grid: {len(cands)} candidates -> {n_inner_fits} inner fits + {args.folds} outer refits; "
          f"mRMR rankings: {args.folds * args.inner_folds} inner + {args.folds} outer")
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
    if args.ann_probe:
        s = ann_probe(fs)
        total = s * args.folds * args.inner_folds / max(1, args.n_jobs)
        print(f"ann probe: {s:.1f} s for its 3 size candidates on one inner split -> ~{total / 60:.1f} min of a "
              f"nested run on {args.n_jobs} cores (extrapolated)")


if __name__ == "__main__":
    main()
