from pathlib import Path

import pytest

from deepfeat.errors import DeepfeatError
from deepfeat.experiments import Experiment

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_pipeline_parses(path):
    exp = Experiment.from_toml(path)
    assert exp.name == path.stem
    if not exp.cv:  # a system file scored by its own predictions (tests/test_related_pipelines.py)
        assert path.stem.startswith("related_") and exp.finetune["in_fold"] is True
        return
    assert exp.cv["folds"] == 10 and exp.cv["classifiers"] and set(exp.cv["classifiers"]) <= {"svm", "knn", "ann", "nb"}


def test_strongest_offline_is_fused_rotation_averaged_and_nested():
    exp = Experiment.from_toml(PIPELINES / "strongest_offline.toml")
    assert exp.features["model"].split(",") == ["tf_efficientnet_lite0", "colour_histogram"]
    assert exp.features["tta"] == "d4" and exp.features["weights"] == "imagenet"
    assert exp.cv["nested"] is True and exp.cv["inner_folds"] == 5 and not exp.finetune_enabled


def test_reference_study_settings():
    exp = Experiment.from_toml(PIPELINES / "dogan2023_darknet19_mrmr.toml")
    assert exp.features == {"model": "darknet19", "weights": "imagenet", "layer": "logits"}
    assert exp.cv["n_features"] == 521 and not exp.finetune_enabled
    full = Experiment.from_toml(PIPELINES / "dogan2023_full.toml")
    infold = Experiment.from_toml(PIPELINES / "dogan2023_infold.toml")
    assert full.finetune_enabled and not full.finetune["in_fold"] and infold.finetune["in_fold"]
    same = {k: v for k, v in full.finetune.items() if k != "in_fold"}
    assert same == {k: v for k, v in infold.finetune.items() if k != "in_fold"}
    assert (same["lr"], same["epochs"], same["batch_size"], same["weight_decay"]) == (0.01, 30, 128, 1e-4)


def test_bad_experiment_files(tmp_path):
    with pytest.raises(DeepfeatError, match="does not exist"):
        Experiment.from_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cv]\nfolds = 10\nfoldz = 3\n")
    with pytest.raises(DeepfeatError, match=r"unknown key\(s\) \['foldz'\] in \[cv\]"):
        Experiment.from_toml(bad)
    bad.write_text("[cvv]\n")
    with pytest.raises(DeepfeatError, match="unknown table"):
        Experiment.from_toml(bad)
    bad.write_text("[cv\n")
    with pytest.raises(DeepfeatError, match="not valid TOML"):
        Experiment.from_toml(bad)
