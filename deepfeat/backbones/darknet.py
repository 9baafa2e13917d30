"""DarkNet19 and Tiny Darknet (pjreddie's ``darknet19.cfg`` and ``tiny.cfg``) as timm models.

Importing this module registers ``darknet19`` and ``tiny_darknet`` with timm, so ``timm.create_model("darknet19")``
works. The layer lists below are the ``[convolutional]`` / ``[maxpool]`` sections of the two cfg files, in order;
``tests/test_darknet.py`` parses the original cfg files and checks them against these lists.

Darknet details reproduced here (``src/convolutional_layer.c``, ``src/maxpool_layer.c`` of pjreddie/darknet):

- ``pad=1`` means padding ``size // 2`` (so 1x1 convolutions are unpadded).
- A batch-normalised convolution has no bias of its own; the ``.weights`` "biases" are the BN shift (beta).
- ``activation=leaky`` is ``x if x > 0 else 0.1 * x``.
- ``[maxpool] size=2 stride=2`` pads by ``size - 1`` on the bottom/right, i.e. the output is ``ceil(n / 2)``; we use
  ``MaxPool2d(2, 2, ceil_mode=True)``, which is the same for every input size (and plain halving for even sizes).
- The classifier is a 1x1 convolution (with bias) to 1000 channels followed by ``[avgpool]`` (global mean).

**Head and ``pre_logits``.** Because a 1x1 convolution is linear, ``mean(conv(x)) == conv(mean(x))``. The head
therefore pools first and applies the 1x1 convolution to the pooled vector, exactly like timm's
``pool -> fc`` heads: ``forward_head(x, pre_logits=True)`` returns the global-average-pooled input of the classifier
convolution (1024-d for DarkNet19, 128-d for Tiny Darknet), and the logits are the classifier applied to that
vector. They equal darknet's ``[avgpool]`` output up to float rounding (about 1e-6). The classifier keeps darknet's
shape ``(num_classes, C, 1, 1)`` so ``.weights`` files map onto it without reshaping.

**Batch norm.** Darknet's CPU inference computes ``(x - mean) / (sqrt(var) + 1e-6)``; PyTorch computes
``(x - mean) / sqrt(var + 1e-5)`` (as does darknet's own GPU path). The default is PyTorch's ``BatchNorm2d``
(eps=1e-5): it is what fine-tuning, AMP and every timm tool expect, and it keeps Tiny Darknet's logits within about
6e-3 of darknet's (README of the reference vectors). ``darknet_bn=True`` swaps in :class:`DarknetBatchNorm2d`, whose
*inference* uses darknet's CPU formula and matches the darknet program to about 2e-5; its parameters and state-dict
keys are the same, so weights move freely between the two modes.
"""
from __future__ import annotations

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq
from torch import nn

from deepfeat.locations import DARKNET19_URL, TINY_DARKNET_URL

__all__ = ["Darknet", "DarknetBatchNorm2d", "ConvBnLeaky", "DARKNET19_LAYERS", "TINY_DARKNET_LAYERS"]

# ("C", filters, size) = [convolutional] batch_normalize=1 stride=1 pad=1 activation=leaky; "M" = [maxpool] 2/2.
# The final 1x1 classifier convolution (filters=1000, linear, with bias) is the head, not listed here.
DARKNET19_LAYERS = (
    ("C", 32, 3), "M",
    ("C", 64, 3), "M",
    ("C", 128, 3), ("C", 64, 1), ("C", 128, 3), "M",
    ("C", 256, 3), ("C", 128, 1), ("C", 256, 3), "M",
    ("C", 512, 3), ("C", 256, 1), ("C", 512, 3), ("C", 256, 1), ("C", 512, 3), "M",
    ("C", 1024, 3), ("C", 512, 1), ("C", 1024, 3), ("C", 512, 1), ("C", 1024, 3),
)
TINY_DARKNET_LAYERS = (
    ("C", 16, 3), "M",
    ("C", 32, 3), "M",
    ("C", 16, 1), ("C", 128, 3), ("C", 16, 1), ("C", 128, 3), "M",
    ("C", 32, 1), ("C", 256, 3), ("C", 32, 1), ("C", 256, 3), "M",
    ("C", 64, 1), ("C", 512, 3), ("C", 64, 1), ("C", 512, 3),
    ("C", 128, 1),
)

# Darknet's CPU normalize_cpu(): (x - mean) / (sqrt(var) + .000001f)
_DARKNET_BN_EPS = 1e-6


class DarknetBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose inference uses darknet's CPU formula ``(x - mean) / (sqrt(var) + 1e-6)``.

    In training mode (batch statistics) it is an ordinary ``BatchNorm2d``; only the use of the running statistics
    differs. Same parameters, buffers and state-dict keys as ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.track_running_stats:
            return super().forward(x)
        scale = self.weight / (self.running_var.sqrt() + _DARKNET_BN_EPS)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class ConvBnLeaky(nn.Module):
    """Darknet ``[convolutional]`` with ``batch_normalize=1``, ``stride=1``, ``pad=1``, ``activation=leaky``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, *, darknet_bn: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=1, padding=kernel_size // 2, bias=False)
        self.bn = (DarknetBatchNorm2d if darknet_bn else nn.BatchNorm2d)(out_chs)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Darknet(nn.Module):
    """A plain Darknet classifier chain (conv-BN-leaky and max-pools, then a 1x1 conv head) with timm's interface.

    Parameters
    ----------
    layers : sequence
        ``("C", filters, size)`` for a convolution, ``"M"`` for a 2x2/2 max-pool, in cfg order.
    num_classes : int, default=1000
        Outputs of the 1x1 classifier convolution; 0 leaves no classifier (``forward`` returns pooled features).
    in_chans : int, default=3
    drop_rate : float, default=0.0
        Dropout on the pooled features before the classifier (darknet's cfgs have none; for fine-tuning).
    global_pool : {"avg"}, default="avg"
        Darknet's ``[avgpool]``; other pools are refused rather than silently used.
    darknet_bn : bool, default=False
        Use :class:`DarknetBatchNorm2d` (darknet's CPU inference formula) instead of PyTorch's ``BatchNorm2d``.
    """

    def __init__(self, layers, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", darknet_bn: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.darknet_bn = darknet_bn
        self.grad_checkpointing = False
        modules, chs, reduction, feature_info = [], in_chans, 1, []
        for spec in layers:
            if spec == "M":
                modules.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                reduction *= 2
            else:
                _, filters, size = spec
                modules.append(ConvBnLeaky(chs, filters, size, darknet_bn=darknet_bn))
                chs = filters
                feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"features.{len(modules) - 1}"))
        self.features = nn.Sequential(*modules)
        self.num_features = self.head_hidden_size = chs
        self.feature_info = feature_info
        self._set_head(num_classes, global_pool)

    def _set_head(self, num_classes: int, global_pool: str | None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"Darknet models only support global_pool='avg' (darknet's [avgpool]); got {global_pool!r}")
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=False)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.classifier = (nn.Conv2d(self.num_features, num_classes, 1, bias=True) if num_classes > 0
                           else nn.Identity())
        self.num_classes = num_classes

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the 1x1 classifier convolution by a freshly initialised one with ``num_classes`` outputs."""
        self._set_head(num_classes, global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^features\.0\.", blocks=r"^features\.(\d+)")

    def darknet_layers(self):
        """Yield ``(conv, bn)`` in ``.weights`` file order; ``bn`` is None for the (biased) classifier conv."""
        for module in self.features:
            if isinstance(module, ConvBnLeaky):
                yield module.conv, module.bn
        if isinstance(self.classifier, nn.Conv2d):
            yield self.classifier, None

    def load_pretrained(self, path) -> None:
        """Load a Darknet ``.weights`` file (timm calls this for ``pretrained=True``; see ``custom_load``)."""
        from deepfeat.backbones.darknet_io import load_darknet_weights

        load_darknet_weights(self, path)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.features, x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global-average-pool the feature map, then (unless ``pre_logits``) apply the 1x1 classifier conv."""
        x = self.head_drop(self.global_pool(x))
        if pre_logits:
            return x.flatten(1)
        return self.classifier(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(url: str = "", **kwargs) -> dict:
    # Darknet's own preprocessing: RGB / 255, no mean/std, square input at the network size, bilinear.
    return {
        "url": url, "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear",
        "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "first_conv": "features.0.conv", "classifier": "classifier",
        # the url is a darknet .weights file: timm downloads it and calls Darknet.load_pretrained
        "custom_load": True, "license": "public domain (darknet LICENSE)", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "darknet19.pjreddie_in1k": _cfg(url=DARKNET19_URL, origin_url="https://pjreddie.com/darknet/imagenet/"),
    "tiny_darknet.pjreddie_in1k": _cfg(url=TINY_DARKNET_URL, pool_size=(14, 14),
                                       origin_url="https://pjreddie.com/darknet/tiny-darknet/"),
})


def _create(variant: str, layers, pretrained: bool, **kwargs) -> Darknet:
    return build_model_with_cfg(Darknet, variant, pretrained, layers=layers,
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


@register_model
def darknet19(pretrained: bool = False, **kwargs) -> Darknet:
    """DarkNet19 classifier (pjreddie ``cfg/darknet19.cfg``): 19 conv layers, 5 max-pools, run at 224x224."""
    return _create("darknet19", DARKNET19_LAYERS, pretrained, **kwargs)


@register_model
def tiny_darknet(pretrained: bool = False, **kwargs) -> Darknet:
    """Tiny Darknet classifier (pjreddie ``cfg/tiny.cfg``): 16 conv layers, 4 max-pools, 224x224."""
    return _create("tiny_darknet", TINY_DARKNET_LAYERS, pretrained, **kwargs)
