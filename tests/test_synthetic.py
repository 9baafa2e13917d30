"""The synthetic smear generator: deterministic, labelled synthetic, grouped, one duplicate, learnable not trivial."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deepfeat.data.images import load_image, sha256_file
from deepfeat.data.sources import open_source
from deepfeat.data.synthetic import CLASS_STYLES, README_NAME, make_synthetic_smears
from deepfeat.errors import DeepfeatError


def _hashes(src):
    return [sha256_file(p) for p in src.paths]


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    return make_synthetic_smears(tmp_path_factory.mktemp("syn") / "set", n_per_class=12, seed=0)


def test_layout_labels_groups_and_readme(default_set):
    src = default_set
    root = Path(src.root)
    assert len(src) == 48
    assert src.class_names == ["synthetic_blast", "synthetic_lymphocyte", "synthetic_monocyte", "synthetic_neutrophil"]
    assert all(name.startswith("synthetic_") for name in src.class_names)
    # 6 subjects per class, unique across classes, each holding images of one class only
    assert len(set(src.groups)) == 24
    assert all(len({lab for lab, g in zip(src.labels, src.groups) if g == grp}) == 1 for grp in set(src.groups))
    readme = (root / README_NAME).read_text()
    assert readme.startswith("SYNTHETIC DATA - NOT REAL MICROSCOPY IMAGES.")
    # the same folder reads back in the same order; labels.csv brings the groups back too
    assert open_source(root).paths == src.paths
    from_csv = open_source(root / "labels.csv")
    assert (from_csv.paths, from_csv.labels, from_csv.groups) == (src.paths, src.labels, src.groups)
    img = load_image(src.paths[0])
    assert img.size == (128, 128)


def test_exactly_one_duplicate_pair_as_documented(default_set):
    counts = Counter(_hashes(default_set))
    dups = [h for h, n in counts.items() if n > 1]
    assert len(dups) == 1 and counts[dups[0]] == 2
    pair = [i for i, h in enumerate(_hashes(default_set)) if h == dups[0]]
    assert pair == [0, 11]
    assert default_set.groups[0] == default_set.groups[11]
    readme = (Path(default_set.root) / README_NAME).read_text()
    assert "synthetic_blast/0011_synthetic_subject_01.png is a byte-identical copy of" in readme


def test_same_seed_gives_byte_identical_files(tmp_path, default_set):
    again = make_synthetic_smears(tmp_path / "again", n_per_class=12, seed=0)
    assert _hashes(again) == _hashes(default_set)
    other = make_synthetic_smears(tmp_path / "other", n_per_class=12, seed=1)
    assert not set(_hashes(other)) & set(_hashes(default_set))


def test_image_i_does_not_depend_on_set_size_or_class_subset(tmp_path, default_set):
    small = make_synthetic_smears(tmp_path / "small", n_per_class=3, classes=["monocyte"], seed=0, duplicate=False)
    full_monocytes = [h for h, lab in zip(_hashes(default_set), default_set.labels) if lab == "synthetic_monocyte"]
    assert _hashes(small) == full_monocytes[:3]
    assert small.groups == ["synthetic_subject_13", "synthetic_subject_14", "synthetic_subject_15"]


def test_regenerating_replaces_an_earlier_set(tmp_path):
    out = tmp_path / "s"
    make_synthetic_smears(out, n_per_class=4, seed=0)
    src = make_synthetic_smears(out, n_per_class=2, classes=["blast", "neutrophil"], seed=0)
    assert len(open_source(out)) == 4 == len(src)
    assert sorted(p.name for p in out.iterdir()) == [README_NAME, "labels.csv", "synthetic_blast",
                                                     "synthetic_neutrophil"]


def test_refuses_a_folder_of_other_data(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DeepfeatError, match="refusing to mix synthetic images with other data"):
        make_synthetic_smears(tmp_path, n_per_class=1)
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.parametrize("fmt, ext", [("jpg", ".jpg"), ("bmp", ".bmp"), ("tif", ".tif")])
def test_other_formats(tmp_path, fmt, ext):
    src = make_synthetic_smears(tmp_path / fmt, n_per_class=2, classes=["blast"], size=48, fmt=fmt)
    assert all(p.endswith(ext) for p in src.paths)
    assert load_image(src.paths[0]).size == (48, 48)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classes=["eosinophil"]), "unknown synthetic class 'eosinophil'"),
        (dict(classes=["blast", "synthetic_blast"]), "classes must be distinct"),
        (dict(n_per_class=0), "'n_per_class' parameter"),
        (dict(size=16), "'size' parameter"),
        (dict(fmt="gif"), "'fmt' parameter"),
        (dict(n_subjects=0), "'n_subjects' parameter"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(DeepfeatError, match=message):
        make_synthetic_smears(tmp_path / "x", **kwargs)


def test_classes_differ_but_not_by_mean_colour(default_set):
    """Learnable, not trivial: the mean colour of an image is a poor predictor of its class."""
    X = np.stack([np.asarray(load_image(p), dtype=np.float32).reshape(-1, 3).mean(0) for p in default_set.paths])
    y = np.array(default_set.labels)
    # leave-one-out nearest class mean on mean colour
    hits = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        means = {c: X[keep & (y == c)].mean(0) for c in CLASS_STYLES}
        hits += min(means, key=lambda c: np.linalg.norm(X[i] - means[c])) == y[i]
    assert hits / len(y) < 0.8
    # ... while the white cell itself differs: the dark (nucleus) area is larger in blasts than in neutrophils
    dark = {c: np.mean([(np.asarray(load_image(p)).mean(2) < 120).mean()
                        for p, lab in zip(default_set.paths, y) if lab == c]) for c in CLASS_STYLES}
    assert dark["synthetic_blast"] > 1.5 * dark["synthetic_neutrophil"]
