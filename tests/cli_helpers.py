"""Helpers shared by the command-line tests: running ``deepfeat`` in-process, writing random images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.cli import main


def run(capsys, *argv):
    """``deepfeat ARGV...`` in-process; returns ``(exit code, stdout, stderr)``. Arguments may be paths."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def random_images(folder: Path, n: int, *, size: int, seed: int = 0) -> None:
    """``n`` random RGB PNGs of ``size`` x ``size`` pixels in ``folder`` (created), named im00.png, im01.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
