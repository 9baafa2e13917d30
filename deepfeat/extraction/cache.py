"""Content-addressed on-disk cache of per-image feature vectors.

Layout under ``root`` (default ``$DEEPFEAT_CACHE_DIR``, else ``~/.cache/deepfeat``)::

    features/<model_key[:32]>/config.json                what the model key stands for (informational)
    features/<model_key[:32]>/<sha[:2]>/<sha>.f32        one entry per image (sha = sha256 of the image bytes)
    requests/<request_id>.json                           request note: a cheap request identity -> model key
                                                         and FeatureSet meta (see deepfeat.extraction.api)

The model key is the sha256 of a canonical JSON of (cache format version, backbone, weights identity, layer,
preprocessing config, precision), so an entry's effective key is the sha256-derived pair (model key, image
sha256). One file per image keeps writes independent: an interrupted run leaves every finished entry usable,
and two processes filling one cache at once can at worst both write the same entry.

Entry format (little-endian, readable with numpy alone)::

    8 bytes   magic b"DFCACHE2"
    8 bytes   uint64 d (number of float32 values)
    4*d bytes float32 values
    8 bytes   blake2b(digest_size=8) of the entry's key (model key + image sha256) and everything before it

The key inside the checksum means another image's valid entry copied over an entry fails the check and is
recomputed. Entries of format 1 (``DFCACHE1``, checksum without the key) are never read: the format version is part
of the model key, so they sit under another folder and are simply misses (recomputed once, then stored anew).
Entries are written with ordinary permissions (0644 under the usual umask), so a cache can be shared between users.

Writes go to a temporary file in the same folder, are fsync'ed and then ``os.replace``'d into place, so a reader
sees either no entry or a complete one. A reader that finds a damaged entry (bad magic, length, checksum or
dimension) or cannot read one at all (a directory in its place, no permission) treats it as missing, so it gets
recomputed; the first such entry is warned about. Nothing the cache writes is needed by the run: an entry, a model
note (``config.json``, ``precision.json``) or a request note that cannot be stored (disk full, a read-only or foreign
cache, a cache that becomes read-only mid-run) is skipped, the first such failure is warned about once per
:class:`FeatureCache` (naming the cache root), and the run goes on with the computed features.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np

from deepfeat.fileio import atomic_write_bytes
from deepfeat.locations import default_cache_root

__all__ = ["CACHE_FORMAT_VERSION", "FeatureCache", "default_cache_root", "model_key"]

CACHE_FORMAT_VERSION = 2
_MAGIC = b"DFCACHE2"
_HEADER = struct.Struct("<8sQ")
_DIGEST = 8


def model_key(*, backbone: str, weights_id: str, layer: str, preprocessing: dict, precision: str = "fp32",
              tta: str = "none") -> str:
    """sha256 hex naming one way of turning images into features (everything but the image itself).

    ``tta`` ('none', 'flip', 'd4': test-time view averaging) joins the key only when it is not 'none', so
    the keys of plain extractions are those of release 0.1.
    """
    config = {"cache_format": CACHE_FORMAT_VERSION, "backbone": backbone, "weights": weights_id,
              "layer": layer, "preprocessing": preprocessing, "precision": precision}
    if tta != "none":
        config["tta"] = tta
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _digest(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(key + data, digest_size=_DIGEST).digest()


def _entry_key(model: str, image_sha256: str) -> bytes:
    return f"{model}/{str(image_sha256).lower()}/".encode()


def _encode(row: np.ndarray, key: bytes = b"") -> bytes:
    row = np.ascontiguousarray(row, dtype="<f4").reshape(-1)
    body = _HEADER.pack(_MAGIC, row.size) + row.tobytes()
    return body + _digest(body, key)


def _decode(data: bytes, dim: int | None, key: bytes = b"") -> np.ndarray | None:
    """The row stored in ``data``, or None when anything about it is wrong."""
    if len(data) < _HEADER.size + _DIGEST:
        return None
    magic, d = _HEADER.unpack_from(data)
    if magic != _MAGIC or len(data) != _HEADER.size + 4 * d + _DIGEST or (dim is not None and d != dim):
        return None
    if _digest(data[:-_DIGEST], key) != data[-_DIGEST:]:
        return None
    return np.frombuffer(data, dtype="<f4", count=d, offset=_HEADER.size).astype(np.float32)


def _atomic_write(path: Path, data: bytes) -> None:
    # deepfeat.fileio's writer creates the file itself, so entries get ordinary permissions (mkstemp gave 0600).
    atomic_write_bytes(path, data)


class FeatureCache:
    """Per-image feature vectors on disk, keyed by (model key, image sha256).

    Parameters
    ----------
    root : path-like, optional
        Cache root; features live in ``root/features``. Default :func:`default_cache_root`.

    Attributes
    ----------
    n_corrupt : int
        Damaged entries met by :meth:`get_many` so far (each was treated as missing).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> key = model_key(backbone="toy", weights_id="none", layer="logits", preprocessing={})
    >>> cache.put_many(key, ["ab" * 32], np.ones((1, 3)))
    >>> cache.get_many(key, ["ab" * 32, "cd" * 32])[1] is None
    True
    """

    def __init__(self, root=None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.n_corrupt = 0
        self.n_unwritable = 0  # writes skipped because the cache could not be written (see _store)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def _model_dir(self, key: str) -> Path:
        return self.features_dir / key[:32]

    def entry_path(self, key: str, image_sha256: str) -> Path:
        """Where the entry for ``image_sha256`` under model ``key`` lives (whether or not it exists)."""
        sha = str(image_sha256).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"image_sha256 must be a 64-character hex sha256; got {image_sha256!r}")
        return self._model_dir(key) / sha[:2] / f"{sha}.f32"

    def write_note(self, key: str, name: str, obj: dict, *, overwrite: bool = False) -> None:
        """Store a small JSON note (e.g. ``config.json``: what ``key`` stands for) beside the key's entries."""
        path = self._model_dir(key) / name
        if overwrite or not path.exists():
            blob = json.dumps({"model_key": key, **obj}, indent=1, sort_keys=True, default=str).encode()
            self._store(path, blob, what="note")

    def read_note(self, key: str, name: str) -> dict | None:
        """A note written by :meth:`write_note`, or None when absent or unreadable."""
        try:
            note = json.loads((self._model_dir(key) / name).read_text())
        except (OSError, ValueError):
            return None
        return note if isinstance(note, dict) and note.get("model_key") == key else None

    def _request_path(self, request_id: str) -> Path:
        if len(request_id) != 64 or any(c not in "0123456789abcdef" for c in request_id):
            raise ValueError(f"request_id must be a 64-character hex sha256; got {request_id!r}")
        return self.root / "requests" / f"{request_id}.json"

    def write_request(self, request_id: str, obj: dict) -> None:
        """Store (atomically, replacing any older one) the note of request ``request_id`` (a sha256 hex)."""
        path = self._request_path(request_id)
        self._store(path, json.dumps({"request_id": request_id, **obj}, sort_keys=True, default=str).encode(),
                    what="request note")

    def read_request(self, request_id: str) -> dict | None:
        """The note written by :meth:`write_request`, or None when absent, unreadable or not for this id."""
        try:
            note = json.loads(self._request_path(request_id).read_bytes())
        except (OSError, ValueError):
            return None
        return note if isinstance(note, dict) and note.get("request_id") == request_id else None

    def get_many(self, key: str, image_sha256s, *, dim: int | None = None) -> list:
        """One float32 vector or None (absent or damaged) per image sha256, in the order given.

        Parameters
        ----------
        key : str
            From :func:`model_key`.
        image_sha256s : iterable of str
        dim : int, optional
            Expected vector length; an entry of another length counts as damaged.
        """
        out = []
        for sha in image_sha256s:
            path = self.entry_path(key, sha)
            why = "damaged"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                out.append(None)
                continue
            except OSError as exc:  # a directory in its place, no permission, an I/O error: never fatal
                data, why = b"", f"unreadable ({type(exc).__name__}: {exc.strerror or exc})"
            row = _decode(data, dim, _entry_key(key, sha))
            if row is None:
                self.n_corrupt += 1
                if self.n_corrupt == 1:
                    warnings.warn(f"feature cache entry {path} is {why}; it will be recomputed "
                                  "(further damaged entries are counted, not warned about)", RuntimeWarning,
                                  stacklevel=2)
            out.append(row)
        return out

    def put_many(self, key: str, image_sha256s, rows) -> None:
        """Store ``rows[i]`` (1-D float vectors) for ``image_sha256s[i]``, each write atomic."""
        rows = np.asarray(rows, dtype=np.float32)
        shas = list(image_sha256s)
        if rows.ndim != 2 or rows.shape[0] != len(shas):
            raise ValueError(f"put_many: need one row per sha256 ({len(shas)}); got rows of shape {rows.shape}")
        for sha, row in zip(shas, rows):
            path = self.entry_path(key, sha)
            self._store(path, _encode(row, _entry_key(key, sha)), what="entry")

    def _store(self, path: Path, data: bytes, *, what: str) -> bool:
        """Write ``data`` to ``path`` (atomically); an OS failure is counted, warned about once, never raised.

        The run never needs what the cache writes (features are computed and returned anyway), so a full disk or
        a read-only cache (from the start or from mid-run on) only loses the cache copy. Returns whether it was stored.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if what == "entry" and path.is_dir():  # a directory where an entry belongs (the cache owns it)
                shutil.rmtree(path)
            _atomic_write(path, data)
            return True
        except OSError as exc:
            self.n_unwritable += 1
            if self.n_unwritable == 1:
                warnings.warn(f"feature cache {self.root} cannot be written ({exc.strerror or exc}: {what} "
                              f"{exc.filename or path}); the run goes on without caching (features are computed "
                              "and returned; further cache write failures are counted, not warned about)",
                              RuntimeWarning, stacklevel=3)
            return False

    def info(self) -> list[dict]:
        """One dict per model key present: its config (when recorded), entry count and bytes."""
        result = []
        if not self.features_dir.is_dir():
            return result
        for model_dir in sorted(p for p in self.features_dir.iterdir() if p.is_dir()):
            entries = list(model_dir.glob("*/*.f32"))
            config_path = model_dir / "config.json"
            try:
                config = json.loads(config_path.read_text()) if config_path.exists() else {}
            except (OSError, json.JSONDecodeError):
                config = {}
            result.append({"dir": str(model_dir), "entries": len(entries),
                           "bytes": sum(p.stat().st_size for p in entries), **config})
        return result

    def clear(self) -> int:
        """Delete every cached feature (and the request notes); returns how many entries were removed."""
        n = sum(1 for _ in self.features_dir.glob("*/*/*.f32")) if self.features_dir.is_dir() else 0
        shutil.rmtree(self.features_dir, ignore_errors=True)
        shutil.rmtree(self.root / "requests", ignore_errors=True)
        return n
