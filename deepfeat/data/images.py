"""Image files: which names count as images, decoding any Pillow mode to RGB, content hashes, dark-border crop.

Every image that enters deepfeat goes through :func:`load_image`, so that a 16-bit TIFF, a palette PNG with a
transparent colour, a CMYK JPEG and a phone photo with an EXIF rotation all reach a network the same way: 8-bit
RGB, upright, fully decoded. Files that cannot be decoded raise :class:`~deepfeat.errors.ImageReadError` naming
the file and the reason, never a bare Pillow error.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfeat.errors import ImageReadError
from deepfeat.fileio import regular_file_problem, sha256_file

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "crop_dark_border", "is_image_file", "load_image", "max_pixels_limit",
           "sha256_file", "to_rgb"]

#: File name extensions read as images (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_WHITE = (255, 255, 255)


def is_image_file(path: str | os.PathLike) -> bool:
    """Return True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (any letter case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map integer or float samples of any range onto 0..255 without clipping away the content.

    16-bit data uses the full 0..65535 range (divide by 257, so 65535 -> 255 and 0 -> 0); 32-bit integer
    data whose values fit in 8 or 16 bits is treated as such; floats in [0, 1] are multiplied by 255. Anything
    else (negative values, floats beyond 255, integers beyond 16 bits) is min-max stretched, because no
    fixed scale is right for it.
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind in "ui":
        # Integers never go through a float copy: min/max in place, then one uint8 lookup table (or integer maths).
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255 and arr.dtype.itemsize > 2:
            return arr.astype(np.uint8)  # mode "I" holding 8-bit values
        if lo >= 0 and hi <= 65535:
            return _U16_TO_U8[arr]  # 16-bit: round(v / 257), so 65535 -> 255 and 0 -> 0
        if hi == lo:
            return np.zeros(arr.shape, np.uint8)
        out = np.empty(arr.shape, np.uint8)
        for i in range(0, arr.shape[0], 256):  # stretch in row blocks: bounded float64 temporaries
            block = (arr[i:i + 256].astype(np.float64) - lo) * (255.0 / (hi - lo))
            out[i:i + 256] = np.clip(np.rint(block), 0, 255)
        return out
    finite = np.isfinite(arr)
    lo = float(arr[finite].min()) if finite.any() else 0.0
    hi = float(arr[finite].max()) if finite.any() else 0.0
    work = np.where(finite, arr, 0).astype(np.float32, copy=False)
    if lo >= 0.0 and hi <= 1.0:
        out = work * np.float32(255.0)
    elif lo >= 0.0 and hi <= 255.0:
        out = work
    else:
        out = (work - np.float32(lo)) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(work)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


#: round(v / 257) for every 16-bit value: one 64 KiB table instead of a float copy of the image.
_U16_TO_U8 = np.clip(np.rint(np.arange(65536) / 257.0), 0, 255).astype(np.uint8)

#: Pillow's own decompression-bomb limit (about 89.5 million pixels); larger images are refused before decoding.
DEFAULT_MAX_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
#: Environment variable that raises (or lowers) the limit for a whole run, decoding worker processes included.
MAX_PIXELS_ENV = "DEEPFEAT_MAX_PIXELS"


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$DEEPFEAT_MAX_PIXELS``, else Pillow's default."""
    if max_pixels is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(env)
        except ValueError:
            raise ImageReadError(env, f"${MAX_PIXELS_ENV} must be a positive integer number of pixels") from None
    if int(max_pixels) < 1:
        raise ValueError(f"The 'max_pixels' parameter must be an int >= 1. Got {max_pixels!r}.")
    return int(max_pixels)


def _over_white(img: Image.Image) -> Image.Image:
    """Composite an image with an alpha channel over a white background (slides are white, not black)."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 8-bit RGB.

    High bit-depth modes (``I;16*``, ``I``, ``F``) are rescaled (see ``_scale_to_uint8``) rather than clipped
    as ``Image.convert`` would; alpha and palette/greyscale transparency are composited over white; CMYK,
    YCbCr, LAB, HSV, ``1`` and ``P`` go through Pillow's own conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(img))
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _over_white(img)
    if mode == "P":
        return img.convert("RGB")
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
    """Decode an image file fully into an upright 8-bit RGB :class:`PIL.Image.Image`.

    Parameters
    ----------
    path : str or path-like
        Any file Pillow can read (the first frame of a multi-frame file is used).
    max_pixels : int, optional
        Refuse images declaring more pixels than this in their header, before decoding anything (a small crafted
        file can declare gigapixels). Default ``$DEEPFEAT_MAX_PIXELS`` or Pillow's 89,478,485.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, EXIF orientation applied, pixels loaded (the file is closed on return).

    Raises
    ------
    deepfeat.errors.ImageReadError
        When the file is missing, empty, not an image, truncated or otherwise undecodable; ``.path`` and
        ``.reason`` say which file and why.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.png"
    >>> Image.new("L", (4, 3), 128).save(p)
    >>> im = load_image(p); im.mode, im.size, im.getpixel((0, 0))
    ('RGB', (4, 3), (128, 128, 128))
    """
    path = os.fspath(path)
    limit = max_pixels_limit(max_pixels)
    try:
        problem = regular_file_problem(path)  # a FIFO or a device named .jpg would block forever
        if problem == "no such file":
            raise FileNotFoundError(path)
        if problem is not None and "directory" in problem:
            raise IsADirectoryError(path)
        if problem is not None:
            raise ImageReadError(path, problem)
        if os.path.getsize(path) == 0:
            raise ImageReadError(path, "the file is empty (0 bytes)")
        with warnings.catch_warnings(), _pillow_bomb_limit(limit):
            # deepfeat's own limit below replaces Pillow's warning; Pillow's hard error stays on (at 2x the limit).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                n_pixels = img.size[0] * img.size[1]
                if n_pixels > limit:
                    raise ImageReadError(path, (
                        f"declares {img.size[0]} x {img.size[1]} = {n_pixels:,} pixels, above the limit of "
                        f"{limit:,} (a guard against decompression bombs); if you trust the file, raise the limit "
                        f"with --max-pixels / max_pixels= (or ${MAX_PIXELS_ENV})"))
                img.load()
                upright = ImageOps.exif_transpose(img)
                upright.load()
                rgb = to_rgb(upright)
                rgb.load()
                if rgb is img:  # detach from the file handle closed by the with-block
                    rgb = rgb.copy()
                return rgb
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (wrong extension, or not an image)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated or incomplete file ({reason})"
        raise ImageReadError(path, reason) from None


@contextlib.contextmanager
def _pillow_bomb_limit(limit: int):
    """Let Pillow's hard error (at twice ``Image.MAX_IMAGE_PIXELS``) sit no lower than a user-raised limit."""
    before = Image.MAX_IMAGE_PIXELS
    if before is not None and limit > before:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def crop_dark_border(
    img: Image.Image,
    threshold: int = 16,
    *,
    margin: int = 8,
    square: bool = True,
    fill: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """Crop an image of a cell on a black background (C-NMC style) to the cell, then pad it to a square.

    A pixel is "dark" when all of its RGB channels are ``<= threshold``. The crop is the bounding box of the
    non-dark pixels grown by ``margin`` pixels on each side (kept inside the image); with ``square=True`` the
    crop is centred on a ``fill``-coloured square canvas of side ``max(width, height)`` so a later resize keeps
    the cell's aspect ratio.

    When every pixel is dark there is nothing to locate: the image is returned unchanged (converted to RGB),
    not cropped to nothing and not padded.

    Parameters
    ----------
    img : PIL.Image.Image
        The image (any mode; converted with :func:`to_rgb`).
    threshold : int, default=16
        Largest channel value (0..255) still counted as background.
    margin : int, default=8
        Pixels of background kept around the cell.
    square : bool, default=True
        Pad the crop to a square.
    fill : tuple of 3 int, default=(0, 0, 0)
        Colour of the padding (black, like the background it replaces).

    Returns
    -------
    PIL.Image.Image
        RGB image.

    Examples
    --------
    >>> from PIL import Image
    >>> im = Image.new("RGB", (100, 60), (0, 0, 0)); im.paste((200, 50, 90), (40, 20, 50, 40))
    >>> crop_dark_border(im, margin=0).size
    (20, 20)
    """
    if not 0 <= int(threshold) < 255:
        raise ValueError(f"The 'threshold' parameter of crop_dark_border must be in [0, 254]. Got {threshold!r}.")
    if int(margin) < 0:
        raise ValueError(f"The 'margin' parameter of crop_dark_border must be >= 0. Got {margin!r}.")
    rgb = to_rgb(img)
    bright = np.asarray(rgb).max(axis=2) > threshold
    rows = np.flatnonzero(bright.any(axis=1))
    if rows.size == 0:
        return rgb
    cols = np.flatnonzero(bright.any(axis=0))
    width, height = rgb.size
    left = max(int(cols[0]) - margin, 0)
    top = max(int(rows[0]) - margin, 0)
    right = min(int(cols[-1]) + 1 + margin, width)
    bottom = min(int(rows[-1]) + 1 + margin, height)
    cropped = rgb.crop((left, top, right, bottom))
    if not square or cropped.width == cropped.height:
        return cropped
    side = max(cropped.size)
    canvas = Image.new("RGB", (side, side), tuple(fill))
    canvas.paste(cropped, ((side - cropped.width) // 2, (side - cropped.height) // 2))
    return canvas
