"""Grad-CAM (Selvaraju et al., ICCV 2017) of a feature network, for any score computed from its features.

A network is cut in two at the feature map ``A`` (C x h x w) its features come from: ``body(x) = A`` and
``head(A)`` = the features (``logits``: ``forward_head(A)``; ``pooled``: ``forward_head(A, pre_logits=True)``;
``stageN``: the spatial mean of the N-th stage map, which is then ``A`` itself). Given the gradient ``g`` of the
explained score with respect to those features, the chain rule gives the gradient with respect to ``A``
(``head(A)`` is differentiated by torch, one backward pass with ``g`` as its seed), and Grad-CAM is
``relu(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of that gradient over channel ``k``, upsampled to the
network input and scaled to [0, 1] per image. The body runs once without gradients: only the head is differentiated.

What ``g`` is decides what the map means (:mod:`deepfeat.explain.targets`): a one-hot of the network's own top
output (a fine-tuned network's class, or an ImageNet class), or the gradient of a shallow classifier's score
through the features (:func:`classifier_gradient`).

Written here, about 60 lines, rather than taken from the ``grad-cam`` package: the score is not a module output
but a scikit-learn pipeline applied to the features, which is one ``backward(g)`` here; and the cut point follows
timm's ``forward_features`` / ``forward_head`` split, which DarkNet19 (:mod:`deepfeat.backbones.darknet`) shares.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepfeat.errors import DeepfeatError

__all__ = ["classifier_gradient", "grad_cam", "network_parts", "top_output_gradient"]


def network_parts(net: torch.nn.Module, layer: str):
    """``(body, head)`` of ``net`` cut at the feature map the features ``layer`` come from.

    ``layer``: ``"logits"``, ``"pooled"``, ``"stageN"`` (as in extraction), or ``"output"`` (the module's own
    output, e.g. a fine-tuned network with its task head: ``net(x)`` = ``net.head(net.backbone(x))`` for a kept
    1000-way head, else the network's own classifier).
    """
    inner = getattr(net, "backbone", None)
    if layer == "output" and inner is not None and hasattr(net, "head"):
        # KeepHeadClassifier: the task head sits on the backbone's 1000 logits
        return inner.forward_features, lambda a: net.head(inner.forward_head(a))
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise DeepfeatError(f"saliency needs a timm-style network with forward_features / forward_head; "
                            f"{type(net).__name__} has none")
    if layer in ("logits", "output"):
        return net.forward_features, net.forward_head
    if layer == "pooled":
        return net.forward_features, lambda a: net.forward_head(a, pre_logits=True)
    if layer.startswith("stage") and layer[5:].isdigit():
        index = int(layer[5:]) - 1

        def body(x):
            return net.forward_intermediates(x, indices=[index], intermediates_only=True)[0]
        return body, lambda a: a.mean((2, 3))
    raise DeepfeatError(f"saliency of layer {layer!r} is not supported (logits, pooled or stageN)")


def grad_cam(body, head, x: torch.Tensor, direction) -> tuple[np.ndarray, list[dict]]:
    """Grad-CAM maps of a batch ``x`` (B, 3, H, W) for the score that ``direction`` defines.

    Parameters
    ----------
    body, head : callable
        From :func:`network_parts`.
    x : Tensor
        Preprocessed network input.
    direction : callable
        ``direction(features) -> (g, records)``: ``features`` the (B, d) float64 array ``head`` gives, ``g`` the
        (B, d) gradient of each image's explained score with respect to its features, ``records`` one dict per
        image (what was explained: predicted class, score).

    Returns
    -------
    maps : ndarray (B, H, W) float32 in [0, 1]
        All zero where no region raises the score (then ``record["flat"]`` is True).
    records : list of dict
    """
    with torch.no_grad():
        fmap = body(x)
    if fmap.ndim != 4:
        raise DeepfeatError(f"saliency needs a spatial feature map (B, C, h, w); the network gives {tuple(fmap.shape)}")
    fmap = fmap.detach().float().requires_grad_(True)
    with torch.enable_grad():
        out = head(fmap).float().flatten(1)
        g, records = direction(out.detach().cpu().double().numpy())
        out.backward(torch.as_tensor(np.asarray(g), dtype=out.dtype, device=out.device))
    alpha = fmap.grad.mean((2, 3), keepdim=True)
    cam = torch.relu((alpha * fmap).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    maps = (cam / peak).detach().cpu().numpy().astype(np.float32)
    for rec, m in zip(records, maps):
        rec["flat"] = bool(m.max() <= 0)
        rec["map_size"] = list(fmap.shape[-2:])
    return maps, records


def top_output_gradient(names=None):
    """``direction`` for the network's own prediction: the one-hot of each image's top output (Grad-CAM's
    original score, the pre-softmax logit). ``names`` maps an output index to a class name."""
    def direction(out):
        top = out.argmax(1)
        g = np.zeros_like(out)
        g[np.arange(len(out)), top] = 1.0
        return g, [{"predicted": names(int(t)) if callable(names) else (names[int(t)] if names else str(int(t))),
                    "score": float(out[i, t]), "score_kind": "logit"} for i, t in enumerate(top)]
    return direction


def _score_of(pipeline):
    """The classifier's class scores (n, K) and their kind: decision values when it has them, else probabilities."""
    if hasattr(pipeline, "decision_function"):
        def score(F_):
            s = pipeline.decision_function(F_)
            return np.c_[-s, s] if s.ndim == 1 else s
        return score, "decision"
    if hasattr(pipeline, "predict_proba"):
        return pipeline.predict_proba, "probability"
    raise DeepfeatError(f"{type(pipeline).__name__} has neither decision_function nor predict_proba: no score "
                        "to explain")


def classifier_gradient(pipeline, step: float = 1e-3):
    """``direction`` for a fitted scikit-learn pipeline on the features: the gradient of its score for the class
    it predicts, by central differences.

    The step of feature ``j`` is ``step`` times its training standard deviation (the pipeline's ``scale``
    StandardScaler, as :func:`deepfeat.classifiers.presets.build_pipeline` makes it). Only the columns the
    pipeline's ``select`` step keeps are perturbed (the others have no effect), all in one batched call: 2 x
    (kept features) rows per image. A classifier whose score is piecewise constant (k-NN) has zero gradient almost
    everywhere: its maps come out flat, and say so.
    """
    score, kind = _score_of(pipeline)
    steps = getattr(pipeline, "named_steps", {})
    scale = getattr(steps.get("scale"), "scale_", None)
    select = steps.get("select")
    classes = [str(c) for c in pipeline.classes_]

    def direction(out):
        n, d = out.shape
        cols = np.flatnonzero(select.get_support()) if select is not None else np.arange(d)
        h = step * (np.asarray(scale, dtype=float)[cols] if scale is not None
                    else np.maximum(1.0, np.abs(out[:, cols]).mean(0)))
        index = {c: k for k, c in enumerate(classes)}
        pred = [index[str(c)] for c in pipeline.predict(out.astype(np.float32))]
        g, records = np.zeros_like(out), []
        for i in range(n):
            probe = np.repeat(out[i:i + 1], 2 * len(cols), axis=0)
            probe[np.arange(len(cols)), cols] += h
            probe[len(cols) + np.arange(len(cols)), cols] -= h
            s = score(probe.astype(np.float32))[:, pred[i]]
            g[i, cols] = (s[:len(cols)] - s[len(cols):]) / (2 * h)
            records.append({"predicted": classes[pred[i]], "score": float(score(out[i:i + 1].astype(np.float32))
                                                                          [0, pred[i]]), "score_kind": kind})
        return g, records
    return direction
