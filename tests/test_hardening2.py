"""Issue 23 (Hardening II), items 2 and 4-6: caches that cannot be written, pipeline files that are not UTF-8,
Markdown reports that could carry HTML, and command-line messages.

Permission and disk-full cases are simulated by monkeypatching (the suite may run as root, which ignores chmod).
"""
from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import random_images, run

from deepfeat import load_features
from deepfeat.extraction import cache as cache_module

EXTRACT = ["--model", "tiny_darknet", "--weights", "none", "--image-size", "32", "--device", "cpu",
           "--precision", "fp32", "--quiet", "--workers", "0"]


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    random_images(root / "a", 3, size=24, seed=0)
    random_images(root / "b", 3, size=24, seed=1)
    return root


def _same_featureset(a, b):
    """Bit for bit: X's bytes, labels, paths, sha256s and every meta field but the clock and the timing."""
    fa, fb = load_features(a), load_features(b)
    assert fa.X.dtype == fb.X.dtype and fa.X.tobytes() == fb.X.tobytes()
    assert list(fa.y) == list(fb.y) and list(fa.paths) == list(fb.paths) and list(fa.sha256) == list(fb.sha256)
    clock = ("created", "seconds", "cache_dir")
    assert {k: v for k, v in fa.meta.items() if k not in clock} == {k: v for k, v in fb.meta.items() if k not in clock}


def _failing_writes(monkeypatch, code, *, after=0, cache_root=None):
    """Every cache write after the first ``after`` fails with ``code`` (and, with ``cache_root``, so does every
    folder made under it: a read-only cache folder)."""
    real_write, real_mkdir, calls = cache_module._atomic_write, Path.mkdir, []

    def write(path, data):
        calls.append(path)
        if len(calls) > after:
            raise OSError(code, os.strerror(code), str(path))
        return real_write(path, data)

    def mkdir(self, *a, **k):
        if cache_root is not None and str(self).startswith(str(cache_root)) and not self.is_dir():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(cache_module, "_atomic_write", write)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    return calls


@pytest.mark.parametrize("case", ["read-only from the start", "read-only mid-run", "disk full"])
def test_a_cache_that_cannot_be_written_never_stops_the_run(two_classes, tmp_path, capsys, monkeypatch, case):
    normal = tmp_path / "normal.features"
    assert run(capsys, "extract", two_classes, "-o", normal, *EXTRACT, "--cache-dir", tmp_path / "c0")[0] == 0
    root = tmp_path / "c1"
    if case == "read-only from the start":
        root.mkdir()
        calls = _failing_writes(monkeypatch, errno.EROFS, cache_root=root)
    elif case == "read-only mid-run":  # the model note and the first entry are written, then EACCES
        calls = _failing_writes(monkeypatch, errno.EACCES, after=2)
    else:
        calls = _failing_writes(monkeypatch, errno.ENOSPC)
    out = tmp_path / "out.features"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = run(capsys, "extract", two_classes, "-o", out, *EXTRACT, "--cache-dir", root)
    assert code == 0, err
    monkeypatch.undo()
    said = [str(w.message) for w in seen if "cannot be written" in str(w.message)]
    assert len(said) == 1 and str(root) in said[0], said  # one warning, naming the cache
    assert case == "read-only from the start" or len(calls) > 3  # entries and the request note were tried
    _same_featureset(out, normal)


# ------------------------------------------------------------------ item 4: pipeline files that are not UTF-8
LATIN1 = b'[experiment]\nname = "caf\xe9"\n'


@pytest.mark.parametrize("argv", [["run", "{toml}", "{imgs}", "-o", "{tmp}/r"],
                                  ["cv", "--experiment", "{toml}", "-o", "{tmp}/r"],
                                  ["finetune", "{imgs}", "--experiment", "{toml}", "-o", "{tmp}/f.pt"]])
def test_a_pipeline_file_that_is_not_utf8_is_one_error_line(tmp_path, capsys, argv):
    toml = tmp_path / "latin1.toml"
    toml.write_bytes(LATIN1)
    (tmp_path / "imgs").mkdir()
    code, _, err = run(capsys, *[a.format(toml=toml, imgs=tmp_path / "imgs", tmp=tmp_path) for a in argv])
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and "UnicodeDecodeError" not in err, err
    assert lines[-1] == f"error: experiment file {toml} is not UTF-8 text (byte 0xe9 at offset 24): save it as UTF-8"


def test_every_toml_reader_names_the_file_when_it_is_not_utf8(tmp_path):
    from deepfeat.data.manifests import load_manifest
    from deepfeat.errors import DeepfeatError
    from deepfeat.experiments import Experiment
    from deepfeat.finetuning.config import FinetuneConfig

    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "\xff\xfe"\n')
    for read, what in ((Experiment.from_toml, "experiment file"), (FinetuneConfig.from_toml, "fine-tuning config"),
                       (load_manifest, "dataset manifest")):
        with pytest.raises(DeepfeatError, match=f"^{what} {bad} is not UTF-8 text \\(byte 0xff at offset 8\\)"):
            read(bad)
    bom = tmp_path / "bom.toml"  # a UTF-8 byte-order mark (Windows editors) is still UTF-8
    bom.write_bytes(b'\xef\xbb\xbf[experiment]\nname = "caf\xc3\xa9"\n')
    assert Experiment.from_toml(bom).name == "café"
