"""Extraction speed on the CPU, measured side by side in one run.

For each backbone, images/s of
  (a) plain loops: PIL decode + transform + model in the main process, fp32, NCHW, batch 1 and batch 32;
  (b) deepfeat's path (``extract_features``: DataLoader workers, channels_last, precision 'auto', no cache);
  (c) deepfeat with channels_last on/off x fp32/bf16 (cosine similarity of the features to the plain loop's);
  (d) a second run served from the cache vs the first (model name -> FeatureSet), in-process and as two
      ``deepfeat extract`` processes (the second one, all cache hits, never imports torch).

Images: ``../shared/data/all_idb2_small`` (real, 103 px JPEG) when present, else synthetic smears; all at the
network's 224 px. Usage::

    python benchmarks/bench_extract.py [--n 64] [--models tf_efficientnet_lite0,darknet19,resnet50]
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepfeat.backbones import create_backbone, resolve_data_config
from deepfeat.data.images import load_image
from deepfeat.extraction.api import extract_features
from deepfeat.extraction.preprocessing import build_transform

SHARED = Path(os.environ.get("DEEPFEAT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def images(n: int, scratch: Path) -> tuple[list[str], str]:
    """``n`` images spread over the real set (all of it for n=0), else synthetic ones."""
    real = SHARED / "data" / "all_idb2_small"
    if real.is_dir():
        from deepfeat.data.sources import open_source

        paths = open_source(real).paths  # extensions in any letter case (the set has .jpg and .Jpg)
        n = n or len(paths)
        if len(paths) >= n:
            step = len(paths) // n
            return paths[::step][:n], f"{n} real images from {real} (~103 px JPEG)"
    from deepfeat.data.synthetic import make_synthetic_smears

    n = n or 64
    src = make_synthetic_smears(scratch / f"syn{n}", n_per_class=-(-n // 4), size=128)
    return src.paths[:n], f"{n} synthetic 128 px smear images ({real} absent)"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def plain_loop(net, paths, transform, batch: int) -> tuple[float, np.ndarray]:
    """What one writes without deepfeat: decode in the main process, fp32, NCHW, no workers."""
    net = copy.deepcopy(net)
    with torch.inference_mode():
        net(transform(load_image(paths[0]))[None])  # warm-up (oneDNN primitive creation)
        t0, out = time.perf_counter(), []
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(load_image(p)) for p in paths[i:i + batch]])
            out.append(net(x).numpy())
    return len(paths) / (time.perf_counter() - t0), np.concatenate(out)


def deepfeat_run(net, paths, **kw) -> tuple[float, np.ndarray, dict]:
    net = copy.deepcopy(net)
    # warm-up; with precision 'auto' it also runs (and remembers) the bf16 check on the first 8 images
    extract_features(paths[:8], model=net, cache=False, progress=False, batch_size=8, num_workers=0,
                     **{k: v for k, v in kw.items() if k in ("precision", "channels_last")})  # warm-up
    t0 = time.perf_counter()
    fs = extract_features(paths, model=net, cache=False, progress=False, **kw)
    return len(paths) / (time.perf_counter() - t0), fs.X, fs.meta


def bench_model(name: str, weights: str, paths: list[str], matrix: bool, workers: list[int]) -> None:
    net = create_backbone(name, weights)
    transform = build_transform(resolve_data_config(net))
    print(f"\n== {name} (weights={weights}), {len(paths)} images, "
          f"input {tuple(resolve_data_config(net)['input_size'])}, torch threads {torch.get_num_threads()}")
    b1, ref1 = plain_loop(net, paths[:8], transform, 1)  # per-image cost: 8 images are enough
    b32, ref = plain_loop(net, paths, transform, 32)
    print(f"  (a) plain loop, batch 1,  fp32 NCHW   : {b1:7.1f} img/s (8 images)")
    print(f"  (a) plain loop, batch 32, fp32 NCHW   : {b32:7.1f} img/s   cos to batch 1 {cosine(ref[:8], ref1):.6f}")
    speed, X, meta = deepfeat_run(net, paths, batch_size=32)
    print(f"  (b) deepfeat, batch 32 ({meta['precision']}, channels_last, auto workers): {speed:7.1f} img/s"
          f"\n      = x{speed / b1:.2f} vs batch-1 loop, x{speed / b32:.2f} vs batch-32 loop,"
          f" cos {cosine(X, ref):.6f}")
    speed, X, meta = deepfeat_run(net, paths, batch_size=None)
    print(f"  (b) deepfeat defaults (batch {meta['batch_size']}, {meta['precision']}, channels_last, "
          f"{meta['num_workers']} workers): {speed:7.1f} img/s"
          f"\n      = x{speed / b1:.2f} vs batch-1 loop, x{speed / b32:.2f} vs batch-32 loop,"
          f" cos {cosine(X, ref):.6f}")
    print(f"      precision choice: {meta['precision_reason']}")
    for w in workers:
        speed, X, _ = deepfeat_run(net, paths, batch_size=32, num_workers=w, precision=meta["precision"])
        print(f"      same with num_workers={w} (decode in the main process): {speed:7.1f} img/s"
              f"   x{speed / b32:.2f} vs batch-32 loop")
    if matrix:
        for cl in (False, True):
            for prec in ("fp32", "bf16"):
                speed, X, _ = deepfeat_run(net, paths, batch_size=32, precision=prec, channels_last=cl)
                print(f"  (c) channels_last={str(cl):5s} {prec}: {speed:7.1f} img/s   x{speed / b32:.2f} vs batch-32"
                      f" loop, cos to fp32 loop {cosine(X, ref):.6f}")


def bench_cache(name: str, weights: str, paths: list[str], scratch: Path) -> None:
    cache = scratch / "cache"
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        fs = extract_features(paths, model=name, weights=weights, cache=cache, progress=False)
        runs.append((time.perf_counter() - t0, fs.meta))
    (t1, m1), (t2, m2) = runs
    print(f"  (d) {name} in-process: first run {t1:.2f} s ({m1['cache_misses']} computed), second run {t2:.2f} s "
          f"({m2['cache_hits']} cache hits) = {100 * t2 / t1:.1f} % of the first")
    # As a user runs it: two 'deepfeat extract' processes on a fresh cache; the second pays no torch import
    # when every row is cached (deepfeat.extraction.api's request notes)
    listing = scratch / "cli_images.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{Path(p).parent.name}\n" for p in paths))
    env = {**os.environ, "DEEPFEAT_CACHE_DIR": str(scratch / "cli_cache")}
    cmd = [sys.executable, "-m", "deepfeat.cli", "extract", str(listing), "-o", str(scratch / "cli.features"),
           "--model", name, "--weights", weights, "--quiet"]
    walls = []
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    print(f"  (d) {name} as two 'deepfeat extract' processes: first {walls[0]:.2f} s, second {walls[1]:.2f} s "
          f"= {100 * walls[1] / walls[0]:.1f} % of the first")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images per measurement")
    parser.add_argument("--cache-n", type=int, default=0, help="images for (d); 0 = the whole real set")
    parser.add_argument("--models", default="tf_efficientnet_lite0:imagenet,darknet19:none,resnet50:none",
                        help="comma-separated name:weights")
    parser.add_argument("--matrix", default="tf_efficientnet_lite0,darknet19",
                        help="models for the channels_last x precision matrix")
    parser.add_argument("--workers", default="0", help="worker counts to compare (first model only)")
    args = parser.parse_args(argv)
    print(f"deepfeat extraction benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} (timings are noisy when "
          "other work shares the CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        paths, what = images(args.n, scratch)
        print(f"images: {what}")
        models = [m.split(":") if ":" in m else (m, "none") for m in args.models.split(",") if m]
        for i, (name, weights) in enumerate(models):
            try:
                bench_model(name, weights, paths, name in args.matrix.split(","),
                            [int(w) for w in args.workers.split(",")] if i == 0 else [])
            except Exception as exc:  # e.g. weights unavailable offline: say so, go on with the others
                print(f"\n== {name}: skipped ({type(exc).__name__}: {exc})")
        name, weights = models[0]
        cache_paths, what = images(args.cache_n, scratch)
        print(f"\n(d) on {what}")
        bench_cache(name, weights, cache_paths, scratch)


if __name__ == "__main__":
    main()
