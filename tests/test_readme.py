"""README.md as a newcomer runs it: its Python blocks verbatim, on the exported demo sample, in a fresh folder; and
every ``deepfeat`` name it uses imports from where it says.

Issue 25: the examples must run on a fresh machine from any directory, so they use ``cells`` (written by
``deepfeat demo --export cells``), never a path beside this repository. A block that cannot run here says why on
the line before it (``<!-- readme-test: skip (reason) -->``); every other block is executed, in README order, in
one namespace (a later block may use an earlier block's variables, as a reader's session would).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip \((.+)\) -->")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of every fenced ``python`` block, in order."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = next((ln for ln in reversed(lines[:start - 1]) if ln.strip()), "")
            m = SKIP.search(before)
            blocks.append((start + 1, "\n".join(body) + "\n", m.group(1) if m else None))
        i += 1
    return blocks


def test_readme_blocks_name_no_path_beside_the_repository():
    """Every example (shell and Python) runs from any folder: none points into ../shared or a placeholder."""
    fences = re.findall(r"```[a-z]*\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    offending = [f for f in fences if "../shared" in f or '"IMAGES"' in f]
    assert offending == []


def test_every_deepfeat_name_the_readme_uses_imports_from_where_it_says():
    text = README.read_text(encoding="utf-8")
    imports = (re.findall(r"^from (deepfeat[\w.]*) import ([\w, ]+)$", text, flags=re.M)  # code blocks
               + re.findall(r"`from (deepfeat[\w.]*)\s+import\s+([\w,\s]+)`", text))  # inline code
    dotted = re.findall(r"`(deepfeat(?:\.\w+)+)", text)
    stages = {m for m, _ in imports}
    assert len(imports) >= 12, imports
    assert {"deepfeat", "deepfeat.selection", "deepfeat.evaluation", "deepfeat.reporting"} <= stages
    assert len(dotted) >= 5
    for module, names in imports:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",") if n.strip()):
            assert hasattr(mod, name), f"README: from {module} import {name}"
            assert name in getattr(mod, "__all__", [name]), f"{module}.__all__ lacks {name}"
    for path in dotted:
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            break


@pytest.mark.slow
def test_readme_python_blocks_run_verbatim_on_the_exported_sample(tmp_path, monkeypatch, capsys):
    from deepfeat.data.demo_sample import export_demo_sample

    blocks = python_blocks(README.read_text(encoding="utf-8"))
    skipped = [(line, why) for line, _, why in blocks if why]
    assert len(blocks) >= 4 and all("cluster" in why for _, why in skipped), skipped
    monkeypatch.chdir(tmp_path)
    export_demo_sample("cells")  # what `deepfeat demo --export cells` writes
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for line, code, why in blocks:
        if why:
            continue
        exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102 (the README's own code)
        ran += 1
    out = capsys.readouterr().out
    assert ran == len(blocks) - len(skipped) and "held-out accuracy:" in out
    assert Path("cells.features").is_file() and namespace["both"].X.shape[0] == 320
    assert 0.0 <= namespace["res"].nested["estimate"] <= 1.0


STAGES = ("selection", "classifiers", "extraction", "evaluation", "reporting", "fewshot", "finetuning", "backbones",
          "data")


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_exports_its_public_names(stage):
    mod = importlib.import_module(f"deepfeat.{stage}")
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None
        assert name in dir(mod)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        getattr(mod, "not_a_name")


def test_top_level_names_are_the_stage_names():
    import deepfeat
    from deepfeat.evaluation import cross_validate
    from deepfeat.selection import MRMRSelector

    assert deepfeat.MRMRSelector is MRMRSelector and deepfeat.cross_validate is cross_validate
