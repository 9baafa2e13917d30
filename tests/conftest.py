"""Shared fixtures: where the real data and the Darknet reference live, and how to skip without them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (CI clones main with shared/ beside it); DEEPFEAT_SHARED overrides.
SHARED = Path(os.environ.get("DEEPFEAT_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
DARKNET_REF = SHARED / "reference" / "darknet"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives in ../shared, not in the project)")
    return path


@pytest.fixture(scope="session")
def pbc_dir() -> Path:
    return _need(SHARED_DATA / "pbc_sample")


@pytest.fixture(scope="session")
def all_idb2_dir() -> Path:
    return _need(SHARED_DATA / "all_idb2_small")


@pytest.fixture(scope="session")
def darknet_ref() -> Path:
    return _need(DARKNET_REF)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's cache and hub look-ups away from the user's home and the network."""
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("DEEPFEAT_CACHE_DIR", str(home / "deepfeat-cache"))
    monkeypatch.setenv("DEEPFEAT_TRUST_DIR", str(home / "trusted-models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole test module (use with ``pytestmark = pytest.mark.usefixtures(...)``).

    Tiny models gain nothing from more threads, spinning OpenMP threads crawl on a busy 2-core machine, and
    bit-identical training results need the same thread count throughout a module.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
