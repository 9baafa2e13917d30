"""Batched deep-feature extraction through the on-disk feature cache: the one engine.

``extract_features(source, ...) -> FeatureSet`` (every request shape: plain, several layers, TTA; its hand-crafted
blocks need no network), the scikit-learn transformer :class:`FeatureExtractor` (image paths in, float32 features
out) and the Dask shard tasks (:mod:`deepfeat.extraction.distributed`) share one :class:`Engine`:

1. hash every image (sha256 of its bytes, in threads), 2. serve cached rows of every requested layer, 3. compute
only the images some layer misses, in batches through a DataLoader with worker processes, one forward pass per batch
(:mod:`deepfeat.extraction.forward`), writing each finished batch to the cache at once (a run killed with
``kill -9`` resumes without recomputing finished batches), 4. return rows in input order, always.

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
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from deepfeat import defaults
from deepfeat.errors import DeepfeatError, ExtractionInterrupted
from deepfeat.extraction.cache import FeatureCache, model_key
from deepfeat.extraction.device import (
    check_precision,
    model_sha256,
    resolve_device,
    resolve_precision,
)
from deepfeat.extraction.forward import forward_layers
from deepfeat.extraction.runtime import CompiledForward, available_runtime, check_runtime, runtime_obstacle
from deepfeat.extraction.inputs import (
    UnreadableImagesError,
    hash_all,
    images_by_sha,
    open_cache,
    open_paths,
    say,
)
from deepfeat.extraction.preprocessing import (
    ImageDataset,
    ImageFailure,
    build_transform,
    collate_images,
    preprocessing_config,
)
from deepfeat.provenance import package_versions

__all__ = ["Engine", "EngineRun", "FeatureExtractor", "UnreadableImagesError"]

log = logging.getLogger("deepfeat.extraction")
_PRECISION_DECISIONS: dict[str, tuple[str, str]] = {}  # auto-check outcomes of this process, by model key


def default_batch_size(device) -> int:
    """Images per forward pass when none is asked for: 32 on CUDA; 8 on the CPU, where smaller batches stay in
    cache (measured on 2 cores, channels_last, img/s at batch 8 vs 32: EfficientNet-Lite0 100 vs 68, ResNet50
    69 vs 47, DarkNet19 86 vs 81)."""
    return 32 if device.type == "cuda" else 8


def default_workers(device) -> int:
    """Decode workers when none are asked for: up to 4 on CUDA (the GPU waits for decoding); on the CPU only the
    cores torch's compute threads leave free, since workers would compete with the network for them (measured on
    2 cores: DarkNet19 68.9 img/s with 0 workers vs 44.5 img/s with 2, benchmarks/bench_extract.py --workers)."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return min(4, cores)
    return min(4, max(0, cores - torch.get_num_threads()))


@dataclass
class EngineRun:
    """What :meth:`Engine.run` gives: ``rows[layer]``, one vector (None: unreadable) per path in input order;
    ``failures``, sorted ``(index, reason)``; ``hit[layer]``, the sha256s served from the cache; ``shas``, one sha256
    (None: unreadable) per path."""

    rows: dict
    failures: list
    hit: dict
    shas: list

    def counts(self) -> tuple[int, int]:
        """``(cache hits, cache misses)`` over the paths; a hit is an image every layer of which was cached."""
        failed = {i for i, _ in self.failures}
        hits = sum(1 for i, s in enumerate(self.shas) if s is not None and i not in failed
                   and all(s in hit for hit in self.hit.values()))
        return hits, len(self.shas) - hits - len(self.failures)


class Engine:
    """One built model and everything that names its features: the one extraction engine.

    Every request runs here, whatever its shape: a plain request is a one-block request (``layers=["logits"]``,
    ``tta="none"``), a fused one gives several layers of the model from one forward pass
    (:func:`deepfeat.extraction.forward.forward_layers`), optionally averaged over TTA views. Used by
    :func:`~deepfeat.extraction.api.extract_features`, :class:`FeatureExtractor` and the Dask shard tasks.
    """

    def __init__(self, *, model, weights, layers, tta="none", device, precision, channels_last, crop_border,
                 image_size, batch_size, num_workers, cache, progress, runtime=defaults.RUNTIME):
        from deepfeat.backbones import create_backbone, resolve_data_config

        self.progress, self.layers, self.tta = progress, list(layers), tta
        self.device, device_reason = resolve_device(device)
        self.batch_size = default_batch_size(self.device) if batch_size is None else int(batch_size)
        say(device_reason, progress)
        net = model if isinstance(model, torch.nn.Module) else create_backbone(model, weights)
        net.eval()
        self.info = dict(getattr(net, "deepfeat_info", None) or {})
        self.backbone = self.info.get("backbone") or (model if isinstance(model, str) else type(net).__name__)
        self._check_stages(net)
        if "logits" in self.layers and self.info.get("head_untrained"):  # a hybrid's new fused head
            warnings.warn(f"{self.backbone}: the 1000 'logits' of this network come from an untrained head (only "
                          "its members have ImageNet weights); use layer='pooled' for its ImageNet features, or "
                          "fine-tune it first", UserWarning, stacklevel=2)
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
        self.cache = open_cache(cache)
        self.num_workers = default_workers(self.device) if num_workers is None else int(num_workers)
        self.requested_precision = precision
        self.precision = None  # decided on the first run (may need images to check)
        self.precision_settled = False  # False while the decision could still change with other images
        self.built_here = not isinstance(model, torch.nn.Module)
        self.requested_runtime, self.runtime, self.runtime_reason = runtime, None, None
        if runtime == "torch":
            self.runtime, self.runtime_reason = "torch", "runtime: torch (requested)"
        self.compiled = None  # a CompiledForward once settle_runtime kept one
        available_runtime(runtime)  # an unknown or missing runtime fails here, before any image is read

    def _check_stages(self, net):
        stages = [int(layer[5:]) for layer in self.layers if layer.startswith("stage")]
        if stages:
            n = len(getattr(net, "feature_info", None) or [])
            if not hasattr(net, "forward_intermediates") or n == 0:
                raise DeepfeatError(f"layer 'stage{stages[0]}': model {self.backbone!r} has no timm "
                                    "forward_intermediates / feature_info; use logits or pooled")
            if max(stages) > n:
                raise DeepfeatError(f"layer 'stage{max(stages)}': model {self.backbone!r} has stages 1..{n}")

    def key(self, layer=None, precision=None):
        """The cache key of ``layer`` (default: the first) at ``precision`` (default: the decided one) and this
        engine's TTA; a plain request's key is release 0.1's."""
        return model_key(backbone=self.backbone, weights_id=self.model_sha256, layer=layer or self.layers[0],
                         preprocessing=self.preprocessing, precision=precision or self.precision, tta=self.tta)

    def forward(self, x, precision, tta="none") -> dict:
        """``{layer: (B, d) float32 ndarray}`` of the preprocessed batch ``x``: the engine's one forward pass."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = self.compiled if precision == "fp32" else None
        return forward_layers(self.net, x, self.layers, precision, self.device, tta, compiled)

    def settle_runtime(self, probe, n_images: int) -> None:
        """Choose eager torch or a compiled runtime (:mod:`deepfeat.extraction.runtime`) on the first real batch
        ``probe``, before any of its features is kept; ``n_images``: how many images this run computes."""
        if self.runtime is not None:
            return
        name, requested = available_runtime(self.requested_runtime), self.requested_runtime
        why = runtime_obstacle(self, n_images)
        if name is None or why:
            if requested not in ("auto", "torch"):
                raise DeepfeatError(f"runtime={requested!r}: {why}; use runtime='auto' or 'torch'")
            self.runtime = "torch"
            self.runtime_reason = ("runtime: torch (requested)" if requested == "torch" else
                                   f"runtime: auto -> torch ({why or 'neither openvino nor onnxruntime is installed'})")
        else:
            compiled = CompiledForward(self.net, self.layers, self.data_config["input_size"], name)
            probe = probe[:8]
            keep, reason = check_runtime(compiled, lambda x: {k: torch.from_numpy(v) for k, v in
                                                              self.forward(x, "fp32").items()}, probe)
            self.runtime, self.runtime_reason = (name if keep else "torch"), reason
            self.compiled = compiled if keep else None
        say(self.runtime_reason, self.progress)

    def decide_precision(self, paths):
        """Settle 'auto' precision before the cache lookup (precision is part of the cache key)."""
        if self.precision is not None:
            return
        self.precision, reason, needs_check = resolve_precision(self.requested_precision, self.device)
        if needs_check:
            # The check costs two forward passes; its outcome is remembered in the cache per model + input.
            memo_key = model_key(backbone=self.backbone, weights_id=self.model_sha256, layer=self.layers[0],
                                 preprocessing=self.preprocessing, precision="auto-check")
            memo = self.cache.read_note(memo_key, "precision.json") if self.cache else None
            if memo_key in _PRECISION_DECISIONS:
                self.precision, reason = _PRECISION_DECISIONS[memo_key]
            elif memo and memo.get("candidate") == self.precision:
                self.precision, reason = memo["precision"], memo["reason"] + " (remembered)"
            else:
                probe = self._probe(paths)
                if probe is None:
                    self.precision, reason = "fp32", "precision: auto -> fp32 (no readable image to check bf16 on)"
                    self.precision_reason = reason
                    say(reason, self.progress)
                    return  # not settled: other images could be checked
                candidate = self.precision
                # the first layer without TTA is what the check compares
                self.precision, reason, cos = check_precision(lambda x, p: self.forward(x, p)[self.layers[0]],
                                                              probe, candidate)
                _PRECISION_DECISIONS[memo_key] = (self.precision, reason + " (remembered)")
                if self.cache:
                    self.cache.write_note(memo_key, "precision.json", {
                        "candidate": candidate, "precision": self.precision, "reason": reason,
                        "min_cosine": cos}, overwrite=True)
        self.precision_reason = reason
        self.precision_settled = True
        say(reason, self.progress)

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

    def run(self, paths, hashed=None) -> EngineRun:
        """Every layer's rows for ``paths``, in order, through the cache (see :class:`EngineRun`).

        ``hashed``: ``(sha256s, failures)`` of ``paths`` when the caller already hashed them. An image is computed
        when any layer misses it; a layer's cached rows are kept (not rewritten). Unreadable images never stop the
        others: they are listed in ``failures`` (the caller decides whether that is an error).
        """
        shas, failures = hashed if hashed is not None else hash_all(paths)
        failures = list(failures)
        self.decide_precision([p for p, s in zip(paths, shas) if s is not None])
        by_sha = images_by_sha(shas)
        rows, hit, missing = self._cached(len(paths), by_sha)
        todo = [s for s in by_sha if any(s in missing[layer] for layer in self.layers)]
        try:
            failures += self._compute(todo, [paths[by_sha[s][0]] for s in todo], by_sha, rows, missing)
        except KeyboardInterrupt:  # SIGINT (and SIGTERM under the CLI): every finished batch is in the cache
            done = sum(all(rows[layer][i] is not None for layer in self.layers) for i in range(len(paths)))
            raise ExtractionInterrupted(done, len(paths), self.cache is not None) from None
        failures.sort()
        for layer in self.layers:
            if len({r.shape for r in rows[layer] if r is not None}) > 1:
                raise DeepfeatError(f"the feature cache {self.cache.root} holds vectors of different lengths for "
                                    f"{self.backbone} {layer}; clear it (FeatureCache(root).clear()) and extract again")
        return EngineRun(rows, failures, hit, shas)

    def _cached(self, n, by_sha):
        """Rows per layer (cached ones filled in), the cached sha256 set and the missing set of every layer."""
        unique = list(by_sha)
        rows = {layer: [None] * n for layer in self.layers}
        hit, missing = {}, {}
        for layer in self.layers:
            got = self.cache.get_many(self.key(layer), unique) if self.cache else [None] * len(unique)
            hit[layer] = {s for s, r in zip(unique, got) if r is not None}
            missing[layer] = set(unique) - hit[layer]
            for sha, row in zip(unique, got):
                if row is not None:
                    for i in by_sha[sha]:
                        rows[layer][i] = row
            if self.cache and missing[layer]:
                note = {"backbone": self.backbone, "weights": self.model_sha256, "layer": layer,
                        "preprocessing": self.preprocessing, "precision": self.precision}
                if self.tta != "none":  # as in the key: a plain request's note is release 0.1's
                    note["tta"] = self.tta
                self.cache.write_note(self.key(layer), "config.json", note)
        return rows, hit, missing

    def _loader(self, paths):
        """Batches of preprocessed images (decoding in worker processes only when there is more than one batch)."""
        workers = min(self.num_workers, -(-len(paths) // self.batch_size))
        return torch.utils.data.DataLoader(
            ImageDataset(paths, self.transform), batch_size=self.batch_size, shuffle=False,
            num_workers=workers, collate_fn=collate_images, pin_memory=self.device.type == "cuda")

    def _compute(self, todo, todo_paths, by_sha, rows, missing):
        if not todo:
            return []
        from tqdm.auto import tqdm

        failures = []
        desc = f"{self.backbone} {','.join(self.layers)}" + ("" if self.tta == "none" else f" tta={self.tta}")
        # a resumed run's bar starts at the images already cached: it shows done / total
        bar = tqdm(total=len(by_sha), initial=len(by_sha) - len(todo), unit="img", desc=desc,
                   disable=not self.progress, file=sys.stderr)
        with bar:
            for x, idx, bad in self._loader(todo_paths):
                failures += [(i, f.reason) for j, f in bad for i in by_sha[todo[j]]]
                if x is not None:
                    self.settle_runtime(x, len(todo))
                    done = [todo[j] for j in idx.tolist()]
                    for layer, feats in self.forward(x, self.precision, self.tta).items():
                        new = [k for k, sha in enumerate(done) if sha in missing[layer]]
                        if self.cache and new:  # at once: an interrupted run keeps this batch
                            self.cache.put_many(self.key(layer), [done[k] for k in new], feats[new])
                        for k in new:
                            for i in by_sha[done[k]]:
                                rows[layer][i] = feats[k]
                bar.update(len(idx) + len(bad))
        return failures

    def meta(self, layer=None) -> dict:
        """The FeatureSet meta of ``layer`` (default: the first) alone: release 0.1's, plus ``tta`` when not 'none'."""
        meta = {
            "backbone": self.backbone, "weights": self.info.get("weights"),
            "weights_source": self.info.get("weights_source"), "weights_sha256": self.info.get("weights_sha256"),
            "model_sha256": self.model_sha256, "layer": layer or self.layers[0],
            "input_size": list(self.data_config["input_size"]), "preprocessing": self.preprocessing,
            "device": str(self.device), "precision": self.precision, "precision_reason": self.precision_reason,
            "channels_last": self.channels_last, "runtime": self.runtime or "torch",
            "runtime_reason": self.runtime_reason or "runtime: nothing computed (every row was cached)",
            "batch_size": self.batch_size, "num_workers": self.num_workers,
            "versions": package_versions(("deepfeat", "torch", "timm", "numpy"), python=False),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        ckpt = self.info.get("checkpoint")
        if ckpt:
            meta["finetune"] = {"checkpoint_sha256": self.info.get("weights_sha256"),
                                "train_sha256": list(ckpt.get("train_sha256") or []),
                                "val_sha256": list(ckpt.get("val_sha256") or []),
                                "class_names": list(ckpt.get("class_names") or [])}
        if self.tta != "none":
            meta["tta"] = self.tta
        return meta


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: image paths in, deep features (float32, one row per path, in order) out.

    Same parameters as :func:`extract_features`, except ``on_error`` in {'raise', 'nan'} ('nan' gives a row of
    NaN for an unreadable image, since a transformer must keep one row per input). ``fit`` only validates; the
    network is built on the first ``transform`` and is not pickled (joblib files stay small and CUDA-free).

    Examples
    --------
    >>> import tempfile
    >>> from deepfeat.data.synthetic import make_synthetic_smears
    >>> cells = make_synthetic_smears(tempfile.mkdtemp(), n_per_class=2, size=48, seed=0)
    >>> fx = FeatureExtractor("test_efficientnet", weights="none", layer="pooled", image_size=48, cache=False,
    ...                       progress=False)
    >>> fx.fit_transform(cells.paths[:3]).shape
    (3, 256)
    """

    _parameter_constraints = {
        "model": [str, torch.nn.Module], "weights": [str, os.PathLike],
        "layer": [StrOptions(set(defaults.LAYERS))], "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str], "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "cache": ["boolean", str, os.PathLike, FeatureCache, None],
        "precision": [StrOptions(set(defaults.PRECISIONS))],
        "channels_last": [StrOptions({"auto"}), "boolean"], "crop_border": ["boolean"],
        "image_size": [Interval(Integral, 8, None, closed="left"), None],
        "on_error": [StrOptions({"raise", "nan"})], "progress": ["boolean"],
        "runtime": [StrOptions(set(defaults.RUNTIMES))],
    }

    def __init__(self, model=defaults.MODEL, *, weights=defaults.WEIGHTS, layer=defaults.LAYER, batch_size=None,
                 device=defaults.DEVICE, num_workers=None, cache=True, precision=defaults.PRECISION, channels_last="auto",
                 crop_border=False, image_size=None, on_error="raise", progress=True,
                 runtime=defaults.RUNTIME):
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
        self.runtime = runtime

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
            self._engine = Engine(layers=[params["layer"]], **{k: v for k, v in params.items()
                                                               if k not in ("on_error", "layer")})
            self._engine_params = params
        return self._engine

    def transform(self, X):
        """Features of the images at paths ``X`` (sequence of paths, or a one-column array/DataFrame)."""
        paths = open_paths(np.asarray(X, dtype=object).reshape(-1) if not hasattr(X, "paths") else X)[0]
        engine = self._get_engine()
        run = engine.run(paths)
        rows, failures = run.rows[self.layer], run.failures
        if failures and self.on_error == "raise":
            raise UnreadableImagesError([(paths[i], reason) for i, reason in failures])
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
