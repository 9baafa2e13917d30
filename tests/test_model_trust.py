"""Issue 23, item 1: which model files load. The .skops allow-list equals what the presets write; crafted .skops
and joblib files that would run code are refused before anything runs (a marker file they would create stays
absent)."""
from __future__ import annotations

import hashlib
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from cli_helpers import random_images, run

from deepfeat import FeatureSet
from deepfeat.classifiers import model_files
from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
from deepfeat.classifiers.model_files import load_model, save_model, sidecar_path
from deepfeat.classifiers.model_trust import SKOPS_ALLOWED_TYPES, SKOPS_TYPES_OF_0_2, skops_node_types
from deepfeat.classifiers.presets import PRESETS, build_pipeline
from deepfeat.evaluation.calibration import CALIBRATION_METHODS
from deepfeat.evaluation.trust import fit_trust
from deepfeat.errors import ModelFileError
from deepfeat.locations import trusted_models_dir

META = {"backbone": "tiny_darknet", "weights": "none", "layer": "logits", "input_size": [3, 32, 32]}


def _types_of(path) -> set:
    return skops_node_types(Path(path).read_bytes(), path)


@pytest.fixture(scope="module")
def preset_files(tmp_path_factory):
    """A .skops file per preset x selection (none, mrmr) x kind: DeepFeatureClassifier (float32, 3 string classes,
    12 features, as `deepfeat fit -o m.skops` writes it) and a features Pipeline (float64, 2 integer classes, 20
    features -- KNN then searches by brute force, not a KD-tree -- class_weight='balanced'). Returns
    [(path, model, X)]."""
    folder = tmp_path_factory.mktemp("skops")
    rng = np.random.default_rng(0)
    fs = FeatureSet((rng.normal(size=(60, 12)) + np.repeat(np.arange(3), 20)[:, None]).astype(np.float32),
                    y=np.repeat(["a", "b", "c"], 20), meta=dict(META))
    X2, y2 = rng.normal(size=(40, 20)) + np.repeat([0.0, 1.0], 20)[:, None], np.repeat([0, 1], 20)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Nystroem with more components than rows, convergence, ...
        for name in PRESETS:
            for select in ("none", "mrmr"):
                mrmr = {"selector": "mrmr", "n_features": 5} if select == "mrmr" else {}
                model = DeepFeatureClassifier.from_featureset(fs, classifier=name, **mrmr)
                out.append((save_model(model, folder / f"{name}-{select}-dfc.skops"), model, fs.X))
                pipe = build_pipeline(name, class_weight="balanced", **mrmr).fit(X2, y2)
                out.append((save_model(pipe, folder / f"{name}-{select}-pipe.skops"), pipe, X2))
        # deepfeat fit --calibrate --coverage: the calibration map chosen (either one) and the conformal record
        for method in CALIBRATION_METHODS:
            clf = CalibratedClassifierCV(PRESETS["svm"].make(0), method=method, cv=3, ensemble=False)
            model = fit_trust(DeepFeatureClassifier.from_featureset(fs, classifier=clf), fs, coverage=0.9, folds=3)
            out.append((save_model(model, folder / f"calibrated-{method}-dfc.skops"), model, fs.X))
    return out


@pytest.fixture(scope="module")
def image_model_file(tmp_path_factory):
    """A DeepFeatureClassifier fitted on image paths (its fitted extractor is saved too): a tiny timm network."""
    folder = tmp_path_factory.mktemp("skops-images")
    for k, c in enumerate("ab"):
        random_images(folder / "img" / c, 4, size=32, seed=k)
    paths = sorted(str(p) for p in (folder / "img").glob("*/*.png"))
    labels = [Path(p).parent.name for p in paths]
    model = DeepFeatureClassifier("test_efficientnet", weights="none", image_size=32, classifier="svm", cache=False,
                                  progress=False, device="cpu").fit(paths, labels)
    return save_model(model, folder / "images.skops"), model, paths


def test_the_allow_list_equals_the_types_every_preset_writes(preset_files, image_model_file):
    written = set().union(*(_types_of(path) for path, _, _ in preset_files), _types_of(image_model_file[0]))
    assert written == SKOPS_ALLOWED_TYPES - SKOPS_TYPES_OF_0_2, (
        f"not written by any preset (remove): {sorted(SKOPS_ALLOWED_TYPES - SKOPS_TYPES_OF_0_2 - written)}; "
        f"written but not allowed (review, then add): {sorted(written - SKOPS_ALLOWED_TYPES)}")
    assert not written & SKOPS_TYPES_OF_0_2  # the 0.2 entries are only there for 0.2's files


def _outcome(model, X):
    try:
        return model.predict(X).tolist()
    except ValueError as exc:  # knn-coarse: k=100 neighbours among 60 or 40 training rows
        return f"{type(exc).__name__}: {exc}"


def test_every_preset_round_trips_through_skops(preset_files, image_model_file):
    for path, model, X in preset_files:
        loaded = load_model(path)
        assert _outcome(loaded, X) == _outcome(model, X), path
        if hasattr(model, "conformal_"):  # fit --coverage: the stored calibration travels with the model
            assert loaded.conformal_["thresholds"].tolist() == model.conformal_["thresholds"].tolist()
            assert np.allclose(loaded.predict_proba(X), model.predict_proba(X))
    path, model, paths = image_model_file
    assert load_model(path).predict(paths).tolist() == model.predict(paths).tolist()


def _knn_model(tmp_path, name="good.skops"):
    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(12, 5)).astype(np.float32), y=np.repeat(["a", "b"], 6), meta=dict(META))
    return save_model(DeepFeatureClassifier.from_featureset(fs, classifier="knn"), tmp_path / name)


def _node(cls, module, loader, **rest):
    return {"__class__": cls, "__module__": module, "__loader__": loader, **rest}


def _value(v):
    return _node("str", "builtins", "JsonNode", content=json.dumps(v), is_json=True)


def _tuple(*items):
    return _node("tuple", "builtins", "TupleNode", content=list(items))


def _crafted(good: Path, out: Path, payload: dict) -> Path:
    """``good`` with one more attribute, ``payload``, and a sidecar whose sha256 matches (anyone who can write the
    model file can recompute it)."""
    with zipfile.ZipFile(good) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["content"]["x_"] = payload
    schema["content"]["key_types"]["content"].append(_node("str", "builtins", "TypeNode"))
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    side = json.loads(sidecar_path(good).read_text())
    side.update(sha256=hashlib.sha256(out.read_bytes()).hexdigest(), file=out.name)
    sidecar_path(out).write_text(json.dumps(side))
    return out


def _payloads(marker: Path):
    empty_dict = _node("dict", "builtins", "DictNode", content={},
                       key_types=_node("list", "builtins", "ListNode", content=[]))
    return {
        # numpy.testing's runstring(code, namespace) is exec(code, namespace): 0.2 trusted every numpy name
        "numpy exec": ("numpy.testing._private.utils.runstring (as ConstructorFromReduceNode)",
                       _node("runstring", "numpy.testing._private.utils", "ConstructorFromReduceNode",
                             content=_tuple(_value(f"open({str(marker)!r}, 'w').close()"), empty_dict))),
        "subprocess": ("subprocess.check_call (as ConstructorFromReduceNode)",
                       _node("check_call", "subprocess", "ConstructorFromReduceNode",
                             content=_tuple(_node("list", "builtins", "ListNode",
                                                  content=[_value("touch"), _value(str(marker))])))),
        # an allowed class under a loader that calls it: refused, the pair is what is allowed
        "allowed name, other loader": ("sklearn.svm._classes.SVC (as ConstructorFromReduceNode)",
                                       _node("SVC", "sklearn.svm._classes", "ConstructorFromReduceNode",
                                             content=_tuple())),
    }


@pytest.mark.parametrize("case", ["numpy exec", "subprocess", "allowed name, other loader"])
def test_a_crafted_skops_file_is_refused_by_name_before_anything_runs(tmp_path, capsys, case):
    marker = tmp_path / "PWNED"
    named, payload = _payloads(marker)[case]
    crafted = _crafted(_knn_model(tmp_path), tmp_path / "crafted.skops", payload)
    with pytest.raises(ModelFileError, match=rf"names type\(s\) deepfeat does not trust: {_re(named)}; refusing"):
        load_model(crafted)
    assert not marker.exists()
    random_images(tmp_path / "new", 2, size=24)
    code, _, err = run(capsys, "predict", crafted, tmp_path / "new", "-o", tmp_path / "p.csv")
    assert code == 2 and f"does not trust: {named}" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "p.csv").exists()


def _re(text):
    import re

    return re.escape(text)


def test_the_crafted_numpy_payload_is_real(tmp_path):
    """The payload of the test above does run code when skops is told to trust it, as 0.2 did for numpy names:
    the refusal, not a broken payload, is what keeps the marker away."""
    import skops.io

    marker = tmp_path / "PWNED"
    crafted = _crafted(_knn_model(tmp_path), tmp_path / "crafted.skops", _payloads(marker)["numpy exec"][1])
    skops.io.load(crafted, trusted=skops.io.get_untrusted_types(file=crafted))
    assert marker.exists()


def test_a_skops_node_without_its_type_is_refused(tmp_path):
    crafted = _crafted(_knn_model(tmp_path), tmp_path / "bad.skops", {"__loader__": "ObjectNode"})
    with pytest.raises(ModelFileError, match=r"bad.skops is not a readable .skops file: a node without a string"):
        load_model(crafted)


class NotAllowed:
    pass


def test_save_refuses_a_skops_model_the_loader_would_refuse(tmp_path):
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    with pytest.raises(ModelFileError, match=r"cannot save DummyClassifier as the .skops file .*: .*"
                                             r"sklearn.dummy.DummyClassifier \(as ObjectNode\).*save this model as "
                                             r".joblib"):
        save_model(model, tmp_path / "m.skops")
    assert not list(tmp_path.iterdir())  # nothing half-written
    model.extra_ = NotAllowed()
    with pytest.raises(ModelFileError, match=r"NotAllowed \(as ObjectNode\)"):
        save_model(model, tmp_path / "m.skops")
    assert load_model(save_model(model, tmp_path / "m.joblib")).predict([[0]]).tolist() == [0]  # joblib: fine


# ------------------------------------------------------------------ joblib: the ledger and the same bytes
def test_a_joblib_file_this_install_did_not_write_needs_trust(tmp_path, capsys):
    path = save_model(build_pipeline("knn").fit(np.eye(6), [0, 0, 0, 1, 1, 1]), tmp_path / "m.joblib")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (trusted_models_dir() / sha).unlink()  # as if another install (or another user) had written it
    with pytest.raises(ModelFileError, match=r"joblib pickle that this deepfeat install did not write .*--trust"):
        load_model(path)
    assert load_model(path, trusted=True).predict(np.eye(6)[:1]).tolist() == [0]
    assert not (trusted_models_dir() / sha).exists()  # trusting once does not add it to the ledger


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_swapped_in_after_the_check_is_not_loaded(tmp_path, monkeypatch):
    """The file is read once: replacing it between the ledger check and the unpickling changes nothing."""
    path = save_model(build_pipeline("knn").fit(np.eye(6), [0, 0, 0, 1, 1, 1]), tmp_path / "m.joblib")
    marker = tmp_path / "PWNED"
    real = model_files.check_joblib_trusted

    def check_then_swap(*args):
        real(*args)
        path.write_bytes(pickle.dumps(Exploit(marker)))

    monkeypatch.setattr(model_files, "check_joblib_trusted", check_then_swap)
    assert load_model(path).predict(np.eye(6)[:1]).tolist() == [0]
    assert not marker.exists()


def test_a_crafted_pickle_runs_nothing_without_trust(tmp_path, capsys):
    good = _knn_model(tmp_path, "good.joblib")
    marker = tmp_path / "PWNED"
    forged = tmp_path / "forged.joblib"
    forged.write_bytes(pickle.dumps(Exploit(marker)))
    side = json.loads(sidecar_path(good).read_text())
    side.update(sha256=hashlib.sha256(forged.read_bytes()).hexdigest(), file=forged.name)
    sidecar_path(forged).write_text(json.dumps(side))
    code, _, err = run(capsys, "predict", forged, tmp_path, "-o", tmp_path / "p.csv")
    assert code == 2 and "did not write" in err and "--trust" in err
    assert not marker.exists()
    with pytest.raises(ModelFileError):  # with trusted=True the pickle runs: that is what --trust means
        load_model(forged, trusted=True)
    assert marker.exists()
