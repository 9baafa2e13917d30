"""The checks that make a cross-validation figure believable: subject grouping, duplicate images, fine-tuning
overlap, and the features of the sanity baselines (colour histograms). Used by :mod:`deepfeat.evaluation.cross_validation`.

Every function returns plain data plus a ``text`` sentence; the report prints those sentences at its top.
"""
from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from deepfeat.errors import DeepfeatError, ImageReadError
from deepfeat.extraction.handcrafted import (
    colour_histograms,  # the one implementation (also a fusion block)
)

SELECTION_TEXT = ("Feature standardisation and mRMR selection were fitted inside each training fold only "
                  "(never on the test fold); one mRMR ranking per fold is shared by every classifier.")


def resolve_groups(features, groups) -> tuple[np.ndarray | None, dict]:
    """Subject ids to group folds by, and a description saying where they came from.

    ``"auto"`` uses ``features.groups`` when present (and says so); ``None``/``"none"`` gives image-level folds, with
    a warning when the FeatureSet does hold subject ids; an array gives one id per row.
    """
    n = len(features)
    have = features.groups is not None
    if isinstance(groups, str) and groups not in ("auto", "none"):
        if ".csv" not in groups.lower():
            raise DeepfeatError(f"groups must be 'auto', 'none', None, a CSV 'FILE.csv[:COLUMN]' or an array of {n} "
                                f"subject ids; got {groups!r}")
        g, source = groups_from_csv(features, groups)
        return g, {"grouped": True, "source": source, "n_groups": len(set(g)),
                   "text": f"Folds were grouped by subject: ids from {source} ({len(set(g))} subjects), so no "
                           "subject has images on both sides of a split."}
    if isinstance(groups, str) and groups == "auto":
        if have:
            g = features.groups
            info = {"grouped": True, "source": "FeatureSet groups (groups='auto')", "n_groups": len(set(g)),
                    "text": f"Folds were grouped by subject: the FeatureSet's subject ids ({len(set(g))} subjects) "
                            "were used (groups='auto'), so no subject has images on both sides of a split."}
            return g, info
        return None, {"grouped": False, "source": None, "n_groups": None,
                      "text": "Folds were NOT grouped by subject: the FeatureSet records no subject ids, so images "
                              "of one patient may sit in both training and test folds (optimistic if they do)."}
    if groups is None or isinstance(groups, str):  # None or "none"
        text = "Folds were NOT grouped by subject (groups='none' was asked for)."
        if have:
            text += (f" WARNING: the FeatureSet does hold subject ids ({len(set(features.groups))} subjects); "
                     "image-level folds put one patient's images on both sides of a split.")
            warnings.warn(text, UserWarning, stacklevel=3)
        return None, {"grouped": False, "source": "disabled", "n_groups": None, "text": text}
    g = np.asarray([str(v) for v in np.asarray(groups).ravel()])
    if g.shape != (n,):
        raise DeepfeatError(f"groups has {g.shape[0]} entries but the FeatureSet has {n} rows")
    return g, {"grouped": True, "source": "groups argument", "n_groups": len(set(g)),
               "text": f"Folds were grouped by the subject ids given ({len(set(g))} subjects)."}


def groups_from_csv(features, spec: str) -> tuple[np.ndarray, str]:
    """Subject ids for every row from ``FILE.csv[:COLUMN]`` (columns ``path`` and COLUMN, default ``group``).

    A row matches by its path as stored, else by absolute path, else by file name when that name is unique.
    """
    import pandas as pd

    path, _, column = spec.partition(".csv")
    path, column = path + ".csv", column.lstrip(":") or "group"
    if features.paths is None:
        raise DeepfeatError(f"--groups {spec}: the FeatureSet records no image paths to match the CSV against")
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as exc:
        raise DeepfeatError(f"--groups {spec}: cannot read {path}: {exc}") from exc
    missing = [c for c in ("path", column) if c not in table.columns]
    if missing:
        raise DeepfeatError(f"--groups {spec}: {path} lacks column(s) {missing}; it has {list(table.columns)}")
    exact = dict(zip(table["path"], table[column]))
    absolute = {os.path.abspath(p): g for p, g in exact.items()}
    names = pd.Series(list(exact.values()), index=[os.path.basename(p) for p in exact])
    by_name = names[~names.index.duplicated(keep=False)].to_dict()
    ids, unmatched = [], []
    for p in features.paths:
        g = exact.get(p, absolute.get(os.path.abspath(p), by_name.get(os.path.basename(p))))
        ids.append(g)
        if g is None or (isinstance(g, float) and np.isnan(g)):
            unmatched.append(p)
    if unmatched:
        raise DeepfeatError(f"--groups {spec}: {len(unmatched)} of {len(ids)} images have no {column!r} in {path} "
                            f"(first: {', '.join(unmatched[:3])})")
    return np.asarray([str(g) for g in ids]), f"{path} column {column!r}"


def duplicate_groups(features) -> list[list[int]]:
    """Rows sharing a sha256 (byte-identical images), each group sorted, groups in first-row order."""
    if features.sha256 is None:
        return []
    rows = defaultdict(list)
    for i, h in enumerate(features.sha256):
        rows[h].append(i)
    return [r for r in rows.values() if len(r) > 1]


def duplicate_report(features, labels, fold_of_rows: list[np.ndarray]) -> dict:
    """Byte-identical images: groups, pairs, pairs split across train/test, and conflicting labels.

    ``fold_of_rows``: one array per repeat giving each row's test-fold number. A pair "falls across a split" when
    its two images sit in different test folds: then, in each of those folds, one copy is trained on and the other
    is tested.
    """
    if features.sha256 is None:
        return {"available": False, "n_groups": 0, "n_pairs": 0, "pairs_across_split": [], "conflicting": [],
                "groups": [], "text": "Duplicate check not possible: the FeatureSet records no image sha256."}
    paths = features.paths if features.paths is not None else np.asarray([f"row {i}" for i in range(len(features))])
    groups = duplicate_groups(features)
    listed, conflicting, n_pairs = [], [], 0
    across = [0] * len(fold_of_rows)
    for rows in groups:
        n_pairs += len(rows) * (len(rows) - 1) // 2
        entry = {"sha256": str(features.sha256[rows[0]]), "rows": rows, "paths": [str(paths[i]) for i in rows],
                 "labels": [str(labels[i]) for i in rows]}
        listed.append(entry)
        if len(set(entry["labels"])) > 1:
            conflicting.append(entry)
        for r, fold_of in enumerate(fold_of_rows):
            f = fold_of[rows]
            across[r] += int(sum(f[a] != f[b] for a in range(len(rows)) for b in range(a + 1, len(rows))))
    if not groups:
        text = f"No byte-identical images among the {len(features)} rows (sha256)."
    else:
        text = (f"{len(groups)} groups of byte-identical images ({n_pairs} pairs); pairs split across train/test: "
                f"{', '.join(map(str, across))} (per repeat). An identical image on both sides of a split inflates "
                "accuracy.")
        if conflicting:
            text += " CONFLICTING LABELS: " + "; ".join(
                " = ".join(f"{p} [{lab}]" for p, lab in zip(c["paths"], c["labels"])) for c in conflicting)
    return {"available": True, "n_groups": len(groups), "n_pairs": n_pairs, "pairs_across_split": across,
            "conflicting": conflicting, "groups": listed, "text": text}


def finetune_overlap(features) -> dict | None:
    """How many CV images the backbone was fine-tuned (or validated) on, from ``meta["finetune"]`` sha256 lists."""
    ft = features.meta.get("finetune")
    if not ft:
        return None
    if features.sha256 is None:
        return {"train_overlap": None, "val_overlap": None, "warning": True,
                "text": "WARNING: the features come from a fine-tuned backbone, but the FeatureSet has no image "
                        "sha256, so overlap between fine-tuning data and CV data cannot be checked."}
    mine = set(features.sha256)
    train = set((ft or {}).get("train_sha256") or [])
    val = set((ft or {}).get("val_sha256") or [])
    n_train = sum(h in train for h in features.sha256)
    n_val = sum(h in val for h in features.sha256)
    info = {"train_overlap": n_train, "val_overlap": n_val, "n_finetune_train": len(train),
            "n_finetune_val": len(val), "unique_overlap": len(mine & (train | val)), "warning": n_train + n_val > 0}
    if not train and not val:
        info.update(warning=True, text="WARNING: the backbone was fine-tuned, but its metadata lists no training "
                                       "image hashes: overlap with the CV data is unknown.")
    elif info["warning"]:
        info["text"] = (f"WARNING: the backbone was fine-tuned on {n_train} of the {len(features)} CV images "
                        f"(and validated on {n_val}): those images were seen by the network before being tested, "
                        "so these cross-validation figures are optimistic (fine-tune inside the folds instead).")
    else:
        info["text"] = ("The backbone was fine-tuned on images that do not overlap the CV data "
                        f"({len(train)} training, {len(val)} validation images checked by sha256).")
    return info


def histogram_features(features, baseline: str) -> tuple[np.ndarray | None, str]:
    """Colour-histogram matrix for the baseline, or None with the reason (``baseline='auto'`` only)."""
    if baseline not in ("auto", "histogram"):
        return None, ""
    if features.paths is None:
        reason = "the FeatureSet records no image paths"
    else:
        missing = [p for p in features.paths if not Path(p).is_file()]
        reason = (f"{len(missing)} of {len(features)} image paths are not reachable (first: {missing[0]})"
                  if missing else "")
        if not reason:
            try:
                return colour_histograms(features.paths), ""
            except ImageReadError as exc:
                reason = str(exc)
    if baseline == "histogram":
        raise DeepfeatError(f"baseline='histogram' needs the images: {reason}; use baseline='majority'")
    return None, f"colour-histogram baseline skipped: {reason}; majority-class baseline only"
