"""The few-shot and learning-curve report folders: formula-safe CSVs, escaped HTML, the completion marker, and a
page that a real browser renders (the same writer, templates and conventions as the cross-validation report)."""
from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest

from deepfeat.errors import DeepfeatError
from deepfeat.features import FeatureSet
from deepfeat.fewshot.curves import learning_curve
from deepfeat.fewshot.evaluate import few_shot_evaluate
from deepfeat.fileio import FORMULA_PREFIXES
from deepfeat.reporting.fewshot_report import write_curve_report, write_fewshot_report
from deepfeat.reporting.writing import check_report

SCRIPT = "<script>alert(1)</script>"
FORMULA = "=cmd|' /C calc'!A0"


def _hostile_features():
    """Two separable classes whose names are an HTML script and a spreadsheet formula."""
    rng = np.random.default_rng(0)
    y = np.repeat([SCRIPT, FORMULA], 30)
    X = rng.normal(size=(60, 4)) + 3 * (y == FORMULA)[:, None]
    return FeatureSet(X.astype(np.float32), y=y, sha256=[f"{i:064x}" for i in range(60)])


def _cells(folder):
    return [c for f in sorted(folder.glob("*.csv")) for row in csv.reader(open(f, newline="")) for c in row]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _assert_safe(out, raw: str):
    cells = _cells(out)
    assert "'" + raw in cells  # the hostile text reached a CSV, escaped
    assert [c for c in cells if c.startswith(FORMULA_PREFIXES) and not _number(c)] == []  # -0.5 stays a number
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert check_report(out)["complete"] is True


def test_fewshot_report_escapes_csv_cells_and_html(tmp_path):
    fs = _hostile_features()
    hist = np.random.default_rng(1).normal(size=(60, 3))
    res = few_shot_evaluate(fs, ways=[2], shots=[1, 5], queries=5, episodes=10, methods=["prototype_euc", "knn"],
                            baseline=("=HYPERLINK(1)", hist))
    out = tmp_path / "fs"
    paths = write_fewshot_report(res, out)
    _assert_safe(out, "=HYPERLINK(1)")  # the baseline's name is a cell of fewshot.csv and episodes.csv
    assert {p.name for p in paths.values()} == {"fewshot.csv", "episodes.csv", "fewshot.png", "config.json",
                                                "report.md", "report.html", "report.complete.json"}
    md = paths["report_md"].read_text()
    assert md.index("## Honesty") < md.index("## Accuracy % (mean and 95 % CI over episodes)") < md.index("## Speed")
    # markdown carries no HTML from the data (issue 23): the class name is shown as text, through entities
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_curve_report_escapes_csv_cells_and_html(tmp_path):
    res = learning_curve(_hostile_features(), sizes=[5, "all"], classifier="knn", select="none", repeats=2,
                         baseline=None)
    # learning_curve names its feature sets itself; the writer must escape whatever text its tables hold
    for frame in (res.per_repeat, res.summary):
        frame["features"] = frame["features"].replace({"features": "-1+1"})
    out = tmp_path / "curve"
    write_curve_report(res, out)
    _assert_safe(out, "-1+1")
    assert "'-1+1" in {row["features"] for row in csv.DictReader(open(out / "curve_summary.csv", newline=""))}


def test_fewshot_report_folder_is_unfinished_until_the_marker(tmp_path):
    fs = _hostile_features()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = few_shot_evaluate(fs, ways=[2], shots=[1], queries=5, episodes=5, methods=["knn"], baseline=None)
    out = tmp_path / "fs"
    write_fewshot_report(res, out)
    (out / "report.md").write_text("edited")
    with pytest.raises(DeepfeatError, match="1 file\\(s\\) missing or changed .* report.md"):
        check_report(out)
    (out / "report.complete.json").unlink()
    with pytest.raises(DeepfeatError, match="unfinished"):
        check_report(out)
    write_fewshot_report(res, out)  # a rerun replaces the folder's report and finishes it again
    assert check_report(out)["files"].keys() >= {"fewshot.csv", "report.md", "report.html"}


def test_fewshot_and_curve_reports_render_in_a_real_browser(browser, tmp_path):
    fs = _hostile_features()
    res = few_shot_evaluate(fs, ways=[2], shots=[1, 5], queries=5, episodes=10, methods=["prototype"],
                            baseline=None)
    curve = learning_curve(fs, sizes=[5, "all"], classifier="knn", select="none", repeats=2, baseline=None)
    from selenium.webdriver.common.by import By

    for paths in (write_fewshot_report(res, tmp_path / "fs"), write_curve_report(curve, tmp_path / "curve")):
        seen = browser.open_page(paths["report_html"])
        assert seen["severe"] == [], seen["severe"]
        assert len(seen["images"]) == 1 and all(complete and width > 0 for complete, width, _ in seen["images"])
        assert SCRIPT in browser.find_element(By.CLASS_NAME, "intro").text  # shown as text, not run
        assert browser.find_elements(By.CSS_SELECTOR, "ul.honesty li")
        assert browser.find_elements(By.CSS_SELECTOR, "#accuracy table.t tbody tr")
