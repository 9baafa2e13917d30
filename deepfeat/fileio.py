"""Files: atomic writes (a reader, or a run killed half-way, never sees half a file) and content hashes."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[Path], object], *, fsync: bool = True) -> Path:
    """Call ``write(tmp)`` for a unique temporary path beside ``path``, then rename it onto ``path``.

    The temporary file is in the same folder (so ``os.replace`` is atomic) and is created by ``write`` itself, so it
    gets ordinary permissions (``tempfile.mkstemp`` would leave 0600). On any error the temporary file is removed
    and ``path`` is untouched. ``fsync=True`` flushes the data to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks: the identity of images, weights and model files.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.bin"; _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
