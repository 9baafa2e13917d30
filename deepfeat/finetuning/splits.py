"""Train / validation splits that never put a subject or a byte-identical image on both sides."""
from __future__ import annotations

import numpy as np

from deepfeat.errors import DeepfeatError

__all__ = ["split_train_val"]


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
