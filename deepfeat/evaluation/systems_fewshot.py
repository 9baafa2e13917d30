"""The few-shot systems' own predictions on an outer fold: nearest training-fold class mean by cosine.

A system of ``kind = "fewshot"`` (``pipelines/related_siamese_fewshot.toml``) fine-tunes its backbone on the
training fold with a metric-learning objective (``objective = "siamese"``: the contrastive loss of
:mod:`deepfeat.finetuning.objectives`), so the network it leaves is an *embedding*, not a classifier. Its
predictions on the fold's test images are made as the metric-learning papers make them, with the training fold as
the support set:

1. the embedding (``layer="pooled"``: the pre-logits vector the objective trained) of every training and test
   image, from the fold's checkpoint (:func:`deepfeat.evaluation.infold.checkpoint_features`: the fine-tuned stages
   on the cached trunk when the run cached one, else ``extract_features``; no extraction loop of its own);
2. every embedding L2-normalised; one prototype per class = the mean of that class's normalised training
   embeddings, normalised again;
3. each test image's class = the prototype of highest cosine similarity. This is the rule of
   ``deepfeat fewshot``'s ``prototype_cos`` (cosine to the mean of the L2-normalised support vectors), applied to
   the whole training fold instead of a K-shot episode (the layering lets :mod:`deepfeat.fewshot` import
   evaluation, not the reverse, so the rule is written here for unequal class sizes; a test checks that both give
   the same predictions on one episode).

``scores`` are the softmax over the test image's cosine similarities to the class prototypes (temperature 1,
:data:`TEMPERATURE`), ``score_kind = "probability"``: they sum to 1 and rank exactly as the cosines do (the AUC is
that of the cosines), but cosines lie in [-1, 1], so the probabilities stay close to uniform and are NOT calibrated
(do not read 0.6 as 60 %).
"""
from __future__ import annotations

import time

import numpy as np

from deepfeat.errors import DeepfeatError

__all__ = ["TEMPERATURE", "cosine_prototypes", "cosine_scores", "fewshot_fold_predictions"]

#: softmax temperature of the scores: probabilities = softmax(cosine / TEMPERATURE)
TEMPERATURE = 1.0


def _unit_rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def cosine_prototypes(train_emb, train_codes, n_classes: int) -> np.ndarray:
    """``(n_classes, d)`` class prototypes: the L2-normalised mean of each class's L2-normalised training
    embeddings. ``train_codes``: class indices 0..n_classes-1; a class without a training image is an error.

    Examples
    --------
    >>> cosine_prototypes([[1, 0], [2, 0], [0, 3]], [0, 0, 1], 2)
    array([[1., 0.],
           [0., 1.]])
    """
    train, codes = _unit_rows(train_emb), np.asarray(train_codes)
    missing = [c for c in range(n_classes) if not (codes == c).any()]
    if missing:
        raise DeepfeatError(f"class index(es) {missing} have no training image: no prototype (every class needs "
                            "at least one image in each training fold)")
    return _unit_rows(np.stack([train[codes == c].mean(axis=0) for c in range(n_classes)]))


def cosine_scores(test_emb, prototypes) -> np.ndarray:
    """``(n_test, n_classes)`` cosine similarities of the test embeddings to the (unit) prototypes.

    Examples
    --------
    >>> cosine_scores([[5, 1]], cosine_prototypes([[1, 0], [2, 0], [0, 3]], [0, 0, 1], 2)).round(3)
    array([[0.981, 0.196]])
    """
    return _unit_rows(test_emb) @ np.asarray(prototypes).T


def fewshot_fold_predictions(checkpoint, source, train_idx, test_idx, *, layer: str = "pooled") -> dict:
    """The few-shot system's predictions on one outer fold (see the module doc).

    Parameters
    ----------
    checkpoint : str or Path
        The fold's fine-tuned network (:func:`deepfeat.finetuning.run.finetune` trained on ``train_idx`` only).
    source : ImageSource, folder or CSV
        Every image of the comparison, labelled; ``train_idx`` / ``test_idx`` are row positions in it.
    train_idx, test_idx : sequences of int
        The training fold (the support set: its labels make the prototypes) and the images to predict.
    layer : "pooled" (default) or "logits"
        Which output of the network is the embedding; the metric objectives train "pooled".

    Returns
    -------
    dict
        ``pred`` (n_test,) class indices into ``source.class_names``; ``scores`` (n_test, n_classes) softmax of
        the cosine similarities (columns in ``source.class_names`` order); ``score_kind`` "probability";
        ``fit_time`` seconds to embed the training images and build the prototypes; ``predict_time`` seconds to
        embed the test images and score them.
    """
    from deepfeat.data.images import sha256_file
    from deepfeat.data.sources import open_source
    from deepfeat.evaluation.infold import checkpoint_features
    from deepfeat.finetuning.checkpoints import read_checkpoint

    src = open_source(source)
    if src.labels is None:
        raise DeepfeatError(f"source {src.name} has no labels: the few-shot prototypes need the training labels")
    train_idx, test_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DeepfeatError(f"train_idx has {len(train_idx)} and test_idx {len(test_idx)} rows; both need images")
    if len(np.intersect1d(train_idx, test_idx)):
        raise DeepfeatError("train_idx and test_idx share rows: a test image would be its own support")
    classes = src.class_names
    trained = [str(c) for c in read_checkpoint(checkpoint)["class_names"]]
    if trained != classes:
        raise DeepfeatError(f"{checkpoint} was trained on classes {trained}; the source has {classes}")
    codes = np.searchsorted(classes, np.asarray(src.labels, dtype=object)[train_idx].astype(str))

    def embed(idx):
        sub = src.subset(idx)
        return checkpoint_features(checkpoint, sub, [sha256_file(p) for p in sub.paths], layer=layer)

    t0 = time.perf_counter()
    prototypes = cosine_prototypes(embed(train_idx), codes, len(classes))
    t1 = time.perf_counter()
    cos = cosine_scores(embed(test_idx), prototypes)
    z = cos / TEMPERATURE
    scores = np.exp(z - z.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    return {"pred": cos.argmax(axis=1), "scores": scores, "score_kind": "probability", "fit_time": t1 - t0,
            "predict_time": time.perf_counter() - t1}
