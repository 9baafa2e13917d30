"""The file-to-file workflows behind the ``deepfeat`` commands: read the inputs, call the library, write the outputs.

Each command of :mod:`deepfeat.cli` parses its options, calls ONE function of this module (or of
:mod:`deepfeat.experiments`) and prints what it returns; every decision lives here, in Python, where a script can
call it too. Precedence of settings, for ``cv`` and ``finetune`` with an experiment file: the library defaults,
then the experiment's table, then the options given (``overrides`` / ``options``: the CLI passes only the options
typed on the command line).

Names: ``experiment`` is an experiment file (a path or a shipped name, :func:`~deepfeat.experiments.find_experiment`);
``config`` names a run's settings only (a :class:`~deepfeat.finetuning.config.FinetuneConfig`, ``results.config``),
so 0.2's ``config=`` for the experiment file still works for this release, with a FutureWarning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.experiments import Experiment, config_overrides, find_experiment, run_experiment

__all__ = ["ExtractedFile", "Predictions", "compare_report", "cross_validate_experiment", "explain_images", "extract_to_file",
           "few_shot_report",
           "finetune_from_options", "fit_model", "fuse_files", "learning_curve_report", "predict_images",
           "run_named_experiment", "source_lines"]

# check_request's parameters among extract_features' options: checked before any image is opened
_REQUEST_KEYS = ("model", "layer", "tta", "precision", "channels_last", "batch_size")


def _experiment_file(experiment, config, where: str):
    """``experiment``, or 0.2's spelling ``config=`` of the same file (a FutureWarning)."""
    if config is None:
        return experiment
    if experiment is not None:
        raise DeepfeatError(f"{where}: give experiment= (the experiment file) only; config= is its 0.2 name")
    warnings.warn(f"{where}(config=...) is renamed experiment=... (config names a run's settings, such as a "
                  "FinetuneConfig); config= keeps working in 0.3 and goes in 0.4", FutureWarning, stacklevel=3)
    return config


# ----------------------------------------------------------------------------------------------- extract, fuse
@dataclass
class ExtractedFile:
    """What :func:`extract_to_file` wrote: the FeatureSet, its file, and every image left out (``skipped``:
    ``{"path", "reason"}``, entries skipped unopened first), listed in ``failed_csv`` (None when none)."""

    features: object
    path: Path
    failed_csv: Path | None
    skipped: list


def source_lines(source) -> list[str]:
    """What was found in an image source: its class counts (so a missing class shows) and every entry skipped
    unopened."""
    if source.labels is not None:
        counts = ", ".join(f"{c}: {n}" for c, n in source.class_counts.items())
        lines = [f"found {len(source)} images in {len(source.class_names)} classes ({counts})"]
    else:
        lines = [f"found {len(source)} unlabelled images in {source.root or source.name}"]
    return lines + [f"  skipped, never opened: {path}: {why}" for path, why in source.skipped]


def extract_to_file(source, output, *, manifest=None, on_error: str = "skip", log=None, **options) -> ExtractedFile:
    """``deepfeat extract``: the features of every image of ``source`` into the FeatureSet file ``output``.

    Parameters
    ----------
    source, manifest : as :func:`deepfeat.data.sources.open_source`.
    output : path of the FeatureSet file; every image left out is listed in ``OUTPUT.failed.csv``
        (:func:`~deepfeat.extraction.api.save_features`).
    on_error : "skip" (default here, since the failures are written beside the file) or "raise": stop when an
        image cannot be read (after caching the readable ones) or when an entry was skipped unopened.
    log : callable, optional
        Called with :func:`source_lines` once the source is open (the CLI prints them on stderr); without it,
        :func:`~deepfeat.data.sources.open_source` warns about entries skipped unopened.
    **options : :func:`~deepfeat.extraction.api.extract_features` options; the request is checked before any
        image is opened.
    """
    from deepfeat.data.sources import open_source
    from deepfeat.extraction.api import check_request, extract_features, save_features

    check_request(on_error=on_error, **{k: options[k] for k in _REQUEST_KEYS if k in options})
    src = open_source(source, manifest=manifest, warn_skipped=log is None)
    for line in source_lines(src) if log is not None else ():
        log(line)
    if on_error == "raise" and src.skipped:
        path, why = src.skipped[0]
        raise DeepfeatError(f"on_error='raise': {len(src.skipped)} entr(y/ies) under {source} were skipped "
                            f"unopened, e.g. {path}: {why}")
    fs = extract_features(src, on_error=on_error, **options)
    failed_csv, skipped = save_features(fs, output, also_skipped=src.skipped)
    return ExtractedFile(fs, Path(output), failed_csv, skipped)


def fuse_files(inputs, output):
    """``deepfeat fuse``: the columns of several FeatureSet files side by side (rows matched by image sha256),
    written to ``output``; returns the fused FeatureSet."""
    from deepfeat.extraction.fusion import fuse_features
    from deepfeat.features import load_features

    fs = fuse_features([load_features(p) for p in inputs], names=[str(p) for p in inputs])
    fs.save(output)
    return fs


# ----------------------------------------------------------------------------------------------- fit, predict
def fit_model(features, output, *, classifier=defaults.FIT_CLASSIFIER, select=defaults.FIT_SELECT,
              n_features=defaults.N_FEATURES, threshold=None, mrmr_method=defaults.MRMR_METHOD, class_weight=None,
              seed=defaults.SEED, calibrate=defaults.CALIBRATE, coverage=None,
              conformal_score=defaults.CONFORMAL_SCORE, class_conditional=defaults.CLASS_CONDITIONAL,
              non_empty=defaults.NON_EMPTY):
    """``deepfeat fit``: train one classifier pipeline on a FeatureSet file and save it; returns (model, path).

    ``calibrate``, ``coverage``, ``conformal_score``, ``class_conditional``, ``non_empty``: calibrate the
    probabilities and / or store conformal prediction sets with the model (:func:`deepfeat.evaluation.trust.
    fit_trust`; :func:`~deepfeat.evaluation.trust.trust_lines` says what was stored)."""
    from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
    from deepfeat.classifiers.model_files import save_model
    from deepfeat.classifiers.presets import make_selector
    from deepfeat.evaluation.trust import check_trust_options, fit_trust
    from deepfeat.features import load_features
    from deepfeat.selection.mrmr import resolve_n_features

    if select not in defaults.SELECTIONS:
        raise DeepfeatError(f"select must be one of {list(defaults.SELECTIONS)}; got {select!r}")
    check_trust_options(coverage=coverage, conformal_score=conformal_score)
    fs = load_features(features)
    n_features = resolve_n_features(n_features, fs.n_features, threshold=threshold)  # the one check, as in cv
    selector = make_selector(select, n_features=n_features, threshold=threshold, mrmr_method=mrmr_method)
    model = DeepFeatureClassifier.from_featureset(fs, classifier=classifier, selector=selector,
                                                  class_weight=class_weight, seed=seed)
    model = fit_trust(model, fs, calibrate=calibrate, coverage=coverage, conformal_score=conformal_score,
                      class_conditional=class_conditional, non_empty=non_empty, seed=seed)
    return model, save_model(model, output)


@dataclass
class Predictions:
    """What :func:`predict_images` wrote: ``table`` (one row per image: path, label, ``proba_<class>``, with a
    conformal model ``set``, ``set_size`` and ``decision`` (alone / refer), then error) and the CSV ``path``."""

    table: object
    path: Path

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every image that could not be read (it has no label)."""
        if "error" not in self.table:
            return []
        error = self.table["error"].fillna("").astype(str)
        return list(zip(self.table.loc[error != "", "path"], error[error != ""]))

    @property
    def n_predicted(self) -> int:
        return len(self.table) - len(self.unreadable)

    def check_any_predicted(self) -> Predictions:
        """Raise when not one image could be read (the CSV, already written, lists why)."""
        if len(self.table) and not self.n_predicted:
            raise DeepfeatError(f"none of the {len(self.table)} images could be read (listed in {self.path}); "
                                "nothing was predicted")
        return self


def predict_images(model_file, images, output, *, allow_version_mismatch: bool = False, trusted: bool = False,
                   progress: bool = True) -> Predictions:
    """``deepfeat predict``: the class of each image (files and folders, searched recursively) by the model file
    from ``deepfeat fit``, written to the CSV ``output``; unreadable images get their reason, not a failure."""
    from deepfeat.classifiers import model_files
    from deepfeat.data.sources import expand_image_paths
    from deepfeat.fileio import write_csv

    model = model_files.load_model(model_file, allow_version_mismatch=allow_version_mismatch, trusted=trusted)
    if hasattr(model, "progress"):
        model.progress = progress
    table = model.predict_paths(expand_image_paths(images), on_error="skip")
    conformal = getattr(model, "conformal_", None)
    if conformal:  # the set of plausible classes per image, and "refer" when it is not one class
        import pandas as pd

        from deepfeat.evaluation.conformal import set_columns

        proba = table[[f"proba_{c}" for c in model.classes_]].to_numpy(float)
        table = pd.concat([table.drop(columns="error"), set_columns(proba, conformal), table[["error"]]], axis=1)
    write_csv(table, output)
    return Predictions(table, Path(output))


def explain_images(model_file, images, out_dir, *, trusted: bool = False, allow_version_mismatch: bool = False,
                   device: str = defaults.DEVICE, batch_size: int = 8):
    """``deepfeat explain``: Grad-CAM saliency of each image (files and folders) for a model file, into ``out_dir``.

    ``model_file``: a model from ``deepfeat fit`` (its classifier's decision through the features), a checkpoint
    from ``deepfeat finetune`` (the network's own prediction) or a FeatureSet (its network's top output); see
    :mod:`deepfeat.explain.targets`. Writes ``NNNN_<name>.png`` (the network input and the overlay side by side),
    ``saliency.csv`` (one row per image: path, png, predicted, score, score_kind, flat, error), ``saliency.npz``
    (the maps, float16, with their paths) and ``explain.json`` (what was explained, with the versions). Returns
    the table; unreadable images get their reason in it, not a failure.
    """
    import datetime as _dt

    import numpy as np
    import pandas as pd
    from PIL import Image

    from deepfeat.data.sources import expand_image_paths
    from deepfeat.explain.targets import load_explainer
    from deepfeat.fileio import atomic_write, write_csv
    from deepfeat.provenance import package_versions
    from deepfeat.reporting.saliency import overlay_image
    from deepfeat.reporting.writing import write_json

    explainer = load_explainer(model_file, trusted=trusted, allow_version_mismatch=allow_version_mismatch,
                               device=device)
    paths = expand_image_paths(images)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, maps, mapped = [], [], []
    for i, s in enumerate(explainer.explain(paths, batch_size=batch_size)):
        png = ""
        if s.map is not None:
            png = f"{i:04d}_{Path(s.path).stem}.png"
            pair = np.concatenate([s.image, np.asarray(overlay_image(s.image, s.map))], axis=1)
            atomic_write(out / png, lambda tmp, pic=pair: Image.fromarray(pic).save(tmp, format="PNG"), fsync=False)
            maps.append(s.map.astype(np.float16))
            mapped.append(s.path)
        rows.append({"path": s.path, "png": png, "predicted": s.predicted, "score": s.score,
                     "score_kind": s.score_kind, "flat": s.flat, "error": s.error})
    table = pd.DataFrame(rows)
    write_csv(table, out / "saliency.csv")
    def write_maps(tmp):
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to the temporary name
            np.savez_compressed(fh, maps=np.stack(maps) if maps else np.zeros((0, 0, 0), np.float16),
                                paths=np.asarray(mapped, dtype=str))
    atomic_write(out / "saliency.npz", write_maps, fsync=False)
    write_json(out / "explain.json", {**explainer.describe(), "model_file": str(model_file), "n_images": len(paths),
                                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                      "versions": package_versions(("deepfeat", "torch", "timm", "numpy"),
                                                                   python=False)})
    return table


# ----------------------------------------------------------------------------------------------- cv, run, finetune
def cross_validate_experiment(source, out_dir, *, experiment=None, finetune_in_fold=None,
                              overrides: dict | None = None, progress: bool = True, log=print, config=None,
                              saliency: bool = defaults.SALIENCY):
    """``deepfeat cv``: FeatureSet file(s) -> cross-validation (several: a grid on identical folds) -> report.

    With ``experiment`` (an experiment file or shipped name), its whole procedure runs on ``source`` as the image
    source; ``finetune_in_fold`` is an experiment / fine-tune file whose fine-tuning runs inside each training
    fold. ``overrides`` (:func:`~deepfeat.evaluation.cross_validation.cross_validate` options) win over the
    experiment's ``[cv]`` table, which wins over the library defaults. ``saliency=False`` leaves the Grad-CAM
    overlays out of the report of a FeatureSet file (about one forward pass per gallery image). Returns the
    results object.
    """
    experiment = _experiment_file(experiment, config, "cross_validate_experiment")
    overrides = dict(overrides or {})
    sources = [source] if isinstance(source, (str, Path)) else list(source or [])
    if experiment or finetune_in_fold:
        if len(sources) > 1:
            raise DeepfeatError("an experiment file (--experiment / --finetune) takes one image source, not several "
                                "FeatureSet files")
        exp = Experiment.from_toml(find_experiment(experiment or finetune_in_fold))  # a path or a shipped name
        if finetune_in_fold:
            exp.finetune = {**exp.finetune, "enabled": True, "in_fold": True}
        return run_experiment(exp, out_dir, source=sources[0] if sources else None, overrides=overrides,
                              progress=progress, log=log)["results"]
    if not sources:
        raise DeepfeatError("give a FeatureSet file (deepfeat cv FEATURES -o DIR) or --experiment EXPERIMENT.toml")
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.evaluation.grid import named_by_stem
    from deepfeat.features import load_features
    from deepfeat.reporting.report import write_report

    features = load_features(sources[0]) if len(sources) == 1 else named_by_stem(sources, load_features)
    results = cross_validate(features, progress=progress, **overrides)
    write_report(results, out_dir, features=features if len(sources) == 1 else None, saliency=saliency)
    return results


def run_named_experiment(experiment, out_dir, *, source=None, weights=None, progress: bool = True,
                         log=print) -> dict:
    """``deepfeat run``: the experiment file or shipped name ``experiment`` on ``source`` (default: its ``[data]
    source``); ``weights`` replaces its ``[features] weights``. Returns :func:`run_experiment`'s dict."""
    exp = Experiment.from_toml(find_experiment(experiment))
    if weights:
        exp.features["weights"] = weights
    return run_experiment(exp, out_dir, source=source, progress=progress, log=log)


def finetune_from_options(source, output, *, model=defaults.MODEL, weights=defaults.WEIGHTS, experiment=None,
                          resume=None, progress: bool = True, compare: bool = True, config=None, **options):
    """``deepfeat finetune``: the ``[finetune]`` table of ``experiment`` (a TOML file, when given), then
    ``options`` (FinetuneConfig fields; None = not given), then fine-tune ``model`` on ``source`` and write its
    report; with ``compare``, the report puts the network end to end next to SVMs on its features and on the
    frozen network's, on the same validation images (two extraction passes). Returns the FinetuneResult
    (``files["comparison"]``: those figures)."""
    from deepfeat.finetuning.run import FinetuneConfig, finetune
    from deepfeat.reporting.finetune_report import write_finetune_report

    experiment = _experiment_file(experiment, config, "finetune_from_options")
    if experiment:
        settings = Experiment.from_toml(experiment).finetune_config(**options)
    else:
        settings = FinetuneConfig.from_dict(config_overrides(**options), where="fine-tune options")
    result = finetune(source, model=model, weights=weights, out=output, config=settings, resume=resume,
                      progress=progress)
    comparison = None
    if compare:
        from deepfeat.evaluation.finetune_compare import split_comparison

        comparison = split_comparison(result, source, model=model, weights=weights, progress=progress)
        result.files["comparison"] = comparison
    result.files["report_html"] = write_finetune_report(result, comparison=comparison)["report_html"]
    return result


# ----------------------------------------------------------------------------------------------- fewshot, curve
def few_shot_report(features, out_dir, **options):
    """``deepfeat fewshot``: :func:`~deepfeat.fewshot.evaluate.few_shot_evaluate` of the FeatureSet file
    ``features`` (``options``: its parameters), written as a report into ``out_dir``; returns (results, paths)."""
    from deepfeat.features import load_features
    from deepfeat.fewshot.evaluate import few_shot_evaluate
    from deepfeat.reporting.fewshot_report import write_fewshot_report

    results = few_shot_evaluate(load_features(features), **options)
    return results, write_fewshot_report(results, out_dir)


def learning_curve_report(features, out_dir, **options):
    """``deepfeat curve``: :func:`~deepfeat.fewshot.curves.learning_curve` of the FeatureSet file ``features``
    (``options``: its parameters), written as a report into ``out_dir``; returns (results, paths)."""
    from deepfeat.features import load_features
    from deepfeat.fewshot.curves import learning_curve
    from deepfeat.reporting.fewshot_report import write_curve_report

    results = learning_curve(load_features(features), **options)
    return results, write_curve_report(results, out_dir)


# ----------------------------------------------------------------------------------------------- compare
def compare_report(source, systems, output, *, reference=defaults.REFERENCE_SYSTEM, folds=defaults.COMPARE_FOLDS,
                   seed=defaults.SEED, groups=defaults.GROUPS, nested=defaults.COMPARE_NESTED,
                   inner_folds=defaults.INNER_FOLDS, skip_unavailable: bool = False, scheduler=defaults.SCHEDULER, resources=None,
                   progress: bool = True, log=None) -> dict:
    """``deepfeat compare``: the related systems (names of shipped system files, TOML paths, or ``"offline"``)
    and the reference method on the same outer folds of ``source``, with the report written into ``output``.

    Options as :func:`deepfeat.evaluation.systems.compare_systems`. Returns ``comparison`` (the
    :class:`~deepfeat.evaluation.systems.Comparison`), ``table`` (one row per system, numbers) and ``paths``.
    """
    from deepfeat.evaluation.systems import compare_systems
    from deepfeat.experiments import load_system, resolve_systems
    from deepfeat.reporting.compare_report import write_compare_report

    ref = load_system(reference)
    chosen = resolve_systems(systems)
    comparison = compare_systems(source, chosen, reference=ref, out_dir=output, folds=folds, seed=seed,
                                 groups=groups, nested=nested, inner_folds=inner_folds,
                                 skip_unavailable=skip_unavailable,
                                 scheduler=scheduler, resources=resources, progress=progress, log=log)
    paths = write_compare_report(comparison, output)
    return {"comparison": comparison, "table": paths.pop("table"), "paths": paths}
