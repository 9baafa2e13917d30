"""Metrics, and the :class:`CVResults` built from the per-fold outputs of :func:`deepfeat.evaluation.cross_validation.cross_validate`.

Metrics per configuration (classifier x selection) are computed per fold, then summarised as mean and std over all
folds of all repeats. ROC AUC is rank-based per class (one-vs-rest, macro over classes for > 2 classes), so it works
with probabilities or decision values alike.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score

from deepfeat.evaluation import honesty
from deepfeat.evaluation.fold_work import BASELINE_TEXT
from deepfeat.provenance import package_versions

METRICS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "specificity_macro", "f1_macro",
           "roc_auc")
CLASS_METRICS = ("precision", "recall", "specificity", "f1")
END_TO_END = "end-to-end"  # the selection name of a fine-tuned network's own predictions (in-fold fine-tuning)


def config_name(classifier: str, selection: str) -> str:
    return classifier if selection == "baseline" else f"{classifier}+{selection}"


@dataclass
class CVResults:
    """Everything a cross-validation run measured; every table is a pandas DataFrame.

    Attributes
    ----------
    summary : one row per configuration: ``<metric>_mean`` / ``<metric>_std`` over folds, fit/predict times.
    per_fold : one row per configuration x repeat x fold.
    per_class : precision / recall / specificity / F1 per configuration and class (mean, std over folds).
    predictions : out-of-fold predictions: row, path, sha256, group, true, pred, repeat, fold, config, scores.
    confusion : ``{config: {"classes": [...], "matrix": ndarray}}`` summed over folds (and repeats).
    mrmr : ranking and score in pick order per repeat and fold.
    honesty : selection / grouping / duplicates / baseline / fine-tuning statements and warnings.
    config : everything needed to re-run: versions, seeds, parameters, FeatureSet identity and metadata.
    comparisons : paired statistics of every pair of configurations scored on the same folds
        (:func:`deepfeat.evaluation.compare.compare_configs`), or None.
    nested : the nested cross-validation estimate (:func:`deepfeat.evaluation.nested.nested_cross_validate`), or
        None when nested CV was not asked for.
    conformal : empirical coverage, mean set size and share decided alone of conformal prediction sets per
        configuration x nominal coverage x class (:func:`deepfeat.evaluation.conformal.cv_coverage`), or None.
    """

    summary: pd.DataFrame
    per_fold: pd.DataFrame
    per_class: pd.DataFrame
    predictions: pd.DataFrame
    confusion: dict
    mrmr: pd.DataFrame
    honesty: dict
    config: dict
    classes: list = field(default_factory=list)
    comparisons: pd.DataFrame | None = None
    nested: dict | None = None
    conformal: pd.DataFrame | None = None

    def table(self) -> pd.DataFrame:
        """Accuracy % (mean +- std over folds): classifiers as rows, all vs selected features as columns,
        baselines as extra rows."""
        cols, rows = {}, {}
        for _, r in self.summary.iterrows():
            cell = f"{100 * r.accuracy_mean:.2f} ± {100 * r.accuracy_std:.2f}"
            if r.kind == "baseline":
                name, col = f"baseline: {BASELINE_TEXT.get(r.classifier, r.classifier)}", "all features"
            elif r.selection == END_TO_END:
                name, col = "fine-tuned network, end to end", "all features"
            else:
                name = r.classifier
                col = "all features" if r.selection == "none" else f"mRMR ({r.n_features:.0f})"
            cols.setdefault(col, None)
            rows.setdefault(name, {})[col] = cell
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(cols)).fillna("").rename_axis(
            "accuracy %")

    def honesty_lines(self) -> list[str]:
        """The honesty statements, one sentence each, warnings first."""
        h = self.honesty
        lines = [f"WARNING: {w}" for w in h["warnings"]]
        lines += [h["selection"], h["grouping"]["text"], h["folds"], h["duplicates"]["text"], h["baseline"]["text"]]
        if h.get("finetune") and not h["finetune"].get("warning"):  # a warning is already listed first
            lines.append(h["finetune"]["text"])
        return lines + [f"note: {n}" for n in h["notes"]]


def _auc(y, scores, n_classes):
    cols = [1] if n_classes == 2 else range(n_classes)
    vals = [roc_auc_score(y == c, scores[:, c]) for c in cols if 0 < np.sum(y == c) < len(y)]
    return float(np.mean(vals)) if vals else np.nan


def fold_metrics(y, pred, scores, n_classes) -> tuple[dict, dict, np.ndarray]:
    """Macro metrics, per-class metrics and the confusion matrix of one fold (labels are 0..n_classes-1)."""
    cm = confusion_matrix(y, pred, labels=np.arange(n_classes))
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        rec = tp / (tp + fn)  # NaN for a class absent from this test fold (grouped folds only)
        spec = tn / (tn + fp)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    present = cm.sum(1) > 0
    per_class = {"precision": prec, "recall": rec, "specificity": spec, "f1": np.where(present, f1, np.nan),
                 "support": cm.sum(1)}
    macro = {"accuracy": tp.sum() / cm.sum(), "balanced_accuracy": np.nanmean(rec),
             "precision_macro": prec[present].mean(), "recall_macro": np.nanmean(rec),
             "specificity_macro": np.nanmean(spec), "f1_macro": f1[present].mean(),
             "roc_auc": _auc(np.asarray(y), scores, n_classes)}
    return macro, per_class, cm


def _versions() -> dict:
    return {**package_versions(("deepfeat", "scikit-learn", "numpy", "scipy", "pandas", "torch", "timm",
                                "mrmr-selection")), "platform": platform.platform()}


def _meta_summary(meta: dict) -> dict:
    """Metadata with long lists (e.g. fine-tuning image hashes) replaced by their length."""
    def short(v):
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)) and len(v) > 20:
            return f"<list of {len(v)}>"
        return v
    return short(meta)


def _collect_folds(features, classes, y, fold_out, *, group_ids, sets):
    """Per-fold rows of every configuration: metrics, per-class metrics, predictions, mRMR picks, confusion."""
    K, class_names = len(classes), [str(c) for c in classes]
    fold_rows, class_rows, pred_frames, mrmr_rows, confusion = [], [], [], [], {}
    base = pd.DataFrame({"row": np.arange(len(y)), "path": features.paths, "sha256": features.sha256,
                         "group": group_ids if group_ids is not None else features.groups})
    warnings_ = []
    named = any(f.get("features") is not None for f in fold_out)
    for f in fold_out:
        r, k, te = f["repeat"], f["fold"], f["test"]
        fs_name = f.get("features")
        names = (sets[fs_name] if fs_name is not None else features).feature_names
        if len(np.unique(y[te])) < K:
            warnings_.append(f"repeat {r} fold {k}: the test fold lacks class(es) "
                             f"{sorted(set(class_names) - set(np.asarray(class_names)[np.unique(y[te])]))}")
        if f["mrmr"] is not None:
            mrmr_rows += [{**({"features": fs_name} if named else {}), "repeat": r, "fold": k, "rank": i,
                           "feature": int(j), "feature_name": str(names[j]), "score": float(s)}
                          for i, (j, s) in enumerate(zip(f["mrmr"]["ranking"], f["mrmr"]["scores"]))]
        for key, res in f["results"].items():
            clf, sel = key[-2:]
            clf = clf if len(key) == 2 else f"{key[0]}/{clf}"  # a grid's classifier rows are per feature set
            cfg = config_name(clf, sel)
            macro, per_class, cm = res.get("metrics") or fold_metrics(y[te], res["pred"], res["scores"], K)
            kind = {"baseline": "baseline", END_TO_END: "end-to-end network"}.get(sel, "deep features")
            n_feat = f["n_features"].get(sel, np.nan)
            if named:  # the grid's column: which feature set (baselines have their own features)
                fold_rows.append({"features": key[0] if len(key) == 3 else "baseline"})
            else:
                fold_rows.append({})
            fold_rows[-1].update({"config": cfg, "classifier": clf, "selection": sel, "kind": kind, "repeat": r,
                              "fold": k, "n_features": n_feat, **macro, "fit_time": res["fit_time"],
                              "predict_time": res["predict_time"],
                              "mrmr_time": f["mrmr"]["fit_time"] if sel == "mrmr" else np.nan})
            for c, name in enumerate(class_names):
                class_rows.append({"config": cfg, "class": name, "repeat": r, "fold": k,
                                   **{m: per_class[m][c] for m in (*CLASS_METRICS, "support")}})
            entry = confusion.setdefault(cfg, {"classes": class_names, "matrix": np.zeros((K, K), dtype=np.int64)})
            entry["matrix"] += cm
            frame = base.iloc[te].copy()
            frame["true"], frame["pred"] = classes[y[te]], classes[res["pred"]]
            frame["repeat"], frame["fold"], frame["config"] = r, k, cfg
            frame["classifier"], frame["selection"], frame["score_kind"] = clf, sel, res["score_kind"]
            for c, name in enumerate(class_names):
                frame[f"score_{name}"] = res["scores"][:, c]
            pred_frames.append(frame)
    return fold_rows, class_rows, pred_frames, mrmr_rows, confusion, warnings_, named


def _honesty_record(features, y, tasks, summary, *, params, grouping, group_ids, notes, hist_note, warnings_):
    """The report's Honesty section: folds, grouping, duplicates across splits, baselines, fine-tuning overlap."""
    fold_of_rows = []
    for r in range(params["repeats"]):
        fold_of = np.full(len(y), -1)
        for rr, k, _, te, _ in tasks:
            if rr == r:
                fold_of[te] = k
        fold_of_rows.append(fold_of)
    dups = honesty.duplicate_report(features, features.y, fold_of_rows)
    finetune = honesty.finetune_overlap(features)
    acc = summary.set_index("config")["accuracy_mean"]
    base_txt = [f"{BASELINE_TEXT[b]} {100 * acc[b]:.2f} %" for b in BASELINE_TEXT if b in acc.index]
    baseline = {"rows": [b for b in BASELINE_TEXT if b in acc.index], "skipped": hist_note,
                "text": ("Sanity baselines on the same folds: " + ", ".join(base_txt) + "."
                         if base_txt else "No baseline was scored.") + (f" ({hist_note})" if hist_note else "")}
    if dups["conflicting"]:
        warnings_.append(f"{len(dups['conflicting'])} group(s) of byte-identical images carry different labels "
                         "(listed under duplicates)")
    if any(dups["pairs_across_split"]):
        warnings_.append(f"byte-identical duplicate pairs fell across train/test splits "
                         f"({', '.join(map(str, dups['pairs_across_split']))} per repeat)")
    if finetune and finetune["warning"]:
        warnings_.append(finetune["text"].removeprefix("WARNING: "))
    folds_txt = (f"{params['repeats']} x {'stratified group' if group_ids is not None else 'stratified'} "
                 f"{params['folds']}-fold cross-validation, shuffled with seed {params['seed']}"
                 + (" (+ repeat index)" if params["repeats"] > 1 else "") + "; folds were not reduced.")
    honesty_ = {"selection": honesty.SELECTION_TEXT, "grouping": grouping, "folds": folds_txt,
                "duplicates": dups, "baseline": baseline, "finetune": finetune,
                "warnings": list(dict.fromkeys(warnings_)),
                "notes": list(dict.fromkeys(notes))}
    return honesty_


def assemble_results(features, classes, y, tasks, fold_out, *, params, grouping, group_ids, notes,
                     hist_note, sets=None) -> CVResults:
    """Turn the per-fold outputs of ``cross_validate`` into a :class:`CVResults`.

    A fold output whose ``features`` is a name belongs to that set of a grid (``sets``: name -> FeatureSet):
    its configurations are named ``<set>/<config>`` and the tables gain a ``features`` column.
    """
    class_names = [str(c) for c in classes]
    fold_rows, class_rows, pred_frames, mrmr_rows, confusion, warnings_, named = _collect_folds(
        features, classes, y, fold_out, group_ids=group_ids, sets=sets)
    per_fold = pd.DataFrame(fold_rows)
    order = list(dict.fromkeys(per_fold["config"]))
    timing = ("fit_time", "predict_time")
    summary = per_fold.groupby("config", sort=False).agg(
        **({"features": ("features", "first")} if named else {}), classifier=("classifier", "first"), selection=("selection", "first"), kind=("kind", "first"),
        n_features=("n_features", "mean"),
        **{f"{m}_{s}": (m, s) for m in (*METRICS, *timing) for s in ("mean", "std")}).reindex(order).reset_index()
    pc = pd.DataFrame(class_rows)
    per_class = pc.groupby(["config", "class"], sort=False).agg(
        **{f"{m}_{s}": (m, s) for m in CLASS_METRICS for s in ("mean", "std")},
        support=("support", "sum")).reset_index()
    predictions = pd.concat(pred_frames, ignore_index=True).dropna(axis=1, how="all")
    mrmr = pd.DataFrame(mrmr_rows, columns=(["features"] if named else []) + ["repeat", "fold", "rank", "feature",
                                                                              "feature_name", "score"])

    honesty_ = _honesty_record(features, y, tasks, summary, params=params, grouping=grouping, group_ids=group_ids,
                               notes=notes, hist_note=hist_note, warnings_=warnings_)
    config = {"versions": _versions(), "parameters": params, "classes": class_names,
              "featureset": {"identity": features.identity(), "n_rows": len(features),
                             "n_features": features.n_features, "class_counts": features.class_counts(),
                             "has_groups": features.groups is not None, "has_paths": features.paths is not None,
                             "has_sha256": features.sha256 is not None, "meta": _meta_summary(features.meta)}}
    return CVResults(summary, per_fold, per_class, predictions, confusion, mrmr, honesty_, config, class_names)
