"""Saliency (deepfeat.explain): Grad-CAM finds a planted feature, the classifier's gradient through the features is
right, ``deepfeat explain`` works on tiny timm / DarkNet models and checkpoints, and the CV report draws overlays
(or says why not). Tiny networks, 32-64 px images: seconds."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
from deepfeat.classifiers.model_files import save_model
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.explain.gradcam import classifier_gradient, grad_cam, network_parts, top_output_gradient

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, SQUARE = 48, 10


class RedSpotNet(torch.nn.Module):
    """A timm-shaped CNN whose class 1 means "there is a red spot": channel 0 of its 12x12 feature map fires on
    red pixels only, channels 1-3 on any bright pixel (distractors, everywhere in the noisy images)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 1, 1] = torch.tensor([2.0, -1.0, -1.0])  # red minus the rest
            self.conv.weight[1:, :, 1, 1] = 0.3
            self.conv.bias.copy_(torch.tensor([-0.8, 0.0, 0.0, 0.0]))
        self.pool = torch.nn.MaxPool2d(4)
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-5.0, 0.05, 0.05, 0.05], [5.0, 0.05, 0.05, 0.05]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return self.pool(torch.relu(self.conv(x)))

    def forward_head(self, a, pre_logits=False):
        pooled = a.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)


def _spotted(rng, n):
    """Grey noise images (values in [0, 1]) with a red square at a random place; and the squares' corners."""
    x = _grey(rng, n)
    corners = rng.integers(0, SIZE - SQUARE, size=(n, 2))
    for img, (r, c) in zip(x, corners):  # as bright as the background: only its colour tells
        img[:, r:r + SQUARE, c:c + SQUARE] = np.array([1.0, 0.3, 0.3], dtype=np.float32)[:, None, None]
    return torch.from_numpy(x), corners


def _grey(rng, n):
    """Grey noise, each image at its own brightness: the red detector stays silent, the distractors vary."""
    base = rng.uniform(0.0, 0.4, size=(n, 1, 1, 1))
    return np.repeat(base + rng.uniform(0.0, 0.4, size=(n, 1, SIZE, SIZE)), 3, axis=1).astype(np.float32)


def _mass_in_square(maps, corners, margin=4):
    """Share of each map's mass inside its square, with a margin of one 4 px feature cell (the map is computed on
    12 x 12 cells and upsampled)."""
    out = []
    for m, (r, c) in zip(maps, corners):
        inside = m[max(0, r - margin):r + SQUARE + margin, max(0, c - margin):c + SQUARE + margin].sum()
        out.append(inside / m.sum())
    return np.array(out)


def test_grad_cam_of_the_network_finds_the_planted_spot():
    net = RedSpotNet().eval()
    x, corners = _spotted(np.random.default_rng(0), 8)
    maps, records = grad_cam(*network_parts(net, "logits"), x, top_output_gradient(["plain", "spot"]))
    assert maps.shape == (8, SIZE, SIZE) and maps.max() == pytest.approx(1.0)
    assert [r["predicted"] for r in records] == ["spot"] * 8
    share = _mass_in_square(maps, corners)
    # the square plus margin is at most 14 % of the image; the map puts most of its mass there (0.70-0.84 for
    # seed 0), although the distractor channels (weight 0.05 in the class score) fire all over the image
    assert share.min() > 0.6, share


def test_grad_cam_of_a_classifier_through_the_features_finds_the_planted_spot():
    """A scikit-learn classifier trained on the pooled features (spot / no spot): its decision, chained through
    the features into the network, points at the spot as well."""
    net = RedSpotNet().eval()
    rng = np.random.default_rng(1)
    spotted, corners = _spotted(rng, 24)
    plain = torch.from_numpy(_grey(rng, 24))
    with torch.no_grad():
        F = net.forward_head(net.forward_features(torch.cat([spotted, plain])), pre_logits=True).numpy()
    y = np.array(["spot"] * 24 + ["plain"] * 24)
    pipe = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())]).fit(F, y)
    maps, records = grad_cam(*network_parts(net, "pooled"), spotted[:6], classifier_gradient(pipe))
    assert [r["predicted"] for r in records] == ["spot"] * 6 and records[0]["score_kind"] == "decision"
    assert _mass_in_square(maps, corners[:6]).min() > 0.6


@pytest.mark.parametrize("score", ["decision", "probability"])
def test_classifier_gradient_is_the_linear_models_own_gradient(score):
    """For a linear model the score's gradient is known in closed form: coef / scale (decision value), and
    p (1 - p) coef / scale (probability of a binary logistic model)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)) * [1, 2, 3, 4, 5]
    y = np.where(X[:, 0] + X[:, 1] > 0, "b", "a")
    pipe = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())]).fit(X, y)
    coef = pipe[1].coef_[0] / pipe[0].scale_
    if score == "probability":  # hide decision_function: the probability is then the score
        pipe = Pipeline([("scale", pipe[0]), ("classify", _ProbaOnly(pipe[1]).fit(X, y))])
    g, records = classifier_gradient(pipe)(X[:3])
    for gi, xi, rec in zip(g, X[:3], records):
        sign = 1.0 if rec["predicted"] == "b" else -1.0
        if score == "probability":
            p = pipe.predict_proba(xi[None])[0, list(pipe.classes_).index(rec["predicted"])]
            expected = sign * p * (1 - p) * coef
        else:
            expected = sign * coef
        assert rec["score_kind"] == score
        np.testing.assert_allclose(gi, expected, rtol=1e-4, atol=1e-8)


class _ProbaOnly(ClassifierMixin, BaseEstimator):
    """A fitted logistic regression seen through predict_proba only."""

    def __init__(self, est=None):
        self.est = est

    def fit(self, X, y):
        self.classes_ = self.est.classes_
        return self

    def predict(self, X):
        return self.est.predict(X)

    def predict_proba(self, X):
        return self.est.predict_proba(X)


# --- deepfeat explain ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_smears(root / "imgs", n_per_class=6, classes=["blast", "lymphocyte"], size=40, seed=2)


@pytest.mark.parametrize("arch", ["test_efficientnet", "tiny_darknet"])
def test_explain_cli_on_a_fitted_model(cells, tmp_path, capsys, arch):
    clf = DeepFeatureClassifier(arch, weights="none", layer="pooled", image_size=32, selector="mrmr",
                                n_features=6, cache=False, progress=False).fit(cells.paths, cells.labels)
    model = save_model(clf, tmp_path / "m.joblib")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code, out, err = run(capsys, "explain", model, *cells.paths[:3], bad, "-o", tmp_path / "sal", "--quiet",
                         "--device", "cpu")
    assert code in (0, None), err
    assert "3 saliency maps, 1 unreadable" in out and "broken.png" in err
    table = pd.read_csv(tmp_path / "sal" / "saliency.csv", keep_default_na=False)
    assert list(table["path"]) == [*cells.paths[:3], str(bad)]
    assert list(table["predicted"][:3]) == list(clf.predict(cells.paths[:3]))  # the classifier's own answers
    assert table["error"][3] and not table["png"][3]
    from PIL import Image

    with Image.open(tmp_path / "sal" / table["png"][0]) as im:
        assert im.size == (64, 32)  # the network input and its overlay, side by side
    maps = np.load(tmp_path / "sal" / "saliency.npz")
    assert maps["maps"].shape == (3, 32, 32) and 0 <= maps["maps"].min() and maps["maps"].max() <= 1
    info = json.loads((tmp_path / "sal" / "explain.json").read_text())
    assert info["method"] == "grad-cam" and "classifier" in info["target"] and info["layer"] == "pooled"


def test_explain_a_featureset_network_and_a_finetuned_checkpoint(cells, tmp_path, capsys):
    from deepfeat.extraction.api import extract_features
    from deepfeat.finetuning.run import finetune

    fs = extract_features(cells, model="tiny_darknet", weights="none", image_size=32, cache=False, progress=False)
    fs.save(tmp_path / "f.npz")
    code, out, err = run(capsys, "explain", tmp_path / "f.npz", cells.paths[0], "-o", tmp_path / "a", "--quiet")
    assert code in (0, None), err
    row = pd.read_csv(tmp_path / "a" / "saliency.csv").iloc[0]
    assert row["predicted"].startswith("imagenet:") and row["score_kind"] == "logit"

    ckpt = tmp_path / "ft.pt"
    finetune(cells, model="test_efficientnet", weights="none", out=ckpt, progress=False, batch_size=8,
             image_size=32, workers=0, epochs=1)
    code, out, err = run(capsys, "explain", ckpt, cells.paths[0], "-o", tmp_path / "b", "--quiet")
    assert code in (0, None), err
    row = pd.read_csv(tmp_path / "b" / "saliency.csv").iloc[0]
    assert row["predicted"] in ("synthetic_blast", "synthetic_lymphocyte")
    assert "fine-tuned" in json.loads((tmp_path / "b" / "explain.json").read_text())["target"]


def test_explain_names_a_bad_model_file(tmp_path, capsys):
    junk = tmp_path / "model.txt"
    junk.write_text("hello")
    code, _, err = run(capsys, "explain", junk, junk, "-o", tmp_path / "x")
    assert code == 2 and "model.txt" in err and "FeatureSet" in err
    code, _, err = run(capsys, "explain", tmp_path / "absent.joblib", junk, "-o", tmp_path / "x")
    assert code == 2 and "absent.joblib" in err


# --- the CV report ---------------------------------------------------------------------------------------------
def test_cv_report_draws_overlays_beside_the_gallery(cells, tmp_path):
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.extraction.api import extract_features
    from deepfeat.reporting.report import write_report

    fs = extract_features(cells, model="test_efficientnet", weights="none", layer="pooled", image_size=32,
                          cache=False, progress=False)
    res = cross_validate(fs, classifiers=("svm",), n_features=6, folds=3, baseline="none", progress=False)
    paths = write_report(res, tmp_path / "r", features=fs, gallery_limits={"max_errors": 4})
    html = paths["report_html"].read_text()
    saliency = json.loads(paths["config"].read_text())["saliency"]
    from deepfeat.reporting.verdict import build_verdict

    p = res.predictions[res.predictions["config"] == build_verdict(res)["best"]]
    n_errors = int((p["true"] != p["pred"]).sum())
    n_correct = sum(min(2, n) for n in p[p["true"] == p["pred"]]["true"].value_counts())
    # every card of the error (capped at 4) and correct-cell galleries carries its overlay
    assert saliency["n_overlays"] == html.count('class="saliency"') == html.count('class="cell wide"') \
        == min(4, n_errors) + n_correct > 0
    assert 'id="correct-gallery"' in html and "saliency overlays (Grad-CAM" in html

    # without the FeatureSet, or when the features have no network, the report says why instead
    plain = write_report(res, tmp_path / "r2")
    assert "written without its FeatureSet" in plain["report_html"].read_text()
    import dataclasses

    moved = dataclasses.replace(res, predictions=res.predictions.assign(path=[f"/nowhere/{i}.png" for i in
                                                                               range(len(res.predictions))]))
    gone = write_report(moved, tmp_path / "r4", features=fs)
    assert "no reachable gallery image" in gone["report_html"].read_text()
    fs.meta["model_sha256"] = "0" * 64
    other = write_report(res, tmp_path / "r3", features=fs)
    text = other["report_md"].read_text()
    assert "Saliency maps were not drawn" in text and "sha256 differ" in text


@pytest.mark.parametrize("classifiers", [("svm",), ("nb", "knn")])
def test_the_reports_refit_fold_classifier_is_the_one_that_made_the_predictions(classifiers):
    """The report explains each image by its fold's classifier, refitted: it must predict exactly what the CV run
    predicted for every test image of that fold (mRMR columns from the run's recorded ranking)."""
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.explain.folds import _fold_pipeline
    from deepfeat.features import FeatureSet

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 30)).astype(np.float32)
    X[:, :3] += 1.2 * pd.factorize(pd.Series(y))[0][:, None]
    fs = FeatureSet(X, y, meta={"backbone": "synthetic"})
    res = cross_validate(fs, classifiers=classifiers, n_features=5, folds=4, baseline="none", progress=False)
    p = res.predictions
    for config in p["config"].unique():
        for fold in range(4):
            test = p[(p["config"] == config) & (p["fold"] == fold)]
            pipe = _fold_pipeline(fs, res, config, 0, fold)
            assert list(pipe.predict(fs.X[test["row"].to_numpy()])) == list(test["pred"]), (config, fold)


def test_cv_no_saliency_leaves_the_overlays_out_and_says_so(tmp_path, capsys):
    """`deepfeat cv --no-saliency`: the report draws no Grad-CAM overlay and its config says they were switched off."""
    from deepfeat.data.synthetic import make_synthetic_smears
    from deepfeat.extraction.api import extract_features

    cells = make_synthetic_smears(tmp_path / "cells", n_per_class=6, classes=["blast", "lymphocyte"], size=40, seed=2)
    fs = extract_features(cells, model="test_efficientnet", weights="none", layer="pooled", image_size=32,
                          cache=False, progress=False)
    fs.save(tmp_path / "f.features")
    code, _, err = run(capsys, "cv", tmp_path / "f.features", "-o", tmp_path / "r", "--classifier", "svm",
                       "--folds", 3, "--n-features", 6, "--baseline", "none", "--fold-cache", "none",
                       "--no-saliency", "--quiet")
    assert code == 0, err
    note = json.loads((tmp_path / "r" / "config.json").read_text())["saliency"]
    assert note["n_overlays"] == 0 and "switched off" in note["note"]
    assert 'class="saliency"' not in (tmp_path / "r" / "report.html").read_text()
