"""Lazy public names of a package (PEP 562): ``import deepfeat.evaluation`` stays cheap (and torch-free) and
``from deepfeat.evaluation import cross_validate`` imports only the module that defines the name.

Every stage package (and ``deepfeat`` itself) declares ``{name: defining module}`` once and gets its ``__all__``,
``__getattr__`` and ``__dir__`` from :func:`lazy_exports`, as scikit-learn's subpackages export theirs.
"""
from __future__ import annotations

from importlib import import_module

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: dict[str, str], namespace: dict, extra=()):
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public ``names`` map to their defining module;
    ``namespace`` is the package's ``globals()`` (a loaded name is cached there); ``extra`` names are already
    defined in the package and listed in ``__all__`` too."""
    public = sorted(set(names) | set(extra))

    def __getattr__(name: str):
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(public) | {k for k in namespace if not k.startswith("_")})

    return public, __getattr__, __dir__
