"""The fine-tuning report: ``NAME.report.html`` and ``NAME.report.md`` beside the checkpoint, from the same
templates, styles and thumbnail gallery as the cross-validation report.

It shows what a fine-tuning run did, in reading order: a summary generated from the numbers (kept epoch,
validation accuracy with a Wilson 95 % interval over the validation images, macro F1, the train / validation
gap), the loss and accuracy curves, the validation confusion matrix, the validation images the network got wrong
(most confident first, capped as in :data:`deepfeat.reporting.gallery.GALLERY_LIMITS`), then the per-epoch table.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from deepfeat.finetuning.checkpoints import sibling
from deepfeat.reporting import plots
from deepfeat.reporting.gallery import GALLERY_LIMITS, misclassified_gallery
from deepfeat.evaluation.intervals import wilson_interval
from deepfeat.reporting.writing import fmt_number, render, table_block, write_text

__all__ = ["wilson_interval", "write_finetune_report"]


def _errors(metrics: dict, class_names, limits: dict) -> dict | None:
    """The validation images the kept network got wrong, as the CV report's gallery shows them."""
    paths = metrics.get("val_paths") or []
    pred, true, conf = metrics.get("val_predictions"), metrics.get("val_true"), metrics.get("val_confidence")
    if not paths or pred is None or true is None or len(paths) != len(pred):
        return None
    frame = pd.DataFrame({"path": paths, "row": range(len(paths)), "true": [class_names[i] for i in true],
                          "pred": [class_names[i] for i in pred],
                          "score_pred": conf if conf is not None else [math.nan] * len(pred)})
    gallery = misclassified_gallery(frame[frame["true"] != frame["pred"]], len(frame), limits=limits,
                                    tested="validation images misclassified by the kept network",
                                    recorded="the recorded paths")
    return {**gallery, "score_kind": "probability", "config": "the fine-tuned network"}


def _plan_sentences(result) -> list[str]:
    """How long it trained, in optimizer steps, and what the recipe did before and around the epochs."""
    plan, out = result.plan or {}, []
    if plan:
        done = len(result.curves) * plan["steps_per_epoch"]
        out.append(f"{done} optimizer steps in all ({plan['steps_per_epoch']} per epoch at batch size "
                   f"{plan['batch_size']}).")
        if plan.get("frozen_stages"):
            out.append(f"The first {plan['frozen_stages']} of {plan['n_stages']} network stages stayed frozen"
                       + (f" and their output was computed once per image and view ({len(plan['views'])} views)."
                          if plan.get("cached_trunk") else "."))
        out += [f"Note: {n}." for n in plan.get("notes", [])]
    if result.linear_probe:
        lp = result.linear_probe
        out.append(f"Linear probe first (LP-FT): the new head was fitted on the frozen network's outputs of "
                   f"{lp['images']} training images (training accuracy {100 * lp['train_accuracy']:.1f} %).")
    if result.stopped_early:
        out.append(f"Early stopping ended the run after epoch {result.stopped_early}.")
    return out


def _frozen_layer(c: dict) -> str:
    layer = c.get("frozen_layer", c["layer"])
    return layer if layer == c["layer"] else f"{layer} features (its {c['layer']} come from an untrained head)"


def _comparison_table(comparison: dict | None):
    if not comparison or comparison.get("skipped"):
        return None
    c = comparison
    rows = [("the fine-tuned network, end to end", c["network"]),
            (f"SVM on the fine-tuned network's {c['layer']}", c["finetuned_svm"]),
            (f"SVM on the frozen starting network's {_frozen_layer(c)}", c["frozen_svm"])]
    frame = pd.DataFrame({"classifier": [r[0] for r in rows],
                          "validation accuracy %": [fmt_number(100 * r[1], 2) if r[1] is not None else "—"
                                                    for r in rows]})
    return table_block(frame, title=f"The same {c['n_val']} validation images, three ways (SVMs fitted on the "
                               f"{c['n_train']} training images)", key="threeways", open_=True)


def write_finetune_report(result, out=None, *, gallery_limits: dict | None = None,
                          comparison: dict | None = None) -> dict:
    """Write ``NAME.report.html`` and ``NAME.report.md`` for a :class:`deepfeat.finetuning.run.FinetuneResult`.

    Parameters
    ----------
    result : FinetuneResult
    out : path-like, optional
        The HTML file to write; default: beside the checkpoint, ``NAME.report.html``.
    gallery_limits : dict, optional
        Overrides of :data:`deepfeat.reporting.gallery.GALLERY_LIMITS`.
    comparison : dict, optional
        :func:`deepfeat.evaluation.finetune_compare.split_comparison`: the network end to end next to SVMs on
        fine-tuned and frozen features, on the same validation images.

    Returns
    -------
    dict
        ``report_html`` and ``report_md`` paths.
    """
    limits = {**GALLERY_LIMITS, **(gallery_limits or {})}
    html_path = Path(out) if out is not None else sibling(Path(result.checkpoint), "report", ".html")
    md_path = html_path.with_suffix(".md")
    m, curves, names = result.metrics, result.curves, list(result.class_names)
    best = curves[curves["epoch"] == result.best_epoch]
    sentences = [f"Fine-tuned on {result.n_train} images for {len(curves)} epoch(s) "
                 f"({fmt_number(result.seconds, 0)} s); kept epoch {result.best_epoch}."]
    if m.get("accuracy") is not None and result.n_val:
        k = round(m["accuracy"] * result.n_val)
        lo, hi = wilson_interval(k, result.n_val)
        sentences.append(f"On its {result.n_val} validation images the network is right {100 * m['accuracy']:.1f} % "
                         f"of the time (Wilson 95 % interval {100 * lo:.1f} % to {100 * hi:.1f} %), macro F1 "
                         f"{m['f1_macro']:.3f}.")
        if len(best) and pd.notna(best["train_acc"].iloc[0]):
            gap = best["train_acc"].iloc[0] - m["accuracy"]
            sentences.append(f"Training accuracy at that epoch: {100 * best['train_acc'].iloc[0]:.1f} % "
                             f"(gap {100 * gap:+.1f} percentage points).")
        sentences.append("The validation split also chose the kept epoch, so its accuracy is slightly optimistic; "
                         "quote cross-validation with fine-tuning inside the folds instead.")
    else:
        sentences.append("No validation split: nothing was measured on held-out images.")
    sentences += _plan_sentences(result)
    if comparison and not comparison.get("skipped"):
        c = comparison
        sentences.append(f"On the same validation images an SVM on the fine-tuned network's {c['layer']} is right "
                         f"{100 * c['finetuned_svm']:.1f} % of the time, on the frozen network's "
                         f"{_frozen_layer(c)} {100 * c['frozen_svm']:.1f} %.")
    figures = [{"stem": "curves", "caption": "Loss and accuracy per epoch (dashed: the kept epoch)",
                "png": plots.finetune_curves_png(curves, result.best_epoch)}]
    if m.get("confusion"):
        figures.append({"stem": "confusion", "caption": "Validation confusion matrix of the kept network",
                        "png": plots.confusion_png(m["confusion"], names, "validation")})
    table = curves.copy()
    for col in table.columns:
        if table[col].dtype.kind == "f":
            digits = 6 if col == "lr" else 4 if "loss" in col or "acc" in col or "f1" in col else 2
            table[col] = [fmt_number(v, digits) if col != "lr" else _lr(v) for v in table[col]]
    tables = [t for t in (_comparison_table(comparison),) if t is not None]
    tables.append(table_block(table, title="Per-epoch curves", key="curves", open_=True))
    if m.get("f1_per_class"):
        tables.append(table_block(pd.DataFrame({"class": names, "validation F1": [fmt_number(v, 3) for v in
                                                                             m["f1_per_class"]]}),
                             title="Per-class F1 on the validation split", key="f1"))
    context = {"title": f"deepfeat fine-tuning report ({Path(result.checkpoint).name})",
               "intro": f"checkpoint {result.checkpoint}; classes {', '.join(names)}.",
               "sentences": sentences, "figures": figures, "errors": _errors(m, names, limits), "limits": limits,
               "tables": tables}
    write_text(html_path, render("finetune_report.html.j2", **context))
    write_text(md_path, render("finetune_report.md.j2", **context,
                               figure_files={"curves": Path(result.files["curves_png"]).name}
                               if result.files.get("curves_png") else {}))
    return {"report_html": html_path, "report_md": md_path}


def _lr(v) -> str:
    """Learning rates in scientific notation, missing as a dash."""
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3g}"
