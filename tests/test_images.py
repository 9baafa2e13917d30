"""Decoding every image mode to RGB, EXIF orientation, unreadable files, hashes, dark-border crop."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.images import (
    IMAGE_EXTENSIONS,
    crop_dark_border,
    is_image_file,
    load_image,
    sha256_file,
)
from deepfeat.errors import DeepfeatError, ImageReadError


def _save(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def _check_rgb(img, size):
    assert img.mode == "RGB"
    assert img.size == size
    # fully decoded and detached from the file: pixel access works after the file is gone
    assert isinstance(img.getpixel((0, 0)), tuple)


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
    ],
)
def test_plain_modes_convert_to_rgb(tmp_path, mode, value, expected):
    ext = {"CMYK": "jpg", "YCbCr": "jpg"}.get(mode, "png" if mode != "1" else "bmp")
    kw = {"quality": 100} if ext == "jpg" else {}
    path = _save(tmp_path, Image.new(mode, (6, 5), value), f"x.{ext}", **kw)
    img = load_image(path)
    _check_rgb(img, (6, 5))
    assert np.abs(np.asarray(img.getpixel((2, 2))) - np.asarray(expected)).max() <= 3


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(arr), "deep.png")
    assert Image.open(path).mode.startswith("I")  # Pillow opens it as 16-bit
    got = np.asarray(load_image(path))[0, :, 0]
    assert got.tolist() == [0, 128, 255, 4]  # clipping would give 255 for 1000


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.array([[0, 100, 255]], dtype=np.int32), [0, 100, 255]),  # 8-bit values in mode I stay as they are
        (np.array([[0, 32896, 65535]], dtype=np.int32), [0, 128, 255]),  # 16-bit range
        (np.array([[-10, 0, 10]], dtype=np.int32), [0, 128, 255]),  # anything else is stretched
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),  # float in [0, 1]
        (np.array([[0.0, 1000.0, 2000.0]], dtype=np.float32), [0, 128, 255]),  # float beyond 255: stretched
    ],
)
def test_int_and_float_tiffs_are_rescaled(tmp_path, arr, expected):
    img = Image.fromarray(arr)
    assert img.mode in ("I", "F")
    got = np.asarray(load_image(_save(tmp_path, img, "x.tif")))[0, :, 0]
    assert got.tolist() == expected


def test_rgba_is_composited_over_white(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (255, 0, 0, 255)  # opaque red
    arr[0, 1] = (255, 0, 0, 0)  # fully transparent red -> white
    arr[1, 0] = (0, 0, 0, 128)  # half-transparent black -> grey
    img = load_image(_save(tmp_path, Image.fromarray(arr, "RGBA"), "a.png"))
    _check_rgb(img, (2, 2))
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((1, 0)) == (255, 255, 255)
    assert abs(img.getpixel((0, 1))[0] - 127) <= 1


def test_la_is_composited_over_white(tmp_path):
    img = Image.new("LA", (3, 3), (0, 0))
    img.putpixel((1, 1), (0, 255))
    got = load_image(_save(tmp_path, img, "la.png"))
    assert got.getpixel((0, 0)) == (255, 255, 255)
    assert got.getpixel((1, 1)) == (0, 0, 0)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255, 10, 200, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    plain = load_image(_save(tmp_path, pal, "p.png"))
    assert plain.getpixel((0, 0)) == (0, 0, 255)
    assert plain.getpixel((1, 1)) == (10, 200, 30)
    transparent = load_image(_save(tmp_path, pal, "pt.png", transparency=0))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)  # index 0 transparent -> white
    assert transparent.getpixel((1, 1)) == (10, 200, 30)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path, Image.fromarray(arr), "o.jpg", exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)  # turned upright
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[-3, 10]
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg_raises_with_path(tmp_path):
    full = _save(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "f.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"cut\.jpg: truncated") as info:
        load_image(cut)
    assert info.value.path == str(cut)


def test_truncated_png_raises(tmp_path):
    full = _save(tmp_path, Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)), "f.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        load_image(cut)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"this is not an image\n", "not a recognised image format"),
        ("half.png", b"\x89PNG\r\n\x1a\n", "cannot read image"),
    ],
)
def test_bad_files_raise_image_read_error(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        load_image(path)
    assert name in str(info.value)
    assert isinstance(info.value, DeepfeatError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        load_image(tmp_path)


def test_sha256_file_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_image_extensions_case_insensitive():
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
    for name in ("a.JPG", "b.Jpeg", "c.PNG", "d.bmp", "e.TIF", "f.tiff"):
        assert is_image_file(name)
    for name in ("a.gif", "b.txt", "c", "jpg"):
        assert not is_image_file(name)


def _cell_on_black(w=100, h=60, box=(40, 20, 60, 40)):
    img = Image.new("RGB", (w, h), (0, 0, 0))
    img.paste((200, 60, 120), box)
    return img


def test_crop_dark_border_crops_pads_and_keeps_margin():
    out = crop_dark_border(_cell_on_black(box=(40, 20, 70, 40)), margin=0)  # 30 x 20 cell
    assert out.size == (30, 30)
    arr = np.asarray(out)
    assert (arr[5:25, :, 0] == 200).all() and (arr[:5] == 0).all()  # centred vertically, black padding
    assert crop_dark_border(_cell_on_black(), margin=5).size == (30, 30)
    assert crop_dark_border(_cell_on_black(box=(40, 20, 70, 40)), margin=0, square=False).size == (30, 20)
    # the margin stops at the image edge
    assert crop_dark_border(_cell_on_black(box=(0, 0, 10, 10)), margin=8).size == (18, 18)


def test_crop_dark_border_ignores_dim_noise_and_all_dark_is_unchanged():
    img = _cell_on_black()
    img.putpixel((2, 2), (12, 12, 12))  # sensor noise below the threshold
    assert crop_dark_border(img, margin=0).size == (20, 20)
    dark = Image.new("RGB", (50, 30), (5, 5, 5))
    out = crop_dark_border(dark)
    assert out.size == (50, 30) and out.mode == "RGB"


def test_crop_dark_border_validates():
    with pytest.raises(ValueError, match="'threshold' parameter"):
        crop_dark_border(_cell_on_black(), threshold=300)
    with pytest.raises(ValueError, match="'margin' parameter"):
        crop_dark_border(_cell_on_black(), margin=-1)
