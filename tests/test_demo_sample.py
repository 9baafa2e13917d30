"""The embedded real sample (320 PBC cells, CC BY 4.0): intact, small, attributed, exportable, reproducible."""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from deepfeat.data import demo_sample
from deepfeat.data.demo_sample import SAMPLE_DIR, build_demo_sample, export_demo_sample, sample_classes
from deepfeat.errors import DeepfeatError

ROOT = Path(__file__).resolve().parents[1]
PBC = ROOT.parent / "shared" / "data" / "pbc_sample"
PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def _manifest(folder):
    with open(folder / "MANIFEST.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_shipped_file_matches_its_manifest_and_all_8_classes_are_there():
    rows = _manifest(SAMPLE_DIR)
    assert sample_classes() == {c: 40 for c in PBC_CLASSES}
    on_disk = sorted(p.relative_to(SAMPLE_DIR).as_posix() for p in SAMPLE_DIR.rglob("*.jpg"))
    assert on_disk == sorted(f"{r['class']}/{r['file']}" for r in rows)
    for r in rows:
        data = (SAMPLE_DIR / r["class"] / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"], r["file"]
        assert max(int(r["width"]), int(r["height"])) <= 128


def test_the_sample_keeps_the_published_duplicates_and_the_label_conflict():
    rows = _manifest(SAMPLE_DIR)
    groups = {}
    for r in rows:
        groups.setdefault(r["sha256"], []).append(r["class"])
    dup = [sorted(v) for v in groups.values() if len(v) > 1]
    assert len(dup) == 4
    assert ["eosinophil", "neutrophil"] in dup  # the file PBC publishes under two labels


def test_the_sample_is_small_and_carries_its_licence():
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert total <= 1.5e6
    text = (SAMPLE_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in text and "doi:10.1016/j.dib.2020.105474" in text and "not leukemia" in text
    assert "CC BY 4.0" in demo_sample.ATTRIBUTION


def test_export_writes_class_folders_and_is_idempotent(tmp_path):
    out = export_demo_sample(tmp_path / "cells")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == PBC_CLASSES
    assert len(list(out.rglob("*.jpg"))) == 320
    assert (out / "ATTRIBUTION.md").is_file()
    export_demo_sample(out)  # same bytes already there: nothing to do, no error


def test_export_never_overwrites_a_different_file(tmp_path):
    target = tmp_path / "cells" / "basophil"
    target.mkdir(parents=True)
    name = _manifest(SAMPLE_DIR)[0]["file"]
    (target / name).write_bytes(b"mine")
    with pytest.raises(DeepfeatError, match="differ from the sample"):
        export_demo_sample(tmp_path / "cells")
    assert (target / name).read_bytes() == b"mine"


@pytest.mark.realdata
@pytest.mark.skipif(not PBC.is_dir(), reason=f"{PBC} is absent (real data lives in ../shared, not in the project)")
def test_rebuilding_from_the_pbc_sample_draws_the_same_cells(tmp_path):
    out = build_demo_sample(PBC, tmp_path / "rebuilt")
    mine = {(r["class"], r["file"], r["source_sha256"]) for r in _manifest(out)}
    shipped = {(r["class"], r["file"], r["source_sha256"]) for r in _manifest(SAMPLE_DIR)}
    assert mine == shipped
    sizes = Counter(r["class"] for r in _manifest(out))
    assert set(sizes.values()) == {40}


@pytest.mark.slow
def test_the_wheel_carries_the_sample(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("deepfeat-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith("deepfeat/data/pbc_demo/")]
        sample_bytes = sum(zf.getinfo(n).compress_size for n in names)
    assert len([n for n in names if n.endswith(".jpg")]) == 320
    assert "deepfeat/data/pbc_demo/ATTRIBUTION.md" in names and "deepfeat/data/pbc_demo/MANIFEST.csv" in names
    assert sample_bytes <= 1.5e6
