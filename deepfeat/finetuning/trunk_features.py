"""Features of a fine-tuned checkpoint from the cached trunk: only the stages that were trained run.

A run that froze its first k stages (:mod:`deepfeat.finetuning.trunk`) leaves their weights and batch-norm
statistics exactly as they started, so for every image the fine-tuned network's output is
``suffix(frozen stages(image))``, and the frozen stages' output is what the run cached. In-fold cross-validation
(:mod:`deepfeat.evaluation.infold`) therefore computes each fold's features by running the fine-tuned stages and
head on the cached activations instead of a full forward pass; the images not cached yet pass the frozen stages
once (the cache is shared by the folds of a run). The cache is keyed by the frozen stages' weights hash
(:func:`~deepfeat.finetuning.trunk.trunk_identity`), so a checkpoint whose frozen stages differ never reads another
network's activations: they are computed again.

The features are those of ``extract_features(..., weights=checkpoint)`` (same network file, same preprocessing,
``logits`` or ``pooled``) within float tolerance: the same operations in the same order, at the fine-tuning's
precision (fp32 on a CPU; the run's autocast dtype on a GPU).
"""
from __future__ import annotations

import numpy as np
import torch

from deepfeat.finetuning.checkpoints import read_checkpoint

__all__ = ["SUFFIX_LAYERS", "features_from_trunk"]

#: Layers computed from the suffix (others take the full forward pass of ``extract_features``).
SUFFIX_LAYERS = ("logits", "pooled")


def features_from_trunk(checkpoint, paths, sha256, *, layer: str, batch_size: int = 64,
                        workers: int = 0) -> np.ndarray | None:
    """``(n, d)`` float32 features of ``paths`` by the fine-tuned network ``checkpoint``, from cached activations.

    Parameters
    ----------
    checkpoint : str or Path
        A :func:`deepfeat.finetuning.run.finetune` checkpoint.
    paths, sha256 : sequences
        The images and the sha256 of their bytes (the cache's key), in the order of the rows returned.
    layer : "logits" or "pooled"
        As ``extract_features``' ``layer``.
    batch_size, workers :
        Batches of the suffix; DataLoader workers for the images whose activations are not cached yet.

    Returns
    -------
    ndarray or None
        None when the checkpoint's run did not cache a frozen trunk or ``layer`` is not in :data:`SUFFIX_LAYERS`:
        the caller then runs the full forward pass.
    """
    from deepfeat.backbones import create_backbone, resolve_data_config
    from deepfeat.extraction.device import autocast_dtype, resolve_device, resolve_precision
    from deepfeat.extraction.preprocessing import build_transform
    from deepfeat.finetuning.trunk import TrunkSplit, trunk_activations, trunk_identity

    ckpt = read_checkpoint(checkpoint)
    plan, cfg = ckpt.get("plan") or {}, ckpt["config"]
    if layer not in SUFFIX_LAYERS or not plan.get("cached_trunk") or not plan.get("frozen_stages"):
        return None
    # device, precision, memory layout and input as the run had them (run._prepare / _build_network)
    device, _ = resolve_device(cfg["device"])
    amp_dtype = autocast_dtype(resolve_precision(cfg["precision"], device, training=True)[0])
    channels_last = device.type in ("cuda", "cpu") if cfg["channels_last"] == "auto" else bool(cfg["channels_last"])
    net = create_backbone(ckpt["model"], weights=str(checkpoint))  # the network extract_features would load
    net.eval()
    data_config = dict(resolve_data_config(net))
    if cfg.get("image_size"):
        data_config["input_size"] = (3, int(cfg["image_size"]), int(cfg["image_size"]))
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    split = TrunkSplit(net, "replace", int(plan["frozen_stages"]))  # "replace": net is the backbone itself
    identity = trunk_identity(ckpt["model"], split, data_config, cfg["crop_border"], device, amp_dtype)
    rows = trunk_activations(split, identity, list(paths), list(sha256), [0],
                             build_transform(data_config, crop_border=cfg["crop_border"]), device=device,
                             amp_dtype=amp_dtype, channels_last=channels_last, batch_size=batch_size, workers=workers)
    out = []
    with torch.inference_mode():
        for i in range(0, len(sha256), batch_size):
            h = torch.stack([rows[(s, 0)] for s in sha256[i:i + batch_size]]).to(device)
            if channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                t = net.forward_head(split.suffix.stages(h), pre_logits=layer == "pooled")
            out.append(t.float().flatten(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
