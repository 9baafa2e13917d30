"""Real-data figures for nested CV: deep and fused feature sets vs the colour-histogram baseline on the same folds.

For each FeatureSet file given (pre-extracted logits; image paths must be reachable from the working directory),
builds the grid {deep, deep + colour histogram (hstacked by hand, same rows)} plus any extra FeatureSet files given
with ``--extra`` (rows aligned by sha256; also fused with the first and the colour histogram), runs the ordinary
table and nested CV on the same 10 outer folds, and prints: the nested estimate and interval, the colour-histogram
baseline on the same folds with the corrected-t p-value, the best row of the table and the gap, the nested wall time.

Run from the folder the paths are relative to:
``python benchmarks/real_nested.py /work/feats/pbc_sample_lite0_logits.features [--extra lite1.features] -o DIR``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def fuse(*sets):
    """hstack of FeatureSets whose rows are already aligned (same sha256 order)."""
    from deepfeat.features import FeatureSet

    first = sets[0]
    for s in sets[1:]:
        assert list(s.sha256) == list(first.sha256)
    return FeatureSet(np.hstack([s.X for s in sets]).astype(np.float32), first.y, paths=first.paths,
                      sha256=first.sha256, groups=first.groups, meta={"fused": len(sets)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("features")
    ap.add_argument("--extra", nargs="*", default=[])
    ap.add_argument("--classifiers", nargs="+", default=["svm", "knn", "nb"])
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--inner-folds", type=int, default=5)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="keep only these feature sets of the grid")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()

    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.evaluation.grid import as_feature_sets
    from deepfeat.evaluation.honesty import colour_histograms
    from deepfeat.reporting.stats import comparison_lines, nested_lines
    from deepfeat.features import FeatureSet, load_features

    deep = load_features(args.features)
    colour = FeatureSet(colour_histograms(deep.paths), deep.y, paths=deep.paths, sha256=deep.sha256)
    sets = {"lite0": deep, "lite0+colour": fuse(deep, colour)}
    for path in args.extra:
        name = path.rsplit("/", 1)[-1].split("_")[-2] if "_" in path else path
        other = as_feature_sets({"a": deep, "b": load_features(path)})["b"]
        sets[name] = other
        sets[f"lite0+{name}+colour"] = fuse(deep, other, colour)
    if args.only:
        sets = {k: v for k, v in sets.items() if k in args.only}
    print({k: v.n_features for k, v in sets.items()}, len(deep), "images; classifiers", args.classifiers,
          f"; {args.folds} outer x {args.inner_folds} inner folds")
    t0 = time.perf_counter()
    res = cross_validate(sets, classifiers=args.classifiers, folds=args.folds, nested=True,
                         inner_folds=args.inner_folds, n_jobs=args.n_jobs, progress=False)
    wall = time.perf_counter() - t0
    print(res.table().to_string())
    for line in nested_lines(res) + comparison_lines(res):
        print("-", line)
    print(f"wall time: table + nested {wall:.0f} s (nested part {res.nested['wall_time_s']:.0f} s), "
          f"{len(res.nested['candidates'])} candidates")
    if args.output:
        from deepfeat.reporting.report import write_report

        write_report(res, args.output)


if __name__ == "__main__":
    main()
