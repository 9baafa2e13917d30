"""Fused FeatureSets: several layers from one pass, several models, colour blocks, TTA, fuse_features and the CLI.

A tiny timm model with seeded random weights (``test_efficientnet``, weights='none') at 38 px keeps it fast; 40 px
square images make timm's eval preprocessing (resize 40 -> 40 is a copy, centre crop 38) commute exactly with
flips and quarter turns, so TTA can be checked against explicitly transformed image files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfeat.cli import main
from deepfeat.errors import DeepfeatError
from deepfeat.extraction.api import extract_features
from deepfeat.extraction.cache import model_key
from deepfeat.features import FeatureSet, load_features
from deepfeat.extraction.fusion import fuse_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(image_size=38, num_workers=0, progress=False, precision="fp32", device="cpu")
NET = dict(model="test_efficientnet", weights="none")
# Tolerances: one image alone vs inside a batch of 8 or 8 x B views changes the float32 summation order.
ATOL, RTOL = 2e-5, 1e-4


def make_images(folder: Path, n: int, seed=0, size=40) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        arr[: size // 2, :, 0] = 40 * (i % 3)  # asymmetric content: orientation matters to the network
        path = folder / f"img{i:02d}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "imgs", 6)


def _net():
    from deepfeat.backbones import create_backbone

    return create_backbone("test_efficientnet", "none").eval()


class _Counter:
    """Counts images entering a model's stem (a forward pre-hook), i.e. forward passes x batch size."""

    def __init__(self, net):
        self.n = 0
        net.conv_stem.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.n += args[0].shape[0]


# --------------------------------------------------------------------------------------------- multi-layer

def test_several_layers_come_from_one_pass_and_equal_single_layer_extractions(images):
    net = _net()
    seen = _Counter(net)
    fused = extract_features(images, model=net, layer="logits,pooled,stage2", cache=False, **FAST)
    assert seen.n == len(images)  # one forward pass per image for all three layers
    single = {layer: extract_features(images, model=_net(), layer=layer, cache=False, **FAST).X
              for layer in ("logits", "pooled")}
    blocks = {b["layer"]: b for b in fused.meta["blocks"]}
    assert [b["layer"] for b in fused.meta["blocks"]] == ["logits", "pooled", "stage2"]
    for layer, X in single.items():
        b = blocks[layer]
        np.testing.assert_array_equal(fused.X[:, b["start"]:b["stop"]], X)  # bit-identical
    # stage2 = timm's second intermediate feature map, global-average-pooled
    from deepfeat.backbones import resolve_data_config
    from deepfeat.data.images import load_image
    from deepfeat.extraction.preprocessing import build_transform

    transform = build_transform({**resolve_data_config(net), "input_size": (3, 38, 38)})
    x = torch.stack([transform(load_image(p)) for p in images])
    with torch.no_grad():
        ref = _net().forward_intermediates(x)[1][1].mean((2, 3)).numpy()
    b = blocks["stage2"]
    assert b["stop"] - b["start"] == 24
    np.testing.assert_allclose(fused.X[:, b["start"]:b["stop"]], ref, atol=ATOL, rtol=RTOL)
    assert fused.feature_names[b["start"]] == "test_efficientnet:stage2:0"


def test_fused_meta_names_and_provenance(images, tmp_path):
    fs = extract_features(images, model="test_efficientnet,colour_histogram", layer="logits,pooled",
                          weights="none", cache=tmp_path / "c", **FAST)
    assert fs.X.shape == (6, 1000 + 256 + 96)
    assert list(fs.feature_names[[0, 999, 1000, 1256, 1351]]) == [
        "test_efficientnet:logits:0", "test_efficientnet:logits:999", "test_efficientnet:pooled:0",
        "colour_histogram:features:0", "colour_histogram:features:95"]
    b0, b1, b2 = fs.meta["blocks"]
    assert (b0["start"], b0["stop"], b1["start"], b1["stop"], b2["start"], b2["stop"]) == (0, 1000, 1000, 1256,
                                                                                         1256, 1352)
    assert b0["model_sha256"] == b1["model_sha256"] and len(b0["model_sha256"]) == 64
    assert b0["weights"] == "none" and b0["precision"] == "fp32" and b0["tta"] == "none"
    assert b0["preprocessing"]["input_size"] == [3, 38, 38]
    assert b2["kind"] == "handcrafted" and b2["model_sha256"] is None
    assert fs.meta["recipe"] == "test_efficientnet:logits + test_efficientnet:pooled + colour_histogram:features"
    again = load_features(fs.save(tmp_path / "f.features"))
    assert again.meta["blocks"] == fs.meta["blocks"] and list(again.feature_names) == list(fs.feature_names)


def test_blocks_are_cached_separately(images, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = extract_features(images, layer="logits", cache=cache, **NET, **FAST)  # a plain 0.1 request
    more = extract_features(images, layer="logits,pooled", cache=cache, **NET, **FAST)
    hits = {b["layer"]: (b["cache_hits"], b["cache_misses"]) for b in more.meta["blocks"]}
    assert hits == {"logits": (6, 0), "pooled": (0, 6)}
    np.testing.assert_array_equal(more.X[:, :1000], first.X)  # the cached logits were kept, not rewritten
    # every block now has a request note: the same request is served without building any model
    import deepfeat.extraction.engine as engine

    def refuse(**kw):
        raise AssertionError("a model was built although every block was cached")

    monkeypatch.setattr(engine, "Engine", refuse)  # the one engine of every request
    fast = extract_features(images, layer="logits,pooled", cache=cache, **NET, **FAST)
    np.testing.assert_array_equal(fast.X, more.X)
    assert fast.meta["cache_hits"] == 6 and fast.meta["blocks"][1]["model_sha256"] == more.meta["blocks"][1][
        "model_sha256"]
    plain = extract_features(images, layer="pooled", cache=cache, **NET, **FAST)  # note written by the fused run
    np.testing.assert_array_equal(plain.X, more.X[:, 1000:])


def test_ctrl_c_in_a_fused_request_keeps_finished_batches(images, tmp_path, monkeypatch):
    """A fused request runs on the one engine: Ctrl-C says how many images are cached, and a rerun resumes."""
    import deepfeat.extraction.engine as engine
    from deepfeat.errors import ExtractionInterrupted

    cache = tmp_path / "c"
    forward, calls = engine.Engine.forward, []

    def second_batch_stops(self, x, precision, tta="none"):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(self, x, precision, tta)

    monkeypatch.setattr(engine.Engine, "forward", second_batch_stops)
    with pytest.raises(ExtractionInterrupted, match="4 of 6 images cached; run the same command again") as stop:
        extract_features(images, layer="logits,pooled", cache=cache, batch_size=4, **NET, **FAST)
    assert (stop.value.done, stop.value.total) == (4, 6)
    monkeypatch.undo()
    again = extract_features(images, layer="logits,pooled", cache=cache, batch_size=4, **NET, **FAST)
    assert [(b["cache_hits"], b["cache_misses"]) for b in again.meta["blocks"]] == [(4, 2), (4, 2)]


@pytest.mark.parametrize("layer, match", [
    ("stage9", r"has stages 1..5"), ("fc7", r"The 'layer' parameter must be one of \['logits', 'pooled'\]"),
    ("logits,,pooled", "without empty entries"), ("logits,logits", "names logits more than once"),
])
def test_bad_layers(images, layer, match):
    with pytest.raises(DeepfeatError, match=match):
        extract_features(images, layer=layer, cache=False, **NET, **FAST)


def test_stage_layers_need_forward_intermediates(images):
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))

    with pytest.raises(DeepfeatError, match="has no timm forward_intermediates"):
        extract_features(images, model=Plain(), layer="stage1,logits", cache=False, **FAST)


# --------------------------------------------------------------------------------------------- TTA

_D4 = [lambda im: im, lambda im: im.transpose(Image.Transpose.ROTATE_90),
       lambda im: im.transpose(Image.Transpose.ROTATE_180), lambda im: im.transpose(Image.Transpose.ROTATE_270),
       lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), lambda im: im.transpose(Image.Transpose.TRANSVERSE),
       lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM), lambda im: im.transpose(Image.Transpose.TRANSPOSE)]


def test_d4_equals_the_mean_of_explicitly_transformed_images(images, tmp_path):
    d4 = extract_features(images, layer="logits,pooled", tta="d4", cache=False, batch_size=3, **NET, **FAST)
    views = []
    for k, op in enumerate(_D4):  # the 8 dihedral transforms of every image, as image files
        folder = tmp_path / f"view{k}"
        folder.mkdir()
        for p in images:
            op(Image.open(p)).save(folder / Path(p).name)
        views.append(extract_features([str(folder / Path(p).name) for p in images], layer="logits,pooled",
                                      batch_size=1, cache=False, **NET, **FAST).X)  # one image at a time
    expected = np.mean(views, axis=0)
    np.testing.assert_allclose(d4.X, expected, atol=ATOL, rtol=RTOL)
    assert np.abs(views[0] - expected).max() > 100 * ATOL  # averaging changed something measurable
    assert d4.meta["tta"] == "d4" and {b["tta"] for b in d4.meta["blocks"]} == {"d4"}


def test_flip_is_identity_plus_horizontal_flip_in_one_batch(images, tmp_path):
    net = _net()
    seen = _Counter(net)
    flip = extract_features(images, model=net, tta="flip", cache=False, batch_size=4, **FAST)
    assert seen.n == 2 * len(images)  # 2 views per image, in ceil(6 / 4) = 2 forward passes
    mirrored = tmp_path / "mirror"
    mirrored.mkdir()
    for p in images:
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored / Path(p).name)
    a = extract_features(images, model=_net(), cache=False, batch_size=1, **FAST).X
    b = extract_features([str(mirrored / Path(p).name) for p in images], model=_net(), cache=False, batch_size=1,
                         **FAST).X
    np.testing.assert_allclose(flip.X, (a + b) / 2, atol=ATOL, rtol=RTOL)


def test_tta_is_part_of_the_cache_key(images, tmp_path):
    common = dict(backbone="m", weights_id="w", layer="logits", preprocessing={"a": 1}, precision="fp32")
    assert model_key(**common) == model_key(**common, tta="none")  # release-0.1 keys unchanged
    assert len({model_key(**common, tta=t) for t in ("none", "flip", "d4")}) == 3
    cache = tmp_path / "c"
    plain = extract_features(images, cache=cache, **NET, **FAST)
    d4 = extract_features(images, tta="d4", cache=cache, **NET, **FAST)
    assert (d4.meta["blocks"][0]["cache_hits"], d4.meta["blocks"][0]["cache_misses"]) == (0, 6)
    assert not np.allclose(d4.X, plain.X, atol=1e-3)
    again = extract_features(images, tta="d4", cache=cache, **NET, **FAST)
    assert again.meta["cache_hits"] == 6
    np.testing.assert_array_equal(again.X, d4.X)
    with pytest.raises(DeepfeatError, match=r"The 'tta' parameter must be one of \['none', 'flip', 'd4'\]"):
        extract_features(images, tta="rot", **NET, **FAST)


# --------------------------------------------------------------------------------------------- colour blocks

def test_colour_histogram_block_is_the_baselines_features(images, tmp_path):
    from deepfeat.evaluation.honesty import colour_histograms

    fs = extract_features(images, model="colour_histogram", cache=tmp_path / "c", **FAST)
    np.testing.assert_array_equal(fs.X, colour_histograms(images))
    for i, p in enumerate(images):  # an independent computation: numpy's histogram of 32 bins over 0..255
        px = np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3)
        ref = np.concatenate([np.histogram(px[:, c], bins=32, range=(0, 256))[0] / len(px) for c in range(3)])
        np.testing.assert_allclose(fs.X[i], ref, rtol=1e-6)
    cached = extract_features(images, model="colour_histogram", cache=tmp_path / "c", **FAST)
    assert cached.meta["cache_hits"] == 6
    np.testing.assert_array_equal(cached.X, fs.X)


def test_colour_moments_block(images):
    from scipy.stats import skew

    fs = extract_features(images, model="colour_moments", cache=False, **FAST)
    assert fs.X.shape == (6, 18)
    for i, p in enumerate(images):
        img = Image.open(p).convert("RGB")
        px = np.concatenate([np.asarray(img).reshape(-1, 3), np.asarray(img.convert("HSV")).reshape(-1, 3)], 1)
        px = px / 255.0
        ref = np.stack([px.mean(0), px.std(0), skew(px, axis=0)], 1).reshape(-1)
        np.testing.assert_allclose(fs.X[i], ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- fuse_features

@pytest.fixture
def two_blocks(images, tmp_path):
    deep = extract_features(images, cache=tmp_path / "c", **NET, **FAST)
    colour = extract_features(images, model="colour_histogram", cache=tmp_path / "c", **FAST)
    return deep, colour


def _labelled(fs, labels):
    return FeatureSet(fs.X, labels, fs.paths, None, fs.sha256, fs.meta, fs.feature_names)


def test_fusion_aligns_shuffled_inputs(two_blocks, images, tmp_path):
    deep, colour = two_blocks
    deep, colour = _labelled(deep, list("aabbcc")), _labelled(colour, list("aabbcc"))
    straight = fuse_features([deep, colour])
    shuffled = fuse_features([deep, colour.subset(np.random.default_rng(0).permutation(6))])
    np.testing.assert_array_equal(shuffled.X, straight.X)
    assert list(shuffled.paths) == list(deep.paths) and list(shuffled.y) == list("aabbcc")
    one_call = extract_features(images, model="test_efficientnet,colour_histogram", cache=tmp_path / "c",
                                weights="none", **FAST)
    np.testing.assert_array_equal(straight.X, one_call.X)
    assert list(straight.feature_names) == list(one_call.feature_names)
    assert [(b["model"], b["start"], b["stop"]) for b in straight.meta["blocks"]] == [
        ("test_efficientnet", 0, 1000), ("colour_histogram", 1000, 1096)]
    reverse = fuse_features([colour.subset([5, 4, 3, 2, 1, 0]), deep])  # rows follow the first input
    assert list(reverse.paths) == list(deep.paths[::-1])
    np.testing.assert_array_equal(reverse.X[:, 96:], deep.X[::-1])


def test_fusion_refuses_missing_rows_and_names_them(two_blocks):
    deep, colour = two_blocks
    with pytest.raises(DeepfeatError, match=r"2 image\(s\) are not in every input, e.g. .*img00.png \(not in "
                                            r"colour.features\); .*img03.png"):
        fuse_features([deep, colour.subset([1, 2, 4, 5])], names=["deep.features", "colour.features"])


def test_fusion_refuses_conflicting_labels_and_repeated_blocks(two_blocks):
    deep, colour = two_blocks
    with pytest.raises(DeepfeatError, match=r"1 image\(s\) have conflicting labels: .*img02.png: 'b' in input 1 vs "
                                            r"'x' in input 2"):
        fuse_features([_labelled(deep, list("aabbcc")), _labelled(colour, list("aaxbcc"))])
    with pytest.raises(DeepfeatError, match="both hold column 'test_efficientnet:logits:0'"):
        fuse_features([deep, colour, deep])


def test_fusion_of_byte_identical_images_at_two_paths(tmp_path):
    paths = make_images(tmp_path / "a", 3)
    twin = tmp_path / "a" / "twin.png"
    twin.write_bytes(Path(paths[0]).read_bytes())
    paths.append(str(twin))
    a = FeatureSet(np.arange(4.0)[:, None], ["x", "y", "z", "x"], paths, sha256=_shas(paths),
                   meta={"backbone": "m1", "layer": "logits"})
    b = a.subset([3, 2, 1, 0])
    b.meta = {"backbone": "m2", "layer": "logits"}
    b.X = b.X * 10
    fused = fuse_features([a, b])
    np.testing.assert_array_equal(fused.X, np.c_[np.arange(4.0), 10 * np.arange(4.0)])


def _shas(paths):
    from deepfeat.fileio import sha256_file

    return [sha256_file(p) for p in paths]


# --------------------------------------------------------------------------------------------- CLI

def _cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_extract_several_models_and_layers_then_fuse(images, tmp_path, capsys):
    folder = str(Path(images[0]).parent)
    out = tmp_path / "ab.features"
    code, text, _ = _cli(capsys, "extract", folder, "-o", str(out), "--model", "test_efficientnet,colour_moments",
                         "--weights", "none", "--layer", "logits,stage1", "--tta", "flip", "--image-size", "38",
                         "--device", "cpu", "--precision", "fp32", "--workers", "0", "--quiet")
    assert code == 0 and "6 images x 1034 features" in text
    fs = load_features(out)
    assert fs.X.shape == (6, 1000 + 16 + 18)
    assert [(b["model"], b["layer"], b["tta"]) for b in fs.meta["blocks"]] == [
        ("test_efficientnet", "logits", "flip"), ("test_efficientnet", "stage1", "flip"),
        ("colour_moments", "features", "none")]
    hist = tmp_path / "h.features"
    assert _cli(capsys, "extract", folder, "-o", str(hist), "--model", "colour_histogram", "--quiet")[0] == 0
    fused = tmp_path / "fused.features"
    code, text, _ = _cli(capsys, "fuse", str(out), str(hist), "-o", str(fused))
    assert code == 0 and "wrote" in text and "6 images x 1130 features" in text
    both = load_features(fused)
    assert both.X.shape == (6, 1034 + 96) and both.feature_names[-1] == "colour_histogram:features:95"
    code, _, err = _cli(capsys, "fuse", str(out), str(out), "-o", str(tmp_path / "twice.features"))
    assert code == 2 and err.startswith("error: fuse_features:") and "ab.features" in err
    code, _, err = _cli(capsys, "extract", folder, "-o", str(tmp_path / "x.features"), "--tta", "d8", "--quiet")
    assert code == 2 and "The 'tta' parameter must be one of" in err


def test_pipeline_features_table_accepts_lists_and_tta(tmp_path):
    from deepfeat.experiments import Experiment

    path = tmp_path / "p.toml"
    path.write_text('[features]\nmodel = ["tf_efficientnet_lite0", "colour_histogram"]\nlayer = "logits,pooled"\n'
                    'tta = "d4"\n')
    exp = Experiment.from_toml(path)
    assert exp.features == {"model": ["tf_efficientnet_lite0", "colour_histogram"], "layer": "logits,pooled",
                            "tta": "d4"}


def test_fine_tuning_provenance_survives_fusion(two_blocks):
    deep, colour = two_blocks
    deep.meta["finetune"] = {"checkpoint_sha256": "c" * 64, "train_sha256": [deep.sha256[0]], "val_sha256": []}
    fused = fuse_features([colour, deep])
    assert fused.meta["finetune"]["train_sha256"] == [deep.sha256[0]]  # the CV overlap check still sees it
    from deepfeat.evaluation.honesty import finetune_overlap

    assert finetune_overlap(fused)["train_overlap"] == 1


def test_unreadable_images_in_a_fused_request(images, tmp_path):
    from deepfeat.extraction.inputs import UnreadableImagesError

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    mixed = images[:3] + [str(bad)] + images[3:]
    with pytest.raises(UnreadableImagesError, match=r"(?s)1 image\(s\) could not be read.*broken.png"):
        extract_features(mixed, model="test_efficientnet,colour_histogram", weights="none", cache=tmp_path / "c",
                         **FAST)
    fs = extract_features(mixed, model="test_efficientnet,colour_histogram", weights="none", cache=tmp_path / "c",
                          on_error="skip", **FAST)
    assert len(fs) == 6 and [s["path"] for s in fs.meta["skipped"]] == [str(bad)]
    assert fs.meta["cache_hits"] == 6  # the readable images were cached before the error was raised
