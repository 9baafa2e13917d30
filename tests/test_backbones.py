"""Backbone names, the registry, and the data config each model asks for."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm

import deepfeat
from deepfeat.backbones import (
    canonical_name,
    create_backbone,
    list_backbones,
    resolve_data_config,
    weights_cache_dir,
)
from deepfeat.errors import DeepfeatError


def test_darknets_are_registered_with_timm():
    assert {"darknet19", "tiny_darknet"} <= set(timm.list_models("*darknet*"))
    assert timm.create_model("darknet19").pretrained_cfg["architecture"] == "darknet19"


def test_suggested_names_are_all_real():
    suggested = list_backbones()
    assert {"darknet19", "tiny_darknet", "resnet50", "vgg16", "vgg19", "inception_v3", "efficientnet_b3",
            "tf_efficientnet_lite0"} <= set(suggested)
    assert all(timm.is_model(name) and note for name, note in suggested.items())


def test_aliases_and_unknown_names():
    assert canonical_name("xception") == "legacy_xception"
    assert canonical_name("resnet50") == "resnet50"
    with pytest.raises(DeepfeatError, match=r"unknown model 'resnt50'; did you mean resnet50"):
        canonical_name("resnt50")
    with pytest.raises(DeepfeatError, match=r"unknown model 'darknet91'; did you mean [^?]*darknet19"):
        create_backbone("darknet91", "none")
    with pytest.raises(DeepfeatError, match=r"unknown model 'zzzzqqq'[.] Any model name of timm"):
        canonical_name("zzzzqqq")
    with pytest.raises(DeepfeatError, match="non-empty string"):
        canonical_name("")


def test_darknet_data_config_is_darknets_own():
    cfg = resolve_data_config(create_backbone("darknet19", "none"))
    assert cfg == {"input_size": (3, 224, 224), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "crop_pct": 1.0,
                   "interpolation": "bilinear", "crop_mode": "center", "darknet": True}
    assert resolve_data_config(create_backbone("tiny_darknet", "none"))["darknet"] is True


def test_timm_data_config_is_timms():
    model = create_backbone("resnet18", "none")
    cfg = resolve_data_config(model)
    assert cfg == timm.data.resolve_model_data_config(model) and "darknet" not in cfg
    assert set(cfg) == {"input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode"}


def test_top_level_lazy_name_and_info_for_alias():
    model = deepfeat.create_backbone("xception", "none", num_classes=3)
    assert model.deepfeat_info["backbone"] == "legacy_xception" and model.num_classes == 3


def test_weights_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPFEAT_CACHE_DIR", str(tmp_path))
    assert weights_cache_dir() == tmp_path / "weights"
    monkeypatch.delenv("DEEPFEAT_CACHE_DIR")
    assert weights_cache_dir() == Path.home() / ".cache" / "deepfeat" / "weights"
