"""Honest in-fold fine-tuning: the network behind each fold's features never saw that fold's test images.

The reference study fine-tuned DarkNet19 on the whole dataset and then cross-validated features of the same images,
so every test image had been used to train the feature extractor. :func:`cross_validate_finetuned` removes that
leak: for each cross-validation fold it fine-tunes on the fold's training images only (early stopping uses a
70/30 split *inside* the training fold), extracts features of all images with that fold's network, and hands them
to :func:`deepfeat.evaluation.cross_validation.cross_validate` through ``fold_features``, so folds, scaling, mRMR, classifiers,
metrics and the honesty report are the same code as the ordinary cross-validation.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.results import END_TO_END
from deepfeat.finetuning.checkpoints import read_checkpoint, sibling
from deepfeat.finetuning.run import FinetuneConfig, finetune

__all__ = ["cross_validate_finetuned"]


class FoldFinetuner:
    """``fold_features`` for :func:`deepfeat.evaluation.cross_validation.cross_validate`: fine-tune on ``train_idx``, extract all.

    Picklable (plain attributes), so folds may run in joblib workers or as Dask tasks. A fold whose checkpoint in
    ``work_dir`` is complete and was trained on the same images with the same options is reused, and an
    interrupted one resumes, so an interrupted in-fold run picks up where it stopped.

    With a cached frozen trunk (the transfer recipe on a CPU), the fold's features are the fine-tuned stages run on
    the cached activations of every image (:func:`~deepfeat.finetuning.trunk_features.features_from_trunk`), not
    a full forward pass; the run caches the whole source's activations first, in source order, so they are the
    same bits whichever fold or worker computes them. ``on_cluster`` (a Dask task): torch runs with
    ``$DEEPFEAT_WORKER_TORCH_THREADS`` threads (default 1, as extraction's shard tasks), images are decoded in
    the task's thread (a Dask worker cannot fork DataLoader workers) and there is no progress bar.
    """

    def __init__(self, source, *, config: FinetuneConfig, model: str, weights, layer: str, work_dir,
                 progress: bool = True, sha256=None, on_cluster: bool = False):
        self.source, self.config, self.model, self.weights = source, config, model, weights
        self.layer, self.work_dir, self.progress = layer, Path(work_dir), progress and not on_cluster
        self.sha256, self.on_cluster = list(sha256) if sha256 is not None else None, on_cluster

    def __repr__(self) -> str:  # recorded in the CV config as the source of the fold features
        return f"FoldFinetuner(model={self.model!r}, weights={str(self.weights)!r}, layer={self.layer!r})"

    def checkpoint(self, fold_index: int) -> Path:
        return self.work_dir / f"fold{fold_index:02d}.pt"

    def _reusable(self, out: Path, train_sha: set) -> str:
        """'done', 'resume' or 'new' for the fold checkpoint at ``out``."""
        last = sibling(out, "last")
        if not (out.is_file() and last.is_file()):
            return "new"
        ckpt = read_checkpoint(last)
        same = (ckpt["model"] == self.model and set(ckpt["train_sha256"]) | set(ckpt["val_sha256"]) == train_sha
                and all(ckpt["config"].get(k) == v for k, v in self.config.to_dict().items()
                        if k not in ("epochs", "device", "workers")))
        if not same:
            return "new"
        return "done" if ckpt["epoch"] >= self.config.epochs or ckpt.get("finished") else "resume"

    def __call__(self, fold_index, train_idx, test_idx) -> FoldFeatures:
        from deepfeat.data.images import sha256_file

        cfg = self.config
        if self.on_cluster:
            _worker_threads()
            cfg = dataclasses.replace(cfg, workers=0)
        sha = self.sha256 if self.sha256 is not None else [sha256_file(p) for p in self.source.paths]
        out = self.checkpoint(fold_index)
        train_src = self.source.subset(train_idx)
        state = self._reusable(out, {sha[i] for i in train_idx})
        if state != "done":
            finetune(train_src, model=self.model, weights=self.weights, out=out, config=cfg,
                     resume=sibling(out, "last") if state == "resume" else None, progress=self.progress,
                     trunk_images=(list(self.source.paths), sha))
        X = checkpoint_features(out, self.source, sha, layer=self.layer, config=cfg, progress=self.progress)
        return FoldFeatures(X, end_to_end(out, X, test_idx, self.layer, self.source.class_names))


def checkpoint_features(checkpoint, source, sha256, *, layer: str, config: FinetuneConfig | None = None,
                        progress: bool = False) -> np.ndarray:
    """``(n, d)`` features of every image of ``source`` by the fine-tuned network ``checkpoint``: the fine-tuned
    stages on the cached trunk when the run cached one
    (:func:`~deepfeat.finetuning.trunk_features.features_from_trunk`), else a full ``extract_features`` pass with
    the run's device, input size and border crop. ``sha256``: the images' hashes (the trunk cache's key);
    ``config``: the run's options (default: the ones stored in the checkpoint)."""
    from deepfeat.extraction.api import extract_features
    from deepfeat.finetuning.trunk_features import features_from_trunk

    ckpt = read_checkpoint(checkpoint)
    cfg = config if config is not None else FinetuneConfig.from_dict(ckpt["config"], where=str(checkpoint))
    X = features_from_trunk(checkpoint, source.paths, sha256, layer=layer, batch_size=min(cfg.batch_size, 64),
                            workers=cfg.workers or 0)
    if X is None:  # no cached trunk (a GPU run trains the whole network) or another layer: a full pass
        X = extract_features(source, model=ckpt["model"], weights=str(checkpoint), layer=layer,
                             batch_size=min(cfg.batch_size, 64), device=cfg.device, crop_border=cfg.crop_border,
                             image_size=cfg.image_size, progress=progress,
                             **({} if cfg.workers is None else {"num_workers": cfg.workers})).X
    return X


def _worker_threads() -> None:
    """Torch threads of a fold task on a Dask worker: ``$DEEPFEAT_WORKER_TORCH_THREADS``, else 1 (Dask starts one
    task per worker thread, and sets OpenMP / MKL to one thread in its worker processes)."""
    import torch

    n = int(os.environ.get("DEEPFEAT_WORKER_TORCH_THREADS") or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


class FoldFeatures:
    """A fold's features and the rows scored without them (the fold's fine-tuned network, end to end)."""

    def __init__(self, X, network: dict | None):
        self.X = X
        self.extra_results = {("network", END_TO_END): network} if network is not None else {}


def end_to_end(checkpoint, X, test_idx, layer: str, class_names) -> dict | None:
    """The fine-tuned network's own predictions on the fold's test images, from the extracted outputs: with
    ``layer="logits"`` the network's task scores are its head applied to those outputs (``keep1000``: the new
    ``Linear(1000, n)``; ``replace``: the outputs are the scores). None for other layers."""
    import time

    if layer != "logits":
        return None
    t0 = time.perf_counter()
    ckpt = read_checkpoint(checkpoint)
    if list(ckpt["class_names"]) != [str(c) for c in class_names]:
        raise DeepfeatError(f"{checkpoint} was trained on classes {ckpt['class_names']}, the cross-validation has "
                            f"{list(class_names)}; the network's own predictions cannot be scored")
    Z = np.asarray(X, dtype=np.float64)[np.asarray(test_idx)]
    if ckpt["head"] == "keep1000":
        head = ckpt["head_state_dict"]
        Z = Z @ head["weight"].double().numpy().T + head["bias"].double().numpy()
    scores = np.exp(Z - Z.max(1, keepdims=True))
    scores /= scores.sum(1, keepdims=True)
    return {"pred": scores.argmax(1), "scores": scores, "score_kind": "probability", "fit_time": 0.0,
            "predict_time": time.perf_counter() - t0}


def _feature_dim(model: str, weights, layer: str, head: str, n_classes: int) -> int:
    """Width of the features the fold networks will give (loads the starting weights: fails fast if absent)."""
    from deepfeat.backbones import create_backbone

    net = create_backbone(model, weights=weights)
    if layer == "pooled":
        return int(net.num_features)
    return int(net.num_classes) if head == "keep1000" else int(n_classes)


def _fold_record(fold_index: int, path: Path, test_sha: set) -> dict:
    from deepfeat.data.images import sha256_file

    ckpt = read_checkpoint(path)
    seen = test_sha & (set(ckpt["train_sha256"]) | set(ckpt["val_sha256"]))
    m = ckpt["metrics"]
    return {"fold_index": fold_index, "checkpoint": str(path), "checkpoint_sha256": sha256_file(path),
            "best_epoch": int(ckpt["epoch"]), "n_train": len(ckpt["train_sha256"]),
            "n_val": len(ckpt["val_sha256"]), "val_accuracy": m.get("accuracy"), "val_f1_macro": m.get("f1_macro"),
            "test_images_with_identical_bytes_in_finetuning": len(seen)}


def cross_validate_finetuned(source, *, finetune: FinetuneConfig | None = None, model: str = defaults.MODEL,
                             weights=defaults.WEIGHTS, layer: str = defaults.LAYER, classifiers=defaults.CLASSIFIERS,
                             selections=defaults.SELECTIONS, n_features=defaults.N_FEATURES,
                             folds: int = defaults.FOLDS, seed: int = defaults.SEED,
                             work_dir=None, progress: bool = True, **cv_options):
    """Cross-validate with a backbone fine-tuned inside each training fold (no test image ever trains it).

    Parameters
    ----------
    source : str, Path or ImageSource
        Labelled images (folder of class sub-folders, CSV, or an ImageSource).
    finetune : FinetuneConfig, optional
        Training options for every fold (default: the study's settings). Its ``val_fraction`` split is made
        inside each training fold; ``val_source`` is refused (it would put outside images in every fold).
    model, weights, layer :
        Starting network and weights; ``layer`` of the fine-tuned network to use as features ("logits": the
        1000 outputs with ``head="keep1000"``, "pooled": pre-logits).
    classifiers, selections, n_features, folds, seed, **cv_options :
        As :func:`deepfeat.evaluation.cross_validation.cross_validate` (``repeats``, ``groups``, ``threshold``, ``mrmr_method``,
        ``n_jobs``, ``class_weight``, ``baseline``...). ``repeats * folds`` fine-tunings are run.
        ``scheduler`` (``"local:N"``, ``"tcp://HOST:8786"`` or a ``distributed.Client``) runs each fold's
        fine-tuning and features as one Dask task, with ``resources`` (e.g. ``"GPU=1"``) when given; the
        classifiers are then scored here. The images and ``work_dir`` must be reachable by the workers (a shared
        file system for a remote cluster). Results equal a local run with the same seed and torch thread count
        (fold tasks use ``$DEEPFEAT_WORKER_TORCH_THREADS`` threads, default 1).
    work_dir : str or Path, optional
        Where the fold checkpoints go (kept, and reused or resumed by a later call). Default: a temporary folder
        removed at the end.
    progress : bool

    Returns
    -------
    CVResults
        As ``cross_validate``; ``config["finetune"]`` records that fine-tuning was in-fold, its options, and per
        fold the checkpoint hash, training / validation sizes and the fine-tuned network's validation accuracy.
    """
    from deepfeat.data.images import sha256_file
    from deepfeat.data.sources import open_source
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.features import FeatureSet

    config = finetune if finetune is not None else FinetuneConfig()
    if not isinstance(config, FinetuneConfig):
        raise DeepfeatError(f"finetune must be a FinetuneConfig; got {type(config).__name__}")
    if config.val_source is not None:
        raise DeepfeatError("in-fold fine-tuning takes its validation split from each training fold; "
                            "val_source cannot be used here (set val_fraction instead)")
    src = open_source(source)
    if src.labels is None:
        raise DeepfeatError(f"source {src.name} has no labels: in-fold fine-tuning needs labelled images")
    sha = [sha256_file(p) for p in src.paths]
    d = _feature_dim(model, weights, layer, config.head, len(src.class_names))
    # The features are supplied per fold; this FeatureSet carries labels, groups, paths and hashes for the folds
    # and the honesty checks. Its X is a zero placeholder of the right width, never used for scoring.
    skeleton = FeatureSet(np.zeros((len(src), d), np.float32), y=src.labels, paths=src.paths, groups=src.groups,
                          sha256=sha, meta={"backbone": model, "weights": str(weights), "layer": layer,
                                            "features": f"fine-tuned inside each fold (placeholder X, {d} wide)"})
    temp = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="deepfeat-infold-")) if temp else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        fold_fn = FoldFinetuner(src, config=config, model=model, weights=weights, layer=layer, work_dir=work,
                                progress=progress, sha256=sha,
                                on_cluster=cv_options.get("scheduler", defaults.SCHEDULER) is not None)
        results = cross_validate(skeleton, classifiers=classifiers, selections=selections, n_features=n_features,
                                 folds=folds, seed=seed, fold_features=fold_fn, progress=progress, **cv_options)
        records = _records(results, fold_fn, sha, folds)
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)
    seen = sum(r["test_images_with_identical_bytes_in_finetuning"] for r in records)
    text = (f"The backbone was fine-tuned inside each training fold ({len(records)} fine-tunings of {model}, "
            f"early stopping on a {config.val_fraction:.0%} split of the training fold): no test image was used to "
            "train or select the network that made its features.")
    if seen:
        text += (f" But {seen} test image(s) have byte-identical copies in their fold's fine-tuning data "
                 "(duplicates across the CV split; see duplicates).")
    results.honesty["finetune"] = {"in_fold": True, "warning": bool(seen), "text": text,
                                   "test_images_with_identical_bytes_in_finetuning": seen}
    if seen:
        results.honesty["warnings"].append(text.split("But ")[1])
    results.config["finetune"] = {"in_fold": True, "model": model, "weights": str(weights), "layer": layer,
                                  "config": config.to_dict(), "work_dir": None if temp else str(work),
                                  "checkpoints_kept": not temp, "folds": records}
    return results


def _records(results, fold_fn, sha, folds) -> list[dict]:
    """Per-fold fine-tuning records; each fold's test rows are read from the out-of-fold predictions."""
    pred = results.predictions.drop_duplicates(["repeat", "fold", "row"])
    return [_fold_record(int(r) * folds + int(k), fold_fn.checkpoint(int(r) * folds + int(k)),
                         {sha[i] for i in part["row"]})
            for (r, k), part in pred.groupby(["repeat", "fold"], sort=True)]
