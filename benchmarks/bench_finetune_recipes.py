"""Fine-tuned vs frozen features, in-fold and on the same folds: does a fine-tuning recipe beat not fine-tuning?

For one labelled image set (default ``../shared/data/all_idb2_small``), on the same stratified K folds (seed 0):

  frozen      the ImageNet network's logits (1000 features, ``deepfeat extract`` defaults) -> standardise -> SVM;
  RECIPE      the network fine-tuned inside each training fold with ``--recipe`` (+ ``--set`` overrides), its
              logits -> standardise -> SVM, and the fold's fine-tuned network itself (end to end).

Rows are printed with accuracy mean +- std over folds, the corrected resampled t-test of fine-tuned SVM vs
frozen SVM (same folds, Nadeau & Bengio), and the CPU time of each arm (process CPU seconds, all threads).
The frozen arm's features come through the feature cache; its CPU time is that of its extraction.

Usage::

    python benchmarks/bench_finetune_recipes.py [SOURCE] [--folds 3] [--recipe transfer]
        [--set epochs=10 --set freeze_stages=6 ...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data" / "all_idb2_small"


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=str(DEFAULT))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--recipe", default="transfer")
    ap.add_argument("--set", action="append", default=[], help="FinetuneConfig option=value (repeatable)")
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--classifiers", default="svm")
    ap.add_argument("--work-dir", default=None, help="keep the fold checkpoints here")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if not Path(args.source).exists():
        print(f"skipped: {args.source} is absent")
        return 0

    import torch

    from deepfeat.data.sources import open_source
    from deepfeat.evaluation.compare import corrected_t_test
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.evaluation.infold import cross_validate_finetuned
    from deepfeat.extraction.api import extract_features
    from deepfeat.finetuning.run import FinetuneConfig

    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = FinetuneConfig.from_dict({"recipe": args.recipe, **{k: _value(v) for k, v in overrides.items()}},
                                   where="--set")
    src = open_source(args.source)
    clfs = tuple(args.classifiers.split(","))
    print(f"{src.name}: {len(src)} images, {len(src.class_names)} classes; {args.folds} folds; torch threads "
          f"{torch.get_num_threads()}; recipe {args.recipe} {overrides or ''}")

    c0, w0 = time.process_time(), time.perf_counter()
    # no feature cache: the frozen arm's extraction is timed, not read back
    frozen_fs = extract_features(src, model=args.model, progress=False, cache=False)
    frozen = cross_validate(frozen_fs, classifiers=clfs, selections=("none",), folds=args.folds, seed=0,
                            baseline="none", progress=False)
    c_frozen, w_frozen = time.process_time() - c0, time.perf_counter() - w0

    c0, w0 = time.process_time(), time.perf_counter()
    tuned = cross_validate_finetuned(src, finetune=cfg, model=args.model, classifiers=clfs, selections=("none",),
                                     folds=args.folds, seed=0, baseline="none", progress=False,
                                     work_dir=args.work_dir)
    c_tuned, w_tuned = time.process_time() - c0, time.perf_counter() - w0

    fa = frozen.predictions.drop_duplicates("row").sort_values("row")["fold"].to_numpy()
    fb = tuned.predictions.drop_duplicates("row").sort_values("row")["fold"].to_numpy()
    if not np.array_equal(fa, fb):
        raise SystemExit("the two arms did not use the same folds")

    def acc(res, cfg_name):
        per = res.per_fold[res.per_fold["config"] == cfg_name].sort_values("fold")["accuracy"].to_numpy()
        return per

    rows = []
    for clf in clfs:
        a, b = acc(frozen, f"{clf}+none"), acc(tuned, f"{clf}+none")
        t = corrected_t_test(b - a, 1 / (args.folds - 1))
        rows.append({"arm": f"frozen {clf}", "acc": a.mean(), "std": a.std(ddof=1), "folds": a.tolist()})
        rows.append({"arm": f"{args.recipe} {clf}", "acc": b.mean(), "std": b.std(ddof=1), "folds": b.tolist(),
                     "diff_vs_frozen": float((b - a).mean()), "p_corrected_t": float(t["p_value"])})
    e = acc(tuned, "network+end-to-end")
    rows.append({"arm": f"{args.recipe} network end to end", "acc": e.mean(), "std": e.std(ddof=1),
                 "folds": e.tolist()})
    print(f"{'arm':34s} {'accuracy %':>16s} {'vs frozen':>10s} {'p':>6s}")
    for r in rows:
        extra = (f" {100 * r['diff_vs_frozen']:+9.2f} {r['p_corrected_t']:6.3f}" if "diff_vs_frozen" in r else "")
        print(f"{r['arm']:34s} {100 * r['acc']:7.2f} ± {100 * r['std']:5.2f}{extra}")
    recs = tuned.config["finetune"]["folds"]
    print("per fold: best epoch", [r["best_epoch"] for r in recs], "val acc",
          [round(r["val_accuracy"], 3) for r in recs])
    print(f"CPU time: frozen arm {c_frozen:.0f} s (wall {w_frozen:.0f} s); {args.recipe} arm {c_tuned:.0f} s "
          f"(wall {w_tuned:.0f} s); ratio {c_tuned / max(c_frozen, 1e-9):.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"source": str(args.source), "folds": args.folds,
                                               "recipe": args.recipe, "overrides": overrides,
                                               "config": cfg.to_dict(), "rows": rows,
                                               "cpu_s": {"frozen": c_frozen, "tuned": c_tuned},
                                               "wall_s": {"frozen": w_frozen, "tuned": w_tuned},
                                               "fold_records": recs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
