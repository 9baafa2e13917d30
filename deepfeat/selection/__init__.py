"""Stage 3, feature selection: :class:`~deepfeat.selection.mrmr.MRMRSelector` and its statistics. numpy and
scikit-learn only, never torch (an import-linter contract checks it)."""
