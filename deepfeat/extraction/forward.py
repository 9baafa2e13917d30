"""The forward pass of extraction: every requested layer of one model from ONE pass, averaged over TTA views.

:func:`forward_layers` is the only place where extraction runs a network (the engine, :mod:`deepfeat.extraction.engine`,
calls it for every batch and for the 'auto' precision check); a faster way to run the same network belongs here.

Layers: ``logits`` (``forward_head(f)``), ``pooled`` (``forward_head(f, pre_logits=True)``) and ``stageN``: the
N-th feature map of timm's ``forward_intermediates`` (N = 1 .. ``len(model.feature_info)``; 5 for the
EfficientNets and ResNets: strides 2, 4, 8, 16, 32), global-average-pooled to one value per channel. ``f`` is
``forward_features(x)``, or the final output of ``forward_intermediates`` when a stage is asked for (timm
computes the same tensor there; checked bit-identical for tf_efficientnet_lite0, resnet18, test_efficientnet).

TTA views act on the preprocessed tensor ``x`` (B, C, H, W) and go through the network as ONE batch of V * B:
``flip`` = {identity, horizontal flip} (V = 2); ``d4`` = the 8 symmetries of the square: quarter turns
k = 0..3 of ``x`` and of its horizontal flip (V = 8, needs H == W). Each image's features (every layer) are the
mean over its V views. Each (layer, tta) is its own cache entry (``model_key(..., tta=...)``). The plain
request (one of logits / pooled, no TTA) runs exactly release 0.1's ops: ``model(x)``, or
``forward_head(forward_features(x), pre_logits=True)``.

``compiled``: a :class:`deepfeat.extraction.runtime.CompiledForward` of the same network (fp32 on the CPU, layers
logits / pooled), run on the same views in place of eager torch; the engine only passes one that
:func:`deepfeat.extraction.runtime.check_runtime` kept.
"""
from __future__ import annotations

import torch

from deepfeat.errors import DeepfeatError
from deepfeat.extraction.device import autocast

__all__ = ["TTA_VIEWS", "forward_layers", "tta_views"]

TTA_VIEWS = {"none": 1, "flip": 2, "d4": 8}


def tta_views(x: torch.Tensor, tta: str) -> torch.Tensor:
    """The views of batch ``x`` stacked view-major, (V * B, C, H, W): rows v * B .. v * B + B - 1 are view v."""
    if tta == "none":
        return x
    if tta == "flip":
        return torch.cat([x, x.flip(-1)])
    if tta == "d4":
        if x.shape[-1] != x.shape[-2]:
            raise DeepfeatError(f"tta='d4' needs a square network input; got {tuple(x.shape[-2:])}. Use tta='flip' "
                                "or a square image_size")
        return torch.cat([torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)])
    raise DeepfeatError(f"The 'tta' parameter must be one of {list(TTA_VIEWS)}. Got {tta!r} instead.")


def forward_layers(net, x: torch.Tensor, layers, precision: str, device: torch.device, tta: str = "none",
                   compiled=None) -> dict:
    """``{layer: (B, d) float32 ndarray}`` for every layer in ``layers``, from one forward pass of the views."""
    b = x.shape[0]
    v = tta_views(x, tta)
    n_views = v.shape[0] // b
    if compiled is not None:
        return {layer: _view_mean(t, n_views, b) for layer, t in compiled(v).items()}
    stages = sorted({int(layer[5:]) for layer in layers if layer.startswith("stage")})
    out = {}
    with torch.inference_mode(), autocast(device, precision):
        pooled_stage = {}
        if stages:
            final, inter = net.forward_intermediates(v, indices=[s - 1 for s in stages])
            pooled_stage = {s: t.float().mean((2, 3)) for s, t in zip(stages, inter)}
        elif list(layers) == ["logits"]:
            final = None  # exactly the single-layer path: model(x)
        else:
            final = net.forward_features(v)
        for layer in layers:
            if layer == "logits":
                t = net(v) if final is None else net.forward_head(final)
            elif layer == "pooled":
                t = net.forward_head(final, pre_logits=True)
            else:
                t = pooled_stage[int(layer[5:])]
            out[layer] = _view_mean(t, n_views, b)
    return out


def _view_mean(t: torch.Tensor, n_views: int, b: int):
    """(V * B, ...) outputs -> (B, d) float32 ndarray: each image's mean over its V views."""
    t = t.float().flatten(1)
    if n_views > 1:
        t = t.reshape(n_views, b, -1).mean(0)
    return t.cpu().numpy()
