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


# ------------------------------------------------------------------ item 5: no HTML through any Markdown report
SCRIPT, IMG = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"


def _no_html(md: str):
    """No tag from the data survives in ``md``; the names are there, as entities."""
    assert "<script" not in md and "<img" not in md and "onerror=alert(2)>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;img src=x onerror=alert(2)&gt;" in md


def _hostile_set(tmp_path, n=10):
    """Two separable classes named SCRIPT and IMG, files named after them, a backbone named IMG."""
    from deepfeat.features import FeatureSet

    rng = np.random.default_rng(0)
    y = np.repeat([SCRIPT, IMG], n)
    X = rng.normal(size=(2 * n, 4)) + 0.8 * (y == IMG)[:, None]
    paths = [str(tmp_path / f"{IMG}{i}.png") for i in range(2 * n)]
    return FeatureSet(X.astype(np.float32), y=y, paths=paths, sha256=[f"{i:064x}" for i in range(2 * n)],
                      meta={"backbone": IMG})


def test_md_escape_is_the_one_escape_of_every_markdown_expression():
    from deepfeat.reporting.writing import md_escape, render

    assert md_escape(f"{IMG} & {SCRIPT}") == ("&lt;img src=x onerror=alert(2)&gt; &amp; "
                                              "&lt;script&gt;alert(1)&lt;/script&gt;")
    table = {"key": "t", "title": IMG, "columns": [SCRIPT], "rows": [[IMG]], "open": True, "note": "",
             "n_rows": 1}
    md = render("fewshot_report.md.j2", title=SCRIPT, intro=IMG, honesty=[SCRIPT], tables=[table],
                figures=[], files=[IMG])
    _no_html(md)
    assert "&amp;lt;" not in md  # a macro's escaped output is not escaped twice


@pytest.mark.parametrize("name", ["[blast](javascript:alert(1))", "[x] ( JavaScript:alert(1))",
                                  "[x](<vbscript:msgbox>)", "[x](data:text/html;base64,PHNjcmlwdD4=)"])
def test_md_escape_breaks_script_links_and_keeps_web_links(name):
    import re

    from deepfeat.reporting.writing import md_escape, render

    md = render("fewshot_report.md.j2", title=name, intro="see [the docs](https://example.org)", honesty=[],
                tables=[], figures=[], files=[name])
    assert not re.search(r"\]\s*\(\s*(?:&lt;)?\s*(?:javascript|vbscript|data):", md, re.IGNORECASE)
    assert "[the docs](https://example.org)" in md
    assert md_escape(md_escape(name)) == md_escape(name)


def test_cv_report_md_carries_no_html(tmp_path):
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.reporting.report import write_report

    res = cross_validate(_hostile_set(tmp_path), classifiers=["knn"], selections=["none"], folds=2,
                         baseline="majority", progress=False)
    md = write_report(res, tmp_path / "rep")["report_md"].read_text()
    _no_html(md)
    assert "| image | true | predicted |" in md  # the error table (file and class names) is there


def test_fewshot_and_curve_report_md_carry_no_html(tmp_path):
    from deepfeat.fewshot.curves import learning_curve
    from deepfeat.fewshot.evaluate import few_shot_evaluate
    from deepfeat.reporting.fewshot_report import write_curve_report, write_fewshot_report

    fs = _hostile_set(tmp_path, n=12)
    res = few_shot_evaluate(fs, ways=[2], shots=[1], queries=3, episodes=3, classifiers=["knn"],
                            baseline=(IMG, np.random.default_rng(1).normal(size=(24, 3))))
    _no_html(write_fewshot_report(res, tmp_path / "fs")["report_md"].read_text())
    curve = learning_curve(fs, sizes=[4, "all"], classifier="knn", select="none", repeats=1, baseline=None)
    for frame in (curve.per_repeat, curve.summary):  # learning_curve names its feature sets itself
        frame["features"] = frame["features"].replace({"features": SCRIPT})
    md = (tmp_path / "curve" / "report.md")
    write_curve_report(curve, tmp_path / "curve")
    assert "&lt;script&gt;" in md.read_text() and "<script" not in md.read_text()


def test_finetune_report_md_carries_no_html(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from deepfeat.reporting.finetune_report import write_finetune_report

    curves = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.9, 0.5], "train_acc": [0.5, 0.75],
                           "val_loss": [0.8, 0.6], "val_acc": [0.5, 0.5], "lr": [1e-3, 1e-4]})
    metrics = {"accuracy": 0.5, "f1_macro": 0.5, "confusion": [[1, 1], [1, 1]], "f1_per_class": [0.5, 0.5],
               "val_paths": [str(tmp_path / f"{IMG}{i}.png") for i in range(4)], "val_true": [0, 0, 1, 1],
               "val_predictions": [0, 1, 0, 1], "val_confidence": [0.9, 0.8, 0.7, 0.6]}
    result = SimpleNamespace(metrics=metrics, curves=curves, class_names=[SCRIPT, IMG], best_epoch=2, n_train=8,
                             n_val=4, seconds=1.0, plan={}, linear_probe=None, stopped_early=None,
                             checkpoint=str(tmp_path / f"{IMG}.pt"),
                             files={"curves_png": str(tmp_path / f"{IMG}.curves.png")})
    paths = write_finetune_report(result, tmp_path / "ft.report.html")
    _no_html(paths["report_md"].read_text())
    assert "<script" not in paths["report_html"].read_text()


# ------------------------------------------------------------------ item 6: messages
def _features_file(path, counts):
    from deepfeat.features import FeatureSet

    rng = np.random.default_rng(0)
    y = np.concatenate([[c] * n for c, n in counts.items()])
    X = rng.normal(size=(len(y), 5)) + 2 * (y == y[0])[:, None]
    FeatureSet(X.astype(np.float32), y=y, sha256=[f"{i:064x}" for i in range(len(y))]).save(path)
    return path


def test_ways_1_names_the_option(tmp_path, capsys):
    fs = _features_file(tmp_path / "f.features", {"a": 8, "b": 8})
    code, _, err = run(capsys, "fewshot", fs, "-o", tmp_path / "o", "--ways", "1")
    assert code == 2 and err.strip().splitlines()[-1] == "error: --ways must hold integers >= 2; got 1"


@pytest.mark.parametrize("counts, inner, said", [
    ({"a": 8, "b": 8}, 5, "error: --inner-folds 5 but the training part of outer fold 0 (repeat 0) has a class with "
                          "only 4 image(s); use --inner-folds 4 or fewer"),
    ({"a": 8, "b": 2}, 2, "error: --inner-folds 2 but the training part of outer fold 0 (repeat 0) has a class with "
                          "only 1 image(s); even the minimum --inner-folds 2 cannot split it: use a smaller value of "
                          "--folds (larger outer training parts) or collect more images")])
def test_the_nested_cv_error_names_inner_folds_and_never_advises_below_2(tmp_path, capsys, counts, inner, said):
    fs = _features_file(tmp_path / "f.features", counts)
    code, _, err = run(capsys, "cv", fs, "-o", tmp_path / "o", "--nested", "--inner-folds", inner, "--folds", "2",
                       "--classifier", "nb", "--select", "none", "--baseline", "none", "--quiet")
    assert code == 2 and err.strip().splitlines()[-1] == said


def test_skip_warnings_are_one_clean_line(tmp_path):
    import subprocess
    import sys

    fs = _features_file(tmp_path / "f.features", {"a": 12, "b": 12})
    p = subprocess.run([sys.executable, "-c", "from deepfeat.cli import main; main()", "fewshot", str(fs), "-o",
                        str(tmp_path / "o"), "--ways", "2,5", "--shots", "1", "--queries", "3", "--episodes", "3",
                        "--baseline", "none", "--classifier", "knn"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert "deepfeat: UserWarning: few-shot: skipped --ways 5: 5-way asked for, but the FeatureSet has only 2 " \
           "classes" in lines
    assert not [ln for ln in lines if "warnings.warn" in ln or ".py:" in ln]  # no file:line, no source line


def test_cli_messages_name_options():
    from deepfeat.cli.messages import to_cli

    assert to_cli("or use scheduler='local:N'") == "or use --scheduler local:N"
    assert to_cli("The 'test_fraction' parameter must be in (0, 1). Got 2 instead.") == \
        "--test-fraction must be in (0, 1). Got 2 instead."
    assert to_cli("few-shot: skipped ways=3 shots=5: x") == "few-shot: skipped --ways 3 --shots 5: x"
    assert to_cli("The 'sizes' parameter is empty") == "--sizes is empty"


def test_an_unanswering_scheduler_fails_in_seconds_naming_the_address():
    pytest.importorskip("distributed")
    import socket
    import time

    from deepfeat.dask_client import CONNECT_TIMEOUT_S, connect
    from deepfeat.errors import DeepfeatError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.perf_counter()
    with pytest.raises(DeepfeatError, match=f"cannot reach the Dask scheduler at {address} within"):
        with connect(address):
            pass
    assert CONNECT_TIMEOUT_S <= 5 and time.perf_counter() - t0 < CONNECT_TIMEOUT_S + 5


def test_a_failed_report_rewrite_says_what_was_removed(tmp_path, capsys, monkeypatch):
    fs = _features_file(tmp_path / "f.features", {"a": 6, "b": 6})
    argv = ["cv", fs, "-o", tmp_path / "rep", "--folds", "2", "--classifier", "nb", "--select", "none",
            "--baseline", "none", "--quiet"]
    assert run(capsys, *argv)[0] == 0
    real = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith("report.html"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    code, _, err = run(capsys, *argv)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: No space left on device") and "nothing finished" not in line
    assert f"the previous report in {(tmp_path / 'rep').resolve()} (results.csv, per_fold.csv" in line
    assert "was removed when this run began rewriting it" in line


def test_a_too_small_test_fraction_names_the_option(tmp_path, capsys):
    fs = _features_file(tmp_path / "f.features", {"a": 12, "b": 12})
    code, _, err = run(capsys, "curve", fs, "-o", tmp_path / "o", "--test-fraction", "0.02", "--sizes", "2",
                       "--repeats", "1", "--baseline", "none", "--classifier", "knn", "--select", "none")
    assert code == 2 and err.strip().splitlines()[-1] == (
        "error: --test-fraction 0.02 asks for a test set of 1/50 of the data, but it holds only 24 independent units "
        "(subjects, or distinct images when there are none); use --test-fraction 0.0417 or more")


def test_a_fold_cache_that_cannot_be_written_never_stops_cv(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from deepfeat.evaluation import fold_cache

    fs = _features_file(tmp_path / "f.features", {"a": 6, "b": 6})
    argv = ["--folds", "2", "--classifier", "nb", "--select", "none", "--baseline", "none", "--quiet"]
    assert run(capsys, "cv", fs, "-o", tmp_path / "plain", "--fold-cache", "none", *argv)[0] == 0

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(fold_cache, "atomic_write_bytes", read_only)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = run(capsys, "cv", fs, "-o", tmp_path / "ro", "--fold-cache", tmp_path / "fc", *argv)
    assert code == 0, err
    said = [str(w.message) for w in seen if "cannot be written" in str(w.message)]
    assert len(said) == 1 and f"fold cache {tmp_path / 'fc'}" in said[0]
    cols = ["config", "fold", "accuracy"]
    got, want = (pd.read_csv(tmp_path / d / "per_fold.csv")[cols] for d in ("ro", "plain"))
    assert got.equals(want)  # the same folds, the same scores


# ------------------------------------------------------------------ item 3 (re-checked): knn with fewer images than k
@pytest.mark.parametrize("argv", [
    ["curve", "{fs}", "-o", "{tmp}/c", "--sizes", "2,all", "--repeats", "1", "--classifier", "knn", "--select", "none",
     "--baseline", "none"],
    ["cv", "{fs}", "-o", "{tmp}/n", "--nested", "--inner-folds", "2", "--folds", "2", "--classifier", "knn-medium",
     "--select", "none", "--baseline", "none", "--quiet"]])
def test_knn_with_fewer_training_images_than_k_votes_over_all(tmp_path, capsys, argv):
    fs = _features_file(tmp_path / "f.features", {"a": 9, "b": 9})
    code, _, err = run(capsys, *[a.format(fs=fs, tmp=tmp_path) for a in argv])
    assert code == 0, err  # 0.2 / before: "Expected n_neighbors <= n_samples_fit" traceback, exit 1


def test_small_data_knn_is_scikit_learns_when_k_fits():
    from sklearn.neighbors import KNeighborsClassifier as Theirs

    from deepfeat.classifiers.small_data import KNeighborsClassifier as Ours

    rng = np.random.default_rng(0)
    X, y, Q = rng.normal(size=(30, 3)), np.repeat([0, 1, 2], 10), rng.normal(size=(7, 3))
    for k in (1, 5, 10):
        ours, theirs = Ours(n_neighbors=k).fit(X, y), Theirs(n_neighbors=k).fit(X, y)
        assert np.array_equal(ours.predict_proba(Q), theirs.predict_proba(Q)) and ours.n_neighbors_ == k
    with pytest.warns(UserWarning, match="n_neighbors=10 but only 4 training images; it votes over all 4"):
        few = Ours(n_neighbors=10, weights="distance").fit(X[[0, 1, 10, 11]], y[[0, 1, 10, 11]])
    assert few.n_neighbors == 10 and few.predict_proba(Q).shape == (7, 2)  # the parameter is left as set
    want = Theirs(n_neighbors=4, weights="distance").fit(X[[0, 1, 10, 11]], y[[0, 1, 10, 11]]).predict_proba(Q)
    assert np.array_equal(few.predict_proba(Q), want)


def test_finetune_report_md_renders_without_a_curves_figure():
    from deepfeat.reporting.writing import render

    md = render("finetune_report.md.j2", title="t", intro="i", sentences=["s."], tables=[], errors=None,
                figure_files={})
    assert "# t" in md and "Loss and accuracy" not in md
    md = render("finetune_report.md.j2", title="t", intro="i", sentences=["s."], tables=[], errors=None,
                figure_files={"curves": "run.curves.png"})
    assert "![Loss and accuracy per epoch](run.curves.png)" in md


def test_fold_cache_none_means_no_cache_in_python_as_on_the_command_line(tmp_path, monkeypatch):
    from deepfeat.evaluation.fold_cache import FoldCache, resolve_fold_cache

    monkeypatch.chdir(tmp_path)
    assert resolve_fold_cache("none") is None and resolve_fold_cache(None) is None
    assert isinstance(resolve_fold_cache("./none"), FoldCache)  # a folder named none, said so
    assert not (tmp_path / "none").exists()
