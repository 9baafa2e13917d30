"""Saliency for a cross-validation report: each gallery image explained by the classifier that tested it.

An out-of-fold prediction was made by the configuration's pipeline fitted on the other folds. The CV run keeps no
fitted pipelines, so this refits that one pipeline per fold shown (``StandardScaler -> [mRMR of the fold's size]
-> classifier``, the preset, seed and class weights of the run, on the rows outside the image's test fold; the
mRMR selection is the fold's ranking as the run recorded it in ``results.mrmr``, so only the scaler and the
classifier are fitted again) and
explains its decision through the FeatureSet's network (:func:`~deepfeat.explain.gradcam.classifier_gradient`).
The refit is deterministic for the shipped presets, so it is the classifier that made the shown prediction; each
map records the class the refit predicts, which the report compares with the CV prediction.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin

from deepfeat.errors import DeepfeatError
from deepfeat.explain.gradcam import classifier_gradient
from deepfeat.explain.targets import explainer_for_features

__all__ = ["fold_saliency"]


def _fold_pipeline(features, results, config: str, repeat: int, fold: int):
    from deepfeat.classifiers.presets import build_pipeline
    from deepfeat.evaluation.fold_work import quiet_fits

    p = results.predictions
    p = p[(p["config"] == config) & (p["repeat"] == repeat)]
    if not len(p):
        raise DeepfeatError(f"no predictions of {config} in repeat {repeat}")
    clf, sel = str(p["classifier"].iloc[0]), str(p["selection"].iloc[0])
    if sel not in ("none", "mrmr"):
        raise DeepfeatError(f"{config} is not a deep-features configuration (selection {sel!r}): no network decided")
    params = results.config.get("parameters", {})
    test = p.loc[p["fold"] == fold, "row"].to_numpy()
    train = np.setdiff1d(p["row"].to_numpy(), test)
    n_features, picks = None, None
    if sel == "mrmr":
        pf = results.per_fold
        row = pf[(pf["config"] == config) & (pf["repeat"] == repeat) & (pf["fold"] == fold)]
        n_features = int(row["n_features"].iloc[0])
        m = results.mrmr
        if len(m) and "features" not in m.columns:  # the run's own ranking of this fold: no mRMR refit
            ranked = m[(m["repeat"] == repeat) & (m["fold"] == fold)].sort_values("rank")["feature"].to_numpy()
            picks = np.sort(ranked[:n_features]) if len(ranked) >= n_features else None
    pipe = build_pipeline(clf, selector=sel if picks is None else None, n_features=n_features,
                          mrmr_method=params.get("mrmr_method", "fcq"), seed=int(params.get("seed", 0)),
                          class_weight=params.get("class_weight"))
    if picks is not None:
        pipe.steps.insert(1, ("select", _FixedColumns(picks)))
    with quiet_fits():
        return pipe.fit(features.X[train], np.asarray(features.y)[train])


class _FixedColumns(SelectorMixin, BaseEstimator):
    """Keeps the given columns: a fold's mRMR selection as the run ranked it (the first ``k`` picks)."""

    def __init__(self, columns=None):
        self.columns = columns

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def _get_support_mask(self):
        mask = np.zeros(self.n_features_in_, dtype=bool)
        mask[np.asarray(self.columns, dtype=int)] = True
        return mask


def fold_saliency(features, results, config: str, items, *, device: str = "cpu", batch_size: int = 8) -> dict:
    """``{(repeat, fold, path): Saliency}`` for gallery ``items`` (dicts with ``path``, ``repeat`` and ``fold``).

    Raises :class:`DeepfeatError` naming why no map can be made (the network cannot be rebuilt offline, the
    configuration has no network, the classifier is not a preset, ...).
    """
    if "/" in str(config):
        raise DeepfeatError(f"{config} belongs to a grid of several FeatureSets: saliency needs one network")
    explainer = explainer_for_features(features, device=device)
    explainer.target = "the out-of-fold classifier's score for its predicted class, through the features"
    out = {}
    by_fold: dict = {}
    for it in items:
        by_fold.setdefault((int(it["repeat"]), int(it["fold"])), []).append(it["path"])
    for (repeat, fold), paths in sorted(by_fold.items()):
        direction = classifier_gradient(_fold_pipeline(features, results, config, repeat, fold))
        for s in explainer.explain(paths, batch_size=batch_size, direction=direction):
            out[(repeat, fold, s.path)] = s
    return out
