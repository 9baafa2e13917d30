"""Fine-tuning recipes: study = 0.1's training, transfer's parts (LP-FT, discriminative rates, frozen batch norm,
warm-up + cosine, early stopping, steps and batch adaptation), and the cached frozen trunk."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from deepfeat.data.sources import open_source
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError
from deepfeat.finetuning import plan as P
from deepfeat.finetuning import training as T
from deepfeat.finetuning import trunk as TR
from deepfeat.finetuning.checkpoints import read_checkpoint
from deepfeat.finetuning.probe import fit_linear_head
from deepfeat.finetuning.run import FinetuneConfig, finetune

ARCH = "test_efficientnet"
FAST = dict(batch_size=8, image_size=32, workers=0)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    make_synthetic_smears(root / "imgs", n_per_class=12, classes=["blast", "lymphocyte"], size=32, seed=3)
    return open_source(root / "imgs")


# --- study = 0.1 ----------------------------------------------------------------------------------------------------
def test_study_recipe_trains_exactly_as_0_1(cells, tmp_path):
    """Golden figures from deepfeat 0.1's finetune() (release commit b861293), same data, options and one torch
    thread: sum of |weights| of the backbone and of the head after 3 epochs, and the per-epoch training losses."""
    res = finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "m.pt", progress=False, recipe="study",
                   epochs=3, **FAST)
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    body = sum(float(v.double().abs().sum()) for v in ck["state_dict"].values() if v.is_floating_point())
    head = sum(float(v.double().abs().sum()) for v in ck["head_state_dict"].values())
    assert body == pytest.approx(16504.724146845347, rel=1e-5)
    assert head == pytest.approx(31.950010751824266, rel=1e-5)
    assert res.curves["train_loss"].round(4).tolist() == pytest.approx([0.7285, 0.7117, 0.6943], abs=2e-4)
    assert ck["plan"]["frozen_stages"] == 0 and ck["linear_probe"] is None


def test_step_schedule_per_step_equals_0_1_per_epoch_schedule():
    for step in range(0, 95):
        per_step = T.step_lr_factor(step, steps_per_epoch=3, total_steps=90, schedule="step", drop_factor=0.1,
                                    drop_every=10, warmup=0.0)
        assert per_step == T.lr_factor(step // 3, "step", 30, 0.1, 10)


def test_warmup_then_cosine_by_hand():
    f = dict(steps_per_epoch=10, total_steps=100, schedule="cosine", drop_factor=0.1, drop_every=10, warmup=0.1)
    assert T.step_lr_factor(0, **f) == pytest.approx(1 / 11)       # warm-up: (step + 1) / (10 + 1)
    assert T.step_lr_factor(9, **f) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.09)) * 10 / 11)
    assert T.step_lr_factor(50, **f) == pytest.approx(0.5)
    assert T.step_lr_factor(100, **f) == pytest.approx(0.0, abs=1e-12)


# --- steps and batch size -------------------------------------------------------------------------------------------
def test_batch_shrinks_on_small_sets_and_few_steps_warn():
    transfer = FinetuneConfig()
    plan = P.make_plan(transfer, 1000)
    assert (plan.batch_size, plan.steps_per_epoch, plan.total_steps) == (32, 32, 32 * 15) and not plan.notes
    with pytest.warns(UserWarning, match="an epoch is only 5 optimizer step.*already at its floor of 8"):
        plan = P.make_plan(transfer, 40)  # 40 // 10 = 4 < 8: batch 8, 5 steps
    assert plan.batch_size == 8 and "batch size 32 -> 8" in plan.notes[0]
    with pytest.warns(UserWarning, match=r"only 1 optimizer step\(s\) \(120 training images, batch size 128\)"
                                         r".*min_steps_per_epoch"):
        P.make_plan(FinetuneConfig(recipe="study"), 120)
    plan = P.make_plan(FinetuneConfig(steps=100), 1000)  # 32 steps per epoch -> 4 epochs
    assert (plan.epochs, plan.total_steps) == (4, 128)


def test_steps_option_sets_the_run_length(cells, tmp_path):
    res = finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "m.pt", progress=False, steps=5,
                   min_steps_per_epoch=0, freeze_stages=0, linear_probe=False, **FAST)
    spe = res.plan["steps_per_epoch"]
    assert len(res.curves) == math.ceil(5 / spe) and res.curves["steps"].iloc[-1] >= 5


# --- frozen batch norm, discriminative rates, frozen stages -----------------------------------------------------------
def _bn_buffers(state):
    return {k: v.clone() for k, v in state.items() if "running_mean" in k or "running_var" in k}


@pytest.mark.parametrize("bn", ["frozen", "train"])
def test_batch_norm_statistics_stay_pretrained_only_when_frozen(cells, tmp_path, bn):
    from deepfeat.backbones import create_backbone

    torch.manual_seed(0)
    start = _bn_buffers(create_backbone(ARCH, weights="none").state_dict())
    finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "m.pt", progress=False, epochs=1, bn=bn,
             freeze_stages=0, linear_probe=False, **FAST)
    end = _bn_buffers(torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"])
    same = all(torch.equal(start[k], end[k]) for k in start)
    assert same is (bn == "frozen")


def test_head_and_backbone_learn_at_their_own_rates():
    from deepfeat.backbones import create_backbone

    net = T.attach_head(create_backbone(ARCH, weights="none"), "keep1000", 2)
    groups = P.trainable_groups(net, FinetuneConfig(lr=0.02, backbone_lr_scale=0.1), None)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 0.02), ("backbone", pytest.approx(0.002))]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    split = TR.TrunkSplit(net, "keep1000", 3)
    groups = P.trainable_groups(net, FinetuneConfig(recipe="study"), split)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(net.parameters())) - len(
        list(split.prefix.parameters()))


def test_frozen_stages_keep_their_weights(cells, tmp_path):
    from deepfeat.backbones import create_backbone

    torch.manual_seed(0)
    net0 = T.attach_head(create_backbone(ARCH, weights="none"), "keep1000", 2)
    stem0 = {k: v.clone() for k, v in net0.backbone.state_dict().items() if k.startswith(("conv_stem", "bn1",
                                                                                          "blocks.0."))}
    res = finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "m.pt", progress=False, epochs=2,
                   freeze_stages=2, lr=0.05, **FAST)
    state = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert res.plan["frozen_stages"] == 2 and res.plan["cached_trunk"] is True
    assert all(torch.equal(stem0[k], state[k]) for k in stem0)
    last = [k for k in state if k.startswith("blocks.") and k.endswith("weight")][-1]
    assert not torch.equal(net0.backbone.state_dict()[last], state[last])


def test_auto_freezes_on_cpu_only():
    from deepfeat.backbones import create_backbone

    body = create_backbone("tf_efficientnet_lite0", weights="none")
    assert len(TR.network_stages(body)) == 9
    assert TR.resolve_freeze_stages("auto", body, torch.device("cpu")) == 6
    assert TR.resolve_freeze_stages("auto", body, torch.device("cuda")) == 0
    with pytest.raises(DeepfeatError, match="freeze every stage"):
        TR.resolve_freeze_stages(9, body, torch.device("cpu"))
    with pytest.raises(DeepfeatError, match="stages deepfeat knows"):
        TR.network_stages(torch.nn.Linear(2, 2))


# --- the cached trunk ---------------------------------------------------------------------------------------------
def test_views_reproduce_the_cell_augmentation_exactly():
    rng_img = np.random.default_rng(0)
    img = Image.fromarray(rng_img.integers(0, 255, (7, 5, 3), dtype=np.uint8))
    aug = T.CellAugment(("flip", "rot90"))
    seen = set()
    for seed in range(40):
        aug.rng = np.random.default_rng(seed)
        expected = np.asarray(aug(img))
        view = TR.draw_view(np.random.default_rng(seed), ("flip", "rot90"))
        seen.add(view)
        assert np.array_equal(np.asarray(TR.apply_view(img, view)), expected), seed
    assert seen == set(range(8)) == set(TR.needed_views(("flip", "rot90")))
    assert TR.needed_views(()) == [0]


def _cached_and_recomputed(cells, tmp_path, **options):
    """Train twice, with the trunk cached and recomputed; the two networks and loss curves must agree."""
    TR.clear_trunk_cache()
    kw = dict(model=ARCH, weights="none", progress=False, epochs=2, freeze_stages=3, augment="flip,rot90", **FAST,
              **options)
    a = finetune(cells.root, out=tmp_path / "a.pt", cache_trunk=True, **kw)
    b = finetune(cells.root, out=tmp_path / "b.pt", cache_trunk=False, **kw)
    assert a.plan["cached_trunk"] and not b.plan["cached_trunk"]
    sa = torch.load(a.checkpoint, weights_only=True)["state_dict"]
    sb = torch.load(b.checkpoint, weights_only=True)["state_dict"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-4, atol=1e-5), k
    assert a.curves["train_loss"].tolist() == pytest.approx(b.curves["train_loss"].tolist(), rel=1e-4)


def test_cached_and_recomputed_trunk_train_the_same_network(cells, tmp_path):
    _cached_and_recomputed(cells, tmp_path)


@pytest.mark.parametrize("objective", ["siamese", "triplet"])
def test_a_metric_objective_trains_the_same_network_on_the_cached_trunk(objective, cells, tmp_path):
    _cached_and_recomputed(cells, tmp_path, objective=objective)


def test_cache_refuses_colour_jitter():
    with pytest.raises(DeepfeatError, match="cache_trunk=True cannot be used with colour jitter"):
        FinetuneConfig(cache_trunk=True, augment="cells")
    plan = P.make_plan(FinetuneConfig(augment="cells", freeze_stages=2), 100)
    from deepfeat.backbones import create_backbone

    net = T.attach_head(create_backbone(ARCH, weights="none"), "keep1000", 2)
    assert P.settle_trunk(plan, net, FinetuneConfig(augment="cells", freeze_stages=2), torch.device("cpu"))
    assert plan.cached is False and "colour jitter" in plan.notes[-1]


# --- linear probe ---------------------------------------------------------------------------------------------------
def test_linear_probe_fits_the_head_to_convergence():
    torch.manual_seed(0)
    y = torch.arange(60) % 3
    F = torch.randn(60, 20) + 3 * torch.nn.functional.one_hot(y, 20).float()
    net = torch.nn.Module()
    net.backbone, net.head = torch.nn.Identity(), torch.nn.Linear(20, 3)
    info = fit_linear_head(net, "keep1000", F, y)
    assert info["train_accuracy"] == 1.0 and info["images"] == 60
    assert float((net.head(F).argmax(1) == y).float().mean()) == 1.0


def test_transfer_run_records_probe_plan_and_early_stop(cells, tmp_path, monkeypatch):
    real = T.evaluate
    calls = {"n": 0}

    def flat(stepper, loader):  # the same validation figures every epoch: nothing ever improves after epoch 1
        st = real(stepper, loader)
        calls["n"] += 1
        st.loss, st.accuracy = 0.5, 0.5
        return st

    monkeypatch.setattr(T, "evaluate", flat)
    res = finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "m.pt", progress=False, epochs=10,
                   patience=2, **FAST)
    assert res.stopped_early == 3 and len(res.curves) == 3 and res.best_epoch == 1 and calls["n"] == 3
    ck = read_checkpoint(res.last_checkpoint)
    assert ck["finished"] is True and ck["stopped_early"] == 3
    assert res.linear_probe["images"] == res.n_train and res.linear_probe["train_accuracy"] > 0
    # resuming a finished (early-stopped) run trains nothing more
    again = finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "m.pt", progress=False, epochs=10,
                     patience=2, resume=res.last_checkpoint, **FAST)
    assert len(again.curves) == 3


def test_trunk_cache_is_keyed_by_the_frozen_weights():
    """Networks whose frozen stages differ (another checkpoint, another random init) never share activations."""
    from deepfeat.backbones import create_backbone

    def split():
        return TR.TrunkSplit(T.attach_head(create_backbone(ARCH, weights="none"), "keep1000", 2), "keep1000", 2)

    a, b = split(), split()
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        next(b.prefix.parameters())[0].add_(1e-3)
    assert a.fingerprint() != b.fingerprint()


def test_trunk_cache_over_its_memory_budget_is_not_built(monkeypatch):
    from deepfeat.backbones import create_backbone

    net = T.attach_head(create_backbone(ARCH, weights="none"), "keep1000", 2)
    monkeypatch.setenv("DEEPFEAT_TRUNK_CACHE_GB", "0.0001")  # ~100 KiB
    cfg = FinetuneConfig(freeze_stages=2)
    plan = P.make_plan(cfg, 1000)
    with pytest.warns(UserWarning, match=r"caching 1000 images x 8 views would take .* GiB, over the 0.0 GiB budget"):
        assert P.settle_trunk(plan, net, cfg, torch.device("cpu"), n_images=1000, input_size=(3, 32, 32))
    assert plan.cached is False and "recomputed every step" in plan.notes[-1]
    with pytest.raises(DeepfeatError, match="cache_trunk=True cannot be used here: caching 1000 images"):
        P.settle_trunk(P.make_plan(cfg, 1000), net, FinetuneConfig(freeze_stages=2, cache_trunk=True),
                       torch.device("cpu"), n_images=1000, input_size=(3, 32, 32))
    monkeypatch.setenv("DEEPFEAT_TRUNK_CACHE_GB", "1")
    plan = P.make_plan(cfg, 1000)
    P.settle_trunk(plan, net, cfg, torch.device("cpu"), n_images=1000, input_size=(3, 32, 32))
    assert plan.cached is True
