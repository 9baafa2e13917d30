"""Stage 3, feature selection: :class:`~deepfeat.selection.mrmr.MRMRSelector` and its statistics. numpy and
scikit-learn only, never torch (an import-linter contract checks it)."""

from deepfeat.lazy import lazy_exports

# public name -> module that defines it; imported on first use (keeps this package's import cheap)
_PUBLIC = {
    "MRMRSelector": "deepfeat.selection.mrmr",
    "auto_n_features": "deepfeat.selection.mrmr",
    "resolve_n_features": "deepfeat.selection.mrmr",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
