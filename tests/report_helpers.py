"""A small cross-validation run on real image files, shared by the report tests (HTML/markdown and browser)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.features import FeatureSet

COLOURS = {"blast": (150, 60, 170), "lymph": (60, 90, 200), "neutro": (200, 120, 140)}


def make_cells(folder, n_per_class: int = 16, seed: int = 0):
    """Tiny coloured PNG "cells" on disk and a FeatureSet whose features separate the classes imperfectly
    (so there are errors to show), with one byte-identical pair that carries conflicting labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for c, rgb in COLOURS.items():
        for i in range(n_per_class):
            px = np.clip(np.asarray(rgb) + rng.normal(0, 25, size=(40, 48, 3)), 0, 255).astype(np.uint8)
            p = folder / f"{c}_{i:02d}.png"
            Image.fromarray(px).save(p)
            paths.append(str(p))
            labels.append(c)
    dup = folder / "lymph_dup.png"  # same bytes as blast_00, other label
    dup.write_bytes((folder / "blast_00.png").read_bytes())
    paths.append(str(dup))
    labels.append("lymph")
    y = pd.factorize(pd.Series(labels))[0]
    X = rng.normal(size=(len(y), 10))
    X[:, :2] += 0.9 * y[:, None]
    from deepfeat.fileio import sha256_file

    return FeatureSet(X, labels, paths=paths, sha256=[sha256_file(p) for p in paths],
                      meta={"backbone": "synthetic-test"})


def run_cv(features):
    return cross_validate(features, classifiers=("nb", "knn"), n_features=4, folds=3, progress=False)


def comparisons_for(results, *, diff_vs_hist: float, ci_vs_hist: tuple, p_vs_hist: float):
    """A hand-made comparisons table in the shape the comparison module writes: best vs histogram baseline as
    given, best vs every other configuration not distinguishable."""
    acc = results.summary.set_index("config")["accuracy_mean"]
    deep = results.summary[results.summary["kind"] != "baseline"].sort_values("accuracy_mean", ascending=False)
    best = deep["config"].iloc[0]
    rows = []
    for other in acc.index:
        if other == best:
            continue
        if other == "baseline-histogram-svm":
            # stored the other way round (baseline vs best), to check that the verdict flips it
            rows.append({"config_a": other, "config_b": best, "mean_diff": -diff_vs_hist,
                         "ci_low": -ci_vs_hist[1], "ci_high": -ci_vs_hist[0], "p_value": p_vs_hist})
        else:
            d = float(acc[best] - acc[other])
            rows.append({"config_a": best, "config_b": other, "mean_diff": d, "ci_low": d - 0.2,
                         "ci_high": d + 0.2, "p_value": 0.5})
    return best, pd.DataFrame(rows)


# --- headless Chromium (tests/test_report_browser.py, tests/test_finetune_report.py) ---------------------------
CHROMIUM = [os.environ.get("DEEPFEAT_CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser",
            shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
DRIVER = [os.environ.get("DEEPFEAT_CHROMEDRIVER", ""), "/usr/bin/chromedriver", shutil.which("chromedriver") or ""]


def _first(candidates):
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                                                  "'deepfeat[test]')")
    binary, driver = _first(CHROMIUM), _first(DRIVER)
    if binary is None or driver is None:
        pytest.skip(f"no headless browser: chromium {'found' if binary else 'missing'}, chromedriver "
                    f"{'found' if driver else 'missing'} (Debian: apt-get install chromium chromium-driver; "
                    "or set DEEPFEAT_CHROMIUM / DEEPFEAT_CHROMEDRIVER)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    yield drv
    drv.quit()


def open_page(browser, page: Path) -> dict:
    """Load a page; return its SEVERE console entries and, for every <img>, (complete, naturalWidth, alt)."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(page.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.getAttribute('alt')]);")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return {"severe": severe, "images": images}
