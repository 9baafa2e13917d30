"""FeatureCache: round trip, damaged entries, keys, atomic writes."""
from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest

from deepfeat.extraction.cache import FeatureCache, default_cache_root, model_key

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "0c" * 32
KEY = model_key(backbone="toy", weights_id="w" * 64, layer="logits", preprocessing={"input_size": [3, 32, 32]})


@pytest.fixture
def cache(tmp_path):
    return FeatureCache(tmp_path / "cache")


def test_round_trip_and_missing(cache):
    rows = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    cache.put_many(KEY, [SHA_A, SHA_B], rows)
    got = cache.get_many(KEY, [SHA_B, SHA_C, SHA_A])
    np.testing.assert_array_equal(got[0], rows[1])
    assert got[1] is None
    np.testing.assert_array_equal(got[2], rows[0])
    assert got[0].dtype == np.float32
    # entries live under features/<model key>/<sha[:2]>/<sha>.f32, and nothing temporary is left behind
    files = sorted(p.relative_to(cache.root).as_posix() for p in cache.root.rglob("*") if p.is_file())
    assert files == [f"features/{KEY[:32]}/aa/{SHA_A}.f32", f"features/{KEY[:32]}/bb/{SHA_B}.f32"]


def test_entry_is_readable_with_numpy_alone(cache):
    row = np.linspace(-1, 1, 5, dtype=np.float32)
    cache.put_many(KEY, [SHA_A], row[None])
    data = cache.entry_path(KEY, SHA_A).read_bytes()
    assert data[:8] == b"DFCACHE2" and struct.unpack("<Q", data[8:16]) == (5,)
    np.testing.assert_array_equal(np.frombuffer(data[16:-8], "<f4"), row)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "empty", "magic", "append"])
def test_damaged_entry_reads_as_missing_and_warns_once(cache, damage):
    cache.put_many(KEY, [SHA_A, SHA_B], np.ones((2, 4)))
    for sha in (SHA_A, SHA_B):
        path = cache.entry_path(KEY, sha)
        data = bytearray(path.read_bytes())
        if damage == "flip_byte":
            data[20] ^= 0x40
        elif damage == "truncate":
            data = data[:-3]
        elif damage == "empty":
            data = b""
        elif damage == "magic":
            data[0:8] = b"NOTCACHE"
        else:
            data += b"\0"
        path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="is damaged; it will be recomputed") as record:
        assert cache.get_many(KEY, [SHA_A, SHA_B]) == [None, None]
    assert len(record) == 1 and cache.n_corrupt == 2
    cache.put_many(KEY, [SHA_A], np.full((1, 4), 2.0))  # a recompute overwrites the damaged entry
    np.testing.assert_array_equal(cache.get_many(KEY, [SHA_A])[0], np.full(4, 2.0, np.float32))


def test_wrong_dimension_counts_as_damaged(cache):
    cache.put_many(KEY, [SHA_A], np.ones((1, 4)))
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert cache.get_many(KEY, [SHA_A], dim=5) == [None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get_many(KEY, [SHA_A], dim=4)[0].shape == (4,)


def test_model_key_depends_on_every_component():
    base = dict(backbone="toy", weights_id="w", layer="logits", preprocessing={"a": 1}, precision="fp32")
    keys = {model_key(**base)}
    for change in ({"backbone": "toy2"}, {"weights_id": "v"}, {"layer": "pooled"}, {"preprocessing": {"a": 2}},
                   {"precision": "bf16"}):
        keys.add(model_key(**{**base, **change}))
    assert len(keys) == 6
    assert model_key(**base) == model_key(**{**base, "preprocessing": {"a": 1}})


def test_bad_sha_and_bad_rows_are_refused(cache):
    with pytest.raises(ValueError, match="64-character hex sha256"):
        cache.get_many(KEY, ["../../etc/passwd"])
    with pytest.raises(ValueError, match=r"need one row per sha256 \(2\)"):
        cache.put_many(KEY, [SHA_A, SHA_B], np.ones((3, 4)))


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPFEAT_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_root() == tmp_path / "here"
    assert FeatureCache().features_dir == tmp_path / "here" / "features"
    monkeypatch.delenv("DEEPFEAT_CACHE_DIR")
    assert default_cache_root().parts[-2:] == (".cache", "deepfeat")


def test_notes_info_and_clear(cache):
    cache.put_many(KEY, [SHA_A, SHA_B], np.ones((2, 3)))
    cache.write_note(KEY, "config.json", {"backbone": "toy"})
    cache.write_note(KEY, "config.json", {"backbone": "other"})  # not overwritten unless asked
    assert cache.read_note(KEY, "config.json")["backbone"] == "toy"
    assert cache.read_note(KEY, "absent.json") is None
    (info,) = cache.info()
    assert info["entries"] == 2 and info["backbone"] == "toy" and info["bytes"] == 2 * (16 + 12 + 8)
    assert cache.clear() == 2
    assert cache.get_many(KEY, [SHA_A]) == [None] and cache.info() == []


def test_request_notes_round_trip_damage_and_clear(cache):
    rid = "d" * 64
    assert cache.read_request(rid) is None
    cache.write_request(rid, {"model_key": KEY, "dim": 3})
    assert cache.read_request(rid) == {"request_id": rid, "model_key": KEY, "dim": 3}
    assert cache.read_request("e" * 64) is None
    (cache.root / "requests" / f"{rid}.json").write_text('{"request_id": "' + rid + '", "mo')  # torn / damaged
    assert cache.read_request(rid) is None
    (cache.root / "requests" / f"{'e' * 64}.json").write_text('{"request_id": "' + rid + '"}')  # copied elsewhere
    assert cache.read_request("e" * 64) is None
    with pytest.raises(ValueError, match="request_id must be a 64-character hex sha256"):
        cache.write_request("../escape", {})
    cache.write_request(rid, {"model_key": KEY})
    cache.put_many(KEY, [SHA_A], np.ones((1, 3)))
    assert cache.clear() == 1
    assert cache.read_request(rid) is None
