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

Large sets: the archive stores its members uncompressed (``np.savez``), so ``X.npy`` sits in the file as one
contiguous block: ``load_features(path, mmap_mode="r")`` memory-maps it instead of reading it (a 10^6 x 1,000 set
then costs page cache, not 4 GB of process memory), and :meth:`FeatureSet.save` writes ``X`` in 16 MiB chunks, so
saving a memory-mapped ``X`` (as a distributed extraction returns) needs no second copy. Files of every earlier
release are laid out the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
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
        if np.iscomplexobj(self.X):  # the float32 cast would drop the imaginary parts with only a warning
            raise FeatureFileError(f"FeatureSet: X is complex ({np.asarray(self.X).dtype}); features must be real "
                                   "numbers. Pass X.real or np.abs(X) yourself if that is what you mean")
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
        h.update(np.ascontiguousarray(self.X))  # the buffer itself: no copy of X (same digest as its bytes)
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


def _is_zip(path: Path) -> bool:
    """An .npz archive is a zip file: it starts with the local-file-header magic (or is an empty zip)."""
    with open(path, "rb") as fh:
        return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _memmap_member(path: Path, name: str, mode: str) -> np.ndarray:
    """Array ``name`` of an .npz archive, memory-mapped in place (it must be stored uncompressed)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise FeatureFileError(f"{path}: '{name}' is stored compressed, so it cannot be memory-mapped; load it "
                               "without mmap_mode (or re-save it with FeatureSet.save, which stores it uncompressed)")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise FeatureFileError(f"{path}: damaged archive (no local header for '{name}')")
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode=mode, offset=offset, shape=shape, order="F" if fortran else "C")


def load_features(path, *, mmap_mode=None) -> FeatureSet:
    """Read a FeatureSet written by :meth:`FeatureSet.save` (or ``deepfeat extract``).

    ``mmap_mode`` ('r' or 'c', copy-on-write): memory-map ``X`` from the file instead of reading it into memory
    (for sets larger than RAM; see the module docstring).

    Raises
    ------
    FeatureFileError
        When the file is missing, not a FeatureSet archive, or its arrays disagree in length.
    """
    path = Path(path)
    if path.is_dir():
        raise FeatureFileError(f"{path} is a folder, not a FeatureSet file: run `deepfeat extract {path} -o "
                               f"FEATURES.features` first (or `deepfeat run efficientnet_lite0_offline {path}` for "
                               "the whole procedure; Python: extract_features)")
    if not path.is_file():
        raise FeatureFileError(f"feature file {path} does not exist; create it with 'deepfeat extract'")
    if not _is_zip(path):  # numpy would try it as a pickle and advise allow_pickle=True: wrong advice here
        raise FeatureFileError(f"{path} is not a FeatureSet file (a FeatureSet is an .npz archive written by "
                               "`deepfeat extract` or FeatureSet.save); create one with 'deepfeat extract'")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            if "X" not in files or "meta_json" not in files:
                raise FeatureFileError(
                    f"{path} is not a deepfeat FeatureSet file (arrays found: {sorted(files)}); "
                    "create one with 'deepfeat extract'"
                )
            data = {k: f[k] for k in files if not (mmap_mode and k == "X")}
        if mmap_mode:
            if mmap_mode not in ("r", "c"):
                raise FeatureFileError(f"mmap_mode must be None, 'r' or 'c'; got {mmap_mode!r}")
            data["X"] = _memmap_member(path, "X", mmap_mode)
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
