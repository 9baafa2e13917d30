"""The report's first paragraph, generated from the numbers: which configuration won, by how much, whether that is
distinguishable from the colour-histogram baseline and from the runner-up, and the warnings that change how to
read it.

Intervals are the 95 % intervals of :func:`deepfeat.evaluation.intervals.mean_interval` over the fold scores of one
configuration (today Student-t: ``mean +- t * sd / sqrt(n)``).
Folds share training data, so these intervals are too narrow to compare two configurations; the comparison
statistics (``results.comparisons``, when a run computed them) are used for that, and when they are absent the
verdict says plainly that no statistical test was run.
"""
from __future__ import annotations

import math

import pandas as pd

from deepfeat.evaluation.fold_work import BASELINE_HISTOGRAM as HISTOGRAM
from deepfeat.evaluation.fold_work import BASELINE_MAJORITY as MAJORITY
from deepfeat.evaluation.intervals import mean_interval
from deepfeat.evaluation.results import BASELINE_TEXT

__all__ = ["build_verdict", "find_comparison", "fold_intervals"]


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of :func:`~deepfeat.evaluation.intervals.mean_interval`; for the report's bars a
    single value is drawn as a point (low = high = mean).

    Examples
    --------
    >>> m, lo, hi, n = t_interval([0.8, 0.9, 1.0])
    >>> round(m, 3), round(lo, 3), round(hi, 3), n
    (0.9, 0.652, 1.148, 3)
    """
    iv = mean_interval(values, level=level)
    if iv.n == 1:
        return iv.mean, iv.mean, iv.mean, 1
    return iv.mean, iv.low, iv.high, iv.n


def fold_intervals(results, metric: str = "accuracy") -> pd.DataFrame:
    """One row per configuration (run order): config, kind, mean, low, high, n (folds x repeats), best first."""
    rows = []
    for cfg, part in results.per_fold.groupby("config", sort=False):
        mean, lo, hi, n = t_interval(part[metric])
        rows.append({"config": cfg, "kind": part["kind"].iloc[0], "mean": mean, "low": lo, "high": hi, "n": n})
    out = pd.DataFrame(rows, columns=["config", "kind", "mean", "low", "high", "n"])
    return out.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)


def find_comparison(comparisons, a: str, b: str, metric: str = "accuracy") -> dict | None:
    """The comparison row of ``a`` vs ``b`` (difference a - b), flipped when stored as ``b`` vs ``a``."""
    if comparisons is None or not len(comparisons):
        return None
    table = comparisons
    if "metric" in table.columns:
        table = table[table["metric"] == metric]
    for first, second, sign in ((a, b, 1), (b, a, -1)):
        hit = table[(table["config_a"] == first) & (table["config_b"] == second)]
        if len(hit):
            r = hit.iloc[0]
            out = {"mean_diff": sign * float(r["mean_diff"]), "p_value": _get(r, "p_value")}
            lo, hi = float(r["ci_low"]), float(r["ci_high"])
            out["ci_low"], out["ci_high"] = (lo, hi) if sign > 0 else (-hi, -lo)
            better, worse = _get(r, "p_better"), _get(r, "p_worse")
            out["p_better"], out["p_worse"] = (better, worse) if sign > 0 else (worse, better)
            out["p_rope"] = _get(r, "p_rope")
            return out
    return None


def _get(row, key):
    v = row.get(key) if hasattr(row, "get") else None
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _versus(best: str, other: str, label: str, comparisons, ivals: pd.DataFrame) -> str:
    """One sentence: is ``best`` distinguishable from ``other``?"""
    c = find_comparison(comparisons, best, other)
    if c is None:
        if comparisons is not None:
            return f"No comparison with {label} ({other}) was recorded."
        o = ivals.set_index("config").loc[other]
        b = ivals.set_index("config").loc[best]
        overlap = "overlap" if o["high"] >= b["low"] else "do not overlap"
        return (f"Against {label} ({other}, {_pct(o['mean'])}): {_pp(b['mean'] - o['mean'])} percentage points; "
                f"their fold intervals {overlap}, which is not a test.")
    diff = (f"{_pp(c['mean_diff'])} percentage points (95 % interval {_pp(c['ci_low'])} to {_pp(c['ci_high'])}"
            + (f", p = {c['p_value']:.3g}" if c["p_value"] is not None else "") + ")")
    if c["p_better"] is not None:
        probs = (f"P(better) = {c['p_better']:.2f}" + (f", P(practically equivalent) = {c['p_rope']:.2f}"
                                                        if c["p_rope"] is not None else "")
                 + (f", P(worse) = {c['p_worse']:.2f}" if c["p_worse"] is not None else ""))
        clear = c["p_better"] >= 0.95 or (c["p_worse"] is not None and c["p_worse"] >= 0.95)
        return (f"Against {label} ({other}): {diff}; {probs}: "
                + ("distinguishable." if clear else "not clearly distinguishable."))
    clear = c["ci_low"] > 0 or c["ci_high"] < 0
    return f"Against {label} ({other}): {diff}: " + ("distinguishable." if clear else "not distinguishable.")


def _nested_text(nested) -> str | None:
    """A sentence for the nested estimate, whatever keys the comparison module chose to store."""
    if not nested:
        return None
    if not isinstance(nested, dict):
        return f"Nested cross-validation estimate: {nested}."
    mean = next((nested[k] for k in ("estimate", "accuracy_mean", "mean", "accuracy", "score") if k in nested), None)
    lo = next((nested[k] for k in ("ci_low", "low", "accuracy_ci_low") if k in nested), None)
    hi = next((nested[k] for k in ("ci_high", "high", "accuracy_ci_high") if k in nested), None)
    if isinstance(mean, (int, float)):
        text = f"Nested cross-validation (configuration chosen inside each outer fold): {_pct(mean)}"
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            text += f" (95 % interval {_pct(lo)} to {_pct(hi)})"
        return text + "; this is the estimate to quote, since picking the best of several configurations " \
                      "afterwards is optimistic."
    shown = ", ".join(f"{k} = {v}" for k, v in nested.items() if isinstance(v, (int, float, str)))
    return f"Nested cross-validation: {shown}." if shown else None


def reading_warnings(results) -> list[str]:
    """The honesty warnings that change how to read the verdict (image-level folds first)."""
    h = results.honesty
    out = []
    if not h["grouping"].get("grouped"):
        out.append(h["grouping"]["text"])
    return out + [w[0].upper() + w[1:] + ("" if w.endswith(".") else ".") for w in h["warnings"]]


def build_verdict(results) -> dict:
    """The verdict: ``text`` (the paragraph), ``sentences``, ``warnings``, ``best``, ``runner_up``, ``tested``
    (whether comparison statistics were used) and the ``intervals`` table."""
    ivals = fold_intervals(results)
    deep = ivals[ivals["kind"] != "baseline"]
    comparisons = getattr(results, "comparisons", None)
    if deep.empty:
        return {"text": "No deep-feature configuration was scored.", "sentences": [], "warnings":
                reading_warnings(results), "best": None, "runner_up": None, "tested": False, "intervals": ivals}
    best = deep.iloc[0]
    folds = "fold" if results.config["parameters"].get("repeats", 1) == 1 else "fold x repeat"
    sentences = [f"Best configuration: {best['config']}, accuracy {_pct(best['mean'])} "
                 f"(95 % t-interval over {best['n']} {folds} scores: {_pct(best['low'])} to {_pct(best['high'])})."]
    configs = set(ivals["config"])
    above = ivals[(ivals["kind"] == "baseline") & (ivals["mean"] >= best["mean"])]
    for _, b in above.iterrows():
        sentences.append(f"The {BASELINE_TEXT.get(b['config'], b['config'])} baseline scores at least as high "
                         f"({_pct(b['mean'])}): on these images the deep features show no advantage over it.")
    if HISTOGRAM in configs:
        sentences.append(_versus(best["config"], HISTOGRAM, "the colour-histogram baseline", comparisons, ivals))
    else:
        skipped = (results.honesty["baseline"].get("skipped") or "it was not requested").removeprefix(
            "colour-histogram baseline skipped: ").removesuffix("; majority-class baseline only")
        sentences.append(f"The colour-histogram baseline was not scored: {skipped}.")
        if MAJORITY in configs:
            sentences.append(_versus(best["config"], MAJORITY, "the majority-class baseline", comparisons, ivals))
    runner = deep.iloc[1] if len(deep) > 1 else None
    if runner is not None:
        sentences.append(_versus(best["config"], runner["config"], "the runner-up", comparisons, ivals))
    if comparisons is None:
        sentences.append("No statistical test was run: these results carry no comparison statistics, and the "
                         "fold intervals are too narrow to compare configurations (folds share training data).")
    nested = _nested_text(getattr(results, "nested", None))
    if nested:
        sentences.append(nested)
    return {"text": " ".join(sentences), "sentences": sentences, "warnings": reading_warnings(results),
            "best": best["config"], "best_mean": float(best["mean"]), "best_low": float(best["low"]),
            "best_high": float(best["high"]), "runner_up": None if runner is None else runner["config"],
            "tested": comparisons is not None, "intervals": ivals, "baseline_names": BASELINE_TEXT}
