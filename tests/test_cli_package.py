"""The CLI package: small modules that parse, call one library function and print; the decisions they used to make
(precedence, failed rows, hidden warnings, renamed spellings) now in the library, where these tests call them."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import random_images, run
from typer.testing import CliRunner

from deepfeat import FeatureSet, workflows
from deepfeat.cli import app
from deepfeat.data.sources import open_source
from deepfeat.errors import DeepfeatError
from deepfeat.fewshot.evaluate import few_shot_evaluate

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "deepfeat" / "cli"


class _Stop(Exception):
    pass


@pytest.fixture()
def features(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 12)
    X = rng.normal(size=(36, 8)) + (np.arange(36)[:, None] // 12)
    return FeatureSet(X, y, meta={"backbone": "synthetic"}).save(tmp_path / "f.features")


# --- the house -----------------------------------------------------------------------------------------------
def test_every_cli_module_and_function_is_small():
    for path in CLI.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 450, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno + 1 < 120, (path.name, node.name)
    assert not (ROOT / "deepfeat" / "cli.py").exists() and not (ROOT / "deepfeat" / "cli_messages.py").exists()


def test_the_cli_imports_without_torch_and_runs_as_a_module():
    code = "import sys, deepfeat.cli; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.split() == ["False", "False"], out.stderr
    out = subprocess.run([sys.executable, "-m", "deepfeat.cli", "--version"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.startswith("deepfeat "), out.stderr


# --- experiment files: --experiment, and 0.2's --config with a FutureWarning ------------------------------------
def test_cv_experiment_and_its_old_name(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_run(exp, out_dir, *, source, overrides, progress, log):
        seen.append((exp.name, source, overrides))
        raise _Stop

    monkeypatch.setattr(workflows, "run_experiment", fake_run)
    toml = tmp_path / "mine.toml"
    toml.write_text("[cv]\nfolds = 5\n")
    with pytest.raises(_Stop):
        run(capsys, "cv", "IMAGES", "--experiment", toml, "--folds", "3")
    with pytest.warns(FutureWarning, match="--config is renamed --experiment"), pytest.raises(_Stop):
        run(capsys, "cv", "IMAGES", "--config", toml, "--folds", "3")
    with pytest.raises(_Stop):
        run(capsys, "cv", "IMAGES", "--experiment", "efficientnet_lite0_offline")  # a shipped name
    assert seen[0] == seen[1] == ("mine", "IMAGES", {"folds": 3})
    assert seen[2][0] == "efficientnet_lite0_offline" and seen[2][2] == {}
    code, _, err = run(capsys, "cv", "IMAGES", "--experiment", toml, "--config", toml)
    assert code == 2 and "error: give --experiment only; --config is its 0.2 name" in err


def test_the_python_spelling_config_still_works_with_a_future_warning(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(workflows, "run_experiment", lambda exp, *a, **k: seen.append(exp.name) or {"results": 1})
    toml = tmp_path / "mine.toml"
    toml.write_text("[cv]\nfolds = 5\n")
    with pytest.warns(FutureWarning, match=r"cross_validate_experiment\(config=...\) is renamed experiment="):
        assert workflows.cross_validate_experiment("IMAGES", tmp_path / "o", config=toml) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert workflows.cross_validate_experiment("IMAGES", tmp_path / "o", experiment=toml) == 1
    assert seen == ["mine", "mine"]
    with pytest.raises(DeepfeatError, match="give experiment= .* only"):
        workflows.cross_validate_experiment("IMAGES", tmp_path / "o", experiment=toml, config=toml)


def test_finetune_experiment_and_its_old_name(tmp_path, monkeypatch, capsys):
    seen = []

    def fake(**options):
        seen.append(options)
        raise _Stop

    monkeypatch.setattr(workflows, "finetune_from_options", fake)
    toml = tmp_path / "ft.toml"
    toml.write_text("[finetune]\nepochs = 2\n")
    with pytest.raises(_Stop):
        run(capsys, "finetune", "IMAGES", "-o", tmp_path / "m.pt", "--experiment", toml, "--lr", "0.5")
    with pytest.warns(FutureWarning, match="--config is renamed --experiment"), pytest.raises(_Stop):
        run(capsys, "finetune", "IMAGES", "-o", tmp_path / "m.pt", "--config", toml, "--lr", "0.5")
    assert seen[0] == seen[1] and seen[0]["experiment"] == toml and "config" not in seen[0]
    assert (seen[0]["lr"], seen[0]["epochs"], seen[0]["source"]) == (0.5, None, "IMAGES")


def test_finetune_from_options_reads_the_experiment_under_its_old_name_too(tmp_path):
    toml = tmp_path / "ft.toml"
    toml.write_text("[finetune]\nepochs = 2\n")
    # the file is read (and a misspelled option refused) before any training
    with pytest.raises(DeepfeatError, match=r"ft.toml \[finetune\]: unknown fine-tuning option\(s\) 'epoch'"):
        workflows.finetune_from_options("IMAGES", tmp_path / "m.pt", experiment=toml, epoch=3)
    with pytest.warns(FutureWarning, match=r"finetune_from_options\(config=...\) is renamed experiment="):
        with pytest.raises(DeepfeatError, match=r"ft.toml \[finetune\]: unknown fine-tuning option"):
            workflows.finetune_from_options("IMAGES", tmp_path / "m.pt", config=toml, epoch=3)


# --- few-shot: --classifier / classifiers=, and 0.2's --method / methods= ----------------------------------------
def test_fewshot_classifier_and_its_old_name_give_the_same_report(features, tmp_path):
    args = ["fewshot", str(features), "--ways", "2", "--shots", "1,3", "--queries", "4", "--episodes", "10",
            "--baseline", "none", "--seed", "2"]
    res = CliRunner().invoke(app, args + ["-o", str(tmp_path / "new"), "--classifier", "knn,prototype_euc"])
    assert res.exit_code == 0, res.output
    with pytest.warns(FutureWarning, match="--method is renamed --classifier"):
        res = CliRunner().invoke(app, args + ["-o", str(tmp_path / "old"), "--method", "knn,prototype_euc"])
    assert res.exit_code == 0, res.output
    new, old = (pd.read_csv(tmp_path / d / "fewshot.csv") for d in ("new", "old"))
    pd.testing.assert_frame_equal(new.drop(columns="episodes_per_s"), old.drop(columns="episodes_per_s"))
    assert sorted(set(new["method"])) == ["knn", "prototype_euc"]
    assert json.loads((tmp_path / "new" / "config.json").read_text())["methods"] == ["knn", "prototype_euc"]


def test_few_shot_evaluate_methods_is_the_old_name_of_classifiers(features):
    from deepfeat.features import load_features

    fs = load_features(features)
    kw = dict(ways=[2], shots=[1], queries=4, episodes=10, baseline="none", seed=1)
    new = few_shot_evaluate(fs, classifiers="knn", **kw)
    with pytest.warns(FutureWarning, match=r"methods=...\) is renamed classifiers="):
        old = few_shot_evaluate(fs, methods=["knn"], **kw)
    assert new.table["accuracy_mean"].tolist() == old.table["accuracy_mean"].tolist()
    code_err = pytest.raises(DeepfeatError, match="The 'classifiers' parameter names an unknown few-shot method")
    with code_err:
        few_shot_evaluate(fs, classifiers=["proto"], **kw)


def test_fewshot_cli_names_the_option_in_its_message(features, tmp_path, capsys):
    code, _, err = run(capsys, "fewshot", features, "-o", tmp_path / "o", "--classifier", "proto")
    assert code == 2 and err.startswith("error: --classifier names an unknown few-shot method 'proto'")


# --- n_features: a thin parse, the check is the library's --------------------------------------------------------
def test_n_features_is_parsed_not_checked(features, tmp_path, capsys):
    code, _, err = run(capsys, "cv", features, "-o", tmp_path / "r", "--n-features", "lots", "--quiet")
    assert code == 2 and "Invalid value for '--n-features': an int or 'auto'; got 'lots'" in err
    code, _, err = run(capsys, "curve", features, "-o", tmp_path / "c", "--n-features", "0", "--sizes", "3",
                       "--repeats", "2", "--baseline", "none")
    assert code == 2 and err.startswith("error: --n-features must be an int >= 1 or 'auto'; got 0")
    res = CliRunner().invoke(app, ["curve", str(features), "-o", str(tmp_path / "c2"), "--n-features", "auto",
                                   "--sizes", "3", "--repeats", "2", "--baseline", "none"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c2" / "config.json").read_text())["n_features"] == "auto"


# --- extract: the library reports skipped entries when asked, --strict is on_error='raise' ----------------------
def test_open_source_leaves_the_skipped_warning_to_a_caller_that_reports_them(tmp_path):
    for c in ("a", "b"):
        random_images(tmp_path / "src" / c, 3, size=8)
    os.mkfifo(tmp_path / "src" / "a" / "pipe.png")
    with pytest.warns(UserWarning, match="skipped, never opened"):
        open_source(tmp_path / "src")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = open_source(tmp_path / "src", warn_skipped=False)
    assert [Path(p).name for p, _ in src.skipped] == ["pipe.png"]
    assert workflows.source_lines(src)[0] == "found 6 images in 2 classes (a: 3, b: 3)"
    assert workflows.source_lines(src)[1].startswith("  skipped, never opened: ")


def test_extract_strict_refuses_skipped_entries_before_any_work(tmp_path, capsys):
    for c in ("a", "b"):
        random_images(tmp_path / "src" / c, 3, size=8)
    os.mkfifo(tmp_path / "src" / "b" / "pipe.png")
    code, _, err = run(capsys, "extract", tmp_path / "src", "-o", tmp_path / "x.features", "--model", "resnet10t",
                       "--weights", "none", "--strict", "--quiet")
    assert code == 2 and "error: --strict: 1 entr(y/ies) under" in err and "pipe.png" in err
    assert "found 6 images in 2 classes (a: 3, b: 3)" in err and not (tmp_path / "x.features").exists()
    with pytest.raises(DeepfeatError, match=r"on_error='raise': 1 entr\(y/ies\)"):
        workflows.extract_to_file(tmp_path / "src", tmp_path / "x.features", on_error="raise", log=lambda _: None,
                                  model="resnet10t", weights="none")


# --- predict: the library returns the unreadable rows -----------------------------------------------------------
def test_predict_images_returns_the_unreadable_rows(tmp_path, monkeypatch):
    from deepfeat.classifiers import model_files

    class Half:
        def predict_paths(self, paths, on_error):
            return pd.DataFrame({"path": paths, "label": ["a", None], "error": ["", "not an image"]})

    monkeypatch.setattr(model_files, "load_model", lambda path, allow_version_mismatch=False, trusted=False: Half())
    random_images(tmp_path / "imgs", 2, size=8)
    done = workflows.predict_images("m.joblib", [tmp_path / "imgs"], tmp_path / "p.csv")
    assert done.n_predicted == 1 and [Path(p).name for p, _ in done.unreadable] == ["im01.png"]
    assert done.unreadable[0][1] == "not an image" and done.check_any_predicted() is done
    assert pd.read_csv(tmp_path / "p.csv")["error"].fillna("").tolist() == ["", "not an image"]
    none = workflows.Predictions(pd.DataFrame({"path": ["x"], "label": [None], "error": ["bad"]}), tmp_path / "q")
    with pytest.raises(DeepfeatError, match="none of the 1 images could be read"):
        none.check_any_predicted()


def test_a_renamed_option_is_said_in_one_line(features, tmp_path, capsys):
    with pytest.warns(FutureWarning):  # still a FutureWarning for whoever filters them
        code, _, err = run(capsys, "fewshot", features, "-o", tmp_path / "o", "--ways", "2", "--shots", "1",
                           "--queries", "4", "--episodes", "5", "--baseline", "none", "--method", "knn")
    assert code in (0, None)
    from deepfeat.cli.messages import cli_warnings

    with cli_warnings():
        line = warnings.formatwarning("--method is renamed --classifier", FutureWarning, str(CLI / "fewshot.py"), 51)
        other = warnings.formatwarning("mRMR kept 3", UserWarning, str(ROOT / "deepfeat" / "selection" / "mrmr.py"), 9)
        sklearn = warnings.formatwarning("did not converge", UserWarning, "/site-packages/sklearn/svm/_base.py", 9)
    assert line == "deepfeat: FutureWarning: --method is renamed --classifier\n"
    # issue 23: the library's own warnings are one line too; other packages' keep Python's file:line
    assert other == "deepfeat: UserWarning: mRMR kept 3\n"
    assert sklearn.startswith("/site-packages/sklearn/svm/_base.py:9: UserWarning: did not converge")
