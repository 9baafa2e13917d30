"""benchmarks/gpu_check.py: without CUDA it says so and runs its CPU fallback (the same checks at toy scale)."""
import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_fallback_runs_every_check(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DEEPFEAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPFEAT_SHARED", str(tmp_path / "no-shared"))  # synthetic images: no data needed
    rc = _load().main(["--n", "8"])
    out = capsys.readouterr().out
    assert "CUDA is not available" in out and "NOT GPU benchmarks" in out
    assert "[FAIL]" not in out and rc == 0, out
    assert out.count("[PASS]") == 4  # device/precision/channels_last, features vs plain loop, loader, fine-tune
    assert "extraction: plain timm fp32 loop" in out and "fine-tuning: plain timm fp32 loop" in out
    assert "[SKIP] Dask GPU worker" in out and "all checks passed (CPU fallback)" in out


def test_cuda_branch_is_chosen_when_cuda_is_there():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA here: the CUDA branch runs on a GPU machine (python benchmarks/gpu_check.py)")
    assert _load().main(["--n", "32", "--batch", "16"]) == 0
