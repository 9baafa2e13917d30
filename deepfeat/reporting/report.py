"""Write a cross-validation run to disk: CSV tables, ``config.json``, the plots, and ``report.md`` and a
self-contained ``report.html`` rendered from the Jinja2 templates in ``deepfeat/reporting/templates``.

The page reads top to bottom as a researcher asks: the verdict (generated from the numbers, with the warnings that
change how to read it), pictures (accuracy with intervals, per-class heatmap, confusion and ROC small multiples,
mRMR scores), the cells themselves (misclassified and duplicate images as embedded thumbnails, bounded by
:data:`deepfeat.reporting.gallery.GALLERY_LIMITS`), how it was measured (the honesty statements), then the
tables, collapsed. Plots are embedded as base64 PNG and thumbnails as base64 JPEG, so the single HTML file works
when mailed.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from deepfeat import defaults
from deepfeat.evaluation.fold_work import BASELINE_MAJORITY
from deepfeat.fileio import atomic_write_bytes, write_csv
from deepfeat.reporting import plots, stats
from deepfeat.reporting.gallery import GALLERY_LIMITS, correct_gallery, duplicate_gallery, error_gallery
from deepfeat.reporting.saliency import attach_saliency
from deepfeat.reporting.trust import trust_figures, trust_frames, trust_tables
from deepfeat.reporting.verdict import build_verdict
from deepfeat.reporting.writing import (COMPLETE_MARKER, DASH, check_report, finish_report, fmt_number,
                                        fmt_probability, render,
                                        start_report, table_block, write_json, write_text)

# check_report, fmt_number and render live in deepfeat.reporting.writing (shared by every report); they stay
# importable from here, where 0.2 had them.
__all__ = ["COMPLETE_MARKER", "check_report", "fmt_number", "render", "write_report"]

_SUMMARY_COLS = ["config", "n_features", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                 "specificity_macro", "f1_macro", "roc_auc", "fit_time", "predict_time"]


def _pm(mean, std, scale=100.0, digits=2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}" if not math.isnan(std) else \
        f"{scale * mean:.{digits}f}"


def _summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """mean ± std strings, percentages for the rate metrics, feature counts as whole numbers."""
    out = pd.DataFrame({"config": summary["config"], "features": [fmt_number(v, 0) for v in summary["n_features"]]})
    for m in _SUMMARY_COLS[2:]:
        mean, std = summary[f"{m}_mean"], summary[f"{m}_std"]
        if m.endswith("time"):
            out[f"{m} (s)"] = [fmt_number(a, 3) for a in mean]
        elif m == "roc_auc":
            out[m] = [_pm(a, b, 1.0, 3) for a, b in zip(mean, std)]
        else:
            out[f"{m} %"] = [_pm(a, b) for a, b in zip(mean, std)]
    return out


def _table3(per_class: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 3: per-class precision / recall / specificity / F1 (%) for each configuration."""
    out = per_class[["config", "class"]].copy()
    out["support"] = [fmt_number(v, 0) for v in per_class["support"]]
    for m in ("precision", "recall", "specificity", "f1"):
        out[f"{m} %"] = [_pm(a, b) for a, b in zip(per_class[f"{m}_mean"], per_class[f"{m}_std"])]
    return out


def _intervals_table(ivals: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"config": ivals["config"], "accuracy %": [f"{100 * v:.2f}" for v in ivals["mean"]],
                         "95 % interval": [f"{100 * a:.2f} to {100 * b:.2f}" if not math.isnan(a) else DASH
                                             for a, b in zip(ivals["low"], ivals["high"])],
                         "fold scores": [str(n) for n in ivals["n"]]})


def _comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    out = comparisons[["config_a", "config_b"]].copy()
    out["difference (pp)"] = [f"{100 * v:+.2f}" for v in comparisons["mean_diff"]]
    out["95 % interval (pp)"] = [f"{100 * a:+.2f} to {100 * b:+.2f}" for a, b in
                                 zip(comparisons["ci_low"], comparisons["ci_high"])]
    for col in ("p_value", "p_better", "p_rope", "p_worse"):
        if col in comparisons.columns:
            out[col] = [fmt_probability(v) for v in comparisons[col]]
    return out


def _duplicates_table(dups: dict) -> pd.DataFrame:
    rows = [{"sha256": g["sha256"][:12], "paths": " = ".join(g["paths"]), "labels": ", ".join(g["labels"]),
             "conflict": "YES" if len(set(g["labels"])) > 1 else ""} for g in dups.get("groups", [])]
    return pd.DataFrame(rows, columns=["sha256", "paths", "labels", "conflict"])


def _label_note(classes) -> str:
    """The confusion matrices' class-label legend, for their caption (empty when every name is shown whole)."""
    legend = plots.class_labels(classes)[1]
    return f"; class labels: {plots.legend_text(legend)}" if legend else ""


def _draw(_shared, i, draw, args) -> tuple[int, bytes]:
    return i, draw(*args)


def _figures(results, verdict) -> list[dict]:
    """Every plot: stem, caption and PNG bytes, in reading order. Drawn in worker processes when the
    cross-validation ran on several (``config["parameters"]["n_jobs"]``): the same bytes, about half the wall time
    on 2 cores."""
    order = list(verdict["intervals"]["config"])
    informative = [c for c in order if not c.startswith(BASELINE_MAJORITY)]  # constant scores: nothing to see
    figs = [("accuracy", "Accuracy of every configuration with its 95 % interval over the folds; baselines as lines. "
             f"Interval: {verdict['interval_method']}",
             plots.accuracy_intervals_png, (verdict["intervals"],)),
            ("class_heatmap", "Per-class recall and F1 (%, mean over folds): where each configuration fails",
             plots.class_heatmap_png, (results.per_class, order, results.classes)),
            ("confusion", "Confusion matrices (summed over folds; shading = share of the true class)"
             + _label_note(results.classes),
             plots.confusion_grid_png, (results.confusion, order)),
            ("roc", "ROC curves, one-vs-rest, pooled out-of-fold scores",
             plots.roc_grid_png, (results.predictions, informative, results.classes))]
    figs += trust_figures(results, informative)  # reliability diagrams (calibration)
    if len(results.mrmr):
        figs.append(("mrmr_scores", "Feature weights: mRMR scores in pick order", plots.mrmr_scores_png,
                     (results.mrmr,)))
    n_jobs = results.config.get("parameters", {}).get("n_jobs", 1)
    if isinstance(n_jobs, int) and n_jobs != 1 and len(figs) > 1:
        from deepfeat.workers import imap_unordered

        drawn = dict(imap_unordered(_draw, [(i, draw, args) for i, (_, _, draw, args) in enumerate(figs)],
                                    n_jobs=n_jobs))
        pngs = [drawn[i] for i in range(len(figs))]
    else:
        pngs = [draw(*args) for _, _, draw, args in figs]
    return [{"stem": s, "caption": c, "png": p} for (s, c, _, _), p in zip(figs, pngs)]


#: Everything write_report owns in a report folder; a rerun removes these first (replace, not merge).
REPORT_FILES = ("results.csv", "per_fold.csv", "per_class.csv", "predictions.csv", "comparisons.csv", "nested.csv",
                "calibration.csv", "conformal.csv", "config.json", "report.md", "report.html")


def write_report(results, out_dir, *, gallery_limits: dict | None = None, features=None,
                 saliency: bool = defaults.SALIENCY) -> dict:
    """Write every table, ``config.json``, the plots, ``report.md`` and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    results : CVResults
    out_dir : path-like
    gallery_limits : dict, optional
        Overrides of :data:`deepfeat.reporting.gallery.GALLERY_LIMITS` (``max_errors``, ``max_duplicate_groups``,
        ``max_per_group``, ``px``, ``quality``, ``correct_per_class``): the caps that bound the size of
        ``report.html``.
    features : FeatureSet, optional
        The FeatureSet that was cross-validated: with it, the gallery's images get saliency overlays
        (:func:`deepfeat.reporting.saliency.attach_saliency`) when its network can be rebuilt offline and the
        images are reachable; otherwise the report says why there are none.
    saliency : bool, default True
        False: no overlays (the report says they were switched off); each costs about one forward pass.

    Returns
    -------
    dict
        name -> Path of each file written (``results``, ``per_fold``, ``per_class``, ``predictions``, ``config``,
        ``report_md``, ``report_html``, and ``plot_<stem>`` for each PNG under ``plots/``).
    """
    out = Path(out_dir)
    start_report(out, REPORT_FILES, folders=("plots",))
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in (("results", results.summary), ("per_fold", results.per_fold),
                     ("per_class", results.per_class), ("predictions", results.predictions)):
        paths[name] = out / f"{name}.csv"
        write_csv(df, paths[name])
    for name, df in trust_frames(results).items():  # calibration.csv, conformal.csv (when measured)
        if df is not None and len(df):
            paths[name] = out / f"{name}.csv"
            write_csv(df, paths[name])
    comparisons = getattr(results, "comparisons", None)
    paths.update(stats.write_statistics_tables(results, out))  # comparisons.csv, nested.csv
    paths["config"] = out / "config.json"
    config = {**results.config, "honesty": results.honesty, "nested": stats.nested_config(results),
              "confusion": {k: {"classes": v["classes"], "matrix": v["matrix"]} for k, v in results.confusion.items()}}
    verdict = build_verdict(results)
    limits = {**GALLERY_LIMITS, **(gallery_limits or {})}
    errors = error_gallery(results.predictions, verdict["best"], results.classes, limits=limits) \
        if verdict["best"] else None
    correct = correct_gallery(results.predictions, verdict["best"], results.classes, limits=limits) \
        if verdict["best"] else None
    saliency = attach_saliency(features, results, verdict["best"], [errors, correct], limits) if saliency else \
        {"n_overlays": 0, "note": "Saliency maps were not drawn: switched off (deepfeat cv --no-saliency; saliency=False in Python)."}
    config["saliency"] = {k: saliency.get(k) for k in ("n_overlays", "note")}
    write_json(paths["config"], config)

    figs = _figures(results, verdict)
    for f in figs:
        paths[f"plot_{f['stem']}"] = out / "plots" / f"{f['stem']}.png"
        atomic_write_bytes(paths[f"plot_{f['stem']}"], f["png"], fsync=False)

    dups = duplicate_gallery(results.honesty["duplicates"], limits=limits)
    tables = [table_block(results.table().reset_index(), key="table2", open_=True,
                          title="Accuracy % (Table 2 at a glance, mean ± std over folds)"),
              table_block(_intervals_table(verdict["intervals"]), key="intervals",
                          title="Accuracy with 95 % intervals, best first",
                          note=f"Interval over the fold scores of each configuration: {verdict['interval_method']}.")]
    if comparisons is not None:
        tables.append(table_block(_comparisons_table(comparisons), key="comparisons",
                                  title="Pairwise comparisons (accuracy difference a - b, percentage points)"))
    tables += [table_block(_summary_table(results.summary), key="metrics",
                           title="All metrics (mean ± std over folds)"),
               table_block(_table3(results.per_class), key="table3",
                           title="Per-class precision / recall / specificity / F1 (Table 3)")]
    tables += trust_tables(results)
    dup_table = _duplicates_table(results.honesty["duplicates"])
    if len(dup_table):
        tables.append(table_block(dup_table, title="Byte-identical images", key="duplicates"))
    meta = results.config["featureset"]
    model = meta["meta"].get("model") or meta["meta"].get("backbone") or "features"
    context = {
        "title": f"deepfeat cross-validation report ({model})",
        "intro": (f"{meta['n_rows']} images x {fmt_number(meta['n_features'])} features, classes "
                  + ", ".join(f"{k} {v}" for k, v in meta["class_counts"].items())
                  + f"; FeatureSet identity {meta['identity'][:16]}."),
        "verdict": verdict, "figures": figs, "errors": errors, "duplicates": dups, "limits": limits,
        "correct": correct, "saliency": saliency,
        "honesty": results.honesty_lines(), "tables": tables,
        "statistics": stats.statistics_sections(results),
    }
    paths["report_md"] = out / "report.md"
    write_text(paths["report_md"], render("report.md.j2", **context))
    paths["report_html"] = out / "report.html"
    write_text(paths["report_html"], render("report.html.j2", **context))
    paths["complete"] = finish_report(out, paths)
    return paths
