"""Shared fixtures: where the real data and the Darknet reference live, and how to skip without them."""
from __future__ import annotations

import os
import shutil
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


# --- headless Chromium for the report tests (system chromium + chromedriver; skips, saying why, without them) --
_CHROMIUM = [os.environ.get("DEEPFEAT_CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser",
             shutil.which("chromium") or "", shutil.which("chromium-browser") or ""]
_DRIVER = [os.environ.get("DEEPFEAT_CHROMEDRIVER", ""), "/usr/bin/chromedriver", shutil.which("chromedriver") or ""]


def _first(candidates):
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install "
                                                                  "'deepfeat[test]')")
    binary, driver = _first(_CHROMIUM), _first(_DRIVER)
    if binary is None or driver is None:
        pytest.skip(f"no headless browser: chromium {'found' if binary else 'missing'}, chromedriver "
                    f"{'found' if driver else 'missing'} (Debian: apt-get install chromium chromium-driver; "
                    "or set DEEPFEAT_CHROMIUM / DEEPFEAT_CHROMEDRIVER)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    drv.open_page = lambda page: _open_page(drv, page)
    yield drv
    drv.quit()


def _open_page(browser, page: Path) -> dict:
    """Load a page; return its SEVERE console entries and, for every <img>, (complete, naturalWidth, alt)."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(page.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.getAttribute('alt')]);")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return {"severe": severe, "images": images}
