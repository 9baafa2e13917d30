"""What wrote a file: the versions of the packages behind a result, from their installed metadata.

One function for FeatureSets, cache request notes, fine-tuning checkpoints, model files and report folders, so
they all record versions the same way. It reads ``importlib.metadata`` and imports nothing, so the torch-free
extraction front can use it; versions are the distributions' own (``2.14.1``, without a local build tag such as
``+cu130``; the CUDA build of a run is recorded as the device it used).
"""
from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("deepfeat", "torch", "torchvision", "timm", "numpy", "scikit-learn", "scipy", "pandas", "pillow",
            "joblib", "mrmr-selection")


def package_versions(packages=PACKAGES, *, python: bool = True) -> dict:
    """``{package: version or None}`` for ``packages`` (+ ``"python"`` when ``python``).

    Examples
    --------
    >>> v = package_versions(("numpy", "no-such-package"), python=False)
    >>> sorted(v), v["no-such-package"]
    (['no-such-package', 'numpy'], None)
    """
    out: dict = {}
    for name in packages:
        if name == "deepfeat":
            from deepfeat import (
                __version__,  # the package's own (also when run from a source tree)
            )

            out[name] = __version__
            continue
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if python:
        out["python"] = platform.python_version()
    return out
