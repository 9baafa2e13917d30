"""``deepfeat finetune``: fine-tune a network on labelled images.

Every training option defaults to "not given" (None): the recipe's value applies, then an experiment file's
``[finetune]`` table, then what was typed. The ``[default: ...]`` of each option's help is generated from
:class:`~deepfeat.finetuning.config.FinetuneConfig` and :data:`~deepfeat.finetuning.recipes.RECIPES`, so the help
cannot drift from the values a run uses.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import show_messages
from deepfeat.cli.options import PROGRESS_HELP, renamed_option, word_or_number
from deepfeat.finetuning.config import FROM_RECIPE, FinetuneConfig
from deepfeat.finetuning.recipes import RECIPES

# what each training option does; "[default: ...]" is appended by option_help()
HELP = {
    "epochs": "Training epochs", "steps": "Training length in optimizer steps instead of epochs",
    "lr": "Learning rate (the head's)", "optimizer": "sgd or adamw", "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay", "lr_drop_factor": "Step schedule: lr x this factor",
    "lr_drop_every": "Step schedule: every N epochs", "schedule": "step, cosine or constant, per optimizer step",
    "warmup": "Share of the steps with a linear learning-rate warm-up",
    "backbone_lr_scale": "Backbone learning rate = lr x this",
    "linear_probe": "Fit the new head on the frozen network's outputs first (LP-FT)",
    "bn": "Batch norm: train (statistics updated) or frozen (pretrained statistics)",
    "label_smoothing": "Label smoothing of the loss",
    "patience": "Early stopping: epochs without validation improvement",
    "freeze_stages": "Leading network stages kept frozen: a number or auto (all but the last third on a CPU, none "
                     "on a GPU)",
    "cache_trunk": "Cache the frozen stages' output per image and view: auto, true or false",
    "min_steps_per_epoch": "Shrink the batch so an epoch has at least this many steps",
    "grad_clip": "Clip gradients at this L2 norm", "batch_size": "Images per step",
    "val_fraction": "Share held out for validation, by class and subject",
    "val_source": "A separate validation image source instead",
    "augment": "cells (flips, 90-degree rotations, light colour jitter), none, or a comma list of flip, rot90, "
               "color",
    "balance": "none, oversample or class-weight",
    "freeze_backbone_epochs": "Epochs training only the head first (with the whole network computed each epoch; "
                              "--linear-probe is the one-pass way)",
    "head": "keep1000 (1000-d output kept as features) or replace", "device": "auto, cpu, cuda or cuda:N",
    "workers": "DataLoader workers", "seed": "Seed of the split, initialisation and order",
    "precision": "auto, fp32, bf16 or fp16 (autocast)", "image_size": "Network input size",
    "crop_border": "Crop the dark border of C-NMC-style images first",
    "monitor": "val_loss or val_accuracy: which epoch is kept as the best checkpoint",
    "objective": "crossentropy, siamese (contrastive pairs), triplet (semi-hard) or prototypical: metric learning "
                 "on the pooled embedding (extract --layer pooled)",
}
# what None means for an option whose default is None
NONE_MEANS = {"patience": "never", "workers": "auto", "image_size": "the model's"}
_FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}


def value_text(name: str, value) -> str:
    """A default as the help prints it: yes / no, 0.001, never, ..."""
    if value is None:
        return NONE_MEANS.get(name, "none")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(name: str) -> str:
    """The default of FinetuneConfig field ``name``: its value, or each recipe's (the default recipe first) when
    the recipe sets it and the recipes differ."""
    default = _FIELDS[name].default
    if default is not FROM_RECIPE:
        return value_text(name, default)
    order = [defaults.RECIPE] + [r for r in RECIPES if r != defaults.RECIPE]
    values = [value_text(name, RECIPES[r][name]) for r in order]
    return values[0] if len(set(values)) == 1 else ", ".join(f"{r} {v}" for r, v in zip(order, values))


def option_help(name: str) -> str:
    return f"{HELP[name]} [default: {default_text(name)}]."


def _option(name: str, *flags: str, **kw):
    return typer.Option(*flags, help=option_help(name), **kw)


def finetune_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Labelled image source (folder of class folders or CSV).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint file to write (.pt).")],
    model: Annotated[str, typer.Option(help="Network to fine-tune (timm name, darknet19, ...).")] = defaults.MODEL,
    weights: Annotated[str, typer.Option(help="Starting weights: imagenet, a file, or none.")] = defaults.WEIGHTS,
    experiment: Annotated[Optional[Path], typer.Option(help="Experiment TOML with a [finetune] table; the options "
                                                            "below override it.")] = None,
    config: Annotated[Optional[Path], typer.Option(hidden=True, help="0.2 name of --experiment.")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="transfer (LP-FT, backbone at 0.1x the head's rate, frozen "
                                                       "batch norm, warm-up + cosine, label smoothing, early "
                                                       "stopping; on a CPU frozen early stages with cached "
                                                       "activations) or study (the paper's MATLAB settings); the "
                                                       f"options below override it [default: {defaults.RECIPE}].")]
    = None,
    epochs: Annotated[Optional[int], _option("epochs", min=1)] = None,
    steps: Annotated[Optional[int], _option("steps", min=1)] = None,
    lr: Annotated[Optional[float], _option("lr")] = None,
    optimizer: Annotated[Optional[str], _option("optimizer")] = None,
    momentum: Annotated[Optional[float], _option("momentum")] = None,
    weight_decay: Annotated[Optional[float], _option("weight_decay")] = None,
    lr_drop_factor: Annotated[Optional[float], _option("lr_drop_factor")] = None,
    lr_drop_every: Annotated[Optional[int], _option("lr_drop_every")] = None,
    schedule: Annotated[Optional[str], _option("schedule")] = None,
    warmup: Annotated[Optional[float], _option("warmup")] = None,
    backbone_lr_scale: Annotated[Optional[float], _option("backbone_lr_scale")] = None,
    linear_probe: Annotated[Optional[bool], _option("linear_probe", "--linear-probe/--no-linear-probe")] = None,
    bn: Annotated[Optional[str], _option("bn")] = None,
    label_smoothing: Annotated[Optional[float], _option("label_smoothing")] = None,
    patience: Annotated[Optional[int], _option("patience", min=1)] = None,
    freeze_stages: Annotated[Optional[str], _option("freeze_stages", parser=word_or_number)] = None,
    cache_trunk: Annotated[Optional[str], _option("cache_trunk", parser=word_or_number)] = None,
    min_steps_per_epoch: Annotated[Optional[int], _option("min_steps_per_epoch", min=0)] = None,
    grad_clip: Annotated[Optional[float], _option("grad_clip")] = None,
    batch_size: Annotated[Optional[int], _option("batch_size", min=1)] = None,
    val_fraction: Annotated[Optional[float], _option("val_fraction")] = None,
    val_source: Annotated[Optional[str], _option("val_source")] = None,
    augment: Annotated[Optional[str], _option("augment")] = None,
    balance: Annotated[Optional[str], _option("balance")] = None,
    freeze_backbone_epochs: Annotated[Optional[int], _option("freeze_backbone_epochs", min=0)] = None,
    head: Annotated[Optional[str], _option("head")] = None,
    device: Annotated[Optional[str], _option("device")] = None,
    workers: Annotated[Optional[int], _option("workers", min=0)] = None,
    seed: Annotated[Optional[int], _option("seed")] = None,
    precision: Annotated[Optional[str], _option("precision")] = None,
    image_size: Annotated[Optional[int], _option("image_size", min=8)] = None,
    crop_border: Annotated[Optional[bool], _option("crop_border", "--crop-border/--no-crop-border")] = None,
    monitor: Annotated[Optional[str], _option("monitor")] = None,
    objective: Annotated[Optional[str], _option("objective")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="The NAME.last.pt of an interrupted run [default: "
                                                        "none].")] = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Report the network end to end next to "
                                          "SVMs on its features and on the frozen network's, on the same "
                                          "validation images (two extraction passes).")] = True,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Fine-tune a network on labelled images (default recipe: transfer; --recipe study = the reference study's
    MATLAB settings)."""
    from deepfeat.workflows import finetune_from_options

    show_messages(progress)
    options = {**ctx.params, "experiment": renamed_option(ctx, "config", "experiment")}
    del options["config"]
    result = finetune_from_options(**options)  # every option's CLI name is its library name
    typer.echo(result.summary())
    c = result.files.get("comparison") or {}
    if c and not c.get("skipped"):
        typer.echo(f"same {c['n_val']} validation images: network {100 * (c['network'] or 0):.1f} %, SVM on its "
                   f"{c['layer']} {100 * c['finetuned_svm']:.1f} %, SVM on the frozen network's "
                   f"{100 * c['frozen_svm']:.1f} %")
    typer.echo(f"report: {result.files['report_html']}")
