"""Fold results cached by identity, so adding repeats or configurations to a cross-validation recomputes nothing old.

A cell (one configuration fitted on one training split and scored on its test split) is keyed by the sha256 of: the
FeatureSet's content (:meth:`deepfeat.features.FeatureSet.identity`), the training and test row indices, a stable
description of the estimator (class + parameters, seeds included) and of the selection, and the deepfeat /
scikit-learn versions. The value is what the runner would have computed (predictions, scores, times), so a cached
run gives the same numbers as a fresh one. Writes are atomic; a corrupt or unreadable entry is recomputed, and a
cache that cannot be written (read-only, full disk) is skipped with one warning.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from deepfeat.fileio import atomic_write_bytes
from deepfeat.locations import default_cache_root

__all__ = ["FoldCache", "resolve_fold_cache", "stable_repr"]


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


def stable_repr(obj) -> str:
    """A description of ``obj`` that is the same in every process (no memory addresses), for cache keys."""
    if hasattr(obj, "get_params") and hasattr(obj, "fit"):
        params = obj.get_params(deep=False)
        return f"{type(obj).__module__}.{type(obj).__qualname__}(" + ", ".join(
            f"{k}={stable_repr(v)}" for k, v in sorted(params.items())) + ")"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(stable_repr(v) for v in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {stable_repr(v)}" for k, v in sorted(obj.items(), key=str)) + "}"
    if callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return repr(obj)


class FoldCache:
    """Pickled fold results under ``root``, one file per key; counts hits and misses (``hits``, ``misses``).

    Parameters
    ----------
    root : str or Path
        Folder of the cache (created on first write).
    """

    def __init__(self, root):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.unwritable = 0
        self._salt = f"deepfeat {_version('deepfeat')} scikit-learn {_version('scikit-learn')}"

    def __repr__(self) -> str:
        return f"FoldCache({str(self.root)!r})"

    def key(self, *parts) -> str:
        """sha256 of ``parts`` (arrays by their bytes and dtype, anything else by :func:`stable_repr`)."""
        h = hashlib.sha256(self._salt.encode())
        for p in parts:
            if isinstance(p, np.ndarray):
                h.update(f"array {p.dtype} {p.shape}".encode())
                h.update(np.ascontiguousarray(p).tobytes())
            else:
                h.update(b"\x00" + stable_repr(p).encode())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pkl"

    def get(self, key: str):
        """The stored value, or None (counted as a miss) when absent or unreadable."""
        path = self._path(key)
        try:
            value = pickle.loads(path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value) -> None:
        """Store ``value`` under ``key``. The run never needs the stored copy, so a cache that cannot be written
        (read-only, full disk) is skipped: the first failure is warned about (naming the cache), the rest counted in
        ``unwritable``."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), fsync=False)
        except OSError as exc:
            self.unwritable = getattr(self, "unwritable", 0) + 1
            if self.unwritable == 1:
                warnings.warn(f"fold cache {self.root} cannot be written ({exc.strerror or exc}: "
                              f"{exc.filename or path}); the evaluation goes on without caching its folds (further "
                              "failures are counted, not warned about)", RuntimeWarning, stacklevel=2)


def resolve_fold_cache(fold_cache) -> FoldCache | None:
    """``"auto"``: ``<deepfeat cache root>/cv-folds``; a path: that folder; None / False / ``"none"`` (as the CLI's
    ``--fold-cache none``): no caching. A folder named none is ``"./none"``."""
    if fold_cache is None or fold_cache is False or (isinstance(fold_cache, str) and fold_cache == "none"):
        return None
    if isinstance(fold_cache, FoldCache):
        return fold_cache
    if isinstance(fold_cache, str) and fold_cache == "auto":
        return FoldCache(default_cache_root() / "cv-folds")
    return FoldCache(Path(fold_cache).expanduser())
