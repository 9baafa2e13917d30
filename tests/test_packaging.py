import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "deepfeat").rglob("__init__.py")}
    assert on_disk | {"deepfeat.data_manifests", "deepfeat.pipelines"} == listed
    assert list((ROOT / "data_manifests").glob("*.toml")), "dataset manifests ship from data_manifests/"
    assert list((ROOT / "pipelines").glob("*.toml")), "experiment files ship from pipelines/ as deepfeat.pipelines"


def test_licence_is_spdx_and_the_name_list_ships():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    assert "timm_models.txt" in project["tool"]["setuptools"]["package-data"]["deepfeat"]
    assert (ROOT / "deepfeat" / "timm_models.txt").read_text().startswith("# timm ")
