"""Which model files may be loaded: the skops format (no code runs) and the gate in front of joblib pickles.

Policy (documented in README, "Hardening"):

- ``.skops`` files (``save_model(model, "m.skops")``, ``deepfeat fit -o m.skops``) are read with ``skops.io``, which
  never runs code from the file. Every type the file names must be one deepfeat trusts (:func:`is_trusted_type`:
  ``deepfeat``, ``sklearn``, ``numpy``, ``scipy``; skops itself handles plain Python values); any other type is
  refused with :class:`~deepfeat.errors.ModelFileError` naming it.
- ``.joblib`` files are pickles: loading one runs code chosen by whoever wrote it. ``save_model`` records the
  sha256 of every joblib file it writes in a ledger under the user's home (:func:`~deepfeat.locations.
  trusted_models_dir`, one empty file per sha256). A joblib file whose sha256 is in the ledger loads; any other
  needs ``trusted=True`` (CLI ``--trust``). Someone who can write the model file and its sidecar cannot add to
  another user's ledger, which is the point; they can still trick a user who passes ``--trust``.
"""
from __future__ import annotations

from pathlib import Path

from deepfeat.errors import ModelFileError
from deepfeat.fileio import atomic_write_bytes
from deepfeat.locations import trusted_models_dir

#: Top-level modules whose types a .skops file may name.
TRUSTED_MODULES = ("deepfeat", "sklearn", "numpy", "scipy")


def is_trusted_type(name: str) -> bool:
    """True when the fully qualified type ``name`` (e.g. ``sklearn.svm._classes.SVC``) is from a trusted module."""
    return name.split(".", 1)[0] in TRUSTED_MODULES


def record_trusted(sha256: str) -> None:
    """Remember that this deepfeat install wrote the joblib file with ``sha256``."""
    atomic_write_bytes(trusted_models_dir() / sha256, b"", fsync=False)


def is_recorded(sha256: str) -> bool:
    return (trusted_models_dir() / sha256).is_file()


def check_joblib_trusted(path, sha256: str, trusted: bool) -> None:
    """Refuse a joblib file this install did not write unless the caller trusts it explicitly."""
    if trusted or is_recorded(sha256):
        return
    raise ModelFileError(
        f"model file {path} is a joblib pickle that this deepfeat install did not write (its sha256 {sha256[:16]}... "
        f"is not in {trusted_models_dir()}); loading a pickle runs code chosen by whoever wrote it. If you trust "
        "its source, pass trusted=True (CLI: --trust); better, ask for a .skops model (deepfeat fit -o m.skops)")


def dump_skops(model, path: Path) -> None:
    import skops.io

    skops.io.dump(model, path)


def load_skops(path: Path):
    """Load a .skops file, refusing every type outside :data:`TRUSTED_MODULES` before anything is built."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a damaged zip / schema: skops raises many kinds
        raise ModelFileError(f"model file {path} is not a readable .skops file: {type(exc).__name__}: {exc}") from None
    refused = sorted(t for t in untrusted if not is_trusted_type(t))
    if refused:
        raise ModelFileError(
            f"model file {path} names type(s) deepfeat does not trust: {', '.join(refused)} (trusted: types from "
            f"{', '.join(TRUSTED_MODULES)}); refusing to load it")
    return skops.io.load(path, trusted=sorted(untrusted))
