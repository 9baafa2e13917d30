"""What a fine-tuning run will do, settled before the first step: batch size and steps, the frozen trunk and its
cache, the data loaders, the linear probe, the optimizer and its schedule. :func:`deepfeat.finetuning.run.finetune`
runs the epochs."""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from deepfeat.errors import DeepfeatError
from deepfeat.finetuning import training as T

if TYPE_CHECKING:  # the annotations only
    from deepfeat.finetuning.config import FinetuneConfig

FEW_STEPS = 10  # fewer optimizer steps per epoch than this and the run says so


@dataclass
class Plan:
    batch_size: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    frozen_stages: int = 0
    n_stages: int | None = None
    cached: bool = False
    views: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def record(self) -> dict:
        return {"batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
                "total_steps": self.total_steps, "frozen_stages": self.frozen_stages, "n_stages": self.n_stages,
                "cached_trunk": self.cached, "views": list(self.views), "notes": list(self.notes)}


def _steps_in_epoch(n: int, batch_size: int) -> int:
    # T.epoch_order drops a last batch of one image
    kept = n - 1 if n > 1 and n % batch_size == 1 else n
    return max(1, math.ceil(kept / batch_size))


def make_plan(cfg, n_train: int) -> Plan:
    """Batch size (shrunk for small sets when ``min_steps_per_epoch`` asks), steps per epoch and run length."""
    bs = cfg.batch_size
    notes = []
    if cfg.min_steps_per_epoch and n_train // bs < cfg.min_steps_per_epoch:
        new = max(1, min(bs, max(8, n_train // cfg.min_steps_per_epoch)))
        if new != bs:
            notes.append(f"batch size {bs} -> {new} so that an epoch of {n_train} training images has at least "
                         f"{cfg.min_steps_per_epoch} optimizer steps (min_steps_per_epoch)")
            bs = new
    spe = _steps_in_epoch(n_train, bs)
    epochs = math.ceil(cfg.steps / spe) if cfg.steps else cfg.epochs
    if spe < FEW_STEPS:
        advice = ("the batch is already at its floor of 8 images for a set this small: more epochs or steps "
                  "lengthen the run" if cfg.min_steps_per_epoch else
                  "set a smaller batch_size, more epochs or steps, or min_steps_per_epoch (recipe='transfer' "
                  "adapts the batch size)")
        msg = (f"an epoch is only {spe} optimizer step(s) ({n_train} training images, batch size {bs}): "
               f"{epochs} epochs make {epochs * spe} steps in all; {advice}")
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    return Plan(batch_size=bs, steps_per_epoch=spe, epochs=epochs, total_steps=epochs * spe, notes=notes)


def trunk_cache_budget() -> int:
    """Bytes the cached trunk activations may take: ``DEEPFEAT_TRUNK_CACHE_GB``, else a quarter of the RAM."""
    import os

    if os.environ.get("DEEPFEAT_TRUNK_CACHE_GB"):
        return int(float(os.environ["DEEPFEAT_TRUNK_CACHE_GB"]) * 2**30)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def _cache_bytes(split, n_images: int, n_views: int, input_size) -> int:
    """What caching ``n_images`` x ``n_views`` activations of the frozen stages takes (fp32)."""
    split.freeze()
    param = next(split.prefix.parameters(), None)
    with torch.no_grad():
        h = split.prefix(torch.zeros((1, *input_size), device=param.device if param is not None else "cpu"))
    return int(h.numel()) * 4 * n_images * n_views


def settle_trunk(plan: Plan, net, cfg, device, *, n_images: int = 0, input_size=(3, 224, 224)):
    """Decide the frozen stages and whether their output is cached; returns the TrunkSplit or None.

    ``n_images`` (training + validation) sizes the activation cache; a cache above :func:`trunk_cache_budget`
    is not built (the frozen stages are then recomputed every step, and the run says so)."""
    from deepfeat.finetuning.trunk import (
        TrunkSplit,
        needed_views,
        network_stages,
        resolve_freeze_stages,
    )

    body = T.backbone_of(net, cfg.head)
    if cfg.freeze_stages == 0:
        if cfg.cache_trunk is True:
            raise DeepfeatError("cache_trunk=True needs frozen stages (freeze_stages > 0 or 'auto' on a CPU)")
        return None
    try:
        k = resolve_freeze_stages(cfg.freeze_stages, body, device)
    except DeepfeatError:
        if cfg.freeze_stages != "auto":
            raise
        plan.notes.append(f"freeze_stages='auto': deepfeat does not know the stages of {type(body).__name__}; "
                          "the whole network trains")
        warnings.warn(plan.notes[-1], stacklevel=3)
        return None
    if k == 0:
        return None
    split = TrunkSplit(net, cfg.head, k)
    plan.frozen_stages, plan.n_stages = k, len(network_stages(body))
    ops = T.parse_augment(cfg.augment)
    reasons = []
    if "color" in ops:
        reasons.append("the augmentation has colour jitter")
    if cfg.cache_trunk is False:
        reasons.append("cache_trunk=false")
    if not reasons and n_images:
        need, budget = _cache_bytes(split, n_images, len(needed_views(ops)), input_size), trunk_cache_budget()
        if need > budget:
            reasons.append(f"caching {n_images} images x {len(needed_views(ops))} views would take "
                           f"{need / 2**30:.1f} GiB, over the {budget / 2**30:.1f} GiB budget (DEEPFEAT_TRUNK_CACHE_GB)")
            if cfg.cache_trunk == "auto":
                warnings.warn(f"fine-tuning: {reasons[-1]}; the frozen stages are recomputed every step (slower)",
                              stacklevel=3)
    if reasons and cfg.cache_trunk is True:
        raise DeepfeatError("cache_trunk=True cannot be used here: " + "; ".join(reasons))
    plan.cached = not reasons
    plan.views = needed_views(ops) if plan.cached else []
    if reasons and cfg.cache_trunk == "auto" and "cache_trunk=false" not in reasons:
        plan.notes.append(f"{k} frozen stages are recomputed every step (not cached): " + "; ".join(reasons))
    return split


def run_linear_probe(net, cfg, stepper, loader, split, plan, weight) -> dict:
    """LP of LP-FT: the head fitted on the frozen network's outputs of the training images (identity view)."""
    from deepfeat.finetuning.probe import fit_linear_head, probe_inputs

    def batches():
        for x, y in T._batches(loader):
            x, y = stepper._to_device(x, y)
            if stepper.amp_dtype is not None:
                with torch.autocast(stepper.device.type, dtype=stepper.amp_dtype):
                    yield x, y
            else:
                yield x, y

    F, y = probe_inputs(net, cfg.head, batches(), suffix=split.suffix if split is not None and plan.cached else None)
    return fit_linear_head(net, cfg.head, F, y, label_smoothing=cfg.label_smoothing, class_weight=weight)


def trainable_groups(net, cfg, split) -> list[dict]:
    """Optimizer parameter groups: the new head at ``lr``, the rest of the network at ``lr * backbone_lr_scale``;
    frozen trunk stages are left out. One group (0.1's layout) when nothing differs."""
    from deepfeat.finetuning.training import head_parameters

    frozen = split.frozen_parameters if split is not None else set()
    params = [p for p in net.parameters() if id(p) not in frozen]
    if cfg.backbone_lr_scale == 1.0:
        return [{"params": params, "lr": cfg.lr}]
    head = {id(p) for p in head_parameters(net, cfg.head)}
    return [{"params": [p for p in params if id(p) in head], "lr": cfg.lr, "name": "head"},
            {"params": [p for p in params if id(p) not in head], "lr": cfg.lr * cfg.backbone_lr_scale,
             "name": "backbone"}]


def make_optimizer(net, cfg: FinetuneConfig, ckpt, plan, trunk):
    """The optimizer and per-step learning-rate schedule of ``cfg`` (restored from ``ckpt`` when resuming)."""
    groups = trainable_groups(net, cfg, trunk)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    factor = functools.partial(T.step_lr_factor, steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
                               schedule=cfg.schedule, drop_factor=cfg.lr_drop_factor, drop_every=cfg.lr_drop_every,
                               warmup=cfg.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        scheduler.load_state_dict(ckpt["scheduler_state"])
        # the schedule counts optimizer steps (0.1's checkpoints counted epochs): set it from the epochs done
        scheduler.last_epoch = int(ckpt["epoch"]) * plan.steps_per_epoch - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()": a restore, not a step
            scheduler.step()
    return optimizer, scheduler
