"""Where and how a network runs: device choice, numeric precision, model identity (the forward pass itself:
:mod:`deepfeat.extraction.forward`).

Shared by extraction and fine-tuning. Every choice comes back with a one-line reason for the caller to show:
``device="auto"`` says which device it took; ``device="cuda"`` without CUDA is an error, never a CPU fallback;
reduced precision (``auto``) is only kept when a check on at least MIN_CHECK_IMAGES real inputs leaves the reference
behaviour intact: the top-5 outputs of every check image unchanged and every value within MAX_ABS_ERROR_FLOOR
or MAX_REL_ERROR x the largest |fp32| value of the batch, whichever is larger; otherwise fp32. On the CPU it is only
tried when the CPU does bf16 natively.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from deepfeat import defaults
from deepfeat.errors import DeepfeatError

__all__ = ["MAX_ABS_ERROR_FLOOR", "MAX_REL_ERROR", "MIN_CHECK_IMAGES", "MIN_COSINE", "autocast", "autocast_dtype",
           "check_precision", "model_sha256", "resolve_device",
           "resolve_precision"]

MIN_COSINE = 0.999  # reported beside the new rule; no longer enough on its own (issue 11)
#: Reduced precision is checked on more than 3 images; fewer -> fp32.
MIN_CHECK_IMAGES = 4
#: Largest error tolerated: max(MAX_ABS_ERROR_FLOOR, MAX_REL_ERROR * max|fp32|). 0.03 is the tolerance the
#: Tiny Darknet loader itself is held to against the original darknet program (tests/test_darknet.py).
MAX_ABS_ERROR_FLOOR = 0.03
MAX_REL_ERROR = 0.002
TOP_K = 5
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device="auto") -> tuple[torch.device, str]:
    """``(torch.device, reason)`` for 'auto', 'cpu', 'cuda' or 'cuda:N'; an error when CUDA is asked but absent."""
    spec = str(device).strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0), f"device: auto -> cuda:0 ({torch.cuda.get_device_name(0)})"
        return torch.device("cpu"), "device: auto -> cpu (CUDA is not available)"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise DeepfeatError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r}.") \
            from None
    if dev.type == "cpu":
        return dev, "device: cpu (requested)"
    if dev.type != "cuda":
        raise DeepfeatError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r}.")
    if not torch.cuda.is_available():
        raise DeepfeatError(
            f"device={device!r} was requested but CUDA is not available (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda}; torch.cuda.is_available() is False). Use device='cpu' or 'auto'."
        )
    index = 0 if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise DeepfeatError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", index), f"device: cuda:{index} ({torch.cuda.get_device_name(index)}) (requested)"


def resolve_precision(requested: str, device: torch.device, *, training: bool = False) -> tuple[str, str, bool]:
    """``(precision, reason, needs_check)``; ``needs_check`` means: confirm with :func:`check_precision`.

    The one precision rule of deepfeat, for extraction and (``training=True``) fine-tuning. On CUDA, 'auto' is
    bf16 autocast (fp16 where bf16 is unsupported). On the CPU, 'auto' is fp32 for training (bf16 autocast is
    opt-in there: it changes the numerics of training) and a checked bf16 candidate for extraction on CPUs with
    native bf16. fp16 autocast does not train on the CPU.
    """
    if requested not in defaults.PRECISIONS:
        raise DeepfeatError(f"The 'precision' parameter must be one of {list(defaults.PRECISIONS)}. "
                            f"Got {requested!r} instead.")
    if training and requested == "fp16" and device.type != "cuda":
        raise DeepfeatError("precision 'fp16' needs CUDA for training; on the CPU use 'bf16' or 'fp32'")
    if device.type == "cuda":
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise DeepfeatError(f"precision='bf16' was requested but {device} does not support bf16; use fp16")
        if requested != "auto":
            return requested, f"precision: {requested} (requested)", False
        if torch.cuda.is_bf16_supported():
            return "bf16", "precision: auto -> bf16 candidate (CUDA), checking", True
        return "fp16", "precision: auto -> fp16 candidate (CUDA without bf16), checking", True
    if requested != "auto":
        return requested, f"precision: {requested} (requested)", False
    if training:
        return "fp32", "precision: auto -> fp32 (CPU training; bf16 autocast is opt-in)", False
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16", "precision: auto -> bf16 candidate (CPU has native bf16), checking", True
    return "fp32", "precision: auto -> fp32 (this CPU has no native bf16, reduced precision would be slower)", False


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32 (autocast off)."""
    return _DTYPES.get(precision)


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` ('fp32' disables it)."""
    return torch.autocast(device.type, dtype=_DTYPES.get(precision, torch.float32), enabled=precision != "fp32")


def check_precision(forward, probe: torch.Tensor, candidate: str) -> tuple[str, str, float]:
    """Run ``probe`` in fp32 and ``candidate``; keep the candidate only if it leaves the fp32 behaviour intact.

    Kept when (1) ``probe`` has at least MIN_CHECK_IMAGES images, (2) the top-5 outputs of every image are the same
    set in the same order, and (3) ``max |candidate - fp32| <= max(MAX_ABS_ERROR_FLOOR, MAX_REL_ERROR * max|fp32|)``.
    ``forward(x, precision) -> ndarray`` runs the model. Returns ``(precision, reason, min_cosine)``.
    """
    ref = forward(probe, "fp32").astype(np.float64)
    low = forward(probe, candidate).astype(np.float64)
    num = (ref * low).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1)
    cos = float(np.min(np.where(den > 0, num / np.where(den > 0, den, 1), 1.0 * (ref == low).all(1))))
    k = min(TOP_K, ref.shape[1])
    top_same = bool((np.argsort(-ref, axis=1, kind="stable")[:, :k] ==
                     np.argsort(-low, axis=1, kind="stable")[:, :k]).all())
    err = float(np.abs(low - ref).max()) if ref.size else 0.0
    bound = max(MAX_ABS_ERROR_FLOOR, MAX_REL_ERROR * float(np.abs(ref).max() if ref.size else 0.0))
    facts = (f"{len(probe)} check images: top-{k} {'unchanged' if top_same else 'CHANGED'}, max error {err:.4g} "
             f"(bound {bound:.4g}), cosine {cos:.5f}")
    if len(probe) < MIN_CHECK_IMAGES:
        return "fp32", (f"precision: auto -> fp32 (only {len(probe)} readable images to check {candidate} on; "
                        f"needs >= {MIN_CHECK_IMAGES})"), cos
    if top_same and err <= bound:
        return candidate, f"precision: auto -> {candidate} ({facts})", cos
    return "fp32", (f"precision: auto -> fp32 ({candidate} would change the outputs: {facts}; pass "
                    f"precision='{candidate}' to use it anyway)"), cos


def model_sha256(net: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): the identity of what actually runs."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
