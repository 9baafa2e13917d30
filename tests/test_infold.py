"""In-fold fine-tuning: each fold's network is trained on that fold's training images only (tiny model, 1 epoch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.infold import cross_validate_finetuned
from deepfeat.finetuning.run import FinetuneConfig, read_checkpoint

CFG = FinetuneConfig(epochs=1, batch_size=8, image_size=32, workers=0)
CV = dict(model="test_efficientnet", weights="none", classifiers=["svm", "knn"], selections=["none", "mrmr"],
          n_features=20, folds=3, baseline="majority", progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest: speed and bit-identity


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_smears(root / "imgs", n_per_class=9, classes=["blast", "lymphocyte"], size=32, seed=1)


@pytest.fixture(scope="module")
def run(cells, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return work, cross_validate_finetuned(cells, finetune=CFG, work_dir=work, **CV)


def test_each_fold_network_never_saw_its_test_images(run, cells):
    work, res = run
    info = res.config["finetune"]
    assert info["in_fold"] is True and info["config"] == CFG.to_dict() and len(info["folds"]) == 3
    assert "fine-tuned inside each training fold" in " ".join(res.honesty_lines())
    preds = res.predictions.drop_duplicates("row")
    sha = np.asarray(preds.sort_values("row")["sha256"])
    for rec in info["folds"]:
        ckpt = read_checkpoint(rec["checkpoint"])
        test_rows = preds.loc[preds["fold"] == rec["fold_index"], "row"].to_numpy()
        used = set(ckpt["train_sha256"]) | set(ckpt["val_sha256"])
        assert not used & set(sha[test_rows])
        n_used = len(ckpt["train_sha256"]) + len(ckpt["val_sha256"])
        assert n_used + len(test_rows) == len(cells) and rec["n_train"] + rec["n_val"] == n_used
        assert rec["test_images_with_identical_bytes_in_finetuning"] == 0
    # three different networks made the features
    states = [torch.load(r["checkpoint"], weights_only=True)["state_dict"] for r in info["folds"]]
    key = [k for k in states[0] if k.endswith("weight")][-1]  # the last layer: trained whatever stages are frozen
    assert not torch.equal(states[0][key], states[1][key])


def test_results_are_those_of_the_shared_cv_code(run):
    _, res = run
    assert set(res.summary["config"]) == {"svm+none", "svm+mrmr", "knn+none", "knn+mrmr", "baseline-majority",
                                          "network+end-to-end"}
    assert res.config["parameters"]["fold_features"].startswith("FoldFinetuner(model='test_efficientnet'")
    assert res.config["parameters"]["folds"] == 3
    assert "fine-tuned network, end to end" in res.table().index


def test_end_to_end_row_is_each_fold_network_predicting_its_test_images(run, cells):
    """The network row equals running the fold's fine-tuned network (backbone + head) on the fold's test images."""
    from deepfeat.backbones import resolve_data_config
    from deepfeat.data.images import load_image
    from deepfeat.extraction.preprocessing import build_transform
    from deepfeat.finetuning.checkpoints import load_finetuned

    _, res = run
    pred = res.predictions[res.predictions["config"] == "network+end-to-end"]
    assert len(pred) == len(cells)
    for rec in res.config["finetune"]["folds"]:
        net, names = load_finetuned(rec["checkpoint"])
        ckpt = read_checkpoint(rec["checkpoint"])
        tf = build_transform({**resolve_data_config(net.backbone), **ckpt["data_config"]})
        part = pred[pred["fold"] == rec["fold_index"]]
        x = torch.stack([tf(load_image(p)) for p in part["path"]])
        with torch.no_grad():
            mine = [names[i] for i in net(x).argmax(1).tolist()]
        assert mine == part["pred"].astype(str).tolist()


def test_a_second_call_reuses_the_finished_fold_checkpoints(run, cells):
    work, res = run
    before = {p.name: p.stat().st_mtime_ns for p in work.glob("fold*.pt")}
    again = cross_validate_finetuned(cells, finetune=CFG, work_dir=work, **CV)
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("fold*.pt")} == before
    assert np.allclose(again.summary["accuracy_mean"], res.summary["accuracy_mean"])


def test_val_source_is_refused(cells):
    with pytest.raises(DeepfeatError, match="val_source cannot be used here"):
        cross_validate_finetuned(cells, finetune=FinetuneConfig(val_source=cells.root), **CV)
