"""Report sections for the comparison statistics and nested CV: "Which configurations differ" and the nested
headline. Kept apart from :mod:`deepfeat.reporting.report` so the report layout can change without touching them;
they read only ``results.comparisons``, ``results.nested`` and ``results.summary``.
"""
from __future__ import annotations

from pathlib import Path

from deepfeat.evaluation.compare import lookup
from deepfeat.evaluation.fold_work import BASELINE_HISTOGRAM as HIST
from deepfeat.fileio import write_csv
from deepfeat.reporting.writing import fmt_probability, probability_relation

__all__ = ["comparison_lines", "nested_lines", "statistics_sections", "write_statistics_tables"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _p(p: float) -> str:
    return f"p {probability_relation(p)}"


def nested_lines(results) -> list[str]:
    """The nested estimate as the headline, the best row beside it, the gap and the baseline comparison."""
    n = results.nested
    if not n:
        return []
    chosen = n["outer"]["config"].value_counts()
    lines = [f"Nested CV estimate (THE headline): {_pct(n['estimate'])}, 95 % interval [{_pct(n['ci_low'])}, "
             f"{_pct(n['ci_high'])}] over {len(n['outer'])} outer folds; the configuration was chosen in each outer "
             f"fold by {n['inner_folds']}-fold CV on its training part only, among {len(n['candidates'])} "
             "candidates.",
             f"Best row of the ordinary table: {n['best_of_table']} {_pct(n['best_of_table_accuracy'])}; gap "
             f"(selection optimism) {100 * n['gap']:+.2f} points"
             + (" (negative: the nested search also tries settings the table lacks, SVM C=10, KNN k=10 and mRMR "
                "size 100)." if n["gap"] < 0 else "."),
             "Chosen per outer fold: " + ", ".join(f"{c} ({k}x)" for c, k in chosen.items()) + "."]
    b = n.get("baseline")
    if b:
        verdict = ("significantly above" if b["p_value"] < 0.05 and b["mean_diff"] > 0 else
                   "significantly below" if b["p_value"] < 0.05 else "not distinguishable from")
        lines.append(f"Nested estimate vs {b['config']} ({_pct(b['accuracy'])}) on the same folds: difference "
                     f"{100 * b['mean_diff']:+.2f} points [{100 * b['ci_low']:+.2f}, {100 * b['ci_high']:+.2f}], "
                     f"{_p(b['p_value'])} (corrected resampled t-test): {verdict} the baseline.")
    return lines


def comparison_lines(results) -> list[str]:
    """Which configurations are indistinguishable from the best, and whether the best deep one beats the colour
    histogram baseline, in plain sentences."""
    comp, summary = results.comparisons, results.summary
    if comp is None or not len(comp):
        return ["No paired comparison: fewer than two configurations or folds."]
    best = summary.loc[summary["accuracy_mean"].idxmax()]
    same = []
    for cfg in summary["config"]:
        if cfg == best["config"]:
            continue
        c = lookup(comp, best["config"], cfg)
        if c is not None and c["p_value"] >= 0.05:
            same.append(f"{cfg} ({_pct(c['accuracy_b'])}, {_p(c['p_value'])})")
    lines = [f"Best row: {best['config']} ({_pct(best['accuracy_mean'])}). Indistinguishable from it at the 5 % "
             "level (corrected resampled t-test, p >= 0.05): " + ("; ".join(same) if same else "none") + "."]
    deep = summary[summary["kind"] != "baseline"]
    if HIST not in set(summary["config"]):
        lines.append("No colour-histogram baseline was scored (the images were not reachable or it was not asked "
                     "for), so deep features cannot be compared with it.")
    elif len(deep):
        top = deep.loc[deep["accuracy_mean"].idxmax(), "config"]
        c = lookup(comp, top, HIST)
        if c["p_value"] < 0.05:
            verdict = "beats" if c["mean_diff"] > 0 else "is significantly WORSE than"
        else:
            verdict = "does NOT significantly beat"
        text = (f"The best deep configuration, {top} ({_pct(c['accuracy_a'])}), {verdict} the colour-histogram "
                f"baseline ({_pct(c['accuracy_b'])}): difference {100 * c['mean_diff']:+.2f} points, 95 % interval "
                f"[{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}], {_p(c['p_value'])}.")
        if "p_better" in c and c["p_better"] == c["p_better"]:
            text += (f" Bayesian correlated t-test (ROPE ±{100 * c['rope']:.1f} points): P(better) "
                     f"{fmt_probability(c['p_better'])}, P(equivalent) {fmt_probability(c['p_rope'])}, P(worse) "
                     f"{fmt_probability(c['p_worse'])}.")
        lines.append(text + " (This best row was picked after seeing the table; the nested estimate, when given, "
                            "is the honest figure.)")
    return lines


_NOTE = ("p-values and 95 % intervals come from the corrected resampled t-test (Nadeau and Bengio 2003; Bouckaert and "
         "Frank 2004 for repeated CV) on per-fold accuracy differences; all pairs in comparisons.csv.")


def statistics_sections(results) -> list[dict]:
    """The report sections, for the templates' ``statistics`` macros: the nested headline (when run), then
    "Which configurations differ"; each a ``title``, its ``lines`` and a closing ``note``."""
    sections = []
    if results.nested:
        sections.append({"title": "Nested cross-validation (the honest estimate)", "lines": nested_lines(results),
                         "note": "Per outer fold: nested.csv."})
    sections.append({"title": "Which configurations differ", "lines": comparison_lines(results), "note": _NOTE})
    return sections


def write_statistics_tables(results, out) -> dict:
    """comparisons.csv (every pair) and nested.csv (the configuration each outer fold chose), when present."""
    out, paths = Path(out), {}
    if results.comparisons is not None:
        paths["comparisons"] = out / "comparisons.csv"
        write_csv(results.comparisons, paths["comparisons"])
    if results.nested:
        paths["nested"] = out / "nested.csv"
        write_csv(results.nested["outer"], paths["nested"])
    return paths


def nested_config(results) -> dict | None:
    """The nested summary for config.json (the per-fold table is in nested.csv)."""
    if not results.nested:
        return None
    return {k: v for k, v in results.nested.items() if k != "outer"}
