"""The house is enforced: import-linter's contracts in pyproject.toml hold, and they do catch a violation."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("selection/mrmr.py", "import torch", "do not import torch"),
    ("extraction/cache.py", "from deepfeat import cli", "Nothing imports the CLI"),
    ("features.py", "from deepfeat.extraction import cache", "Stages import downwards only"),
    ("reporting/report.py", "import distributed", "Only the two doors know about a cluster"),
])
def test_a_violation_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "deepfeat", tmp_path / "deepfeat", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "deepfeat" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
