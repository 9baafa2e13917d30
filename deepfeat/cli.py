"""The ``deepfeat`` command line. Each command parses its options, calls one library function and prints the result.

Exit codes: 0 success; 1 unexpected failure (a bug: traceback shown); 2 bad input or configuration (a one-line
message naming the file or option and what to do).
"""
from __future__ import annotations

import errno
import logging
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import __version__, defaults
from deepfeat.cli_messages import (
    CliFormatter,
    models_text,
    say_interrupted,
    sigterm_interrupts,
    to_cli,
)
from deepfeat.errors import DeepfeatError

app = typer.Typer(
    help="Deep CNN features + mRMR + shallow classifiers for blood-smear images, measured honestly.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)


class OnError(str, Enum):
    raise_ = "raise"
    skip = "skip"


class MRMRMethod(str, Enum):
    fcq = "fcq"
    fcd = "fcd"
    miq = "miq"
    mid = "mid"


def _version(value: bool):
    if value:
        typer.echo(f"deepfeat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    """Deep CNN features + mRMR + shallow classifiers for blood-smear images, measured honestly."""


def _echo_err(message: str):
    typer.echo(message, err=True)


def _show_messages(progress: bool) -> None:
    """The library logs its decisions (logger ``deepfeat``); the CLI shows them on stderr unless --quiet."""
    logger = logging.getLogger("deepfeat")
    if not any(getattr(h, "_deepfeat_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()  # stderr at the time of each message (pytest's capture included)
        handler.setFormatter(CliFormatter("deepfeat: %(message)s"))
        handler._deepfeat_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if progress else logging.WARNING)


def _given(ctx: typer.Context, **values) -> dict:
    """The options typed on the command line (not left at their defaults): these override an experiment file."""
    # by name: typer may carry its own copy of click's ParameterSource enum
    return {k: v for k, v in values.items()
            if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}


PROGRESS_HELP = "Show progress bars and decisions on stderr (--quiet: only results and errors)."
SCHEDULER_HELP = ("Run on Dask (pip install \"deepfeat[dask]\"): local:N (N worker processes here) or a scheduler "
                  "address tcp://HOST:8786.")


def _dask_options(scheduler, **options) -> dict:
    """The Dask options, passed on only with --scheduler (and then checked before any work)."""
    if scheduler is None:
        return {}
    from deepfeat.dask_client import check_scheduler

    check_scheduler(scheduler)
    return {"scheduler": scheduler, **options}


def _list_models(value: bool):
    if value:
        _print_models()
        raise typer.Exit()


def _print_models() -> None:
    typer.echo(models_text())


@app.command()
def models():
    """List the models whose ImageNet weights are on this machine (offline) and what the others need."""
    _print_models()


# --------------------------------------------------------------------------------------------------------------
@app.command()
def extract(
    source: Annotated[str, typer.Argument(help="Folder of class sub-folders, a CSV (path,label[,group]) or a "
                                               "folder of unlabelled images.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="FeatureSet file to write (.npz archive).")],
    model: Annotated[str, typer.Option(help="Backbone: darknet19, tiny_darknet, resnet50, tf_efficientnet_lite0 "
                                            "or any timm name; several, comma-separated, and the hand-crafted "
                                            "colour_histogram / colour_moments give one fused FeatureSet.")]
    = defaults.MODEL,
    weights: Annotated[str, typer.Option(help="'imagenet' (offline-first), a file (.pth/.pt/.safetensors/Darknet "
                                              ".weights/deepfeat fine-tune checkpoint) or 'none' (random).")]
    = defaults.WEIGHTS,
    layer: Annotated[str, typer.Option(help="logits = the 1000-d output (as in the study); pooled = pre-logits; "
                                            "stageN = N-th stage feature map, average-pooled; comma-separated "
                                            "for several (one forward pass per model).")]
    = defaults.LAYER,
    manifest: Annotated[Optional[str], typer.Option(help="Dataset manifest (name in data_manifests/ or a TOML "
                                                         "path) to apply: class names, subject ids, counts.")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per forward pass (default: 32 on CUDA, "
                                                                  "8 on the CPU).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present, else CPU; says which), cpu, cuda, cuda:N.")]
    = defaults.DEVICE,
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader worker processes (default: auto).")]
    = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = defaults.PRECISION,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the on-disk feature cache.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default $DEEPFEAT_CACHE_DIR "
                                                           "or ~/.cache/deepfeat).")] = None,
    image_size: Annotated[Optional[int], typer.Option(min=8, help="Override the network input size.")] = None,
    crop_border: Annotated[bool, typer.Option(help="Crop the dark border of C-NMC-style images first.")] = False,
    strict: Annotated[bool, typer.Option(help="Stop with an error when any image is unreadable (after caching "
                                              "the readable ones). Default: leave them out and list them.")]
    = False,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
    tta: Annotated[str, typer.Option(help="none; flip = mean over identity + horizontal flip; d4 = mean over the "
                                          "8 flips / quarter turns (8x compute, one batch).")] = "none",
    max_pixels: Annotated[Optional[int], typer.Option(min=1, help="Refuse images declaring more pixels than "
                                                                  "this (default: Pillow's 89,478,485; a guard "
                                                                  "against decompression bombs).")] = None,
    list_models: Annotated[bool, typer.Option("--list-models", is_eager=True, callback=_list_models,
                                              help="List the models whose weights are here (offline) and exit.")]
    = False,
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP + " Shard tasks hash, serve cache hits "
                                                     "and compute misses on the workers; the cache folder must be "
                                                     "a path every worker sees.")] = defaults.SCHEDULER,
    shard_size: Annotated[int, typer.Option(min=1, help="Images per task with --scheduler.")] = defaults.SHARD_SIZE,
    resources: Annotated[Optional[str], typer.Option(help="Dask worker resources each task needs with "
                                                     "--scheduler, e.g. GPU=1 (workers started with "
                                                     "--resources GPU=1).")] = None,
):
    """Extract deep features of every image in SOURCE into a FeatureSet file (cached, resumable)."""
    from deepfeat.extraction.api import (  # torch-free until something is computed
        check_request,
        extract_features,
        save_features,
    )

    _show_messages(progress)
    check_request(model=model, layer=layer, tta=tta, precision=precision)  # before any image is opened
    _set_max_pixels(max_pixels)
    src = _open_quietly(source, manifest=manifest)
    _echo_source(src)
    if strict and src.skipped:
        raise DeepfeatError(f"--strict: {len(src.skipped)} entr(y/ies) under {source} were skipped unopened, e.g. "
                            f"{src.skipped[0][0]}: {src.skipped[0][1]}")
    with say_interrupted():
        fs = extract_features(src, model=model, weights=weights, layer=layer, batch_size=batch_size, device=device,
                              num_workers=workers, cache=(cache_dir or True) if cache else False,
                              precision=precision, crop_border=crop_border, image_size=image_size,
                              on_error="raise" if strict else "skip", progress=progress, tta=tta,
                              **_dask_options(scheduler, shard_size=shard_size, resources=resources))
    failed_csv, skipped = save_features(fs, output, also_skipped=src.skipped)
    meta = fs.meta
    typer.echo(f"wrote {output}: {len(fs)} images x {fs.n_features} features, cache hits "
               f"{meta.get('cache_hits', 0)}/{meta.get('n_input', len(fs))}, skipped {len(skipped)}, "
               f"{meta.get('seconds', 0):.1f} s")
    if skipped:
        _echo_err(f"{len(skipped)} unreadable image(s) were left out (listed in {failed_csv}):")
        for item in skipped:
            _echo_err(f"  {item['path']}: {item['reason']}")


# --------------------------------------------------------------------------------------------------------------
@app.command()
def cv(
    ctx: typer.Context,
    features: Annotated[Optional[list[str]], typer.Argument(
        help="FeatureSet file(s) (from 'deepfeat extract'); several form a grid scored on identical folds, named by "
             "their file stems; with --finetune or --config: one image source.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-cv"),
    classifier: Annotated[Optional[list[str]], typer.Option("--classifier", help="Preset name (repeatable): svm, "
                                                            "knn, ann, nb, svm-linear, knn-fine, ann-wide, nb-kernel"
                                                            "...")] = list(defaults.CLASSIFIERS),
    select: Annotated[Optional[list[str]], typer.Option("--select", help="none and/or mrmr (repeatable).")]
    = list(defaults.SELECTIONS),
    n_features: Annotated[str, typer.Option(help="Features kept by mRMR: an int, or auto = the study's 521 of "
                                                 "1000 (half the features when fewer).")] = defaults.N_FEATURES,
    mrmr_threshold: Annotated[Optional[float], typer.Option(help="Keep features whose mRMR score >= T instead.")]
    = None,
    mrmr_method: Annotated[MRMRMethod, typer.Option(help="mRMR variant.")] = MRMRMethod(defaults.MRMR_METHOD),
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = defaults.FOLDS,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats of the whole k-fold CV (seed, seed+1, ...).")]
    = defaults.REPEATS,
    groups: Annotated[str, typer.Option(help="auto (the FeatureSet's subject ids when present; said "
                                             "so), none, or FILE.csv:COLUMN with columns path and "
                                             "COLUMN (default 'group').")] = defaults.GROUPS,
    seed: Annotated[int, typer.Option(help="Seed of the folds and classifiers.")] = defaults.SEED,
    n_jobs: Annotated[int, typer.Option(help="Parallel folds (joblib).")] = defaults.N_JOBS,
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' to weight classes.")] = None,
    baseline: Annotated[str, typer.Option(help="auto, histogram, majority or none.")] = defaults.BASELINE,
    config: Annotated[Optional[Path], typer.Option(help="Experiment TOML (pipelines/*.toml): runs its whole "
                                                        "procedure on FEATURES as the image source.")] = None,
    finetune: Annotated[Optional[Path], typer.Option(help="Experiment/fine-tune TOML: fine-tune inside each "
                                                          "training fold (FEATURES is then an image source).")]
    = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
    nested: Annotated[Optional[bool], typer.Option("--nested", help="Also run nested CV: each outer fold chooses "
                                                   "feature set, mRMR size, classifier and its C / k by inner CV "
                                                   "on its training part only (the honest headline).")] = None,
    inner_folds: Annotated[Optional[int], typer.Option(
        min=2, help=f"Inner folds of --nested (default {defaults.INNER_FOLDS}).")] = None,
    fold_cache: Annotated[Optional[str], typer.Option(help="Folder caching fold results by identity (default: "
                                                      "<cache root>/cv-folds); 'none' disables.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP + " One task per fold x feature set x "
                                                     "classifier x selection; results equal a local run.")]
    = defaults.SCHEDULER,
):
    """Cross-validate classifiers on all vs mRMR-selected features and write the report."""
    from deepfeat.experiments import cross_validate_experiment

    _show_messages(progress)
    values = dict(classifier=classifier, select=select, n_features=_n_features(n_features),
                  mrmr_threshold=mrmr_threshold, mrmr_method=mrmr_method.value, folds=folds, repeats=repeats,
                  groups=groups, seed=seed, n_jobs=n_jobs, class_weight=class_weight, baseline=baseline,
                  nested=nested, inner_folds=inner_folds,
                  fold_cache=None if fold_cache is None else (False if fold_cache.lower() == "none" else fold_cache),
                  **_dask_options(scheduler))
    if config or finetune:  # an experiment file's [cv] table, overridden by what was typed
        values = _given(ctx, **values)
    names = {"classifier": "classifiers", "select": "selections", "mrmr_threshold": "threshold"}
    overrides = {names.get(k, k): v for k, v in values.items() if v is not None}
    results = cross_validate_experiment(features or None, output, config=config, finetune_in_fold=finetune,
                                        overrides=overrides, progress=progress, log=typer.echo)
    typer.echo(results.table().to_string())
    for line in results.honesty_lines() if hasattr(results, "honesty_lines") else []:
        typer.echo(line)
    from deepfeat.reporting.stats import comparison_lines, nested_lines

    for line in nested_lines(results) + (comparison_lines(results) if results.comparisons is not None else []):
        typer.echo(line)
    typer.echo(f"report: {output / 'report.html'}")


# --------------------------------------------------------------------------------------------------------------
@app.command()
def fit(
    features: Annotated[Path, typer.Argument(help="FeatureSet file to train on.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file (.joblib) to write; a .json sidecar "
                                                                "with its sha256 and versions is written beside.")],
    classifier: Annotated[str, typer.Option(help="Preset name (see 'deepfeat cv --help'). Default: svm with Platt "
                                                 "probabilities, so 'predict' writes class probabilities.")]
    = "svm-calibrated",
    select: Annotated[str, typer.Option(help="none or mrmr.")] = "none",
    n_features: Annotated[str, typer.Option(help="Features kept by mRMR: an int, or auto = the study's 521 of "
                                                 "1000 (half the features when fewer).")] = defaults.N_FEATURES,
    mrmr_threshold: Annotated[Optional[float], typer.Option(help="Keep features whose mRMR score >= T "
                                                                 "instead.")] = None,
    mrmr_method: Annotated[MRMRMethod, typer.Option(help="mRMR variant.")] = MRMRMethod(defaults.MRMR_METHOD),
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' to weight classes.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the classifier.")] = defaults.SEED,
):
    """Train one classifier pipeline on a FeatureSet and save it as a model file for 'deepfeat predict'."""
    from deepfeat.experiments import fit_model

    model, path = fit_model(features, output, classifier=classifier, select=select,
                            n_features=_n_features(n_features), threshold=mrmr_threshold,
                            mrmr_method=mrmr_method.value, class_weight=class_weight, seed=seed)
    typer.echo(f"wrote {path} ({classifier}, select={select}, trained on {model.training_features_['n_samples']} images, "
               f"classes: {', '.join(map(str, model.classes_))})")


# --------------------------------------------------------------------------------------------------------------
@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Model file from 'deepfeat fit' (load only files you trust: "
                                               "joblib files run code when loaded).")],
    images: Annotated[list[str], typer.Argument(help="Image files and/or folders (searched recursively).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV: path, label, one probability column "
                                                                "per class, error.")] = Path("predictions.csv"),
    allow_version_mismatch: Annotated[bool, typer.Option(help="Load a model saved with other library "
                                                              "versions anyway.")] = False,
    trust: Annotated[bool, typer.Option("--trust", help="Load a .joblib model that this deepfeat install did "
                                                        "not write (a pickle: it runs code). .skops files "
                                                        "never need it.")] = False,
    max_pixels: Annotated[Optional[int], typer.Option(min=1, help="Refuse images declaring more pixels than "
                                                                  "this (default: Pillow's 89,478,485).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Predict the class of each image; unreadable images are listed in the CSV and on stderr, not fatal."""
    from deepfeat.classifiers.model_files import load_model
    from deepfeat.data.sources import expand_image_paths
    from deepfeat.fileio import write_csv

    _show_messages(progress)
    _set_max_pixels(max_pixels)
    clf = load_model(model, allow_version_mismatch=allow_version_mismatch, trusted=trust)
    if hasattr(clf, "progress"):
        clf.progress = progress
    table = clf.predict_paths(expand_image_paths(images), on_error="skip")
    write_csv(table, output)
    bad = table[table["error"].fillna("").astype(str) != ""] if "error" in table else table.iloc[:0]
    typer.echo(f"wrote {output}: {len(table) - len(bad)} predicted, {len(bad)} unreadable")
    for _, row in bad.iterrows():
        _echo_err(f"  unreadable: {row['path']}: {row['error']}")
    if len(table) and len(bad) == len(table):
        raise DeepfeatError(f"none of the {len(table)} images could be read (listed above and in {output}); "
                            "nothing was predicted")


# --------------------------------------------------------------------------------------------------------------
def _int_or_word(text, name):
    """A typed "auto" / "true" / "false" / number option as the library wants it (None = not given)."""
    if text is None:
        return None
    low = str(text).strip().lower()
    if low in ("true", "false"):
        return low == "true"
    return int(low) if low.isdigit() else low


@app.command(name="finetune")
def finetune_cmd(
    source: Annotated[str, typer.Argument(help="Labelled image source (folder of class folders or CSV).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint file to write (.pt).")],
    model: Annotated[str, typer.Option(help="Network to fine-tune (timm name, darknet19, ...).")] = defaults.MODEL,
    weights: Annotated[str, typer.Option(help="Starting weights: imagenet, a file, or none.")] = defaults.WEIGHTS,
    config: Annotated[Optional[Path], typer.Option(help="TOML with a [finetune] table; options below override "
                                                        "it.")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="transfer (LP-FT, backbone at 0.1x the head's rate, frozen "
                                                       "batch norm, warm-up + cosine, label smoothing, early "
                                                       "stopping; on a CPU frozen early stages with cached "
                                                       "activations) or study (the paper's MATLAB settings); the "
                                                       f"options below override it [default: {defaults.RECIPE}].")]
    = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs [default: the recipe's: transfer 15, study 30].")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Training length in optimizer steps instead of epochs [default: none].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (the head's) [default: transfer 1e-3, study 0.01].")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd or adamw [default: transfer adamw, study sgd].")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum [default: 0.9].")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="L2 weight decay [default: 1e-4].")] = None,
    lr_drop_factor: Annotated[Optional[float], typer.Option(help="Step schedule: lr x this factor [default: 0.1].")] = None,
    lr_drop_every: Annotated[Optional[int], typer.Option(help="Step schedule: every N epochs [default: 10].")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="step, cosine or constant, per optimizer step [default: transfer cosine, study step].")] = None,
    warmup: Annotated[Optional[float], typer.Option(help="Share of the steps with a linear learning-rate warm-up [default: transfer 0.1, study 0].")] = None,
    backbone_lr_scale: Annotated[Optional[float], typer.Option(help="Backbone learning rate = lr x this [default: transfer 0.1, study 1].")] = None,
    linear_probe: Annotated[Optional[bool], typer.Option("--linear-probe/--no-linear-probe", help="Fit the new head on the frozen network's outputs first (LP-FT) [default: transfer yes, study no].")] = None,
    bn: Annotated[Optional[str], typer.Option(help="Batch norm: train (statistics updated) or frozen (pretrained statistics) [default: transfer frozen, study train].")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing of the loss [default: transfer 0.1, study 0].")] = None,
    patience: Annotated[Optional[int], typer.Option(min=1, help="Early stopping: epochs without validation improvement [default: transfer 4, study never].")] = None,
    freeze_stages: Annotated[Optional[str], typer.Option(help="Leading network stages kept frozen: a number or auto (all but the last third on a CPU, none on a GPU) [default: transfer auto, study 0].")] = None,
    cache_trunk: Annotated[Optional[str], typer.Option(help="Cache the frozen stages' output per image and view: auto, true or false [default: auto].")] = None,
    min_steps_per_epoch: Annotated[Optional[int], typer.Option(min=0, help="Shrink the batch so an epoch has at least this many steps [default: transfer 10, study 0].")] = None,
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip gradients at this L2 norm [default: 1.0].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per step [default: transfer 32, study 128].")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Share held out for validation, by class and subject [default: 0.3].")] = None,
    val_source: Annotated[Optional[str], typer.Option(help="A separate validation image source instead [default: none].")] = None,
    augment: Annotated[Optional[str], typer.Option(help="cells (flips, 90-degree rotations, light colour "
                                                        "jitter), none, or a comma list of flip, rot90, color "
                                                        "[default: transfer flip,rot90, study cells].")] = None,
    balance: Annotated[Optional[str], typer.Option(help="none, oversample or class-weight [default: none].")] = None,
    freeze_backbone_epochs: Annotated[Optional[int], typer.Option(min=0, help="Epochs training only the head first (with the whole network computed each epoch; --linear-probe is the one-pass way) [default: 0].")] = None,
    head: Annotated[Optional[str], typer.Option(help="keep1000 (1000-d output kept as features) or "
                                                     "replace [default: keep1000].")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N [default: auto].")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader workers [default: auto].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the split, initialisation and order [default: 0].")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto, fp32, bf16 or fp16 (autocast) [default: auto].")] = None,
    image_size: Annotated[Optional[int], typer.Option(min=8, help="Network input size [default: the model's].")] = None,
    crop_border: Annotated[Optional[bool], typer.Option("--crop-border/--no-crop-border", help="Crop the dark border of C-NMC-style images first [default: no].")] = None,
    monitor: Annotated[Optional[str], typer.Option(help="val_loss (default) or val_accuracy: which epoch is "
                                                        "kept as the best checkpoint [default: val_loss].")] = None,
    objective: Annotated[Optional[str], typer.Option(help="crossentropy (default), siamese (contrastive pairs), "
                                                          "triplet (semi-hard) or prototypical: metric learning "
                                                          "on the pooled embedding (extract --layer pooled).")]
    = None,
    resume: Annotated[Optional[Path], typer.Option(help="The NAME.last.pt of an interrupted run [default: none].")] = None,
    compare: Annotated[bool, typer.Option("--compare/--no-compare", help="Report the network end to end next to "
                                          "SVMs on its features and on the frozen network's, on the same "
                                          "validation images (two extraction passes).")] = True,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Fine-tune a network on labelled images (default recipe: transfer; --recipe study = the reference study's
    MATLAB settings)."""
    from deepfeat.experiments import finetune_from_options

    _show_messages(progress)
    result = finetune_from_options(
        source, output, model=model, weights=weights, config=config, resume=resume, progress=progress,
        compare=compare, epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
        lr_drop_factor=lr_drop_factor, lr_drop_every=lr_drop_every, schedule=schedule, grad_clip=grad_clip,
        batch_size=batch_size, val_fraction=val_fraction, val_source=val_source, augment=augment, balance=balance,
        freeze_backbone_epochs=freeze_backbone_epochs, head=head, device=device, workers=workers, seed=seed,
        precision=precision, image_size=image_size, crop_border=crop_border, monitor=monitor,
        objective=objective, recipe=recipe, steps=steps, warmup=warmup, backbone_lr_scale=backbone_lr_scale,
        linear_probe=linear_probe, bn=bn, label_smoothing=label_smoothing, patience=patience,
        freeze_stages=_int_or_word(freeze_stages, "freeze_stages"), cache_trunk=_int_or_word(cache_trunk, "cache_trunk"),
        min_steps_per_epoch=min_steps_per_epoch)
    typer.echo(result.summary())
    c = result.files.get("comparison") or {}
    if c and not c.get("skipped"):
        typer.echo(f"same {c['n_val']} validation images: network {100 * (c['network'] or 0):.1f} %, SVM on its "
                   f"{c['layer']} {100 * c['finetuned_svm']:.1f} %, SVM on the frozen network's "
                   f"{100 * c['frozen_svm']:.1f} %")
    typer.echo(f"report: {result.files['report_html']}")


# --------------------------------------------------------------------------------------------------------------
@app.command()
def fuse(
    inputs: Annotated[list[Path], typer.Argument(help="Two or more FeatureSet files of the same images.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Fused FeatureSet file to write.")],
):
    """Put the columns of several FeatureSet files side by side (rows matched by image sha256, any order)."""
    from deepfeat.features import load_features
    from deepfeat.extraction.fusion import fuse_features

    fs = fuse_features([load_features(p) for p in inputs], names=[str(p) for p in inputs])
    fs.save(output)
    typer.echo(f"wrote {output}: {len(fs)} images x {fs.n_features} features ({fs.meta['recipe']})")


# --------------------------------------------------------------------------------------------------------------
@app.command()
def run(
    experiment: Annotated[Optional[str], typer.Argument(help="Experiment: a shipped name (see --list) or a TOML "
                                                             "file.")] = None,
    source: Annotated[Optional[str], typer.Argument(help="Image source; overrides [data] source.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-run"),
    weights: Annotated[Optional[str], typer.Option(help="Override [features] weights (e.g. a downloaded "
                                                        "darknet19.weights).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped experiments and exit.")] = False,
):
    """Run a whole experiment file: (fine-tune ->) extract -> cross-validate -> report."""
    from deepfeat.experiments import (
        Experiment,
        find_experiment,
        run_experiment,
        shipped_experiments,
    )

    if list_ or experiment is None:
        for name, path in shipped_experiments().items():
            typer.echo(f"{name:<28} {Experiment.from_toml(path).description}")
        if not list_:
            raise DeepfeatError("name an experiment: deepfeat run NAME_OR_FILE.toml IMAGES (the shipped ones are "
                                "listed above)")
        return
    _show_messages(progress)
    exp = Experiment.from_toml(find_experiment(experiment))
    if weights:
        exp.features["weights"] = weights
    with say_interrupted():
        result = run_experiment(exp, output, source=source, progress=progress, log=typer.echo)
    typer.echo(result["results"].table().to_string())
    for line in result["results"].honesty_lines():
        typer.echo(line)
    typer.echo(f"report: {output / 'report.html'}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for images, features and report.")]
    = Path("deepfeat-demo"),
    n_per_class: Annotated[int, typer.Option(min=10, help="Synthetic images per class.")] = 40,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 10,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Offline demo: synthetic cells -> EfficientNet-Lite0 ImageNet features -> mRMR -> 10-fold cv -> report."""
    from deepfeat.experiments import run_demo

    _show_messages(progress)
    with say_interrupted():
        run_ = run_demo(output, n_per_class=n_per_class, folds=folds, progress=progress, log=typer.echo)
    typer.echo(run_["results"].table().to_string())
    for line in run_["results"].honesty_lines():
        typer.echo(line)
    typer.echo(f"demo finished in {run_['timings']['total_s']:.0f} s; report: {output / 'report.html'}")


def _n_features(value: str):
    """--n-features as typed (digits as an int): the library checks it once, knowing the features' width
    (:func:`deepfeat.selection.mrmr.resolve_n_features`)."""
    return int(value) if value.strip().isdigit() else value


def _set_max_pixels(max_pixels):
    """--max-pixels for this run, decoding worker processes included (they inherit the environment)."""
    if max_pixels is not None:
        import os

        from deepfeat.data.images import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(int(max_pixels))


def _open_quietly(spec, manifest=None):
    """open_source, with its 'skipped' warning left to _echo_source (said once, with the counts)."""
    import warnings

    from deepfeat.data.sources import open_source

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*skipped, never opened")
        return open_source(spec, manifest=manifest)


def _echo_source(src):
    """Say what was found: class counts (so a missing class shows) and every entry skipped unopened."""
    if src.labels is not None:
        counts = ", ".join(f"{c}: {n}" for c, n in src.class_counts.items())
        _echo_err(f"found {len(src)} images in {len(src.class_names)} classes ({counts})")
    else:
        _echo_err(f"found {len(src)} unlabelled images in {src.root or src.name}")
    for path, why in src.skipped:
        _echo_err(f"  skipped, never opened: {path}: {why}")


@app.command()
def fewshot(
    features: Annotated[Path, typer.Argument(help="FeatureSet file (any, fused ones included).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-fewshot"),
    ways: Annotated[str, typer.Option(help="Comma list of classes per episode; 'all' = every class with enough "
                                           "images. More ways than classes: skipped, said so.")] = "2,5,all",
    shots: Annotated[str, typer.Option(help="Comma list of labelled support images per class.")] = "1,5,10,20",
    queries: Annotated[int, typer.Option(min=1, help="Query images per class per episode.")] = 15,
    episodes: Annotated[int, typer.Option(min=2)] = 1000,
    method: Annotated[str, typer.Option(help="Comma list: prototype (= prototype_cos + prototype_euc), knn "
                                             "(1-NN), logreg, svm.")] = "prototype,knn,logreg,svm",
    groups: Annotated[str, typer.Option(help="auto (support and query never share a subject when the FeatureSet "
                                             "has subject ids) or none.")] = "auto",
    standardize: Annotated[str, typer.Option(help="support (knn/logreg/svm standardised with the support set's "
                                                  "statistics only) or none.")] = "support",
    baseline: Annotated[str, typer.Option(help="auto (colour histograms of the images on the same episodes when "
                                               "reachable), histogram or none.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
):
    """Few-shot accuracy (N-way K-shot episodes, 95 % CI) of a FeatureSet: fewshot.csv, plot, report."""
    from deepfeat.fewshot.evaluate import few_shot_evaluate
    from deepfeat.reporting.fewshot_report import write_fewshot_report
    from deepfeat.features import load_features

    res = few_shot_evaluate(load_features(features), ways=ways, shots=shots, queries=queries, episodes=episodes,
                            methods=method, groups=groups, standardize=standardize, seed=seed, baseline=baseline)
    paths = write_fewshot_report(res, output)
    typer.echo(res.display().to_string())
    for line in res.honesty_lines():
        typer.echo(line)
    for s in res.skipped:
        _echo_err(f"skipped ways={s['ways']} shots={s['shots']}: {s['reason']}")
    typer.echo(f"report: {paths['report_html']}")


@app.command()
def curve(
    features: Annotated[Path, typer.Argument(help="FeatureSet file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-curve"),
    sizes: Annotated[str, typer.Option(help="Comma list of training images per class; 'all' = the whole "
                                            "training pool.")] = "5,10,20,50,100,all",
    classifier: Annotated[str, typer.Option(help="Classifier preset (see 'deepfeat cv --help').")] = "svm",
    select: Annotated[str, typer.Option(help="mrmr or none.")] = "mrmr",
    n_features: Annotated[str, typer.Option(help="Features kept by mRMR: an int, or auto (as 'deepfeat cv').")]
    = defaults.N_FEATURES,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    test_fraction: Annotated[float, typer.Option(help="Share of images in each repeat's fixed test set.")] = 0.3,
    groups: Annotated[str, typer.Option(help="auto or none.")] = "auto",
    baseline: Annotated[str, typer.Option(help="auto (colour histograms when the images are reachable), "
                                               "histogram or none.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
):
    """Learning curve: accuracy on a fixed test set per repeat against training images per class."""
    from deepfeat.fewshot.curves import learning_curve
    from deepfeat.reporting.fewshot_report import write_curve_report
    from deepfeat.features import load_features

    res = learning_curve(load_features(features), sizes=sizes, classifier=classifier, select=select,
                         n_features=_n_features(n_features), repeats=repeats, test_fraction=test_fraction,
                         groups=groups, seed=seed, baseline=baseline)
    paths = write_curve_report(res, output)
    typer.echo(res.summary.to_string(index=False))
    for line in res.honesty_lines():
        typer.echo(line)
    for s in res.skipped:
        _echo_err(f"skipped size {s['size']}: {s['reason']}")
    typer.echo(f"report: {paths['report_html']}")


def main(argv=None):
    """Console entry point: bad input -> one clear line on stderr and exit code 2; usage errors as click does."""
    previous = sigterm_interrupts()
    try:
        app(args=argv, prog_name="deepfeat")
    except (DeepfeatError, FileNotFoundError) as exc:
        _echo_err(f"error: {to_cli(exc)}")
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in _ORDINARY_ERRNOS:
            raise
        _echo_err(f"error: {_ordinary_os_error(exc)}")
        sys.exit(2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# Operating-system failures a user can fix (permissions, a full or read-only disk): an `error:` line, not a traceback.
_ORDINARY_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR,
                    errno.ENOTDIR, errno.ENAMETOOLONG, errno.EMFILE}


def _ordinary_os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "write somewhere writable", errno.EACCES: "check the permissions or write elsewhere",
            errno.EPERM: "check the permissions or write elsewhere"}.get(exc.errno, "check the path")
    return (f"{exc.strerror or exc}{where}: {hint}. Files are written atomically, so nothing finished before was "
            "lost or left half-written")


if __name__ == "__main__":  # pragma: no cover
    main()
