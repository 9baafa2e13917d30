"""``deepfeat cv``, ``deepfeat fit`` and ``deepfeat predict``: cross-validate a FeatureSet, train one model on it,
predict new images with that model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import echo_err, show_messages
from deepfeat.cli.options import (
    N_FEATURES_HELP,
    N_JOBS_HELP,
    PROGRESS_HELP,
    SCHEDULER_HELP,
    AllowVersionMismatch,
    MaxPixels,
    MRMRMethod,
    TrustModel,
    fold_cache_value,
    int_or_auto,
    renamed_option,
    set_max_pixels,
    typed_options,
)

# cv option -> cross_validate parameter (the options typed are passed on; the library has the defaults)
CV_OPTIONS = {"classifier": "classifiers", "select": "selections", "n_features": "n_features",
              "mrmr_threshold": "threshold", "mrmr_method": "mrmr_method", "folds": "folds", "repeats": "repeats",
              "groups": "groups", "seed": "seed", "n_jobs": "n_jobs", "class_weight": "class_weight",
              "baseline": "baseline", "nested": "nested", "inner_folds": "inner_folds", "fold_cache": "fold_cache",
              "scheduler": "scheduler", "resources": "resources", "coverage": "coverage",
              "conformal_score": "conformal_score", "class_conditional": "class_conditional"}
COVERAGE_HELP = ("Conformal prediction sets: the share of images whose set must hold the true class, e.g. 0.95 "
                 "(README, 'Trusting one prediction').")
SCORE_HELP = "Conformal score: lac (smallest sets) or aps (adaptive sets)."
MONDRIAN_HELP = "One conformal threshold per class (Mondrian), so every class keeps its coverage."


def _warm_workers(features, n_jobs) -> None:
    """Start the fold workers' server now (:func:`deepfeat.workers.warm_up`: its imports run beside this
    command's) when the folds will likely run on several workers: not for ``--n-jobs 1``, nor under ``auto`` when
    every input is a feature file too small to hold AUTO_PARALLEL_VALUES float32 values (one worker then)."""
    from deepfeat.evaluation.parameters import AUTO_PARALLEL_VALUES
    from deepfeat.workers import warm_up

    paths = [Path(f) for f in features or ()]
    if n_jobs == 1 or (n_jobs == "auto" and paths
                       and all(p.is_file() and p.stat().st_size < 4 * AUTO_PARALLEL_VALUES for p in paths)):
        return
    warm_up()


def cv(
    ctx: typer.Context,
    features: Annotated[Optional[list[str]], typer.Argument(
        help="FeatureSet file(s) (from 'deepfeat extract'); several form a grid scored on identical folds, named by "
             "their file stems; with --finetune or --experiment: one image source.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-cv"),
    classifier: Annotated[Optional[list[str]], typer.Option("--classifier", help="Preset name (repeatable): svm, "
                                                            "knn, ann, nb, svm-linear, knn-fine, ann-wide, nb-kernel"
                                                            "...")] = list(defaults.CLASSIFIERS),
    select: Annotated[Optional[list[str]], typer.Option("--select", help="none and/or mrmr (repeatable).")]
    = list(defaults.SELECTIONS),
    n_features: Annotated[str, typer.Option(parser=int_or_auto, metavar="<int|auto>", help=N_FEATURES_HELP)]
    = defaults.N_FEATURES,
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
    n_jobs: Annotated[str, typer.Option(parser=int_or_auto, metavar="<int|auto>", help=N_JOBS_HELP)]
    = defaults.N_JOBS,
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' to weight classes.")] = None,
    baseline: Annotated[str, typer.Option(help="auto, histogram, majority or none.")] = defaults.BASELINE,
    experiment: Annotated[Optional[str], typer.Option(help="Experiment (pipelines/*.toml or a shipped name): runs "
                                                           "its whole procedure on FEATURES as the image source; "
                                                           "the options typed here override its [cv] table.")]
    = None,
    config: Annotated[Optional[str], typer.Option(hidden=True, help="0.2 name of --experiment.")] = None,
    finetune: Annotated[Optional[Path], typer.Option(help="Experiment/fine-tune TOML: fine-tune inside each "
                                                          "training fold (FEATURES is then an image source).")]
    = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
    nested: Annotated[Optional[bool], typer.Option("--nested", help="Also run nested CV: each outer fold chooses "
                                                   "feature set, mRMR size, classifier and its C / k by inner CV "
                                                   "on its training part only (the honest headline).")] = None,
    inner_folds: Annotated[Optional[int], typer.Option(
        min=2, help=f"Inner folds of --nested and --coverage (default {defaults.INNER_FOLDS}).")] = None,
    fold_cache: Annotated[Optional[str], typer.Option(parser=fold_cache_value, help="Folder caching fold results "
                                                      "by identity (default: <cache root>/cv-folds); 'none' "
                                                      "disables.")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP + " One task per fold x feature set x "
                                                     "classifier x selection; results equal a local run. With "
                                                     "--finetune: one task per fold's fine-tuning.")]
    = defaults.SCHEDULER,
    coverage: Annotated[Optional[list[float]], typer.Option(help="Also measure conformal prediction sets at this "
                                                            "coverage on the outer folds (repeatable, e.g. 0.9 "
                                                            "0.95 0.99); calibrated inside each training part "
                                                            "(--inner-folds fits per fold and configuration).")]
    = None,
    conformal_score: Annotated[str, typer.Option(help=SCORE_HELP)] = defaults.CONFORMAL_SCORE,
    class_conditional: Annotated[bool, typer.Option("--class-conditional", help=MONDRIAN_HELP)]
    = defaults.CLASS_CONDITIONAL,
    resources: Annotated[Optional[str], typer.Option(help="Dask worker resources each fold's fine-tuning task needs "
                                                     "with --finetune and --scheduler (e.g. GPU=1 with workers "
                                                     "started with --resources GPU=1).")] = None,
    saliency: Annotated[bool, typer.Option("--saliency/--no-saliency", help="Grad-CAM overlays beside the report's "
                                           "gallery images (about one forward pass each).")] = defaults.SALIENCY,
):
    """Cross-validate classifiers on all vs mRMR-selected features and write the report."""
    if scheduler is None and finetune is None:
        _warm_workers(features, n_jobs)
    from deepfeat.reporting.stats import comparison_lines, nested_lines
    from deepfeat.reporting.trust import coverage_lines
    from deepfeat.workflows import cross_validate_experiment

    show_messages(progress)
    experiment = renamed_option(ctx, "config", "experiment")
    results = cross_validate_experiment(features or None, output, experiment=experiment, finetune_in_fold=finetune,
                                        overrides=typed_options(ctx, CV_OPTIONS), progress=progress, log=typer.echo,
                                        saliency=saliency)
    typer.echo(results.table().to_string())
    for line in results.honesty_lines() + nested_lines(results) + (
            comparison_lines(results) if results.comparisons is not None else []) + coverage_lines(results):
        typer.echo(line)
    typer.echo(f"report: {output / 'report.html'}")


def fit(
    features: Annotated[Path, typer.Argument(help="FeatureSet file to train on.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file (.joblib) to write; a .json sidecar "
                                                                "with its sha256 and versions is written beside.")],
    classifier: Annotated[str, typer.Option(help="Preset name (see 'deepfeat cv --help'). Default: svm with Platt "
                                                 "probabilities, so 'predict' writes class probabilities.")]
    = defaults.FIT_CLASSIFIER,
    select: Annotated[str, typer.Option(help="none or mrmr.")] = defaults.FIT_SELECT,
    n_features: Annotated[str, typer.Option(parser=int_or_auto, metavar="<int|auto>", help=N_FEATURES_HELP)]
    = defaults.N_FEATURES,
    mrmr_threshold: Annotated[Optional[float], typer.Option(help="Keep features whose mRMR score >= T "
                                                                 "instead.")] = None,
    mrmr_method: Annotated[MRMRMethod, typer.Option(help="mRMR variant.")] = MRMRMethod(defaults.MRMR_METHOD),
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' to weight classes.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the classifier.")] = defaults.SEED,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Calibrate the probabilities (sigmoid or "
                                                                "isotonic, chosen by 5-fold log loss); the "
                                                                "out-of-fold ECE before / after is printed and "
                                                                "stored.")] = defaults.CALIBRATE,
    coverage: Annotated[Optional[float], typer.Option(help=COVERAGE_HELP + " Stored with the model; 'predict' "
                                                      "then writes each image's set, its size and "
                                                      "alone / refer.")] = None,
    conformal_score: Annotated[str, typer.Option(help=SCORE_HELP)] = defaults.CONFORMAL_SCORE,
    class_conditional: Annotated[bool, typer.Option("--class-conditional", help=MONDRIAN_HELP)]
    = defaults.CLASS_CONDITIONAL,
    non_empty: Annotated[bool, typer.Option("--non-empty", help="An empty set gets the most probable class.")]
    = defaults.NON_EMPTY,
):
    """Train one classifier pipeline on a FeatureSet and save it as a model file for 'deepfeat predict'."""
    from deepfeat.evaluation.trust import trust_lines
    from deepfeat.workflows import fit_model

    model, path = fit_model(features, output, classifier=classifier, select=select, n_features=n_features,
                            threshold=mrmr_threshold, mrmr_method=mrmr_method.value, class_weight=class_weight,
                            seed=seed, calibrate=calibrate, coverage=coverage, conformal_score=conformal_score,
                            class_conditional=class_conditional, non_empty=non_empty)
    typer.echo(f"wrote {path} ({classifier}, select={select}, trained on {model.training_features_['n_samples']} "
               f"images, classes: {', '.join(map(str, model.classes_))})")
    for line in trust_lines(model):
        typer.echo(line)


def predict(
    model: Annotated[Path, typer.Argument(help="Model file from 'deepfeat fit' (load only files you trust: "
                                               "joblib files run code when loaded).")],
    images: Annotated[list[str], typer.Argument(help="Image files and/or folders (searched recursively).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV: path, label, one probability column "
                                                                "per class, [set, set_size, decision,] "
                                                                "error.")] = Path("predictions.csv"),
    allow_version_mismatch: AllowVersionMismatch = False,
    trust: TrustModel = False,
    max_pixels: MaxPixels = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Predict the class of each image; unreadable images are listed in the CSV and on stderr, not fatal."""
    from deepfeat.workflows import predict_images

    show_messages(progress)
    set_max_pixels(max_pixels)
    done = predict_images(model, images, output, allow_version_mismatch=allow_version_mismatch, trusted=trust,
                          progress=progress)
    typer.echo(f"wrote {output}: {done.n_predicted} predicted, {len(done.unreadable)} unreadable")
    for path, error in done.unreadable:
        echo_err(f"  unreadable: {path}: {error}")
    done.check_any_predicted()
