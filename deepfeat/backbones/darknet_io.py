"""Read and write original Darknet (pjreddie) ``.weights`` files.

Layout (``load_weights_upto`` / ``save_weights_upto`` in darknet's ``src/parser.c``): three little-endian int32
``major, minor, revision``, then ``seen`` — a uint64 when ``major*10 + minor >= 2`` (and both < 1000), i.e. a 20-byte
header, else an int32 (16-byte header). Then float32 values, for each ``[convolutional]`` layer in cfg order:
``n`` biases (the BN shift beta when batch-normalised), and if batch-normalised ``n`` scales (gamma), ``n`` rolling
means, ``n`` rolling variances; then ``n * c * k * k`` weights laid out like PyTorch's ``(n, c, k, k)``.
A model is compatible when it has a ``darknet_layers()`` method yielding ``(conv, bn_or_None)`` in that order
(see :class:`deepfeat.backbones.darknet.Darknet`).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from deepfeat.errors import DeepfeatError
from deepfeat.fileio import atomic_write

__all__ = ["read_header", "load_darknet_weights", "save_darknet_weights", "count_darknet_floats"]


def _wide_seen(major: int, minor: int) -> bool:
    # darknet: if ((major*10 + minor) >= 2 && major < 1000 && minor < 1000) fread(seen, sizeof(size_t)...)
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def read_header(path) -> dict:
    """Read the header of a Darknet ``.weights`` file.

    Returns
    -------
    dict
        ``major``, ``minor``, ``revision``, ``seen``, ``header_bytes`` (16 or 20) and ``n_floats`` (how many
        float32 values follow the header).
    """
    path = Path(path)
    if not path.is_file():
        raise DeepfeatError(f"Darknet weights file {str(path)!r} does not exist")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(20)
    if len(head) < 16:
        raise DeepfeatError(f"Darknet weights file {str(path)!r} is {size} bytes, too short for a header (16 or 20 bytes)")
    major, minor, revision = struct.unpack("<3i", head[:12])
    if _wide_seen(major, minor):
        if len(head) < 20:
            raise DeepfeatError(f"Darknet weights file {str(path)!r} is {size} bytes, too short for its 20-byte header")
        (seen,), header_bytes = struct.unpack("<Q", head[12:20]), 20
    else:
        (seen,), header_bytes = struct.unpack("<i", head[12:16]), 16
    body = size - header_bytes
    if body % 4:
        raise DeepfeatError(f"Darknet weights file {str(path)!r}: {body} bytes after the {header_bytes}-byte header is "
                            "not a whole number of float32 values (truncated or not a .weights file)")
    return dict(major=major, minor=minor, revision=revision, seen=seen, header_bytes=header_bytes, n_floats=body // 4)


def _layers(model):
    if not hasattr(model, "darknet_layers"):
        raise DeepfeatError(f"{type(model).__name__} is not a Darknet model (no darknet_layers()); Darknet .weights "
                            "files load only into darknet19 / tiny_darknet")
    return list(model.darknet_layers())


def _layer_tensors(conv, bn):
    """The tensors of one layer in file order."""
    if bn is not None:
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]
    return [conv.bias, conv.weight]


def count_darknet_floats(model) -> int:
    """How many float32 values ``model`` reads from a ``.weights`` file."""
    return sum(t.numel() for conv, bn in _layers(model) for t in _layer_tensors(conv, bn))


def load_darknet_weights(model, path) -> dict:
    """Load a Darknet ``.weights`` file into ``model`` in place, consuming exactly all of its floats.

    Parameters
    ----------
    model : Darknet
        A model with ``darknet_layers()`` (``darknet19``, ``tiny_darknet``).
    path : str or Path

    Returns
    -------
    dict
        The header (see :func:`read_header`).

    Raises
    ------
    DeepfeatError
        The file is missing, its header is malformed, or it holds a different number of floats than the model
        needs (the message gives both counts).
    """
    header = read_header(path)
    layers = _layers(model)
    expected = count_darknet_floats(model)
    found = header["n_floats"]
    if found != expected:
        name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
        raise DeepfeatError(
            f"Darknet weights file {str(path)!r} holds {found:,} float32 values after its {header['header_bytes']}-byte "
            f"header but {name} with {getattr(model, 'num_classes', '?')} classes needs exactly {expected:,} "
            f"({'file truncated or for a smaller network' if found < expected else 'extra data: a larger network'}); "
            "is it the .weights file of another cfg?")
    values = np.fromfile(path, dtype="<f4", offset=header["header_bytes"])
    offset = 0
    with torch.no_grad():
        for conv, bn in layers:
            for tensor in _layer_tensors(conv, bn):
                n = tensor.numel()
                tensor.copy_(torch.from_numpy(values[offset:offset + n].astype(np.float32)).view_as(tensor))
                offset += n
        for _, bn in layers:
            if bn is not None and bn.num_batches_tracked is not None:
                bn.num_batches_tracked.zero_()
    return header


def save_darknet_weights(model, path, header_version: tuple[int, int, int] = (0, 2, 0), seen: int = 0) -> Path:
    """Write ``model`` as a Darknet ``.weights`` file (atomically: temp file, then rename).

    Parameters
    ----------
    model : Darknet
    path : str or Path
    header_version : (major, minor, revision), default=(0, 2, 0)
        ``(0, 2, 0)`` writes the 20-byte header (uint64 ``seen``) of current darknet; ``(0, 1, 0)`` the 16-byte
        header (int32 ``seen``) of older files such as ``tiny.weights``.
    seen : int, default=0
        Images seen in training, stored in the header.
    """
    path = Path(path)
    major, minor, revision = (int(v) for v in header_version)
    head = struct.pack("<3i", major, minor, revision)
    head += struct.pack("<Q", seen) if _wide_seen(major, minor) else struct.pack("<i", seen)
    parts = [t.detach().to("cpu", torch.float32).reshape(-1).numpy().astype("<f4")
             for conv, bn in _layers(model) for t in _layer_tensors(conv, bn)]
    def write(tmp):
        with tmp.open("wb") as f:
            f.write(head)
            f.writelines(part.tobytes() for part in parts)

    atomic_write(path, write)
    return path
