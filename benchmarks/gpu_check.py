"""One prepared check of deepfeat's CUDA paths, with throughput against the plain timm loop on the same device.

On a CUDA machine it verifies, for real (each line says PASS or FAIL and why):
  1. extraction through deepfeat's engine on ``cuda``: precision 'auto' (bf16 / fp16 autocast, kept only when the
     check against fp32 passes), channels_last, pinned-memory DataLoader batches; features compared with an fp32
     eager timm loop on the same GPU (cosine), and img/s of both side by side (ResNet50 and EfficientNet-Lite0);
  2. fine-tuning: training img/s of deepfeat's loop (``finetuning.training.Stepper``: autocast, channels_last,
     pinned batches) against a plain fp32 timm training loop on the same GPU, and one short real
     :func:`deepfeat.finetuning.run.finetune` run on ``device='cuda'`` (checkpoint written and reloadable);
  3. a GPU Dask worker: a LocalCluster worker started with ``resources={"GPU": 1}`` runs the extraction shard map
     (``scheduler=client, resources="GPU=1", device="cuda"``) and gives the same features as the local run.

Without CUDA it says so and runs the same checks on the CPU at a toy scale (random tiny network, a few synthetic
images; the Dask worker check only with ``--dask``), so the script itself is tested (tests/test_gpu_check.py) on
machines without a GPU. Its CPU figures are not benchmarks.

Usage::

    python benchmarks/gpu_check.py [--n 256] [--batch 64] [--dask] [--images DIR]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(os.environ.get("DEEPFEAT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
#: (model, weights) at full scale on CUDA; the CPU fallback uses timm's tiny test network at 64 px
CUDA_MODELS = (("resnet50", "none"), ("tf_efficientnet_lite0", "imagenet"))
CPU_MODELS = (("test_efficientnet", "none"),)


def _images(n: int, scratch: Path, image_dir: str | None) -> list[str]:
    from deepfeat.data.sources import open_source

    folder = Path(image_dir) if image_dir else SHARED / "data" / "pbc_sample"
    if folder.is_dir():
        paths = open_source(folder).paths
        if paths:
            return [paths[i % len(paths)] for i in range(n)]
    from deepfeat.data.synthetic import make_synthetic_smears

    return make_synthetic_smears(scratch / "syn", n_per_class=-(-n // 4), size=96, seed=0).paths[:n]


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min((a * b).sum(1) / np.where(den > 0, den, 1)))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_extract(net, paths, transform, device, batch) -> tuple[float, np.ndarray]:
    """The plain timm loop: decode in the main process, fp32, NCHW, one ``model(x)`` per batch (warm-up excluded)."""
    from deepfeat.data.images import load_image

    net = copy.deepcopy(net).to(device).eval()
    with torch.inference_mode():
        net(torch.stack([transform(load_image(paths[0]))]).to(device))
        _sync(device)
        t0, out = time.perf_counter(), []
        for i in range(0, len(paths), batch):
            out.append(net(torch.stack([transform(load_image(p)) for p in paths[i:i + batch]]).to(device)).cpu())
        _sync(device)
    return len(paths) / (time.perf_counter() - t0), torch.cat(out).numpy()


def check_extraction(name, weights, paths, device, batch, image_size, report) -> None:
    from deepfeat.backbones import create_backbone, resolve_data_config
    from deepfeat.extraction.api import extract_features
    from deepfeat.extraction.engine import Engine
    from deepfeat.extraction.preprocessing import build_transform

    net = create_backbone(name, weights)
    cfg = dict(resolve_data_config(net))
    if image_size:
        cfg["input_size"] = (3, image_size, image_size)
    plain, ref = plain_extract(net, paths, build_transform(cfg), device, batch)
    kw = dict(model=copy.deepcopy(net), device=str(device), cache=False, progress=False, batch_size=batch,
              image_size=image_size)
    extract_features(paths[:batch], **kw)  # warm-up: the precision check, kernel selection
    t0 = time.perf_counter()
    fs = extract_features(paths, **kw)
    _sync(device)
    speed = len(paths) / (time.perf_counter() - t0)
    meta = fs.meta
    cos = _cosine(fs.X, ref)
    report(f"extraction {name}: device {meta['device']}, precision {meta['precision']}, channels_last "
           f"{meta['channels_last']}", meta["device"].startswith(device.type) and meta["channels_last"],
           meta["precision_reason"])
    report(f"extraction {name}: features match the fp32 plain loop (min cosine {cos:.5f})", cos >= 0.99,
           "bf16/fp16 autocast keeps cosine >= 0.99; fp32 keeps ~1.0")
    engine = Engine(model=copy.deepcopy(net), weights=weights, layers=["logits"], device=str(device),
                    precision="fp32", channels_last="auto", crop_border=False, image_size=image_size,
                    batch_size=batch, num_workers=0, cache=False, progress=False)
    x, _, _ = next(iter(engine._loader(paths[:batch])))
    pinned = x.is_pinned() if device.type == "cuda" else True
    report(f"extraction {name}: DataLoader batches pinned on {device.type}", pinned,
           "pin_memory is only asked for on CUDA" if device.type != "cuda" else "")
    print(f"  {name:24s} extraction: plain timm fp32 loop {plain:8.1f} img/s | deepfeat {speed:8.1f} img/s "
          f"= x{speed / plain:.2f}  (batch {batch}, {meta['precision']}, {len(paths)} images)")


def _train_speed(model, paths, transform, device, batch, *, amp_dtype, channels_last, workers) -> float:
    from deepfeat.finetuning import training as T

    model = copy.deepcopy(model).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    stepper = T.Stepper(model, device=device, amp_dtype=amp_dtype, channels_last=channels_last, grad_clip=1.0,
                        optimizer=opt, criterion=torch.nn.CrossEntropyLoss())
    ds = T.EpochDataset(paths, np.arange(len(paths)) % 2, transform)
    loader = T.make_loader(ds, list(range(len(paths))), batch_size=batch, workers=workers, device=device)
    seen, t0 = 0, None
    for x, y in T._batches(loader):
        stepper.train_step(x, y)
        if t0 is None:  # the first batch is warm-up
            _sync(device)
            t0 = time.perf_counter()
        else:
            seen += len(y)
    _sync(device)
    return seen / max(time.perf_counter() - t0, 1e-9)


def _plain_train_speed(model, paths, transform, device, batch) -> float:
    from deepfeat.data.images import load_image

    model = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y_all = torch.arange(len(paths)) % 2
    seen, t0 = 0, None
    for i in range(0, len(paths), batch):
        x = torch.stack([transform(load_image(p)) for p in paths[i:i + batch]]).to(device)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y_all[i:i + batch].to(device)).backward()
        opt.step()
        if t0 is None:
            _sync(device)
            t0 = time.perf_counter()
        else:
            seen += len(x)
    _sync(device)
    return seen / max(time.perf_counter() - t0, 1e-9)


def check_finetune(name, weights, paths, device, batch, image_size, scratch, report) -> None:
    from deepfeat.backbones import create_backbone, resolve_data_config
    from deepfeat.extraction.device import autocast_dtype, resolve_precision
    from deepfeat.extraction.preprocessing import build_transform
    from deepfeat.finetuning.checkpoints import load_finetuned
    from deepfeat.finetuning.run import FinetuneConfig, finetune

    net = create_backbone(name, weights)
    cfg = dict(resolve_data_config(net))
    if image_size:
        cfg["input_size"] = (3, image_size, image_size)
    transform = build_transform(cfg)
    precision = resolve_precision("auto", device, training=True)[0]
    workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    plain = _plain_train_speed(net, paths, transform, device, batch)
    ours = _train_speed(net, paths, transform, device, batch, amp_dtype=autocast_dtype(precision),
                        channels_last=True, workers=workers)
    print(f"  {name:24s} fine-tuning: plain timm fp32 loop {plain:8.1f} img/s | deepfeat ({precision}, channels_last, "
          f"{workers} workers) {ours:8.1f} img/s = x{ours / plain:.2f}")
    from deepfeat.data.sources import ImageSource

    labels = [f"c{i % 2}" for i in range(len(paths))]
    src = ImageSource(paths=list(paths), labels=labels)
    out = scratch / f"{name}-ft.pt"
    res = finetune(src, model=name, weights=weights, out=out, progress=False,
                   config=FinetuneConfig(epochs=1, batch_size=min(batch, 16), device=str(device), workers=workers,
                                         image_size=image_size, val_fraction=0.25, seed=0, linear_probe=False))
    model, names = load_finetuned(res.checkpoint)
    report(f"fine-tune loop {name} on {device.type}: one epoch, checkpoint written and reloaded", out.is_file()
           and len(names) == 2, f"{res.n_train} train / {res.n_val} val images, {res.seconds:.1f} s")


def check_dask(name, weights, paths, device, batch, image_size, report) -> None:
    try:
        import distributed
    except ImportError:
        report("Dask GPU worker", False, 'distributed is not installed: pip install "deepfeat[dask]"')
        return
    from deepfeat.extraction.api import extract_features

    kw = dict(model=name, weights=weights, device=str(device), precision="fp32", cache=False, progress=False,
              batch_size=batch, image_size=image_size)
    local = extract_features(paths, **kw)
    with tempfile.TemporaryDirectory(prefix="gpu-check-dask-") as tmp, \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, resources={"GPU": 1},
                                     dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        remote = extract_features(paths, **{**kw, "cache": tmp}, scheduler=client, resources="GPU=1")
        diff = float(np.abs(np.asarray(remote.X) - local.X).max())
        report(f"Dask worker with resources GPU=1 ran the shard map on {remote.meta['device']}",
               remote.meta["device"].startswith(device.type) and diff <= 1e-4 * float(np.abs(local.X).max()),
               f"max |dask - local| = {diff:.3g}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="images per measurement on CUDA (CPU fallback: 8)")
    ap.add_argument("--batch", type=int, default=64, help="batch size on CUDA (CPU fallback: 4)")
    ap.add_argument("--images", default=None, help="image folder (default: ../shared/data/pbc_sample, else synthetic)")
    ap.add_argument("--dask", action="store_true", help="run the Dask worker check in the CPU fallback too")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    failures = []

    def report(what, ok, why=""):
        print(f"  [{'PASS' if ok else 'FAIL'}] {what}" + (f" ({why})" if why else ""))
        if not ok:
            failures.append(what)

    if cuda:
        device, models, n, batch, size = torch.device("cuda", 0), CUDA_MODELS, args.n, args.batch, None
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
              f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        device, models, n, batch, size = torch.device("cpu"), CPU_MODELS, min(args.n, 8), min(args.batch, 4), 64
        print(f"CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}): running the "
              "CPU fallback, the same checks at toy scale (a tiny random network, 64 px); its figures are NOT GPU "
              "benchmarks")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        paths = _images(n, scratch, args.images)
        print(f"{len(paths)} images, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for name, weights in models:
            check_extraction(name, weights, paths, device, batch, size, report)
            check_finetune(name, weights, paths, device, batch, size, scratch, report)
        if cuda or args.dask:
            check_dask(*models[-1], paths, device, batch, size, report)
        else:
            print("  [SKIP] Dask GPU worker (CUDA only; --dask runs it on the CPU)")
    print(f"{'all checks passed' if not failures else f'{len(failures)} check(s) FAILED: ' + '; '.join(failures)}"
          f" ({'cuda' if cuda else 'CPU fallback'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
