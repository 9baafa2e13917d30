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
