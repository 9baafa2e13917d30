"""Fused extraction requests, torch-free part: model / layer lists, hand-crafted blocks through the cache, cached
deep blocks served from request notes, and the assembly of one FeatureSet with per-block provenance.

A request is *fused* when it names several models or layers, a stage layer, a hand-crafted model or a TTA other
than 'none'. Its FeatureSet's columns are the blocks in order: for each model in the order given, its layers in
the order given (a hand-crafted model is one block, layer ``features``). Column ``j`` of a block is named
``<model>:<layer>:<j>`` and ``meta["blocks"]`` lists each block's provenance and its columns ``start:stop``.
Every request, fused or not, is a list of :class:`Block` s; a plain request (one deep model, ``logits`` or
``pooled``, no TTA) is one block whose FeatureSet is release 0.1's (its meta, columns ``f0..``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from deepfeat.errors import DeepfeatError, ImageReadError
from deepfeat.extraction.cache import model_key
from deepfeat.extraction.handcrafted import HANDCRAFTED, handcrafted_features
from deepfeat.extraction.inputs import images_by_sha

__all__ = ["TTA_OPTIONS", "Block", "as_list", "assemble", "block_record", "check_layers", "handcrafted_block",
           "is_fused"]

TTA_OPTIONS = ("none", "flip", "d4")
_STAGE = re.compile(r"stage[1-9][0-9]*$")
#: what a deep block's record copies from the single-layer meta of its (model, layer)
_DEEP_FIELDS = ("weights", "weights_source", "weights_sha256", "model_sha256", "precision", "precision_reason",
                "preprocessing", "input_size", "device", "runtime", "runtime_reason", "finetune")
_CHUNK = 64  # hand-crafted rows written to the cache per batch (an interrupted run keeps what it finished)


@dataclass
class Block:
    """One block of columns: a (model, layer, tta), its rows and where they came from.

    ``rows``: one vector per image, in input order (None: unreadable); ``meta``: the meta a request for this block
    alone gives (a deep block: release 0.1's FeatureSet meta); ``hit``: the sha256s served from the cache.
    """

    model: str
    layer: str
    tta: str
    meta: dict
    cache_key: str
    rows: list
    hit: set


def as_list(value, name: str) -> list:
    """``"a,b"`` / ``["a", "b"]`` / one object -> a list, refusing empty and repeated names."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        items = [value]
    if not items or any(isinstance(v, str) and not v for v in items):
        raise DeepfeatError(f"The '{name}' parameter must name at least one {name} (a comma-separated list "
                            f"without empty entries). Got {value!r} instead.")
    names = [v for v in items if isinstance(v, str)]
    repeated = sorted({v for v in names if names.count(v) > 1})
    if repeated:
        raise DeepfeatError(f"The '{name}' parameter names {', '.join(repeated)} more than once.")
    return items


def check_layers(layers) -> None:
    for layer in layers:
        if not isinstance(layer, str) or not (layer in ("logits", "pooled") or _STAGE.match(layer)):
            raise DeepfeatError("The 'layer' parameter must be one of ['logits', 'pooled'] or 'stageN' (N >= 1), "
                                f"or a comma-separated list of them. Got {layer!r} instead.")


def is_fused(models: list, layers: list, tta: str) -> bool:
    """False only for one deep model with one of logits / pooled and no TTA: the release-0.1 request."""
    return (len(models) > 1 or len(layers) > 1 or tta != "none" or layers[0] not in ("logits", "pooled")
            or (isinstance(models[0], str) and models[0] in HANDCRAFTED))


def handcrafted_key(name: str, crop_border: bool) -> tuple[str, dict]:
    """(cache key, preprocessing description) of a hand-crafted block."""
    preprocessing = {"input": "decoded RGB image, full size", "crop_border": bool(crop_border)}
    key = model_key(backbone=name, weights_id=f"handcrafted-v{HANDCRAFTED[name][0]}", layer="features",
                    preprocessing=preprocessing, precision="fp32")
    return key, preprocessing


def handcrafted_block(name, paths, shas, store, *, crop_border=False) -> tuple[Block, list]:
    """One hand-crafted block (layer ``features``, tta ``none``: the colour blocks are view-invariant) and its
    failures ``[(index, reason)]``."""
    key, preprocessing = handcrafted_key(name, crop_border)
    by_sha = images_by_sha(shas)
    unique = list(by_sha)
    got = store.get_many(key, unique) if store is not None else [None] * len(unique)
    rows: list = [None] * len(paths)
    failures, pending = [], []
    for sha, row in zip(unique, got):
        if row is None:
            try:
                row = handcrafted_features(name, paths[by_sha[sha][0]], crop_border=crop_border)
            except ImageReadError as exc:
                failures += [(i, exc.reason) for i in by_sha[sha]]
                continue
            except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise these on bad data
                failures += [(i, f"{type(exc).__name__}: {exc}") for i in by_sha[sha]]
                continue
            pending.append((sha, row))
        for i in by_sha[sha]:
            rows[i] = row
        if store is not None and len(pending) >= _CHUNK:
            store.put_many(key, [s for s, _ in pending], np.stack([r for _, r in pending]))
            pending = []
    if store is not None and pending:
        store.put_many(key, [s for s, _ in pending], np.stack([r for _, r in pending]))
    hit = {s for s, r in zip(unique, got) if r is not None}
    meta = {"kind": "handcrafted", "version": HANDCRAFTED[name][0], "description": HANDCRAFTED[name][1],
            "preprocessing": preprocessing, "precision": "fp32", "weights": None, "model_sha256": None,
            "cache_key": key}
    return Block(name, "features", "none", meta, key, rows, hit), failures


def block_record(block: Block, shas) -> dict:
    """One entry of ``meta["blocks"]`` (columns are filled in by :func:`assemble`)."""
    meta = block.meta
    record = {"model": block.model, "layer": block.layer, "tta": block.tta, "kind": meta.get("kind", "deep")}
    if record["kind"] == "deep":
        record.update({k: meta[k] for k in _DEEP_FIELDS if k in meta})
    else:
        record.update({k: v for k, v in meta.items() if k not in ("kind", "cache_key")})
    n_hit = sum(s in block.hit for s in shas if s is not None)
    record.update(cache_key=block.cache_key, cache_hits=n_hit,
                  cache_misses=sum(s is not None for s in shas) - n_hit)
    return record


def assemble(blocks: list[Block], shas):
    """(rows per image: the blocks' concatenation or None, feature names, records of ``meta["blocks"]``)."""
    names, records, start = [], [], 0
    for block in blocks:
        d = next((len(r) for r in block.rows if r is not None), 0)
        records.append({**block_record(block, shas), "start": start, "stop": start + d})
        names += [f"{block.model}:{block.layer}:{j}" for j in range(d)]
        start += d
    out = []
    for i in range(len(shas)):
        parts = [block.rows[i] for block in blocks]
        out.append(None if any(p is None for p in parts) else
                   np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in parts]))
    return out, names, records
