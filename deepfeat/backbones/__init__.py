"""Backbones: any timm model by name, plus DarkNet19 and Tiny Darknet, with weights resolved offline first.

Importing this package registers ``darknet19`` and ``tiny_darknet`` with timm, and the related systems' networks
``deepfeat_small_cnn``, ``hybrid_lite012`` and ``hybrid_vgg16_inception_v3_xception``. Modules: ``darknet`` (the
two networks), ``related`` (the small CNN and the multi-backbone hybrids), ``darknet_io`` (Darknet ``.weights``
files), ``registry`` (names, data configs), ``weight_files`` (loading a weights file), ``weights``
(``create_backbone`` and the ``"imagenet"`` sources).
"""
from __future__ import annotations

from deepfeat.backbones import darknet_io
from deepfeat.backbones.darknet import Darknet
from deepfeat.backbones.related import HybridNet, SmallCNN
from deepfeat.backbones.registry import (
           canonical_name,
           list_backbones,
           resolve_data_config,
)
from deepfeat.backbones.weights import create_backbone, weights_cache_dir

__all__ = ["create_backbone", "resolve_data_config", "list_backbones", "canonical_name", "weights_cache_dir",
           "Darknet", "HybridNet", "SmallCNN", "darknet_io"]
