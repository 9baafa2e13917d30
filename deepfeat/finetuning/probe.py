"""The linear probe of LP-FT (Kumar et al., ICLR 2022): fit the new head on the frozen network's outputs first.

Fine-tuning a pretrained network with a randomly initialised head sends large, random gradients into the
pretrained features during the first steps and distorts them. LP-FT first fits the head alone, to convergence,
on the frozen network's outputs, then fine-tunes everything from there. The outputs are computed once per
training image (one forward pass, eval mode, no augmentation), so the probe costs one pass over the training set;
the head is then fitted by full-batch L-BFGS on the cross-entropy (with the run's label smoothing and class
weights) plus an L2 penalty, i.e. a multinomial logistic regression.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from deepfeat.finetuning.training import backbone_of

__all__ = ["fit_linear_head", "probe_inputs"]

PROBE_L2 = 1e-3  # per-sample L2 on the head's weights: keeps the probe from saturating on separable data
PROBE_MAX_ITER = 200


def _head_and_body(net: nn.Module, head: str):
    """(the linear layer the probe fits, a function from network input to that layer's input)."""
    if head == "keep1000":
        return net.head, net.backbone
    return net.get_classifier(), lambda x: net.forward_head(net.forward_features(x), pre_logits=True)


@torch.no_grad()
def probe_inputs(net: nn.Module, head: str, batches, *, suffix=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's inputs for every training image, in eval mode: ``batches`` yields (x, y). With ``suffix``
    (a :class:`deepfeat.finetuning.trunk.SuffixClassifier`), ``x`` are cached trunk activations."""
    was = net.training
    net.eval()
    feats, targets = [], []
    try:
        for x, y in batches:
            if suffix is not None:
                body = backbone_of(net, head)
                h = suffix.stages(x)
                f = body.forward_head(h) if head == "keep1000" else body.forward_head(h, pre_logits=True)
            else:
                f = _head_and_body(net, head)[1](x)
            feats.append(f.float().cpu())
            targets.append(y.cpu())
    finally:
        net.train(was)
    return torch.cat(feats), torch.cat(targets)


def fit_linear_head(net: nn.Module, head: str, F: torch.Tensor, y: torch.Tensor, *, label_smoothing: float = 0.0,
                    class_weight: torch.Tensor | None = None, l2: float = PROBE_L2,
                    max_iter: int = PROBE_MAX_ITER) -> dict:
    """Fit the run's new linear head on inputs ``F`` (n, d) with targets ``y``; returns the probe's figures."""
    linear, _ = _head_and_body(net, head)
    conv1x1 = isinstance(linear, nn.Conv2d) and linear.kernel_size == (1, 1) and linear.bias is not None
    if not (isinstance(linear, nn.Linear) or conv1x1):  # darknet's classifier is a biased 1x1 convolution
        from deepfeat.errors import DeepfeatError

        raise DeepfeatError(f"linear_probe needs a linear head; this network's is {type(linear).__name__}. "
                            "Set linear_probe=false.")
    t0 = time.perf_counter()
    device = linear.weight.device
    F, y = F.to(device), y.to(device)
    W = linear.weight.detach().reshape(linear.weight.shape[0], -1).clone().float().requires_grad_(True)
    b = linear.bias.detach().clone().float().requires_grad_(True)
    crit = nn.CrossEntropyLoss(weight=class_weight.to(device) if class_weight is not None else None,
                               label_smoothing=label_smoothing)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = crit(F @ W.T + b, y) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        linear.weight.copy_(W.reshape(linear.weight.shape).to(linear.weight.dtype))
        linear.bias.copy_(b.to(linear.bias.dtype))
        logits = F @ W.T + b
        loss = float(crit(logits, y))
        acc = float((logits.argmax(1) == y).float().mean())
    return {"train_loss": loss, "train_accuracy": acc, "images": len(y), "seconds": time.perf_counter() - t0,
            "l2": l2, "max_iter": max_iter, "n_inputs": int(F.shape[1])}

