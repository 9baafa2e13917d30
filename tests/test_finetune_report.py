"""The fine-tuning report: summary from the numbers, curves, validation confusion, the validation images it got
wrong, in HTML (checked in headless Chromium when present) and markdown."""
from __future__ import annotations

import numpy as np
import pytest

from deepfeat.data.sources import open_source
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.reporting.finetune_report import wilson_interval, write_finetune_report
from deepfeat.finetuning.run import finetune, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    make_synthetic_smears(root / "imgs", n_per_class=12, classes=["blast", "lymphocyte"], size=32, seed=3)
    return finetune(open_source(root / "imgs"), model="test_efficientnet", weights="none", out=root / "m.pt",
                    progress=False, batch_size=8, image_size=32, workers=0, epochs=2)


def test_checkpoint_keeps_each_validation_prediction(tuned):
    m = read_checkpoint(tuned.checkpoint)["metrics"]
    assert len(m["val_paths"]) == len(m["val_predictions"]) == len(m["val_confidence"]) == tuned.n_val
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (m["val_true"], m["val_predictions"]), 1)
    assert cm.tolist() == m["confusion"] and all(0.5 <= c <= 1 for c in m["val_confidence"])


def test_finetune_report_shows_curves_confusion_and_errors(tuned, browser, tmp_path):
    paths = write_finetune_report(tuned, tmp_path / "ft.report.html", gallery_limits={"px": 40})
    page = paths["report_html"].read_text()
    m = tuned.metrics
    n_wrong = tuned.n_val - int(np.trace(m["confusion"]))
    assert page.count("data:image/png;base64,") == 2  # curves + validation confusion
    assert page.count("data:image/jpeg;base64,") == n_wrong
    assert f"{n_wrong} of {tuned.n_val} validation images misclassified" in page
    lo, hi = wilson_interval(round(m["accuracy"] * tuned.n_val), tuned.n_val)
    assert f"right {100 * m['accuracy']:.1f} % of the time (Wilson 95 % interval {100 * lo:.1f} % to {100 * hi:.1f} %)" in page
    assert f"kept epoch {tuned.best_epoch}." in page and "<td>no</td>" in page  # frozen_backbone as a word
    md = paths["report_md"].read_text()
    assert ("## Validation images it got wrong" in md) == (n_wrong > 0) and "## Tables" in md

    seen = browser.open_page(paths["report_html"])
    assert seen["severe"] == [] and len(seen["images"]) == 2 + n_wrong
    assert all(complete and width > 0 for complete, width, _ in seen["images"])


def test_wilson_interval_edges():
    assert np.isnan(wilson_interval(0, 0)).all()
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and 0.69 < lo < 0.73


def test_a_hybrids_frozen_row_uses_pooled_features_not_its_untrained_logits():
    from deepfeat.evaluation.finetune_compare import _head_untrained
    from deepfeat.reporting.finetune_report import _comparison_table, _frozen_layer

    assert _head_untrained("hybrid_lite012", "imagenet") and _head_untrained("hybrid_vgg16_inception_v3_xception",
                                                                             "imagenet")
    assert not _head_untrained("hybrid_lite012", "fold.pt") and not _head_untrained("tf_efficientnet_lite0",
                                                                                    "imagenet")
    c = {"network": 0.9, "finetuned_svm": 0.92, "frozen_svm": 0.88, "n_train": 10, "n_val": 5, "layer": "logits",
         "frozen_layer": "pooled"}
    assert _frozen_layer(c) == "pooled features (its logits come from an untrained head)"
    assert "pooled features (its logits come from an untrained head)" in str(_comparison_table(c))
    assert _frozen_layer({**c, "frozen_layer": "logits"}) == "logits"
    assert _frozen_layer({k: v for k, v in c.items() if k != "frozen_layer"}) == "logits"  # an older record
