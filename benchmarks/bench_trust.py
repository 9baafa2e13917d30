"""Benchmark (issue 21): calibration and conformal coverage on real features, measured on held-out folds.

For each FeatureSet file (e.g. Lite0 features of ``../shared/data/pbc_sample`` and ``all_idb2_small``, made with
``deepfeat extract DIR -o /tmp/X.features``):

1. **ECE before / after calibration**, held out: outer stratified ``--folds``-fold; in each outer training part
   the ``--classifier`` pipeline as ``deepfeat fit`` builds it is fitted as is ("before") and as
   ``deepfeat fit --calibrate`` does it (sigmoid or isotonic chosen by inner 5-fold log loss, "after"); the ECE
   (top label, 15 equal-width bins) is computed on the pooled outer test probabilities. The inner out-of-fold
   ECE that ``fit`` itself prints is reported beside it (mean over outer folds).
2. **Coverage at 90 / 95 / 99 %**: ``cross_validate(coverage=...)`` on the same outer folds: cross-conformal
   thresholds from inner folds of each outer training part, applied to the outer test fold; empirical coverage
   (with one binomial standard error), mean set size and the share of cells decided alone (set of one class), for
   marginal and class-conditional (Mondrian) thresholds.

Run: ``python benchmarks/bench_trust.py /tmp/pbc.features /tmp/idb.features [--folds 5] [--out DIR]``. Writes
``trust_<stem>.csv`` and ``trust_config.json`` (seed, folds, versions) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = (0.9, 0.95, 0.99)


def ece_held_out(fs, classifier: str, folds: int, seed: int) -> dict:
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    from deepfeat.classifiers.presets import build_pipeline
    from deepfeat.evaluation.calibration import choose_calibration, expected_calibration_error

    classes, y = np.unique(fs.y, return_inverse=True)
    before, after = np.zeros((len(y), len(classes))), np.zeros((len(y), len(classes)))
    inner_before, inner_after, methods = [], [], []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(fs.X, y):
        pipe = build_pipeline(classifier, seed=seed)
        before[te] = clone(pipe).fit(fs.X[tr], y[tr]).predict_proba(fs.X[te])
        clf, record, _ = choose_calibration(pipe, fs.X[tr], y[tr], folds=5, seed=seed)
        after[te] = clone(pipe).set_params(classify=clf).fit(fs.X[tr], y[tr]).predict_proba(fs.X[te])
        inner_before.append(record["ece_before"])
        inner_after.append(record["ece_after"])
        methods.append(record["method"])
    return {"ece_before": expected_calibration_error(y, before), "ece_after": expected_calibration_error(y, after),
            "accuracy_before": float(np.mean(before.argmax(1) == y)),
            "accuracy_after": float(np.mean(after.argmax(1) == y)),
            "inner_ece_before": float(np.mean(inner_before)), "inner_ece_after": float(np.mean(inner_after)),
            "methods": methods}


def _remember_inner_fits():
    """The marginal and the Mondrian run calibrate from the same inner out-of-fold probabilities (same rows,
    folds and seed, deterministic fits): compute them once. Timing only; the figures are those of two runs."""
    import hashlib

    from deepfeat.evaluation import calibration

    real, memo = calibration.out_of_fold_proba, {}

    def remembered(est, X, y, **kw):
        key = (repr(est), hashlib.sha256(np.ascontiguousarray(X).tobytes() + np.asarray(y).tobytes()).hexdigest(),
               repr(sorted(kw.items(), key=str)))
        if key not in memo:
            memo[key] = real(est, X, y, **kw)
        return memo[key]

    calibration.out_of_fold_proba = remembered


def coverage(fs, classifier: str, folds: int, seed: int, class_conditional: bool, fold_cache) -> pd.DataFrame:
    from deepfeat.evaluation.cross_validation import cross_validate

    res = cross_validate(fs, classifiers=(classifier,), selections=("none",), folds=folds, seed=seed,
                         baseline="none", progress=False, fold_cache=fold_cache, coverage=LEVELS,
                         class_conditional=class_conditional)
    return res.conformal.assign(class_conditional=class_conditional)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features", nargs="+", type=Path)
    ap.add_argument("--classifier", default="svm-calibrated")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-trust"))
    args = ap.parse_args(argv)

    from deepfeat.features import load_features
    from deepfeat.fileio import write_csv
    from deepfeat.provenance import package_versions

    args.out.mkdir(parents=True, exist_ok=True)
    _remember_inner_fits()
    print(f"load: {os.getloadavg()[0]:.1f} (1-min average), {os.cpu_count()} cores")
    for path in args.features:
        fs = load_features(path)
        t0 = time.perf_counter()
        cal = ece_held_out(fs, args.classifier, args.folds, args.seed)
        t1 = time.perf_counter()
        print(f"\n{path.stem}: {len(fs)} images x {fs.n_features} features, {len(fs.classes_)} classes; "
              f"{args.classifier}, {args.folds} outer folds")
        print(f"  ECE held out (top label, 15 bins): {cal['ece_before']:.4f} before -> {cal['ece_after']:.4f} after "
              f"calibration ({'/'.join(sorted(set(cal['methods'])))} chosen); accuracy "
              f"{100 * cal['accuracy_before']:.2f} % -> {100 * cal['accuracy_after']:.2f} %; inner out-of-fold ECE "
              f"as fit prints it: {cal['inner_ece_before']:.4f} -> {cal['inner_ece_after']:.4f}  [{t1 - t0:.0f} s]")
        tables = [coverage(fs, args.classifier, args.folds, args.seed, cc, args.out / "fold-cache")
                  for cc in (False, True)]
        table = pd.concat(tables, ignore_index=True)
        print(f"  conformal sets on the outer test folds (cross-conformal, 5 inner folds)  "
              f"[{time.perf_counter() - t1:.0f} s]")
        overall = table[table["class"] == "all"]
        for _, r in overall.iterrows():
            rows = table[(table["nominal"] == r["nominal"]) & (table["class"] != "all")
                         & (table["class_conditional"] == r["class_conditional"])]
            print(f"    {'Mondrian' if r['class_conditional'] else 'marginal':8s} nominal {100 * r['nominal']:g} %: "
                  f"coverage {100 * r['coverage']:.2f} ± {100 * r['se']:.2f} % "
                  f"(gap {100 * (r['coverage'] - r['nominal']):+.2f} pp), "
                  f"mean set size {r['mean_set_size']:.2f}, decided alone {100 * r['decided_alone']:.1f} %; "
                  f"per-class coverage {100 * rows['coverage'].min():.1f}-{100 * rows['coverage'].max():.1f} %")
        write_csv(table, args.out / f"trust_{path.stem}.csv")
        (args.out / f"trust_{path.stem}_ece.json").write_text(json.dumps(cal, indent=2))
    (args.out / "trust_config.json").write_text(json.dumps(
        {"classifier": args.classifier, "folds": args.folds, "seed": args.seed, "levels": LEVELS,
         "features": [str(p) for p in args.features],
         "versions": package_versions(("deepfeat", "scikit-learn", "numpy"))}, indent=2))


if __name__ == "__main__":
    main()
