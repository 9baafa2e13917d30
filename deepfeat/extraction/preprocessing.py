"""Image preprocessing (model data config -> PIL-to-tensor callable) and the Dataset shared by extraction and
fine-tuning.

Two preprocessing families:

* timm models: exactly ``timm.data.create_transform(**data_config)`` in eval mode (resize the short side to
  ``size / crop_pct``, centre crop, to tensor, normalise with the model's own mean/std).
* Darknet models (``data_config["darknet"]`` true): darknet's own input, RGB / 255 with no mean/std, from the
  largest centred square resized bilinearly to the network size; a 224x224 image reaches a 224x224 network
  unchanged (the Darknet reference PNGs in ``../shared/reference/darknet`` were made this way).

Unreadable images never crash a DataLoader worker: :class:`ImageDataset` returns an :class:`ImageFailure`
marker in place of the tensor and :func:`collate_images` separates them from the batch, so the caller decides
whether to raise (after caching every good image) or skip.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

__all__ = [
    "Compose", "DarknetResize", "ImageDataset", "ImageFailure", "NormalisedTensor", "build_transform",
    "collate_images", "preprocessing_config",
]

_TIMM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def preprocessing_config(data_config: dict, *, crop_border: bool = False) -> dict:
    """The JSON-ready description of the preprocessing: the data config (tuples as lists) plus ``crop_border``.

    It is part of the feature-cache key and of a FeatureSet's ``meta["preprocessing"]``.
    """
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(dict(data_config).items())}
    out["crop_border"] = bool(crop_border)
    return out


class DarknetResize:
    """Darknet's classifier input: largest centred square, bilinear resize to ``size`` (H, W), RGB / 255.

    Parameters
    ----------
    size : tuple of int
        (height, width) of the network input.
    """

    def __init__(self, size):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB") if img.mode != "RGB" else img
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        if (w, h) != (s, s):
            img = img.crop((left, top, left + s, top + s))
        height, width = self.size
        if img.size != (width, height):  # PIL sizes are (W, H); skip the resize so same-size input is untouched
            img = img.resize((width, height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)

    def __repr__(self) -> str:
        return f"DarknetResize(size={self.size}, centre square, bilinear, /255)"


class _CropDarkBorder:
    """Picklable wrapper (DataLoader workers may be spawned) around ``deepfeat.data.images.crop_dark_border``."""

    def __call__(self, img):
        from deepfeat.data.images import crop_dark_border

        return crop_dark_border(img)

    def __repr__(self) -> str:
        return "CropDarkBorder()"


class Compose:
    """Apply callables in order (picklable, unlike a lambda chain, so it crosses DataLoader workers)."""

    def __init__(self, steps):
        self.steps = list(steps)

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {s!r}\n" for s in self.steps) + ")"


def build_transform(data_config: dict, *, crop_border: bool = False):
    """A callable PIL image -> float32 tensor (3, H, W) for a model's data config.

    Parameters
    ----------
    data_config : dict
        From ``deepfeat.backbones.resolve_data_config(model)``: timm keys ``input_size``, ``mean``, ``std``,
        ``crop_pct``, ``interpolation``, ``crop_mode``, and ``darknet=True`` for darknet preprocessing.
    crop_border : bool, default False
        First remove the dark border of C-NMC-style images (``deepfeat.data.images.crop_dark_border``).

    Returns
    -------
    callable
    """
    cfg = dict(data_config)
    if "input_size" not in cfg:
        raise ValueError(f"data_config needs 'input_size' (C, H, W); got keys {sorted(cfg)}")
    steps: list[Any] = [_CropDarkBorder()] if crop_border else []
    if cfg.get("darknet"):
        steps.append(DarknetResize(tuple(cfg["input_size"])[-2:]))
    else:
        from timm.data import create_transform

        timm_cfg = {k: (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) for k in _TIMM_KEYS if k in cfg}
        steps.append(_numpy_tail(create_transform(**timm_cfg, is_training=False)))
    return steps[0] if len(steps) == 1 else Compose(steps)


class NormalisedTensor:
    """PIL RGB image -> normalised float32 tensor (C, H, W) in numpy: bit-identical to torchvision's ``to_tensor``
    then ``normalize`` (the same IEEE float32 operations in the same order: ``/ 255``, ``- mean``, ``/ std``), but
    single-threaded, so it does not wake torch's OpenMP pool for every image (measured in
    ``benchmarks/bench_extract.py --part levers``: the timm transform's tensor tail cost more than the network on a
    busy 2-core machine)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if (self.std == 0).any():
            raise ValueError(f"std evaluated to zero, leading to division by zero: {std}")

    def __call__(self, img) -> torch.Tensor:
        if not isinstance(img, Image.Image) or img.mode != "RGB":  # anything else: torchvision's own path, as before
            from torchvision.transforms import functional as F

            return F.normalize(img if isinstance(img, torch.Tensor) else F.to_tensor(img),
                               self.mean.ravel().tolist(), self.std.ravel().tolist())
        chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        chw /= np.float32(255)
        chw -= self.mean
        chw /= self.std
        return torch.from_numpy(chw)

    def __repr__(self) -> str:
        return f"NormalisedTensor(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


def _numpy_tail(transform):
    """timm's eval transform with its ``MaybeToTensor`` + ``Normalize`` tail replaced by :class:`NormalisedTensor`
    (same pixels, bit for bit); any other shape of transform is returned as it is."""
    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or type(steps[-2]).__name__ not in ("MaybeToTensor", "ToTensor") \
            or type(steps[-1]).__name__ != "Normalize" or getattr(steps[-1], "inplace", False):
        return transform
    return Compose(steps[:-2] + [NormalisedTensor(steps[-1].mean, steps[-1].std)])


class ImageFailure(NamedTuple):
    """Stands in for the tensor of an image that could not be read (picklable, so it crosses worker processes)."""

    path: str
    reason: str


class ImageDataset(torch.utils.data.Dataset):
    """Images by path, preprocessed by ``transform``; item ``i`` is ``(tensor, i)``.

    An unreadable image gives ``(ImageFailure(path, reason), i)`` instead of raising, so one bad file does not
    kill a DataLoader worker; use :func:`collate_images` as the DataLoader's ``collate_fn``.

    Parameters
    ----------
    paths : sequence of path-like
    transform : callable
        PIL RGB image -> tensor, e.g. from :func:`build_transform`.
    """

    def __init__(self, paths, transform):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from deepfeat.data.images import load_image
        from deepfeat.errors import ImageReadError

        path = self.paths[index]
        try:
            return self.transform(load_image(path)), index
        except ImageReadError as exc:
            return ImageFailure(path, exc.reason), index
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise these on bad data
            return ImageFailure(path, f"{type(exc).__name__}: {exc}"), index


def collate_images(batch):
    """Collate ``(tensor | ImageFailure, index)`` items into ``(x or None, indices, failures)``.

    ``x`` stacks the good tensors (None when none in the batch is readable), ``indices`` is a LongTensor of
    their dataset indices in batch order, ``failures`` a list of ``(index, ImageFailure)``.
    """
    good = [(x, i) for x, i in batch if not isinstance(x, ImageFailure)]
    failures = [(i, x) for x, i in batch if isinstance(x, ImageFailure)]
    x = torch.stack([g[0] for g in good]) if good else None
    indices = torch.as_tensor([g[1] for g in good], dtype=torch.long)
    return x, indices, failures
