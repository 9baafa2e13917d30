"""The one fold maker: outer, inner (nested CV), repeated and hold-out (learning-curve) splits, and their checks.

Every split of deepfeat is a shuffled stratified k-fold (grouped by subject when there are subject ids), repeat
``r`` shuffled with ``random_state=seed + r``. Cross-validation uses every fold, nested CV the same rule on each
outer training part, learning curves the first fold of each repeat as a fixed hold-out test set.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.parameters import check_count

__all__ = ["make_folds"]


def _check_classes(y, folds: int, param: str, part: str | None, class_names) -> None:
    codes, counts = np.unique(y, return_counts=True)
    if counts.min() >= folds:
        return
    if part is not None:  # an inner split: say which outer fold cannot be split
        raise DeepfeatError(f"{param}={folds} but {part} has a class with only {counts.min()} image(s); "
                            + _inner_advice(param, int(counts.min())))
    names = [class_names[c] if class_names is not None else c for c in codes]
    names = [n.item() if hasattr(n, "item") else n for n in names]  # plain str / int in the message
    by_class = dict(zip(names, counts.tolist()))
    small = {c: n for c, n in by_class.items() if n < folds}
    smallest = min(by_class.values())
    advice = (f"Use --{param.replace('_', '-')} {smallest} (the smallest class size) or fewer, or collect more images."
              if smallest >= 2 else
              f"A class of {smallest} image cannot be cross-validated at all (it needs >= 2 images, one per side of "
              "a split): collect more images of it, or leave that class out.")
    raise DeepfeatError(f"{param}={folds} but class(es) {small} have fewer images than folds: every test fold needs "
                        f"each class (class counts: {by_class}). {advice}")


def _inner_advice(param: str, most: int) -> str:
    """What to do when an inner split (nested CV) cannot have ``param`` folds: at most ``most`` of them, never
    fewer than the minimum of 2 (the messages name the parameter as ``param=N``, which the CLI shows as its option).

    Examples
    --------
    >>> _inner_advice("inner_folds", 4)
    'use inner_folds=4 or fewer'
    >>> _inner_advice("inner_folds", 1).split(":")[0]
    'even the minimum inner_folds=2 cannot split it'
    """
    if most >= 2:
        return f"use {param}={most} or fewer"
    return (f"even the minimum {param}=2 cannot split it: use a smaller value of the 'folds' parameter (larger "
            "outer training parts) or collect more images")


def make_folds(y, groups, folds: int, repeats: int = 1, seed: int = 0, *, param: str = "folds",
               part: str | None = None, class_names=None,
               check_classes: bool = True) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(repeat, fold, train_idx, test_idx)`` for every fold; stratified, grouped when ``groups`` is given.

    Repeat ``r`` shuffles with ``random_state=seed + r``. Checks, before any split: ``folds`` (an int >= 2),
    ``repeats`` (an int >= 1), every class holding at least ``folds`` images (``check_classes``) and at least
    ``folds`` subjects when grouped.

    Parameters
    ----------
    y : array-like
        Class of each row.
    groups : array-like or None
        Subject id of each row (no subject on both sides of a split), or None for image-level folds.
    folds, repeats, seed : int
    param : str
        The parameter that gave ``folds``, named in the messages (``"folds"``, ``"inner_folds"``).
    part : str, optional
        What is being split when it is not the whole data (e.g. "the training part of outer fold 3 (repeat 0)").
    class_names : sequence, optional
        Names of the class codes in ``y``, for the messages.
    check_classes : bool
        Refuse classes smaller than ``folds`` (a hold-out split only uses the first fold: scikit-learn warns).

    Examples
    --------
    >>> folds = make_folds([0] * 5 + [1] * 5, None, 5, repeats=2)
    >>> len(folds), folds[0][:2], len(folds[0][3])
    (10, (0, 0), 2)
    """
    folds = check_count(param, folds, 2)
    repeats = check_count("repeats", repeats, 1)
    y = np.asarray(y)
    if check_classes:
        _check_classes(y, folds, param, part, class_names)
    if groups is not None and len(set(groups)) < folds:
        n = len(set(groups))
        if part is not None:
            raise DeepfeatError(f"{param}={folds} but {part} holds only {n} subjects; " + _inner_advice(param, n))
        raise DeepfeatError(f"{param}={folds} but there are only {n} subjects (groups); use "
                            f"--{param.replace('_', '-')} {n} or fewer")
    out = []
    for r in range(repeats):
        if groups is None:
            splits = StratifiedKFold(folds, shuffle=True, random_state=seed + r).split(np.zeros(len(y)), y)
        else:
            splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + r).split(
                np.zeros(len(y)), y, groups)
        out += [(r, k, tr, te) for k, (tr, te) in enumerate(splits)]
    return out
