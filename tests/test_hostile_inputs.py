"""Issue 11: hostile and awkward inputs. Each case of the issue's "Why" list, plus bounded property-based fuzzing.

Permission cases are simulated by monkeypatching (the test suite may run as root, which reads any file).
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import stat
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import random_images, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deepfeat import FeatureSet
from deepfeat.classifiers.model_files import load_model, save_model, sidecar_path
from deepfeat.data import sources
from deepfeat.data.images import _scale_to_uint8, load_image
from deepfeat.data.sources import open_source
from deepfeat.errors import DeepfeatError, ImageReadError, ModelFileError
from deepfeat.extraction.cache import FeatureCache, _decode, _encode, model_key
from deepfeat.extraction.device import check_precision
from deepfeat.fileio import csv_safe_cell, regular_file_problem, sha256_file, write_csv
from deepfeat.selection.mrmr import MRMRSelector

EXTRACT = ["--model", "tiny_darknet", "--weights", "none", "--image-size", "32", "--device", "cpu",
           "--precision", "fp32", "--quiet", "--workers", "0"]
META = {"backbone": "tiny_darknet", "weights": "none", "layer": "logits", "input_size": [3, 32, 32]}


def images(folder: Path, n: int, seed: int = 0, size: int = 24):
    random_images(folder, n, size=size, seed=seed)


@pytest.fixture
def two_classes(tmp_path):
    root = tmp_path / "data"
    images(root / "a", 6, seed=0)
    images(root / "b", 6, seed=1)
    return root


def deny(monkeypatch, denied: Path):
    """Make os.scandir / os.listdir fail with EACCES for ``denied`` (root would read it despite chmod 000)."""
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(denied):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    def listdir(path="."):
        if os.path.realpath(path) == os.path.realpath(denied):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    monkeypatch.setattr(sources.os, "listdir", listdir)


# ------------------------------------------------------------------ 1. the folder walker is never silent
def test_unreadable_class_folder_is_an_error_not_a_missing_class(two_classes, monkeypatch):
    images(two_classes / "c", 3)
    deny(monkeypatch, two_classes / "c")
    with pytest.raises(DeepfeatError, match=r"cannot read folder .*c: Permission denied"):
        open_source(two_classes)


def test_unreadable_sub_folder_is_an_error(two_classes, monkeypatch):
    images(two_classes / "b" / "deep", 3)
    deny(monkeypatch, two_classes / "b" / "deep")
    with pytest.raises(DeepfeatError, match=r"cannot read folder .*deep: Permission denied"):
        open_source(two_classes)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder")
def test_unreadable_folder_for_real(two_classes):  # pragma: no cover - only as an ordinary user
    os.chmod(two_classes / "b", 0)
    try:
        with pytest.raises(DeepfeatError, match="cannot read folder"):
            open_source(two_classes)
    finally:
        os.chmod(two_classes / "b", 0o755)


def test_symlink_to_an_ancestor_is_not_followed_and_is_listed(two_classes):
    os.symlink("..", two_classes / "a" / "loop")
    with pytest.warns(UserWarning, match="skipped, never opened"):
        src = open_source(two_classes)
    assert src.class_counts == {"a": 6, "b": 6}
    assert [p for p, _ in src.skipped] == [str(two_classes / "a" / "loop")]
    assert "its own ancestor" in src.skipped[0][1]


def test_symlink_into_another_class_keeps_labels(two_classes):
    os.symlink(two_classes / "b", two_classes / "a" / "b_link")
    with pytest.warns(UserWarning, match="skipped, never opened"):
        src = open_source(two_classes)
    assert src.class_counts == {"a": 6, "b": 6}
    assert "another class folder" in src.skipped[0][1]


def test_symlinked_outside_folder_is_followed_once(two_classes, tmp_path):
    images(tmp_path / "outside", 2, seed=5)
    os.symlink(tmp_path / "outside", two_classes / "a" / "more")
    os.symlink(tmp_path / "outside", two_classes / "a" / "again")
    with pytest.warns(UserWarning, match="already read"):
        src = open_source(two_classes)
    assert src.class_counts == {"a": 8, "b": 6}


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_fifo_and_device_named_jpg_are_skipped_never_opened(two_classes, kind):
    target = two_classes / "a" / "trap.jpg"
    os.mkfifo(target) if kind == "fifo" else os.symlink("/dev/zero", target)
    with pytest.warns(UserWarning, match="trap.jpg: is not a regular file"):
        src = open_source(two_classes)
    assert src.class_counts == {"a": 6, "b": 6} and str(target) not in src.paths
    # the same file given directly, in a list, in a CSV, to the image reader and to the hasher: refused, no hang
    with pytest.raises(DeepfeatError, match="is not a regular file"):
        open_source(str(target))
    with pytest.raises(DeepfeatError, match="is not a regular file"):
        open_source([str(target)])
    (two_classes.parent / "m.csv").write_text(f"path,label\n{target},a\n")
    with pytest.raises(DeepfeatError, match=r"line 2: image .*is not a regular file"):
        open_source(two_classes.parent / "m.csv")
    with pytest.raises(ImageReadError, match="is not a regular file"):
        load_image(target)
    with pytest.raises(OSError, match="is not a regular file"):
        sha256_file(target)


def test_cli_extract_prints_class_counts_and_skipped(two_classes, tmp_path, capsys):
    os.mkfifo(two_classes / "b" / "pipe.png")
    code, out, err = run(capsys, "extract", two_classes, "-o", tmp_path / "x.features", *EXTRACT)
    assert code in (0, None) or code == 0
    assert "found 12 images in 2 classes (a: 6, b: 6)" in err
    assert "skipped, never opened:" in err and "pipe.png" in err
    failed = pd.read_csv(tmp_path / "x.features.failed.csv")
    assert failed["path"].str.endswith("pipe.png").tolist() == [True]


def test_cli_predict_refuses_a_fifo(tmp_path, capsys):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    model = _tiny_model(tmp_path)
    code, _, err = run(capsys, "predict", model, fifo, "-o", tmp_path / "p.csv")
    assert code == 2 and "is not a regular file (FIFO" in err


# ------------------------------------------------------------------ 2. bounded decoding
def _png_header(width: int, height: int, bit_depth=16, colour=0, data=b"") -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(9500, 9500, data=zlib.compress(b"\0" * 100)))  # 90.25 M pixels, 150 bytes
    with pytest.raises(ImageReadError, match=r"9500 x 9500 = 90,250,000 pixels, above the limit of 89,478,485"):
        load_image(bomb)
    small = tmp_path / "small.png"
    Image.new("I;16", (20, 20), 3000).save(small)
    with pytest.raises(ImageReadError, match="--max-pixels"):
        load_image(small, max_pixels=399)
    assert load_image(small, max_pixels=400).size == (20, 20)


def test_max_pixels_raises_the_limit_beyond_pillows_hard_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's hard error at 200 pixels
    p = tmp_path / "g.png"
    Image.new("L", (20, 20), 7).save(p)  # 400 pixels
    with pytest.raises(ImageReadError, match="above the limit of 300"):
        load_image(p, max_pixels=300)
    assert load_image(p, max_pixels=1000).getpixel((0, 0)) == (7, 7, 7)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


def test_cli_max_pixels_option(tmp_path, capsys):
    images(tmp_path / "d" / "a", 4)
    images(tmp_path / "d" / "b", 4, seed=2)
    code, _, err = run(capsys, "extract", tmp_path / "d", "-o", tmp_path / "x.features", *EXTRACT,
                       "--max-pixels", "100")
    os.environ.pop("DEEPFEAT_MAX_PIXELS", None)
    assert code == 0 and "above the limit of 100" in err


def test_16_bit_conversion_has_no_float64_copy():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, (1000, 1000), dtype=np.uint16)  # 2 MB
    tracemalloc.start()
    out = _scale_to_uint8(arr)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(out, np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8))
    assert peak < 1.5e6, f"peak {peak} bytes: a float64 copy would be 8 MB"


# ------------------------------------------------------------------ 3. model files
def _tiny_model(tmp_path, name="m.joblib", classes=("a", "b")):
    from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier

    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(12, 5)).astype(np.float32), y=np.repeat(list(classes), 6), meta=dict(META))
    model = DeepFeatureClassifier.from_featureset(fs, classifier="knn")
    return save_model(model, tmp_path / name)


def test_skops_model_round_trip_through_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(12, 5)).astype(np.float32), y=np.repeat(["a", "b"], 6), meta=dict(META))
    fs.save(tmp_path / "f.features")
    code, out, _ = run(capsys, "fit", tmp_path / "f.features", "-o", tmp_path / "m.skops", "--classifier", "svm",
                       "--select", "mrmr", "--n-features", "2")
    assert code == 0 and (tmp_path / "m.skops").is_file()
    assert json.loads(sidecar_path(tmp_path / "m.skops").read_text())["format"] == "skops"
    model = load_model(tmp_path / "m.skops")
    assert model.predict(fs.X).tolist()[:2] == ["a", "a"] or set(model.predict(fs.X)) <= {"a", "b"}


class NotTrusted:
    pass


def test_skops_refuses_an_unknown_type(tmp_path):
    import skops.io
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    model.extra_ = NotTrusted()
    with pytest.raises(ModelFileError, match=r"cannot save DummyClassifier as the .skops file"):
        save_model(model, tmp_path / "m.skops")  # issue 23: save_model refuses what load_model would refuse
    path = save_model(DummyClassifier().fit([[0], [1]], [0, 1]), tmp_path / "m.joblib")
    skops.io.dump(model, tmp_path / "m.skops")  # written without deepfeat, with a sidecar that matches
    side = dict(json.loads(sidecar_path(path).read_text()), sha256=sha256_file(tmp_path / "m.skops"), format="skops")
    sidecar_path(tmp_path / "m.skops").write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match=r"does not trust: .*DummyClassifier \(as ObjectNode\).*NotTrusted"):
        load_model(tmp_path / "m.skops")


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["DEEPFEAT_TRUST_DIR"]).parent / "PWNED",))


def test_forged_joblib_with_a_matching_sidecar_is_refused(tmp_path, capsys):
    good = _tiny_model(tmp_path)
    forged = tmp_path / "forged.joblib"
    forged.write_bytes(pickle.dumps(Exploit()))
    side = json.loads(sidecar_path(good).read_text())
    side["sha256"] = sha256_file(forged)  # anyone who can write the pickle can recompute this
    sidecar_path(forged).write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match="did not write .*--trust"):
        load_model(forged)
    code, _, err = run(capsys, "predict", forged, tmp_path, "-o", tmp_path / "p.csv")
    assert code == 2 and "error: model file" in err
    assert not (Path(os.environ["DEEPFEAT_TRUST_DIR"]).parent / "PWNED").exists()
    assert load_model(good).predict(np.zeros((1, 5))).shape == (1,)  # written here: loads without --trust


def test_sidecar_fields_are_checked_against_the_model(tmp_path):
    path = _tiny_model(tmp_path)
    side = json.loads(sidecar_path(path).read_text())
    side["classes"] = ["blast", "normal"]
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(ModelFileError, match=r"classes differ .*sidecar \['blast', 'normal'\], model \['a', 'b'\]"):
        load_model(path)


@pytest.mark.parametrize("versions", [{}, None, []])
def test_sidecar_without_versions_is_an_error(tmp_path, capsys, versions):
    path = _tiny_model(tmp_path)
    side = dict(json.loads(sidecar_path(path).read_text()), versions=versions)
    sidecar_path(path).write_text(json.dumps(side))
    code, _, err = run(capsys, "predict", path, tmp_path, "-o", tmp_path / "p.csv")
    assert code == 2 and "does not record the deepfeat and scikit-learn versions" in err


# ------------------------------------------------------------------ 4. ordinary failures: error line, exit 2
@pytest.mark.parametrize("code_, words", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied")])
def test_disk_full_or_permission_denied_is_one_error_line(two_classes, tmp_path, capsys, monkeypatch, code_, words):
    out = tmp_path / "x.features"
    assert run(capsys, "extract", two_classes, "-o", out, *EXTRACT)[0] == 0
    before = out.read_bytes()
    real = os.replace

    def failing(src, dst, *a, **k):
        if str(dst).endswith(".features"):
            raise OSError(code_, os.strerror(code_), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing)
    code, _, err = run(capsys, "extract", two_classes, "-o", out, *EXTRACT)
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {words}")
    assert "Traceback" not in err
    assert out.read_bytes() == before and not list(tmp_path.glob(".x.features*"))  # nothing lost, nothing left


def test_mrmr_keeps_one_feature_when_all_are_constant():
    X, y = np.ones((20, 6)), np.repeat([0, 1], 10)
    with pytest.warns(UserWarning, match="keeps one"):
        sel = MRMRSelector(n_features=3).fit(X, y)
    assert sel.transform(X).shape == (20, 1) and np.isnan(sel.scores_).sum() == 5


def test_cv_and_fit_with_mrmr_on_constant_features(tmp_path, capsys):
    fs = FeatureSet(np.ones((20, 6), np.float32), y=np.repeat(["a", "b"], 10), meta=dict(META))
    fs.save(tmp_path / "c.features")
    code, _, err = run(capsys, "cv", tmp_path / "c.features", "-o", tmp_path / "rep", "--select", "mrmr",
                       "--classifier", "knn", "--folds", "2", "--baseline", "majority", "--quiet")
    assert code in (0, None), err
    code, _, err = run(capsys, "fit", tmp_path / "c.features", "-o", tmp_path / "c.joblib", "--select", "mrmr",
                       "--classifier", "knn")
    assert code in (0, None), err


def test_fit_with_a_class_smaller_than_the_calibration_folds(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(13, 4)).astype(np.float32), y=np.array(["a"] * 10 + ["b"] * 3),
                    meta=dict(META))
    fs.save(tmp_path / "s.features")
    code, _, err = run(capsys, "fit", tmp_path / "s.features", "-o", tmp_path / "s.joblib")
    assert code == 2
    assert "into 5 folds internally" in err and "class counts: {'a': 10, 'b': 3}" in err
    assert not (tmp_path / "s.joblib").exists()


def test_cv_with_a_class_of_one_image_does_not_advise_folds_1(tmp_path, capsys):
    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(11, 4)).astype(np.float32), y=np.array(["a"] * 10 + ["b"]))
    fs.save(tmp_path / "t.features")
    code, _, err = run(capsys, "cv", tmp_path / "t.features", "-o", tmp_path / "rep", "--quiet")
    assert code == 2 and not re.search(r"--folds 1\b", err) and "cannot be cross-validated at all" in err


# ------------------------------------------------------------------ 6. cache entries
KEY = model_key(backbone="toy", weights_id="w", layer="logits", preprocessing={})
SHA_A, SHA_B = "aa" * 32, "bb" * 32


def test_cache_entries_are_0644_and_shared_readable(tmp_path):
    old = os.umask(0o022)
    try:
        cache = FeatureCache(tmp_path)
        cache.put_many(KEY, [SHA_A], np.ones((1, 3)))
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.entry_path(KEY, SHA_A).stat().st_mode) == 0o644


def test_another_images_entry_copied_over_is_detected(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many(KEY, [SHA_A, SHA_B], np.array([[1.0, 2.0], [3.0, 4.0]]))
    cache.entry_path(KEY, SHA_A).write_bytes(cache.entry_path(KEY, SHA_B).read_bytes())
    with pytest.warns(RuntimeWarning, match="damaged"):
        got = cache.get_many(KEY, [SHA_A, SHA_B])
    assert got[0] is None and got[1].tolist() == [3.0, 4.0]


def test_format_1_entries_are_never_served():
    row = np.ones(3, np.float32)
    body = struct.pack("<8sQ", b"DFCACHE1", 3) + row.tobytes()
    import hashlib
    old = body + hashlib.blake2b(body, digest_size=8).digest()
    assert _decode(old, 3) is None and _decode(_encode(row, b"k"), 3, b"k") is not None


def test_directory_in_place_of_an_entry_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.entry_path(KEY, SHA_A).mkdir(parents=True)
    with pytest.warns(RuntimeWarning, match="unreadable .*IsADirectoryError"):
        assert cache.get_many(KEY, [SHA_A]) == [None]
    cache.put_many(KEY, [SHA_A], np.ones((1, 2)))
    assert cache.get_many(KEY, [SHA_A])[0].tolist() == [1.0, 1.0]


def test_unwritable_cache_warns_and_goes_on(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("deepfeat.extraction.cache._atomic_write", full)
    with pytest.warns(RuntimeWarning, match="cannot be written .*No space left"):
        cache.put_many(KEY, [SHA_A, SHA_B], np.ones((2, 2)))
    assert cache.n_unwritable == 2


# ------------------------------------------------------------------ 5. outputs
def test_csv_cells_are_escaped_raw_values_kept(tmp_path):
    df = pd.DataFrame({"path": ["=HYPERLINK(1)", "+a", "-b", "@c", "\tt", "\rr", "ok"], "p": [-0.5] * 7})
    write_csv(df, tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv", keep_default_na=False)
    assert back["path"].tolist() == ["'=HYPERLINK(1)", "'+a", "'-b", "'@c", "'\tt", "'\rr", "ok"]
    assert back["p"].tolist() == [-0.5] * 7 and df["path"][0] == "=HYPERLINK(1)"
    assert csv_safe_cell(-3) == -3


def test_every_csv_of_cv_and_predict_is_escaped(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.repeat(["=cmd|' /C calc'!A0", "+b"], 6)
    fs = FeatureSet(rng.normal(size=(12, 4)).astype(np.float32) + (y == "+b")[:, None], y=y,
                    paths=np.array([f"@x{i}.png" for i in range(12)]), meta=dict(META))
    fs.save(tmp_path / "f.features")
    code, _, err = run(capsys, "cv", tmp_path / "f.features", "-o", tmp_path / "rep", "--classifier", "knn",
                       "--select", "none", "--folds", "2", "--baseline", "majority", "--quiet")
    assert code in (0, None), err
    import csv
    cells = [c for f in (tmp_path / "rep").glob("*.csv") for row in csv.reader(open(f, newline="")) for c in row]
    assert any(c.startswith("'=cmd") for c in cells)
    assert not [c for c in cells if c[:1] in "=+@" and c[:1]]
    from deepfeat import load_features
    assert load_features(tmp_path / "f.features").y[0] == "=cmd|' /C calc'!A0"  # the raw value is kept


def test_interrupted_report_is_unfinished_and_rerun_replaces(tmp_path, monkeypatch):
    from deepfeat.reporting import report
    from deepfeat.evaluation.cross_validation import cross_validate

    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(12, 4)).astype(np.float32), y=np.repeat(["a", "b"], 6))
    results = cross_validate(fs, classifiers=["knn"], selections=["none"], folds=2, baseline="majority",
                             progress=False)
    out = tmp_path / "rep"
    report.write_report(results, out)
    report.check_report(out)
    (out / "plots" / "stale.png").write_bytes(b"old")

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "_figures", stop)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(results, out)
    assert (out / "results.csv").exists()
    with pytest.raises(DeepfeatError, match="unfinished"):
        report.check_report(out)
    monkeypatch.undo()
    report.write_report(results, out)
    assert not (out / "plots" / "stale.png").exists()
    report.check_report(out)


def test_extract_rerun_replaces_failed_csv(two_classes, tmp_path, capsys):
    bad = two_classes / "a" / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "x.features"
    assert run(capsys, "extract", two_classes, "-o", out, *EXTRACT)[0] == 0
    failed = Path(str(out) + ".failed.csv")
    assert failed.exists()
    bad.unlink()
    assert run(capsys, "extract", two_classes, "-o", out, *EXTRACT)[0] == 0
    assert not failed.exists()


# ------------------------------------------------------------------ 7. precision auto keeps the reference
def test_precision_check_needs_unchanged_top5_and_a_small_error():
    ref = np.tile(np.linspace(1.0, 0.0, 10, dtype=np.float32), (8, 1))
    swapped = ref.copy()
    swapped[:, [3, 4]] = swapped[:, [4, 3]]  # cosine 0.99 but another top-5 order
    probe = np.zeros((8, 1))

    def fwd(out):
        return lambda x, p: (ref if p == "fp32" else out)[: len(x)]

    precision, reason, cos = check_precision(fwd(swapped), probe, "bf16")
    assert precision == "fp32" and "top-5 CHANGED" in reason and cos > 0.99
    precision, reason, _ = check_precision(fwd(ref + 0.05), probe, "bf16")
    assert precision == "fp32" and "max error 0.05" in reason
    assert check_precision(fwd(ref + 0.001), probe, "bf16")[0] == "bf16"
    precision, reason, _ = check_precision(fwd(ref), probe[:3], "bf16")
    assert precision == "fp32" and "needs >= 4" in reason


@pytest.mark.realdata
def test_tiny_darknet_at_the_default_precision_matches_darknet(darknet_ref):
    from deepfeat.extraction.api import extract_features

    paths = [str(darknet_ref / f"{n}_224.png") for n in ("dog", "eagle", "cell")]
    fs = extract_features(paths, model="tiny_darknet", weights=str(darknet_ref / "tiny.weights"), cache=False,
                          num_workers=0, progress=False)  # precision: the default
    expected = np.load(darknet_ref / "tiny_224_avgpool.npy")
    np.testing.assert_allclose(fs.X, expected, atol=3e-2, rtol=0)  # the loader's stated tolerance
    assert np.argsort(-fs.X, 1)[:, :5].tolist() == np.argsort(-expected, 1)[:, :5].tolist()


# ------------------------------------------------------------------ property-based fuzzing (bounded)
FUZZ = settings(max_examples=40, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]))
def test_fuzz_image_reader_random_bytes(tmp_path, data, suffix):
    p = tmp_path / f"f{suffix}"
    p.write_bytes(data)
    try:
        assert load_image(p).mode == "RGB"
    except ImageReadError:
        pass


@FUZZ
@given(width=st.integers(0, 2**31 - 1), height=st.integers(0, 2**31 - 1),
       depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0]), colour=st.sampled_from([0, 2, 3, 4, 6, 1]),
       body=st.binary(max_size=256), cut=st.integers(0, 400))
def test_fuzz_image_reader_random_png_headers(tmp_path, width, height, depth, colour, body, cut):
    p = tmp_path / "h.png"
    p.write_bytes(_png_header(width, height, depth, colour, zlib.compress(body))[: 8 + cut])
    try:
        img = load_image(p, max_pixels=1_000_000)
        assert img.mode == "RGB" and img.size[0] * img.size[1] <= 1_000_000
    except ImageReadError:
        pass


_cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FUZZ
@given(header=st.lists(_cells, min_size=0, max_size=4), rows=st.lists(st.lists(_cells, max_size=4), max_size=5),
       names=st.lists(st.text(alphabet="ab=+-@ .,_\"'", min_size=1, max_size=8), max_size=3))
def test_fuzz_csv_manifest_reader(tmp_path, header, rows, names):
    import csv
    import uuid

    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    for n in names:
        if n.strip(". ") and "/" not in n:
            try:
                Image.new("RGB", (2, 2)).save(folder / f"{n}.png")
            except OSError:
                pass
    with open(folder / "m.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header or ["path", "label"])
        for r in rows:
            w.writerow([f"{names[0]}.png" if names and i == 0 and r and r[0] == "" else c for i, c in enumerate(r)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = open_source(folder / "m.csv")
        assert len(src.paths) == len(src.labels) and all(regular_file_problem(p) is None for p in src.paths)
    except DeepfeatError:
        pass
