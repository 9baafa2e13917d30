"""Load a backbone's weights from a file: torch ``.pth``/``.pt``/``.bin``, ``.safetensors``, Darknet ``.weights``.

Torch files are read with ``torch.load(weights_only=True)`` and may hold a state dict, a checkpoint dict with
``state_dict`` / ``model`` / ``state_dict_ema``, or a deepfeat fine-tune checkpoint (``deepfeat_checkpoint: 1``,
``arch``, ``head``, ``num_classes``, ``state_dict``, JSON-like metadata). Loading is strict: a file made for another
architecture is refused with the keys that differ. ``module.`` / ``_orig_mod.`` prefixes are stripped.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch

from deepfeat.backbones.darknet_io import (
    count_darknet_floats,
    load_darknet_weights,
    read_header,
)
from deepfeat.backbones.registry import canonical_name, new_model
from deepfeat.errors import DeepfeatError
from deepfeat.fileio import sha256_file

__all__ = ["file_sha256", "load_weights_file"]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_SHA_MEMO: dict[tuple, str] = {}


def file_sha256(path) -> str:
    """sha256 of a file's bytes (remembered per path, size and mtime within the process)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(path)
    return _SHA_MEMO[key]



def load_weights_file(name: str, path: Path):
    """Build timm model ``name`` sized for the weights in ``path`` and load them strictly.

    Returns
    -------
    (torch.nn.Module, dict or None)
        The model, and the non-tensor metadata of a deepfeat fine-tune checkpoint (else None).
    """
    path = Path(path)
    if not path.is_file():
        raise DeepfeatError(f"weights file {str(path)!r} does not exist (or is not a file); pass an existing "
                            ".pth/.pt/.safetensors/Darknet .weights file, 'imagenet', or 'none' for random weights")
    suffix = path.suffix.lower()
    checkpoint = None
    if suffix == ".weights":
        model = new_model(name, _darknet_classes(name, path))
        load_darknet_weights(model, path)
        return model, None
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise DeepfeatError(f"cannot read safetensors file {str(path)!r}: {exc}") from exc
    elif suffix in _TORCH_SUFFIXES:
        state, checkpoint = _read_torch_file(name, path)
    else:
        raise DeepfeatError(f"weights file {str(path)!r}: unknown extension {path.suffix!r}; use .pth/.pt/.bin "
                            "(torch), .safetensors, or .weights (Darknet)")
    state = _strip_prefixes(state)
    if checkpoint is not None and checkpoint.get("head") == "replace":
        n_out = int(checkpoint["num_classes"])
    else:
        n_out = _classifier_outputs(name, state)
    model = new_model(name, n_out)
    _load_strict(model, state, path, name)
    return model, checkpoint


def _darknet_classes(name: str, path: Path) -> int | None:
    """The class count a .weights file implies (it does not record one): its floats minus the backbone's, divided
    by the classifier's per-class size. None when that does not divide (the loader then reports both counts)."""
    body = new_model(name, 0)
    rest = read_header(path)["n_floats"] - count_darknet_floats(body)
    per_class = body.num_features + 1  # a (C, 1, 1) kernel and a bias per class
    return rest // per_class if rest > 0 and rest % per_class == 0 else None


def _read_torch_file(name: str, path: Path):
    """(state dict, deepfeat checkpoint metadata or None) from a torch file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DeepfeatError(f"cannot read weights file {str(path)!r} with torch.load(weights_only=True): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Save plain "
                            "state dicts (tensors and JSON-like metadata only).") from exc
    if not isinstance(obj, dict):
        raise DeepfeatError(f"weights file {str(path)!r} holds a {type(obj).__name__}, not a state dict or checkpoint")
    if "deepfeat_checkpoint" in obj:
        return obj["state_dict"], _checkpoint_metadata(name, obj, path)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj.get(key), dict):
            return obj[key], None
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise DeepfeatError(f"weights file {str(path)!r} is neither a state dict nor a checkpoint with 'state_dict', "
                        f"'model' or 'state_dict_ema' (top-level keys: {sorted(map(str, obj))[:8]})")


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    return False


def checkpoint_model(ckpt: dict, path) -> str | None:
    """The network name a deepfeat checkpoint was trained with: field ``model`` (``arch`` before 0.2).

    Checkpoints written by deepfeat 0.1 name it ``arch``; they still load, with a FutureWarning, in this release.
    """
    if "model" not in ckpt and "arch" in ckpt:
        import warnings

        warnings.warn(f"checkpoint {str(path)!r} was written by deepfeat 0.1 (field 'arch'); it loads in this "
                      "release, later ones read only 'model': fine-tune again or re-save it", FutureWarning,
                      stacklevel=3)
        ckpt["model"] = ckpt.pop("arch")
    return ckpt.get("model")


def _checkpoint_metadata(name: str, ckpt: dict, path: Path) -> dict:
    if ckpt.get("deepfeat_checkpoint") != 1:
        raise DeepfeatError(f"{str(path)!r} is a deepfeat checkpoint of format {ckpt.get('deepfeat_checkpoint')!r}; "
                            "this deepfeat reads format 1: upgrade deepfeat")
    arch = checkpoint_model(ckpt, path)
    try:
        same = canonical_name(arch) == name  # "xception" and "legacy_xception" are one network
    except DeepfeatError:
        same = False
    if not same:
        raise DeepfeatError(f"weights file {str(path)!r} is a fine-tuned {arch!r} checkpoint, not {name!r}; "
                            f"use --model {arch} with it, or pass weights made for {name!r}")
    if ckpt.get("head") not in ("keep1000", "replace") or not isinstance(ckpt.get("state_dict"), dict):
        raise DeepfeatError(f"deepfeat checkpoint {str(path)!r} is malformed: 'head' must be 'keep1000' or "
                            f"'replace' (got {ckpt.get('head')!r}) and 'state_dict' a dict")
    return {k: v for k, v in ckpt.items() if k not in ("state_dict", "head_state_dict") and not _has_tensor(v)}


def _strip_prefixes(state: dict) -> dict:
    # DataParallel / DistributedDataParallel save "module.", torch.compile "_orig_mod."
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _classifier_outputs(name: str, state: dict) -> int | None:
    """How many classes the file's classifier has (timm's cfg names the classifier module), if it says."""
    cfg = timm.models.get_pretrained_cfg(name)
    classifier = cfg.classifier if cfg is not None else None
    weight = state.get(f"{classifier}.weight") if isinstance(classifier, str) else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim >= 2 else None


def _load_strict(model: torch.nn.Module, state: dict, path: Path, name: str) -> None:
    own = model.state_dict()
    # num_batches_tracked is optional in older files; BatchNorm fills it in
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
                if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        raise DeepfeatError(
            f"weights file {str(path)!r} does not fit backbone {name!r}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}, {len(reshaped)} of another shape "
            f"{reshaped[:3]}. It was probably saved from another architecture: pass the matching model name "
            "(--model) or weights made for this one.")
    model.load_state_dict(state, strict=True)
