"""What a saliency map explains, for each kind of model deepfeat makes, and the one place that computes maps.

- a **fitted deepfeat model** (``deepfeat fit``: a :class:`~deepfeat.classifiers.deep_classifier.DeepFeatureClassifier`
  file): the *shallow classifier's decision*, through the features. The score is the classifier's score (SVM
  decision value, else probability) for the class it predicts; its gradient with respect to the features
  (:func:`~deepfeat.explain.gradcam.classifier_gradient`) is chained through the network down to its last feature
  map. The map shows where in the cell the network's evidence *for the classifier's answer* lies: regions whose
  activations, moved along that gradient, raise the classifier's score. It is not the network's own ImageNet
  class, which means nothing for a blood cell.
- a **fine-tuned checkpoint** (``deepfeat finetune``, ``.pt``): the network's own prediction (the logit of its
  top class, as in Grad-CAM's paper).
- a **FeatureSet** (``deepfeat extract``, ``.npz``): its network is rebuilt from the metadata (name, weights,
  preprocessing; the parameters' sha256 must match) and explained for its own top output, i.e. an ImageNet class
  for an ImageNet network: where the network looked, not why a blood-cell classifier decided. Fit a model to
  explain a decision.

The network runs in float32; a FeatureSet made with test-time augmentation is explained on the plain view.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.explain.gradcam import classifier_gradient, grad_cam, network_parts, top_output_gradient

__all__ = ["Explainer", "Saliency", "explainer_for_classifier", "explainer_for_features", "load_explainer"]

MODEL_SUFFIXES = (".joblib", ".skops")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Saliency:
    """One image's map: ``image`` (H, W, 3) uint8, the network input as it saw it (after resizing and cropping);
    ``map`` (H, W) float32 in [0, 1]; ``predicted``, ``score``, ``score_kind``; ``flat`` (True: no region raises
    the score); ``error`` (why there is no map, e.g. an unreadable image; then ``image`` and ``map`` are None)."""

    path: str
    image: np.ndarray | None
    map: np.ndarray | None
    predicted: str | None = None
    score: float | None = None
    score_kind: str | None = None
    flat: bool = False
    error: str = ""


@dataclass
class Explainer:
    """A network cut at its last feature map, its preprocessing, and the score its maps explain.

    Build one with :func:`load_explainer` (any model file), :func:`explainer_for_classifier` or
    :func:`explainer_for_features`; :meth:`explain` gives one :class:`Saliency` per image.
    """

    net: torch.nn.Module
    layer: str
    data_config: dict
    crop_border: bool
    direction: object
    target: str
    network: str
    device: str = defaults.DEVICE
    notes: list = field(default_factory=list)

    def __post_init__(self):
        from deepfeat.extraction.device import resolve_device
        from deepfeat.extraction.preprocessing import build_transform

        self.torch_device = resolve_device(self.device)[0]
        self.net = self.net.eval().float().to(self.torch_device)
        self.transform = build_transform(self.data_config, crop_border=self.crop_border)
        self.body, self.head = network_parts(self.net, self.layer)

    def describe(self) -> dict:
        """What the maps explain, for a config file beside them."""
        return {"method": "grad-cam", "target": self.target, "network": self.network, "layer": self.layer,
                "input_size": list(self.data_config["input_size"]), "crop_border": self.crop_border,
                "notes": list(self.notes)}

    def explain(self, paths, *, batch_size: int = 8, direction=None) -> list[Saliency]:
        """Maps of the images at ``paths``, in order; an unreadable image gets ``error`` instead of a map.

        ``direction`` overrides the explained score for this call (the CV report passes each fold's classifier).
        """
        from deepfeat.extraction.preprocessing import ImageDataset

        data = ImageDataset([str(p) for p in paths], self.transform)
        out: list[Saliency] = []
        for start in range(0, len(data), batch_size):
            items = [data[i][0] for i in range(start, min(start + batch_size, len(data)))]
            good = [(k, t) for k, t in enumerate(items) if isinstance(t, torch.Tensor)]
            maps, records = {}, {}
            if good:
                x = torch.stack([t for _, t in good]).to(self.torch_device)
                m, rec = grad_cam(self.body, self.head, x, direction or self.direction)
                maps = {k: (m[j], rec[j], x[j]) for j, (k, _) in enumerate(good)}
            for k, item in enumerate(items):
                path = data.paths[start + k]
                if k not in maps:
                    out.append(Saliency(path, None, None, error=item.reason))
                    continue
                m, rec, x = maps[k]
                out.append(Saliency(path, self._picture(x), m, rec["predicted"], rec["score"], rec["score_kind"],
                                    rec["flat"]))
        return out

    def _picture(self, x: torch.Tensor) -> np.ndarray:
        """The network input back in RGB 0..255 (mean / std undone), so the map lies exactly on what was seen."""
        mean = torch.as_tensor(self.data_config.get("mean", (0, 0, 0)), dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(self.data_config.get("std", (1, 1, 1)), dtype=x.dtype, device=x.device)[:, None, None]
        rgb = (x * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return (rgb * 255 + 0.5).astype(np.uint8)


def _data_config(net, image_size) -> dict:
    from deepfeat.backbones import resolve_data_config

    cfg = dict(resolve_data_config(net))
    if image_size is not None:
        cfg["input_size"] = (3, int(image_size), int(image_size))
    return cfg


def _rebuild(model: str, weights, expected_sha: str | None, what: str) -> torch.nn.Module:
    """The network ``model`` with ``weights``, checked against the parameters' sha256 recorded in ``what``."""
    from deepfeat.backbones import create_backbone
    from deepfeat.extraction.device import model_sha256

    net = create_backbone(model, weights)
    if expected_sha and model_sha256(net) != expected_sha:
        raise DeepfeatError(f"the {model!r} network rebuilt with weights={weights!r} is not the one {what} was made "
                            f"with (parameters' sha256 differ); supply the same weights file")
    return net


def explainer_for_classifier(model, *, pipeline=None, device: str = defaults.DEVICE) -> Explainer:
    """The Explainer of a fitted :class:`DeepFeatureClassifier` (its classifier's decision through its features).

    ``pipeline`` replaces the model's fitted pipeline (the CV report explains each fold's own classifier).
    """
    if not hasattr(model, "pipeline_") or not hasattr(model, "model"):
        raise DeepfeatError(f"saliency needs a fitted deepfeat model (DeepFeatureClassifier, from 'deepfeat fit'); "
                            f"got {type(model).__name__}")
    identity = getattr(model, "extractor_identity_", None) or {}
    net = _rebuild(model.model, model.weights, identity.get("model_sha256"), "this model's training features")
    return Explainer(net, model.layer, _data_config(net, model.image_size), bool(model.crop_border),
                     classifier_gradient(pipeline if pipeline is not None else model.pipeline_),
                     target="the shallow classifier's score for its predicted class, through the features",
                     network=f"{model.model} ({model.weights})", device=device)


def explainer_for_features(features, *, device: str = defaults.DEVICE, direction=None) -> Explainer:
    """The Explainer of a FeatureSet's network (its own top output unless ``direction`` says otherwise).

    Raises :class:`DeepfeatError` saying why when the network cannot be rebuilt here (fused or hand-crafted
    features, weights not available offline, other parameters).
    """
    meta = features.meta
    if meta.get("fused") or meta.get("blocks") or not meta.get("backbone"):
        raise DeepfeatError("these features do not come from one network (fused or hand-crafted blocks): there is "
                            "no single network to explain")
    net = _rebuild(meta["backbone"], meta.get("weights"), meta.get("model_sha256"), "this FeatureSet")
    size = meta.get("input_size")
    image_size = int(size[-1]) if size and len(size) == 3 and size[-1] == size[-2] else None
    notes = ["features made with test-time augmentation; maps are of the plain view"] if meta.get("tta") else []
    return Explainer(net, meta.get("layer") or defaults.LAYER, _data_config(net, image_size),
                     bool((meta.get("preprocessing") or {}).get("crop_border", False)),
                     direction or top_output_gradient(_imagenet_name), device=device, notes=notes,
                     target="the network's own top output (an ImageNet class for ImageNet weights)",
                     network=f"{meta['backbone']} ({meta.get('weights')})")


def _imagenet_name(index: int) -> str:
    try:
        from timm.data import ImageNetInfo

        return f"imagenet:{ImageNetInfo().index_to_description(index)}"
    except Exception:  # an older timm without the class list: the index says it
        return f"imagenet:{index}"


def _explainer_for_checkpoint(path, device) -> Explainer:
    from deepfeat.finetuning.checkpoints import load_finetuned, read_checkpoint

    ckpt = read_checkpoint(path)
    net, names = load_finetuned(path)
    inner = getattr(net, "backbone", net)
    cfg = dict(ckpt.get("data_config") or _data_config(inner, None))
    crop = bool((ckpt.get("config") or {}).get("crop_border", False))
    return Explainer(net, "output", cfg, crop, top_output_gradient(names), device=device,
                     target="the fine-tuned network's own prediction (logit of its top class)",
                     network=f"{ckpt['model']} fine-tuned ({Path(path).name})")


def load_explainer(path, *, trusted: bool = False, allow_version_mismatch: bool = False,
                   device: str = defaults.DEVICE) -> Explainer:
    """The Explainer of a model file: ``.joblib`` / ``.skops`` (``deepfeat fit``), ``.pt`` (``deepfeat finetune``)
    or a FeatureSet (``deepfeat extract``); see the module docstring for what each map explains."""
    path = Path(path)
    if not path.is_file():
        raise DeepfeatError(f"MODEL {path} does not exist (a model from 'deepfeat fit', a checkpoint from "
                            "'deepfeat finetune' or features from 'deepfeat extract')")
    suffix = path.suffix.lower()
    if suffix in MODEL_SUFFIXES:
        from deepfeat.classifiers.model_files import load_model

        model = load_model(path, trusted=trusted, allow_version_mismatch=allow_version_mismatch)
        return explainer_for_classifier(model, device=device)
    if suffix in CHECKPOINT_SUFFIXES:
        return _explainer_for_checkpoint(path, device)
    from deepfeat.features import load_features

    try:
        features = load_features(path)
    except Exception as exc:
        raise DeepfeatError(f"MODEL {path} is neither a model file ({', '.join(MODEL_SUFFIXES)}), a fine-tuning "
                            f"checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) nor a readable FeatureSet: {exc}") from exc
    return explainer_for_features(features, device=device)
