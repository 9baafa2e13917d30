"""Related published systems side by side, on the user's own images and the same outer folds.

A *system* is a pipeline file with a ``[system]`` table (``pipelines/related_*.toml``; parsed by
:func:`deepfeat.experiments.load_system` into a :class:`System`). Kinds:

- ``network``: fine-tuned inside each outer training fold (early stopping on a split of that training fold only,
  :class:`~deepfeat.evaluation.infold.FoldFinetuner`), scored by its own predictions on the fold's test images;
- ``fewshot``: a metric-learned embedding fine-tuned the same way, each test image taking the class of the
  nearest training-fold class mean (:mod:`deepfeat.evaluation.systems_fewshot`);
- ``features``: a classifier on a backbone's frozen features (extracted once, through the feature cache).

:func:`compare_systems` runs ONE :func:`~deepfeat.evaluation.cross_validation.cross_validate` on the reference
method's frozen features; its ``fold_features`` (:class:`~deepfeat.evaluation.system_folds.SystemFolds`) adds every
other system's fold predictions as extra rows. So every system is scored on exactly the same test rows, by the
same metrics, beside the reference and the sanity baselines (majority class, colour histogram + SVM), and the
paired statistics of the table (corrected resampled t-test) compare each of them with the reference and with the
colour baseline. The nested estimate of the reference method (configuration chosen inside each training fold) is
a second ``cross_validate(nested=True)`` on the same folds. Each system's fold is kept under ``DIR/systems/``: a
second run loads finished folds and computes only what is new.
"""
from __future__ import annotations

import functools
import hashlib
import math
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepfeat import defaults
from deepfeat.errors import DeepfeatError, WeightsUnavailableError
from deepfeat.evaluation.compare import fold_size_ratio, lookup
from deepfeat.evaluation.fold_work import BASELINE_HISTOGRAM, BASELINE_MAJORITY, BASELINE_TEXT
from deepfeat.evaluation.intervals import mean_interval
from deepfeat.evaluation.parameters import check_count
from deepfeat.evaluation.results import config_name
from deepfeat.evaluation.system_folds import SystemFolds, fold_records, result_key

__all__ = ["Comparison", "System", "compare_systems", "system_table", "weights_problem"]

_METRIC_OBJECTIVES = ("siamese", "triplet", "prototypical")


@dataclass
class System:
    """One system file: its ``[system]`` table and the tables that say how to run it."""

    name: str
    kind: str
    label: str
    model: str
    weights: str = defaults.WEIGHTS
    layer: str = defaults.LAYER
    finetune: dict = field(default_factory=dict)
    cv: dict = field(default_factory=dict)
    paper: str = ""
    reported: str = ""
    twin_of: str | None = None
    twin_note: str | None = None
    path: str | None = None

    def __post_init__(self):
        where = self.path or self.name
        if self.kind in ("network", "fewshot"):
            if not self.finetune:
                raise DeepfeatError(f"{where}: a {self.kind} system is fine-tuned inside each fold: it needs a "
                                    "[finetune] table")
            if self.cv:
                raise DeepfeatError(f"{where}: [cv] is for kind = \"features\" systems only (a {self.kind} system "
                                    "is scored by its own predictions)")
            cfg = self.finetune_config(0)
            if self.kind == "network" and (cfg.objective != "crossentropy" or self.layer != "logits"):
                raise DeepfeatError(f"{where}: a network system is scored by its own outputs: [finetune] objective "
                                    f"crossentropy and [features] layer \"logits\"; got {cfg.objective!r}, "
                                    f"{self.layer!r} (a metric-learning objective is kind = \"fewshot\")")
            if self.kind == "fewshot" and cfg.objective not in _METRIC_OBJECTIVES:
                raise DeepfeatError(f"{where}: a fewshot system needs [finetune] objective in "
                                    f"{', '.join(_METRIC_OBJECTIVES)}; got {cfg.objective!r}")
        else:
            if self.finetune.get("enabled", bool(self.finetune)):
                raise DeepfeatError(f"{where}: a features system uses frozen features; drop its [finetune] table "
                                    "(a fine-tuned system is kind = \"network\")")
            for key in ("classifiers", "selections"):
                value = self.cv.get(key, [])
                if not isinstance(value, str) and len(value) > 1:
                    raise DeepfeatError(f"{where}: a features system is one row of the table: [cv] {key} names one "
                                        f"value; got {value!r}")

    @property
    def classifier(self) -> str:
        value = self.cv.get("classifiers", ["svm"])
        return value if isinstance(value, str) else value[0]

    @property
    def selection(self) -> str:
        value = self.cv.get("selections", ["mrmr"])
        return value if isinstance(value, str) else value[0]

    def finetune_config(self, seed: int):
        """The system's :class:`~deepfeat.finetuning.run.FinetuneConfig` (``seed`` when the file sets none)."""
        from deepfeat.finetuning.run import FinetuneConfig

        table = {"seed": seed, **self.finetune}
        return FinetuneConfig.from_table(table, where=f"{self.path or self.name} [finetune]")

    @functools.cached_property
    def config_hash(self) -> str:
        """sha256 of everything that changes the system's results (not its label or paper text)."""
        weights = str(self.weights)
        if weights.lower() not in ("imagenet", "none") and Path(weights).expanduser().is_file():
            from deepfeat.fileio import sha256_file

            weights = f"{weights} sha256:{sha256_file(Path(weights).expanduser())}"
        return hashlib.sha256(json.dumps({"kind": self.kind, "model": self.model, "weights": weights,
                                          "layer": self.layer, "finetune": self.finetune, "cv": self.cv},
                                         sort_keys=True, default=str).encode()).hexdigest()

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "kind", "label", "model", "weights", "layer", "finetune",
                                              "cv", "paper", "reported", "twin_of", "twin_note", "path")} | {
            "config_hash": self.config_hash}


def weights_problem(system: System) -> str | None:
    """Why the system's starting weights cannot be had here (None when they can): checked by building the network
    (no training), so a download the machine cannot make shows before any work."""
    from deepfeat.backbones import create_backbone
    from deepfeat.catalog import offline_models

    weights = str(system.weights)
    if weights.lower() == "none":
        return None
    if weights.lower() != "imagenet":
        return None if Path(weights).expanduser().is_file() else f"weights file {weights} does not exist"
    if any(m["model"].split(".")[0] == system.model for m in offline_models()):
        return None
    try:
        create_backbone(system.model, weights)
    except WeightsUnavailableError as exc:  # its first lines: what is missing and every source tried
        lines = []
        for line in str(exc).splitlines():
            if line.startswith("To fix"):
                break
            lines.append(line.strip().removeprefix("- "))
        return " ".join(lines)
    return None


@dataclass
class Comparison:
    """What :func:`compare_systems` measured.

    ``results`` is the CVResults of the one cross-validation (the reference rows, every system's rows, the
    baselines, ``comparisons``); ``configs`` maps system name -> its configuration name there; ``nested`` the
    nested estimate of the reference method (or None); ``skipped`` system name -> why it was left out;
    ``records`` system name -> its fold records (cost, checkpoint hash, whether computed now); ``extraction``
    system name -> the cost of its frozen features.
    """

    results: object
    reference: System
    systems: list
    configs: dict
    nested: dict | None
    skipped: dict
    records: dict
    extraction: dict
    run_id: str
    config: dict


def _check_plan(reference: System, systems, skip_unavailable: bool, log) -> tuple[list, dict]:
    """Every check that needs no images: kinds, the few-shot scoring, weights (fail fast, before any training)."""
    if reference.kind != "features":
        raise DeepfeatError(f"the reference system must be kind = \"features\"; {reference.name} is {reference.kind}")
    unique = {}
    for s in systems or []:
        if s.name != reference.name and unique.setdefault(s.name, s) != s:
            raise DeepfeatError(f"two different systems are named {s.name!r} ({unique[s.name].path}, {s.path})")
    systems = list(unique.values())
    if any(s.kind == "fewshot" for s in systems):
        import importlib.util

        if importlib.util.find_spec("deepfeat.evaluation.systems_fewshot") is None:
            raise DeepfeatError("kind = \"fewshot\" systems need deepfeat.evaluation.systems_fewshot, which this "
                                "installation lacks")
    problem = weights_problem(reference)
    if problem:
        raise DeepfeatError(f"the reference system {reference.name} cannot run here: {problem}")
    missing = {s.name: p for s in systems if (p := weights_problem(s))}
    if missing and not skip_unavailable:
        listed = "; ".join(f"{n}: {p}" for n, p in missing.items())
        twins = ", ".join(f"{n}_offline" for n in missing if not n.endswith("_offline"))
        raise DeepfeatError(f"{len(missing)} system(s) need weights that cannot be had here (nothing was trained): "
                            f"{listed}. Use their offline twins ({twins or 'none'}; `--systems offline` takes every "
                            "shipped one), pass a weights file in the system's [features] weights, or add "
                            "--skip-unavailable to leave them out (the report lists them)")
    for name, why in missing.items():
        log(f"skipping {name}: {why}")
    return [s for s in systems if s.name not in missing], missing


def _extract(system: System, src, progress: bool) -> tuple[object, dict]:
    from deepfeat.extraction.api import extract_features

    wall0, cpu0 = time.perf_counter(), time.process_time()
    fs = extract_features(src, model=system.model, weights=system.weights, layer=system.layer, progress=progress)
    return fs, {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                "n_features": int(fs.n_features)}


def compare_systems(source, systems, *, reference: System, out_dir, folds: int = defaults.COMPARE_FOLDS,
                    seed: int = defaults.SEED, groups=defaults.GROUPS, nested: bool = defaults.COMPARE_NESTED,
                    inner_folds: int = defaults.INNER_FOLDS, skip_unavailable: bool = False, scheduler=defaults.SCHEDULER, resources=None,
                    progress: bool = True, log=None) -> Comparison:
    """Every system on the same outer folds of ``source``, beside the reference method and the baselines.

    Parameters
    ----------
    source : str, Path or ImageSource
        Labelled images.
    systems : list of System
        The systems to compare (:func:`deepfeat.experiments.resolve_systems` turns names into them).
    reference : System
        The reference method (kind ``features``); always in the table.
    out_dir : path
        Each system's folds are kept in ``out_dir/systems/<name>/foldNN.{npz,json}`` (network checkpoints
        ``foldNN.pt`` beside them); a finished fold is loaded, never recomputed.
    folds, seed, groups :
        The outer folds (:func:`deepfeat.evaluation.folds.make_folds`), one seed for every system.
    nested, inner_folds :
        Also the nested estimate of the reference method on the same folds (run first), with ``inner_folds``
        inner folds.
    skip_unavailable : bool
        Leave out systems whose weights cannot be had here (and say so); by default that is an error, raised
        before any training.
    scheduler, resources :
        Dask: each outer fold (every system's training for that fold) as one task (as ``cross_validate``).
    """
    from deepfeat.data.images import sha256_file
    from deepfeat.data.sources import open_source
    from deepfeat.evaluation.cross_validation import cross_validate

    log = log or (lambda _msg: None)
    check_count("folds", folds, 2)
    systems, skipped = _check_plan(reference, systems, skip_unavailable, log)
    src = open_source(source)
    if src.labels is None:
        raise DeepfeatError(f"source {src.name} has no labels: a comparison needs labelled images")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref_fs, extraction = None, {}
    ref_fs, extraction[reference.name] = _extract(reference, src, progress)
    frozen = {}
    for s in systems:
        if s.kind == "features":
            fs, extraction[s.name] = _extract(s, src, progress)
            frozen[s.name] = fs.X
    sha = list(ref_fs.sha256) if ref_fs.sha256 is not None else [sha256_file(p) for p in src.paths]
    run_id = uuid.uuid4().hex
    fold_fn = SystemFolds(src, systems, ref_fs.X, features=frozen, out_dir=out, sha256=sha, seed=seed,
                          run_id=run_id, progress=progress, on_cluster=scheduler is not None)
    cv = dict(classifiers=[reference.classifier], selections=[reference.selection],
              n_features=reference.cv.get("n_features", defaults.N_FEATURES),
              mrmr_method=reference.cv.get("mrmr_method", defaults.MRMR_METHOD), folds=folds, seed=seed,
              groups=groups, progress=progress)
    nres = None
    if nested:  # first: it is cheap beside the systems' training, and its inner folds are checked here
        log("nested cross-validation of the reference method on the same folds")
        nres = cross_validate(ref_fs, nested=True, inner_folds=inner_folds, **cv)
    log(f"comparing {len(systems) + 1} systems on {len(src)} images, {folds} folds (seed {seed})")
    results = cross_validate(ref_fs, fold_features=fold_fn, scheduler=scheduler, resources=resources, **cv)
    if nres is not None:
        _check_same_folds(results, nres)
    configs = {reference.name: config_name(reference.classifier, reference.selection)}
    configs.update({s.name: config_name(*result_key(s)) for s in systems})
    config = {"folds": folds, "seed": seed, "groups": groups if isinstance(groups, str) or groups is None
              else "array", "nested": nested,
              "inner_folds": inner_folds if nested else None, "reference": reference.to_dict(),
              "systems": [s.to_dict() for s in systems], "skipped": skipped, "n_images": len(src),
              "source": str(src.root or src.name), "run_id": run_id, "versions": results.config["versions"]}
    return Comparison(results, reference, systems, configs, nres.nested if nres is not None else None, skipped,
                      fold_records(out, systems, folds), extraction, run_id, config)


def _check_same_folds(a, b) -> None:
    """The nested run's outer folds are those of the table (same labels, groups, folds and seed)."""
    def folds_of(results):
        p = results.predictions.drop_duplicates(["repeat", "fold", "row"])
        return p.set_index("row")["fold"].sort_index()

    if not folds_of(a).equals(folds_of(b)):
        raise DeepfeatError("internal: the nested cross-validation used other outer folds than the table")


def _fold_cost(records, key: str) -> float:
    values = [r[key] for r in records if r is not None]
    return float(np.sum(values)) if values else float("nan")


def system_table(comparison: Comparison) -> pd.DataFrame:
    """One row per system (reference first, then the systems, then the baselines): accuracy with its 95 %
    interval, macro F1, ROC AUC, p-values against the reference and the colour-histogram baseline (corrected
    resampled t-test over the folds), training cost, the offline-twin marker and the paper's own figure."""
    res = comparison.results
    ratio, n = fold_size_ratio(res), int(res.config["featureset"]["n_rows"])
    per_fold = res.per_fold
    ref_cfg = comparison.configs[comparison.reference.name]
    summary = res.summary.set_index("config")
    entries = [(comparison.reference, ref_cfg)] + [(s, comparison.configs[s.name]) for s in comparison.systems]
    entries += [(None, b) for b in (BASELINE_HISTOGRAM, BASELINE_MAJORITY) if b in summary.index]
    rows = []
    for system, cfg in entries:
        iv = mean_interval(per_fold.loc[per_fold["config"] == cfg, "accuracy"], test_train_ratio=ratio,
                           bounds=(0.0, 1.0), n_items=n)
        vs_ref = lookup(res.comparisons, cfg, ref_cfg) if cfg != ref_cfg else None
        vs_hist = lookup(res.comparisons, cfg, BASELINE_HISTOGRAM) if cfg != BASELINE_HISTOGRAM else None
        records = comparison.records.get(system.name, []) if system is not None else []
        extraction = comparison.extraction.get(system.name) if system is not None else None
        cpu = _fold_cost(records, "cpu_s") if records else float("nan")
        if extraction:  # a features system: its frozen features once, plus its classifier's fits
            fits = 0.0 if records else float(per_fold.loc[per_fold["config"] == cfg, "fit_time"].sum())
            cpu = (0.0 if math.isnan(cpu) else cpu) + extraction["cpu_s"] + fits
        rows.append({
            "system": system.name if system is not None else cfg,
            "label": system.label if system is not None else f"baseline: {BASELINE_TEXT[cfg]}",
            "kind": system.kind if system is not None else "baseline", "config": cfg,
            "accuracy": iv.mean, "accuracy_low": iv.low, "accuracy_high": iv.high,
            "f1_macro": float(summary.loc[cfg, "f1_macro_mean"]), "roc_auc": float(summary.loc[cfg, "roc_auc_mean"]),
            "p_vs_reference": vs_ref["p_value"] if vs_ref else float("nan"),
            "diff_vs_reference": vs_ref["mean_diff"] if vs_ref else float("nan"),
            "p_vs_colour_baseline": vs_hist["p_value"] if vs_hist else float("nan"),
            "train_cpu_s": cpu, "gpu_s": _fold_cost(records, "gpu_s") if records else 0.0,
            "folds_computed_now": sum(1 for r in records if r and r.get("run_id") == comparison.run_id)
            if records else None,
            "offline_twin_of": (system.twin_of or "") if system is not None else "",
            "twin_note": (system.twin_note or "") if system is not None else "",
            "paper": system.paper if system is not None else "", "reported": system.reported if system else "",
        })
    if comparison.nested is not None:
        nz = comparison.nested
        base = nz.get("baseline") or {}
        rows.insert(1, {"system": f"{comparison.reference.name} (nested)",
                        "label": f"{comparison.reference.label}: nested estimate (configuration chosen inside "
                                 "each training fold)", "kind": "nested", "config": "",
                        "accuracy": nz["estimate"], "accuracy_low": nz["ci_low"], "accuracy_high": nz["ci_high"],
                        "f1_macro": float("nan"), "roc_auc": float("nan"), "p_vs_reference": float("nan"),
                        "diff_vs_reference": float("nan"),
                        "p_vs_colour_baseline": base.get("p_value", float("nan"))
                        if base.get("config") == BASELINE_HISTOGRAM else float("nan"),
                        "train_cpu_s": float("nan"), "gpu_s": float("nan"), "folds_computed_now": None,
                        "offline_twin_of": "", "twin_note": "", "paper": "", "reported": ""})
    return pd.DataFrame(rows)
