"""Hand-crafted colour features, torch-free: usable as "models" in a fused extraction and as the CV baseline.

Two blocks, each computed from the decoded RGB image (``deepfeat.data.images.load_image``), no resize, no crop
(unless ``crop_border`` is asked for):

``colour_histogram`` (96 values)
    Per-channel RGB histograms with 32 bins each (bin = value // 8), each L1-normalised to sum 1: columns
    R0..R31, G0..G31, B0..B31. Exactly the features of the colour-histogram baseline of
    :mod:`deepfeat.evaluation.honesty` (which calls :func:`colour_histograms`).
``colour_moments`` (18 values)
    Mean, standard deviation (population) and skewness (third standardised moment, 0 for a flat channel) of
    each channel of RGB and of HSV (PIL's ``Image.convert("HSV")``), every channel scaled to [0, 1]: columns
    R_mean, R_std, R_skew, G_..., B_..., H_..., S_..., V_.... Hue is treated as a linear value, not a circular
    one (PIL's hue of red is 0 and 255: stains here are far from red's wrap-around).

Both are invariant under flips and quarter turns (they count pixels), so test-time augmentation never changes
them; a fused extraction records their blocks with ``tta="none"``.
"""
from __future__ import annotations

import numpy as np

from deepfeat.errors import DeepfeatError

__all__ = ["HANDCRAFTED", "colour_histograms", "colour_moments", "handcrafted_features", "handcrafted_names"]

HISTOGRAM_BINS = 32
_MOMENT_CHANNELS = ("R", "G", "B", "H", "S", "V")

#: name -> (version, description); the version is part of the cache key, bump it when a computation changes.
HANDCRAFTED = {
    "colour_histogram": ("1", f"per-channel RGB histograms, {HISTOGRAM_BINS} bins each, L1-normalised per channel"),
    "colour_moments": ("1", "mean, std, skewness of each RGB and HSV channel, values scaled to [0, 1]"),
}


def _histogram_row(img, bins: int) -> np.ndarray:
    px = np.asarray(img, dtype=np.uint8).reshape(-1, 3) // (256 // bins)
    out = np.empty(3 * bins, dtype=np.float32)
    for c in range(3):
        out[c * bins:(c + 1) * bins] = np.bincount(px[:, c], minlength=bins) / px.shape[0]
    return out


def _moments_row(img) -> np.ndarray:
    rgb = np.asarray(img, dtype=np.uint8).reshape(-1, 3)
    hsv = np.asarray(img.convert("HSV"), dtype=np.uint8).reshape(-1, 3)
    px = np.concatenate([rgb, hsv], axis=1).astype(np.float64) / 255.0
    mean = px.mean(0)
    centred = px - mean
    std = np.sqrt((centred ** 2).mean(0))
    third = (centred ** 3).mean(0)
    skew = np.divide(third, std ** 3, out=np.zeros_like(third), where=std > 1e-12)
    return np.stack([mean, std, skew], axis=1).reshape(-1).astype(np.float32)


def _load(path, crop_border: bool):
    from deepfeat.data.images import crop_dark_border, load_image

    img = load_image(path)
    return crop_dark_border(img) if crop_border else img


def colour_histograms(paths, bins: int = HISTOGRAM_BINS, *, crop_border: bool = False) -> np.ndarray:
    """Per-channel RGB histograms with ``bins`` bins each, L1-normalised per channel: shape (n, 3 * bins).

    Raises ``ImageReadError`` for an unreadable image.

    Examples
    --------
    >>> import tempfile, os; from PIL import Image
    >>> p = os.path.join(tempfile.mkdtemp(), "red.png"); Image.new("RGB", (4, 4), (255, 0, 0)).save(p)
    >>> h = colour_histograms([p], bins=4)
    >>> h.tolist()
    [[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]
    """
    if not isinstance(bins, (int, np.integer)) or bins < 1 or 256 % bins:
        raise DeepfeatError(f"bins must divide 256; got {bins}")
    out = np.empty((len(paths), 3 * bins), dtype=np.float32)
    for i, p in enumerate(paths):
        out[i] = _histogram_row(_load(p, crop_border), bins)
    return out


def colour_moments(paths, *, crop_border: bool = False) -> np.ndarray:
    """Mean, std and skewness of each RGB and HSV channel (values in [0, 1]): shape (n, 18).

    Examples
    --------
    >>> import tempfile, os; from PIL import Image
    >>> p = os.path.join(tempfile.mkdtemp(), "grey.png"); Image.new("RGB", (4, 4), (51, 51, 51)).save(p)
    >>> [round(float(v), 3) for v in colour_moments([p])[0, :3]]      # R mean, std, skew
    [0.2, 0.0, 0.0]
    """
    out = np.empty((len(paths), 3 * len(_MOMENT_CHANNELS)), dtype=np.float32)
    for i, p in enumerate(paths):
        out[i] = _moments_row(_load(p, crop_border))
    return out


def handcrafted_names(name: str) -> list[str]:
    """Column labels of a hand-crafted block, e.g. ``R0`` .. ``B31`` or ``R_mean`` .. ``V_skew``."""
    if name == "colour_histogram":
        return [f"{c}{i}" for c in "RGB" for i in range(HISTOGRAM_BINS)]
    if name == "colour_moments":
        return [f"{c}_{m}" for c in _MOMENT_CHANNELS for m in ("mean", "std", "skew")]
    raise DeepfeatError(f"unknown hand-crafted block {name!r}; known: {sorted(HANDCRAFTED)}")


def handcrafted_features(name: str, path, *, crop_border: bool = False) -> np.ndarray:
    """One image's row of the hand-crafted block ``name`` (float32)."""
    img = _load(path, crop_border)
    if name == "colour_histogram":
        return _histogram_row(img, HISTOGRAM_BINS)
    if name == "colour_moments":
        return _moments_row(img)
    raise DeepfeatError(f"unknown hand-crafted block {name!r}; known: {sorted(HANDCRAFTED)}")
