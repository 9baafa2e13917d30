"""The command line end to end on tiny inputs: exit codes, messages, and the files each command writes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run
from PIL import Image

from deepfeat import FeatureSet, load_features
from deepfeat.cli import main


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of 12 tiny images that differ in colour, so features separate them."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for label, base in (("blast", (150, 60, 160)), ("normal", (200, 150, 140))):
        (root / label).mkdir()
        for i in range(12):
            pixels = np.clip(rng.normal(base, 25, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i}.png")
    return root


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    rng = np.random.default_rng(1)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 30)) + (np.arange(60)[:, None] // 20) * 0.8
    path = tmp_path_factory.mktemp("fs") / "syn.features"
    FeatureSet(X, y, meta={"backbone": "synthetic"}).save(path)
    return path


def test_help_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("extract", "cv", "fit", "predict", "finetune", "demo", "run"):
        assert command in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("deepfeat ")


def test_unknown_command_is_a_usage_error(capsys):
    code, _, err = run(capsys, "bogus")
    assert code == 2 and "No such command" in err


def test_extract_writes_a_featureset_in_input_order(tmp_path, capsys, image_folder):
    out = tmp_path / "f.features"
    code, stdout, err = run(capsys, "extract", str(image_folder), "-o", str(out), "--model", "resnet10t",
                            "--weights", "none", "--batch-size", "5", "--workers", "0", "--quiet")
    assert code == 0, err
    assert "24 images x 1000 features, cache hits 0/24, skipped 0" in stdout
    fs = load_features(out)
    assert fs.X.shape[0] == 24 and fs.meta["backbone"] == "resnet10t" and fs.meta["weights"] == "none"
    assert list(fs.paths) == sorted(fs.paths) and set(fs.y) == {"blast", "normal"}


def test_extract_lists_bad_images_and_strict_stops(tmp_path, capsys, image_folder):
    folder = tmp_path / "imgs"
    for path in sorted(image_folder.rglob("*.png"))[:4]:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    (folder / "blast" / "zero.JPG").write_bytes(b"")
    out = tmp_path / "f.features"
    args = ["extract", str(folder), "-o", str(out), "--model", "resnet10t", "--weights", "none", "--workers", "0",
            "--quiet", "--cache-dir", str(tmp_path / "cache")]
    code, stdout, err = run(capsys, *args)
    assert code == 0 and "4 images" in stdout and "skipped 1" in stdout and "zero.JPG" in err
    failed = pd.read_csv(tmp_path / "f.features.failed.csv")
    assert list(failed.columns) == ["path", "reason"] and failed["path"].str.endswith("zero.JPG").all()
    assert any((tmp_path / "cache").rglob("*.f32")), "--cache-dir is used"
    code, stdout, err = run(capsys, *args, "--strict")
    assert code == 2 and "zero.JPG" in err and "could not be read" in err
    code, stdout, _ = run(capsys, *args)
    assert "cache hits 4/5" in stdout


def test_extract_darknet19_explains_how_to_get_weights(tmp_path, capsys, image_folder):
    code, _, err = run(capsys, "extract", str(image_folder), "-o", str(tmp_path / "x.features"), "--model",
                       "darknet19", "--quiet")
    assert code == 2 and "darknet19.weights" in err and "--weights" in err


def test_extract_reports_missing_folder(tmp_path, capsys):
    code, _, err = run(capsys, "extract", str(tmp_path / "nope"), "-o", str(tmp_path / "x.features"),
                       "--weights", "none", "--quiet")
    assert code == 2 and "nope" in err and err.startswith("error:")


def test_cv_writes_every_report_file(tmp_path, capsys, feature_file):
    out = tmp_path / "report"
    code, stdout, err = run(capsys, "cv", str(feature_file), "-o", str(out), "--classifier", "knn",
                            "--classifier", "nb", "--n-features", "5", "--folds", "3", "--quiet")
    assert code == 0, err
    for name in ("results.csv", "per_fold.csv", "per_class.csv", "predictions.csv", "config.json", "report.md",
                 "report.html"):
        assert (out / name).is_file(), name
    assert "knn" in stdout and "report.html" in stdout
    results = pd.read_csv(out / "results.csv")
    # 2 classifiers x {none, mrmr} + the majority baseline (no image paths here, so no colour-histogram row)
    assert len(results) == 5 and results["classifier"].tolist().count("baseline-majority") == 1


def test_cv_rejects_a_file_that_is_not_a_featureset(tmp_path, capsys):
    bad = tmp_path / "bad.features"
    bad.write_bytes(b"garbage")
    code, _, err = run(capsys, "cv", str(bad), "-o", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "bad.features" in err


@pytest.fixture(scope="module")
def lite0_features(tmp_path_factory, image_folder):
    """Real ImageNet weights (shipped in a package): a model trained on them can be rebuilt at predict time."""
    features = tmp_path_factory.mktemp("lite0") / "f.features"
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", str(image_folder), "-o", str(features), "--model", "tf_efficientnet_lite0", "--workers", "0",
              "--quiet"])
    assert exit_info.value.code == 0
    return features


def test_fit_then_predict_lists_a_corrupt_image(tmp_path, capsys, image_folder, lite0_features):
    features = lite0_features
    model = tmp_path / "m.joblib"
    code, stdout, err = run(capsys, "fit", str(features), "-o", str(model), "--classifier", "knn")
    assert code == 0, err
    new = tmp_path / "new"
    new.mkdir()
    for path in sorted(image_folder.rglob("*.png"))[::6]:
        (new / path.name).write_bytes(path.read_bytes())
    (new / "broken.png").write_bytes(b"\x89PNG not really")
    preds = tmp_path / "p.csv"
    code, stdout, err = run(capsys, "predict", str(model), str(new), "-o", str(preds))
    assert code == 0, err
    table = pd.read_csv(preds)
    assert len(table) == 5 and "broken.png" in err
    ok = table[table["path"].str.endswith(".png") & ~table["path"].str.endswith("broken.png")]
    assert set(ok["label"]) <= {"blast", "normal"}
    assert (ok["path"].str.contains("blast") == (ok["label"] == "blast")).mean() >= 0.75


def test_predict_refuses_a_tampered_model(tmp_path, capsys, image_folder, lite0_features):
    model = tmp_path / "m.joblib"
    assert run(capsys, "fit", str(lite0_features), "-o", str(model), "--classifier", "nb")[0] == 0
    with open(model, "ab") as fh:
        fh.write(b"tampered")
    code, _, err = run(capsys, "predict", str(model), str(image_folder), "-o", str(tmp_path / "p.csv"))
    assert code == 2 and "sha256" in err.lower()


@pytest.mark.parametrize("kind, message", [
    ("one", "at least 2 classes"), ("nan", "1 of 30 feature rows contain NaN or inf"), ("none", "no labels")])
def test_fit_and_cv_refuse_untrainable_featuresets(tmp_path, capsys, kind, message):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    y = {"one": ["a"] * 30, "nan": ["a", "b"] * 15, "none": None}[kind]
    if kind == "nan":
        X[3, 2] = np.nan
    path = tmp_path / f"{kind}.features"
    FeatureSet(X, y, meta={"backbone": "tf_efficientnet_lite0", "weights": "imagenet", "layer": "logits"}).save(path)
    for argv in (("fit", str(path), "-o", str(tmp_path / "m.joblib")), ("cv", str(path), "-o", str(tmp_path / "r"))):
        code, _, err = run(capsys, *argv, "--quiet") if argv[0] == "cv" else run(capsys, *argv)
        assert code == 2 and message in err, (argv[0], err)
    assert not (tmp_path / "m.joblib").exists()


def test_cv_too_small_class_names_the_folds_to_use(tmp_path, capsys):
    path = tmp_path / "small.features"
    FeatureSet(np.random.default_rng(0).normal(size=(30, 8)), ["a"] * 27 + ["b"] * 3).save(path)
    code, _, err = run(capsys, "cv", str(path), "-o", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "Use --folds 3" in err


def test_demo_runs_offline_end_to_end(tmp_path, capsys):
    """The quick start's main job, made small: the embedded real cells, real EfficientNet-Lite0 weights, cv,
    report; it says what the data is (normal blood cells, not leukemia) and credits the PBC dataset."""
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "demo", "-o", str(out), "--n-per-class", "10", "--folds", "5", "--quiet")
    assert code == 0, err
    assert "80 REAL cell images" in stdout and "not leukemia" in stdout and "SYNTHETIC" not in stdout
    assert (out / "report.html").is_file() and (out / "features.npz").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "CC BY 4.0" in html and "Acevedo" in html and "not leukemia" in html.replace("\n", " ")
    assert sorted(p.name for p in (out / "images").iterdir() if p.is_dir()) == [
        "basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
    summary = pd.read_csv(out / "results.csv")
    assert {"svm+none", "svm+mrmr", "baseline-majority"} <= set(summary["config"])
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["experiment"]["name"] == "demo"
    assert config["saliency"]["n_overlays"] > 0  # Grad-CAM overlays beside the gallery's cells
    assert load_features(out / "features.npz").meta["weights_source"] == "package"


def test_demo_export_writes_the_sample_and_refuses_too_many_per_class(tmp_path, capsys):
    code, stdout, err = run(capsys, "demo", "--export", str(tmp_path / "cells"))
    assert code == 0, err
    assert "wrote 320 images in 8 class folders" in stdout and "CC BY 4.0" in stdout
    assert len(list((tmp_path / "cells").glob("*/*.jpg"))) == 320
    assert not (tmp_path / "deepfeat-demo").exists()
    code, _, err = run(capsys, "demo", "-o", str(tmp_path / "d"), "--n-per-class", "41", "--quiet")
    assert code == 2 and "--n-per-class" in err and "40 images per class" in err and "--synthetic" in err


def test_finetune_extract_cv_reports_the_finetuning_overlap(tmp_path, capsys, image_folder):
    """The study's leak made visible: a backbone fine-tuned on the CV images is counted in the report."""
    ckpt = tmp_path / "ft.pt"
    code, stdout, err = run(capsys, "finetune", str(image_folder), "-o", str(ckpt), "--model", "test_efficientnet",
                            "--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                            "--workers", "0", "--quiet")
    assert code == 0, err
    assert ckpt.is_file() and (tmp_path / "ft.last.pt").is_file() and (tmp_path / "ft.curves.csv").is_file()
    assert "accuracy" in stdout.lower()
    assert f"report: {tmp_path / 'ft.report.html'}" in stdout and (tmp_path / "ft.report.md").is_file()
    # the network end to end beside SVMs on fine-tuned and frozen features, same validation images
    line = next(x for x in stdout.splitlines() if x.startswith("same ") and "validation images" in x)
    assert "network" in line and "SVM on its logits" in line and "frozen network's" in line
    md = (tmp_path / "ft.report.md").read_text()
    assert "validation images, three ways" in md and "optimizer steps in all" in md
    features = tmp_path / "ft.features"
    code, _, err = run(capsys, "extract", str(image_folder), "-o", str(features), "--model", "test_efficientnet",
                       "--weights", str(ckpt), "--image-size", "32", "--workers", "0", "--quiet")
    assert code == 0, err
    assert len(load_features(features).meta["finetune"]["train_sha256"]) > 0
    out = tmp_path / "report"
    code, stdout, err = run(capsys, "cv", str(features), "-o", str(out), "--classifier", "knn", "--select", "none",
                            "--folds", "3", "--quiet")
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert report.count("the backbone was fine-tuned on 17 of the 24 CV images (and validated on 7)") == 1


def test_cv_with_finetune_runs_in_fold(tmp_path, capsys, image_folder):
    experiment = tmp_path / "infold.toml"
    experiment.write_text(
        '[finetune]\nepochs = 1\nbatch_size = 8\nimage_size = 32\nworkers = 0\n'
        '[features]\nmodel = "test_efficientnet"\nweights = "none"\n'
        '[cv]\nclassifiers = ["knn"]\nselections = ["none"]\nfolds = 3\n')
    out = tmp_path / "infold"
    code, stdout, err = run(capsys, "cv", str(image_folder), "--finetune", str(experiment), "-o", str(out),
                            "--quiet")
    assert code == 0, err
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["finetune"]["in_fold"] is True and len(config["finetune"]["folds"]) == 3
    assert config["finetune"]["config"]["recipe"] == "transfer"  # the [finetune] table names none: the default
    report = (out / "report.md").read_text()
    assert "fine-tuned network, end to end" in report and "network+end-to-end" in report


def test_run_reference_pipeline_with_a_weights_file(tmp_path, capsys, darknet_ref):
    """dogan2023 pipeline end to end on a Taleqani-shaped folder, DarkNet19 weights passed as a file."""
    import shutil

    root = tmp_path / "ALL" / "Original"
    rng = np.random.default_rng(0)
    for k, name in enumerate(("Benign", "Early", "Pre", "Pro")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal((60 * k, 100, 200 - 40 * k), 30, size=(24, 24, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}_{i}.jpg")
    weights = tmp_path / "tiny.weights"
    shutil.copy(darknet_ref / "tiny.weights", weights)
    experiment = tmp_path / "exp.toml"
    reference = (Path(__file__).resolve().parents[1] / "pipelines" / "dogan2023_darknet19_mrmr.toml").read_text()
    experiment.write_text(reference.replace('model = "darknet19"', 'model = "tiny_darknet"')
                          .replace("folds = 10", "folds = 5").replace("n_features = 521", "n_features = 50"))
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "run", str(experiment), str(root.parent), "-o", str(out), "--weights",
                            str(weights), "--quiet")
    assert code == 0, err
    summary = pd.read_csv(out / "results.csv").set_index("config")
    assert {"svm+none", "svm+mrmr", "nb+mrmr"} <= set(summary.index)
    classes = __import__("json").loads((out / "config.json").read_text())["classes"]
    assert classes == ["Benign", "Early Pre-B", "Pre-B", "Pro-B"]
