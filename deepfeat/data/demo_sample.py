"""The embedded real sample: 320 peripheral blood cells of the PBC dataset, shipped with deepfeat for the demo.

A stratified subset of the PBC dataset (Acevedo et al., *A dataset of microscopic peripheral blood cell images for
development of automatic recognition systems*, Data in Brief 30 (2020) 105474, doi:10.1016/j.dib.2020.105474;
CC BY 4.0): 40 images of each of its 8 classes of **normal** peripheral blood cells (CellaVision DM96, Hospital
Clinic of Barcelona), downscaled by deepfeat to at most 128 px a side (Lanczos) and re-encoded as JPEG (quality
85). These are real cells but not leukemia: they show the method, not a diagnosis of ALL.

The subset keeps the published dataset's byte-identical duplicates that fell into the sample deepfeat develops
with (three basophil pairs, and one file published both as an eosinophil and as a neutrophil), so the demo's
honesty section has real duplicates, and one real label conflict, to find. ``MANIFEST.csv`` lists every file with
the sha256 of the shipped bytes and of the original, ``ATTRIBUTION.md`` the licence and the changes made.

:func:`export_demo_sample` writes it as class folders (``deepfeat demo --export DIR``), the folder every README
example uses; :func:`build_demo_sample` rebuilds such a subset from a copy of the PBC dataset (how this one was
made).
"""
from __future__ import annotations

import csv
import hashlib
import io
import random
import shutil
from collections import defaultdict
from pathlib import Path

from deepfeat.errors import DeepfeatError
from deepfeat.fileio import atomic_write_bytes, sha256_file

__all__ = ["SAMPLE_DIR", "ATTRIBUTION", "sample_classes", "build_demo_sample", "export_demo_sample"]

SAMPLE_DIR = Path(__file__).resolve().parent / "pbc_demo"
MANIFEST_NAME = "MANIFEST.csv"
ATTRIBUTION_NAME = "ATTRIBUTION.md"
ATTRIBUTION = ("PBC dataset, Acevedo et al., Data in Brief 30 (2020) 105474, doi:10.1016/j.dib.2020.105474, "
               "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/): normal peripheral blood cells, "
               "not leukemia; a 320-image stratified subset downscaled to 128 px by deepfeat")
_FIELDS = ("class", "file", "sha256", "width", "height", "source_sha256")

_ATTRIBUTION_TEXT = """\
# The demo's cells: a subset of the PBC dataset

These {n} images are a stratified subset ({per_class} per class, {k} classes) of the PBC dataset:

> Andrea Acevedo, Anna Merino, Santiago Alférez, Ángel Molina, Laura Boldú, José Rodellar.
> A dataset of microscopic peripheral blood cell images for development of automatic recognition systems.
> Data in Brief 30 (2020) 105474. doi:10.1016/j.dib.2020.105474

Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/ . The images are **normal** peripheral blood cells (CellaVision DM96,
Hospital Clinic of Barcelona): they are not leukemia, and a result on them says nothing about diagnosing ALL.

Changes made by deepfeat: a random subset (seed {seed}) that keeps every byte-identical duplicate of the sample it
was drawn from, each image downscaled to at most {side} px a side (Lanczos) and re-encoded as JPEG, quality
{quality}. File names are the published ones; `MANIFEST.csv` gives the sha256 of each shipped file and of the
original. Built by `deepfeat.data.demo_sample.build_demo_sample`.
"""


def _read_manifest(folder: Path) -> list[dict]:
    with open(folder / MANIFEST_NAME, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def sample_classes() -> dict[str, int]:
    """Class name -> number of images in the embedded sample."""
    counts: dict[str, int] = defaultdict(int)
    for row in _read_manifest(SAMPLE_DIR):
        counts[row["class"]] += 1
    return dict(sorted(counts.items()))


def build_demo_sample(pbc_root, out, *, per_class: int = 40, side: int = 128, quality: int = 85,
                      seed: int = 0) -> Path:
    """Write a stratified, downscaled subset of a PBC copy (``<class>/<file>`` + ``MANIFEST.csv``) to ``out``.

    ``pbc_root`` must hold a ``MANIFEST.csv`` with ``class, file, sha256`` columns (as ``../shared/data/pbc_sample``
    has). Every byte-identical duplicate of the source is kept (both copies), the rest of each class is drawn at
    random with ``seed``; images are downscaled to at most ``side`` px and saved as JPEG of ``quality``.
    """
    from PIL import Image

    pbc_root, out = Path(pbc_root), Path(out)
    rows = _read_manifest(pbc_root)
    by_class, by_hash = defaultdict(list), defaultdict(list)
    for row in rows:
        by_class[row["class"]].append(row)
        by_hash[row["sha256"]].append(row)
    forced = {id(r) for group in by_hash.values() if len(group) > 1 for r in group}
    rng = random.Random(seed)
    chosen = []
    for cls in sorted(by_class):
        keep = [r for r in by_class[cls] if id(r) in forced]
        rest = [r for r in by_class[cls] if id(r) not in forced]
        if len(keep) > per_class or len(keep) + len(rest) < per_class:
            raise DeepfeatError(f"class {cls!r} of {pbc_root} cannot give {per_class} images "
                                f"({len(keep)} duplicates, {len(rest)} others)")
        chosen += sorted(keep + rng.sample(rest, per_class - len(keep)), key=lambda r: r["file"])
    manifest = []
    for row in chosen:
        src = pbc_root / row["class"] / row["file"]
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality, optimize=True)
        data = buf.getvalue()
        target = out / row["class"] / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        manifest.append({"class": row["class"], "file": row["file"], "sha256": hashlib.sha256(data).hexdigest(),
                         "width": im.width, "height": im.height, "source_sha256": row["sha256"]})
    _write_manifest(out, manifest)
    text = _ATTRIBUTION_TEXT.format(n=len(manifest), per_class=per_class, k=len(by_class), seed=seed, side=side,
                                    quality=quality)
    atomic_write_bytes(out / ATTRIBUTION_NAME, text.encode("utf-8"))
    return out


def _write_manifest(out: Path, manifest: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest)
    atomic_write_bytes(out / MANIFEST_NAME, buf.getvalue().encode("utf-8"))


def export_demo_sample(dest) -> Path:
    """Copy the embedded sample to ``dest`` as class folders (with its MANIFEST.csv and ATTRIBUTION.md).

    ``dest`` may exist: files of the sample already there with the same bytes are left alone, a file of the same
    name with other bytes is an error (nothing of yours is overwritten). Returns ``dest``.
    """
    dest = Path(dest)
    rows = _read_manifest(SAMPLE_DIR)
    names = [Path(r["class"]) / r["file"] for r in rows] + [Path(MANIFEST_NAME), Path(ATTRIBUTION_NAME)]
    clash = [str(dest / n) for n in names
             if (dest / n).exists() and ((dest / n).is_dir() or sha256_file(dest / n) != sha256_file(SAMPLE_DIR / n))]
    if clash:
        raise DeepfeatError(f"cannot export the demo sample to {dest}: {len(clash)} file(s) there differ from the "
                            f"sample (e.g. {clash[0]}); choose an empty or new folder")
    for name in names:
        target = dest / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SAMPLE_DIR / name, target)
    return dest
