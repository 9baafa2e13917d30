"""Saliency: Grad-CAM maps of the network that produced the features (``gradcam``), for the score each kind of
model makes (``targets``: a fitted classifier's decision through the features, a fine-tuned network's own
prediction, a FeatureSet network's top output). Torch and the backbones are needed here; the pictures are drawn
by :mod:`deepfeat.reporting.saliency`."""
from deepfeat.explain.targets import Explainer, Saliency, load_explainer

__all__ = ["Explainer", "Saliency", "load_explainer"]
