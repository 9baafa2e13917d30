"""The fine-tuned network three ways, on its own validation images: end to end, its features + SVM, and the
frozen starting network's features + SVM.

The seeds' systems report the fine-tuned network's own accuracy; the reference study reports an SVM on the
fine-tuned network's 1000 outputs. :func:`split_comparison` puts both, and the frozen network's features with
the same SVM, side by side on the same validation images, with the SVMs fitted on the run's training images
only. The validation split also chose the kept epoch, so all three are slightly optimistic for the fine-tuned
network; cross-validation with fine-tuning inside the folds (``deepfeat cv --finetune``) is the unbiased figure.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["split_comparison"]


def _svm_accuracy(X, y, train, val, seed: int) -> float:
    from sklearn.base import clone

    from deepfeat.classifiers.presets import build_pipeline

    est = clone(build_pipeline("svm", seed=seed))
    est.fit(X[train], y[train])
    return float(np.mean(est.predict(X[val]) == y[val]))


def split_comparison(result, source, *, model: str, weights, layer: str = "logits", progress: bool = False) -> dict:
    """Accuracy on ``result``'s validation images of the network end to end, of an SVM on its ``layer``
    features, and of the same SVM on the frozen starting network's features; SVMs fitted on its training images.

    Returns a dict with ``network``, ``finetuned_svm``, ``frozen_svm`` (accuracies), ``n_train``, ``n_val``,
    ``layer``, ``frozen_layer`` (``"pooled"`` where the starting network's logits come from an untrained head: a
    hybrid's), ``seconds``; or ``{"skipped": reason}`` when the run had no validation images.
    """
    from deepfeat.data.images import sha256_file
    from deepfeat.data.sources import open_source
    from deepfeat.extraction.api import extract_features
    from deepfeat.finetuning.checkpoints import read_checkpoint

    t0 = time.perf_counter()
    ckpt = read_checkpoint(result.checkpoint)
    if not ckpt["val_sha256"]:
        return {"skipped": "no validation images"}
    src = open_source(source)
    sha = np.asarray([sha256_file(p) for p in src.paths])
    train, val = np.isin(sha, list(ckpt["train_sha256"])), np.isin(sha, list(ckpt["val_sha256"]))
    if not val.any():  # a separate val_source: its images are not in this source
        return {"skipped": "the validation images came from a separate source"}
    keep = train | val
    sub = src.subset(np.flatnonzero(keep))
    cfg = ckpt["config"]
    common = dict(model=model, layer=layer, image_size=cfg.get("image_size"), crop_border=cfg.get("crop_border", False),
                  progress=progress)
    tuned = extract_features(sub, weights=str(result.checkpoint), **common)
    frozen_layer = "pooled" if layer == "logits" and _head_untrained(model, weights) else layer
    frozen = extract_features(sub, weights=weights, **{**common, "layer": frozen_layer})
    y = np.asarray(sub.labels)
    tr, va = train[keep], val[keep]
    seed = int(cfg.get("seed", 0))
    return {"network": result.metrics.get("accuracy"), "finetuned_svm": _svm_accuracy(tuned.X, y, tr, va, seed),
            "frozen_svm": _svm_accuracy(frozen.X, y, tr, va, seed), "n_train": int(tr.sum()),
            "n_val": int(va.sum()), "layer": layer, "frozen_layer": frozen_layer,
            "seconds": time.perf_counter() - t0}


def _head_untrained(model, weights) -> bool:
    """Whether the starting network's logits come from a new, untrained head: a hybrid built from its members'
    ImageNet weights (its fused head is new; :mod:`deepfeat.backbones.related`). Its frozen row then uses the
    members' pooled features, not random projections of them."""
    from deepfeat.backbones.related import HYBRID_MEMBERS

    return isinstance(model, str) and model in HYBRID_MEMBERS and weights == "imagenet"
