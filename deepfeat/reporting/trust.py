"""The CV report's "how far to trust one prediction" parts: a reliability diagram and the ECE per configuration
(from the out-of-fold probabilities), and the empirical coverage of conformal prediction sets on the outer folds
(when ``cross_validate(coverage=...)`` / ``deepfeat cv --coverage`` measured it)."""
from __future__ import annotations

import pandas as pd

from deepfeat.evaluation.calibration import N_BINS, calibration_table, reliability_bins
from deepfeat.reporting.plots import _grid, _png
from deepfeat.reporting.writing import table_block

__all__ = ["coverage_lines", "reliability_png", "trust_figures", "trust_frames", "trust_tables"]

CALIBRATION_TEXT = (f"top-label expected calibration error, {N_BINS} equal-width confidence bins, pooled out-of-fold "
                    "probabilities; configurations with decision values only have none")


def reliability_png(predictions, configs, classes, n_bins: int = N_BINS) -> bytes:
    """Reliability diagrams, one per configuration: accuracy against mean confidence per bin (dot area ~ rows),
    the diagonal is perfect calibration."""
    fig, axes = _grid(len(configs), 4, 2.6)
    cols = [f"score_{c}" for c in classes]
    for ax, (config, ece) in zip(axes, configs):
        part = predictions[predictions["config"] == config]
        y = pd.Categorical(part["true"].astype(str), categories=[str(c) for c in classes]).codes
        bins = reliability_bins(y, part[cols].to_numpy(float), n_bins)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.bar(bins["low"], bins["accuracy"], width=1 / n_bins, align="edge", alpha=0.35, color="tab:blue")
        ax.scatter(bins["confidence"], bins["accuracy"], s=8 + 60 * bins["count"] / bins["count"].max(),
                   color="tab:blue", zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{config}\nECE {ece:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("confidence", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
    return _png(fig)


def trust_frames(results) -> dict:
    """``calibration`` (:func:`~deepfeat.evaluation.calibration.calibration_table`) and ``conformal`` (the CV's
    coverage summary, or None) as DataFrames, for the CSV files."""
    return {"calibration": calibration_table(results.predictions, results.classes),
            "conformal": getattr(results, "conformal", None)}


def trust_figures(results, order) -> list[tuple]:
    """(stem, caption, draw, args) of the reliability diagrams, in ``order`` (``draw(*args)`` gives the PNG);
    none when no configuration has probabilities."""
    table = calibration_table(results.predictions, results.classes).set_index("config")
    configs = [(c, table.loc[c, "ece"]) for c in order if c in table.index]
    if not configs:
        return []
    return [("reliability", f"Reliability: accuracy against confidence ({CALIBRATION_TEXT})",
             reliability_png, (results.predictions, configs, results.classes))]


def _pct(v) -> str:
    return f"{100 * v:.2f}"


def trust_tables(results) -> list[dict]:
    """Table blocks: ECE per configuration, and (when measured) coverage / set size / decided alone per
    configuration x nominal coverage x class."""
    out = []
    cal = calibration_table(results.predictions, results.classes)
    if len(cal):
        cal = cal.sort_values("ece")
        out.append(table_block(pd.DataFrame({
            "config": cal["config"], "ECE": [f"{v:.3f}" for v in cal["ece"]],
            "mean confidence %": [_pct(v) for v in cal["mean_confidence"]],
            "accuracy %": [_pct(v) for v in cal["accuracy"]], "images": cal["n"]}),
            key="calibration", title="Calibration: expected calibration error per configuration (lower is better)",
            note=CALIBRATION_TEXT))
    conf = getattr(results, "conformal", None)
    if conf is not None and len(conf):
        out.append(table_block(pd.DataFrame({
            "config": conf["config"], "nominal %": [f"{100 * v:g}" for v in conf["nominal"]], "class": conf["class"],
            "images": conf["n"],
            "coverage %": [f"{_pct(c)} ± {_pct(s)}" for c, s in zip(conf["coverage"], conf["se"])],
            "mean set size": [f"{v:.2f}" for v in conf["mean_set_size"]],
            "decided alone %": [_pct(v) for v in conf["decided_alone"]]}),
            key="conformal", open_=True,
            title="Prediction sets (conformal): coverage on the outer test folds, set size, share decided alone",
            note="cross-conformal thresholds from inner folds of each outer training part only; the test fold's "
                 "labels only count coverage (± one binomial standard error). 'decided alone': the set holds "
                 "one class; the rest would be referred to an expert."))
    return out


def coverage_lines(results) -> list[str]:
    """One line per configuration and nominal coverage (all classes), for the command line."""
    conf = getattr(results, "conformal", None)
    if conf is None or not len(conf):
        return []
    return [f"prediction sets {r['config']} at {100 * r['nominal']:g} %: coverage {_pct(r['coverage'])} % on the "
            f"outer folds, mean set size {r['mean_set_size']:.2f}, decided alone {_pct(r['decided_alone'])} %"
            for _, r in conf[conf["class"] == "all"].iterrows()]
