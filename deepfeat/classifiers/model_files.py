"""Model files: a joblib pickle plus a JSON sidecar that says what it is and checks that it is intact.

``save_model(model, "svm.joblib")`` writes ``svm.joblib`` and ``svm.joblib.json``. The sidecar holds the sha256
of the joblib file, the versions of deepfeat, scikit-learn, torch, timm, numpy, joblib and Python that wrote it,
the creation time, the class names, the model/weights/layer the classifier extracts with, the sha256 of that
network's parameters and the identity of the FeatureSet it was trained on (when known). ``load_model`` refuses
a file whose sidecar is missing, whose bytes do not match the recorded sha256, or that was written by another
deepfeat or scikit-learn major.minor version (unpickling across those versions can silently change predictions).

.. warning::
   A joblib file is a pickle: **loading one runs code chosen by whoever wrote it**. The sha256 check catches a
   damaged file or a sidecar that belongs to another model; it is not a security boundary, because anyone who can
   replace the model file can replace its sidecar too. Load only model files you made yourself or received from
   someone you trust, over a channel you trust. Since 0.2 a joblib file this install did not write needs
   ``trusted=True`` (see :mod:`deepfeat.classifiers.model_trust`), and ``save_model(model, "m.skops")`` writes the
   skops format, which loads without running code from the file.

Nothing CUDA-bound is pickled: :class:`~deepfeat.extraction.engine.FeatureExtractor` drops its torch model when pickled and
rebuilds it lazily on first use (``device="auto"`` picks what the loading machine has), so a model trained on a GPU
machine loads and predicts on a CPU-only one.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import re
import warnings
from pathlib import Path

from deepfeat.classifiers.model_trust import (
    check_joblib_trusted,
    dump_skops,
    load_skops,
    record_trusted,
)
from deepfeat.errors import ModelFileError
from deepfeat.fileio import atomic_write, sha256_file
from deepfeat.provenance import package_versions

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1
#: Packages whose major.minor must match between the writing and the loading environment (else refuse).
STRICT_PACKAGES = ("deepfeat", "scikit-learn")
#: Packages recorded and compared; a major.minor difference only warns.
RECORDED_PACKAGES = ("deepfeat", "scikit-learn", "torch", "timm", "numpy", "joblib")


def sidecar_path(path) -> Path:
    """The sidecar of model file ``path``: the same name with ``.json`` appended (``m.joblib.json``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _major_minor(ver: str | None) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", ver or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _jsonable(value):
    """Class labels (numpy ints, strings) and weights ids (paths) as plain JSON values."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def describe_model(model) -> dict:
    """What a sidecar records about ``model`` itself (class, labels, extractor identity)."""
    info = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    classes = getattr(model, "classes_", None)
    info["classes"] = None if classes is None else [_jsonable(c) for c in classes]
    for key in ("model", "weights", "layer"):
        info[key] = _jsonable(getattr(model, key, None))
    # Which network the training features came from, and which FeatureSet: provenance a reader can check.
    identity = getattr(model, "extractor_identity_", None) or {}
    info["model_sha256"] = identity.get("model_sha256")
    info["training_features_sha256"] = (getattr(model, "training_features_", None) or {}).get("sha256")
    for key in ("calibration", "conformal"):  # deepfeat fit --calibrate / --coverage (deepfeat.evaluation.trust)
        record = getattr(model, f"{key}_", None)
        if record:
            info[key] = _plain(record)
    return info


def _plain(value):
    """A calibration record as JSON: arrays as lists, an infinite threshold as the string "inf"."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        value = value.tolist() if hasattr(value, "tolist") else value
        return [_plain(v) for v in value] if isinstance(value, list) else _plain(value)
    if isinstance(value, float) and not math.isfinite(value):  # inf (NaN too): JSON has neither
        return str(value)
    return _jsonable(value)


def check_against_sidecar(path, model, info: dict) -> None:
    """The sidecar's class, classes and extractor fields must describe the model actually loaded."""
    found = json.loads(json.dumps(describe_model(model), default=str))  # as the sidecar stores it
    if "backbone" in info and "model" not in info:  # a 0.1 sidecar names the network 'backbone'
        info = {**info, "model": info["backbone"]}
    differ = [k for k in ("class", "classes", "model", "weights", "layer") if k in info and info[k] != found.get(k)]
    if differ:
        k = differ[0]
        raise ModelFileError(
            f"model file {path} does not match its sidecar {sidecar_path(path).name}: {', '.join(differ)} differ "
            f"(e.g. {k}: sidecar {info[k]!r}, model {found[k]!r}); the sidecar belongs to another model or was "
            "edited, so deepfeat refuses to use it")


def save_model(model, path) -> Path:
    """Write ``model`` to ``path`` with joblib and a JSON sidecar ``path + ".json"``.

    Parameters
    ----------
    model : estimator
        Usually a fitted :class:`~deepfeat.classifiers.deep_classifier.DeepFeatureClassifier`; any picklable scikit-learn estimator
        works.
    path : str or path-like
        The model file (conventionally ``*.joblib``). Parent folders are created. Both files are written
        atomically (temporary file + rename), the sidecar last.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn.dummy import DummyClassifier
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.joblib"
    >>> _ = save_model(DummyClassifier().fit([[0], [1]], [0, 1]), p)
    >>> sorted(x.name for x in p.parent.iterdir())
    ['m.joblib', 'm.joblib.json']
    >>> load_model(p).predict([[0]]).tolist()
    [0]
    """
    import joblib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "skops" if path.suffix.lower() == ".skops" else "joblib"
    if fmt == "skops":
        dump_skops(model, path)  # refuses a model whose types the .skops loader would refuse
    else:
        atomic_write(path, lambda tmp: joblib.dump(model, tmp))
    sidecar = {
        "deepfeat_model_format": SIDECAR_FORMAT,
        "file": path.name,
        "sha256": sha256_file(path),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(RECORDED_PACKAGES, python=False),
        "python": platform.python_version(),
        "warning": "joblib files execute code when loaded: load only files from a trusted source",
        "format": fmt,
        **describe_model(model),
    }
    if fmt == "joblib":
        record_trusted(sidecar["sha256"])  # this install wrote it: load_model accepts it without trusted=True

    def write_sidecar(tmp):
        Path(tmp).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    atomic_write(sidecar_path(path), write_sidecar)
    return path


def read_sidecar(path) -> dict:
    """The sidecar of model file ``path`` as a dict; :class:`ModelFileError` when missing or unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ModelFileError(
            f"model file {path} has no sidecar {side.name}: deepfeat cannot check that the file is intact and "
            f"which versions wrote it, so it refuses to load it. Save models with deepfeat.save_model (or "
            f"'deepfeat fit'); if you trust this file, load it with joblib.load yourself."
        )
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"sidecar {side} of model file {path} is not readable JSON: {exc}") from exc
    if not isinstance(info, dict) or "sha256" not in info or "versions" not in info:
        raise ModelFileError(f"sidecar {side} is not a deepfeat model sidecar (no 'sha256' / 'versions' entries)")
    versions = info["versions"]
    if not isinstance(versions, dict) or any(not isinstance(versions.get(n), str) for n in STRICT_PACKAGES):
        raise ModelFileError(
            f"sidecar {side} does not record the {' and '.join(STRICT_PACKAGES)} versions that wrote the model "
            f"(its 'versions' is {json.dumps(versions)[:80]}); deepfeat cannot check it, so it refuses to load it. "
            "Save the model again with deepfeat.save_model / 'deepfeat fit'")
    return info


def _check_versions(path: Path, recorded: dict, allow_version_mismatch: bool) -> None:
    installed = package_versions(RECORDED_PACKAGES, python=False)
    for name in RECORDED_PACKAGES:
        saved, here = recorded.get(name), installed[name]
        if _major_minor(saved) == _major_minor(here):
            continue
        msg = (f"model file {path} was saved with {name} {saved}, but this environment has {name} {here}")
        if name in STRICT_PACKAGES and not allow_version_mismatch:
            raise ModelFileError(
                f"{msg}; unpickled models can predict differently across {name} versions, so deepfeat refuses "
                f"to load it. Install {name}=={saved}, retrain the model, or pass allow_version_mismatch=True "
                f"(CLI: --allow-version-mismatch) to load it anyway."
            )
        warnings.warn(f"{msg}; loading anyway", UserWarning, stacklevel=3)


def load_model(path, *, allow_version_mismatch: bool = False, device: str | None = None, trusted: bool = False):
    """Load a model written by :func:`save_model`, after checking its sidecar.

    .. warning::
       Loading a joblib file executes code stored in it. Load only files you trust; the checks below detect
       damage and version drift, not malice.

    Parameters
    ----------
    path : str or path-like
        The model file; its sidecar ``path + ".json"`` must sit beside it.
    allow_version_mismatch : bool, default=False
        Load even when the file was written by another deepfeat or scikit-learn major.minor version (a warning
        is still issued). Differences in torch, timm, numpy or joblib always only warn.
    trusted : bool, default=False
        Load a ``.joblib`` file that this deepfeat install did not write (see
        :mod:`deepfeat.classifiers.model_trust`). ``.skops`` files never need it: they are read without running code,
        and every type they name must be on :data:`~deepfeat.classifiers.model_trust.SKOPS_ALLOWED_TYPES`.
    device : str, optional
        Override the device the model's feature extractor will run on (``"cpu"``, ``"cuda"``, ``"auto"``), e.g.
        for a model saved with ``device="cuda"`` and loaded on a CPU-only machine. ``None`` keeps the saved one.

    Returns
    -------
    estimator
        The unpickled model. Torch parts are rebuilt lazily on first use on the loading machine.

    Raises
    ------
    ModelFileError
        When the file or its sidecar is missing, the sha256 does not match (the message gives the expected and
        the found hash), or the versions differ as described above.
    """
    import joblib

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; create one with 'deepfeat fit'")
    info = read_sidecar(path)
    data = path.read_bytes()  # read once: the bytes checked below are the bytes loaded
    found = hashlib.sha256(data).hexdigest()
    if found != info["sha256"]:
        raise ModelFileError(
            f"model file {path} does not match its sidecar {sidecar_path(path).name}: sha256 expected "
            f"{info['sha256']}, found {found}. The file was modified or damaged after saving (or the sidecar "
            f"belongs to another model); deepfeat refuses to load it."
        )
    _check_versions(path, info["versions"], allow_version_mismatch)
    if info.get("format") == "skops" or path.suffix.lower() == ".skops":
        model = load_skops(path, data)
    else:
        check_joblib_trusted(path, found, trusted)
        model = joblib.load(io.BytesIO(data))
    check_against_sidecar(path, model, info)
    if device is not None:
        if "device" not in model.get_params():
            raise ModelFileError(f"model in {path} ({type(model).__name__}) has no 'device' to override")
        model.set_params(device=device)
        extractor = getattr(model, "extractor_", None)
        if extractor is not None:
            extractor.set_params(device=device)
    return model
