"""Torch-free front of feature extraction: :func:`extract_features`, :func:`check_request`, :func:`save_features`.

Every request is a list of blocks (:mod:`deepfeat.extraction.blocks`): each model in the order given, its layers
in the order given. A hand-crafted model is one block computed here, without torch. A deep model's blocks are served
from their request notes when every row is cached (:mod:`deepfeat.extraction.request_notes`: no torch imported, no
network built), else computed by the one engine (:mod:`deepfeat.extraction.engine`: one forward pass per batch
gives all the model's layers), which then writes the notes. A plain request (one deep model, logits or pooled, no
TTA) is one block and gives release 0.1's FeatureSet: same cache keys, same request notes, same ``meta``, columns
``f0..``; anything else is a fused FeatureSet (columns ``<model>:<layer>:<j>``, ``meta["blocks"]``).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from deepfeat import defaults
from deepfeat.catalog import check_model_name
from deepfeat.errors import DeepfeatError
from deepfeat.extraction.blocks import (
    TTA_OPTIONS,
    Block,
    as_list,
    assemble,
    check_layers,
    handcrafted_block,
    is_fused,
)
from deepfeat.extraction.fusion import merged_finetune
from deepfeat.extraction.handcrafted import HANDCRAFTED
from deepfeat.extraction.inputs import (
    UnreadableImagesError,
    feature_set_of,
    hash_all,
    open_cache,
    open_paths,
    say,
)
from deepfeat.extraction.request_notes import (
    VERSIONED,
    request_identity,
    serve_from_note,
    write_request_note,
)
from deepfeat.features import FeatureSet
from deepfeat.provenance import package_versions

__all__ = ["UnreadableImagesError", "check_request", "extract_features", "request_identity", "save_features"]


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
                     shard_size=defaults.SHARD_SIZE, resources=None, runtime=defaults.RUNTIME) -> FeatureSet:
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
        forward pass per model (:mod:`deepfeat.extraction.forward`).
    batch_size : int, optional
        Images per forward pass; default 32 on CUDA, 8 on the CPU (faster there: see ``extract.default_batch_size``).
    device : str, default 'auto'
        'auto' (CUDA when present, else CPU; says which), 'cpu', 'cuda' or 'cuda:N' (an error when absent).
    num_workers : int, optional
        DataLoader worker processes for decoding; default: up to 4 on CUDA, on the CPU only the cores that torch's
        compute threads leave free (often 0: decoding then runs in the main process).
    cache : bool, path or FeatureCache, default True
        True = the default cache (``$DEEPFEAT_CACHE_DIR`` or ``~/.cache/deepfeat``); a path = that cache root;
        False = compute everything and store nothing. When a backbone name's request was seen before and every
        row is cached, the FeatureSet is served without importing torch (:mod:`deepfeat.extraction.request_notes`).
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
    runtime : {'auto', 'torch', 'openvino', 'onnxruntime'}, default 'auto'
        What runs the network (:mod:`deepfeat.extraction.runtime`). 'auto': on the CPU at fp32, for logits /
        pooled of a named backbone and at least 800 network passes (images x TTA views) to compute, OpenVINO
        (else ONNX Runtime) when installed (``pip install "deepfeat[fast]"``), kept only when its outputs on the first images are within 1e-4 x the
        largest |eager timm| value; else eager torch. The choice and its reason are in ``meta["runtime"]`` /
        ``meta["runtime_reason"]`` (``meta["blocks"]`` for fused requests). Not part of the cache key (the
        features agree within that tolerance). 'torch' = always eager torch.

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
    options = {"weights": weights, "device": device, "precision": precision, "channels_last": channels_last,
               "crop_border": crop_border, "image_size": image_size}
    if runtime not in defaults.RUNTIMES:
        raise DeepfeatError(f"The 'runtime' parameter must be one of {list(defaults.RUNTIMES)}. Got {runtime!r} "
                            "instead.")
    if scheduler is not None:
        if runtime != defaults.RUNTIME:
            raise DeepfeatError("runtime=: extraction on a scheduler runs eager torch on every worker (one runtime "
                                "for all shards); leave runtime out with scheduler=")
        return _on_scheduler(source, models, layers, tta, options, scheduler=scheduler, batch_size=batch_size,
                             cache=cache, on_error=on_error, progress=progress, manifest=manifest,
                             shard_size=shard_size, resources=resources, t0=t0)
    listed = open_paths(source, manifest)
    if not listed[0]:
        raise DeepfeatError(f"no images to extract features from in {source!r}")
    store = open_cache(cache)
    hashed = hash_all(listed[0])
    blocks, failures = [], dict(hashed[1])
    for one in models:
        got, fails = _blocks_of(one, layers, tta, listed[0], hashed, store=store, options=options, runtime=runtime,
                                batch_size=batch_size, num_workers=num_workers, progress=progress)
        blocks += got
        failures.update(fails)
    return _feature_set(blocks, failures, listed=listed, shas=hashed[0], plain=not is_fused(models, layers, tta),
                        store=store, on_error=on_error, layers=layers, tta=tta, t0=t0, progress=progress)


def _on_scheduler(source, models, layers, tta, options, **run) -> FeatureSet:
    """``scheduler=``: one model and one layer without TTA, on the Dask shard map (the same engine per worker)."""
    from deepfeat.dask_client import check_scheduler

    check_scheduler(run["scheduler"])
    if is_fused(models, layers, tta):
        raise DeepfeatError("scheduler= extracts one model and one layer without TTA; run fused or TTA "
                            "requests without a scheduler, or one model/layer per run and fuse_features after")
    from deepfeat.extraction.distributed import extract_with_scheduler

    return extract_with_scheduler(source, model=models[0], layer=layers[0], **options, **run)


def _blocks_of(model, layers, tta, paths, hashed, *, store, options, runtime, batch_size, num_workers,
               progress) -> tuple[list[Block], dict]:
    """The blocks of one model (one per layer; one for a hand-crafted model) and their failures ``{index: reason}``."""
    shas = hashed[0]
    if isinstance(model, str) and model in HANDCRAFTED:
        block, failures = handcrafted_block(model, paths, shas, store, crop_border=options["crop_border"])
        return [block], dict(failures)
    requests = {layer: request_identity(model=model, layer=layer, tta=tta, **options) if store else None
                for layer in layers}
    served = _served(model, requests, tta, store, shas, progress)
    if served is not None:
        return served, {}
    from deepfeat.extraction.engine import Engine  # torch, timm and the model from here on

    engine = Engine(model=model, layers=layers, tta=tta, batch_size=batch_size, num_workers=num_workers,
                    cache=store, progress=progress, runtime=runtime, **options)
    run = engine.run(paths, hashed)
    blocks = []
    for layer in layers:
        blocks.append(Block(engine.backbone, layer, tta, engine.meta(layer), engine.key(layer), run.rows[layer],
                            run.hit[layer]))
        write_request_note(store, requests[layer], engine, layer, run.rows[layer])
    return blocks, dict(run.failures)


def _served(model, requests: dict, tta, store, shas, progress) -> list[Block] | None:
    """A deep model's blocks from their request notes when every layer's rows are cached; else None."""
    if any(request is None for request in requests.values()):
        return None
    served = {layer: serve_from_note(store, request, shas) for layer, request in requests.items()}
    if any(found is None for found in served.values()):
        return None
    every = {s for s in shas if s is not None}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    blocks = [Block(note["meta"].get("backbone", model), layer, tta, {**note["meta"], "created": created},
                    note["model_key"], rows, every) for layer, (rows, note) in served.items()]
    say(f"{blocks[0].model} {','.join(requests)}{'' if tta == 'none' else f' (tta {tta})'}: all {len(every)} images "
        f"cached ({blocks[0].meta.get('precision')}): served without building the model", progress)
    return blocks


def _feature_set(blocks: list[Block], failures: dict, *, listed, shas, plain, store, on_error, layers, tta, t0,
                 progress) -> FeatureSet:
    """One FeatureSet of the blocks: release 0.1's for a plain request, else a fused one."""
    if plain:  # one block: its meta and rows as they are, columns f0..
        rows, names, meta = blocks[0].rows, None, blocks[0].meta
    else:
        rows, names, records = assemble(blocks, shas)
        meta = _fused_meta(blocks, records, layers, tta)
    for i, row in enumerate(rows):
        if row is None and i not in failures:  # cannot happen unless a block lost a row: never silently
            failures[i] = "some feature block has no row for this image"
    keep = [i for i, row in enumerate(rows) if row is not None]
    # an image counts as a cache hit when every block of it came from the cache
    hits = sum(1 for i, sha in enumerate(shas) if sha is not None and i not in failures
               and all(sha in block.hit for block in blocks))
    X = np.stack([rows[i] for i in keep]) if keep else None
    return feature_set_of(X, keep, listed, shas, sorted(failures.items()), meta, on_error=on_error, hits=hits,
                          misses=len(shas) - hits - len(failures), cache_dir=str(store.root) if store else None,
                          t0=t0, progress=progress, feature_names=names)


def _fused_meta(blocks: list[Block], records: list[dict], layers, tta) -> dict:
    deep = next((block.meta for block in blocks if block.meta.get("kind", "deep") == "deep"), {})
    meta = {"fused": True, "models": list(dict.fromkeys(r["model"] for r in records)), "layers": list(layers),
            "tta": tta, "blocks": records,
            "recipe": " + ".join(f"{r['model']}:{r['layer']}" for r in records) + ("" if tta == "none" else
                                                                                   f" (tta {tta})"),
            "device": deep.get("device", "cpu"), "batch_size": deep.get("batch_size"),
            "num_workers": deep.get("num_workers"), "channels_last": deep.get("channels_last"),
            "versions": package_versions(VERSIONED, python=False),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    finetune = merged_finetune([r.get("finetune") for r in records])
    if finetune:  # at the top too: the CV report's fine-tuning overlap check reads meta["finetune"]
        meta["finetune"] = finetune
    return meta


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
