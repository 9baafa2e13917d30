"""Image sources (folders, CSV, lists, dataset manifests) and the manifests in data_manifests/."""
from __future__ import annotations

import filecmp
import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from deepfeat.data import manifests as manifests_mod
from deepfeat.data.manifests import (
    DatasetManifest,
    check_counts,
    list_manifests,
    load_manifest,
)
from deepfeat.data.sources import ImageSource, open_source
from deepfeat.errors import DeepfeatError

REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


def _img(path: Path, color=(120, 60, 90), size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    Image.new("RGB", size, color).save(path, format=fmt[path.suffix.lower()])
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "cells"
    _img(root / "blast" / "b2.PNG")
    _img(root / "blast" / "patient1" / "slide3" / "b1.Jpg")
    _img(root / "blast" / "a.TIFF")
    _img(root / "normal" / "n1.jpeg")
    _img(root / "normal" / "deeper" / "n0.bmp")
    _img(root / "normal" / ".hidden.png")
    _img(root / ".ipynb_checkpoints" / "x.png")
    _img(root / "normal" / ".cache" / "y.png")
    (root / "normal" / "notes.txt").write_text("not an image")
    (root / "normal" / "scan.gif").write_bytes(b"GIF89a")
    (root / "MANIFEST.csv").write_text("class,file\n")
    return root


def test_folder_layout_nesting_case_hidden_and_order(tree):
    src = open_source(tree)
    rel = [Path(p).relative_to(tree).as_posix() for p in src.paths]
    assert rel == ["blast/a.TIFF", "blast/b2.PNG", "blast/patient1/slide3/b1.Jpg", "normal/deeper/n0.bmp",
                   "normal/n1.jpeg"]
    assert src.labels == ["blast"] * 3 + ["normal"] * 2
    assert src.groups is None
    assert src.class_names == ["blast", "normal"]
    assert src.class_counts == {"blast": 3, "normal": 2}
    assert len(src) == 5 and src.name == "cells" and src.root == str(tree)
    assert not src.is_single_class
    assert open_source(str(tree)).paths == src.paths  # deterministic


def test_subset_keeps_rows_in_given_order(tree):
    src = open_source(tree, groups=["g1", "g2", "g3", "g4", "g5"])
    sub = src.subset([4, 0])
    assert sub.paths == [src.paths[4], src.paths[0]]
    assert sub.labels == ["normal", "blast"] and sub.groups == ["g5", "g1"]
    assert sub.name == src.name


def test_image_source_validates_lengths():
    with pytest.raises(DeepfeatError, match="1 labels for 2 paths"):
        ImageSource(["a.png", "b.png"], labels=["x"])


def test_unlabelled_folder(tmp_path):
    _img(tmp_path / "new" / "z.png")
    _img(tmp_path / "new" / "a.JPG")
    src = open_source(tmp_path / "new")
    assert [Path(p).name for p in src.paths] == ["a.JPG", "z.png"]
    assert src.labels is None and src.class_names == [] and not src.is_single_class


def test_single_class_is_flagged_not_refused(tmp_path):
    _img(tmp_path / "d" / "only" / "a.png")
    src = open_source(tmp_path / "d")
    assert src.is_single_class and src.class_names == ["only"]


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepfeatError, match=r"no images found in folder .*empty"):
        open_source(tmp_path / "empty")
    (tmp_path / "texts" / "a").mkdir(parents=True)
    (tmp_path / "texts" / "a" / "x.txt").write_text("x")
    with pytest.raises(DeepfeatError, match=r"no images found in folder .*texts"):
        open_source(tmp_path / "texts")
    _img(tmp_path / "mixed" / "loose.png")
    _img(tmp_path / "mixed" / "cls" / "a.png")
    with pytest.raises(DeepfeatError, match=r"mixed has 1 images at its top level and class sub-folders \(cls\)"):
        open_source(tmp_path / "mixed")
    with pytest.raises(DeepfeatError, match="does not exist"):
        open_source(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DeepfeatError, match="neither a folder, a .csv manifest nor an image file"):
        open_source(tmp_path / "notes.txt")


def test_empty_class_folder_is_ignored_with_warning(tmp_path):
    _img(tmp_path / "d" / "a" / "1.png")
    _img(tmp_path / "d" / "b" / "1.png")
    (tmp_path / "d" / "logs").mkdir()
    with pytest.warns(UserWarning, match="sub-folders without images ignored: logs"):
        src = open_source(tmp_path / "d")
    assert src.class_names == ["a", "b"]


def test_csv_relative_paths_and_groups(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    other = _img(tmp_path / "elsewhere" / "c.png")
    csv_path = tmp_path / "lists" / "train.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "\ufeffpath,label,group\n../imgs/b.png,ALL,p2\n../imgs/a.png, normal ,p1\n" f"{other},ALL,p3\n"
    )
    src = open_source(csv_path)
    assert src.paths == [str(tmp_path / "imgs" / "b.png"), str(tmp_path / "imgs" / "a.png"), str(other)]
    assert src.labels == ["ALL", "normal", "ALL"] and src.groups == ["p2", "p1", "p3"]
    assert src.name == "train"


def test_csv_without_group_column(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("label,path,extra\nx,a.png,1\n")
    src = open_source(tmp_path / "l.csv")
    assert src.groups is None and src.labels == ["x"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,label\na.png,x\n", r"l\.csv lacks column\(s\) \['path'\]"),
        ("path\na.png\n", r"lacks column\(s\) \['label'\]"),
        ("", r"lacks column\(s\) \['path', 'label'\]"),
        ("path,label\n", "has a header but no rows"),
        ("path,label\na.png,x\nmissing.png,y\n", r"l\.csv, line 3: image 'missing.png' does not exist"),
        ("path,label\na.png,\n", r"line 2: empty 'label' for a.png"),
        ("path,label,group\na.png,x,\n", r"line 2: empty 'group'"),
        ("path,label\n,x\n", r"line 2: empty 'path'"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, content, message):
    _img(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(DeepfeatError, match=message):
        open_source(tmp_path / "l.csv")


def test_list_of_paths_and_single_file(tmp_path):
    a, b = _img(tmp_path / "a.png"), _img(tmp_path / "b.JPG")
    src = open_source([b, str(a)])
    assert src.paths == [str(b), str(a)] and src.labels is None
    assert open_source(a).paths == [str(a)]
    with pytest.raises(DeepfeatError, match=r"image .*c\.png does not exist"):
        open_source([a, tmp_path / "c.png"])
    with pytest.raises(DeepfeatError, match="empty list"):
        open_source([])


def test_groups_argument_regex_callable_and_list(tmp_path):
    _img(tmp_path / "d" / "x" / "pat01_img1.png")
    _img(tmp_path / "d" / "x" / "pat02_img1.png")
    _img(tmp_path / "d" / "y" / "pat01_img2.png")
    assert open_source(tmp_path / "d", groups=r"^(?P<group>pat\d+)_").groups == ["pat01", "pat02", "pat01"]
    assert open_source(tmp_path / "d", groups=r"^(pat\d+)").groups == ["pat01", "pat02", "pat01"]
    assert open_source(tmp_path / "d", groups=lambda p: Path(p).parent.name).groups == ["x", "x", "y"]
    with pytest.raises(DeepfeatError, match="groups has 1 entries for 3 images"):
        open_source(tmp_path / "d", groups=["a"])
    with pytest.raises(DeepfeatError, match="does not match file name 'pat01_img1.png'"):
        open_source(tmp_path / "d", groups=r"^subject")
    with pytest.raises(DeepfeatError, match="not a valid regular expression"):
        open_source(tmp_path / "d", groups="(")


def test_open_source_does_not_mutate_a_given_source(tmp_path):
    src = ImageSource([str(_img(tmp_path / "a.png"))], ["x"])
    out = open_source(src, groups=["g"])
    assert out.groups == ["g"] and src.groups is None


# ---------------------------------------------------------------- manifests


def test_all_manifests_parse_and_their_examples_hold():
    names = list_manifests()
    assert {"taleqani_all", "c_nmc_2019", "all_idb2", "pbc_2020"} <= set(names)
    for name in names:
        m = load_manifest(name)
        assert m.name == name and m.citation and m.license and m.url and m.class_names
        for ex in m.examples:
            assert m.label_of(ex["file"]) == ex["label"], (name, ex)
            assert m.group_of(ex["file"]) == ex.get("group"), (name, ex)


def test_manifest_facts():
    tale = load_manifest("taleqani_all")
    assert tale.expected_counts == {"Benign": 504, "Early Pre-B": 985, "Pre-B": 963, "Pro-B": 804}
    assert sum(tale.expected_counts.values()) == 3256
    assert [tale.class_of_folder(f) for f in ("Benign", "Early", "Pre", "Pro", "Other")] == [
        "Benign", "Early Pre-B", "Pre-B", "Pro-B", None]
    assert tale.subfolders == {"original": "Original", "segmented": "Segmented"} and not tale.group_rules
    pbc = load_manifest("pbc_2020")
    assert len(pbc.class_names) == 8 and sum(pbc.expected_counts.values()) == 17092 and "CC BY 4.0" in pbc.license
    idb = load_manifest("all_idb2")
    assert idb.expected_counts == {"ALL_blast": 130, "normal": 130}


@pytest.mark.parametrize(
    "file_name, label, group",
    [
        ("UID_11_10_1_all.bmp", "ALL", "P11"),
        ("UID_H10_43_1_hem.bmp", "normal", "H10"),
        ("UID_H22_1_12_hem.BMP", "normal", "H22"),
        ("UID_3_7_2_all.bmp", "ALL", "P3"),
        ("UID_H3_7_2_all.bmp", None, None),  # healthy subject with an ALL suffix: no such file in C-NMC
        ("UID_11_10_1_hem.bmp", None, None),
        ("1.bmp", None, None),  # anonymised test-set names
        ("UID_11_10_1_all.bmp.txt", None, None),
    ],
)
def test_c_nmc_file_name_rules(file_name, label, group):
    m = load_manifest("c_nmc_2019")
    assert m.label_of(file_name) == label
    assert m.group_of(file_name) == group


@pytest.mark.parametrize(
    "file_name, label", [("Im001_1.tif", "ALL_blast"), ("Im130_1.TIF", "ALL_blast"), ("Im131_0.tif", "normal"),
                         ("Im001_2.tif", None), ("Im01_1.tif", None), ("Im001_1.jpg", None)],
)
def test_all_idb2_file_name_rules(file_name, label):
    assert load_manifest("all_idb2").label_of(file_name) == label


def test_load_manifest_by_path_and_errors(tmp_path):
    m = load_manifest(REPO_MANIFESTS / "pbc_2020.toml")
    assert isinstance(m, DatasetManifest) and load_manifest(m) is m
    with pytest.raises(DeepfeatError, match=r"unknown dataset manifest 'nope'; known: all_idb2, c_nmc_2019"):
        load_manifest("nope")
    with pytest.raises(DeepfeatError, match="does not exist"):
        load_manifest(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(DeepfeatError, match="is not valid TOML"):
        load_manifest(bad)
    base = 'name="x"\ncitation="c"\nlicense="l"\nurl="u"\nclass_names=["a","b"]\n'
    for extra, message in [
        ("colour = 1\n", r"unknown keys \['colour'\]"),
        ("[expected_counts]\nc = 3\n", r"expected_counts keys \['c'\] are not in class_names"),
        ("[[group_rules]]\npattern='('\ngroup='g'\n", "is not a valid regex"),
        ("[[group_rules]]\npattern='(?P<s>x)'\ngroup='P{t}'\n", r"template uses \['t'\]"),
        ("label_from = 'file_name'\n", r"needs \[\[label_rules\]\]"),
    ]:
        bad.write_text(base + extra)
        with pytest.raises(DeepfeatError, match=message):
            load_manifest(bad)
    bad.write_text('name="x"\n')
    with pytest.raises(DeepfeatError, match=r"missing required keys \['citation'"):
        load_manifest(bad)


def test_manifests_found_through_environment(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text('name="mine"\ncitation="c"\nlicense="l"\nurl="u"\nclass_names=["a"]\n')
    monkeypatch.setenv("DEEPFEAT_MANIFESTS", str(tmp_path))
    assert "mine" in list_manifests() and load_manifest("mine").class_names == ("a",)


def test_packaged_manifests_are_the_top_level_files():
    # Single source: the loader reads data_manifests/ itself in a checkout; an installed wheel maps the same
    # folder onto deepfeat.data_manifests. If both are visible they must hold the same files.
    assert manifests_mod._REPO_MANIFESTS == REPO_MANIFESTS
    for d in manifests_mod._search_dirs():
        if d.resolve() != REPO_MANIFESTS.resolve():
            for f in REPO_MANIFESTS.glob("*.toml"):
                assert filecmp.cmp(f, d / f.name, shallow=False), f


def test_taleqani_tree_with_manifest(tmp_path):
    for sub in ("Original", "Segmented"):
        for folder in ("Benign", "Early", "Pre", "Pro"):
            _img(tmp_path / "ALL" / sub / folder / f"{folder}_1.jpg")
    with pytest.warns(UserWarning, match=r"class counts differ .*'Benign': expected 504 images, found 1"):
        src = open_source(tmp_path / "ALL", manifest="taleqani_all")
    assert src.root == str(tmp_path / "ALL" / "Original")  # the default sub-folder
    assert src.class_names == ["Benign", "Early Pre-B", "Pre-B", "Pro-B"] and src.groups is None
    assert src.name == "taleqani_all"
    with pytest.warns(UserWarning):
        seg = open_source(tmp_path / "ALL" / "Segmented", manifest="taleqani_all")
    assert seg.labels == ["Benign", "Early Pre-B", "Pre-B", "Pro-B"]
    _img(tmp_path / "ALL" / "Original" / "Other" / "x.jpg")
    with pytest.raises(DeepfeatError, match=r"Other is not a class of dataset manifest taleqani_all"):
        open_source(tmp_path / "ALL", manifest="taleqani_all")


def test_c_nmc_tree_with_manifest(tmp_path):
    root = tmp_path / "C-NMC_training_data"
    for fold, files in {"fold_0": ["all/UID_11_1_1_all.bmp", "hem/UID_H10_1_1_hem.bmp"],
                        "fold_1": ["all/UID_12_3_2_all.bmp", "all/UID_11_2_1_all.bmp"]}.items():
        for f in files:
            _img(root / fold / f)
    with pytest.warns(UserWarning, match="class counts differ"):
        src = open_source(root, manifest="c_nmc_2019")
    names = [Path(p).name for p in src.paths]
    assert names == ["UID_11_1_1_all.bmp", "UID_H10_1_1_hem.bmp", "UID_11_2_1_all.bmp", "UID_12_3_2_all.bmp"]
    assert src.labels == ["ALL", "normal", "ALL", "ALL"]
    assert src.groups == ["P11", "H10", "P11", "P12"]
    _img(root / "fold_1" / "all" / "stray.bmp")
    with pytest.raises(DeepfeatError, match=r"1 of 5 images .* do not match .*c_nmc_2019 .*fold_1/all/stray.bmp"):
        open_source(root, manifest="c_nmc_2019")


def test_manifest_groups_partial_and_absent(tmp_path):
    m = DatasetManifest(name="t", citation="c", license="l", url="u", class_names=("a", "b"),
                        group_rules=load_manifest("c_nmc_2019").group_rules)
    _img(tmp_path / "d" / "a" / "UID_1_1_1_all.bmp")
    _img(tmp_path / "d" / "b" / "other.bmp")
    with pytest.raises(DeepfeatError, match=r"1 of 2 files .* give no subject id .* e.g. other.bmp"):
        open_source(tmp_path / "d", manifest=m)
    _img(tmp_path / "e" / "a" / "x.bmp")
    _img(tmp_path / "e" / "b" / "y.bmp")
    with pytest.warns(UserWarning, match="subject-grouped folds are impossible"):
        assert open_source(tmp_path / "e", manifest=m).groups is None


def test_all_idb2_flat_release_with_manifest(tmp_path):
    for i in range(1, 5):
        _img(tmp_path / "img" / f"Im{i:03d}_{int(i <= 2)}.tif")
    (tmp_path / "img" / "readme.txt").write_text("x")
    with pytest.warns(UserWarning, match=r"'ALL_blast': expected 130 images, found 2"):
        src = open_source(tmp_path / "img", manifest="all_idb2")
    assert src.labels == ["ALL_blast", "ALL_blast", "normal", "normal"]


def test_toml_spec_is_explained(tmp_path):
    with pytest.raises(DeepfeatError, match=r"is a dataset manifest; pass the data root"):
        open_source(REPO_MANIFESTS / "pbc_2020.toml")


def test_check_counts(tmp_path):
    src = ImageSource(["a"] * 3, labels=["ALL_blast", "normal", "other"])
    problems = check_counts(src, "all_idb2")
    assert problems == ["class 'ALL_blast': expected 130 images, found 1",
                        "class 'normal': expected 130 images, found 1",
                        "class 'other': 1 images, but all_idb2 has no such class"]
    assert "unlabelled" in check_counts(ImageSource(["a"]), "all_idb2")[0]


# ---------------------------------------------------------------- real data (skipped without ../shared)


@pytest.mark.realdata
def test_real_pbc_sample(pbc_dir):
    src = open_source(pbc_dir)
    assert len(src) == 1607 and len(src.class_names) == 8
    assert src.class_names == list(load_manifest("pbc_2020").class_names)
    assert all(os.path.isfile(p) for p in src.paths[:5])
    with pytest.warns(UserWarning, match="class counts differ"):
        open_source(pbc_dir, manifest="pbc_2020")  # a sample, not the published 17,092


@pytest.mark.realdata
def test_real_all_idb2_small(all_idb2_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = open_source(all_idb2_dir)
    assert src.class_counts == {"ALL_blast": 130, "normal": 130}
    assert check_counts(src, "all_idb2") == []
    with pytest.raises(DeepfeatError, match="do not match the file-name patterns of dataset manifest all_idb2"):
        open_source(all_idb2_dir, manifest="all_idb2")  # the re-encoding renamed the files


def test_csv_groups_win_over_manifest_rules(tmp_path):
    _img(tmp_path / "UID_5_1_1_all.bmp")
    (tmp_path / "l.csv").write_text("path,label,group\nUID_5_1_1_all.bmp,ALL,mine\n")
    with pytest.warns(UserWarning, match="class counts differ"):
        src = open_source(tmp_path / "l.csv", manifest="c_nmc_2019")
    assert src.groups == ["mine"]
    with pytest.warns(UserWarning, match="class counts differ"):
        assert open_source([tmp_path / "UID_5_1_1_all.bmp"], manifest="c_nmc_2019").groups == ["P5"]


def test_manifests_inside_an_installed_wheel_are_found(tmp_path, monkeypatch):
    # a wheel carries data_manifests/ as deepfeat/data_manifests/; simulate one without the checkout folder
    (tmp_path / "wheel_only.toml").write_text('name="wheel_only"\ncitation="c"\nlicense="l"\nurl="u"\nclass_names=["a"]\n')
    monkeypatch.setattr(manifests_mod, "_PACKAGED_MANIFESTS", tmp_path)
    monkeypatch.setattr(manifests_mod, "_REPO_MANIFESTS", tmp_path / "absent")
    assert list_manifests() == ["wheel_only"]


def test_manifest_name_as_spec_is_explained():
    with pytest.raises(DeepfeatError, match=r"'taleqani_all' is the name of a dataset manifest, not a folder"):
        open_source("taleqani_all")
