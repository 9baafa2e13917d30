"""Fine-tune a backbone on labelled cell images and save a checkpoint that loads wherever weights are accepted.

Defaults reproduce the reference study's MATLAB ``trainingOptions``: ``sgdm`` (momentum 0.9), initial learning
rate 0.01, 30 epochs, mini-batch 128, L2 regularization 1e-4, piecewise schedule with drop factor 0.1 every
10 epochs (MATLAB's default ``LearnRateDropPeriod``; the study gives no period), gradient clipping by L2 norm
(here the global norm of all gradients, threshold 1.0), and a 70 % / 30 % train / validation split. Known
differences from MATLAB: the L2 penalty (torch ``weight_decay``) applies to every parameter, biases included
(MATLAB's ``BiasL2Factor`` is 0); samples are reshuffled every epoch (MATLAB ``Shuffle="every-epoch"``); the
cell augmentation is on by default (``augment="none"`` turns it off; the study does not describe its own).

The split is stratified by class and grouped: images of one subject (``source.groups``) and byte-identical
images (same sha256) always land on the same side, so no subject or duplicate sits in both halves. The
checkpoint kept as ``out`` is the one with the lowest validation loss (MATLAB's
``OutputNetwork="best-validation-loss"``; ``monitor="val_accuracy"`` picks by accuracy); ``NAME.last.pt``
beside it is the latest epoch, with the optimizer, schedule and RNG state needed to resume.

Checkpoint format (``torch.load(path, weights_only=True)`` reads it): a dict with ``deepfeat_checkpoint`` (1),
``model`` (timm name; ``arch`` in 0.1 files, still read), ``head`` ("keep1000" | "replace"), ``num_classes``, ``class_names``, ``state_dict`` (the
backbone network: for keep1000 the full 1000-output network, for replace the network with an n-class
classifier), ``head_state_dict`` (keep1000: the ``Linear(1000, n)`` on top; else None), ``config`` (this run's
:class:`FinetuneConfig`), ``train_sha256`` / ``val_sha256`` (sha256 of every training / validation image, in
split order), ``versions``, ``curves`` (one dict per epoch), ``metrics`` (the end-to-end network's validation
accuracy, macro F1, per-class F1 and confusion matrix), ``epoch`` (epochs completed when it was written),
``best`` (epoch and validation figures of the best epoch so far), ``init_weights`` (where training started:
backbone, weights, their sha256), ``data_config``, ``split`` and ``source``; the ``last`` file adds
``optimizer_state``, ``scheduler_state`` and ``rng_state``.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import time
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.finetuning.checkpoints import (
    atomic_save,
    check_resumable,
    check_same_data,
    cpu_state,
    load_finetuned,
    load_into,
    plain,
    read_checkpoint,
    sibling,
    versions,
    write_curves,
)
from deepfeat.finetuning.splits import split_train_val

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "load_finetuned", "read_checkpoint", "split_train_val"]

EXPERIMENT_KEYS = ("enabled", "in_fold")  # keys of an experiment's [finetune] table that are not training options
_CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("step", "cosine", "constant"),
    "balance": ("none", "oversample", "class-weight"),
    "head": ("keep1000", "replace"),
    "precision": defaults.PRECISIONS,
    "monitor": ("val_loss", "val_accuracy"),
    "objective": ("crossentropy", "siamese", "triplet", "prototypical"),
}


@dataclass
class FinetuneConfig:
    """Every option of a fine-tuning run. Defaults = the reference study's MATLAB settings (see module doc).

    Parameters
    ----------
    epochs, batch_size, lr : training length, mini-batch size, initial learning rate.
    optimizer : "sgd" (with ``momentum``; MATLAB sgdm) or "adamw".
    momentum, weight_decay : SGD momentum; L2 penalty (torch ``weight_decay``, applied to every parameter).
    schedule : "step" (multiply by ``lr_drop_factor`` every ``lr_drop_every`` epochs), "cosine" or "constant".
    grad_clip : clip the global L2 norm of all gradients to this value; None disables.
    val_fraction : share of the images (by class, by group) held out for validation; 0 = no validation.
    val_source : a separate validation image source instead of a split (must share no image with training).
    augment : "cells" (flips, 90-degree rotations, small colour jitter), "none", or a comma list of
        flip / rot90 / color.
    balance : "none", "oversample" (class-balanced sampling with replacement) or "class-weight" (weighted loss).
    freeze_backbone_epochs : train only the head for this many first epochs.
    head : "keep1000" (keep the 1000-d output as features, train a new linear layer on top) or "replace"
        (timm ``reset_classifier(n_classes)``).
    device : "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    workers : DataLoader worker processes for decoding; None = one less than the CPU count, at most 8.
    seed : seeds the split, the sample order, augmentation and initialization of the new head.
    precision : autocast dtype: "auto" (bf16/fp16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16". On a CPU with
        native bf16 (AVX512-BF16), "bf16" trained 1.5-1.9x faster in ``benchmarks/bench_finetune.py``; it stays
        opt-in there because it changes the numerics of training.
    channels_last : "auto" (on: CUDA and CPU, where it measured 1.2-1.5x faster for darknet19 and
        tf_efficientnet_lite0), True or False.
    image_size : network input size; None = the model's data config.
    crop_border : crop dark image borders (C-NMC style) before resizing, as extraction does.
    monitor : which validation figure picks the best checkpoint: "val_loss" (default) or "val_accuracy".
    objective : "crossentropy" (default), or a metric-learning objective on the pooled embedding: "siamese",
        "triplet" or "prototypical" (see :mod:`deepfeat.finetuning.objectives`).
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    lr_drop_factor: float = 0.1
    lr_drop_every: int = 10
    grad_clip: float | None = 1.0
    val_fraction: float = 0.3
    val_source: str | None = None
    augment: str = "cells"
    balance: str = "none"
    freeze_backbone_epochs: int = 0
    head: str = "keep1000"
    device: str = "auto"
    workers: int | None = None
    seed: int = 0
    precision: str = "auto"
    channels_last: bool | str = "auto"
    image_size: int | None = None
    crop_border: bool = False
    monitor: str = "val_loss"
    objective: str = "crossentropy"

    def __post_init__(self):
        self.validate()

    def validate(self) -> "FinetuneConfig":
        from deepfeat.finetuning.training import parse_augment

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise DeepfeatError(
                    f"The '{name}' option of FinetuneConfig must be one of {', '.join(allowed)}. "
                    f"Got {getattr(self, name)!r} instead."
                )
        for name in ("epochs", "batch_size", "lr_drop_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise DeepfeatError(f"The '{name}' option of FinetuneConfig must be an int >= 1. "
                                    f"Got {getattr(self, name)!r} instead.")
        for name in ("lr", "lr_drop_factor"):
            if not getattr(self, name) > 0:
                raise DeepfeatError(f"The '{name}' option of FinetuneConfig must be > 0. Got {getattr(self, name)!r}.")
        if not 0 <= self.val_fraction < 1:
            raise DeepfeatError(f"The 'val_fraction' option must be in [0, 1). Got {self.val_fraction!r} instead.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise DeepfeatError(f"The 'grad_clip' option must be > 0 or None. Got {self.grad_clip!r} instead.")
        if self.freeze_backbone_epochs < 0 or self.freeze_backbone_epochs > self.epochs:
            raise DeepfeatError("The 'freeze_backbone_epochs' option must be in [0, epochs]. "
                                f"Got {self.freeze_backbone_epochs!r} with epochs={self.epochs}.")
        if self.channels_last not in ("auto", True, False):
            raise DeepfeatError(f"The 'channels_last' option must be 'auto', true or false. Got {self.channels_last!r}.")
        if self.workers is not None and self.workers < 0:
            raise DeepfeatError(f"The 'workers' option must be >= 0 or None. Got {self.workers!r} instead.")
        parse_augment(self.augment)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, *, where: str = "FinetuneConfig") -> "FinetuneConfig":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = {k: difflib.get_close_matches(k.replace("-", "_"), names, n=1) for k in unknown}
            said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
            raise DeepfeatError(f"{where}: unknown fine-tuning option(s) {said}; valid: {', '.join(names)}")
        return cls(**values)

    @classmethod
    def from_table(cls, table: dict, *, where: str, overrides: dict | None = None) -> "FinetuneConfig":
        """The options of an experiment file's ``[finetune]`` table (the one place that reads it), then
        ``overrides`` (e.g. command-line options). The experiment keys ``enabled`` and ``in_fold`` say whether and
        where to fine-tune; they are not training options and are skipped here."""
        values = {k: v for k, v in dict(table).items() if k not in EXPERIMENT_KEYS}
        return cls.from_dict({**values, **(overrides or {})}, where=where)

    @classmethod
    def from_toml(cls, path, *, table: str = "finetune") -> "FinetuneConfig":
        """Read the ``[finetune]`` table of a TOML file (or the whole file when it has no such table).

        The experiment keys ``enabled`` and ``in_fold`` of ``pipelines/*.toml`` are not training options and
        are skipped.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DeepfeatError(f"cannot read fine-tuning config {path}: {exc}") from exc
        return cls.from_table(data.get(table, data) if table else data, where=str(path))


@dataclass
class FinetuneResult:
    """What :func:`finetune` made: checkpoint paths, per-epoch curves and the end-to-end validation metrics."""

    checkpoint: Path
    last_checkpoint: Path
    curves: "object"  # pandas.DataFrame, one row per epoch
    metrics: dict
    best_epoch: int
    n_train: int
    n_val: int
    class_names: list
    seconds: float
    files: dict = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        lines = [f"fine-tuned on {self.n_train} images, validated on {self.n_val}; best epoch {self.best_epoch} "
                 f"({self.seconds:.0f} s)", f"checkpoint: {self.checkpoint} (latest epoch, resumable: "
                 f"{self.last_checkpoint})"]
        if self.files.get("curves_csv"):
            lines.append(f"curves: {self.files['curves_csv']}, {self.files['curves_png']}")
        if m.get("accuracy") is not None:
            lines.append(f"end-to-end network on its validation split: accuracy {m['accuracy']:.4f}, "
                         f"macro F1 {m['f1_macro']:.4f}")
            lines.append("confusion (rows = true, columns = predicted; " + ", ".join(self.class_names) + "):")
            lines += ["  " + " ".join(f"{v:5d}" for v in row) for row in m["confusion"]]
        return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------------------------
def _labelled(spec, what: str):
    from deepfeat.data.sources import open_source

    src = open_source(spec)
    if src.labels is None:
        raise DeepfeatError(f"{what} {getattr(src, 'root', None) or src.name} has no labels: fine-tuning needs a "
                            "folder of class sub-folders or a CSV with a 'label' column")
    return src


def _improved(best: dict | None, val, monitor: str) -> bool:
    if val is None or best is None:
        return True  # without validation the latest epoch is the output
    if monitor == "val_accuracy":
        return (val.accuracy, -val.loss) > (best["val_accuracy"], -best["val_loss"])
    return val.loss < best["val_loss"]


def finetune(source, *, model: str = defaults.MODEL, weights="imagenet", out, config: FinetuneConfig | None = None,
             resume=None, progress: bool = True, on_epoch_end=None, **options) -> FinetuneResult:
    """Fine-tune the network ``model`` on the labelled images of ``source`` and write the best checkpoint to ``out``.

    Parameters
    ----------
    source : str, Path or ImageSource
        Folder of class sub-folders, CSV (``path``, ``label``, optional ``group``) or an ImageSource.
    model : str, default "tf_efficientnet_lite0"
        timm model name (``darknet19``, ``tf_efficientnet_lite0``, ...).
    weights : str or Path
        Starting weights: "imagenet", a file, or "none" (random).
    out : str or Path
        The best-on-validation checkpoint. ``NAME.last.pt``, ``NAME.curves.csv`` and ``NAME.curves.png`` go
        beside it.
    config : FinetuneConfig, optional
        All training options; keyword ``options`` (e.g. ``epochs=5``) override single fields.
    resume : str or Path, optional
        The ``.last`` checkpoint of an interrupted run with the same options and data: training continues at its
        next epoch with its weights, optimizer and schedule state, and on the CPU ends bit-identical to the
        uninterrupted run (see :mod:`deepfeat.finetuning.training` for why).
    progress : bool
        Progress bar per epoch with loss, accuracy and images/s.
    on_epoch_end : callable, optional
        ``on_epoch_end(epochs_done, row, model)`` after each epoch's checkpoints and curves are written (``row``:
        that epoch's curves; ``model``: the end-to-end network, in training mode: leave it so).

    Returns
    -------
    FinetuneResult

    Examples
    --------
    One short epoch of a tiny network on generated cells (a real run: ``model="tf_efficientnet_lite0"``,
    ``epochs=15``):

    >>> import tempfile, pathlib
    >>> from deepfeat.data.synthetic import make_synthetic_smears
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> cells = make_synthetic_smears(tmp / "cells", n_per_class=8, size=48, seed=0)
    >>> res = finetune(cells, model="test_efficientnet", weights="none", out=tmp / "tiny.pt", epochs=1,
    ...                batch_size=8, image_size=48, workers=0, progress=False)
    >>> res.best_epoch, res.checkpoint.name
    (1, 'tiny.pt')
    """
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from deepfeat.extraction.device import (
        autocast_dtype,
        resolve_device,
        resolve_precision,
    )
    from deepfeat.extraction.preprocessing import build_transform
    from deepfeat.finetuning import training as T

    t_start = time.perf_counter()
    config = config if config is not None else FinetuneConfig()
    if options:
        config = FinetuneConfig.from_dict({**config.to_dict(), **options}, where="finetune()")
    config.validate()
    out, cfg = Path(out), config
    src = _labelled(source, "source")
    class_names = src.class_names
    if len(class_names) < 2:
        raise DeepfeatError(f"source {src.name} has one class ({class_names}); fine-tuning needs at least two")
    split = _split_data(src, cfg)
    train_idx, train_t, val_paths, val_t = split["train_idx"], split["train_t"], split["val_paths"], split["val_t"]
    train_sha, val_sha = split["train_sha"], split["val_sha"]

    ckpt = None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        check_resumable(ckpt, cfg.to_dict(), model, resume)
        check_same_data(ckpt, train_sha, val_sha, resume)

    device, _ = resolve_device(cfg.device)
    net, data_config, init_info, channels_last = _build_network(model, weights, cfg, len(class_names), device,
                                                                ckpt, resume)
    optimizer, scheduler = _make_optimizer(net, cfg, ckpt)
    weight = T.class_weights(train_t, len(class_names)).to(device) if cfg.balance == "class-weight" else None
    stepper = T.Stepper(net, device=device,
                        amp_dtype=autocast_dtype(resolve_precision(cfg.precision, device, training=True)[0]),
                        channels_last=channels_last, grad_clip=cfg.grad_clip, optimizer=optimizer,
                        criterion=torch.nn.CrossEntropyLoss(weight=weight))
    if cfg.objective != "crossentropy":  # metric learning on the pooled embedding
        from deepfeat.finetuning.objectives import use_objective

        stepper = use_objective(stepper, net, cfg.head, cfg.objective, weight)
    workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if cfg.workers is None else cfg.workers
    eval_tf = build_transform(data_config, crop_border=cfg.crop_border)
    train_ds = T.EpochDataset([src.paths[i] for i in train_idx], train_t, eval_tf,
                              augment=T.parse_augment(cfg.augment), seed=cfg.seed)
    val_loader = T.make_loader(T.EpochDataset(val_paths, val_t, eval_tf), list(range(len(val_t))),
                               batch_size=cfg.batch_size, workers=workers, device=device) if len(val_t) else None

    meta = {"deepfeat_checkpoint": 1, "model": model, "head": cfg.head, "num_classes": len(class_names),
            "class_names": list(class_names), "config": plain(cfg.to_dict()), "train_sha256": train_sha,
            "val_sha256": val_sha, "versions": versions(), "init_weights": init_info,
            "data_config": plain(data_config),
            "split": {"val_fraction": cfg.val_fraction, "val_source": plain(cfg.val_source), "seed": cfg.seed,
                      "grouped_by": "subject + identical bytes" if src.groups else "identical bytes (sha256)",
                      "n_train": len(train_t), "n_val": len(val_t)},
            "source": {"name": src.name, "root": plain(getattr(src, "root", None)), "n_images": len(src)}}
    curves = list(ckpt["curves"]) if ckpt is not None else []
    best = ckpt.get("best") if ckpt is not None else None
    last, files = sibling(out, "last"), {}
    for epoch in range(ckpt["epoch"] if ckpt is not None else 0, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # this epoch's dropout / drop-path, whatever came before
        frozen = epoch < cfg.freeze_backbone_epochs
        T.set_backbone_frozen(net, cfg.head, frozen)
        lr_now = optimizer.param_groups[0]["lr"]
        order = T.epoch_order(train_t, epoch, cfg.seed, cfg.balance, cfg.batch_size)
        train_ds.epoch = epoch
        loader = T.make_loader(train_ds, order, batch_size=cfg.batch_size, workers=workers, device=device)
        with tqdm(total=len(order), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img", disable=not progress,
                  leave=False) as bar:
            tr = T.train_epoch(stepper, loader, bar=bar)
        scheduler.step()
        va = T.evaluate(stepper, val_loader) if val_loader is not None else None
        row = {"epoch": epoch + 1, "train_loss": tr.loss, "train_acc": tr.accuracy,
               "val_loss": va.loss if va else None, "val_acc": va.accuracy if va else None,
               "lr": lr_now, "frozen_backbone": frozen, "seconds": tr.seconds + (va.seconds if va else 0.0),
               "train_images_per_s": tr.images_per_s}
        metrics = T.classification_metrics(va, val_t, class_names)
        metrics["val_paths"] = [str(v) for v in val_paths]  # the report's gallery of validation errors
        row["val_f1_macro"] = metrics["f1_macro"]
        curves.append(plain(row))
        sd, head_sd = T.split_state(net, cfg.head)
        state = {**meta, "state_dict": cpu_state(sd), "head_state_dict": cpu_state(head_sd),
                 "curves": curves, "metrics": metrics, "epoch": epoch + 1}
        if _improved(best, va, cfg.monitor):
            best = {"epoch": epoch + 1, "val_loss": row["val_loss"], "val_accuracy": row["val_acc"]}
            atomic_save({**state, "best": best}, out)
        atomic_save({**state, "best": best, "optimizer_state": optimizer.state_dict(),
                     "scheduler_state": plain(scheduler.state_dict()), "rng_state": torch.get_rng_state()}, last)
        files = write_curves(pd.DataFrame(curves), out)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: loss {tr.loss:.4f} acc {tr.accuracy:.3f}"
                       + (f" | val loss {va.loss:.4f} acc {va.accuracy:.3f}" if va else "")
                       + f" | lr {lr_now:.2g} | {tr.images_per_s:.1f} img/s")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row, net)
    if not curves:
        raise DeepfeatError("no epoch was trained")
    final = read_checkpoint(out)
    return FinetuneResult(checkpoint=out, last_checkpoint=last, curves=pd.DataFrame(curves),
                          metrics=final["metrics"], best_epoch=int(final["epoch"]), n_train=len(train_t),
                          n_val=len(val_t), class_names=list(class_names),
                          seconds=time.perf_counter() - t_start, files={**files, "last": last})


def _split_data(src, cfg: FinetuneConfig) -> dict:
    """Training / validation sides (indices, targets, sha256), stratified and grouped; see the module doc."""
    from deepfeat.data.images import sha256_file

    class_names = src.class_names
    sha = [sha256_file(p) for p in src.paths]
    if cfg.val_source is not None:
        vsrc = _labelled(cfg.val_source, "val_source")
        extra = sorted(set(vsrc.class_names) - set(class_names))
        if extra:
            raise DeepfeatError(f"val_source has classes {extra} that the training source lacks")
        train_idx = np.arange(len(src))
        val_paths, val_labels = vsrc.paths, vsrc.labels
        val_sha = [sha256_file(p) for p in vsrc.paths]
    elif cfg.val_fraction > 0:
        train_idx, val_idx = split_train_val(src.labels, fraction=cfg.val_fraction, seed=cfg.seed,
                                             groups=src.groups, sha256=sha)
        val_paths, val_labels = [src.paths[i] for i in val_idx], [src.labels[i] for i in val_idx]
        val_sha = [sha[i] for i in val_idx]
    else:
        warnings.warn("val_fraction=0 and no val_source: no validation; the last epoch is the output", stacklevel=3)
        train_idx, val_paths, val_labels, val_sha = np.arange(len(src)), [], [], []
    train_sha = [sha[i] for i in train_idx]
    shared = set(train_sha) & set(val_sha)
    if shared:
        raise DeepfeatError(f"{len(shared)} image(s) are both in training and in val_source (same sha256); "
                            "remove them from one side")
    index = {c: k for k, c in enumerate(class_names)}
    train_t = np.asarray([index[src.labels[i]] for i in train_idx], dtype=np.int64)
    val_t = np.asarray([index[v] for v in val_labels], dtype=np.int64)
    missing = sorted(set(class_names) - {class_names[t] for t in train_t})
    if missing:
        raise DeepfeatError(f"the training split has no images of class(es) {missing}")
    return {"train_idx": train_idx, "train_t": train_t, "train_sha": train_sha, "val_paths": val_paths,
            "val_t": val_t, "val_sha": val_sha}


def _build_network(model: str, weights, cfg: FinetuneConfig, n_classes: int, device, ckpt, resume):
    """(end-to-end network on ``device``, data config, where its weights came from, channels_last)."""
    import torch

    from deepfeat.backbones import create_backbone, resolve_data_config
    from deepfeat.finetuning import training as T

    torch.manual_seed(cfg.seed)  # the new head's initialization (and random weights when weights="none")
    backbone = create_backbone(model, weights=weights)
    init_info = plain(getattr(backbone, "deepfeat_info", {"backbone": model, "weights": str(weights)}))
    data_config = dict(resolve_data_config(backbone))
    if cfg.image_size:
        data_config["input_size"] = (3, int(cfg.image_size), int(cfg.image_size))
    net = T.attach_head(backbone, cfg.head, n_classes)
    if ckpt is not None:
        load_into(net, ckpt, resume)
    channels_last = device.type in ("cuda", "cpu") if cfg.channels_last == "auto" else bool(cfg.channels_last)
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    return net, data_config, init_info, channels_last


def _make_optimizer(net, cfg: FinetuneConfig, ckpt):
    """The optimizer and learning-rate schedule of ``cfg`` (restored from ``ckpt`` when resuming)."""
    import torch

    from deepfeat.finetuning import training as T

    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: T.lr_factor(
        e, cfg.schedule, cfg.epochs, cfg.lr_drop_factor, cfg.lr_drop_every))
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
    return optimizer, scheduler
