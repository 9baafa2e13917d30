"""A deterministic generator of small, clearly synthetic, smear-like single-cell images.

It is the embedded default data for ``deepfeat demo`` and for unit tests: no download, no licence, seconds to make.
Each image shows a pink background with a few red blood cells and one central white cell whose class sets the
cell and nucleus size, nucleus shape (round, lobed, kidney), chromatin texture, nucleoli, cytoplasm rim and stain
hue. Every parameter is jittered and overlaps between classes, so a classifier on CNN features does well but not
perfectly. The images are drawn with numpy and encoded with Pillow only.

Two deliberate properties, written into the ``SYNTHETIC_README.txt`` beside the images:

- **Subjects.** Images of each class come from ``n_subjects`` synthetic "subjects"; every subject has its own colour
  cast and staining strength, as real slides do, so subject-grouped cross-validation has groups to respect and
  image-level folds can leak subject identity (the difference between the two is the point).
- **One duplicate.** The last image of the first class is a byte-identical copy of its first image (same subject),
  so duplicate detection by sha256 has exactly one pair to find.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from deepfeat.data.sources import ImageSource
from deepfeat.errors import DeepfeatError

GENERATOR_VERSION = 1
README_NAME = "SYNTHETIC_README.txt"
LABELS_CSV = "labels.csv"

# Per class: cell radius (fraction of the image side), nucleus/cell radius ratio, nucleus shape, RGB of nucleus
# and cytoplasm, chromatin texture (amplitude, grain in pixels), nucleoli, cytoplasm granules/vacuoles.
# Ranges overlap on purpose (blast vs lymphocyte, monocyte vs blast) so the task is not trivial.
CLASS_STYLES: dict[str, dict] = {
    "synthetic_blast": dict(cell=(0.24, 0.32), ratio=(0.74, 0.88), shape="round", nucleus=(125, 75, 155),
                            cyto=(165, 168, 215), texture=(0.10, 3.0), nucleoli=(1, 3), granules=0.0),
    "synthetic_lymphocyte": dict(cell=(0.19, 0.27), ratio=(0.78, 0.92), shape="round", nucleus=(92, 50, 128),
                                 cyto=(155, 178, 225), texture=(0.22, 6.0), nucleoli=(0, 1), granules=0.0),
    "synthetic_monocyte": dict(cell=(0.25, 0.34), ratio=(0.58, 0.74), shape="kidney", nucleus=(128, 88, 160),
                               cyto=(180, 176, 208), texture=(0.16, 4.0), nucleoli=(0, 1), granules=-0.10),
    "synthetic_neutrophil": dict(cell=(0.22, 0.30), ratio=(0.30, 0.38), shape="lobed", nucleus=(104, 56, 140),
                                 cyto=(214, 186, 206), texture=(0.14, 4.0), nucleoli=(0, 0), granules=0.12),
}


def _soft_disc(yy, xx, cy, cx, r, edge=1.2):
    """Anti-aliased disc coverage in [0, 1]."""
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip((r - d) / edge + 0.5, 0.0, 1.0)


def _soft_ellipse(yy, xx, cy, cx, ry, rx, angle, edge=1.2):
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    d = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)  # 1 on the boundary
    return np.clip((1.0 - d) * min(rx, ry) / edge + 0.5, 0.0, 1.0)


def _smooth_noise(rng, size, grain):
    """Zero-mean noise with features about ``grain`` pixels across (upsampled low-resolution noise)."""
    n = max(2, int(round(size / max(grain, 1.0))))
    low = Image.fromarray(rng.standard_normal((n, n)).astype(np.float32), mode="F")
    return np.asarray(low.resize((size, size), Image.BILINEAR), dtype=np.float32)


def _paint(img, alpha, color):
    alpha = alpha[..., None]
    img *= 1.0 - alpha
    img += alpha * color


def _paint_disc(img, yy, xx, cy, cx, r, color, edge=1.2, strength=1.0):
    """Paint a disc touching only its bounding box (most of the drawing time otherwise goes to empty pixels)."""
    size = img.shape[0]
    y0, y1 = max(int(cy - r - edge - 1), 0), min(int(cy + r + edge + 2), size)
    x0, x1 = max(int(cx - r - edge - 1), 0), min(int(cx + r + edge + 2), size)
    if y0 >= y1 or x0 >= x1:
        return
    window = (slice(y0, y1), slice(x0, x1))
    _paint(img[window], strength * _soft_disc(yy[window], xx[window], cy, cx, r, edge), color)


def _nucleus_alpha(rng, yy, xx, cy, cx, r, shape):
    angle = rng.uniform(0, 2 * np.pi)
    if shape == "round":
        return _soft_ellipse(yy, xx, cy, cx, r * rng.uniform(0.85, 1.0), r, angle)
    if shape == "kidney":
        body = _soft_ellipse(yy, xx, cy, cx, r * 0.8, r, angle)
        # an indentation: a disc bitten out of one long side
        bite = _soft_disc(yy, xx, cy + 1.05 * r * np.cos(angle + np.pi / 2),
                          cx + 1.05 * r * np.sin(angle + np.pi / 2), r * rng.uniform(0.45, 0.65))
        return body * (1.0 - bite)
    # lobed: 2-5 lobes on an arc around the centre, joined by thin strands
    n_lobes = int(rng.integers(2, 6))
    arc_r = r * 1.35
    angles = angle + np.linspace(0, rng.uniform(1.1, 1.7) * np.pi, n_lobes)
    centres = [(cy + arc_r * np.sin(a), cx + arc_r * np.cos(a)) for a in angles]
    alpha = np.zeros_like(yy)
    for (ly, lx) in centres:
        alpha = np.maximum(alpha, _soft_disc(yy, xx, ly, lx, r * rng.uniform(0.8, 1.1)))
    for (ay, ax), (by, bx) in zip(centres[:-1], centres[1:]):
        alpha = np.maximum(alpha, _soft_disc(yy, xx, (ay + by) / 2, (ax + bx) / 2, r * 0.35))
    return alpha


def _subject_cast(seed: int, subject: int) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng([seed, 1_000_003, subject])
    return 1.0 + rng.normal(0.0, 0.05, 3).astype(np.float32), float(rng.uniform(0.85, 1.15))


def _draw(rng, style, size, cast, stain) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = float(size)
    background = np.array([236, 206, 212], np.float32) + rng.normal(0, 4, 3)
    img = np.broadcast_to(background, (size, size, 3)).copy()
    img += 6.0 * _smooth_noise(rng, size, s / 3)[..., None]
    # red blood cells: pale-centred discs scattered around (some under the white cell, some cut by the edge)
    for _ in range(int(rng.integers(3, 9))):
        r = s * rng.uniform(0.08, 0.12)
        cy, cx = rng.uniform(-0.05, 1.05, 2) * s
        rbc = np.array([214, 120, 134], np.float32) + rng.normal(0, 6, 3)
        _paint_disc(img, yy, xx, cy, cx, r, rbc)
        _paint_disc(img, yy, xx, cy, cx, r * 0.45, rbc * 0.35 + 160, edge=r * 0.3, strength=0.55)
    # the white cell, near the centre
    cy, cx = s / 2 + rng.normal(0, s * 0.04, 2)
    cell_r = s * rng.uniform(*style["cell"])
    cyto = np.array(style["cyto"], np.float32) + rng.normal(0, 8, 3)
    cyto_tex = 1.0 + style["granules"] * _smooth_noise(rng, size, 1.5) + 0.04 * _smooth_noise(rng, size, 5)
    _paint(img, _soft_disc(yy, xx, cy, cx, cell_r, edge=1.6), cyto * cyto_tex[..., None])
    nuc_r = cell_r * rng.uniform(*style["ratio"])
    # the nucleus sits off-centre inside the cell, more so when it is small
    shift = (cell_r - nuc_r) * rng.uniform(0.0, 0.6)
    theta = rng.uniform(0, 2 * np.pi)
    ny, nx = cy + shift * np.sin(theta), cx + shift * np.cos(theta)
    alpha = _nucleus_alpha(rng, yy, xx, ny, nx, nuc_r, style["shape"])
    amp, grain = style["texture"]
    chromatin = 1.0 + amp * rng.uniform(0.7, 1.3) * _smooth_noise(rng, size, grain * rng.uniform(0.8, 1.25))
    nucleus = (np.array(style["nucleus"], np.float32) + rng.normal(0, 10, 3)) / stain
    _paint(img, alpha, nucleus * chromatin[..., None])
    for _ in range(int(rng.integers(style["nucleoli"][0], style["nucleoli"][1] + 1))):
        off = nuc_r * 0.5 * rng.uniform(-1, 1, 2)
        spot = _soft_disc(yy, xx, ny + off[0], nx + off[1], nuc_r * rng.uniform(0.10, 0.18), edge=2.0)
        _paint(img, 0.45 * spot * alpha, np.array([175, 150, 200], np.float32))
    img *= cast
    img += rng.normal(0, rng.uniform(2.0, 6.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _resolve_classes(classes) -> list[str]:
    if classes is None:
        return sorted(CLASS_STYLES)
    names = []
    for c in classes:
        name = c if str(c).startswith("synthetic_") else f"synthetic_{c}"
        if name not in CLASS_STYLES:
            raise DeepfeatError(f"unknown synthetic class {c!r}; choose from {sorted(CLASS_STYLES)}")
        names.append(name)
    if len(set(names)) != len(names) or not names:
        raise DeepfeatError(f"classes must be distinct and non-empty; got {list(classes)}")
    return sorted(names)


_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg"), "bmp": ("BMP", ".bmp"),
            "tif": ("TIFF", ".tif"), "tiff": ("TIFF", ".tif")}

# Fast PNG compression: noisy images barely compress anyway, and encoding was a third of the run time.
_SAVE_OPTIONS = {"JPEG": {"quality": 92}, "PNG": {"compress_level": 1}}


def _prepare(out: Path) -> None:
    """Refuse to write into a folder of other data; clear a previous synthetic set so no stale file survives."""
    if out.exists() and any(out.iterdir()):
        if not (out / README_NAME).is_file():
            raise DeepfeatError(
                f"{out} is not empty and holds no {README_NAME}: refusing to mix synthetic images with other data; "
                "choose an empty or new folder"
            )
        for child in out.iterdir():
            if child.is_dir() and child.name.startswith("synthetic_"):
                shutil.rmtree(child)
    out.mkdir(parents=True, exist_ok=True)


def make_synthetic_smears(
    out_dir,
    *,
    n_per_class: int = 40,
    classes=None,
    size: int = 128,
    seed: int = 0,
    fmt: str = "png",
    n_subjects: int = 6,
    duplicate: bool = True,
) -> ImageSource:
    """Write a small ImageFolder tree of synthetic single-cell smear images and return it as a source.

    Parameters
    ----------
    out_dir : str or path-like
        Folder to write (created; must be empty or hold an earlier synthetic set, which is replaced).
    n_per_class : int, default=40
        Images per class.
    classes : list of str, optional
        Some of ``synthetic_blast``, ``synthetic_lymphocyte``, ``synthetic_monocyte``, ``synthetic_neutrophil``
        (the ``synthetic_`` prefix may be left out). Default: all four.
    size : int, default=128
        Side of the square images in pixels (>= 32).
    seed : int, default=0
        Same seed, same arguments -> byte-identical files (image ``i`` of a class does not depend on
        ``n_per_class``).
    fmt : {"png", "jpg", "bmp", "tif"}, default="png"
    n_subjects : int, default=6
        Synthetic subjects per class (each with its own colour cast); group ids are
        ``synthetic_subject_NN``, unique across classes.
    duplicate : bool, default=True
        Make the last image of the first class a byte-identical copy of its first image.

    Returns
    -------
    ImageSource
        Labelled, with groups, in sorted folder order (the same order ``open_source(out_dir)`` gives).
        ``labels.csv`` (path,label,group) and ``SYNTHETIC_README.txt`` are written beside the class folders.

    Examples
    --------
    >>> import tempfile
    >>> src = make_synthetic_smears(tempfile.mkdtemp(), n_per_class=2, classes=["blast", "lymphocyte"])
    >>> src.class_names, len(src), src.groups[0]
    (['synthetic_blast', 'synthetic_lymphocyte'], 4, 'synthetic_subject_01')
    """
    names = _resolve_classes(classes)
    if int(n_per_class) < 1:
        raise DeepfeatError(f"The 'n_per_class' parameter of make_synthetic_smears must be >= 1. Got {n_per_class!r}.")
    if int(size) < 32:
        raise DeepfeatError(f"The 'size' parameter of make_synthetic_smears must be >= 32. Got {size!r}.")
    if int(n_subjects) < 1:
        raise DeepfeatError(f"The 'n_subjects' parameter of make_synthetic_smears must be >= 1. Got {n_subjects!r}.")
    if str(fmt).lower() not in _FORMATS:
        raise DeepfeatError(f"The 'fmt' parameter of make_synthetic_smears must be one of {sorted(_FORMATS)}. Got {fmt!r}.")
    pil_format, ext = _FORMATS[str(fmt).lower()]
    out = Path(out_dir)
    _prepare(out)
    paths, labels, groups = [], [], []
    dup_note = "none"
    for k, name in enumerate(names):
        class_idx = sorted(CLASS_STYLES).index(name)  # stable per class, whatever subset is asked for
        (out / name).mkdir()
        first_file = None
        for i in range(n_per_class):
            is_dup = duplicate and k == 0 and n_per_class >= 2 and i == n_per_class - 1
            subject_local = 0 if is_dup else i % n_subjects
            subject = class_idx * n_subjects + subject_local + 1
            group = f"synthetic_subject_{subject:02d}"
            target = out / name / f"{i:04d}_{group}{ext}"
            if is_dup:
                shutil.copyfile(first_file, target)
                dup_note = f"{name}/{target.name} is a byte-identical copy of {name}/{first_file.name}"
            else:
                rng = np.random.default_rng([seed, GENERATOR_VERSION, class_idx, i])
                cast, stain = _subject_cast(seed, subject)
                pixels = _draw(rng, CLASS_STYLES[name], size, cast, stain)
                image = Image.fromarray(pixels, "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
                image.save(target, format=pil_format, **_SAVE_OPTIONS.get(pil_format, {}))
            first_file = first_file or target
            paths.append(str(target))
            labels.append(name)
            groups.append(group)
    with open(out / LABELS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        for p, lab, g in zip(paths, labels, groups):
            writer.writerow([Path(os.path.relpath(p, out)).as_posix(), lab, g])
    (out / README_NAME).write_text(_readme(names, n_per_class, size, seed, pil_format, n_subjects, dup_note))
    return ImageSource(paths, labels, groups, "synthetic_smears", str(out))


def _readme(names, n_per_class, size, seed, fmt, n_subjects, dup_note) -> str:
    return f"""SYNTHETIC DATA - NOT REAL MICROSCOPY IMAGES.

These images were drawn by deepfeat.data.synthetic.make_synthetic_smears (generator version {GENERATOR_VERSION})
for demos and tests. They imitate the look of single-cell blood smear crops (pink background, red blood cells, one
white cell) but carry no medical meaning: never use them to judge a method for clinical use.

classes: {', '.join(names)} ({n_per_class} images each, {size}x{size} {fmt}, seed {seed})
subjects: {n_subjects} synthetic subjects per class, each with its own colour cast and stain strength; the group id
  (synthetic_subject_NN) ends every file name and is in labels.csv (columns path,label,group), which
  deepfeat.data.sources.open_source(this_folder/labels.csv) reads with the groups.
duplicate: {dup_note}
"""
