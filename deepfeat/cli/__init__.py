"""The ``deepfeat`` command line: one small module per command group, each command parsing its options, calling
one library function (:mod:`deepfeat.workflows`, :mod:`deepfeat.experiments`) and printing what it returns.

- :mod:`~deepfeat.cli.extract`: ``models``, ``extract``, ``fuse``
- :mod:`~deepfeat.cli.evaluate`: ``cv``, ``fit``, ``predict``
- :mod:`~deepfeat.cli.explain`: ``explain``
- :mod:`~deepfeat.cli.finetune`: ``finetune`` (its help generated from the recipes)
- :mod:`~deepfeat.cli.run`: ``run``, ``demo``
- :mod:`~deepfeat.cli.fewshot`: ``fewshot``, ``curve``
- :mod:`~deepfeat.cli.options` (parsing shared by the commands), :mod:`~deepfeat.cli.messages` (library wording ->
  option names, logging, interrupts), :mod:`~deepfeat.cli.typer_app` (the app and :func:`main`).
"""
from __future__ import annotations

from deepfeat.cli.typer_app import app, main

__all__ = ["app", "main"]
