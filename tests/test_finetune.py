"""Fine-tuning: config, split bookkeeping, checkpoint round trip, both heads, determinism, resume after kill -9.

Everything runs on timm's tiny ``test_efficientnet`` with random weights, 32 px synthetic images, 1-3 epochs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfeat.backbones import create_backbone
from deepfeat.data.images import sha256_file
from deepfeat.data.sources import open_source
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat import defaults
from deepfeat.errors import DeepfeatError, ImageReadError, ModelFileError
from deepfeat.finetuning.run import (
    FinetuneConfig,
    finetune,
    load_finetuned,
    read_checkpoint,
    split_train_val,
)
from deepfeat.finetuning.training import CellAugment, epoch_order

ROOT = Path(__file__).resolve().parents[1]
ARCH = "test_efficientnet"
FAST = dict(batch_size=8, image_size=32, workers=0, epochs=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest: speed and bit-identity


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """24 synthetic 32-px cells, 2 classes, with one byte-identical duplicate pair; opened as a plain folder
    (no subject ids), so only the sha256 keeps the duplicates together."""
    root = tmp_path_factory.mktemp("cells")
    make_synthetic_smears(root / "imgs", n_per_class=12, classes=["blast", "lymphocyte"], size=32, seed=3)
    return open_source(root / "imgs")


def _probe():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _train(cells, out, **kw):
    """Fine-tune; also return the trained network's outputs on a fixed probe, taken right after the last epoch."""
    seen = {}

    def grab(epoch, row, model):
        model.eval()
        with torch.no_grad():
            seen["full"] = model(_probe())
            seen["backbone"] = model.backbone(_probe()) if hasattr(model, "backbone") else seen["full"]
        model.train()

    result = finetune(cells, model=ARCH, weights="none", out=out, progress=False, on_epoch_end=grab,
                      **{**FAST, **kw})
    return result, seen


@pytest.fixture(scope="module", params=["keep1000", "replace"])
def trained(request, cells, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "model.pt"
    result, seen = _train(cells, out, head=request.param)
    return request.param, result, seen


# --- config --------------------------------------------------------------------------------------------------
# deepfeat 0.1's FinetuneConfig().to_dict(), verbatim: recipe="study" must go on producing these checkpoints
STUDY_0_1 = {'epochs': 30, 'batch_size': 128, 'lr': 0.01, 'optimizer': 'sgd', 'momentum': 0.9, 'weight_decay': 0.0001,
             'schedule': 'step', 'lr_drop_factor': 0.1, 'lr_drop_every': 10, 'grad_clip': 1.0, 'val_fraction': 0.3,
             'val_source': None, 'augment': 'cells', 'balance': 'none', 'freeze_backbone_epochs': 0,
             'head': 'keep1000', 'device': 'auto', 'workers': None, 'seed': 0, 'precision': 'auto',
             'channels_last': 'auto', 'image_size': None, 'crop_border': False, 'monitor': 'val_loss'}
# the 0.2 options, at the values that leave 0.1's training unchanged
STUDY_NEW_OPTIONS = {"recipe": "study", "objective": "crossentropy", "linear_probe": False, "backbone_lr_scale": 1.0,
                     "bn": "train", "warmup": 0.0, "label_smoothing": 0.0, "patience": None, "steps": None,
                     "min_steps_per_epoch": 0, "freeze_stages": 0, "cache_trunk": "auto"}


def test_study_recipe_is_0_1_configuration_and_pipeline_files_use_it():
    cfg = FinetuneConfig(recipe="study")
    assert cfg.to_dict() == {**STUDY_0_1, **STUDY_NEW_OPTIONS}
    for name in ("dogan2023_full.toml", "dogan2023_infold.toml"):
        path = ROOT / "pipelines" / name
        assert path.is_file(), name
        assert FinetuneConfig.from_toml(path) == cfg, name


def test_default_is_the_transfer_recipe_and_given_options_win():
    cfg = FinetuneConfig()
    assert cfg.recipe == defaults.RECIPE == "transfer"
    assert (cfg.optimizer, cfg.lr, cfg.backbone_lr_scale, cfg.bn, cfg.linear_probe, cfg.schedule, cfg.patience) == \
        ("adamw", 1e-3, 0.1, "frozen", True, "cosine", 4)
    mixed = FinetuneConfig(recipe="study", lr=0.05, bn="frozen")
    assert (mixed.lr, mixed.bn, mixed.optimizer, mixed.batch_size) == (0.05, "frozen", "sgd", 128)
    with pytest.raises(DeepfeatError, match="'recipe' option must be one of study, transfer"):
        FinetuneConfig(recipe="fast")


def test_bad_options_are_named():
    with pytest.raises(DeepfeatError, match="'optimizer' option of FinetuneConfig must be one of sgd, adamw"):
        FinetuneConfig(optimizer="adam")
    with pytest.raises(DeepfeatError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        FinetuneConfig.from_dict({"epoch": 3})
    with pytest.raises(DeepfeatError, match="unknown operation"):
        FinetuneConfig(augment="flip,shear")
    with pytest.raises(DeepfeatError, match="val_fraction"):
        FinetuneConfig(val_fraction=1.0)
    with pytest.raises(DeepfeatError, match="freeze_backbone_epochs"):
        FinetuneConfig(epochs=2, freeze_backbone_epochs=3)


def test_from_toml_reads_the_finetune_table(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('[finetune]\nenabled = true\nin_fold = true\nepochs = 4\nschedule = "cosine"\n')
    cfg = FinetuneConfig.from_toml(path)
    assert (cfg.epochs, cfg.schedule, cfg.lr, cfg.recipe) == (4, "cosine", 1e-3, "transfer")  # lr: the recipe's
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg


# --- split bookkeeping ---------------------------------------------------------------------------------------
def test_split_keeps_subjects_and_identical_images_on_one_side():
    labels = ["a"] * 10 + ["b"] * 10
    groups = [f"s{i // 2}" for i in range(20)]  # 10 subjects of 2 images
    sha = [f"h{i}" for i in range(20)]
    sha[4] = sha[9]  # subjects s2 and s4 share an image: they must travel together
    tr, va = split_train_val(labels, fraction=0.3, seed=0, groups=groups, sha256=sha)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(20))
    assert not {groups[i] for i in tr} & {groups[i] for i in va}
    assert ({2, 4} <= {int(groups[i][1:]) for i in va}) or not ({2, 4} & {int(groups[i][1:]) for i in va})
    assert {labels[i] for i in va} == {"a", "b"}
    with pytest.raises(DeepfeatError, match=r"class\(es\) \['b'\] have fewer than 2"):
        split_train_val(["a", "a", "a", "b"], fraction=0.3, seed=0)


def test_checkpoint_lists_exactly_the_images_used_and_they_are_disjoint(trained, cells):
    _, result, _ = trained
    ckpt = read_checkpoint(result.checkpoint)
    train, val = ckpt["train_sha256"], ckpt["val_sha256"]
    assert len(train) == result.n_train and len(val) == result.n_val and len(train) + len(val) == len(cells)
    assert sorted(train + val) == sorted(sha256_file(p) for p in cells.paths)
    assert not set(train) & set(val)  # the duplicate pair in `cells` sits on one side
    assert len(set(train + val)) == len(cells) - 1
    assert ckpt["split"]["grouped_by"] == "identical bytes (sha256)"


# --- checkpoint round trip, both heads -----------------------------------------------------------------------
def test_checkpoint_loads_anywhere_weights_are_accepted_and_gives_the_same_outputs(trained):
    head, result, seen = trained
    model = create_backbone(ARCH, weights=str(result.checkpoint))
    with torch.no_grad():
        out = model(_probe())
    # training ran in channels_last, this copy in the default layout: equal up to float32 rounding
    torch.testing.assert_close(out, seen["backbone"])
    assert out.shape[1] == (1000 if head == "keep1000" else 2)
    info = model.deepfeat_info
    assert info["weights_sha256"] == sha256_file(result.checkpoint) and info["checkpoint"]["head"] == head
    full, names = load_finetuned(result.checkpoint)
    with torch.no_grad():
        torch.testing.assert_close(full(_probe()), seen["full"])
    assert names == ["synthetic_blast", "synthetic_lymphocyte"]
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert (ckpt["model"], ckpt["head"], ckpt["num_classes"], ckpt["epoch"]) == (ARCH, head, 2, 1)
    assert (ckpt["head_state_dict"] is None) == (head == "replace")
    assert ckpt["config"]["head"] == head and "torch" in ckpt["versions"]


def test_darknet_classifier_can_be_replaced_and_round_trips(cells, tmp_path):
    out = tmp_path / "tiny.pt"
    seen = {}

    def grab(epoch, row, model):
        model.eval()
        with torch.no_grad():
            seen["out"] = model(_probe())
        model.train()

    finetune(cells, model="tiny_darknet", weights="none", out=out, head="replace", progress=False,
             on_epoch_end=grab, **FAST)
    with torch.no_grad():
        again = create_backbone("tiny_darknet", weights=str(out))(_probe())
    assert again.shape == (3, 2)
    torch.testing.assert_close(again, seen["out"])


def test_report_curves_and_files(trained):
    _, result, _ = trained
    m = result.metrics
    assert np.asarray(m["confusion"]).sum() == result.n_val and 0 <= m["accuracy"] <= 1 and "f1_macro" in m
    assert list(result.curves.columns[:5]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert result.files["curves_csv"].exists() and result.files["curves_png"].stat().st_size > 1000
    assert "accuracy" in result.summary() and "confusion" in result.summary()
    last = read_checkpoint(result.last_checkpoint)
    assert {"optimizer_state", "scheduler_state", "rng_state"} <= set(last)
    assert "optimizer_state" not in read_checkpoint(result.checkpoint)


# --- determinism and resume ----------------------------------------------------------------------------------
def _weights(path):
    ckpt = torch.load(path, weights_only=True)
    return {**ckpt["state_dict"], **{f"head.{k}": v for k, v in (ckpt["head_state_dict"] or {}).items()}}


def test_same_seed_same_weights_whatever_the_worker_count(cells, tmp_path):
    first, _ = _train(cells, tmp_path / "first.pt")
    again, _ = _train(cells, tmp_path / "again.pt", workers=1)
    a, b = _weights(first.last_checkpoint), _weights(again.last_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other, _ = _train(cells, tmp_path / "other.pt", seed=1)
    c = _weights(other.last_checkpoint)
    assert not all(torch.equal(a[k], c[k]) for k in a)


_KILLED_RUN = """
import sys, time
from pathlib import Path
from deepfeat.finetuning.run import finetune

def stop_after_first(epoch, row, model):
    if epoch == 1:
        Path(sys.argv[3]).write_text("checkpoint of epoch 1 written")
        time.sleep(600)  # the test kills us here

finetune(sys.argv[1], model="{arch}", weights="none", out=sys.argv[2], progress=False,
         on_epoch_end=stop_after_first, **{opts})
"""


def test_resume_after_kill_ends_at_the_uninterrupted_weights(cells, tmp_path):
    opts = {**FAST, "epochs": 3, "augment": "cells", "balance": "oversample"}
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN.format(arch=ARCH, opts=repr(opts))))
    out, marker = tmp_path / "killed.pt", tmp_path / "epoch1.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process (see _one_thread)
    proc = subprocess.Popen([sys.executable, str(script), cells.root, str(out), str(marker)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600  # generous: a loaded 2-core machine trains slowly
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the training subprocess did not finish its first epoch"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    last = out.with_name("killed.last.pt")
    assert read_checkpoint(last)["epoch"] == 1
    resumed = finetune(cells.root, model=ARCH, weights="none", out=out, resume=last, progress=False, **opts)
    straight = finetune(cells.root, model=ARCH, weights="none", out=tmp_path / "straight.pt", progress=False,
                        **opts)
    assert list(resumed.curves["epoch"]) == [1, 2, 3]
    a, b = _weights(resumed.last_checkpoint), _weights(straight.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.curves.drop(columns=["seconds", "train_images_per_s"]).equals(
        straight.curves.drop(columns=["seconds", "train_images_per_s"]))
    with pytest.raises(DeepfeatError, match=r"options differ \(lr: checkpoint 0.001, now 0.1\)"):
        finetune(cells.root, model=ARCH, weights="none", out=out, resume=last, progress=False,
                 **{**opts, "lr": 0.1})
    with pytest.raises(DeepfeatError, match="no optimizer state"):
        finetune(cells.root, model=ARCH, weights="none", out=out, resume=out, progress=False, **opts)


# --- training options ----------------------------------------------------------------------------------------
def test_other_options_run(cells, tmp_path):
    result, _ = _train(cells, tmp_path / "o.pt", epochs=2, optimizer="adamw", lr=1e-3, schedule="cosine",
                       balance="class-weight", freeze_backbone_epochs=1, monitor="val_accuracy", augment="none")
    assert list(result.curves["frozen_backbone"]) == [True, False]
    assert result.curves["lr"].iloc[1] < result.curves["lr"].iloc[0]


def test_oversampling_balances_classes_and_order_depends_only_on_seed_and_epoch():
    targets = np.array([0] * 30 + [1] * 6)
    order = epoch_order(targets, 0, 0, "oversample", 8)
    counts = np.bincount(targets[order], minlength=2)
    assert abs(counts[0] - counts[1]) < 12
    assert epoch_order(targets, 3, 0, "none", 8) == epoch_order(targets, 3, 0, "none", 8)
    assert epoch_order(targets, 3, 0, "none", 8) != epoch_order(targets, 4, 0, "none", 8)
    assert len(epoch_order(np.zeros(17, int), 0, 0, "none", 8)) == 16  # no batch of one for batch norm


def test_cell_augmentation_is_label_preserving_and_seeded():
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    geo = CellAugment(["flip", "rot90"])
    outs = []
    for epoch in range(6):
        geo.rng = np.random.default_rng([0, epoch, 5])
        outs.append(np.asarray(geo(img)))
    assert all(np.array_equal(np.sort(o, axis=None), np.sort(np.asarray(img), axis=None)) for o in outs)
    assert len({o.tobytes() for o in outs}) > 1
    geo.rng = np.random.default_rng([0, 0, 5])
    assert np.array_equal(np.asarray(geo(img)), outs[0])


# --- bad input -----------------------------------------------------------------------------------------------
def test_bad_sources_fail_clearly(cells, tmp_path):
    with pytest.raises(DeepfeatError, match="has no labels"):
        finetune([cells.paths[0], cells.paths[-1]], model=ARCH, weights="none", out=tmp_path / "x.pt", **FAST)
    one = cells.subset([i for i, lab in enumerate(cells.labels) if lab == "synthetic_blast"])
    with pytest.raises(DeepfeatError, match="at least two"):
        finetune(one, model=ARCH, weights="none", out=tmp_path / "x.pt", **FAST)
    with pytest.raises(DeepfeatError, match=r"both in training and in val_source"):
        finetune(cells, model=ARCH, weights="none", out=tmp_path / "x.pt", val_source=cells.root, **FAST)
    if not torch.cuda.is_available():
        with pytest.raises(DeepfeatError, match="CUDA is not available"):
            finetune(cells, model=ARCH, weights="none", out=tmp_path / "x.pt", device="cuda", **FAST)
    with pytest.raises(ModelFileError, match="not a deepfeat fine-tuning checkpoint"):
        torch.save({"a": torch.zeros(1)}, tmp_path / "foreign.pt")
        read_checkpoint(tmp_path / "foreign.pt")


def test_unreadable_training_image_is_named(cells, tmp_path):
    broken = tmp_path / "broken"
    for lab in ("a", "b"):
        (broken / lab).mkdir(parents=True)
        for i in range(4):
            (broken / lab / f"{i}.png").write_bytes(Path(cells.paths[i if lab == "a" else -1 - i]).read_bytes())
    (broken / "a" / "9.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"9\.png.*fix or remove unreadable images"):
        finetune(broken, model=ARCH, weights="none", out=tmp_path / "x.pt", **FAST)
