"""write_report: every file is written, the HTML is self-contained, honesty comes first."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.evaluation.report import write_report
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

    pngs = [k for k in paths if k.startswith("plot_")]
    assert {"plot_accuracy", "plot_mrmr_scores", "plot_confusion_svm_mrmr", "plot_roc_svm_mrmr"} <= set(pngs)
    assert all(paths[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for k in pngs)

    page = paths["report_html"].read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "src='plots/" not in page and "http" not in page.split("<body>")[1]  # self-contained
    assert page.index("Honesty") < page.index("Table 2")
    assert "inside each training fold" in page and "cells/1.png [class|1] = cells/5.png [class|2]" in page

    md = paths["report_md"].read_text()
    assert md.index("## Honesty") < md.index("## Accuracy")
    assert "- WARNING: 1 group(s) of byte-identical images carry different labels" in md
    assert "class\\|1" in md  # pipes inside cells are escaped
