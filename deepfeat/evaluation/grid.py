"""Several feature sets cross-validated on identical folds: naming and row alignment for the grid.

``cross_validate`` accepts one FeatureSet, a list, or a dict ``name -> FeatureSet``. Every set must hold the same
images; rows are aligned by image sha256 (else by path, else they must already be in the same order with the same
labels), so fold ``k`` holds the same images whichever set is scored on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deepfeat.errors import DeepfeatError

__all__ = ["as_feature_sets", "feature_set_name"]


def feature_set_name(fs, i: int) -> str:
    """A readable name for the i-th FeatureSet of a list: its file stem when known, else its model and layer."""
    meta = fs.meta or {}
    for key in ("name", "source_file"):
        if meta.get(key):
            return Path(str(meta[key])).stem
    model = meta.get("model") or meta.get("backbone")
    if model:
        return f"{model}:{meta['layer']}" if meta.get("layer") else str(model)
    return f"features{i + 1}"


def _row_keys(fs):
    if fs.sha256 is not None and len(set(fs.sha256)) == len(fs):
        return "sha256", list(fs.sha256)
    if fs.paths is not None and len(set(fs.paths)) == len(fs):
        return "path", list(fs.paths)
    return None, None


def _unique(names: list[str]) -> list[str]:
    seen, out = {}, []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def as_feature_sets(features) -> dict | None:
    """``{name: FeatureSet}`` with rows aligned to the first set, or None for a single FeatureSet.

    Raises
    ------
    DeepfeatError
        When the sets hold different images (naming up to five present in only some), or disagree on a label.
    """
    from deepfeat.features import FeatureSet

    if isinstance(features, FeatureSet):
        return None
    if isinstance(features, dict):
        items = [(str(k), v) for k, v in features.items()]
    elif isinstance(features, (list, tuple)):
        items = list(zip(_unique([feature_set_name(f, i) for i, f in enumerate(features)]), features))
    else:
        raise DeepfeatError(f"features must be a FeatureSet, a list of them or a dict name -> FeatureSet; "
                            f"got {type(features).__name__}")
    if not items:
        raise DeepfeatError("features is empty: give at least one FeatureSet")
    bad = [n for n, f in items if not isinstance(f, FeatureSet)]
    if bad:
        raise DeepfeatError(f"features {bad} are not FeatureSets (load them with deepfeat.load_features)")
    name0, first = items[0]
    kind, keys0 = _row_keys(first)
    out = {name0: first}
    for name, fs in items[1:]:
        if kind is None or _row_keys(fs)[0] != kind:
            if len(fs) != len(first) or fs.y is None or not np.array_equal(np.asarray(fs.y), np.asarray(first.y)):
                raise DeepfeatError(f"feature sets {name0!r} and {name!r} cannot be aligned: they record no unique "
                                    "image sha256 / paths in common and differ in length or labels")
            out[name] = fs
            continue
        keys = _row_keys(fs)[1]
        where = {k: i for i, k in enumerate(keys)}
        only_first = [k for k in keys0 if k not in where]
        only_this = sorted(set(keys) - set(keys0))
        if only_first or only_this:
            sample = (only_first + only_this)[:5]
            raise DeepfeatError(f"feature sets {name0!r} and {name!r} hold different images ({len(only_first)} only "
                                f"in {name0!r}, {len(only_this)} only in {name!r}; by {kind}, e.g. "
                                f"{', '.join(map(str, sample))}); a grid needs the same images in every set")
        aligned = fs.subset(np.asarray([where[k] for k in keys0]))
        if aligned.y is not None and first.y is not None and not np.array_equal(
                np.asarray(aligned.y).astype(str), np.asarray(first.y).astype(str)):
            raise DeepfeatError(f"feature sets {name0!r} and {name!r} give different labels to the same images")
        out[name] = aligned
    return out


def named_by_stem(files, load) -> dict:
    """``{file stem: load(file)}`` for a grid given as files (stems made unique with -2, -3...)."""
    names = _unique([Path(f).stem for f in files])
    return {n: load(f) for n, f in zip(names, files)}
