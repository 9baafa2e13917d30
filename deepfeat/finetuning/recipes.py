"""Named fine-tuning recipes: the option values a run starts from before the user's own options.

``study`` reproduces the reference study's MATLAB ``trainingOptions`` (Dogan, Tasci & Tuncer 2023) exactly as
deepfeat 0.1 did: SGD with momentum 0.9, one learning rate 0.01 for every layer, mini-batch 128, 30 epochs, step
schedule x0.1 every 10 epochs, L2 1e-4, gradient clipping at 1.0, batch norm updated on every batch, the cell
augmentation. The ``dogan2023_*`` pipelines use it. It is right for reproducing the paper and wrong for a user who
wants better features from a small set: on 120 training images a batch of 128 is one optimizer step per epoch.

``transfer`` (the default) follows transfer-learning practice for small sets:

- linear probe first, then fine-tune (LP-FT; Kumar et al., ICLR 2022): the new head is fitted to convergence on
  the frozen network's outputs (one forward pass per image, L-BFGS) before any backbone weight moves, so the first
  fine-tuning steps do not push random-head gradients into the pretrained features;
- discriminative learning rates (Howard & Ruder 2018): the backbone learns at 0.1x the head's rate;
- AdamW, lr 1e-3 (head) with a linear warm-up over the first 10 % of the steps, then cosine decay to zero;
- batch norm in eval mode (pretrained statistics; Kolesnikov et al. 2020, BiT) -- small batches of one stain give
  poor batch statistics;
- label smoothing 0.1 (Szegedy et al. 2016; Mueller et al. 2019);
- early stopping on the validation split (patience 4 epochs), the best epoch kept;
- batch size 32, shrunk so that an epoch has at least 10 optimizer steps on small sets;
- flips and quarter turns only (the exact symmetries of an isolated cell); no colour jitter (stain colour is
  class information, and random colours cannot use the cached trunk);
- ``freeze_stages="auto"``: on a CPU the early stages are frozen and their output cached once per image and view
  (:mod:`deepfeat.finetuning.trunk`), so a run fits in minutes on 2 cores; on a GPU the whole network trains.

What each choice measured on the real sets, and which were kept, is in the README's "Fine-tuning recipes".
"""
from __future__ import annotations

from deepfeat.errors import DeepfeatError

RECIPES: dict[str, dict] = {
    "study": {
        "epochs": 30, "batch_size": 128, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4,
        "schedule": "step", "lr_drop_factor": 0.1, "lr_drop_every": 10, "grad_clip": 1.0, "augment": "cells",
        "freeze_backbone_epochs": 0, "linear_probe": False, "backbone_lr_scale": 1.0, "bn": "train",
        "warmup": 0.0, "label_smoothing": 0.0, "patience": None, "min_steps_per_epoch": 0, "freeze_stages": 0,
    },
    "transfer": {
        "epochs": 15, "batch_size": 32, "lr": 1e-3, "optimizer": "adamw", "momentum": 0.9, "weight_decay": 1e-4,
        "schedule": "cosine", "lr_drop_factor": 0.1, "lr_drop_every": 10, "grad_clip": 1.0, "augment": "flip,rot90",
        "freeze_backbone_epochs": 0, "linear_probe": True, "backbone_lr_scale": 0.1, "bn": "frozen",
        "warmup": 0.1, "label_smoothing": 0.1, "patience": 4, "min_steps_per_epoch": 10, "freeze_stages": "auto",
    },
}
RECIPE_NAMES = tuple(RECIPES)


def recipe_values(name: str) -> dict:
    """The option values of recipe ``name``."""
    if name not in RECIPES:
        raise DeepfeatError(f"The 'recipe' option must be one of {', '.join(RECIPES)}. Got {name!r} instead.")
    return dict(RECIPES[name])
