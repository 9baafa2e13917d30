"""Learning curves: accuracy against the number of labelled training images per class.

Each repeat splits the images once into a training pool and a test set, stratified by class and grouped (by
subject when the FeatureSet has subject ids, else by sha256 so byte-identical images stay on one side). The test
set is FIXED within a repeat: every training size is scored on the same test images, and the training sets are
nested (the first ``s`` images per class of one seeded permutation of the pool), so differences between sizes are
not differences between test sets. Sizes larger than the smallest class's training pool are skipped (said so);
"all" is the whole pool. Mean and 95 % interval over repeats (:func:`deepfeat.evaluation.intervals.mean_interval`,
logit scale, corrected for the shared training images).
The colour-histogram baseline (when the images are reachable) is fitted with the same pipeline on the same splits.
The splits come from the one fold maker (:func:`deepfeat.evaluation.folds.make_folds`).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.folds import make_folds
from deepfeat.evaluation.intervals import mean_interval, proportion_method
from deepfeat.evaluation.parameters import resolve_baseline
from deepfeat.fewshot.evaluate import parse_list

__all__ = ["CurveResults", "curve_splits", "learning_curve"]


@dataclass
class CurveResults:
    """``per_repeat``: one row per (features, size, repeat); ``summary``: mean and 95 % CI per (features, size);
    ``skipped``: sizes not run and why; ``statements``: the honesty sentences of the report (also
    :meth:`honesty_lines`); ``config``: parameters, seeds, versions."""

    per_repeat: pd.DataFrame
    summary: pd.DataFrame
    skipped: list = field(default_factory=list)
    statements: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def honesty_lines(self) -> list[str]:
        """The honesty statements, one sentence each (as ``CVResults.honesty_lines()``)."""
        return list(self.statements)

    @property
    def honesty(self) -> list:
        """Deprecated: the list of sentences, now :meth:`honesty_lines` (``honesty`` names the structured record
        of ``CVResults``)."""
        warnings.warn("CurveResults.honesty (a list of sentences) is deprecated and will be removed after 0.3; use "
                      "CurveResults.honesty_lines()", FutureWarning, stacklevel=2)
        return self.statements


def curve_splits(y, split_groups, repeats: int, test_fraction: float, seed: int):
    """(train pool, test) row indices per repeat: the first fold of each repeat of
    :func:`~deepfeat.evaluation.folds.make_folds` with ``round(1 / test_fraction)`` grouped folds."""
    n_splits = max(2, round(1 / test_fraction))
    n_groups = len(set(split_groups)) if split_groups is not None else len(y)
    if n_splits > n_groups:  # named here: make_folds would name the derived count, not the parameter
        raise DeepfeatError(f"test_fraction={test_fraction} asks for a test set of 1/{n_splits} of the data, but it "
                            f"holds only {n_groups} independent units (subjects, or distinct images when there are "
                            f"none); use test_fraction={1 / n_groups:.3g} or more")
    folds = make_folds(y, split_groups, n_splits, repeats, seed, param="round(1 / test_fraction)",
                       check_classes=False)  # a hold-out split uses one fold: scikit-learn warns of tiny classes
    return [(np.sort(tr), np.sort(te)) for _, k, tr, te in folds if k == 0]


def learning_curve(features, *, sizes=defaults.CURVE_SIZES, classifier=defaults.CURVE_CLASSIFIER,
                   select=defaults.CURVE_SELECT, n_features=defaults.N_FEATURES, repeats: int = defaults.CURVE_REPEATS,
                   test_fraction: float = defaults.CURVE_TEST_FRACTION, groups=defaults.GROUPS,
                   seed: int = defaults.SEED, baseline=defaults.BASELINE, progress: bool = False) -> CurveResults:
    """Accuracy on a fixed test set per repeat as the training images per class grow.

    Parameters
    ----------
    features : FeatureSet
    sizes : sequence of int or "all", or a comma string
        Training images per class.
    classifier : str or classifier
        A preset of :mod:`deepfeat.classifiers.presets` (``StandardScaler -> [mRMR] -> classifier``).
    select : "mrmr" or "none"
    n_features : int or "auto"
        mRMR size, checked by :func:`deepfeat.selection.mrmr.resolve_n_features` (more than the features' columns
        is an error); "auto": :func:`~deepfeat.selection.mrmr.auto_n_features`. The colour-histogram baseline
        uses the same size capped at its 96 columns ("auto": half of them). Selection is fitted on the training
        images only.
    repeats : int
    test_fraction : float
        Share of the images (by class, by group) in each repeat's fixed test set.
    groups : "auto" or "none"
    baseline : "auto", "histogram", "majority" or "none" (None)
        Colour histograms of the images with the same pipeline and splits ("auto": when reachable; a learning curve
        has no majority-class row, so "majority" scores no baseline: see
        :func:`deepfeat.evaluation.parameters.resolve_baseline`).

    Returns
    -------
    CurveResults
    """
    from deepfeat import __version__
    from deepfeat.classifiers.presets import build_pipeline
    from deepfeat.evaluation import honesty
    from deepfeat.selection.mrmr import auto_n_features, resolve_n_features

    features.check_trainable("a learning curve")
    size_l = parse_list(sizes, "sizes", allow=("all",))
    if not 0 < test_fraction < 1:
        raise DeepfeatError(f"The 'test_fraction' parameter must be in (0, 1). Got {test_fraction!r} instead.")
    if select not in ("mrmr", "none"):
        raise DeepfeatError(f"The 'select' parameter must be 'mrmr' or 'none'. Got {select!r} instead.")
    wanted = resolve_baseline(baseline)
    k_features = resolve_n_features(n_features, features.n_features)
    group_ids, grouping = honesty.resolve_groups(features, groups)
    split_groups = group_ids if group_ids is not None else (
        features.sha256 if features.sha256 is not None else np.arange(len(features)))
    classes, y = np.unique(features.y, return_inverse=True)
    splits = curve_splits(y, split_groups, repeats, test_fraction, seed)
    sets = [("features", features.X, k_features)]
    hist, hist_note = honesty.histogram_features(features, wanted) if wanted in ("auto", "histogram") else \
        (None, "no baseline requested" if wanted == "none" else "baseline='majority' (a learning curve scores no "
                                                                "majority-class row)")
    if hist is not None:  # the same size, capped at the histogram's columns ("auto": its own default)
        sets.append(("colour-histogram", hist, auto_n_features(hist.shape[1]) if n_features in (None, "auto")
                     else min(k_features, hist.shape[1])))
    rows, skipped = [], []
    for r, (pool, test) in enumerate(splits):
        rng = np.random.default_rng([seed, r])
        order = {c: rng.permutation(pool[y[pool] == c]) for c in range(len(classes))}
        smallest = min(len(v) for v in order.values())
        for s in size_l:
            if s != "all" and s > smallest:
                if r == 0:
                    skipped.append({"size": s, "reason": f"the smallest class has only {smallest} training images "
                                                         f"in a split (test fraction {test_fraction})"})
                continue
            train = np.sort(np.concatenate([v if s == "all" else v[:s] for v in order.values()]))
            for name, X, k in sets:
                pipe = build_pipeline(classifier, selector=select if select == "mrmr" else None,
                                      n_features=k if select == "mrmr" else None, seed=seed)
                t0 = time.perf_counter()
                est = clone(pipe).fit(X[train], y[train])
                acc = float((est.predict(X[test]) == y[test]).mean())
                rows.append({"features": name, "size": str(s), "n_per_class": len(train) / len(classes),
                             "n_train": len(train), "n_test": len(test), "repeat": r, "accuracy": acc,
                             "seconds": time.perf_counter() - t0})
                if progress:
                    print(f"repeat {r} {name} size {s}: {100 * acc:.1f} %")
    for s in skipped:
        warnings.warn(f"learning curve: size {s['size']} skipped: {s['reason']}", UserWarning, stacklevel=2)
    if not rows:
        raise DeepfeatError("no training size could be run: " + "; ".join(s["reason"] for s in skipped))
    per = pd.DataFrame(rows)
    summ = []
    for (name, s), g in per.groupby(["features", "size"], sort=False):
        # repeated splits share training images: corrected variance (Nadeau & Bengio), logit scale, inside [0, 1]
        iv = mean_interval(g["accuracy"], test_train_ratio=float((g["n_test"] / g["n_train"]).mean()),
                           bounds=(0.0, 1.0), n_items=float(g["n_test"].mean()))
        summ.append({"features": name, "size": s, "n_per_class": g["n_per_class"].mean(), "repeats": len(g),
                     "accuracy_mean": iv.mean, "accuracy_std": iv.sd, "ci95": iv.half, "ci_low": iv.low,
                     "ci_high": iv.high})
    lines = [grouping["text"].replace("Folds were", "Splits were"),
             f"Each repeat's test set ({len(splits[0][1])} images, {100 * test_fraction:.0f} %) is fixed for every "
             "training size; training sets are nested subsets of the remaining pool. Standardisation and "
             + ("mRMR selection were" if select == "mrmr" else "the classifier was") + " fitted on the training "
             "images only.",
             f"95 % CI over repeats: {proportion_method(True)}; the repeats share images, so it describes this "
             "data set, not independent ones."]
    if group_ids is None and features.sha256 is not None:
        lines.append("Byte-identical images (same sha256) were kept on one side of every split.")
    lines.append("Colour-histogram baseline on the same splits and pipeline." if hist is not None else
                 f"No colour-histogram baseline: {hist_note or 'not requested'}.")
    import sklearn

    config = {"sizes": [str(s) for s in size_l], "classifier": str(classifier), "select": select,
              "n_features": n_features, "repeats": repeats, "test_fraction": test_fraction, "groups": groups,
              "seed": seed, "split_rule": ("StratifiedGroupKFold(round(1/test_fraction), shuffle, random_state="
                                           "seed+repeat), first fold = test"), "baseline": baseline, "classes": [str(c) for c in classes],
              "n_rows": len(features), "n_features_in": features.n_features,
              "featureset_identity": features.identity(), "featureset_meta": features.meta,
              "versions": {"deepfeat": __version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}}
    return CurveResults(per, pd.DataFrame(summ), skipped, lines, config)
