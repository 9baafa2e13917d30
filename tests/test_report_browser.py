"""report.html as a browser renders it: headless Chromium through Selenium.

Checks no console errors, every image decoded, the verdict present and consistent with results.csv, and the
gallery present; writes screenshots into pytest's tmp_path (and into $DEEPFEAT_ARTEFACTS when set). Uses the
system Chromium and chromedriver (Debian: `apt-get install chromium chromium-driver`, which .ci/run does as root);
browser downloads are impossible offline, so without them the tests skip and say why.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from report_helpers import make_cells, run_cv

from deepfeat.reporting.report import write_report


def _artefact(path: Path):
    folder = os.environ.get("DEEPFEAT_ARTEFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """The detectors themselves: a console error and an undecodable image are seen."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img alt="bad" src="data:image/png;base64,bm90IGFuIGltYWdl">'
                    '<script>console.error("deliberate failure")</script></body></html>')
    seen = browser.open_page(page)
    assert any("deliberate failure" in e["message"] for e in seen["severe"])
    assert [w for _, w, _ in seen["images"]] == [0]


def test_report_renders_in_a_real_browser(browser, tmp_path):
    fs = make_cells(tmp_path / "cells")
    res = run_cv(fs)
    paths = write_report(res, tmp_path / "report", gallery_limits={"max_errors": 12})
    seen = browser.open_page(paths["report_html"])

    assert seen["severe"] == [], seen["severe"]
    assert len(seen["images"]) >= 5 + 12  # five plots and the capped gallery, at least
    undecoded = [alt for complete, width, alt in seen["images"] if not complete or width <= 0]
    assert undecoded == []

    from selenium.webdriver.common.by import By

    # the verdict is on the page, first, and agrees with results.csv
    table = pd.read_csv(paths["results"])
    deep = table[table["kind"] != "baseline"]
    best = deep.loc[deep["accuracy_mean"].idxmax()]
    verdict = browser.find_element(By.ID, "verdict")
    first = verdict.find_element(By.CSS_SELECTOR, "p.best").text
    assert first.startswith(f"Best configuration: {best['config']}, accuracy {100 * best['accuracy_mean']:.1f} %")
    assert verdict.location["y"] < browser.find_element(By.TAG_NAME, "img").location["y"]
    # cross_validate's paired statistics are in the verdict: a p-value against the colour-histogram baseline
    assert "colour-histogram baseline" in verdict.text and "p = " in verdict.text

    cards = browser.find_elements(By.CSS_SELECTOR, "#error-gallery .cell")
    assert len(cards) == 12 and all("→" in c.text and "fold" in c.text for c in cards)
    assert "showing the 12 most confident errors" in browser.find_element(By.ID, "gallery-note").text
    assert browser.find_elements(By.CSS_SELECTOR, "#duplicate-gallery .pair.conflict")

    top = tmp_path / "report_top.png"
    assert browser.save_screenshot(str(top)) and top.stat().st_size > 10_000
    gallery = tmp_path / "report_gallery.png"
    browser.find_element(By.ID, "error-gallery").screenshot(str(gallery))
    assert gallery.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for shot in (top, gallery):
        _artefact(shot)


def test_report_with_saliency_overlays_renders(browser, tmp_path):
    """A report on a real (tiny, random-weight) network: every gallery card has its Grad-CAM overlay beside the
    thumbnail, and every image decodes."""
    from deepfeat.data.synthetic import make_synthetic_smears
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.extraction.api import extract_features

    cells = make_synthetic_smears(tmp_path / "cells", n_per_class=6, classes=["blast", "lymphocyte"], size=40,
                                  seed=2)
    fs = extract_features(cells, model="test_efficientnet", weights="none", layer="pooled", image_size=32,
                          cache=False, progress=False)
    res = cross_validate(fs, classifiers=("svm",), n_features=6, folds=3, baseline="none", progress=False)
    paths = write_report(res, tmp_path / "report", features=fs, gallery_limits={"max_errors": 6})
    seen = browser.open_page(paths["report_html"])
    assert seen["severe"] == [], seen["severe"]
    assert [alt for complete, width, alt in seen["images"] if not complete or width <= 0] == []

    from selenium.webdriver.common.by import By

    cards = browser.find_elements(By.CSS_SELECTOR, "#error-gallery .cell, #correct-gallery .cell")
    overlays = browser.find_elements(By.CSS_SELECTOR, "#error-gallery img.saliency, #correct-gallery img.saliency")
    assert len(cards) == len(overlays) > 0
    thumb = cards[0].find_element(By.CSS_SELECTOR, ".pics img:not(.saliency)")
    assert overlays[0].location["x"] > thumb.location["x"]  # beside the thumbnail, not below it
    assert "saliency overlays (Grad-CAM" in browser.find_element(By.ID, "saliency-note").text
    shot = tmp_path / "report_saliency.png"
    browser.find_element(By.ID, "error-gallery").screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _artefact(shot)


PBC = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
SHARED_PREFIX = ["neutrophil_band", "neutrophil_segmented", "neutrophil_toxic", "neutrophil_hypersegmented"]
LONG_NAME = "reactive_lymphocyte_with_blebs"


def test_confusion_matrix_labels_are_unique_and_explained_in_the_browser(browser, tmp_path):
    """Issue 25: 8 PBC classes, four names sharing a 10-character prefix and a 30-character name: every tick label
    is distinct, and each shortened one is explained (in the figure and in its caption on the page)."""
    import numpy as np

    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.features import FeatureSet
    from deepfeat.reporting.plots import class_labels

    names = PBC + SHARED_PREFIX + [LONG_NAME]
    assert len(LONG_NAME) == 30 and len({n[:10] for n in SHARED_PREFIX}) == 1
    rng = np.random.default_rng(0)
    y = np.repeat(names, 6)
    X = rng.normal(size=(len(y), 6)) + 3 * np.eye(6)[np.arange(len(y)) % 6] * (np.arange(len(y)) // 6 % 3)[:, None]
    res = cross_validate(FeatureSet(X, list(y)), classifiers=("nb",), selections=("none",), folds=3,
                         baseline="majority", progress=False)
    paths = write_report(res, tmp_path / "report")
    seen = browser.open_page(paths["report_html"])
    assert seen["severe"] == [], seen["severe"]
    assert all(complete and width > 0 for complete, width, _ in seen["images"])

    labels, legend = class_labels(names)
    assert len(set(labels)) == len(names)  # four "neutrophil..." names no longer read alike
    assert set(legend.values()) == {n for n, lab in zip(names, labels) if lab != n}
    assert {legend[lab] for lab in legend} >= set(SHARED_PREFIX) | {LONG_NAME}

    from selenium.webdriver.common.by import By

    caption = browser.find_element(By.CSS_SELECTOR, "#fig-confusion figcaption").text
    for label, full in legend.items():
        assert f"{label} = {full}" in caption
    image = browser.find_element(By.CSS_SELECTOR, "#fig-confusion img")
    assert image.get_attribute("naturalWidth") and int(image.get_attribute("naturalWidth")) > 200
    shot = tmp_path / "report_confusion_long_names.png"
    image.screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _artefact(shot)
