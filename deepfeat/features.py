"""The FeatureSet: one matrix of deep features with its labels, provenance and metadata, in one file.

File format (documented so that numpy alone can read it; see README "The FeatureSet file"):
a NumPy ``.npz`` archive, written without pickles, holding

============  ==============================  =================================================
key           dtype / shape                   meaning
============  ==============================  =================================================
X             float32 (n, d)                  the features, rows in input order
y             str or int (n,)                 labels (absent when unlabelled)
paths         str (n,)                        image paths as given (absent when unknown)
groups        str (n,)                        subject ids (absent when unknown)
sha256        str (n,)                        sha256 of each image's bytes (absent when unknown)
feature_names str (d,)                        column names (absent: ``f0..f{d-1}``)
meta_json     str ()                          JSON: backbone, weights id + sha256, layer, ...
============  ==============================  =================================================

``np.load(path, allow_pickle=False)`` opens it; ``json.loads(str(f["meta_json"]))`` gives the metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepfeat.errors import FeatureFileError
from deepfeat.fileio import atomic_write

FORMAT_VERSION = 1
_OPTIONAL_ROW_FIELDS = ("y", "paths", "groups", "sha256")


def _as_str_array(values, name: str, n: int | None) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray([str(v) for v in values], dtype=str)
    if n is not None and arr.shape != (n,):
        raise FeatureFileError(f"FeatureSet: '{name}' has {arr.shape[0]} entries but X has {n} rows")
    return arr


def _as_label_array(y, n: int) -> np.ndarray | None:
    if y is None:
        return None
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise FeatureFileError(f"FeatureSet: 'y' must have one label per row ({n}); got shape {arr.shape}")
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise FeatureFileError("FeatureSet: float labels must be whole numbers; use strings for class names")
        return arr.astype(np.int64)
    return np.asarray([str(v) for v in arr], dtype=str)


@dataclass(eq=False)
class FeatureSet:
    """Deep features of a set of images, with labels and provenance.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features; stored as float32.
    y : array-like of shape (n_samples,), optional
        Class labels (strings or integers).
    paths, groups, sha256 : array-like of shape (n_samples,), optional
        Image paths, subject ids (for subject-grouped folds) and sha256 of image bytes (for duplicate checks).
    meta : dict, optional
        Provenance: backbone, weights identity, layer, input size, preprocessing, versions.
    feature_names : array-like of shape (n_features,), optional

    Examples
    --------
    >>> import numpy as np
    >>> fs = FeatureSet(np.zeros((2, 3)), y=["a", "b"])
    >>> fs.X.dtype, len(fs), fs.n_features
    (dtype('float32'), 2, 3)
    """

    X: Any
    y: Any = None
    paths: Any = None
    groups: Any = None
    sha256: Any = None
    meta: dict = field(default_factory=dict)
    feature_names: Any = None

    def __post_init__(self):
        X = np.asarray(self.X, dtype=np.float32)
        if X.ndim != 2:
            raise FeatureFileError(f"FeatureSet: X must be 2-D (n_samples, n_features); got shape {X.shape}")
        self.X = X
        n, d = X.shape
        self.y = _as_label_array(self.y, n)
        self.paths = _as_str_array(self.paths, "paths", n)
        self.groups = _as_str_array(self.groups, "groups", n)
        self.sha256 = _as_str_array(self.sha256, "sha256", n)
        if self.feature_names is None:
            self.feature_names = np.asarray([f"f{i}" for i in range(d)], dtype=str)
        else:
            self.feature_names = _as_str_array(self.feature_names, "feature_names", None)
            if self.feature_names.shape != (d,):
                raise FeatureFileError(
                    f"FeatureSet: feature_names has {self.feature_names.shape[0]} entries but X has {d} columns"
                )
        self.meta = dict(self.meta or {})

    # --- basic views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.X.shape[0]

    def __repr__(self) -> str:
        classes = "unlabelled" if self.y is None else f"{len(self.classes_)} classes"
        backbone = self.meta.get("backbone", self.meta.get("recipe", "?"))
        return f"FeatureSet({len(self)} x {self.n_features}, {classes}, backbone={backbone!r})"

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def classes_(self) -> np.ndarray:
        if self.y is None:
            return np.asarray([], dtype=str)
        return np.unique(self.y)

    def class_counts(self) -> dict:
        if self.y is None:
            return {}
        values, counts = np.unique(self.y, return_counts=True)
        return {v.item() if hasattr(v, "item") else v: int(c) for v, c in zip(values, counts)}

    def subset(self, index) -> "FeatureSet":
        """Rows ``index`` (indices or boolean mask) as a new FeatureSet sharing ``meta``."""
        index = np.asarray(index)
        pick = (lambda a: None if a is None else a[index])
        return FeatureSet(
            self.X[index], pick(self.y), pick(self.paths), pick(self.groups), pick(self.sha256),
            dict(self.meta), self.feature_names,
        )

    def nonfinite_rows(self) -> np.ndarray:
        """Indices of rows with NaN or inf in X."""
        return np.flatnonzero(~np.isfinite(self.X).all(axis=1))

    def check_trainable(self, purpose: str = "training") -> dict:
        """Raise a clear error unless the rows are labelled, finite and of >= 2 classes; return class counts."""
        if self.y is None:
            raise FeatureFileError(f"the FeatureSet has no labels (y); {purpose} needs labelled features "
                                   "(extract from a folder of class folders or a CSV with a 'label' column)")
        counts = self.class_counts()
        if len(counts) < 2:
            raise FeatureFileError(f"{purpose} needs at least 2 classes; the FeatureSet has only {list(counts)} "
                                   f"({len(self)} rows)")
        bad = self.nonfinite_rows()
        if len(bad):
            where = self.paths[bad[:5]] if self.paths is not None else bad[:5]
            raise FeatureFileError(f"{len(bad)} of {len(self)} feature rows contain NaN or inf (first: "
                                   f"{', '.join(map(str, where))}); re-extract those images or drop them "
                                   "(FeatureSet.subset)")
        return counts

    def to_frame(self):
        """A pandas DataFrame: feature columns plus ``label``, ``path``, ``group``, ``sha256`` when present."""
        import pandas as pd

        df = pd.DataFrame(self.X, columns=list(self.feature_names))
        for col, values in (("label", self.y), ("path", self.paths), ("group", self.groups), ("sha256", self.sha256)):
            if values is not None:
                df[col] = values
        return df

    def identity(self) -> str:
        """sha256 over X, y and meta: names this FeatureSet in reports and model files."""
        import hashlib

        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.X).tobytes())
        if self.y is not None:
            h.update("\x00".join(map(str, self.y)).encode())
        if self.sha256 is not None:
            h.update("\x00".join(self.sha256).encode())
        return h.hexdigest()

    # --- file I/O ----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the FeatureSet atomically to ``path`` (an ``.npz`` archive; the suffix is kept as given)."""
        path = Path(path)
        meta = dict(self.meta)
        meta.setdefault("deepfeat_format", FORMAT_VERSION)
        arrays = {"X": self.X, "feature_names": self.feature_names,
                  "meta_json": np.asarray(json.dumps(meta, sort_keys=True, default=str))}
        for name in _OPTIONAL_ROW_FIELDS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value

        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(path, write)
        return path


def load_features(path) -> FeatureSet:
    """Read a FeatureSet written by :meth:`FeatureSet.save` (or ``deepfeat extract``).

    Raises
    ------
    FeatureFileError
        When the file is missing, not a FeatureSet archive, or its arrays disagree in length.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} does not exist; create it with 'deepfeat extract'")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            if "X" not in files or "meta_json" not in files:
                raise FeatureFileError(
                    f"{path} is not a deepfeat FeatureSet file (arrays found: {sorted(files)}); "
                    "create one with 'deepfeat extract'"
                )
            data = {k: f[k] for k in files}
    except FeatureFileError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError...
        raise FeatureFileError(f"{path} is not a readable deepfeat FeatureSet file: {exc}") from exc
    try:
        meta = json.loads(str(data["meta_json"]))
    except json.JSONDecodeError as exc:
        raise FeatureFileError(f"{path}: metadata is not valid JSON ({exc})") from exc
    if meta.get("deepfeat_format", FORMAT_VERSION) > FORMAT_VERSION:
        raise FeatureFileError(
            f"{path} was written by a newer deepfeat (format {meta['deepfeat_format']}); upgrade deepfeat"
        )
    try:
        return FeatureSet(
            data["X"], data.get("y"), data.get("paths"), data.get("groups"), data.get("sha256"),
            meta, data.get("feature_names"),
        )
    except FeatureFileError as exc:
        raise FeatureFileError(f"{path}: {exc}") from exc


# --- fusion ----------------------------------------------------------------------------------------
_BLOCK_FIELDS = ("weights", "weights_source", "weights_sha256", "model_sha256", "precision", "preprocessing",
                 "input_size", "device")


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
    from deepfeat.errors import DeepfeatError

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
    return FeatureSet(np.hstack([f.X[r] for f, r in zip(sets, rows)]), y, first.paths,
                      groups, first.sha256, meta, columns)
