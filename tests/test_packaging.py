import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "deepfeat").rglob("__init__.py")}
    assert on_disk | {"deepfeat.data_manifests"} == listed
    assert list((ROOT / "data_manifests").glob("*.toml")), "dataset manifests ship from data_manifests/"
