"""The training loop behind :func:`deepfeat.finetuning.run.finetune`: model head, augmentation, loaders, one epoch.

Determinism (the guarantee the tests check): every random choice of an epoch is drawn from generators seeded by
``(seed, epoch)`` (sample order, oversampling, dropout via ``torch.manual_seed``) or ``(seed, epoch, image index)``
(augmentation, drawn in whichever worker decodes the image). So an epoch depends only on the weights and optimizer
state it starts from, never on how many workers ran or whether the run was interrupted and resumed: on the CPU the
same seed and the same number of torch threads give bit-identical weights, resumed or not. (Another thread count
changes the order of floating-point sums, and CUDA kernels are not all deterministic: there runs agree to
rounding.)
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepfeat.errors import DeepfeatError

AUGMENTATIONS = ("flip", "rot90", "color")
# Cell images have no canonical orientation, so flips and quarter turns are label-preserving; stain varies
# between labs, hence a small colour jitter (kept small: hue shifts change what a stain looks like).
CELL_AUGMENT = {"hflip": 0.5, "vflip": 0.5, "brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.02}


# --- the network ---------------------------------------------------------------------------------------------
class KeepHeadClassifier(nn.Module):
    """A backbone whose 1000-d output stays as it is, followed by a new ``Linear(1000, n_classes)``.

    The study's recipe: the fine-tuned network's 1000 outputs remain the features (``layer="logits"``), and the
    task head is trained on top of them, end to end.
    """

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone = backbone
        n_out = getattr(backbone, "num_classes", None) or 1000
        self.head = nn.Linear(int(n_out), n_classes)

    def forward(self, x):
        return self.head(self.backbone(x))


def attach_head(backbone: nn.Module, head: str, n_classes: int) -> nn.Module:
    """Return the end-to-end classifier for ``head`` ("keep1000" or "replace") around ``backbone``."""
    if head == "keep1000":
        if (getattr(backbone, "deepfeat_info", None) or {}).get("head_untrained"):  # a hybrid's new fused head
            warnings.warn("head='keep1000' puts the new layer on the 1000 outputs of this network's untrained head "
                          "(only its members have ImageNet weights); head='replace' trains its one fused head "
                          "instead", UserWarning, stacklevel=3)
        return KeepHeadClassifier(backbone, n_classes)
    if not hasattr(backbone, "reset_classifier"):
        raise DeepfeatError(
            f"head='replace' needs a timm-style model with reset_classifier(); {type(backbone).__name__} has none. "
            "Use head='keep1000'."
        )
    backbone.reset_classifier(n_classes)
    return backbone


def backbone_of(model: nn.Module, head: str) -> nn.Module:
    """The backbone inside the end-to-end network of :func:`attach_head` (for "replace" the network itself)."""
    return model.backbone if head == "keep1000" else model


def split_state(model: nn.Module, head: str) -> tuple[dict, dict | None]:
    """(backbone state dict, head state dict or None) in the checkpoint's layout."""
    if head == "keep1000":
        return model.backbone.state_dict(), model.head.state_dict()
    return model.state_dict(), None


def head_parameters(model: nn.Module, head: str) -> list[nn.Parameter]:
    """The parameters that train while the backbone is frozen."""
    if head == "keep1000":
        return list(model.head.parameters())
    return list(model.get_classifier().parameters())


def set_backbone_frozen(model: nn.Module, head: str, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the head. Frozen layers also run in eval mode, so their
    batch-norm statistics stay the pretrained ones."""
    keep = {id(p) for p in head_parameters(model, head)}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in keep)
    model.train()
    if frozen:
        backbone_of(model, head).eval()
        if head == "keep1000":
            model.head.train()


# --- augmentation ------------------------------------------------------------------------------------------------
def parse_augment(augment) -> tuple[str, ...]:
    """"cells" (flip + rot90 + color), "none", or a comma list of flip / rot90 / color."""
    if augment in (None, False, "", "none"):
        return ()
    if augment in (True, "cells"):
        return AUGMENTATIONS
    parts = augment if isinstance(augment, (list, tuple)) else str(augment).split(",")
    ops = tuple(p.strip() for p in parts if p.strip())
    bad = [p for p in ops if p not in AUGMENTATIONS]
    if bad:
        raise DeepfeatError(
            f"The 'augment' option got unknown operation(s) {bad}; use 'cells', 'none' or a comma list of "
            f"{', '.join(AUGMENTATIONS)}."
        )
    return ops


class CellAugment:
    """Label-preserving augmentation for isolated blood cells, on PIL images.

    Cells have no canonical orientation, so flips and 90-degree rotations are exact symmetries (no
    interpolation, no border fill); colour jitter is small (:data:`CELL_AUGMENT`: +-10 % brightness / contrast /
    saturation, +-0.02 hue) because stain colour carries class information. The random draw comes from ``rng``,
    which :class:`EpochDataset` sets per image, so the result depends only on (seed, epoch, image), never on
    which DataLoader worker decoded it.
    """

    def __init__(self, ops):
        self.ops = tuple(ops)
        self.rng = np.random.default_rng(0)

    def __call__(self, img):
        from PIL import Image
        from torchvision.transforms import functional as TF

        A, rng = CELL_AUGMENT, self.rng
        if "flip" in self.ops:
            if rng.random() < A["hflip"]:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if rng.random() < A["vflip"]:
                img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if "rot90" in self.ops:
            k = int(rng.integers(4))
            if k:
                img = img.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                     Image.Transpose.ROTATE_270)[k])
        if "color" in self.ops:
            b, c, s = (rng.uniform(1 - A[k], 1 + A[k]) for k in ("brightness", "contrast", "saturation"))
            h = rng.uniform(-A["hue"], A["hue"])
            img = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), s), h)
        return img

    def __repr__(self):
        return f"CellAugment({'+'.join(self.ops) or 'none'})"


class EpochDataset(Dataset):
    """Images with integer targets; augmentation seeded by (seed, epoch, index) so workers and resumes agree."""

    def __init__(self, paths, targets, transform, *, augment=(), seed: int = 0):
        from deepfeat.extraction.preprocessing import Compose, ImageDataset

        self.targets = np.asarray(targets, dtype=np.int64)
        self.augment = CellAugment(augment) if augment else None
        tf = Compose([self.augment, transform]) if self.augment else transform
        self.images = ImageDataset(list(paths), tf)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if self.augment is not None:
            self.augment.rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return self.images[i]  # (tensor | ImageFailure, i): extraction's collate_images separates failures


def _batches(loader):
    """(images, targets) per batch; an unreadable image is raised here, in the main process, with its path."""
    from deepfeat.errors import ImageReadError

    targets = torch.as_tensor(loader.dataset.targets, dtype=torch.long)
    for x, idx, failures in loader:
        if failures:
            bad = failures[0][1]
            more = f" (and {len(failures) - 1} more in this batch)" if len(failures) > 1 else ""
            raise ImageReadError(bad.path, f"{bad.reason}{more}; fix or remove unreadable images before "
                                 "fine-tuning")
        yield x, targets[idx]


# --- order, schedule, precision ----------------------------------------------------------------------------------
def epoch_order(targets, epoch: int, seed: int, balance: str, batch_size: int) -> list[int]:
    """Sample order of one epoch: a seeded permutation, or class-balanced draws with replacement ("oversample")."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(targets)
    if balance == "oversample":
        counts = np.bincount(targets)
        w = torch.as_tensor(1.0 / counts[targets], dtype=torch.double)
        order = torch.multinomial(w, n, replacement=True, generator=g).tolist()
    else:
        order = torch.randperm(n, generator=g).tolist()
    if n > 1 and n % batch_size == 1:
        order = order[:-1]  # a last batch of one image breaks batch norm; this epoch skips that image
    return order


def class_weights(targets, n_classes: int) -> torch.Tensor:
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise DeepfeatError("balance='class-weight': a class has no training images; check the split")
    return torch.as_tensor(len(targets) / (n_classes * counts), dtype=torch.float32)


def lr_factor(epoch: int, schedule: str, epochs: int, drop_factor: float, drop_every: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``: MATLAB 'piecewise' (step), cosine, or constant."""
    if schedule == "step":
        return drop_factor ** (epoch // drop_every)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    return 1.0


def step_lr_factor(step: int, *, steps_per_epoch: int, total_steps: int, schedule: str, drop_factor: float,
                   drop_every: int, warmup: float) -> float:
    """Learning-rate multiplier for 0-based optimizer ``step``: linear warm-up over the first ``warmup`` share of
    ``total_steps``, times the schedule ("step" drops at epoch boundaries exactly as :func:`lr_factor`; "cosine"
    decays over the steps)."""
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    else:
        factor = lr_factor(step // max(1, steps_per_epoch), schedule, 1, drop_factor, drop_every)
    warm = round(warmup * total_steps)
    if warm > 0 and step < warm:
        factor *= (step + 1) / (warm + 1)
    return factor


def set_train_mode(model: nn.Module, head: str, *, frozen_backbone: bool, bn: str, trunk=None) -> None:
    """The training-time mode of every part, applied at the start of each epoch: head-only epochs freeze the
    backbone; ``bn="frozen"`` keeps every batch norm in eval mode (pretrained statistics); frozen trunk stages
    (:class:`deepfeat.finetuning.trunk.TrunkSplit`) get no gradient and run in eval mode."""
    set_backbone_frozen(model, head, frozen_backbone)
    if bn == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    if trunk is not None:
        trunk.freeze()


def make_loader(dataset, order, *, batch_size, workers, device) -> DataLoader:
    from deepfeat.extraction.preprocessing import collate_images

    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate_images,
                      pin_memory=device.type == "cuda", persistent_workers=False)


# --- one epoch ------------------------------------------------------------------------------------------------------
@dataclass
class EpochStats:
    loss: float
    accuracy: float
    seconds: float
    images: int
    predictions: np.ndarray | None = None
    confidences: np.ndarray | None = None  # softmax probability of each predicted class (evaluation only)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


class Stepper:
    """Moves batches to the device and runs forward/backward with the chosen precision and memory format."""

    def __init__(self, model, *, device, amp_dtype, channels_last, grad_clip=None, optimizer=None, criterion=None):
        self.model, self.device, self.amp_dtype = model, device, amp_dtype
        self.channels_last, self.grad_clip = channels_last, grad_clip
        self.optimizer, self.criterion = optimizer, criterion
        use_scaler = amp_dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def _to_device(self, x, y):
        nb = self.device.type == "cuda"
        x = x.to(self.device, non_blocking=nb)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=nb)

    def _forward(self, x):
        if self.amp_dtype is None:
            return self.model(x)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return self.model(x)

    def train_step(self, x, y) -> tuple[float, int]:
        x, y = self._to_device(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self._forward(x)
        loss = self.criterion(logits.float(), y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip:
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        correct = int((logits.argmax(1) == y).sum())
        return float(loss.detach()) * len(y), correct

    @torch.no_grad()
    def predict(self, x, y):
        x, y = self._to_device(x, y)
        logits = self._forward(x).float()
        return logits, y


def train_epoch(stepper: Stepper, loader, *, bar=None, on_step=None) -> EpochStats:
    """One pass over ``loader``; ``on_step()`` after every optimizer step (the per-step learning-rate schedule)."""
    t0 = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in _batches(loader):
        loss_sum, ok = stepper.train_step(x, y)
        if on_step is not None:
            on_step()
        total_loss, correct, seen = total_loss + loss_sum, correct + ok, seen + len(y)
        if bar is not None:
            bar.update(len(y))
            dt = time.perf_counter() - t0
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}", img_s=f"{seen / dt:.1f}")
    dt = time.perf_counter() - t0
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1), dt, seen)


def evaluate(stepper: Stepper, loader) -> EpochStats:
    """Loss (plain, unweighted cross-entropy), accuracy and predicted classes on ``loader``, in eval mode."""
    was_training = stepper.model.training
    stepper.model.eval()
    t0 = time.perf_counter()
    total_loss, preds, targets, confs = 0.0, [], [], []
    try:
        for x, y in _batches(loader):
            logits, y = stepper.predict(x, y)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            preds.append(logits.argmax(1).cpu().numpy())
            confs.append(logits.softmax(1).max(1).values.cpu().numpy())
            targets.append(y.cpu().numpy())
    finally:
        stepper.model.train(was_training)
    preds = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    targets = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
    n = len(targets)
    acc = float((preds == targets).mean()) if n else float("nan")
    return EpochStats(total_loss / n if n else float("nan"), acc, time.perf_counter() - t0, n, preds,
                      np.concatenate(confs) if confs else np.zeros(0, dtype=np.float32))


def classification_metrics(stats, targets, class_names) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score

    if stats is None:
        return {"accuracy": None, "f1_macro": None, "confusion": None, "n_val": 0}
    labels = list(range(len(class_names)))
    return {
        "accuracy": float(stats.accuracy), "loss": float(stats.loss),
        "f1_macro": float(f1_score(targets, stats.predictions, labels=labels, average="macro", zero_division=0)),
        "f1_per_class": [float(v) for v in f1_score(targets, stats.predictions, labels=labels, average=None,
                                                     zero_division=0)],
        "confusion": confusion_matrix(targets, stats.predictions, labels=labels).astype(int).tolist(),
        "class_names": list(class_names), "n_val": len(targets),
        # per validation image, in split order, for the fine-tuning report's gallery of errors
        "val_true": [int(v) for v in targets], "val_predictions": [int(v) for v in stats.predictions],
        "val_confidence": [float(v) for v in stats.confidences] if stats.confidences is not None else None,
    }
