"""The compiled CPU runtime (deepfeat.extraction.runtime): same features as eager timm within 1e-4 relative."""
import importlib.util

import numpy as np
import pytest
import timm
import torch

from deepfeat.errors import DeepfeatError
from deepfeat.extraction.engine import Engine
from deepfeat.extraction.forward import forward_layers
from deepfeat.extraction.runtime import MAX_REL_DIFF, CompiledForward, available_runtime, check_runtime

INSTALLED = [name for name in ("openvino", "onnxruntime") if importlib.util.find_spec(name)]
needs_runtime = pytest.mark.skipif(not INSTALLED, reason="neither openvino nor onnxruntime is installed")


def _net():
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False).eval()


@needs_runtime
@pytest.mark.parametrize("runtime", INSTALLED)
@pytest.mark.parametrize("layers", [["logits"], ["pooled", "logits"]])
def test_compiled_matches_eager_timm(runtime, layers):
    net = _net()
    x = torch.randn(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        f = net.forward_features(x)
        eager = {"logits": net(x), "pooled": net.forward_head(f, pre_logits=True)}
    got = CompiledForward(net, layers, (3, 48, 48), runtime)(x)
    assert list(got) == layers
    for layer in layers:
        ref = eager[layer].numpy()
        assert got[layer].shape == ref.shape
        assert np.abs(got[layer].numpy() - ref).max() <= MAX_REL_DIFF * np.abs(ref).max()


@needs_runtime
def test_check_runtime_refuses_a_network_that_differs():
    net = _net()
    compiled = CompiledForward(net, ["logits"], (3, 32, 32), INSTALLED[0])
    x = torch.randn(4, 3, 32, 32)
    keep, reason = check_runtime(compiled, lambda v: {"logits": net(v) * 1.01}, x)
    assert not keep and reason.startswith("runtime: torch (") and "would change the features" in reason
    keep, reason = check_runtime(compiled, lambda v: {"logits": net(v)}, x)
    assert keep and reason.startswith(f"runtime: {INSTALLED[0]} (")


@needs_runtime
def test_engine_with_compiled_runtime_and_d4_matches_eager(tmp_path):
    from deepfeat.data.synthetic import make_synthetic_smears

    paths = make_synthetic_smears(tmp_path / "img", n_per_class=2, size=40, seed=0).paths[:6]
    kw = dict(model="test_efficientnet", weights="none", layers=["logits", "pooled"], tta="d4", device="cpu",
              precision="fp32", channels_last="auto", crop_border=False, image_size=32, batch_size=4,
              num_workers=0, cache=False, progress=False)
    eager = Engine(**kw, runtime="torch")
    fast = Engine(**kw, runtime=INSTALLED[0])
    a, b = eager.run(paths), fast.run(paths)
    assert eager.meta()["runtime"] == "torch" and fast.meta()["runtime"] == INSTALLED[0]
    assert fast.compiled is not None and "check images" in fast.meta()["runtime_reason"]
    for layer in ("logits", "pooled"):
        ra, rb = np.stack(a.rows[layer]), np.stack(b.rows[layer])
        assert np.abs(ra - rb).max() <= MAX_REL_DIFF * np.abs(ra).max()


def test_auto_runtime_leaves_small_runs_and_handed_in_models_to_torch(tmp_path):
    from deepfeat.data.synthetic import make_synthetic_smears

    paths = make_synthetic_smears(tmp_path / "img", n_per_class=1, size=40, seed=0).paths[:3]
    kw = dict(weights="none", layers=["logits"], device="cpu", precision="fp32", channels_last="auto",
              crop_border=False, image_size=32, batch_size=4, num_workers=0, cache=False, progress=False)
    small = Engine(model="test_efficientnet", **kw)
    small.run(paths)
    assert small.meta()["runtime"] == "torch" and small.compiled is None
    assert small.meta()["runtime_reason"].startswith("runtime: auto -> torch (")
    if INSTALLED:
        with pytest.raises(DeepfeatError, match="runtime='openvino'.*a model handed in runs as given|"
                                                "runtime='onnxruntime'.*a model handed in runs as given"):
            Engine(model=_net(), runtime=INSTALLED[0], **kw).run(paths)


def test_runtime_parameter_is_checked():
    with pytest.raises(DeepfeatError, match="The 'runtime' parameter must be one of"):
        available_runtime("tensorrt")
    assert available_runtime("torch") is None


def test_tta_views_through_forward_layers_are_the_mean_of_single_views():
    net = _net()
    x = torch.randn(3, 3, 32, 32)
    d4 = forward_layers(net, x, ["logits"], "fp32", torch.device("cpu"), "d4")["logits"]
    views = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    one_by_one = np.mean([forward_layers(net, v, ["logits"], "fp32", torch.device("cpu"))["logits"]
                          for v in views], axis=0)
    assert np.abs(d4 - one_by_one).max() <= 1e-5 * np.abs(one_by_one).max()


@pytest.mark.parametrize("mean, std, size", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 64),
                                             ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 48)])
def test_preprocessing_is_timm_create_transform_bit_for_bit(tmp_path, mean, std, size):
    from timm.data import create_transform

    from deepfeat.data.images import load_image
    from deepfeat.data.synthetic import make_synthetic_smears
    from deepfeat.extraction.preprocessing import NormalisedTensor, build_transform

    cfg = {"input_size": (3, size, size), "interpolation": "bicubic", "mean": mean, "std": std, "crop_pct": 0.875,
           "crop_mode": "center"}
    ours, timms = build_transform(cfg), create_transform(**cfg, is_training=False)
    assert isinstance(ours.steps[-1], NormalisedTensor)  # the numpy tail is really in use
    src = make_synthetic_smears(tmp_path / "img", n_per_class=2, size=90, seed=3, fmt="jpg")
    for path in src.paths[:6]:
        img = load_image(path)
        a, b = ours(img), timms(img)
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (3, size, size)
        assert torch.equal(a, b)
