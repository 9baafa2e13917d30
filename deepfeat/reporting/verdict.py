"""The report's first paragraph, generated from the numbers: which configuration won, by how much, whether that is
distinguishable from the colour-histogram baseline and from the runner-up, and the warnings that change how to
read it.

Intervals are the 95 % intervals of :func:`deepfeat.evaluation.intervals.mean_interval` over the fold scores of one
configuration: a proportion's logit-scale interval, its variance corrected for the training data the folds share
(Nadeau & Bengio), floored at the binomial error of the images tested, never outside 0-100 %.
An interval of each configuration is not a comparison of two: the comparison statistics (``results.comparisons``,
when a run computed them) are used for that, each test named with the question it asks (the corrected t-test: is
the difference non-zero? the Bayesian test: is it larger than the ROPE?) and one sentence reconciling the two;
when they are absent the verdict says plainly that no statistical test was run. Every probability is written by
:func:`deepfeat.reporting.writing.fmt_probability`.
"""
from __future__ import annotations

import math

import pandas as pd

from deepfeat.evaluation.fold_work import BASELINE_HISTOGRAM as HISTOGRAM
from deepfeat.evaluation.fold_work import BASELINE_MAJORITY as MAJORITY
from deepfeat.evaluation.compare import fold_size_ratio
from deepfeat.evaluation.intervals import mean_interval, proportion_method
from deepfeat.evaluation.results import BASELINE_TEXT
from deepfeat.reporting.writing import probability_relation as _p

__all__ = ["build_verdict", "find_comparison", "fold_design", "fold_intervals"]


def fold_design(results) -> tuple[float | None, int | None]:
    """``(n_test / n_train, images)`` of the folds of ``results``, or ``(None, None)`` when it records no
    out-of-fold predictions to measure them from."""
    try:
        ratio = fold_size_ratio(results)
    except (KeyError, IndexError, ZeroDivisionError):
        return None, None
    return (ratio, int(results.config["featureset"]["n_rows"])) if ratio > 0 else (None, None)


def fold_intervals(results, metric: str = "accuracy") -> pd.DataFrame:
    """One row per configuration (run order): config, kind, mean, low, high, n (folds x repeats), best first.

    ``metric`` is a proportion (accuracy, F1, ...): the interval is :func:`mean_interval`'s logit-scale interval,
    corrected for overlapping training sets, inside [0, 1].
    """
    ratio, images = fold_design(results)
    rows = []
    for cfg, part in results.per_fold.groupby("config", sort=False):
        iv = mean_interval(part[metric], test_train_ratio=ratio, bounds=(0.0, 1.0), n_items=images)
        rows.append({"config": cfg, "kind": part["kind"].iloc[0], "mean": iv.mean, "low": iv.low, "high": iv.high,
                     "n": iv.n})
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
            out["rope"] = _get(r, "rope")
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
    """Is ``best`` distinguishable from ``other``? Each test with the question it asks, then one reconciling
    sentence."""
    c = find_comparison(comparisons, best, other)
    if c is None:
        if comparisons is not None:
            return f"No comparison with {label} ({other}) was recorded."
        o = ivals.set_index("config").loc[other]
        b = ivals.set_index("config").loc[best]
        overlap = "overlap" if o["high"] >= b["low"] else "do not overlap"
        return (f"Against {label} ({other}, {_pct(o['mean'])}): {_pp(b['mean'] - o['mean'])} percentage points; "
                f"their fold intervals {overlap}, which is not a test.")
    nonzero = c["ci_low"] > 0 or c["ci_high"] < 0
    p = f", p {_p(c['p_value'])}" if c["p_value"] is not None else ""
    text = (f"Against {label} ({other}): {_pp(c['mean_diff'])} percentage points. Corrected t-test (is the "
            f"difference non-zero?): 95 % interval {_pp(c['ci_low'])} to {_pp(c['ci_high'])}{p}: "
            + ("yes, at the 5 % level." if nonzero else "not shown at the 5 % level."))
    if c["p_better"] is None:
        return text + " " + _reconcile(c, nonzero, None)
    rope = 100 * (c["rope"] if c["rope"] is not None else 0.01)
    pts = f"{rope:g} point" + ("" if rope == 1 else "s")
    text += (f" Bayesian correlated t-test (is it larger than +/-{pts}?): P(better by more) "
             f"{_p(c['p_better'])}, P(within +/-{pts}) {_p(c['p_rope'])}"
             + (f", P(worse by more) {_p(c['p_worse'])}" if c["p_worse"] is not None else "") + ".")
    return text + " " + _reconcile(c, nonzero, pts)


def _reconcile(c: dict, nonzero: bool, pts: str | None) -> str:
    """One plain sentence that says what the two tests together mean."""
    side = "better" if c["mean_diff"] > 0 else "worse"
    if pts is None:
        return (f"In short: {side}." if nonzero else "In short: not distinguishable with these folds.") + \
            " (No Bayesian test: install baycomp for P(better) with a region of practical equivalence.)"
    large = c["p_better"] if side == "better" else c["p_worse"]
    if nonzero and large is not None and large >= 0.95:
        return f"In short: {side}, by more than {pts}; both tests agree."
    if c["p_rope"] is not None and c["p_rope"] >= 0.95:
        return (f"In short: {side}, but by less than {pts} (a real but practically negligible difference)."
                if nonzero else f"In short: practically equivalent (any difference is within +/-{pts}).")
    if nonzero:
        return f"In short: {side}, but whether by more than {pts} is not settled by these folds."
    if large is not None and large >= 0.95:
        return f"In short: probably {side} by more than {pts}, though the t-test cannot rule out no difference."
    return "In short: not distinguishable with these folds; neither test can tell them apart."


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
    method = proportion_method(fold_design(results)[0] is not None)
    deep = ivals[ivals["kind"] != "baseline"]
    comparisons = getattr(results, "comparisons", None)
    if deep.empty:
        return {"text": "No deep-feature configuration was scored.", "sentences": [], "warnings":
                reading_warnings(results), "best": None, "runner_up": None, "tested": False, "intervals": ivals,
                "interval_method": method}
    best = deep.iloc[0]
    folds = "fold" if results.config["parameters"].get("repeats", 1) == 1 else "fold x repeat"
    sentences = [f"Best configuration: {best['config']}, accuracy {_pct(best['mean'])} "
                 f"(95 % interval over {best['n']} {folds} scores, logit scale: {_pct(best['low'])} to "
                 f"{_pct(best['high'])})."]
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
            "tested": comparisons is not None, "intervals": ivals, "baseline_names": BASELINE_TEXT,
            "interval_method": method}
