"""In-fold fine-tuned CV, measured: CPU seconds, wall, peak RSS; fold features from the cached trunk vs a full pass;
the same run on Dask equal to the local one.

Runs ``cross_validate_finetuned`` exactly as ``deepfeat cv DATA --finetune FT.toml`` does (the experiment's
``[finetune]``, ``[features]`` and ``[cv]`` tables; default ``benchmarks/bench_finetune_infold.toml``: Lite0,
transfer recipe shortened to 4 epochs, 3 folds) on ``../shared/data/all_idb2_small`` and prints:

- CPU seconds of this process and its reaped children (DataLoader workers, Dask worker processes), wall seconds
  and peak RSS (this process; children);
- with a release that has it (``deepfeat.finetuning.trunk_features``), fold 0's features computed both ways side
  by side: a full forward pass (``extract_features``, no feature cache) and the fine-tuned suffix on the cached
  frozen-stage activations; the ratio and their largest difference;
- ``--save run.json`` writes the out-of-fold predictions and per-fold scores; ``--compare run.json`` says whether
  this run's are identical (a Dask run against a local one at the same torch thread count).

Before / after on one machine: run it with ``PYTHONPATH`` at each checkout, the same TOML and ``--threads``::

    PYTHONPATH=/path/to/old python benchmarks/bench_finetune_infold.py --threads 2
    PYTHONPATH=. python benchmarks/bench_finetune_infold.py --threads 2
    PYTHONPATH=. python benchmarks/bench_finetune_infold.py --threads 1 --save local1.json
    PYTHONPATH=. python benchmarks/bench_finetune_infold.py --scheduler local:2 --compare local1.json

(Dask worker tasks run torch with 1 thread, ``$DEEPFEAT_WORKER_TORCH_THREADS`` to change it: compare against a
local run with that many threads.)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DEEPFEAT_SHARED", HERE.parents[1] / "shared"))


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _rss_mib() -> tuple[float, float]:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _outcome(res) -> dict:
    pred = res.predictions.sort_values(["config", "row"])
    per = res.per_fold.sort_values(["config", "fold"])
    return {"pred": {c: part["pred"].astype(str).tolist() for c, part in pred.groupby("config")},
            "accuracy": {c: part["accuracy"].tolist() for c, part in per.groupby("config")}}


def _feature_paths(src, ckpt: Path, args) -> None:
    """One fold's features both ways, side by side: a full forward pass (``extract_features``, no feature cache, as
    0.2's in-fold CV ran it) vs the fine-tuned suffix on the frozen stages' activations, first with an empty
    activation cache (the frozen stages run too), then with it filled (as in-fold CV finds it after training)."""
    try:
        from deepfeat.finetuning.trunk_features import features_from_trunk
    except ImportError:
        print("fold features: this release has no cached-trunk path (full forward pass only)")
        return
    from deepfeat.data.images import sha256_file
    from deepfeat.extraction.api import extract_features
    from deepfeat.finetuning.trunk import clear_trunk_cache

    sha = [sha256_file(p) for p in src.paths]

    def timed(fn):
        c0, w0 = _cpu(), time.perf_counter()
        out = fn()
        return out, _cpu() - c0, time.perf_counter() - w0

    fig = {}
    for _ in range(args.rounds):
        for precision in ("auto", "fp32"):
            full, *fig[f"full pass ({precision})"] = timed(lambda: extract_features(
                src, model=args.model, weights=str(ckpt), layer=args.layer, cache=False, progress=False,
                precision=precision, batch_size=32).X)
            if precision == "fp32":
                full32 = full
        clear_trunk_cache()
        fast, *fig["suffix, activations not cached"] = timed(
            lambda: features_from_trunk(ckpt, src.paths, sha, layer=args.layer))
        fast, *fig["suffix on the cached activations"] = timed(
            lambda: features_from_trunk(ckpt, src.paths, sha, layer=args.layer))
    if fast is None:
        print("fold features: the fold's run did not cache its trunk; nothing to compare")
        return
    base = fig["full pass (auto)"]
    print(f"fold features of {len(src)} images ({args.layer}, {ckpt.name}); load {os.getloadavg()[0]:.2f}")
    for name, (cpu, wall) in fig.items():
        print(f"  {name:34s} {cpu:7.1f} CPU-s {wall:7.1f} s wall   full(auto)/this: CPU {base[0] / cpu:5.1f}x")
    diff = np.abs(fast - full32).max()
    print(f"  suffix vs full pass (fp32): max |diff| {diff:.2e} ({diff / np.abs(full32).max():.1e} of max |x|)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=str(SHARED / "data" / "all_idb2_small"))
    ap.add_argument("--experiment", default=str(HERE / "bench_finetune_infold.toml"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    ap.add_argument("--scheduler", default=None, help="local:N or tcp://... (a release that supports it)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the fold-feature comparison")
    ap.add_argument("--save", default=None)
    ap.add_argument("--compare", default=None)
    ap.add_argument("--fold-checkpoint", default=None,
                    help="only compare the two feature paths on this fold checkpoint (e.g. fold00.pt of a run)")
    args = ap.parse_args(argv)
    if not Path(args.source).is_dir():
        print(f"{args.source} is absent; nothing to measure")
        return 0
    import torch

    import deepfeat
    from deepfeat.data.sources import open_source
    from deepfeat.evaluation.infold import cross_validate_finetuned
    from deepfeat.experiments import Experiment

    if args.threads:
        torch.set_num_threads(args.threads)
    exp = Experiment.from_toml(args.experiment)
    cfg = exp.finetune_config()
    args.model = exp.features.get("model", "tf_efficientnet_lite0")
    args.layer = exp.features.get("layer", "logits")
    cv = dict(exp.cv)
    if args.scheduler:
        cv["scheduler"] = args.scheduler
    src = open_source(args.source)
    if args.fold_checkpoint:
        _feature_paths(src, Path(args.fold_checkpoint), args)
        return 0
    print(f"deepfeat {deepfeat.__file__}; {src.name}: {len(src)} images; {exp.name}: {cfg.epochs} epochs, "
          f"{cv.get('folds')} folds; torch threads {torch.get_num_threads()}; scheduler {args.scheduler}; "
          f"load {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="bench-infold-"))
    c0, w0 = _cpu(), time.perf_counter()
    res = cross_validate_finetuned(src, finetune=cfg, model=args.model, weights=exp.features.get("weights", "imagenet"),
                                   layer=args.layer, work_dir=work, progress=False, **cv)
    cpu, wall = _cpu() - c0, time.perf_counter() - w0
    rss, rss_children = _rss_mib()
    print(res.table().to_string())
    print(f"in-fold CV: {cpu:.0f} CPU-s (this process + reaped children), {wall:.0f} s wall; peak RSS "
          f"{rss:.0f} MiB (children {rss_children:.0f} MiB); load {os.getloadavg()[0]:.2f}")
    out = _outcome(res)
    if args.save:
        Path(args.save).write_text(json.dumps(out))
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())
        same = ref == out
        print(f"identical to {args.compare}: {same}")
        if not same:
            for c in ref["accuracy"]:
                print(f"  {c}: {ref['accuracy'][c]} vs {out['accuracy'].get(c)}")
    if not args.scheduler:
        _feature_paths(src, work / "fold00.pt", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
