"""Metric-learning fine-tuning objectives: the losses on hand-made cases, and a short CPU run of each objective on
timm's tiny ``test_efficientnet`` whose checkpoint feeds ``--layer pooled`` extraction and few-shot evaluation."""
from __future__ import annotations

import pytest
import torch

from deepfeat.data.sources import open_source
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError
from deepfeat.finetuning.objectives import (
    contrastive_loss,
    prototypical_loss,
    triplet_semihard_loss,
)
from deepfeat.finetuning.run import FinetuneConfig, finetune

ARCH = "test_efficientnet"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_contrastive_loss_by_hand():
    y = torch.tensor([0, 0, 1])
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # same class identical; other class at distance sqrt 2
    assert float(contrastive_loss(e, y, margin=1.0)) == pytest.approx(0.0, abs=1e-6)
    e2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # pair (0,1) at distance sqrt(2): d^2 = 2
    # positives: (0,1) d^2 = 2 -> mean 2; negatives: (0,2) d = sqrt 2 > margin -> 0, (1,2) d = 0 -> 1
    assert float(contrastive_loss(e2, y, margin=1.0)) == pytest.approx(2.0 + 0.5, abs=1e-5)


def test_triplet_semihard_picks_the_closest_farther_negative():
    y = torch.tensor([0, 0, 1, 1])
    angle = torch.tensor([0.0, 0.3, 0.35, 1.5])  # points on the unit circle
    e = torch.stack([angle.cos(), angle.sin()], 1)
    d = torch.cdist(e, e)
    loss = triplet_semihard_loss(e, y, margin=0.2)
    expected = []
    for a, p in ((0, 1), (1, 0), (2, 3), (3, 2)):
        negs = [n for n in range(4) if y[n] != y[a]]
        semi = [n for n in negs if d[a, p] < d[a, n] < d[a, p] + 0.2]
        n = min(semi, key=lambda k: d[a, k]) if semi else max(negs, key=lambda k: d[a, k])
        expected.append(max(0.0, float(d[a, p] - d[a, n] + 0.2)))
    assert float(loss) == pytest.approx(sum(expected) / 4, abs=1e-5)
    assert float(loss) > 0


def test_prototypical_loss_by_hand():
    y = torch.tensor([0, 0, 1, 1])
    e = torch.tensor([[0.0], [1.0], [3.0], [2.0]])  # prototypes 0 (class 0) and 3 (class 1); queries 1 and 2
    logits = -torch.tensor([[1.0, 4.0], [4.0, 1.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert float(prototypical_loss(e, y)) == pytest.approx(float(expected), abs=1e-6)
    assert float(prototypical_loss(e, torch.tensor([0, 1, 2, 3]))) == 0.0  # no class with 2 images: no episode


def test_unknown_objective_is_named():
    with pytest.raises(DeepfeatError, match="'objective' option of FinetuneConfig must be one of"):
        FinetuneConfig(objective="arcface")


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    make_synthetic_smears(root / "imgs", n_per_class=10, classes=["blast", "lymphocyte"], size=32, seed=5)
    return open_source(root / "imgs")


@pytest.mark.parametrize("objective", ["siamese", "triplet", "prototypical"])
def test_each_objective_trains_and_feeds_pooled_fewshot(objective, cells, tmp_path):
    from deepfeat.backbones import create_backbone
    from deepfeat.fewshot.evaluate import few_shot_evaluate
    from deepfeat.extraction.api import extract_features

    out = tmp_path / f"{objective}.pt"
    res = finetune(cells, model=ARCH, weights="none", out=out, progress=False, objective=objective, epochs=2,
                   batch_size=8, image_size=32, workers=0, augment="none", lr=0.05)
    assert res.curves["train_loss"].notna().all() and len(res.curves) == 2
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["config"]["objective"] == objective
    torch.manual_seed(0)
    init = create_backbone(ARCH, weights="none")
    trained = create_backbone(ARCH, weights=str(out))
    init_sd, trained_sd = init.state_dict(), trained.state_dict()
    body = [k for k in trained_sd if not k.startswith("classifier")]
    assert any(not torch.equal(init_sd[k], trained_sd[k]) for k in body if trained_sd[k].is_floating_point())
    fs = extract_features(cells, model=ARCH, weights=str(out), layer="pooled", cache=False, progress=False,
                          num_workers=0)
    assert fs.meta["finetune"]["train_sha256"]
    r = few_shot_evaluate(fs, ways=[2], shots=[1], queries=2, episodes=20, classifiers=["prototype_cos"],
                          baseline="none")
    assert any(line.startswith("WARNING: the backbone was fine-tuned (or validated) on") for line in r.honesty_lines())
