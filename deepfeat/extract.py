"""Batched deep-feature extraction through the on-disk feature cache.

``extract_features(source, ...) -> FeatureSet`` and the scikit-learn transformer :class:`FeatureExtractor`
(image paths in, float32 features out) share one engine:

1. hash every image (sha256 of its bytes, in threads), 2. serve cached rows, 3. compute only the missing ones
in batches through a DataLoader with worker processes, writing each finished batch to the cache at once (a run
killed with ``kill -9`` resumes without recomputing finished batches), 4. return rows in input order, always.

Identical images (same bytes) are computed once. Unreadable images never stop the other images: with
``on_error="raise"`` (default) every good image is computed and cached first, then one
:class:`UnreadableImagesError` lists all bad files; with ``on_error="skip"`` they are left out of the FeatureSet
and listed in ``meta["skipped"]`` (``FeatureExtractor`` offers ``on_error="nan"`` instead, since a transformer
must return one row per input).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from deepfeat.cache import FeatureCache, model_key
from deepfeat.errors import DeepfeatError, ImageReadError
from deepfeat.features import FeatureSet
from deepfeat.runtime import check_precision, forward_features_of, model_sha256, resolve_device, resolve_precision
from deepfeat.transforms import ImageDataset, ImageFailure, build_transform, collate_images, preprocessing_config

__all__ = ["FeatureExtractor", "UnreadableImagesError", "extract_features"]

log = logging.getLogger("deepfeat.extract")
_PRECISION_DECISIONS: dict[str, tuple[str, str]] = {}  # auto-check outcomes of this process, by model key
_LAYERS = ("logits", "pooled")


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


def _say(message: str, progress: bool) -> None:
    """Decisions are never silent: logged always, and shown on stderr when progress output is on."""
    log.info(message)
    if progress:
        print(f"deepfeat: {message}", file=sys.stderr, flush=True)


def _open(source):
    """(paths, labels, groups, name, root) from an ImageSource, a list of paths or an open_source spec."""
    if hasattr(source, "paths"):
        return (list(map(str, source.paths)), getattr(source, "labels", None), getattr(source, "groups", None),
                getattr(source, "name", None), getattr(source, "root", None))
    if isinstance(source, (list, tuple, np.ndarray)) or type(source).__name__ in ("Series", "Index"):
        return [os.fspath(p) for p in np.asarray(source, dtype=object).reshape(-1)], None, None, None, None
    from deepfeat.data.sources import open_source

    return _open(open_source(source))


def _hash_all(paths):
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


def _open_cache(cache):
    if cache is None or cache is False:
        return None
    if cache is True:
        return FeatureCache()
    if isinstance(cache, FeatureCache):
        return cache
    return FeatureCache(cache)


class _Engine:
    """A built model plus everything that names its features (device, precision, preprocessing, cache key)."""

    def __init__(self, *, model, weights, layer, device, precision, channels_last, crop_border, image_size,
                 batch_size, num_workers, cache, progress):
        from deepfeat.backbones import create_backbone, resolve_data_config

        self.progress, self.batch_size, self.layer = progress, batch_size, layer
        self.device, device_reason = resolve_device(device)
        _say(device_reason, progress)
        net = model if isinstance(model, torch.nn.Module) else create_backbone(model, weights)
        net.eval()
        self.info = dict(getattr(net, "deepfeat_info", None) or {})
        self.backbone = self.info.get("backbone") or (model if isinstance(model, str) else type(net).__name__)
        self.data_config = dict(resolve_data_config(net))
        if image_size is not None:
            self.data_config["input_size"] = (3, int(image_size), int(image_size))
        self.preprocessing = preprocessing_config(self.data_config, crop_border=crop_border)
        self.transform = build_transform(self.data_config, crop_border=crop_border)
        # The identity of what actually runs: a hash of the parameters and buffers, so random weights, files and
        # fine-tuned checkpoints can never share cache entries by accident.
        self.model_sha256 = model_sha256(net)
        self.channels_last = channels_last in ("auto", True, "on")
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.cache = _open_cache(cache)
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        self.requested_precision = precision
        self.precision = None  # decided on the first run (may need images to check)

    def _key(self, precision):
        return model_key(backbone=self.backbone, weights_id=self.model_sha256, layer=self.layer,
                         preprocessing=self.preprocessing, precision=precision)

    def forward(self, x, precision):
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_features_of(self.net, x, self.layer, precision, self.device)

    def _decide_precision(self, paths):
        """Settle 'auto' precision before the cache lookup (precision is part of the cache key)."""
        if self.precision is not None:
            return
        self.precision, reason, needs_check = resolve_precision(self.requested_precision, self.device)
        if needs_check:
            # The check costs two forward passes; its outcome is remembered in the cache per model + input.
            memo_key = self._key("auto-check")
            memo = self.cache.read_note(memo_key, "precision.json") if self.cache else None
            if memo_key in _PRECISION_DECISIONS:
                self.precision, reason = _PRECISION_DECISIONS[memo_key]
            elif memo and memo.get("candidate") == self.precision:
                self.precision, reason = memo["precision"], memo["reason"] + " (remembered)"
            else:
                probe = self._probe(paths)
                if probe is None:
                    self.precision, reason = "fp32", "precision: auto -> fp32 (no readable image to check bf16 on)"
                else:
                    candidate = self.precision
                    self.precision, reason, cos = check_precision(self.forward, probe, candidate)
                    _PRECISION_DECISIONS[memo_key] = (self.precision, reason + " (remembered)")
                    if self.cache:
                        self.cache.write_note(memo_key, "precision.json", {
                            "candidate": candidate, "precision": self.precision, "reason": reason,
                            "min_cosine": cos}, overwrite=True)
        self.precision_reason = reason
        _say(reason, self.progress)

    def _probe(self, paths, n=8):
        """Up to ``n`` preprocessed images (the first readable ones) for the precision check."""
        dataset, batch = ImageDataset(paths[: 4 * n], self.transform), []
        for i in range(len(dataset)):
            x, _ = dataset[i]
            if not isinstance(x, ImageFailure):
                batch.append(x)
            if len(batch) == n:
                break
        return torch.stack(batch) if batch else None

    def run(self, paths, on_error):
        """Features for ``paths`` in order: (rows: list of array or None, failures, hits, misses, sha256s)."""
        shas, failures = _hash_all(paths)
        self._decide_precision([p for p, s in zip(paths, shas) if s is not None])
        key = self._key(self.precision)
        rows: list = [None] * len(paths)
        by_sha: dict[str, list[int]] = {}
        for i, sha in enumerate(shas):
            if sha is not None:
                by_sha.setdefault(sha, []).append(i)
        unique = list(by_sha)
        cached = self.cache.get_many(key, unique) if self.cache else [None] * len(unique)
        todo = [sha for sha, row in zip(unique, cached) if row is None]
        for sha, row in zip(unique, cached):
            if row is not None:
                for i in by_sha[sha]:
                    rows[i] = row
        hits = sum(len(by_sha[s]) for s, r in zip(unique, cached) if r is not None)
        if self.cache and todo:
            self.cache.write_note(key, "config.json", {"backbone": self.backbone, "weights": self.model_sha256,
                                      "layer": self.layer, "preprocessing": self.preprocessing,
                                      "precision": self.precision})
        failures += self._compute(todo, [paths[by_sha[s][0]] for s in todo], by_sha, rows, key)
        failures.sort()
        if len({r.shape for r in rows if r is not None}) > 1:
            raise DeepfeatError(f"the feature cache {self.cache.root} holds vectors of different lengths for one "
                                "model; clear it (FeatureCache(root).clear()) and extract again")
        if failures and on_error == "raise":
            raise UnreadableImagesError([(paths[i], reason) for i, reason in failures])
        return rows, failures, hits, len(paths) - hits - len(failures), shas

    def _compute(self, todo, todo_paths, by_sha, rows, key):
        if not todo:
            return []
        from tqdm.auto import tqdm

        workers = min(self.num_workers, -(-len(todo) // self.batch_size))
        loader = torch.utils.data.DataLoader(
            ImageDataset(todo_paths, self.transform), batch_size=self.batch_size, shuffle=False,
            num_workers=workers, collate_fn=collate_images, pin_memory=self.device.type == "cuda")
        failures = []
        bar = tqdm(total=len(todo), unit="img", desc=f"{self.backbone} {self.layer}", disable=not self.progress,
                   file=sys.stderr)
        with bar:
            for x, idx, bad in loader:
                failures += [(i, f.reason) for j, f in bad for i in by_sha[todo[j]]]
                if x is not None:
                    out = self.forward(x, self.precision)
                    done = [todo[j] for j in idx.tolist()]
                    if self.cache:
                        self.cache.put_many(key, done, out)  # at once: an interrupted run keeps this batch
                    for sha, row in zip(done, out):
                        for i in by_sha[sha]:
                            rows[i] = row
                bar.update(len(idx) + len(bad))
        return failures

    def meta(self):
        import timm

        from deepfeat import __version__

        meta = {
            "backbone": self.backbone, "weights": self.info.get("weights"),
            "weights_source": self.info.get("weights_source"), "weights_sha256": self.info.get("weights_sha256"),
            "model_sha256": self.model_sha256, "layer": self.layer,
            "input_size": list(self.data_config["input_size"]), "preprocessing": self.preprocessing,
            "device": str(self.device), "precision": self.precision, "precision_reason": self.precision_reason,
            "channels_last": self.channels_last,
            "versions": {"deepfeat": __version__, "torch": torch.__version__, "timm": timm.__version__,
                         "numpy": np.__version__},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        ckpt = self.info.get("checkpoint")
        if ckpt:
            meta["finetune"] = {"checkpoint_sha256": self.info.get("weights_sha256"),
                                "train_sha256": list(ckpt.get("train_sha256") or []),
                                "val_sha256": list(ckpt.get("val_sha256") or []),
                                "class_names": list(ckpt.get("class_names") or [])}
        return meta


def _check_params(layer, precision, channels_last, on_error, allowed_on_error, batch_size):
    for name, value, allowed in (("layer", layer, _LAYERS), ("precision", precision, ("auto", "fp32", "bf16", "fp16")),
                                 ("on_error", on_error, allowed_on_error)):
        if value not in allowed:
            raise DeepfeatError(f"The '{name}' parameter must be one of {list(allowed)}. Got {value!r} instead.")
    if channels_last not in ("auto", True, False, "on", "off"):
        raise DeepfeatError(f"The 'channels_last' parameter must be 'auto', True or False. Got {channels_last!r}.")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise DeepfeatError(f"The 'batch_size' parameter must be an int >= 1. Got {batch_size!r} instead.")


def extract_features(source, *, model="tf_efficientnet_lite0", weights="imagenet", layer="logits", batch_size=32,
                     device="auto", num_workers=None, cache=True, precision="auto", channels_last="auto",
                     crop_border=False, image_size=None, on_error="raise", progress=True) -> FeatureSet:
    """Deep features of every image in ``source``, through the on-disk cache.

    Parameters
    ----------
    source : ImageSource, str, path or list of paths
        An ``ImageSource`` (labels and groups are kept), anything ``deepfeat.data.sources.open_source``
        accepts, or a list of image paths (unlabelled).
    model : str or torch.nn.Module, default 'tf_efficientnet_lite0'
        A backbone name for ``deepfeat.backbones.create_backbone`` or a built model (e.g. just fine-tuned; it is
        put in eval mode and moved to the device and memory format in place).
    weights : str, default 'imagenet'
        'imagenet', a weights file / fine-tune checkpoint, or 'none' (random). Ignored for a built model.
    layer : {'logits', 'pooled'}, default 'logits'
        'logits' = ``model(x)`` (1000-d for ImageNet models, as in the study); 'pooled' =
        ``forward_head(forward_features(x), pre_logits=True)``.
    batch_size : int, default 32
    device : str, default 'auto'
        'auto' (CUDA when present, else CPU; says which), 'cpu', 'cuda' or 'cuda:N' (an error when absent).
    num_workers : int, optional
        DataLoader worker processes for decoding; default ``min(4, cpu count)``.
    cache : bool, path or FeatureCache, default True
        True = the default cache (``$DEEPFEAT_CACHE_DIR`` or ``~/.cache/deepfeat``); a path = that cache root;
        False = compute everything and store nothing.
    precision : {'auto', 'fp32', 'bf16', 'fp16'}, default 'auto'
        'auto': on CUDA autocast bf16 (fp16 where bf16 is unsupported); on CPU bf16 only where the CPU does bf16
        natively and its features keep cosine similarity >= 0.999 to fp32 on a first batch, else fp32. The choice
        and its reason are printed and kept in ``meta``. Precision is part of the cache key.
    channels_last : 'auto', bool, default 'auto'
        'auto' = channels_last memory format (faster for convolutions on CUDA and on oneDNN CPUs).
    crop_border : bool, default False
        Crop the dark border of C-NMC-style images first.
    image_size : int, optional
        Override the network input size (square).
    on_error : {'raise', 'skip'}, default 'raise'
        What to do about unreadable images, after every readable one was computed and cached.
    progress : bool, default True
        Progress bar (images/s) and decision lines on stderr.

    Returns
    -------
    FeatureSet
        Rows in input order; ``meta`` holds backbone, weights identity, layer, preprocessing, device, precision,
        versions, cache hits/misses, skipped files and, for a fine-tuned backbone, ``meta["finetune"]``.

    Raises
    ------
    UnreadableImagesError
        (an ``ImageReadError``) when ``on_error='raise'`` and some images could not be read.
    """
    t0 = time.perf_counter()
    _check_params(layer, precision, channels_last, on_error, ("raise", "skip"), batch_size)
    paths, labels, groups, name, root = _open(source)
    if not paths:
        raise DeepfeatError(f"no images to extract features from in {source!r}")
    engine = _Engine(model=model, weights=weights, layer=layer, device=device, precision=precision,
                     channels_last=channels_last, crop_border=crop_border, image_size=image_size,
                     batch_size=batch_size, num_workers=num_workers, cache=cache, progress=progress)
    rows, failures, hits, misses, shas = engine.run(paths, on_error)
    keep = np.asarray([r is not None for r in rows])
    if not keep.any():
        raise DeepfeatError(f"none of the {len(paths)} images could be read; see meta['skipped']")
    pick = (lambda a: None if a is None else [v for v, k in zip(a, keep) if k])
    meta = {**engine.meta(), "source": {"name": name, "root": None if root is None else str(root)},
            "n_images": int(keep.sum()), "n_input": len(paths), "cache_hits": hits, "cache_misses": misses,
            "cache_dir": str(engine.cache.root) if engine.cache else None, "seconds": round(time.perf_counter() - t0, 3),
            "skipped": [{"path": paths[i], "reason": reason} for i, reason in failures]}
    if failures:
        _say(f"{len(failures)} unreadable image(s) left out (meta['skipped'])", progress)
    return FeatureSet(np.stack([r for r in rows if r is not None]), pick(labels), pick(paths), pick(groups),
                      pick(shas), meta)


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: image paths in, deep features (float32, one row per path, in order) out.

    Same parameters as :func:`extract_features`, except ``on_error`` in {'raise', 'nan'} ('nan' gives a row of
    NaN for an unreadable image, since a transformer must keep one row per input). ``fit`` only validates; the
    network is built on the first ``transform`` and is not pickled (joblib files stay small and CUDA-free).

    Examples
    --------
    >>> fx = FeatureExtractor("resnet50", weights="none", layer="pooled")      # doctest: +SKIP
    >>> X = fx.fit_transform(["a.jpg", "b.jpg"])                                # doctest: +SKIP
    """

    _parameter_constraints = {
        "model": [str, torch.nn.Module], "weights": [str, os.PathLike],
        "layer": [StrOptions(set(_LAYERS))], "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str], "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "cache": ["boolean", str, os.PathLike, FeatureCache, None],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "channels_last": [StrOptions({"auto"}), "boolean"], "crop_border": ["boolean"],
        "image_size": [Interval(Integral, 8, None, closed="left"), None],
        "on_error": [StrOptions({"raise", "nan"})], "progress": ["boolean"],
    }

    def __init__(self, model="tf_efficientnet_lite0", *, weights="imagenet", layer="logits", batch_size=32,
                 device="auto", num_workers=None, cache=True, precision="auto", channels_last="auto",
                 crop_border=False, image_size=None, on_error="raise", progress=True):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.cache = cache
        self.precision = precision
        self.channels_last = channels_last
        self.crop_border = crop_border
        self.image_size = image_size
        self.on_error = on_error
        self.progress = progress

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_engine", None)  # the network: rebuilt lazily after unpickling
        return state

    def fit(self, X=None, y=None):
        """Validate the parameters; nothing is learned (the network is pretrained)."""
        self._validate_params()
        return self

    def _get_engine(self):
        params = self.get_params(deep=False)
        engine = getattr(self, "_engine", None)
        if engine is None or self._engine_params != params:
            self._validate_params()
            self._engine = _Engine(**{k: v for k, v in params.items() if k != "on_error"})
            self._engine_params = params
        return self._engine

    def transform(self, X):
        """Features of the images at paths ``X`` (sequence of paths, or a one-column array/DataFrame)."""
        paths = _open(np.asarray(X, dtype=object).reshape(-1) if not hasattr(X, "paths") else X)[0]
        engine = self._get_engine()
        rows, failures, *_ = engine.run(paths, "raise" if self.on_error == "raise" else "skip")
        d = next(r.shape[0] for r in rows if r is not None) if len(failures) < len(rows) else 0
        out = np.full((len(paths), d), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            if row is not None:
                out[i] = row
        if failures:
            import warnings

            warnings.warn(f"{len(failures)} unreadable image(s) gave NaN rows: {[paths[i] for i, _ in failures]}",
                          RuntimeWarning, stacklevel=2)
        return out
