"""Inputs of an extraction, torch-free: paths from any source, their sha256, the cache, failures, messages.

Shared by the torch-free front (:mod:`deepfeat.extraction.api`) and the engine (:mod:`deepfeat.extraction.engine`).
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deepfeat.errors import ImageReadError
from deepfeat.extraction.cache import FeatureCache

__all__ = ["UnreadableImagesError", "hash_all", "open_cache", "open_paths", "say"]

log = logging.getLogger("deepfeat.extraction")


class UnreadableImagesError(ImageReadError):
    """Some images could not be read; ``failures`` lists ``(path, reason)`` for every one of them.

    Raised after all readable images were computed and cached, so a rerun without the bad files is fast.
    """

    def __init__(self, failures):
        self.failures = [(str(p), str(r)) for p, r in failures]
        super().__init__(*self.failures[0])
        shown = "\n".join(f"  {p}: {r}" for p, r in self.failures[:20])
        more = f"\n  ... and {len(self.failures) - 20} more" if len(self.failures) > 20 else ""
        self.args = (f"{len(self.failures)} image(s) could not be read (the readable ones were cached):\n"
                     f"{shown}{more}\nFix or remove them, or pass on_error='skip' (CLI: without --strict).",)

    def __reduce__(self):
        return type(self), (self.failures,)


def say(message: str, progress: bool) -> None:
    """Decisions are never silent: logged on the ``deepfeat`` logger (INFO; DEBUG when ``progress`` is off).

    The CLI shows INFO lines on stderr as ``deepfeat: ...`` (not with --quiet); a Python caller sees them once it
    configures logging, e.g. ``logging.basicConfig(level=logging.INFO)``.
    """
    log.log(logging.INFO if progress else logging.DEBUG, message)


def open_paths(source, manifest=None):
    """(paths, labels, groups, name, root) from an ImageSource, a list of paths or an open_source spec (with a
    dataset ``manifest``)."""
    if hasattr(source, "paths"):
        return (list(map(str, source.paths)), getattr(source, "labels", None), getattr(source, "groups", None),
                getattr(source, "name", None), getattr(source, "root", None))
    if isinstance(source, (list, tuple, np.ndarray)) or type(source).__name__ in ("Series", "Index"):
        return [os.fspath(p) for p in np.asarray(source, dtype=object).reshape(-1)], None, None, None, None
    from deepfeat.data.sources import open_source

    return open_paths(open_source(source, manifest=manifest))


def hash_all(paths):
    """sha256 per path (None when the file cannot be read) and the failures as (index, reason)."""
    from deepfeat.data.images import sha256_file

    def one(path):
        try:
            return sha256_file(path), None
        except FileNotFoundError:
            return None, "no such file"
        except OSError as exc:
            return None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(paths)))) as pool:
        results = list(pool.map(one, paths))
    return [r[0] for r in results], [(i, r[1]) for i, r in enumerate(results) if r[1] is not None]


def open_cache(cache):
    if cache is None or cache is False:
        return None
    if cache is True:
        return FeatureCache()
    if isinstance(cache, FeatureCache):
        return cache
    return FeatureCache(cache)
