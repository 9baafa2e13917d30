"""Extraction speed on the CPU, measured side by side in one run.

For each backbone, images/s of
  (a) plain loops: PIL decode + transform + model in the main process, fp32, NCHW, batch 1 and batch 32;
  (b) deepfeat's path (``extract_features``: DataLoader workers, channels_last, precision 'auto', no cache);
  (c) deepfeat with channels_last on/off x fp32/bf16 (cosine similarity of the features to the plain loop's);
  (d) a second run served from the cache vs the first (model name -> FeatureSet), in-process and as two
      ``deepfeat extract`` processes (the second one, all cache hits, never imports torch);
  (e) ``--part levers``: every fp32 CPU lever side by side on the same preprocessed tensors (eager NCHW / channels_last
      at batch 8 and 32, torch.jit.trace + freeze, torch.compile with ``--compile``, ONNX Runtime, OpenVINO), each
      with its max relative difference to eager timm; where the time goes (JPEG decode, resize + normalise, network);
      and whole runs (``extract_features(model=NAME)``, runtime torch vs auto, tta none vs d4) against the plain
      loop, with the process's peak RSS after each.

Images: ``../shared/data/all_idb2_small`` (real, 103 px JPEG) when present, else synthetic smears; all at the
network's 224 px. Usage::

    python benchmarks/bench_extract.py [--n 64] [--models tf_efficientnet_lite0,darknet19,resnet50]
    python benchmarks/bench_extract.py --part levers [--n 64] [--rounds 2] [--compile]
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


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _levers(net, x, compile_too: bool) -> dict:
    """name -> callable(x) -> (N, d) ndarray: every fp32 way to run ``net`` on preprocessed tensors."""
    from deepfeat.extraction.runtime import CompiledForward

    def eager(model, bs, cl):
        def run(v):
            with torch.inference_mode():
                return torch.cat([model(v[i:i + bs].contiguous(memory_format=torch.channels_last) if cl
                                        else v[i:i + bs]) for i in range(0, len(v), bs)]).numpy()
        return run

    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    out = {"eager NCHW b32 (plain timm)": eager(net, 32, False), "eager NCHW b8": eager(net, 8, False),
           "eager channels_last b8": eager(net_cl, 8, True), "eager channels_last b32": eager(net_cl, 32, True)}
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), x[:8]))
    out["jit.trace + freeze b8"] = eager(traced, 8, False)
    if compile_too:
        out["torch.compile b8"] = eager(torch.compile(copy.deepcopy(net)), 8, False)
    for runtime in ("onnxruntime", "openvino"):
        try:
            compiled = CompiledForward(net, ["logits"], tuple(x.shape[1:]), runtime)
        except ImportError as exc:
            print(f"  {runtime}: not installed ({exc})")
            continue
        for bs in (8, 32):
            out[f"{runtime} b{bs}"] = (lambda c, b: lambda v: np.concatenate(
                [c(v[i:i + b])["logits"].numpy() for i in range(0, len(v), b)]))(compiled, bs)
    return out


def part_levers(args, folder: Path, scratch: Path) -> None:
    """(e): the fp32 CPU levers side by side, where the time goes, and whole runs with their peak RSS."""
    import warnings

    from deepfeat.data.sources import open_source

    warnings.filterwarnings("ignore")
    if folder.is_dir():
        every = open_source(folder).paths
        paths, what = every[:: max(1, len(every) // args.n)][:args.n], f"{args.n} PBC-sample JPEGs (~360 px)"
    else:
        paths, what = images(args.n, scratch)
    name = args.models.split(",")[0].split(":")[0]
    weights = "imagenet" if "lite" in name else "none"
    net = create_backbone(name, weights).eval()
    cfg = resolve_data_config(net)
    transform = build_transform(cfg)  # deepfeat's: timm's PIL steps + a numpy tensor tail, bit-identical
    from timm.data import create_transform

    timm_transform = create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()
                                         if k in ("input_size", "interpolation", "mean", "std", "crop_pct",
                                                  "crop_mode")}, is_training=False)
    print(f"\n(e) {name}, {what}, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    decoded = [load_image(p) for p in paths]
    t1 = time.perf_counter()
    x = torch.stack([transform(img) for img in decoded])
    t2 = time.perf_counter()
    x_timm = torch.stack([timm_transform(img) for img in decoded])
    t3 = time.perf_counter()
    print(f"  deepfeat's preprocessing == timm's create_transform, bit for bit: {torch.equal(x, x_timm)}")
    fns = _levers(net, x, args.compile)
    ref = fns["eager NCHW b32 (plain timm)"](x)
    for f in fns.values():
        f(x[:8])  # warm-up
    times = {k: [] for k in fns}
    for _ in range(args.rounds):  # interleaved: a load spike hits every lever alike
        for k, f in fns.items():
            t = time.perf_counter()
            got = f(x)
            times[k].append(time.perf_counter() - t)
    base = float(np.median(times["eager NCHW b32 (plain timm)"]))
    print(f"  where the time goes per image: JPEG decode {1e3 * (t1 - t0) / len(paths):.1f} ms, resize + normalise "
          f"{1e3 * (t3 - t2) / len(paths):.1f} ms (timm) / {1e3 * (t2 - t1) / len(paths):.1f} ms (deepfeat), "
          f"network (eager b32) {1e3 * base / len(paths):.1f} ms")
    for k, f in fns.items():
        m = float(np.median(times[k]))
        err = float(np.abs(f(x[:16]) - ref[:16]).max() / np.abs(ref[:16]).max())
        print(f"  {k:30s} {len(paths) / m:7.1f} img/s  x{base / m:.2f} vs eager b32   max rel diff {err:.1e}")
    _whole_runs(name, weights, net, paths, timm_transform, args.rounds, args.whole)


WHOLE_RUNS = "torch:none,torch:d4,auto:none,auto:d4"


def _whole_runs(name, weights, net, paths, transform, rounds, whole: str = WHOLE_RUNS) -> None:
    """Images in, features out: the plain loop against extract_features by name, for each ``runtime:tta`` of
    ``whole``."""
    runs, used = {"plain timm loop (decode + b32 eager)": lambda: plain_loop(net, paths, transform, 32)[0]}, {}
    for runtime, tta in (item.split(":") for item in whole.split(",")):
        def run(runtime=runtime, tta=tta, key=f"deepfeat runtime={runtime} tta={tta}"):
            t = time.perf_counter()
            fs = extract_features(paths, model=name, weights=weights, cache=False, progress=False,
                                  precision="fp32", runtime=runtime, tta=tta)
            used[key] = (fs.meta if tta == "none" else fs.meta["blocks"][0])["runtime"]
            return len(paths) / (time.perf_counter() - t)
        runs[f"deepfeat runtime={runtime} tta={tta}"] = run
    speed, rss = {k: [] for k in runs}, {}
    for _ in range(rounds):
        for k, f in runs.items():
            speed[k].append(f())
            rss[k] = _peak_rss_mb()
    plain = float(np.median(speed["plain timm loop (decode + b32 eager)"]))
    for k, f in runs.items():
        s = float(np.median(speed[k]))
        note = f"  [ran on {used[k]}]" if k in used else ""
        print(f"  {k:40s} {s:7.1f} img/s  x{s / plain:.2f} vs plain loop  peak RSS so far {rss[k]:.0f} MB{note}")
    for runtime in ("torch", "auto"):
        keys = [f"deepfeat runtime={runtime} tta={t}" for t in ("none", "d4")]
        if all(k in speed for k in keys):
            one, d4 = (float(np.median(speed[k])) for k in keys)
            print(f"  D4 / one-view cost, runtime={runtime}: {one / d4:.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images per measurement")
    parser.add_argument("--cache-n", type=int, default=0, help="images for (d); 0 = the whole real set")
    parser.add_argument("--models", default="tf_efficientnet_lite0:imagenet,darknet19:none,resnet50:none",
                        help="comma-separated name:weights")
    parser.add_argument("--matrix", default="tf_efficientnet_lite0,darknet19",
                        help="models for the channels_last x precision matrix")
    parser.add_argument("--workers", default="0", help="worker counts to compare (first model only)")
    parser.add_argument("--part", choices=("all", "levers"), default="all")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (e); the median is reported")
    parser.add_argument("--whole", default=WHOLE_RUNS,
                        help="whole runs of (e) as runtime:tta pairs, e.g. 'auto:none' for the >= 2x check alone")
    parser.add_argument("--compile", action="store_true", help="include torch.compile in (e) (minutes to compile)")
    args = parser.parse_args(argv)
    print(f"deepfeat extraction benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} (timings are noisy when "
          "other work shares the CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if args.part == "levers":
            part_levers(args, SHARED / "data" / "pbc_sample", scratch)
            return
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
