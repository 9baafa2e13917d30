"""Every option of a fine-tuning run (:class:`FinetuneConfig`), filled in from a named recipe
(:mod:`deepfeat.finetuning.recipes`) for the options not given."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.fileio import read_toml

__all__ = ["EXPERIMENT_KEYS", "FROM_RECIPE", "FinetuneConfig"]

EXPERIMENT_KEYS = ("enabled", "in_fold")  # keys of an experiment's [finetune] table that are not training options
_CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("step", "cosine", "constant"),
    "balance": ("none", "oversample", "class-weight"),
    "head": ("keep1000", "replace"),
    "precision": defaults.PRECISIONS,
    "monitor": ("val_loss", "val_accuracy"),
    "objective": ("crossentropy", "siamese", "triplet", "prototypical"),
    "recipe": ("study", "transfer"),
    "bn": ("train", "frozen"),
    "linear_probe": (True, False),
}


class _FromRecipe:
    """Default of the options a recipe sets: replaced by the recipe's value when the config is made."""

    def __repr__(self) -> str:
        return "<the recipe's value>"


FROM_RECIPE = _FromRecipe()


@dataclass
class FinetuneConfig:
    """Every option of a fine-tuning run. Options left out take the value of ``recipe`` (see module doc and
    :mod:`deepfeat.finetuning.recipes`): ``FinetuneConfig()`` is the ``transfer`` recipe,
    ``FinetuneConfig(recipe="study")`` the reference study's MATLAB settings, ``FinetuneConfig(epochs=5)``
    the default recipe with 5 epochs.

    Parameters
    ----------
    recipe : "transfer" (default) or "study": where the options not given come from.
    epochs, batch_size, lr : training length, mini-batch size, initial learning rate (the head's, when
        ``backbone_lr_scale`` differs from 1).
    optimizer : "sgd" (with ``momentum``; MATLAB sgdm) or "adamw".
    momentum, weight_decay : SGD momentum; L2 penalty (torch ``weight_decay``, applied to every parameter).
    schedule : "step" (multiply by ``lr_drop_factor`` every ``lr_drop_every`` epochs), "cosine" (to zero over
        the run's steps) or "constant"; applied per optimizer step.
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
    linear_probe : fit the new head to convergence on the frozen network's outputs (one forward pass per
        training image, L-BFGS) before fine-tuning (LP-FT).
    backbone_lr_scale : the backbone's learning rate is ``lr * backbone_lr_scale`` (discriminative rates).
    bn : "train" (batch norm statistics updated on every batch) or "frozen" (eval mode: pretrained statistics;
        scale and shift still train).
    warmup : share of the run's optimizer steps over which the learning rate rises linearly from 0.
    label_smoothing : label smoothing of the cross-entropy (0 = none).
    patience : stop when the monitored validation figure has not improved for this many epochs; None = never.
    steps : training length in optimizer steps instead of ``epochs`` (whole epochs are run until it is reached).
    min_steps_per_epoch : shrink ``batch_size`` (not below 8) so that an epoch has at least this many optimizer
        steps; 0 = keep ``batch_size`` (a warning says when an epoch has fewer than 10 steps).
    freeze_stages : the first N stages of the network keep their weights and run in eval mode; "auto" = all but
        the last third on a CPU, none on a GPU (:mod:`deepfeat.finetuning.trunk`).
    cache_trunk : with frozen stages, compute their output once per image and view (flips / quarter turns) and
        train on it: "auto" (when the augmentation has no colour jitter), True or False.
    """

    recipe: str = defaults.RECIPE
    epochs: int = FROM_RECIPE
    batch_size: int = FROM_RECIPE
    lr: float = FROM_RECIPE
    optimizer: str = FROM_RECIPE
    momentum: float = FROM_RECIPE
    weight_decay: float = FROM_RECIPE
    schedule: str = FROM_RECIPE
    lr_drop_factor: float = FROM_RECIPE
    lr_drop_every: int = FROM_RECIPE
    grad_clip: float | None = FROM_RECIPE
    val_fraction: float = 0.3
    val_source: str | None = None
    augment: str = FROM_RECIPE
    balance: str = "none"
    freeze_backbone_epochs: int = FROM_RECIPE
    head: str = "keep1000"
    device: str = defaults.DEVICE
    workers: int | None = None
    seed: int = defaults.SEED
    precision: str = defaults.PRECISION
    channels_last: bool | str = "auto"
    image_size: int | None = None
    crop_border: bool = False
    monitor: str = "val_loss"
    objective: str = "crossentropy"
    linear_probe: bool = FROM_RECIPE
    backbone_lr_scale: float = FROM_RECIPE
    bn: str = FROM_RECIPE
    warmup: float = FROM_RECIPE
    label_smoothing: float = FROM_RECIPE
    patience: int | None = FROM_RECIPE
    steps: int | None = None
    min_steps_per_epoch: int = FROM_RECIPE
    freeze_stages: int | str = FROM_RECIPE
    cache_trunk: bool | str = "auto"

    def __post_init__(self):
        from deepfeat.finetuning.recipes import recipe_values

        for name, value in recipe_values(self.recipe).items():
            if getattr(self, name) is FROM_RECIPE:
                if name == "linear_probe" and self.objective != "crossentropy":
                    value = False  # the metric objectives train their own probe head alongside (objectives.py)
                setattr(self, name, value)
        self.validate()

    def validate(self) -> FinetuneConfig:
        from deepfeat.finetuning.training import parse_augment

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise DeepfeatError(
                    f"The '{name}' option of FinetuneConfig must be one of {', '.join(map(str, allowed))}. "
                    f"Got {getattr(self, name)!r} instead."
                )
        for name in ("epochs", "batch_size", "lr_drop_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise DeepfeatError(f"The '{name}' option of FinetuneConfig must be an int >= 1. "
                                    f"Got {getattr(self, name)!r} instead.")
        for name in ("lr", "lr_drop_factor", "backbone_lr_scale"):
            if not getattr(self, name) > 0:
                raise DeepfeatError(f"The '{name}' option must be > 0. Got {getattr(self, name)!r}.")
        for name, lo, hi in (("val_fraction", 0, 1), ("warmup", 0, 1), ("label_smoothing", 0, 1)):
            if not lo <= getattr(self, name) < hi:
                raise DeepfeatError(f"The '{name}' option must be in [{lo}, {hi}). Got {getattr(self, name)!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise DeepfeatError(f"The 'grad_clip' option must be > 0 or None. Got {self.grad_clip!r} instead.")
        if self.freeze_backbone_epochs < 0 or self.freeze_backbone_epochs > self.epochs:
            raise DeepfeatError("The 'freeze_backbone_epochs' option must be in [0, epochs]. "
                                f"Got {self.freeze_backbone_epochs!r} with epochs={self.epochs}.")
        if self.channels_last not in ("auto", True, False):
            raise DeepfeatError(f"The 'channels_last' option must be 'auto', true or false. Got {self.channels_last!r}.")
        if self.cache_trunk not in ("auto", True, False):
            raise DeepfeatError(f"The 'cache_trunk' option must be 'auto', true or false. Got {self.cache_trunk!r}.")
        if self.workers is not None and self.workers < 0:
            raise DeepfeatError(f"The 'workers' option must be >= 0 or None. Got {self.workers!r} instead.")
        for name in ("patience", "steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise DeepfeatError(f"The '{name}' option must be an int >= 1 or None. Got {v!r} instead.")
        if not isinstance(self.min_steps_per_epoch, int) or self.min_steps_per_epoch < 0:
            raise DeepfeatError(f"The 'min_steps_per_epoch' option must be an int >= 0. "
                                f"Got {self.min_steps_per_epoch!r} instead.")
        if self.freeze_stages != "auto" and (not isinstance(self.freeze_stages, int) or self.freeze_stages < 0):
            raise DeepfeatError(f"The 'freeze_stages' option must be 'auto' or an int >= 0. "
                                f"Got {self.freeze_stages!r} instead.")
        ops = parse_augment(self.augment)
        if self.cache_trunk is True and "color" in ops:
            raise DeepfeatError("cache_trunk=True cannot be used with colour jitter in 'augment' (random colours "
                                "change the frozen stages' output every epoch); drop 'color' or set cache_trunk "
                                "to 'auto' or false")
        if self.objective != "crossentropy" and self.linear_probe:
            raise DeepfeatError(f"objective={self.objective!r} trains a probe head on the embedding; "
                                "linear_probe=true applies to the crossentropy objective only (set it to false)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, *, where: str = "FinetuneConfig") -> FinetuneConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = {k: difflib.get_close_matches(k.replace("-", "_"), names, n=1) for k in unknown}
            said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
            raise DeepfeatError(f"{where}: unknown fine-tuning option(s) {said}; valid: {', '.join(names)}")
        return cls(**values)

    @classmethod
    def from_table(cls, table: dict, *, where: str, overrides: dict | None = None) -> FinetuneConfig:
        """The options of an experiment file's ``[finetune]`` table (the one place that reads it), then
        ``overrides`` (e.g. command-line options). The experiment keys ``enabled`` and ``in_fold`` say whether and
        where to fine-tune; they are not training options and are skipped here."""
        values = {k: v for k, v in dict(table).items() if k not in EXPERIMENT_KEYS}
        return cls.from_dict({**values, **(overrides or {})}, where=where)

    @classmethod
    def from_toml(cls, path, *, table: str = "finetune") -> FinetuneConfig:
        """Read the ``[finetune]`` table of a TOML file (or the whole file when it has no such table).

        The experiment keys ``enabled`` and ``in_fold`` of ``pipelines/*.toml`` are not training options and
        are skipped.
        """
        path = Path(path)
        try:
            data = read_toml(path, "fine-tuning config")
        except OSError as exc:
            raise DeepfeatError(f"cannot read fine-tuning config {path}: {exc}") from exc
        return cls.from_table(data.get(table, data) if table else data, where=str(path))


