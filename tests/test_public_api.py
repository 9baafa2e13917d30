"""The public names of ``deepfeat``: each one resolves to the object of its home module, lazily."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

import deepfeat

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(deepfeat._LAZY))
def test_every_public_name_is_its_home_modules_object(name):
    assert name in deepfeat.__all__ and name in dir(deepfeat)
    assert getattr(deepfeat, name) is getattr(import_module(deepfeat._LAZY[name]), name)


def test_the_workflow_names_are_public():
    from deepfeat.data.sources import open_source
    from deepfeat.experiments import run_experiment
    from deepfeat.fewshot.curves import learning_curve
    from deepfeat.fewshot.evaluate import few_shot_evaluate
    from deepfeat.reporting import report

    assert (deepfeat.few_shot_evaluate, deepfeat.learning_curve, deepfeat.run_experiment, deepfeat.open_source) == \
        (few_shot_evaluate, learning_curve, run_experiment, open_source)
    assert deepfeat.check_report is report.check_report  # where the README of 0.2 pointed
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deepfeat.nope  # noqa: B018


def test_import_deepfeat_stays_light():
    """``import deepfeat`` imports none of its stages (the names load on first use), so torch is not loaded."""
    code = "import sys, deepfeat; print(sorted(m for m in sys.modules if m.startswith(('deepfeat.', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "['deepfeat.lazy']"  # the 30-line helper that defines the lazy names, nothing else
