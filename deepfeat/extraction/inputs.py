"""Inputs and output of an extraction, torch-free: paths from any source, their sha256, the cache, failures,
messages, and the FeatureSet made of the rows.

Shared by the torch-free front (:mod:`deepfeat.extraction.api`), the engine (:mod:`deepfeat.extraction.engine`)
and the Dask driver (:mod:`deepfeat.extraction.distributed`).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from deepfeat.errors import DeepfeatError, ImageReadError
from deepfeat.extraction.cache import FeatureCache
from deepfeat.features import FeatureSet

__all__ = ["UnreadableImagesError", "feature_set_of", "hash_all", "images_by_sha", "open_cache", "open_paths",
           "say"]

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


def images_by_sha(shas) -> dict[str, list[int]]:
    """``{sha256: [indices of the paths with those bytes]}`` in first-seen order (unreadable ones left out): identical
    images are computed and cached once."""
    out: dict[str, list[int]] = {}
    for i, sha in enumerate(shas):
        if sha is not None:
            out.setdefault(sha, []).append(i)
    return out


def open_cache(cache):
    if cache is None or cache is False:
        return None
    if cache is True:
        return FeatureCache()
    if isinstance(cache, FeatureCache):
        return cache
    return FeatureCache(cache)


def feature_set_of(X, keep, listed, shas, failures, meta, *, on_error, hits, misses, cache_dir, t0, progress,
                   feature_names=None) -> FeatureSet:
    """The FeatureSet of an extraction, or the error it ends in; the one place that says what its meta records.

    ``X``: the rows of the images at indices ``keep`` (increasing) of ``listed`` (``open_paths``' tuple);
    ``failures``: sorted ``(index, reason)``, all of them an :class:`UnreadableImagesError` when ``on_error`` is
    'raise' (raised after every readable image was computed and cached), else listed in ``meta["skipped"]``.
    """
    paths, labels, groups, name, root = listed
    if failures and on_error == "raise":
        raise UnreadableImagesError([(paths[i], reason) for i, reason in failures])
    if not len(keep):
        raise DeepfeatError(f"none of the {len(paths)} images could be read; see meta['skipped']")
    pick = (lambda a: None if a is None else [a[i] for i in keep])
    meta = {**meta, "source": {"name": name, "root": None if root is None else str(root)},
            "n_images": len(keep), "n_input": len(paths), "cache_hits": hits, "cache_misses": misses,
            "cache_dir": cache_dir, "seconds": round(time.perf_counter() - t0, 3),
            "skipped": [{"path": paths[i], "reason": reason} for i, reason in failures]}
    if failures:
        say(f"{len(failures)} unreadable image(s) left out (meta['skipped'])", progress)
    return FeatureSet(X, pick(labels), pick(paths), pick(groups), pick(shas), meta, feature_names)
