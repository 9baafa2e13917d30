"""One related system on one outer fold: trained on the fold's training rows only, scored on its test rows, kept.

:class:`SystemFolds` is the ``fold_features`` of the comparison's one
:func:`~deepfeat.evaluation.cross_validation.cross_validate` call: for each outer fold it returns the reference
features (scored by the reference classifiers, as any cross-validation) and, as ``extra_results``, every other
system's predictions on that fold's test rows, so every system is scored by the same metrics code on the same rows.

Each system's fold is kept in ``DIR/systems/<name>/foldNN.npz`` (predictions, class scores, test rows) and
``foldNN.json`` (written last: the fold is finished when it exists), with the training cost (CPU seconds of this
process and its finished children, GPU seconds when trained on CUDA, wall seconds), the checkpoint's sha256 and the
identity of what was computed (the system's configuration hash, the sha256 of the training and test images, the
classes). A later run loads a fold whose identity matches and recomputes, saying why, one whose system
configuration or folds changed.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.results import END_TO_END
from deepfeat.fileio import atomic_write, atomic_write_bytes, exclusive, sha256_file

__all__ = ["SystemFolds", "fold_records", "fold_stem", "read_fold_record", "result_key"]


def result_key(system) -> tuple[str, str]:
    """The system's ``(classifier, selection)`` key among the fold's results: its name and ``end-to-end`` for a
    network, its classifier's selection for a features system."""
    if system.kind == "features":
        return system.name, system.selection
    return system.name, END_TO_END


def fold_stem(out_dir, name: str, fold_index: int) -> Path:
    """``DIR/systems/<name>/foldNN`` (``.npz``, ``.json``; a network's checkpoint is ``foldNN.pt``)."""
    return Path(out_dir) / "systems" / name / f"fold{fold_index:02d}"


def read_fold_record(stem: Path) -> dict | None:
    """The finished fold's record (``foldNN.json``), or None when there is none (or it cannot be read)."""
    try:
        return json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def _digest(values) -> str:
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class _FoldOutput:
    """What ``cross_validate`` takes from ``fold_features``: the fold's features and rows scored without them."""

    def __init__(self, X, extra_results: dict):
        self.X, self.extra_results = X, extra_results


class SystemFolds:
    """``fold_features`` of the comparison: the reference features ``X`` and every system's fold predictions.

    Picklable (plain attributes), so a fold may run as a Dask task (``on_cluster``; ``out_dir`` must then be on a
    file system the workers share).

    Parameters
    ----------
    source : ImageSource
        The labelled images, in the order of ``X``'s rows.
    systems : list of System
        The systems scored as extra rows (not the reference).
    X : ndarray
        The reference features of every image.
    features : dict
        System name -> the frozen features of a ``features`` system (every image).
    out_dir : path
        The comparison folder (fold files under ``systems/``).
    sha256 : list of str
        Of every image's bytes.
    seed : int
        Fine-tuning seed of a system whose file sets none.
    run_id : str
        Written into each fold computed now (a fold with another run id was loaded).
    """

    def __init__(self, source, systems, X, *, features, out_dir, sha256, seed: int, run_id: str,
                 progress: bool = True, on_cluster: bool = False):
        self.source, self.systems, self.X, self.features = source, list(systems), X, dict(features)
        self.out_dir, self.sha256, self.seed, self.run_id = Path(out_dir), list(sha256), seed, run_id
        self.progress, self.on_cluster = progress and not on_cluster, on_cluster
        self.classes, self.y = np.unique(np.asarray(source.labels), return_inverse=True)

    def __repr__(self) -> str:  # recorded in the CV config as the source of the fold features
        return f"SystemFolds({', '.join(s.name for s in self.systems)})"

    def __call__(self, fold_index, train_idx, test_idx) -> _FoldOutput:
        extra = {result_key(s): self.result(s, fold_index, np.asarray(train_idx), np.asarray(test_idx))
                 for s in self.systems}
        return _FoldOutput(self.X, extra)

    def identity(self, system, train_idx, test_idx) -> dict:
        """What a kept fold must match to be loaded instead of computed."""
        return {"config_hash": system.config_hash, "classes": [str(c) for c in self.classes],
                "train_sha256": _digest(sorted(self.sha256[i] for i in train_idx)),
                "test_sha256": _digest(sorted(self.sha256[i] for i in test_idx)),
                "test_rows": _digest(test_idx)}

    def result(self, system, fold_index: int, train_idx, test_idx) -> dict:
        """The system's scores on the fold's test rows: loaded when kept with the same identity, else computed
        (training on ``train_idx`` only) and kept."""
        stem = fold_stem(self.out_dir, system.name, fold_index)
        identity = self.identity(system, train_idx, test_idx)
        kept = _kept(stem, identity)
        if kept is not None:
            return kept
        # two runs into one folder: the second waits for the first's fold, then loads it
        with exclusive(stem.with_suffix(".lock")) as waited:
            kept = _kept(stem, identity) if waited else None
            return kept if kept is not None else self._compute_and_keep(system, fold_index, train_idx, test_idx,
                                                                        stem, identity)

    def _compute_and_keep(self, system, fold_index, train_idx, test_idx, stem, identity) -> dict:
        reason = _why_recomputed(read_fold_record(stem), identity)
        wall0, cpu0, child0 = time.perf_counter(), time.process_time(), _children_cpu()
        res, checkpoint, device = self._compute(system, fold_index, train_idx, test_idx)
        wall = time.perf_counter() - wall0
        cost = {"cpu_s": time.process_time() - cpu0 + _children_cpu() - child0, "wall_s": wall,
                "gpu_s": wall if str(device).startswith("cuda") else 0.0, "device": str(device)}
        pred, scores = np.asarray(res["pred"]), np.asarray(res["scores"], dtype=np.float64)
        if pred.shape != (len(test_idx),) or scores.shape != (len(test_idx), len(self.classes)):
            raise DeepfeatError(f"system {system.name!r}, fold {fold_index}: predictions of shape {pred.shape} and "
                                f"scores of shape {scores.shape} for {len(test_idx)} test images and "
                                f"{len(self.classes)} classes")
        arrays = {"pred": pred, "scores": scores, "test_rows": np.asarray(test_idx),
                  "test_sha256": np.asarray([self.sha256[i] for i in test_idx])}
        atomic_write(stem.with_suffix(".npz"), lambda tmp: _savez(tmp, arrays), fsync=False)
        record = {"system": system.name, "fold_index": int(fold_index), "identity": identity, "run_id": self.run_id,
                  "computed_because": reason, "n_train": len(train_idx), "n_test": len(test_idx),
                  "score_kind": res["score_kind"], "fit_time": float(res["fit_time"]),
                  "predict_time": float(res["predict_time"]), **cost,
                  "checkpoint": str(checkpoint) if checkpoint else None,
                  "checkpoint_sha256": sha256_file(checkpoint) if checkpoint else None,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_bytes(stem.with_suffix(".json"), json.dumps(record, indent=1).encode(), fsync=False)
        return {"pred": pred, "scores": scores, "score_kind": res["score_kind"], "fit_time": res["fit_time"],
                "predict_time": res["predict_time"]}

    def _finetuner(self, system, layer: str):
        from deepfeat.evaluation.infold import FoldFinetuner

        return FoldFinetuner(self.source, config=system.finetune_config(self.seed), model=system.model,
                             weights=system.weights, layer=layer, work_dir=self.out_dir / "systems" / system.name,
                             progress=self.progress, sha256=self.sha256, on_cluster=self.on_cluster)

    def _compute(self, system, fold_index, train_idx, test_idx):
        """(scores dict, checkpoint or None, device) of one system on one fold."""
        if system.kind == "features":
            return self._features_fold(system, train_idx, test_idx), None, "cpu"
        from deepfeat.extraction.device import resolve_device

        device = resolve_device(system.finetune_config(self.seed).device)[0]
        # FoldFinetuner as in-fold CV runs it: fine-tune on the training rows (reused when done), then the fold's
        # outputs of every image (the fine-tuned stages on the cached trunk on a CPU) and, for logits, the
        # network's own predictions on the test rows
        tuner = self._finetuner(system, "logits" if system.kind == "network" else system.layer)
        t0 = time.perf_counter()
        got = tuner(fold_index, train_idx, test_idx)
        fit = time.perf_counter() - t0
        checkpoint = tuner.checkpoint(fold_index)
        if system.kind == "network":
            res = dict(got.extra_results[("network", END_TO_END)])
            res["fit_time"] = fit - res["predict_time"]
            return res, checkpoint, device
        from deepfeat.evaluation import systems_fewshot  # the few-shot scoring (issue 22), imported when needed

        res = dict(systems_fewshot.fewshot_fold_predictions(checkpoint, self.source, train_idx, test_idx,
                                                            layer=system.layer))
        res["fit_time"] = fit + float(res.get("fit_time", 0.0))
        return res, checkpoint, device

    def _features_fold(self, system, train_idx, test_idx) -> dict:
        from sklearn.base import clone

        from deepfeat.classifiers.presets import build_pipeline
        from deepfeat.evaluation.fold_work import fit_score, quiet_fits

        X = self.features[system.name]
        cv = system.cv
        est = build_pipeline(system.classifier, selector="mrmr" if system.selection == "mrmr" else None,
                             n_features=cv.get("n_features", "auto") if system.selection == "mrmr" else None,
                             mrmr_method=cv.get("mrmr_method", "fcq"), seed=self.seed)
        with quiet_fits():
            return fit_score(clone(est), X[train_idx], self.y[train_idx], X[test_idx])


def _kept(stem: Path, identity: dict) -> dict | None:
    """The kept fold's scores when its record matches ``identity``, else None."""
    record = read_fold_record(stem)
    if record is None or record.get("identity") != identity or not stem.with_suffix(".npz").is_file():
        return None
    with np.load(stem.with_suffix(".npz")) as z:
        return {"pred": z["pred"], "scores": z["scores"], "score_kind": record["score_kind"],
                "fit_time": record["fit_time"], "predict_time": record["predict_time"]}


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to the temporary name
        np.savez(f, **arrays)


def _why_recomputed(record: dict | None, identity: dict) -> str:
    if record is None:
        return "new"
    old = record.get("identity") or {}
    if old.get("config_hash") != identity["config_hash"]:
        return "the system's configuration changed"
    if old.get("classes") != identity["classes"]:
        return "the classes changed"
    if any(old.get(k) != identity[k] for k in ("train_sha256", "test_sha256", "test_rows")):
        return "the fold's images changed (other folds, seed or data)"
    return "the kept predictions were missing"


def fold_records(out_dir, systems, n_folds: int) -> dict:
    """System name -> its fold records (``foldNN.json``), in fold order (None for a fold not kept)."""
    return {s.name: [read_fold_record(fold_stem(out_dir, s.name, k)) for k in range(n_folds)] for s in systems}
