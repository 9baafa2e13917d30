"""The comparison report of ``deepfeat compare``: ``report.html``, ``report.md``, ``comparison.csv`` (one row per
system), ``per_fold.csv``, ``predictions.csv``, ``folds.csv`` (cost and provenance of every system's folds) and
``config.json`` (seeds, folds, versions, every system's configuration and hash), on the shared templates.

The page reads: what was compared and how (same folds, training folds only), the sentences generated from the
table (best system, each system against the reference method and the colour baseline), the table itself with
intervals, p-values, cost and the paper's own figure beside it (other data, other splits: never comparable), the
offline twins and the systems left out, the honesty statements of the cross-validation, then the pairwise
statistics and the confusion matrices.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from deepfeat.evaluation.systems import system_table
from deepfeat.fileio import write_csv
from deepfeat.reporting import plots
from deepfeat.reporting.report import _comparisons_table
from deepfeat.reporting.writing import (DASH, finish_report, fmt_number, fmt_probability, probability_relation,
                                        render, start_report, table_block, write_json, write_text)

__all__ = ["COMPARE_FILES", "write_compare_report"]

#: Everything write_compare_report owns in the folder (``systems/`` holds the kept folds and is never removed).
COMPARE_FILES = ("comparison.csv", "per_fold.csv", "predictions.csv", "folds.csv", "config.json", "report.md",
                 "report.html")


def _pct_interval(row) -> str:
    if not math.isfinite(row["accuracy"]):
        return DASH
    if not (math.isfinite(row["accuracy_low"]) and math.isfinite(row["accuracy_high"])):
        return f"{100 * row['accuracy']:.1f}"
    return f"{100 * row['accuracy']:.1f} ({100 * row['accuracy_low']:.1f} to {100 * row['accuracy_high']:.1f})"


def _pp(diff: float) -> str:
    """A difference of accuracies in percentage points, signed; 0.0 when it rounds to nothing."""
    if not math.isfinite(diff):
        return DASH
    text = f"{100 * diff:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def _display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it: percentages with intervals, p-values by the house rounding rule."""
    return pd.DataFrame({
        "system": [f"{r.label} [{r.system}]" if r.kind not in ("baseline",) else r.label
                   for r in table.itertuples()],
        "kind": table["kind"],
        "accuracy % (95 % interval)": [_pct_interval(r) for _, r in table.iterrows()],
        "macro F1": [fmt_number(v, 3) for v in table["f1_macro"]],
        "ROC AUC": [fmt_number(v, 3) for v in table["roc_auc"]],
        "vs reference (pp)": [_pp(v) for v in table["diff_vs_reference"]],
        "p vs reference": [fmt_probability(v) for v in table["p_vs_reference"]],
        "p vs colour baseline": [fmt_probability(v) for v in table["p_vs_colour_baseline"]],
        "train CPU-s": [fmt_number(v, 0) if math.isfinite(v) and v >= 10 else fmt_number(v, 1)
                        for v in table["train_cpu_s"]],
        "GPU-s": [fmt_number(v, 1) for v in table["gpu_s"]],
        "offline twin of": [v or "" for v in table["offline_twin_of"]],
        "paper's own figure (other data)": [f"{r.reported} ({r.paper})" if r.reported else (r.paper or "")
                                            for r in table.itertuples()],
    })


def _sentences(comparison, table: pd.DataFrame) -> list[str]:
    res = comparison.results
    folds = comparison.config["folds"]
    n = comparison.config["n_images"]
    systems = table[~table["kind"].isin(("baseline", "nested"))]
    best = systems.loc[systems["accuracy"].idxmax()]
    out = [f"{len(systems)} systems on the same {folds} outer folds of {n} images (seed "
           f"{comparison.config['seed']}); each trained on the training folds only, networks fine-tuned inside "
           "each training fold with early stopping on a split of that training fold.",
           f"Highest accuracy: {best['label']} ({_pct_interval(best)} %)."]
    close = [r["label"] for _, r in systems.iterrows()
             if r["system"] != best["system"] and r["accuracy"] >= best["accuracy"] - 0.005]
    if close:
        out[-1] += f" Within 0.5 percentage points of it: {'; '.join(close)}."
    ref = comparison.reference
    for _, r in systems.iterrows():
        if r["system"] == ref.name:
            continue
        text = f"{r['label']}: {_pct_interval(r)} %"
        if math.isfinite(r["diff_vs_reference"]):
            text += (f", {_pp(r['diff_vs_reference'])} percentage points against the reference method "
                     f"(p {probability_relation(r['p_vs_reference'])})")
        if math.isfinite(r["p_vs_colour_baseline"]):
            text += f", against the colour baseline p {probability_relation(r['p_vs_colour_baseline'])}"
        out.append(text + ".")
    nested = table[table["kind"] == "nested"]
    if len(nested):
        r = nested.iloc[0]
        out.append(f"Nested estimate of the reference method (its configuration chosen inside each training fold): "
                   f"{_pct_interval(r)} %.")
    out.append("p-values: corrected resampled t-test over the folds (Nadeau and Bengio); with "
               f"{folds} folds they are weak evidence either way. Intervals: {res.honesty['folds']}")
    return out


def _notes(comparison) -> list[str]:
    notes = []
    for s in comparison.systems:
        if s.twin_of:
            notes.append(f"{s.name} is the OFFLINE TWIN of {s.twin_of}: {s.twin_note or 'weights that ship'}; "
                         f"its row measures the twin, not {s.twin_of}.")
    for name, why in comparison.skipped.items():
        notes.append(f"LEFT OUT: {name} (its weights cannot be had here: {why}).")
    for name, recs in comparison.records.items():
        now = [r for r in recs if r and r.get("run_id") == comparison.run_id]
        reasons = sorted({r["computed_because"] for r in now if r["computed_because"] != "new"})
        loaded = sum(1 for r in recs if r) - len(now)
        notes.append(f"{name}: {len(now)} fold(s) computed in this run, {loaded} loaded from kept results"
                     + (f" (recomputed because {'; '.join(reasons)})" if reasons else "") + ".")
    notes.append(f"The reference method ({comparison.reference.name}) and the baselines are scored again by every "
                 "run (seconds: their frozen features come from the feature cache); their out-of-fold predictions "
                 "are in predictions.csv.")
    notes.append("The papers' own figures are on other data with other splits; they are shown for orientation, "
                 "never as a comparison.")
    notes.append("Cost: CPU-seconds of this process and its finished worker processes, summed over the folds "
                 "(networks: fine-tuning and predicting; features systems: their frozen features, once, plus the "
                 "classifier's fits; features served by the feature cache cost nothing here); a fold loaded from "
                 "kept results shows the cost of the run that computed it, and a fold whose interrupted "
                 "fine-tuning was resumed only the resumed part. GPU-s: wall seconds of training on a "
                 "CUDA device.")
    return notes


def _folds_frame(comparison) -> pd.DataFrame:
    rows = []
    for name, recs in comparison.records.items():
        for k, r in enumerate(recs):
            if r is None:
                continue
            rows.append({"system": name, "fold": k, "computed_in_this_run": r.get("run_id") == comparison.run_id,
                         "computed_because": r["computed_because"], "n_train": r["n_train"], "n_test": r["n_test"],
                         "cpu_s": r["cpu_s"], "gpu_s": r["gpu_s"], "wall_s": r["wall_s"], "device": r["device"],
                         "checkpoint_sha256": r.get("checkpoint_sha256") or "", "finished": r["finished"]})
    return pd.DataFrame(rows, columns=["system", "fold", "computed_in_this_run", "computed_because", "n_train",
                                       "n_test", "cpu_s", "gpu_s", "wall_s", "device", "checkpoint_sha256",
                                       "finished"])


def write_compare_report(comparison, out_dir) -> dict:
    """Write the comparison report into ``out_dir`` (beside its kept folds in ``out_dir/systems``).

    Returns
    -------
    dict
        name -> Path of each file written (``comparison``, ``per_fold``, ``predictions``, ``folds``, ``config``,
        ``report_md``, ``report_html``, ``complete``), and ``table`` (the numeric table, a DataFrame).
    """
    out = Path(out_dir)
    start_report(out, COMPARE_FILES)
    res = comparison.results
    table = system_table(comparison)
    folds = _folds_frame(comparison)
    paths = {}
    for name, df in (("comparison", table), ("per_fold", res.per_fold), ("predictions", res.predictions),
                     ("folds", folds)):
        paths[name] = out / f"{name}.csv"
        write_csv(df, paths[name])
    paths["config"] = out / "config.json"
    write_json(paths["config"], {**comparison.config, "cross_validation": res.config["parameters"],
                                 "honesty": res.honesty, "extraction": comparison.extraction,
                                 "fold_records": comparison.records,
                                 "nested": {k: v for k, v in (comparison.nested or {}).items() if k != "outer"}})
    configs = [c for c in table["config"] if c in res.confusion]
    figures = [{"stem": "confusion", "caption": "Confusion matrices summed over the folds, one per system",
                "png": plots.confusion_grid_png(res.confusion, configs)}]
    tables = [table_block(_display_table(table), key="systems", open_=True,
                          title="Every system on the same folds"),
              table_block(_comparisons_table(res.comparisons), key="pairs",
                          title="Pairwise comparisons (accuracy difference a - b, percentage points)"),
              table_block(folds.assign(cpu_s=[fmt_number(v, 1) for v in folds["cpu_s"]],
                                       wall_s=[fmt_number(v, 1) for v in folds["wall_s"]],
                                       checkpoint_sha256=[v[:16] for v in folds["checkpoint_sha256"]]),
                          key="folds", title="Each system's folds: cost and provenance")]
    groups = res.config["featureset"]["class_counts"]
    context = {"title": "deepfeat comparison of related systems",
               "intro": (f"{comparison.config['n_images']} images of {comparison.config['source']}, classes "
                         + ", ".join(f"{k} {v}" for k, v in groups.items())
                         + f"; reference method {comparison.reference.label} ({comparison.reference.name})."),
               "sentences": _sentences(comparison, table), "notes": _notes(comparison),
               "honesty": res.honesty_lines(), "figures": figures, "tables": tables}
    paths["report_md"] = out / "report.md"
    write_text(paths["report_md"], render("compare_report.md.j2", **context))
    paths["report_html"] = out / "report.html"
    write_text(paths["report_html"], render("compare_report.html.j2", **context))
    paths["complete"] = finish_report(out, paths)
    paths["table"] = table
    return paths
