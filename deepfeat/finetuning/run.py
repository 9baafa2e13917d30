"""Fine-tune a backbone on labelled cell images and save a checkpoint that loads wherever weights are accepted.

Every run starts from a named recipe (:mod:`deepfeat.finetuning.recipes`): ``transfer`` (the default: linear
probe then fine-tune, discriminative learning rates, frozen batch norm, warm-up + cosine, label smoothing, early
stopping, and on a CPU frozen early stages with cached activations) or ``study``. Options given explicitly
override the recipe's values.

The ``study`` recipe reproduces the reference study's MATLAB ``trainingOptions``: ``sgdm`` (momentum 0.9), initial learning
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

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from deepfeat.finetuning.config import EXPERIMENT_KEYS, FROM_RECIPE, FinetuneConfig  # noqa: F401 (re-exported)
from deepfeat.finetuning.splits import labelled_source, split_data, split_train_val

log = logging.getLogger("deepfeat")
__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "load_finetuned", "read_checkpoint", "split_train_val"]

@dataclass
class FinetuneResult:
    """What :func:`finetune` made: checkpoint paths, per-epoch curves and the end-to-end validation metrics."""

    checkpoint: Path
    last_checkpoint: Path
    curves: object  # pandas.DataFrame, one row per epoch
    metrics: dict
    best_epoch: int
    n_train: int
    n_val: int
    class_names: list
    seconds: float
    files: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)  # batch size, steps, frozen stages, cached trunk (finetuning.plan)
    linear_probe: dict | None = None  # the LP phase's figures, when it ran
    stopped_early: int | None = None  # the epoch after which early stopping ended the run

    def summary(self) -> str:
        m = self.metrics
        lines = [f"fine-tuned on {self.n_train} images, validated on {self.n_val}; best epoch {self.best_epoch} "
                 f"({self.seconds:.0f} s)", f"checkpoint: {self.checkpoint} (latest epoch, resumable: "
                 f"{self.last_checkpoint})"]
        if self.plan:
            p = self.plan
            steps = len(self.curves) * p["steps_per_epoch"]
            lines.append(f"{steps} optimizer steps ({len(self.curves)} epochs x {p['steps_per_epoch']}, batch size "
                         f"{p['batch_size']})" + (f"; stopped early after epoch {self.stopped_early}"
                                                  if self.stopped_early else "")
                         + (f"; first {p['frozen_stages']} of {p['n_stages']} stages frozen"
                            + (", their output cached" if p["cached_trunk"] else "") if p["frozen_stages"] else ""))
        if self.linear_probe:
            lines.append(f"linear probe first: head fitted on {self.linear_probe['images']} training images' "
                         f"frozen outputs (training accuracy {self.linear_probe['train_accuracy']:.3f})")
        if self.files.get("curves_csv"):
            lines.append(f"curves: {self.files['curves_csv']}, {self.files['curves_png']}")
        if m.get("accuracy") is not None:
            lines.append(f"end-to-end network on its validation split: accuracy {m['accuracy']:.4f}, "
                         f"macro F1 {m['f1_macro']:.4f}")
            lines.append("confusion (rows = true, columns = predicted; " + ", ".join(self.class_names) + "):")
            lines += ["  " + " ".join(f"{v:5d}" for v in row) for row in m["confusion"]]
        return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------------------------
def _improved(best: dict | None, val, monitor: str) -> bool:
    if val is None or best is None:
        return True  # without validation the latest epoch is the output
    if monitor == "val_accuracy":
        return (val.accuracy, -val.loss) > (best["val_accuracy"], -best["val_loss"])
    return val.loss < best["val_loss"]


def finetune(source, *, model: str = defaults.MODEL, weights="imagenet", out, config: FinetuneConfig | None = None,
             resume=None, progress: bool = True, on_epoch_end=None, trunk_images=None, **options) -> FinetuneResult:
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
    trunk_images : (paths, sha256), optional
        More images whose frozen-stage output the run caches (every view it trains on) before its own, in this
        order, when it caches its trunk. In-fold CV passes the whole source: each fold's test images are then
        cached for :func:`deepfeat.finetuning.trunk_features.features_from_trunk`, and the activations do not
        depend on which fold (or Dask worker) computed them first.

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

    from deepfeat.finetuning import plan as P

    t_start = time.perf_counter()
    cfg, out = _resolved_config(config, options), Path(out)
    src = labelled_source(source, "source")
    class_names = src.class_names
    if len(class_names) < 2:
        raise DeepfeatError(f"source {src.name} has one class ({class_names}); fine-tuning needs at least two")
    split = split_data(src, cfg)
    plan = P.make_plan(cfg, len(split["train_t"]))
    ckpt = None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        check_resumable(ckpt, cfg.to_dict(), model, resume)
        check_same_data(ckpt, split["train_sha"], split["val_sha"], resume)
    run = _prepare(src, split, plan, cfg, model=model, weights=weights, ckpt=ckpt, resume=resume,
                   trunk_images=trunk_images)
    meta = _checkpoint_meta(src, split, plan, cfg, model=model, init_info=run.init_info, data_config=run.data_config)
    meta["linear_probe"] = probe = _linear_probe(run, split, plan, cfg, ckpt)
    curves, files, stopped = _train_epochs(run, split, plan, cfg, meta=meta, ckpt=ckpt, out=out, progress=progress,
                                           on_epoch_end=on_epoch_end, class_names=class_names)
    if not curves:
        raise DeepfeatError("no epoch was trained")
    final = read_checkpoint(out)
    last = sibling(out, "last")
    return FinetuneResult(checkpoint=out, last_checkpoint=last, curves=pd.DataFrame(curves),
                          metrics=final["metrics"], best_epoch=int(final["epoch"]), n_train=len(split["train_t"]),
                          n_val=len(split["val_t"]), class_names=list(class_names),
                          seconds=time.perf_counter() - t_start, files={**files, "last": last},
                          plan=plan.record(), linear_probe=probe,
                          stopped_early=stopped if stopped is not None else (ckpt or {}).get("stopped_early"))


# --- the steps of a run, in order ---------------------------------------------------------------------------------
def _resolved_config(config: FinetuneConfig | None, options: dict) -> FinetuneConfig:
    """``config`` with the keyword ``options`` over it (the rest from their recipe), validated."""
    if config is None:  # the options given, the rest from their recipe
        config = FinetuneConfig.from_dict(options, where="finetune()")
    elif options:
        config = FinetuneConfig.from_dict({**config.to_dict(), **options}, where="finetune()")
    config.validate()
    return config


@dataclass
class _Training:
    """What the epochs need, set up by :func:`_prepare`: the network, its trunk, data and optimizer."""

    net: object
    trunk: object
    stepper: object
    optimizer: object
    scheduler: object
    loader_of: object  # (dataset, order) -> DataLoader
    train_ds: object
    probe_ds: object
    val_loader: object
    weight: object  # class weights of the loss, or None
    data_config: dict
    init_info: dict


def _prepare(src, split: dict, plan, cfg: FinetuneConfig, *, model, weights, ckpt, resume,
             trunk_images=None) -> _Training:
    """Device, network (restored from ``ckpt`` when resuming), trunk, data, optimizer and loss, in that order."""
    import torch

    from deepfeat.extraction.device import (
        autocast_dtype,
        resolve_device,
        resolve_precision,
    )
    from deepfeat.extraction.preprocessing import build_transform
    from deepfeat.finetuning import plan as P
    from deepfeat.finetuning import training as T

    train_t, val_t = split["train_t"], split["val_t"]
    device, _ = resolve_device(cfg.device)
    net, data_config, init_info, channels_last = _build_network(model, weights, cfg, len(src.class_names), device,
                                                                ckpt, resume)
    n_images = len({*split["train_sha"], *split["val_sha"], *(trunk_images[1] if trunk_images else ())})
    trunk = P.settle_trunk(plan, net, cfg, device, n_images=n_images,
                           input_size=tuple(data_config["input_size"]))
    for note in plan.notes:
        log.info("fine-tuning: %s", note)
    amp_dtype = autocast_dtype(resolve_precision(cfg.precision, device, training=True)[0])
    weight = T.class_weights(train_t, len(src.class_names)).to(device) if cfg.balance == "class-weight" else None
    workers = min(8, max(0, (os.cpu_count() or 1) - 1)) if cfg.workers is None else cfg.workers
    eval_tf = build_transform(data_config, crop_border=cfg.crop_border)
    data = _datasets(src, split, plan, cfg, trunk=trunk, eval_tf=eval_tf, model=model, data_config=data_config,
                     device=device, amp_dtype=amp_dtype, channels_last=channels_last, workers=workers,
                     trunk_images=trunk_images)
    train_ds, probe_ds, val_ds, loader_of = data
    optimizer, scheduler = P.make_optimizer(net, cfg, ckpt, plan, trunk)
    stepper = T.Stepper(trunk.suffix if plan.cached else net, device=device, amp_dtype=amp_dtype, channels_last=channels_last,
                        grad_clip=cfg.grad_clip, optimizer=optimizer,
                        criterion=torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing))
    if cfg.objective != "crossentropy":  # metric learning on the pooled embedding
        from deepfeat.finetuning.objectives import use_objective

        stepper = use_objective(stepper, net, cfg.head, cfg.objective, weight)
    val_loader = loader_of(val_ds, list(range(len(val_t)))) if val_ds is not None else None
    return _Training(net, trunk, stepper, optimizer, scheduler, loader_of, train_ds, probe_ds, val_loader, weight,
                     data_config, init_info)


def _datasets(src, split: dict, plan, cfg: FinetuneConfig, *, trunk, eval_tf, model, data_config, device, amp_dtype,
              channels_last, workers, trunk_images=None):
    """(train, linear-probe and validation datasets, ``loader_of(dataset, order)``): on images, or on the frozen
    stages' cached output when the plan caches the trunk."""
    import torch

    from deepfeat.finetuning import training as T

    train_t, val_t, val_paths = split["train_t"], split["val_t"], split["val_paths"]
    train_sha, val_sha = split["train_sha"], split["val_sha"]
    ops = T.parse_augment(cfg.augment)
    train_paths = [src.paths[i] for i in split["train_idx"]]
    if not plan.cached:
        train_ds = T.EpochDataset(train_paths, train_t, eval_tf, augment=ops, seed=cfg.seed)
        probe_ds = T.EpochDataset(train_paths, train_t, eval_tf)  # no augmentation
        val_ds = T.EpochDataset(val_paths, val_t, eval_tf) if len(val_t) else None

        def loader_of(ds, order):
            return T.make_loader(ds, order, batch_size=plan.batch_size, workers=workers, device=device)
        return train_ds, probe_ds, val_ds, loader_of
    # the frozen stages' output, once per image and view (shared by the folds of one run)
    from deepfeat.finetuning import trunk as TR

    identity = TR.trunk_identity(model, trunk, data_config, cfg.crop_border, device, amp_dtype)
    shared = dict(device=device, amp_dtype=amp_dtype, channels_last=channels_last,
                  batch_size=min(64, max(plan.batch_size, 8)), workers=workers)
    if trunk_images is not None:  # first, in their order: the batches (hence the bits) do not depend on the split
        TR.trunk_activations(trunk, identity, *trunk_images, plan.views, eval_tf, **shared)
    rows = TR.trunk_activations(trunk, identity, train_paths, train_sha, plan.views, eval_tf, **shared)
    rows = TR.trunk_activations(trunk, identity, val_paths, val_sha, [0], eval_tf, **shared)
    train_ds = TR.CachedEpoch(rows, train_sha, train_t, ops=ops, seed=cfg.seed)
    probe_ds = TR.CachedEpoch(rows, train_sha, train_t)  # identity view
    val_ds = TR.CachedEpoch(rows, val_sha, val_t) if len(val_t) else None

    def loader_of(ds, order):
        return torch.utils.data.DataLoader(ds, batch_size=plan.batch_size, sampler=order, num_workers=0,
                                           collate_fn=TR.collate_cached)
    return train_ds, probe_ds, val_ds, loader_of


def _checkpoint_meta(src, split: dict, plan, cfg: FinetuneConfig, *, model, init_info, data_config) -> dict:
    """What every checkpoint of the run records besides its weights and epoch (see the module doc)."""
    n_train, n_val = len(split["train_t"]), len(split["val_t"])
    return {"deepfeat_checkpoint": 1, "model": model, "head": cfg.head, "num_classes": len(src.class_names),
            "class_names": list(src.class_names), "config": plain(cfg.to_dict()), "train_sha256": split["train_sha"],
            "val_sha256": split["val_sha"], "versions": versions(), "init_weights": init_info,
            "data_config": plain(data_config), "plan": plain(plan.record()), "schedule_unit": "step",
            "split": {"val_fraction": cfg.val_fraction, "val_source": plain(cfg.val_source), "seed": cfg.seed,
                      "grouped_by": "subject + identical bytes" if src.groups else "identical bytes (sha256)",
                      "n_train": n_train, "n_val": n_val},
            "source": {"name": src.name, "root": plain(getattr(src, "root", None)), "n_images": len(src)}}


def _linear_probe(run: _Training, split: dict, plan, cfg: FinetuneConfig, ckpt) -> dict | None:
    """The linear-probe phase's figures: run now (a new run with ``linear_probe``) or kept from ``ckpt``."""
    from deepfeat.finetuning import plan as P
    from deepfeat.finetuning import training as T

    probe = ckpt.get("linear_probe") if ckpt is not None else None
    if cfg.linear_probe and ckpt is None:
        T.set_train_mode(run.net, cfg.head, frozen_backbone=True, bn=cfg.bn, trunk=run.trunk)
        probe = P.run_linear_probe(run.net, cfg, run.stepper, run.loader_of(run.probe_ds,
                                                                            list(range(len(split["train_t"])))),
                                   run.trunk, plan, run.weight)
        log.info("fine-tuning: linear probe on %d images: training accuracy %.3f (%.1f s)", probe["images"],
                 probe["train_accuracy"], probe["seconds"])
    return probe


def _train_epochs(run: _Training, split: dict, plan, cfg: FinetuneConfig, *, meta, ckpt, out: Path, progress,
                  on_epoch_end, class_names) -> tuple[list, dict, int | None]:
    """The epochs (from the resumed one on): train, validate, keep the best and the latest checkpoint, write the
    curves; ``(curves, curve files, epoch early stopping ended the run after or None)``."""
    import torch
    from tqdm.auto import tqdm

    from deepfeat.finetuning import training as T

    net, stepper, optimizer, scheduler = run.net, run.stepper, run.optimizer, run.scheduler
    train_t, val_t = split["train_t"], split["val_t"]
    curves = list(ckpt["curves"]) if ckpt is not None else []
    best = ckpt.get("best") if ckpt is not None else None
    files, stopped = {}, None
    start = 0 if ckpt is None else plan.epochs if ckpt.get("finished") else int(ckpt["epoch"])
    for epoch in range(start, plan.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # this epoch's dropout / drop-path, whatever came before
        frozen = epoch < cfg.freeze_backbone_epochs
        T.set_train_mode(net, cfg.head, frozen_backbone=frozen, bn=cfg.bn, trunk=run.trunk)
        lr_now = optimizer.param_groups[0]["lr"]
        order = T.epoch_order(train_t, epoch, cfg.seed, cfg.balance, plan.batch_size)
        run.train_ds.epoch = epoch
        loader = run.loader_of(run.train_ds, order)
        with tqdm(total=len(order), desc=f"epoch {epoch + 1}/{plan.epochs}", unit="img", disable=not progress,
                  leave=False) as bar:
            tr = T.train_epoch(stepper, loader, bar=bar, on_step=scheduler.step)
        va = T.evaluate(stepper, run.val_loader) if run.val_loader is not None else None
        row = {"epoch": epoch + 1, "train_loss": tr.loss, "train_acc": tr.accuracy,
               "val_loss": va.loss if va else None, "val_acc": va.accuracy if va else None,
               "lr": lr_now, "frozen_backbone": frozen, "seconds": tr.seconds + (va.seconds if va else 0.0),
               "train_images_per_s": tr.images_per_s, "steps": (epoch + 1) * plan.steps_per_epoch}
        metrics = T.classification_metrics(va, val_t, class_names)
        metrics["val_paths"] = [str(v) for v in split["val_paths"]]  # the report's gallery of validation errors
        row["val_f1_macro"] = metrics["f1_macro"]
        curves.append(plain(row))
        if _improved(best, va, cfg.monitor):
            best = {"epoch": epoch + 1, "val_loss": row["val_loss"], "val_accuracy": row["val_acc"]}
        if cfg.patience and va is not None and epoch + 1 - best["epoch"] >= cfg.patience and epoch + 1 < plan.epochs:
            stopped = epoch + 1  # early stopping: no improvement for `patience` epochs
        files = _save_epoch(run, cfg, meta=meta, out=out, curves=curves, metrics=metrics, epoch=epoch, best=best,
                            stopped=stopped, finished=stopped is not None or epoch + 1 >= plan.epochs)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{plan.epochs}: loss {tr.loss:.4f} acc {tr.accuracy:.3f}"
                       + (f" | val loss {va.loss:.4f} acc {va.accuracy:.3f}" if va else "")
                       + f" | lr {lr_now:.2g} | {tr.images_per_s:.1f} img/s")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row, net)
        if stopped is not None:
            log.info("fine-tuning: early stop after epoch %d (no improvement of %s for %d epochs; kept epoch %d)",
                     stopped, cfg.monitor, cfg.patience, best["epoch"])
            break
    return curves, files, stopped


def _save_epoch(run: _Training, cfg: FinetuneConfig, *, meta, out: Path, curves, metrics, epoch, best, stopped,
                finished) -> dict:
    """The best checkpoint (when this epoch is it), the resumable latest one and the curves; the curve files."""
    import pandas as pd
    import torch

    from deepfeat.finetuning import training as T

    sd, head_sd = T.split_state(run.net, cfg.head)
    state = {**meta, "state_dict": cpu_state(sd), "head_state_dict": cpu_state(head_sd),
             "curves": curves, "metrics": metrics, "epoch": epoch + 1, "best": best,
             "finished": finished, "stopped_early": stopped}
    if best["epoch"] == epoch + 1:
        atomic_save(state, out)
    atomic_save({**state, "optimizer_state": run.optimizer.state_dict(),
                 "scheduler_state": plain(run.scheduler.state_dict()), "rng_state": torch.get_rng_state()},
                sibling(out, "last"))
    return write_curves(pd.DataFrame(curves), out)


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
