import json

import numpy as np
import pytest

from deepfeat import FeatureSet, load_features
from deepfeat.errors import FeatureFileError


def make(n=6, d=4, **kw):
    rng = np.random.default_rng(0)
    return FeatureSet(rng.normal(size=(n, d)), y=["a", "b"] * (n // 2), **kw)


def test_round_trip_keeps_everything_in_order(tmp_path):
    fs = make(paths=[f"img{i}.png" for i in range(6)], groups=list("xxyyzz"), sha256=[f"{i:064x}" for i in range(6)],
              meta={"backbone": "tiny_darknet", "layer": "logits"})
    out = fs.save(tmp_path / "a.features")
    back = load_features(out)
    np.testing.assert_array_equal(back.X, fs.X)
    assert back.X.dtype == np.float32
    assert list(back.y) == list(fs.y) and list(back.paths) == list(fs.paths)
    assert list(back.groups) == list("xxyyzz") and back.sha256[3] == f"{3:064x}"
    assert back.meta["backbone"] == "tiny_darknet" and back.meta["deepfeat_format"] == 1
    assert back.identity() == fs.identity()


def test_file_is_readable_with_numpy_alone(tmp_path):
    fs = make(meta={"layer": "pooled"})
    fs.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz", allow_pickle=False) as f:
        assert f["X"].shape == (6, 4)
        assert json.loads(str(f["meta_json"]))["layer"] == "pooled"


def test_integer_labels_stay_integers(tmp_path):
    fs = FeatureSet(np.ones((3, 2)), y=[0, 1, 1])
    back = load_features(fs.save(tmp_path / "i.features"))
    assert back.y.dtype.kind == "i" and back.class_counts() == {0: 1, 1: 2}


def test_mismatched_lengths_name_the_field():
    with pytest.raises(FeatureFileError, match="'paths' has 2 entries but X has 6 rows"):
        make(paths=["a", "b"])


def test_missing_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(FeatureFileError, match="does not exist"):
        load_features(tmp_path / "nope.features")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(FeatureFileError, match="not a deepfeat FeatureSet"):
        load_features(tmp_path / "other.npz")
    (tmp_path / "junk.features").write_bytes(b"not a zip")
    with pytest.raises(FeatureFileError, match=r"junk.features is not a FeatureSet file \(a FeatureSet is an .npz") as info:
        load_features(tmp_path / "junk.features")
    assert "pickle" not in str(info.value)  # numpy's allow_pickle advice would be wrong here
    (tmp_path / "broken.features").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(FeatureFileError, match="not a readable"):
        load_features(tmp_path / "broken.features")
    with pytest.raises(FeatureFileError, match=r"is a folder, not a FeatureSet file: run `deepfeat extract"):
        load_features(tmp_path)


def test_subset_and_nonfinite_rows():
    fs = make()
    fs.X[2, 1] = np.nan
    assert list(fs.nonfinite_rows()) == [2]
    sub = fs.subset([0, 2])
    assert len(sub) == 2 and list(sub.y) == ["a", "a"]
