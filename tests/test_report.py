"""write_report: every file is written, the HTML is self-contained, honesty comes first."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from report_helpers import comparisons_for, make_cells, run_cv

from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.reporting.gallery import error_gallery
from deepfeat.reporting.report import fmt_number, write_report
from deepfeat.reporting.verdict import build_verdict, find_comparison, fold_intervals
from deepfeat.features import FeatureSet


def test_report_writes_every_file_with_embedded_plots_and_honesty_on_top(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    X = rng.normal(size=(60, 12))
    X[:, :3] += y[:, None]
    sha = [f"h{i}" for i in range(60)]
    sha[5] = sha[1]  # a conflicting duplicate (rows 1 and 5 have classes 1 and 2)
    fs = FeatureSet(X, [f"class|{v}" for v in y], paths=[f"cells/{i}.png" for i in range(60)], sha256=sha,
                    meta={"backbone": "synthetic"})
    res = cross_validate(fs, classifiers=("nb", "svm"), n_features=4, folds=3, progress=False)
    paths = write_report(res, tmp_path / "out")

    for name in ("results", "per_fold", "per_class", "predictions", "config", "report_md", "report_html"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    assert len(pd.read_csv(paths["results"])) == 5  # 2 classifiers x 2 selections + majority baseline
    assert len(pd.read_csv(paths["predictions"])) == 5 * 60
    config = json.loads(paths["config"].read_text())
    assert config["parameters"]["n_features"] == 4 and config["versions"]["numpy"] == np.__version__
    assert config["honesty"]["duplicates"]["n_pairs"] == 1
    md = paths["report_md"].read_text(encoding="utf-8")  # the interval method is named in the report (issue 25)
    assert "Interval: logit-scale t interval over the scores" in md and "Nadeau and Bengio" in md

    pngs = [k for k in paths if k.startswith("plot_")]
    # one picture per question: confusion matrices and ROC curves as small multiples, not one plot per configuration
    assert {"plot_accuracy", "plot_class_heatmap", "plot_confusion", "plot_roc", "plot_mrmr_scores",
            "plot_reliability"} == set(pngs)
    assert all(paths[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for k in pngs)

    page = paths["report_html"].read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert 'src="plots/' not in page and "http" not in page.split("<body>")[1]  # self-contained
    assert page.index('id="verdict"') < page.index("<img") < page.index("Honesty") < page.index("Table 2")
    assert "inside each training fold" in page and "cells/1.png [class|1] = cells/5.png [class|2]" in page
    # the image paths of this FeatureSet do not exist: the gallery says so instead of failing or drawing nothing
    assert "could not be drawn: the image files are not reachable" in page and "image not reachable" in page
    assert "data:image/jpeg" not in page

    md = paths["report_md"].read_text()
    assert md.index("## Verdict") < md.index("## Honesty") < md.index("Table 2")
    assert "- WARNING: 1 group(s) of byte-identical images carry different labels" in md
    assert "class\\|1" in md  # pipes inside cells are escaped


@pytest.fixture(scope="module")
def cells_run(tmp_path_factory):
    fs = make_cells(tmp_path_factory.mktemp("cells") / "img")
    return fs, run_cv(fs)


def _best(res):
    deep = res.summary[res.summary["kind"] != "baseline"]
    return deep.loc[deep["accuracy_mean"].idxmax()]


def test_verdict_without_comparisons_says_no_test_was_run(cells_run):
    import copy

    _, res = cells_run
    res = copy.copy(res)
    res.comparisons = None  # cross_validate computes them; without them the verdict must say no test was run
    v = build_verdict(res)
    best = _best(res)
    folds = res.per_fold[res.per_fold["config"] == best["config"]]["accuracy"]
    row = fold_intervals(res).set_index("config").loc[best["config"]]
    mean, lo, hi, n = row["mean"], row["low"], row["high"], row["n"]
    assert v["best"] == best["config"] and n == 3 and abs(mean - folds.mean()) < 1e-12
    assert abs(mean - best["accuracy_mean"]) < 1e-12 and 0 <= lo <= mean <= hi <= 1
    assert v["sentences"][0] == (f"Best configuration: {best['config']}, accuracy {100 * mean:.1f} % (95 % interval "
                                 f"over 3 fold scores, logit scale: {100 * lo:.1f} % to {100 * hi:.1f} %).")
    assert "logit-scale" in v["interval_method"] and "Nadeau and Bengio" in v["interval_method"]
    assert "No statistical test was run" in v["text"] and not v["tested"]
    assert "colour-histogram baseline (baseline-histogram-svm" in v["text"]
    # the cells differ by colour, so colour alone wins, and the verdict says so in words
    hist = res.summary.set_index("config").loc["baseline-histogram-svm", "accuracy_mean"]
    assert hist > best["accuracy_mean"]
    assert (f"The colour histogram + SVM baseline scores at least as high ({100 * hist:.1f} %): on these images the "
            "deep features show no advantage over it.") in v["sentences"]
    assert not any("majority class baseline scores" in t for t in v["sentences"])
    # the warnings that change the reading: image-level folds and the conflicting duplicate
    assert any("NOT grouped by subject" in w for w in v["warnings"])
    assert any("carry different labels" in w for w in v["warnings"])


def test_fold_intervals_never_leave_0_100(cells_run):
    _, res = cells_run
    ivals = fold_intervals(res)
    assert ((ivals["low"] >= 0) & (ivals["low"] <= ivals["mean"]) & (ivals["mean"] <= ivals["high"])
            & (ivals["high"] <= 1)).all()


@pytest.mark.parametrize("ci, p, word", [((0.10, 0.40), 0.001, "yes, at the 5 % level. In short: better."),
                                         ((-0.05, 0.30), 0.2, "not shown at the 5 % level. In short: not "
                                                              "distinguishable with these folds.")])
def test_verdict_uses_comparisons_and_flips_reversed_rows(cells_run, ci, p, word):
    _, res = cells_run
    best, comp = comparisons_for(res, diff_vs_hist=0.25, ci_vs_hist=ci, p_vs_hist=p)
    res.comparisons = comp
    assert best == _best(res)["config"]
    try:
        v = build_verdict(res)
    finally:
        del res.comparisons
    hist = next(s for s in v["sentences"] if "colour-histogram" in s)
    shown = "< 0.001" if p < 0.001 else f"= {p:.3f}"
    assert hist.startswith(f"Against the colour-histogram baseline (baseline-histogram-svm): +25.00 percentage "
                           f"points. Corrected t-test (is the difference non-zero?): 95 % interval "
                           f"{100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}, p {shown}: {word}")
    assert "No Bayesian test" in hist
    runner = next(s for s in v["sentences"] if "runner-up" in s)
    assert "not distinguishable with these folds" in runner and v["tested"] and "No statistical test" not in v["text"]


@pytest.mark.parametrize("ci, p, probs, reading", [
    ((0.02, 0.06), 0.01, (0.97, 0.03, 0.0), "In short: better, by more than 1 point; both tests agree."),
    ((0.001, 0.009), 0.03, (0.0, 0.99, 0.01), "In short: better, but by less than 1 point (a real but practically "
                                              "negligible difference)."),
    ((-0.004, 0.006), 0.6, (0.0, 0.998, 0.002), "In short: practically equivalent (any difference is within "
                                                "+/-1 point)."),
    ((0.002, 0.03), 0.04, (0.7, 0.3, 0.0), "In short: better, but whether by more than 1 point is not settled by "
                                           "these folds."),
    ((-0.01, 0.05), 0.2, (0.6, 0.3, 0.1), "In short: not distinguishable with these folds; neither test can tell "
                                          "them apart."),
])
def test_verdict_says_what_each_test_asks_and_reconciles_them(cells_run, ci, p, probs, reading):
    """Issue 25: the corrected t-test asks "non-zero?", the Bayesian test "larger than the ROPE?"; one sentence
    says what both mean together, and every probability follows the one rounding rule."""
    _, res = cells_run
    best, comp = comparisons_for(res, diff_vs_hist=sum(ci) / 2, ci_vs_hist=ci, p_vs_hist=p)
    hist = comp["config_a"] == "baseline-histogram-svm"  # stored reversed: the verdict flips P(better)/P(worse)
    comp.loc[hist, ["p_better", "p_rope", "p_worse", "rope"]] = [probs[2], probs[1], probs[0], 0.01]
    res.comparisons = comp
    try:
        v = build_verdict(res)
    finally:
        del res.comparisons
    sentence = next(s for s in v["sentences"] if "colour-histogram" in s)
    assert "Corrected t-test (is the difference non-zero?)" in sentence
    assert "Bayesian correlated t-test (is it larger than +/-1 point?)" in sentence
    assert sentence.endswith(reading), sentence
    from deepfeat.reporting.writing import fmt_probability

    shown = [fmt_probability(x) for x in probs]  # the one rounding rule: "< 0.001", never "0.000" or "1.00"
    shown = [x if x[0] in "<>" else f"= {x}" for x in shown]
    assert (f"P(better by more) {shown[0]}, P(within +/-1 point) {shown[1]}, P(worse by more) {shown[2]}."
            in sentence)


def test_one_rounding_rule_for_probabilities():
    from deepfeat.reporting.writing import fmt_probability

    assert [fmt_probability(x) for x in (0.0196, 0.9962, 0.99996, 0.0004, float("nan"), None)] == \
        ["0.020", "0.996", "> 0.999", "< 0.001", "—", "—"]


def test_find_comparison_reads_bayesian_probabilities():
    comp = pd.DataFrame([{"config_a": "b", "config_b": "a", "mean_diff": -0.1, "ci_low": -0.2, "ci_high": 0.0,
                          "p_value": 0.04, "p_better": 0.01, "p_rope": 0.02, "p_worse": 0.97}])
    c = find_comparison(comp, "a", "b")
    assert (c["mean_diff"], c["ci_low"], c["ci_high"]) == (0.1, -0.0, 0.2)
    assert (c["p_better"], c["p_rope"], c["p_worse"]) == (0.97, 0.02, 0.01)
    assert find_comparison(comp, "a", "c") is None and find_comparison(None, "a", "b") is None


def test_numbers_are_formatted_cleanly():
    assert [fmt_number(v) for v in (1000.0, float("nan"), None, 0.5, np.float32(3.0))] == \
        ["1000", "—", "—", "0.50", "3"]


def test_gallery_embeds_thumbnails_most_confident_first_and_caps(cells_run, tmp_path):
    fs, res = cells_run
    best = _best(res)["config"]
    g = error_gallery(res.predictions, best, res.classes, limits={"max_errors": 5})
    p = res.predictions[(res.predictions["config"] == best)]
    n_wrong = int((p["true"] != p["pred"]).sum())
    assert n_wrong > 5 and g["n_errors"] == n_wrong and g["n_shown"] == 5
    assert f"{n_wrong} of {len(fs)} test images misclassified" in g["note"]
    assert "showing the 5 most confident errors (cap 5" in g["note"]
    conf = [it["score_pred"] for it in g["items"]]
    assert conf == sorted(conf, reverse=True) and all(it["true"] != it["pred"] for it in g["items"])
    assert all(it["uri"].startswith("data:image/jpeg;base64,") for it in g["items"])

    paths = write_report(res, tmp_path / "out", gallery_limits={"max_errors": 7, "px": 48})
    page = paths["report_html"].read_text()
    # 7 error thumbnails + 2 for the conflicting duplicate pair + the 2 most confident correct cells of each of
    # the 3 classes, nothing else (these features have no network: no saliency overlays)
    assert page.count("data:image/jpeg;base64,") == 7 + 2 + 2 * 3
    assert "showing the 7 most confident errors (cap 7" in page and "at most 48 px" in page
    assert page.index('id="error-gallery"') < page.index('id="duplicate-gallery"') < page.index('id="tables"')
    assert re.search(r'class="pair conflict"', page)
    # numbers are clean in every table: no float feature counts, no NaN
    tables = page[page.index('id="tables"'):]
    assert "<td>knn+mrmr</td><td>4</td>" in tables and "<td>10</td>" in tables  # feature counts, not 4.0
    assert not re.search(r"<td>\d+\.0</td>", tables) and "nan" not in tables.lower()
    assert "<td>baseline-majority</td><td>—</td>" in tables  # a baseline has no feature count


def test_figures_drawn_in_workers_are_the_same_bytes(cells_run):
    """A run on several workers draws its report's figures on several too; the PNGs are identical."""
    import copy

    from deepfeat.reporting.report import _figures

    res = copy.deepcopy(cells_run[1])
    verdict = build_verdict(res)
    res.config["parameters"]["n_jobs"] = 1
    here = _figures(res, verdict)
    res.config["parameters"]["n_jobs"] = 2
    workers = _figures(res, verdict)
    assert [f["stem"] for f in here] == [f["stem"] for f in workers] and len(here) >= 5
    assert all(a["png"] == b["png"] and a["caption"] == b["caption"] for a, b in zip(here, workers))
