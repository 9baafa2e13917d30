"""Model files: sidecar contents, integrity and version checks (estimator-agnostic parts; image models are tested in
test_pipeline.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import sklearn

import deepfeat
from deepfeat.classifiers.model_files import (
    load_model,
    read_sidecar,
    save_model,
    sidecar_path,
)
from deepfeat.classifiers.presets import build_pipeline
from deepfeat.errors import ModelFileError


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=40) > 0, "blast", "normal")
    return build_pipeline("knn").fit(X, y), X


def test_save_writes_sidecar_and_round_trips(tmp_path, fitted):
    model, X = fitted
    path = save_model(model, tmp_path / "sub" / "m.joblib")
    assert path == tmp_path / "sub" / "m.joblib"
    info = json.loads(sidecar_path(path).read_text())
    assert len(info["sha256"]) == 64
    assert info["versions"]["deepfeat"] == deepfeat.__version__
    assert info["versions"]["scikit-learn"] == sklearn.__version__
    assert set(info["versions"]) >= {"torch", "numpy", "joblib", "timm"}
    assert info["classes"] == ["blast", "normal"]
    assert info["class"] == "sklearn.pipeline.Pipeline"
    assert "execute code" in info["warning"]
    np.testing.assert_array_equal(load_model(path).predict(X), model.predict(X))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_tampered_file_is_refused_with_both_hashes(tmp_path, fitted):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    expected = read_sidecar(path)["sha256"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=f"sha256 expected {expected}, found [0-9a-f]{{64}}") as err:
        load_model(path)
    assert "refuses to load" in str(err.value)


def test_missing_sidecar_is_refused(tmp_path, fitted):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    sidecar_path(path).unlink()
    with pytest.raises(ModelFileError, match=r"m\.joblib has no sidecar m\.joblib\.json"):
        load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist; create one with 'deepfeat fit'"):
        load_model(tmp_path / "nope.joblib")


def test_garbage_sidecar_is_refused(tmp_path, fitted):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ModelFileError, match="is not readable JSON"):
        load_model(path)
    sidecar_path(path).write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="is not a deepfeat model sidecar"):
        load_model(path)


def _edit_versions(path, **versions):
    side = sidecar_path(path)
    info = json.loads(side.read_text())
    info["versions"].update(versions)
    side.write_text(json.dumps(info))


@pytest.mark.parametrize("package", ["scikit-learn", "deepfeat"])
def test_strict_version_mismatch_is_refused_unless_allowed(tmp_path, fitted, package):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    _edit_versions(path, **{package: "0.0.1"})
    here = sklearn.__version__ if package == "scikit-learn" else deepfeat.__version__
    with pytest.raises(ModelFileError, match=rf"saved with {package} 0\.0\.1, but this environment has "
                                             rf"{package} {here}.*allow_version_mismatch=True"):
        load_model(path)
    with pytest.warns(UserWarning, match=f"saved with {package} 0.0.1.*loading anyway"):
        model = load_model(path, allow_version_mismatch=True)
    np.testing.assert_array_equal(model.predict(fitted[1]), fitted[0].predict(fitted[1]))


def test_patch_release_difference_is_accepted(tmp_path, fitted, recwarn):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    major, minor = sklearn.__version__.split(".")[:2]
    _edit_versions(path, **{"scikit-learn": f"{major}.{minor}.999"})
    load_model(path)
    assert not [w for w in recwarn if "saved with" in str(w.message)]


def test_other_package_mismatch_only_warns(tmp_path, fitted):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    _edit_versions(path, torch="1.0.0")
    with pytest.warns(UserWarning, match="saved with torch 1.0.0, but this environment has torch"):
        load_model(path)


def test_device_override_needs_a_device_parameter(tmp_path, fitted):
    path = save_model(fitted[0], tmp_path / "m.joblib")
    with pytest.raises(ModelFileError, match="has no 'device' to override"):
        load_model(path, device="cpu")
