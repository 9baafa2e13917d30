"""Fusion of FeatureSets of the same images: columns side by side, rows aligned by image sha256, provenance kept.

:func:`fuse_features` (``deepfeat fuse A.features B.features -o C.features``) is the library side;
:func:`feature_blocks` reads a FeatureSet's blocks (``meta["blocks"]`` of a fused extraction, or one block made
from a plain extraction's meta). A fused FeatureSet's columns are named ``<model>:<layer>:<j>``.
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from deepfeat.errors import DeepfeatError
from deepfeat.features import FeatureSet

__all__ = ["feature_blocks", "fuse_features", "merged_finetune"]

_BLOCK_FIELDS = ("weights", "weights_source", "weights_sha256", "model_sha256", "precision", "preprocessing",
                 "input_size", "device", "finetune")


def feature_blocks(fs: FeatureSet, fallback: str = "features") -> tuple[list[dict], list[str]]:
    """A FeatureSet's blocks (``meta["blocks"]``, or one block made from a plain extraction's meta) and its
    column names, each ``<model>:<layer>:<j>`` (names of a plain extraction ``f0..`` are renamed so)."""
    if isinstance(fs.meta.get("blocks"), list) and fs.meta["blocks"]:
        return [dict(b) for b in fs.meta["blocks"]], [str(n) for n in fs.feature_names]
    model = fs.meta.get("backbone") or fallback
    layer = fs.meta.get("layer") or "features"
    block = {"model": model, "layer": layer, "tta": fs.meta.get("tta", "none"), "kind": "deep" if
             fs.meta.get("backbone") else "unknown", **{k: fs.meta[k] for k in _BLOCK_FIELDS if k in fs.meta},
             "start": 0, "stop": fs.n_features}
    default = [f"f{j}" for j in range(fs.n_features)]
    names = ([f"{model}:{layer}:{j}" for j in range(fs.n_features)] if list(fs.feature_names) == default
             else [f"{model}:{layer}:{n}" for n in fs.feature_names])
    return [block], names


def merged_finetune(finetunes) -> dict | None:
    """One ``meta["finetune"]`` for a fused set: the union of its fine-tuned blocks' training / validation image
    sha256 lists, so the honesty check of fine-tuning overlap (``evaluation.honesty``) still sees every one."""
    found = [f for f in finetunes if isinstance(f, dict) and f]
    if not found:
        return None
    return {"checkpoint_sha256": found[0].get("checkpoint_sha256"),
            "checkpoints_sha256": [f.get("checkpoint_sha256") for f in found],
            "train_sha256": sorted({h for f in found for h in f.get("train_sha256") or []}),
            "val_sha256": sorted({h for f in found for h in f.get("val_sha256") or []}),
            "class_names": list(found[0].get("class_names") or [])}


def _row_keys(fs: FeatureSet, by: str, label: str) -> list:
    """One key per row: sha256 (or path), made unique by path, then by occurrence, where it repeats."""
    base = list(fs.sha256) if by == "sha256" else list(fs.paths)
    counts: dict = {}
    for k in base:
        counts[k] = counts.get(k, 0) + 1
    keys, seen = [], {}
    for i, k in enumerate(base):
        key = k
        if counts[k] > 1:  # byte-identical images (or one file listed twice): tell them apart by path
            key = (k, None if fs.paths is None else str(fs.paths[i]))
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else (*((key,) if isinstance(key, str) else key), seen[key]))
    return keys


def fuse_features(feature_sets, *, names=None) -> FeatureSet:
    """The columns of several FeatureSets of the same images side by side, as one FeatureSet.

    Rows are aligned by image sha256 (byte-identical images told apart by path), or by path when an input has
    no sha256; they follow the first input's order, whatever the order of the others. Columns are the inputs'
    blocks in input order, named ``<model>:<layer>:<j>``; ``meta["blocks"]`` concatenates their provenance.

    Parameters
    ----------
    feature_sets : sequence of FeatureSet
        At least two.
    names : sequence of str, optional
        What to call each input in error messages (e.g. its file name); default ``input 1``, ``input 2``...

    Raises
    ------
    DeepfeatError
        When an image is not in every input (the first few are named, with the count), labels or subject ids
        disagree for an image, or two inputs hold a block of the same column names (e.g. one file given twice):
        those are refused, not renamed, since the same block twice only duplicates columns.

    Examples
    --------
    >>> import numpy as np
    >>> a = FeatureSet(np.ones((2, 2)), y=["x", "y"], sha256=["a" * 64, "b" * 64], meta={"backbone": "m1",
    ...                "layer": "logits"})
    >>> b = FeatureSet(np.zeros((2, 1)), y=["y", "x"], sha256=["b" * 64, "a" * 64], meta={"backbone": "m2",
    ...                "layer": "pooled"})
    >>> fused = fuse_features([a, b])
    >>> fused.feature_names.tolist(), fused.y.tolist()
    (['m1:logits:0', 'm1:logits:1', 'm2:pooled:0'], ['x', 'y'])
    """
    sets = list(feature_sets)
    if len(sets) < 2 or not all(isinstance(f, FeatureSet) for f in sets):
        raise DeepfeatError(f"fuse_features needs at least two FeatureSets; got {len(sets)} "
                            f"({', '.join(type(f).__name__ for f in sets)})")
    labels = list(names) if names is not None else [f"input {k + 1}" for k in range(len(sets))]
    by = "sha256" if all(f.sha256 is not None for f in sets) else "path"
    if by == "path" and not all(f.paths is not None for f in sets):
        raise DeepfeatError("fuse_features: cannot align rows: " + ", ".join(
            lab for lab, f in zip(labels, sets) if f.sha256 is None and f.paths is None) +
            " record(s) neither image sha256 nor paths")
    keys = [_row_keys(f, by, lab) for f, lab in zip(sets, labels)]
    index = [dict(zip(k, range(len(k)))) for k in keys]
    order = keys[0]
    everywhere = set(order).intersection(*map(set, keys[1:]))
    partial = [(k, lab_i) for lab_i, ks in enumerate(keys) for k in dict.fromkeys(ks) if k not in everywhere]
    if partial:
        seen, shown = set(), []
        for key, where in partial:
            if key in seen:
                continue
            seen.add(key)
            f = sets[where]
            row = index[where][key]
            image = str(f.paths[row]) if f.paths is not None else str(f.sha256[row])
            missing = [lab for lab, idx in zip(labels, index) if key not in idx]
            shown.append(f"{image} (not in {', '.join(missing)})")
        raise DeepfeatError(f"fuse_features: {len(seen)} image(s) are not in every input, e.g. "
                            f"{'; '.join(shown[:5])}. Extract every input from the same images, or take "
                            "FeatureSet.subset of the common rows first")
    rows = [np.asarray([idx[k] for k in order]) for idx in index]

    def agree(field_name):
        value, conflicts = None, []
        for f, lab, r in zip(sets, labels, rows):
            v = getattr(f, field_name)
            if v is None:
                continue
            v = v[r]
            if value is None:
                value, first = v, lab
                continue
            bad = np.flatnonzero(np.asarray([str(a) != str(b) for a, b in zip(value, v)]))
            conflicts += [f"{sets[0].paths[i] if sets[0].paths is not None else order[i]}: '{value[i]}' in {first}"
                          f" vs '{v[i]}' in {lab}" for i in bad]
        if conflicts:
            what = {"y": "labels", "groups": "subject ids"}[field_name]
            raise DeepfeatError(f"fuse_features: {len(conflicts)} image(s) have conflicting {what}: "
                                f"{'; '.join(conflicts[:5])}")
        return value

    y, groups = agree("y"), agree("groups")
    blocks, columns, owner, start = [], [], {}, 0
    for k, (f, lab) in enumerate(zip(sets, labels)):
        f_blocks, f_names = feature_blocks(f, fallback=f"input{k + 1}")
        clash = sorted(set(f_names) & set(owner))
        if clash:
            raise DeepfeatError(f"fuse_features: {lab} and {owner[clash[0]]} both hold column {clash[0]!r} "
                                f"({len(clash)} shared names: the same block twice?); fuse each block once")
        owner.update(dict.fromkeys(f_names, lab))
        columns += f_names
        for b in f_blocks:
            blocks.append({**b, "start": start + int(b.get("start", 0)), "stop": start + int(b.get("stop",
                                                                                                 f.n_features))})
        start += f.n_features
    first = sets[0]
    meta = {"fused": True, "blocks": blocks, "models": list(dict.fromkeys(b["model"] for b in blocks)),
            "recipe": " + ".join(f"{b['model']}:{b['layer']}" for b in blocks), "aligned_by": by,
            "inputs": [{"name": lab, "n_features": f.n_features, "identity": f.identity(),
                        "source": f.meta.get("source")} for f, lab in zip(sets, labels)],
            "source": first.meta.get("source"), "n_images": len(order),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    finetune = merged_finetune([f.meta.get("finetune") for f in sets] + [b.get("finetune") for b in blocks])
    if finetune:
        meta["finetune"] = finetune
    return FeatureSet(np.hstack([f.X[r] for f, r in zip(sets, rows)]), y, first.paths,
                      groups, first.sha256, meta, columns)
