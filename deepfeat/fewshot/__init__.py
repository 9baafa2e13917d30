"""Few-shot evaluation: N-way K-shot episodes (``episodes``), their evaluation (``evaluate``) and learning curves
(``curves``)."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "few_shot_evaluate": "deepfeat.fewshot.evaluate",
    "FewShotResults": "deepfeat.fewshot.evaluate",
    "learning_curve": "deepfeat.fewshot.curves",
    "CurveResults": "deepfeat.fewshot.curves",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
