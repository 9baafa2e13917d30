"""The ``deepfeat`` command line. Each command parses its options, calls one library function and prints the result.

Exit codes: 0 success; 1 unexpected failure (a bug: traceback shown); 2 bad input or configuration (a one-line
message naming the file or option and what to do).
"""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import __version__
from deepfeat.errors import DeepfeatError

app = typer.Typer(
    help="Deep CNN features + mRMR + shallow classifiers for blood-smear images, measured honestly.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)


class Layer(str, Enum):
    logits = "logits"
    pooled = "pooled"


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


# --------------------------------------------------------------------------------------------------------------
@app.command()
def extract(
    source: Annotated[str, typer.Argument(help="Folder of class sub-folders, a CSV (path,label[,group]) or a "
                                               "folder of unlabelled images.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="FeatureSet file to write (.npz archive).")],
    model: Annotated[str, typer.Option(help="Backbone: darknet19, tiny_darknet, resnet50, tf_efficientnet_lite0 "
                                            "or any timm name.")] = "darknet19",
    weights: Annotated[str, typer.Option(help="'imagenet' (offline-first), a file (.pth/.pt/.safetensors/Darknet "
                                              ".weights/deepfeat fine-tune checkpoint) or 'none' (random).")]
    = "imagenet",
    layer: Annotated[Layer, typer.Option(help="logits = the 1000-d output (as in the study); pooled = pre-logits.")]
    = Layer.logits,
    manifest: Annotated[Optional[str], typer.Option(help="Dataset manifest (name in data_manifests/ or a TOML "
                                                         "path) to apply: class names, subject ids, counts.")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per forward pass (default: 32 on CUDA, "
                                                                  "8 on the CPU).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present, else CPU; says which), cpu, cuda, cuda:N.")]
    = "auto",
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader worker processes (default: auto).")]
    = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = "auto",
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the on-disk feature cache.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default $DEEPFEAT_CACHE_DIR "
                                                           "or ~/.cache/deepfeat).")] = None,
    image_size: Annotated[Optional[int], typer.Option(min=8, help="Override the network input size.")] = None,
    crop_border: Annotated[bool, typer.Option(help="Crop the dark border of C-NMC-style images first.")] = False,
    strict: Annotated[bool, typer.Option(help="Stop with an error when any image is unreadable (after caching "
                                              "the readable ones). Default: leave them out and list them.")]
    = False,
    progress: Annotated[bool, typer.Option("--progress/--quiet")] = True,
):
    """Extract deep features of every image in SOURCE into a FeatureSet file (cached, resumable)."""
    from deepfeat.extraction.api import (
        extract_features,  # torch-free until something must be computed
    )

    src = source
    if manifest:
        from deepfeat.data.sources import open_source

        src = open_source(source, manifest=manifest)
    fs = extract_features(src, model=model, weights=weights, layer=layer.value, batch_size=batch_size,
                          device=device, num_workers=workers, cache=(cache_dir or True) if cache else False,
                          precision=precision, crop_border=crop_border, image_size=image_size,
                          on_error="raise" if strict else "skip", progress=progress)
    fs.save(output)
    meta = fs.meta
    skipped = meta.get("skipped") or []
    typer.echo(f"wrote {output}: {len(fs)} images x {fs.n_features} features, cache hits "
               f"{meta.get('cache_hits', 0)}/{meta.get('n_input', len(fs))}, skipped {len(skipped)}, "
               f"{meta.get('seconds', 0):.1f} s")
    if skipped:
        import pandas as pd

        failed_csv = output.with_name(output.name + ".failed.csv")
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(failed_csv, index=False)
        _echo_err(f"{len(skipped)} unreadable image(s) were left out (listed in {failed_csv}):")
        for item in skipped:
            _echo_err(f"  {item['path']}: {item['reason']}")


# --------------------------------------------------------------------------------------------------------------
@app.command()
def cv(
    features: Annotated[Optional[str], typer.Argument(help="FeatureSet file (from 'deepfeat extract'); with "
                                                           "--finetune or --config: an image source.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-cv"),
    classifier: Annotated[Optional[list[str]], typer.Option("--classifier", help="Preset name (repeatable): svm, "
                                                            "knn, ann, nb, svm-linear, knn-fine, ann-wide, nb-kernel"
                                                            "... Default: svm knn ann nb.")] = None,
    select: Annotated[Optional[list[str]], typer.Option("--select", help="none and/or mrmr (repeatable). "
                                                        "Default: both.")] = None,
    n_features: Annotated[Optional[int], typer.Option(min=1, help="Features kept by mRMR (default: the study's 521 "
                                                                  "of 1000; half the features when fewer).")] = None,
    mrmr_threshold: Annotated[Optional[float], typer.Option(help="Keep features whose mRMR score >= T instead.")]
    = None,
    mrmr_method: Annotated[MRMRMethod, typer.Option()] = MRMRMethod.fcq,
    folds: Annotated[Optional[int], typer.Option(min=2)] = None,
    repeats: Annotated[Optional[int], typer.Option(min=1)] = None,
    groups: Annotated[Optional[str], typer.Option(help="auto (the FeatureSet's subject ids when present; said "
                                                       "so), none, or FILE.csv[:COLUMN] with columns path and "
                                                       "COLUMN (default 'group').")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    n_jobs: Annotated[Optional[int], typer.Option(help="Parallel folds (joblib).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' to weight classes.")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="auto, histogram, majority or none.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Experiment TOML (pipelines/*.toml): runs its whole "
                                                        "procedure on FEATURES as the image source.")] = None,
    finetune: Annotated[Optional[Path], typer.Option(help="Experiment/fine-tune TOML: fine-tune inside each "
                                                          "training fold (FEATURES is then an image source).")]
    = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet")] = True,
):
    """Cross-validate classifiers on all vs mRMR-selected features and write the report."""
    from deepfeat.experiments import Experiment, config_overrides, run_experiment

    overrides = config_overrides(
        classifiers=classifier or None, selections=select or None, n_features=n_features, threshold=mrmr_threshold,
        mrmr_method=mrmr_method.value if mrmr_method != MRMRMethod.fcq else None, folds=folds, repeats=repeats,
        groups=groups, seed=seed, n_jobs=n_jobs, class_weight=class_weight, baseline=baseline,
    )
    if config or finetune:
        exp = Experiment.from_toml(config or finetune)
        if finetune:
            exp.finetune = {**exp.finetune, "enabled": True, "in_fold": True}
        run = run_experiment(exp, output, source=features, overrides=overrides, progress=progress)
        results = run["results"]
    else:
        if features is None:
            raise DeepfeatError("give a FeatureSet file (deepfeat cv FEATURES -o DIR) or --config EXPERIMENT.toml")
        from deepfeat.evaluation.cross_validation import cross_validate
        from deepfeat.evaluation.report import write_report
        from deepfeat.features import load_features

        fs = load_features(features)
        if mrmr_method == MRMRMethod.fcq:
            overrides.setdefault("mrmr_method", "fcq")
        results = cross_validate(fs, progress=progress, **overrides)
        write_report(results, output)
    typer.echo(results.table().to_string())
    for line in results.honesty_lines() if hasattr(results, "honesty_lines") else []:
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
    n_features: Annotated[Optional[int], typer.Option(min=1)] = None,
    mrmr_threshold: Annotated[Optional[float], typer.Option()] = None,
    mrmr_method: Annotated[MRMRMethod, typer.Option()] = MRMRMethod.fcq,
    class_weight: Annotated[Optional[str], typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 0,
):
    """Train one classifier pipeline on a FeatureSet and save it as a model file for 'deepfeat predict'."""
    from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
    from deepfeat.classifiers.model_files import save_model
    from deepfeat.features import load_features

    if select not in ("none", "mrmr"):
        raise DeepfeatError(f"--select must be 'none' or 'mrmr'; got {select!r}")
    fs = load_features(features)
    selector = None
    if select == "mrmr":
        from deepfeat.classifiers.presets import make_selector
        from deepfeat.evaluation.cross_validation import default_n_features

        if n_features is None and mrmr_threshold is None:
            n_features = default_n_features(fs.n_features)
        selector = make_selector("mrmr", n_features=n_features, threshold=mrmr_threshold,
                                 mrmr_method=mrmr_method.value)
    model = DeepFeatureClassifier.from_featureset(fs, classifier=classifier, selector=selector,
                                                  class_weight=class_weight, seed=seed)
    path = save_model(model, output)
    typer.echo(f"wrote {path} ({classifier}, select={select}, trained on {len(fs)} images, "
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
):
    """Predict the class of each image; unreadable images are listed in the CSV and on stderr, not fatal."""
    from deepfeat.classifiers.model_files import load_model
    from deepfeat.data.sources import open_source

    clf = load_model(model, allow_version_mismatch=allow_version_mismatch)
    paths: list[str] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            paths.extend(open_source(p).paths)
        elif p.exists():
            paths.append(str(p))
        else:
            raise DeepfeatError(f"{item} does not exist")
    if not paths:
        raise DeepfeatError(f"no images found in {', '.join(images)}")
    table = clf.predict_paths(paths, on_error="skip")
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    bad = table[table["error"].fillna("").astype(str) != ""] if "error" in table else table.iloc[:0]
    typer.echo(f"wrote {output}: {len(table) - len(bad)} predicted, {len(bad)} unreadable")
    for _, row in bad.iterrows():
        _echo_err(f"  unreadable: {row['path']}: {row['error']}")


# --------------------------------------------------------------------------------------------------------------
@app.command(name="finetune")
def finetune_cmd(
    source: Annotated[str, typer.Argument(help="Labelled image source (folder of class folders or CSV).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint file to write (.pt).")],
    model: Annotated[str, typer.Option()] = "darknet19",
    weights: Annotated[str, typer.Option()] = "imagenet",
    config: Annotated[Optional[Path], typer.Option(help="TOML with a [finetune] table; options below override "
                                                        "it.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    lr: Annotated[Optional[float], typer.Option()] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd or adamw.")] = None,
    momentum: Annotated[Optional[float], typer.Option()] = None,
    weight_decay: Annotated[Optional[float], typer.Option()] = None,
    lr_drop_factor: Annotated[Optional[float], typer.Option()] = None,
    lr_drop_every: Annotated[Optional[int], typer.Option()] = None,
    schedule: Annotated[Optional[str], typer.Option(help="step or cosine.")] = None,
    grad_clip: Annotated[Optional[float], typer.Option()] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,
    val_fraction: Annotated[Optional[float], typer.Option()] = None,
    val_source: Annotated[Optional[str], typer.Option()] = None,
    augment: Annotated[Optional[str], typer.Option(help="cells (flips, 90-degree rotations, light colour "
                                                        "jitter) or none.")] = None,
    balance: Annotated[Optional[str], typer.Option(help="none, oversample or class-weight.")] = None,
    freeze_backbone_epochs: Annotated[Optional[int], typer.Option(min=0)] = None,
    head: Annotated[Optional[str], typer.Option(help="keep1000 (default: 1000-d output kept as features) or "
                                                     "replace.")] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    workers: Annotated[Optional[int], typer.Option(min=0)] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto, fp32, bf16 or fp16 (autocast).")] = None,
    image_size: Annotated[Optional[int], typer.Option(min=8)] = None,
    crop_border: Annotated[Optional[bool], typer.Option("--crop-border/--no-crop-border")] = None,
    monitor: Annotated[Optional[str], typer.Option(help="val_loss (default) or val_accuracy: which epoch is "
                                                        "kept as the best checkpoint.")] = None,
    objective: Annotated[Optional[str], typer.Option(help="crossentropy (default), siamese (contrastive pairs), "
                                                          "triplet (semi-hard) or prototypical: metric learning "
                                                          "on the pooled embedding (extract --layer pooled).")]
    = None,
    resume: Annotated[Optional[Path], typer.Option(help="The NAME.last.pt of an interrupted run.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet")] = True,
):
    """Fine-tune a backbone on labelled images (defaults: the reference study's settings)."""
    from deepfeat.experiments import Experiment, config_overrides
    from deepfeat.finetuning.run import FinetuneConfig, finetune

    base = Experiment.from_toml(config).finetune if config else {}
    base = {k: v for k, v in base.items() if k not in {"enabled", "in_fold"}}
    options = {**base, **config_overrides(
        epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
        lr_drop_factor=lr_drop_factor, lr_drop_every=lr_drop_every, schedule=schedule, grad_clip=grad_clip,
        batch_size=batch_size, val_fraction=val_fraction, val_source=val_source, augment=augment, balance=balance,
        freeze_backbone_epochs=freeze_backbone_epochs, head=head, device=device, workers=workers, seed=seed,
        precision=precision, image_size=image_size, crop_border=crop_border, monitor=monitor,
        objective=objective)}
    try:
        cfg = FinetuneConfig(**options)
    except TypeError as exc:
        raise DeepfeatError(f"fine-tune options: {exc}") from exc
    result = finetune(source, backbone=model, weights=weights, out=output, config=cfg, resume=resume,
                      progress=progress)
    typer.echo(result.summary())


# --------------------------------------------------------------------------------------------------------------
@app.command()
def run(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML (see pipelines/).")],
    source: Annotated[Optional[str], typer.Argument(help="Image source; overrides [data] source.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-run"),
    weights: Annotated[Optional[str], typer.Option(help="Override [features] weights (e.g. a downloaded "
                                                        "darknet19.weights).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet")] = True,
):
    """Run a whole experiment file: [fine-tune ->] extract -> cross-validate -> report."""
    from deepfeat.experiments import Experiment, run_experiment

    exp = Experiment.from_toml(experiment)
    if weights:
        exp.features["weights"] = weights
    result = run_experiment(exp, output, source=source, progress=progress)
    typer.echo(result["results"].table().to_string())
    typer.echo(f"report: {output / 'report.html'}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for images, features and report.")]
    = Path("deepfeat-demo"),
    n_per_class: Annotated[int, typer.Option(min=10, help="Synthetic images per class.")] = 40,
    folds: Annotated[int, typer.Option(min=2)] = 10,
    progress: Annotated[bool, typer.Option("--progress/--quiet")] = True,
):
    """Offline demo: synthetic cells -> EfficientNet-Lite0 ImageNet features -> mRMR -> 10-fold cv -> report."""
    from deepfeat.experiments import run_demo

    run_ = run_demo(output, n_per_class=n_per_class, folds=folds, progress=progress, log=typer.echo)
    typer.echo(run_["results"].table().to_string())
    typer.echo(f"demo finished in {run_['timings']['total_s']:.0f} s; report: {output / 'report.html'}")


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
    from deepfeat.evaluation.fewshot import few_shot_evaluate
    from deepfeat.evaluation.fewshot_report import write_fewshot_report
    from deepfeat.features import load_features

    res = few_shot_evaluate(load_features(features), ways=ways, shots=shots, queries=queries, episodes=episodes,
                            methods=method, groups=groups, standardize=standardize, seed=seed, baseline=baseline)
    paths = write_fewshot_report(res, output)
    typer.echo(res.display().to_string())
    for line in res.honesty:
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
    n_features: Annotated[Optional[int], typer.Option(min=1, help="mRMR size (default as 'deepfeat cv').")] = None,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    test_fraction: Annotated[float, typer.Option(help="Share of images in each repeat's fixed test set.")] = 0.3,
    groups: Annotated[str, typer.Option(help="auto or none.")] = "auto",
    baseline: Annotated[str, typer.Option(help="auto (colour histograms when the images are reachable), "
                                               "histogram or none.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
):
    """Learning curve: accuracy on a fixed test set per repeat against training images per class."""
    from deepfeat.evaluation.curves import learning_curve
    from deepfeat.evaluation.fewshot_report import write_curve_report
    from deepfeat.features import load_features

    res = learning_curve(load_features(features), sizes=sizes, classifier=classifier, select=select,
                         n_features=n_features, repeats=repeats, test_fraction=test_fraction, groups=groups,
                         seed=seed, baseline=baseline)
    paths = write_curve_report(res, output)
    typer.echo(res.summary.to_string(index=False))
    for line in res.honesty:
        typer.echo(line)
    for s in res.skipped:
        _echo_err(f"skipped size {s['size']}: {s['reason']}")
    typer.echo(f"report: {paths['report_html']}")


def main(argv=None):
    """Console entry point: bad input -> one clear line on stderr and exit code 2; usage errors as click does."""
    try:
        app(args=argv, prog_name="deepfeat")
    except (DeepfeatError, FileNotFoundError) as exc:
        _echo_err(f"error: {exc}")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
