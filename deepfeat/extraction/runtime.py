"""A compiled CPU runtime for the fp32 forward pass: the network exported once to ONNX and run by OpenVINO (or ONNX
Runtime), used by :func:`deepfeat.extraction.forward.forward_layers` in place of eager torch where it is faster and
gives the same features.

Why: on CPUs without AVX-512 / native bf16 the eager fp32 loop is the only honest precision, and eager torch runs
EfficientNet's depthwise convolutions slowly. ``benchmarks/bench_extract.py --part levers`` measures every lever
side by side (channels_last, batch size, torch.jit.trace + freeze, torch.compile, ONNX Runtime, OpenVINO); the
compiled runtime is the one that wins there (figures in README, "Extraction speed on the CPU").

Kept honest:

* only on the CPU, at precision fp32, for the layers ``logits`` / ``pooled`` (any TTA: the views are made in torch
  and the compiled network runs the V x B batch), for networks the engine built from a name (a module handed in
  by the caller runs as given: it may count calls or have side effects);
* :func:`check_runtime` compares the compiled network with eager torch on the first real images before any
  feature is kept: every value within ``MAX_REL_DIFF`` x the largest |eager| value, else eager torch is used and the
  reason says why. The choice and its reason are in ``meta["runtime"]`` / ``meta["runtime_reason"]``;
* ``runtime='torch'`` (the ``runtime`` parameter of extraction) always runs eager torch.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings

import numpy as np
import torch

from deepfeat import defaults
from deepfeat.errors import DeepfeatError

__all__ = ["MAX_REL_DIFF", "MIN_IMAGES", "RUNTIMES", "CompiledForward", "available_runtime", "check_runtime",
           "runtime_obstacle"]

RUNTIMES = defaults.RUNTIMES
#: The compiled network's outputs must stay within this share of the largest |eager fp32| value.
MAX_REL_DIFF = 1e-4
_PREFERRED = ("openvino", "onnxruntime")  # in the order they measured on a 2-core AVX2 CPU (README)


def available_runtime(requested: str) -> str | None:
    """The compiled runtime to try for ``requested`` ('auto' = the first of OpenVINO / ONNX Runtime installed);
    None for 'torch' or when 'auto' finds none; an error when a named one is not installed."""
    if requested not in RUNTIMES:
        raise DeepfeatError(f"The 'runtime' parameter must be one of {list(RUNTIMES)}. Got {requested!r} instead.")
    if requested == "torch":
        return None
    names = _PREFERRED if requested == "auto" else (requested,)
    for name in names:
        if importlib.util.find_spec(name) is not None:
            return name
    if requested != "auto":
        raise DeepfeatError(f"runtime={requested!r} was requested but {requested} is not installed: "
                            f"pip install {requested} (or pip install \"deepfeat[fast]\"), or use runtime='torch'")
    return None


class _Layers(torch.nn.Module):
    """The requested layers of ``net`` as one exportable module (outputs in ``layers`` order)."""

    def __init__(self, net, layers):
        super().__init__()
        self.net, self.layers = net, list(layers)

    def forward(self, x):
        if self.layers == ["logits"]:
            return (self.net(x),)
        f = self.net.forward_features(x)
        return tuple(self.net.forward_head(f) if layer == "logits" else self.net.forward_head(f, pre_logits=True)
                     for layer in self.layers)


class CompiledForward:
    """``net``'s ``layers`` compiled for the CPU by ``runtime`` ('openvino' or 'onnxruntime'), fp32, dynamic batch.

    Call it with a (N, C, H, W) float32 tensor; it gives ``{layer: (N, d) float32 tensor}``.
    """

    def __init__(self, net, layers, input_size, runtime: str, threads: int | None = None):
        self.layers, self.runtime = list(layers), runtime
        threads = threads or torch.get_num_threads()
        example = torch.zeros((1, *tuple(input_size)), dtype=torch.float32)
        module = _Layers(net, layers).eval()
        with tempfile.TemporaryDirectory(prefix="deepfeat-onnx-") as tmp:
            path = os.path.join(tmp, "net.onnx")
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes: not the user's business
                torch.onnx.export(module, example, path, input_names=["x"], dynamo=False,
                                  output_names=[f"y{i}" for i in range(len(self.layers))],
                                  dynamic_axes={"x": {0: "n"}, **{f"y{i}": {0: "n"} for i in range(len(layers))}},
                                  opset_version=17)
            if runtime == "openvino":
                import openvino as ov

                core = ov.Core()
                self._run = core.compile_model(core.read_model(path), "CPU", {
                    "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": int(threads)})
            elif runtime == "onnxruntime":
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = int(threads)
                self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            else:
                raise DeepfeatError(f"unknown compiled runtime {runtime!r}")

    def __call__(self, x: torch.Tensor) -> dict:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).contiguous().numpy())
        if self.runtime == "openvino":
            result = self._run(arr)
            outs = [result[i] for i in range(len(self.layers))]
        else:
            outs = self._session.run(None, {"x": arr})
        return {layer: torch.from_numpy(np.asarray(o, dtype=np.float32)) for layer, o in zip(self.layers, outs)}


def check_runtime(compiled: CompiledForward, eager, probe: torch.Tensor) -> tuple[bool, str]:
    """``(keep, reason)``: keep the compiled network when every output of ``probe`` is within MAX_REL_DIFF x the
    largest |eager| value of eager torch's (``eager(x) -> {layer: tensor}``)."""
    got, ref = compiled(probe), eager(probe)
    worst = 0.0
    for layer in compiled.layers:
        r = ref[layer].detach().float().numpy().astype(np.float64)
        g = got[layer].detach().float().numpy().astype(np.float64)
        scale = float(np.abs(r).max()) or 1.0
        worst = max(worst, float(np.abs(g - r).max()) / scale)
    facts = f"{len(probe)} check images: max |difference| {worst:.2e} x max |eager fp32| (bound {MAX_REL_DIFF:g})"
    if worst <= MAX_REL_DIFF:
        return True, f"runtime: {compiled.runtime} ({facts})"
    return False, f"runtime: torch ({compiled.runtime} would change the features: {facts})"


#: Fewer network passes (images x TTA views) than this: eager torch ('auto'). Exporting + compiling costs ~3 s;
#: on a quiet 2-core CPU (Lite0, PBC JPEGs, bench_extract --part levers) a 256-image run was faster on eager
#: torch (79.5 against 65.3 img/s) and a 1,024-image run on OpenVINO (69.8 against 66.7): the crossover is near
#: 800 passes. A D4 run makes 8 passes per image, so OpenVINO pays from ~100 images there.
MIN_IMAGES = 800


def runtime_obstacle(engine, n_images: int) -> str | None:
    """Why ``engine`` (an extraction Engine) cannot use a compiled runtime for this run; None when it can."""
    if engine.device.type != "cpu":
        return f"the compiled runtime is for the CPU; this run is on {engine.device}"
    if engine.precision != "fp32":
        return f"the compiled runtime runs fp32; precision is {engine.precision}"
    stages = [layer for layer in engine.layers if layer not in ("logits", "pooled")]
    if stages:
        return f"layers {stages} run in torch (forward_intermediates)"
    if not engine.built_here:
        return "a model handed in runs as given"
    from deepfeat.extraction.forward import TTA_VIEWS

    passes = n_images * TTA_VIEWS.get(engine.tta, 1)
    if engine.requested_runtime == "auto" and passes < MIN_IMAGES:
        return (f"{n_images} images x {TTA_VIEWS.get(engine.tta, 1)} view(s) to compute (< {MIN_IMAGES} network "
                "passes: compiling would cost more than it saves)")
    return None
