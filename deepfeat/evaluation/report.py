"""Write a cross-validation run to disk: CSV tables, ``config.json``, ``report.md`` and a self-contained
``report.html`` (plots embedded as base64 PNG), with the honesty statements at the top of both reports."""
from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import plots
from deepfeat.fileio import atomic_write_bytes, sha256_file, write_csv

__all__ = ["write_report"]

_SUMMARY_COLS = ["config", "n_features", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                 "specificity_macro", "f1_macro", "roc_auc", "fit_time", "predict_time"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _compact_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """mean +- std strings, percentages for the rate metrics."""
    out = pd.DataFrame({"config": summary["config"], "features": summary["n_features"].round(0)})
    for m in _SUMMARY_COLS[2:]:
        mean, std = summary[f"{m}_mean"], summary[f"{m}_std"]
        if m.endswith("time"):
            out[f"{m} (s)"] = [f"{a:.3f}" for a in mean]
        elif m == "roc_auc":
            out[m] = [f"{a:.3f} ± {b:.3f}" for a, b in zip(mean, std)]
        else:
            out[f"{m} %"] = [f"{100 * a:.2f} ± {100 * b:.2f}" for a, b in zip(mean, std)]
    return out


def _table3(per_class: pd.DataFrame) -> pd.DataFrame:
    """The study's Table 3: per-class precision / recall / F1 (%) for each configuration."""
    out = per_class[["config", "class", "support"]].copy()
    for m in ("precision", "recall", "specificity", "f1"):
        out[f"{m} %"] = [f"{100 * a:.2f} ± {100 * b:.2f}" for a, b in zip(per_class[f"{m}_mean"],
                                                                          per_class[f"{m}_std"])]
    return out


def _markdown(df: pd.DataFrame, index: bool = False) -> str:
    df = df.reset_index() if index else df
    cells = [[str(c) for c in df.columns]] + [[str(v).replace("|", "\\|") for v in row]
                                             for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "---|" * len(df.columns))
    return "\n".join(lines)


def _duplicates_table(dups: dict) -> pd.DataFrame:
    rows = [{"sha256": g["sha256"][:12], "paths": " = ".join(g["paths"]), "labels": ", ".join(g["labels"]),
             "conflict": "YES" if len(set(g["labels"])) > 1 else ""} for g in dups.get("groups", [])]
    return pd.DataFrame(rows, columns=["sha256", "paths", "labels", "conflict"])


def _figures(results) -> list[tuple[str, str, bytes]]:
    """(file stem, caption, PNG bytes) for every plot."""
    figs = [("accuracy", "Accuracy of each classifier: all vs selected features (baselines as lines)",
             plots.accuracy_bars_png(results.summary))]
    if len(results.mrmr):
        figs.append(("mrmr_scores", "Feature weights: mRMR scores in pick order", plots.mrmr_scores_png(results.mrmr)))
    for cfg, entry in results.confusion.items():
        figs.append((f"confusion_{_slug(cfg)}", f"Confusion matrix (summed over folds): {cfg}",
                     plots.confusion_png(entry["matrix"], entry["classes"], cfg)))
    for cfg in results.confusion:
        if not cfg.startswith("baseline-majority"):  # constant scores: an uninformative diagonal
            figs.append((f"roc_{_slug(cfg)}", f"ROC curves: {cfg}", plots.roc_png(results.predictions, cfg,
                                                                                   results.classes)))
    return figs


#: Written last; a folder without it (or whose files differ from it) is an unfinished report.
COMPLETE_MARKER = "report.complete.json"
#: Everything write_report owns in a report folder; a rerun removes these first (replace, not merge).
REPORT_FILES = ("results.csv", "per_fold.csv", "per_class.csv", "predictions.csv", "config.json", "report.md",
                "report.html")


def start_report(out: Path) -> None:
    """Remove the completion marker, the previous report's files and its plots/ before writing a new one.

    Other files in the folder (an experiment's features.npz, finetuned.pt, demo images) are left alone.
    """
    (out / COMPLETE_MARKER).unlink(missing_ok=True)  # first: from now on the folder reads as unfinished
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "plots", ignore_errors=True)


def finish_report(out: Path, paths: dict) -> Path:
    """Write the completion marker: every report file with its sha256."""
    files = {p.relative_to(out).as_posix(): sha256_file(p) for p in paths.values()}
    marker = out / COMPLETE_MARKER
    atomic_write_bytes(marker, json.dumps({"complete": True, "files": files}, indent=1).encode())
    return marker


def check_report(out_dir) -> dict:
    """The marker of a finished report folder; :class:`DeepfeatError` when it is unfinished or was changed.

    An interrupted ``deepfeat cv`` leaves CSVs without the marker: this tells such a folder from a finished one.
    """
    out = Path(out_dir)
    try:
        marker = json.loads((out / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        raise DeepfeatError(f"report folder {out} is unfinished (no valid {COMPLETE_MARKER}): the run that wrote it "
                            "was interrupted or failed; run it again") from None
    changed = [f for f, sha in marker.get("files", {}).items()
               if not (out / f).is_file() or sha256_file(out / f) != sha]
    if changed:
        raise DeepfeatError(f"report folder {out}: {len(changed)} file(s) missing or changed since the report was "
                            f"finished (e.g. {changed[0]}); run it again")
    return marker


def write_report(results, out_dir) -> dict:
    """Write every table, ``config.json``, the plots, ``report.md`` and ``report.html`` into ``out_dir``.

    Returns
    -------
    dict
        name -> Path of each file written (``results``, ``per_fold``, ``per_class``, ``predictions``, ``config``,
        ``report_md``, ``report_html``, and ``plot_<stem>`` for each PNG under ``plots/``).
    """
    out = Path(out_dir)
    start_report(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in (("results", results.summary), ("per_fold", results.per_fold),
                     ("per_class", results.per_class), ("predictions", results.predictions)):
        paths[name] = out / f"{name}.csv"
        write_csv(df, paths[name])
    paths["config"] = out / "config.json"
    config = {**results.config, "honesty": results.honesty,
              "confusion": {k: {"classes": v["classes"], "matrix": v["matrix"]} for k, v in results.confusion.items()}}
    paths["config"].write_text(json.dumps(config, indent=2, default=_json_default))

    figs = _figures(results)
    for stem, _, png in figs:
        paths[f"plot_{stem}"] = out / "plots" / f"{stem}.png"
        paths[f"plot_{stem}"].write_bytes(png)

    honesty = results.honesty_lines()
    table = results.table()
    summary = _compact_summary(results.summary)
    table3 = _table3(results.per_class)
    dups = _duplicates_table(results.honesty["duplicates"])
    meta = results.config["featureset"]
    title = f"deepfeat cross-validation report ({meta['meta'].get('backbone', 'features')})"
    intro = (f"{meta['n_rows']} images x {meta['n_features']} features, classes {meta['class_counts']}; "
             f"FeatureSet identity {meta['identity'][:16]}.")

    md = [f"# {title}", "", intro, "", "## Honesty", ""] + [f"- {line}" for line in honesty]
    md += ["", "## Accuracy (Table 2 at a glance)", "", _markdown(table, index=True), "",
           "## All metrics (mean ± std over folds)", "", _markdown(summary), "",
           "## Per-class precision / recall / F1 (Table 3)", "", _markdown(table3), ""]
    if len(dups):
        md += ["## Byte-identical images", "", _markdown(dups), ""]
    md += ["## Figures", ""] + [f"![{cap}](plots/{stem}.png)" for stem, cap, _ in figs]
    md += ["", "Files: results.csv, per_fold.csv, per_class.csv, predictions.csv, config.json (versions, seeds, "
           "parameters: everything needed to re-run)."]
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text("\n".join(md) + "\n")

    def frame(df, index=False):
        return df.to_html(index=index, border=0, classes="t", escape=True)

    items = "".join(f"<li class='{'warn' if line.startswith('WARNING') else ''}'>{html.escape(line)}</li>"
                    for line in honesty)
    imgs = "".join(f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,"
                   f"{base64.b64encode(png).decode()}'><figcaption>{html.escape(cap)}</figcaption></figure>"
                   for _, cap, png in figs)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table.t{{border-collapse:collapse;font-size:13px;margin:0.5em 0}} table.t td,table.t th{{padding:3px 8px;
border-bottom:1px solid #ddd;text-align:left}} li.warn{{color:#b00;font-weight:bold}}
figure{{display:inline-block;margin:0.5em}} img{{max-width:520px}} figcaption{{font-size:12px;color:#555}}
</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>
<h2>Honesty</h2><ul>{items}</ul>
<h2>Accuracy (Table 2 at a glance)</h2>{frame(table, index=True)}
<h2>All metrics (mean &plusmn; std over folds)</h2>{frame(summary)}
<h2>Per-class precision / recall / F1 (Table 3)</h2>{frame(table3)}
{"<h2>Byte-identical images</h2>" + frame(dups) if len(dups) else ""}
<h2>Figures</h2>{imgs}
<p>Tables as CSV beside this file; config.json holds versions, seeds and parameters.</p></body></html>"""
    paths["report_html"] = out / "report.html"
    paths["report_html"].write_text(page)
    paths["complete"] = finish_report(out, paths)
    return paths
