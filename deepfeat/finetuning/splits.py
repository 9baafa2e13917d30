"""Train / validation splits that never put a subject or a byte-identical image on both sides."""
from __future__ import annotations

import warnings

import numpy as np

from deepfeat.errors import DeepfeatError

__all__ = ["labelled_source", "split_data", "split_train_val"]


def split_train_val(labels, *, fraction: float, seed: int, groups=None, sha256=None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, grouped train / validation split: indices (train, val).

    Units are subjects (``groups``) when given, else single images; units that share a byte-identical image
    (same ``sha256``) are joined, so neither a subject nor a duplicate image is on both sides. Units are
    stratified by their majority label; ``round(fraction * n_units)`` of them (at least one per class) go to
    validation.

    Parameters
    ----------
    labels : array-like of shape (n,)
    fraction : float
        Share of units held out for validation, in (0, 1).
    seed : int
    groups, sha256 : array-like of shape (n,), optional
        Subject ids; sha256 of each image's bytes.

    Returns
    -------
    train_idx, val_idx : ndarray of int

    Raises
    ------
    DeepfeatError
        When a class has fewer than two units, or too few units are left for training.

    Examples
    --------
    >>> tr, va = split_train_val(["a"] * 5 + ["b"] * 5, fraction=0.4, seed=0, sha256=list("pqrstuvwxp"))
    >>> len(va), bool({0, 9} <= set(tr) or {0, 9} <= set(va))
    (4, True)
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n = len(labels)
    keys = [f"g:{g}" for g in groups] if groups is not None else [f"i:{i}" for i in range(n)]
    # union subjects that share an image (a duplicate can join two subjects) with a tiny union-find
    parent = {k: k for k in keys}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    if sha256 is not None:
        first = {}
        for k, h in zip(keys, sha256):
            if h in first:
                parent[find(k)] = find(first[h])
            else:
                first[h] = k
    unit = np.asarray([find(k) for k in keys])
    names, unit_idx = np.unique(unit, return_inverse=True)
    unit_label = []
    for u in range(len(names)):
        vals, counts = np.unique(labels[unit_idx == u], return_counts=True)
        unit_label.append(vals[np.argmax(counts)])
    unit_label = np.asarray(unit_label)
    vals, counts = np.unique(unit_label, return_counts=True)
    if (counts < 2).any():
        few = [str(v) for v in vals[counts < 2]]
        raise DeepfeatError(
            f"cannot make a stratified validation split: class(es) {few} have fewer than 2 "
            f"{'subjects' if groups is not None else 'distinct images'}; add images, give val_source, "
            "or set val_fraction=0"
        )
    n_val = max(len(vals), int(round(fraction * len(names))))
    if len(names) - n_val < len(vals):
        raise DeepfeatError(f"val_fraction={fraction} leaves too few training units ({len(names)} in all)")
    tr_u, va_u = train_test_split(np.arange(len(names)), test_size=n_val, stratify=unit_label, random_state=seed)
    in_val = np.isin(unit_idx, va_u)
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def labelled_source(spec, what: str):
    """``open_source(spec)``, refused (naming ``what``) when it has no labels."""
    from deepfeat.data.sources import open_source

    src = open_source(spec)
    if src.labels is None:
        raise DeepfeatError(f"{what} {getattr(src, 'root', None) or src.name} has no labels: fine-tuning needs a "
                            "folder of class sub-folders or a CSV with a 'label' column")
    return src


def split_data(src, cfg) -> dict:
    """The training / validation sides of a fine-tuning run of ``cfg`` (a FinetuneConfig) on ``src``: a dict of
    ``train_idx``, ``train_t``, ``train_sha``, ``val_paths``, ``val_t``, ``val_sha``. Validation is ``cfg.val_source``
    or a stratified, grouped ``cfg.val_fraction`` of ``src`` (:func:`split_train_val`)."""
    from deepfeat.data.images import sha256_file

    class_names = src.class_names
    sha = [sha256_file(p) for p in src.paths]
    if cfg.val_source is not None:
        vsrc = labelled_source(cfg.val_source, "val_source")
        extra = sorted(set(vsrc.class_names) - set(class_names))
        if extra:
            raise DeepfeatError(f"val_source has classes {extra} that the training source lacks")
        train_idx = np.arange(len(src))
        val_paths, val_labels = vsrc.paths, vsrc.labels
        val_sha = [sha256_file(p) for p in vsrc.paths]
    elif cfg.val_fraction > 0:
        train_idx, val_idx = split_train_val(src.labels, fraction=cfg.val_fraction, seed=cfg.seed,
                                             groups=src.groups, sha256=sha)
        val_paths, val_labels = [src.paths[i] for i in val_idx], [src.labels[i] for i in val_idx]
        val_sha = [sha[i] for i in val_idx]
    else:
        warnings.warn("val_fraction=0 and no val_source: no validation; the last epoch is the output", stacklevel=3)
        train_idx, val_paths, val_labels, val_sha = np.arange(len(src)), [], [], []
    train_sha = [sha[i] for i in train_idx]
    shared = set(train_sha) & set(val_sha)
    if shared:
        raise DeepfeatError(f"{len(shared)} image(s) are both in training and in val_source (same sha256); "
                            "remove them from one side")
    index = {c: k for k, c in enumerate(class_names)}
    train_t = np.asarray([index[src.labels[i]] for i in train_idx], dtype=np.int64)
    val_t = np.asarray([index[v] for v in val_labels], dtype=np.int64)
    missing = sorted(set(class_names) - {class_names[t] for t in train_t})
    if missing:
        raise DeepfeatError(f"the training split has no images of class(es) {missing}")
    return {"train_idx": train_idx, "train_t": train_t, "train_sha": train_sha, "val_paths": val_paths,
            "val_t": val_t, "val_sha": val_sha}
