"""DarkNet19 / Tiny Darknet: architecture vs the original cfg files, timm interface, .weights I/O, and outputs
against vectors computed by the darknet C program (../shared/reference/darknet)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from deepfeat.backbones import darknet_io
from deepfeat.backbones.darknet import (
    DARKNET19_LAYERS,
    TINY_DARKNET_LAYERS,
    Darknet,
    DarknetBatchNorm2d,
)
from deepfeat.errors import DeepfeatError

IMAGES = ("dog", "eagle", "cell")
DARKNET19_RANDOM_SHA256 = "dfc6cdb2f13d4cfd93f5a4e8a418f5361bee0aefe37c1f9ed8b423ba5460f818"
TINY_SHA256 = "f1c3fe6b9bab9af69ae2a090682df3e5b9d83accba69551315f030ce1b37ea81"


def _cfg_sections(path):
    """[section] blocks of a darknet cfg in order, as (name, {key: value})."""
    sections = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            sections.append((line.strip("[]"), {}))
        elif "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            sections[-1][1][key] = value
    return sections


def _layers_from_cfg(path):
    """Our layer-list notation from a cfg, plus the final (classifier) conv section."""
    convs_and_pools = [(n, o) for n, o in _cfg_sections(path) if n in ("convolutional", "maxpool")]
    *body, head = convs_and_pools
    layers = []
    for name, opts in body:
        if name == "maxpool":
            assert (opts["size"], opts["stride"]) == ("2", "2")
            layers.append("M")
        else:
            assert opts == {"batch_normalize": "1", "filters": opts["filters"], "size": opts["size"], "stride": "1",
                            "pad": "1", "activation": "leaky"}
            layers.append(("C", int(opts["filters"]), int(opts["size"])))
    return tuple(layers), head


@pytest.mark.parametrize("cfg, layers", [("darknet19.cfg", DARKNET19_LAYERS), ("tiny.cfg", TINY_DARKNET_LAYERS)])
def test_layers_match_original_cfg(darknet_ref, cfg, layers):
    parsed, head = _layers_from_cfg(darknet_ref / cfg)
    assert parsed == layers
    assert head == ("convolutional", {"filters": "1000", "size": "1", "stride": "1", "pad": "1",
                                      "activation": "linear"})
    names = [n for n, _ in _cfg_sections(darknet_ref / cfg)]
    assert names[-2:] == ["avgpool", "softmax"]


def test_darknet19_has_19_convs_and_5_pools():
    model = timm.create_model("darknet19", pretrained=False)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert convs[-1].bias is not None and all(c.bias is None for c in convs[:-1])
    assert [c.padding for c in convs[:3]] == [(1, 1)] * 3 and convs[3].padding == (0, 0)  # darknet pad=1 -> k//2
    assert sum(p.numel() for p in model.parameters()) + sum(
        m.running_mean.numel() * 2 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    ) == 20_856_776  # exactly the floats of a darknet19 .weights file


def test_timm_interface_shapes():
    model = timm.create_model("darknet19", pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = model.forward_features(x)
        pooled = model.forward_head(fmap, pre_logits=True)
        logits = model.forward_head(fmap)
        full = model(x)
        conv_then_pool = model.classifier(fmap).mean((2, 3))  # darknet's order: 1x1 conv, then [avgpool]
    assert fmap.shape == (2, 1024, 2, 2) and pooled.shape == (2, 1024) and logits.shape == (2, 1000)
    assert torch.allclose(pooled, fmap.mean((2, 3)))
    torch.testing.assert_close(logits, full)
    torch.testing.assert_close(logits, conv_then_pool, atol=1e-5, rtol=1e-5)
    assert model.num_features == 1024 and model.num_classes == 1000
    assert model.default_cfg["input_size"] == (3, 224, 224) and model.pretrained_cfg["crop_pct"] == 1.0
    assert model.pretrained_cfg["mean"] == (0.0,) * 3 and model.pretrained_cfg["std"] == (1.0,) * 3
    assert model.pretrained_cfg["interpolation"] == "bilinear"
    model.reset_classifier(5)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, 1024)
    with pytest.raises(ValueError, match="global_pool='avg'"):
        model.reset_classifier(3, global_pool="max")


def test_tiny_darknet_shapes_and_odd_input_sizes():
    model = timm.create_model("tiny_darknet", pretrained=False, num_classes=7).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 128, 14, 14)
        # darknet's maxpool pads to ceil(n/2): 37 -> 19 -> 10 -> 5 -> 3
        assert model.forward_features(torch.randn(1, 3, 37, 37)).shape == (1, 128, 3, 3)
        assert model(torch.randn(1, 3, 37, 37)).shape == (1, 7)
        stages = timm.create_model("tiny_darknet", features_only=True, out_indices=(0, -1))(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape) for f in stages] == [(1, 16, 32, 32), (1, 128, 2, 2)]


def test_darknet_bn_only_changes_inference_formula():
    plain = timm.create_model("tiny_darknet", pretrained=False)
    exact = timm.create_model("tiny_darknet", pretrained=False, darknet_bn=True)
    assert list(plain.state_dict()) == list(exact.state_dict())
    bn = DarknetBatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
        bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.01, 0.25]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, 0.2, 0.3]))
    x = torch.randn(2, 4, 3, 3)
    expected = (x - bn.running_mean.view(1, -1, 1, 1)) / (bn.running_var.sqrt().view(1, -1, 1, 1) + 1e-6) \
        * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    bn.train()
    torch.testing.assert_close(bn(x), torch.nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True))


# --------------------------------------------------------------------------------------------- .weights I/O

@pytest.mark.parametrize("version, header_bytes", [((0, 1, 0), 16), ((0, 2, 0), 20), ((1, 0, 0), 20)])
def test_weights_round_trip_both_headers(tmp_path, version, header_bytes):
    torch.manual_seed(0)
    model = timm.create_model("tiny_darknet", pretrained=False, num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    path = darknet_io.save_darknet_weights(model, tmp_path / "t.weights", header_version=version, seen=12345)
    header = darknet_io.read_header(path)
    n = darknet_io.count_darknet_floats(model)
    assert header == dict(major=version[0], minor=version[1], revision=version[2], seen=12345,
                          header_bytes=header_bytes, n_floats=n)
    assert path.stat().st_size == header_bytes + 4 * n
    other = timm.create_model("tiny_darknet", pretrained=False, num_classes=10)
    darknet_io.load_darknet_weights(other, path)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, other.state_dict()[key]), key


def test_save_matches_original_file_bytes(darknet_ref, tmp_path):
    model = timm.create_model("tiny_darknet", pretrained=False)
    header = darknet_io.load_darknet_weights(model, darknet_ref / "tiny.weights")
    out = darknet_io.save_darknet_weights(model, tmp_path / "tiny.weights", header_version=(0, 1, 0),
                                          seen=header["seen"])
    assert hashlib.sha256(out.read_bytes()).hexdigest() == TINY_SHA256


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    model = timm.create_model("tiny_darknet", pretrained=False, num_classes=3)
    return model, darknet_io.save_darknet_weights(model, tmp_path_factory.mktemp("w") / "small.weights")


@pytest.mark.parametrize("change, match", [
    (lambda b: b[:-8], r"holds 917,873 float32 values .* needs exactly 917,875 \(file truncated"),
    (lambda b: b + b"\0" * 8, r"holds 917,877 float32 values .* needs exactly 917,875 \(extra data"),
    (lambda b: b[:-2], "not a whole number of float32"),
    (lambda b: b[:10], "too short for a header"),
    (lambda b: b[:18], "too short for its 20-byte header"),
])
def test_bad_weights_files_are_refused(small_weights, tmp_path, change, match):
    model, path = small_weights
    bad = tmp_path / "bad.weights"
    bad.write_bytes(change(path.read_bytes()))
    with pytest.raises(DeepfeatError, match=match):
        darknet_io.load_darknet_weights(model, bad)


def test_weights_of_another_network_name_both_counts(darknet_ref):
    model = timm.create_model("darknet19", pretrained=False)
    with pytest.raises(DeepfeatError, match=r"holds 1,046,488 float32 .* darknet19 .* needs exactly 20,856,776"):
        darknet_io.load_darknet_weights(model, darknet_ref / "tiny.weights")


def test_non_darknet_model_and_missing_file(small_weights, tmp_path):
    _, path = small_weights
    with pytest.raises(DeepfeatError, match="not a Darknet model"):
        darknet_io.load_darknet_weights(torch.nn.Linear(2, 2), path)
    with pytest.raises(DeepfeatError, match="does not exist"):
        darknet_io.read_header(tmp_path / "nope.weights")


# --------------------------------------------------------------------------------------------- ground truth

@pytest.fixture(scope="module")
def ref_images(darknet_ref):
    arrays = [np.asarray(Image.open(darknet_ref / f"{n}_224.png").convert("RGB"), dtype=np.float32) / 255
              for n in IMAGES]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _run(model, x):
    with torch.no_grad():
        logits = model.eval()(x).double()
    return logits.numpy(), logits.softmax(-1).numpy()


@pytest.mark.parametrize("darknet_bn, atol_logits, atol_probs", [(False, 3e-2, 1e-3), (True, 1e-4, 1e-5)])
def test_tiny_darknet_matches_darknet_program(darknet_ref, ref_images, darknet_bn, atol_logits, atol_probs):
    model = timm.create_model("tiny_darknet", pretrained=False, darknet_bn=darknet_bn)
    header = darknet_io.load_darknet_weights(model, darknet_ref / "tiny.weights")
    assert (header["header_bytes"], header["seen"], header["n_floats"]) == (16, 204_800_000, 1_046_488)
    logits, probs = _run(model, ref_images)
    ref_logits = np.load(darknet_ref / "tiny_224_avgpool.npy")
    ref_probs = np.load(darknet_ref / "tiny_224_probs.npy")
    np.testing.assert_allclose(logits, ref_logits, atol=atol_logits, rtol=0)
    np.testing.assert_allclose(probs, ref_probs, atol=atol_probs, rtol=0)
    top5 = np.argsort(-logits, axis=1)[:, :5].tolist()
    assert top5[0][:4] == [252, 14, 97, 148]  # dogsled, malamute, Afghan hound, Eskimo dog
    # dog's 5th (horse cart 292) and 6th (collie 123) are 1.2e-4 apart in probability: only exact BN orders them
    assert top5[0][4] == 292 if darknet_bn else top5[0][4] in (292, 123)
    assert top5[1] == [383, 396, 432, 397, 398]
    assert top5[2] == [782, 646, 996, 900, 580]


def test_timm_pretrained_custom_load_reads_darknet_file(darknet_ref, ref_images):
    # timm's pretrained=True path (custom_load -> Darknet.load_pretrained), pointed at a local file
    model = timm.create_model("tiny_darknet", pretrained=True, pretrained_cfg_overlay=dict(
        file=str(darknet_ref / "tiny.weights"), custom_load=True))
    logits, _ = _run(model, ref_images)
    np.testing.assert_allclose(logits, np.load(darknet_ref / "tiny_224_avgpool.npy"), atol=3e-2, rtol=0)


def write_random_darknet19(path):
    """The seeded random DarkNet19 .weights file of darknet19_random_weights_SPEC.md, with numpy alone."""
    rng = np.random.default_rng(0)
    parts = [np.array([0, 2, 0], "<i4").tobytes(), np.array([0], "<u8").tobytes()]
    c = 3
    for spec in [s for s in DARKNET19_LAYERS if s != "M"] + [("head", 1000, 1)]:
        kind, n, k = spec
        fan = c * k * k
        draws = ([rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)]
                 if kind == "C" else [rng.normal(0, 0.1, n)])
        draws.append(rng.normal(0, np.sqrt(2 / fan), n * fan))
        parts += [d.astype("<f4").tobytes() for d in draws]
        c = n
    data = b"".join(parts)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def darknet19_random(tmp_path_factory):
    path = tmp_path_factory.mktemp("d19") / "darknet19_random.weights"
    assert write_random_darknet19(path) == DARKNET19_RANDOM_SHA256
    assert path.stat().st_size == 83_427_124
    return path


@pytest.mark.parametrize("darknet_bn, atol", [(False, 1e-3), (True, 1e-4)])
def test_random_darknet19_matches_darknet_program(darknet_ref, ref_images, darknet19_random, darknet_bn, atol):
    model = timm.create_model("darknet19", pretrained=False, darknet_bn=darknet_bn)
    header = darknet_io.load_darknet_weights(model, darknet19_random)
    assert (header["header_bytes"], header["n_floats"]) == (20, 20_856_776)
    logits, probs = _run(model, ref_images)
    np.testing.assert_allclose(logits, np.load(darknet_ref / "darknet19_random_224_avgpool.npy"), atol=atol, rtol=0)
    np.testing.assert_allclose(probs, np.load(darknet_ref / "darknet19_random_224_probs.npy"), atol=5e-6, rtol=0)
    top5 = np.argsort(-logits, axis=1)[:, :5].tolist()
    assert top5[:2] == [[621, 851, 170, 471, 996]] * 2 and top5[2] == [621, 851, 170, 471, 453]


def test_darknet_is_a_darknet_subclass_of_module():
    assert isinstance(timm.create_model("tiny_darknet"), Darknet)
