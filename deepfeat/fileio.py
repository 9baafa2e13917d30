"""Files: atomic writes (a reader, or a run killed half-way, never sees half a file) and content hashes."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
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


@contextlib.contextmanager
def exclusive(path):
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) while the block runs, waiting for
    another process that holds it; yields True when it had to wait (the other process may have written what this
    one was about to compute: read it again). POSIX ``flock``; where there is none (Windows) nothing is locked and
    it yields False."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        waited = False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger("deepfeat").info("waiting for another process working on %s", path.with_suffix(""))
            fcntl.flock(f, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
    problem = regular_file_problem(path)
    if problem is not None and problem != "no such file":  # never open a FIFO or device: it would block forever
        raise OSError(errno.EINVAL, problem, os.fspath(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection"): = + - @ tab CR.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_cell(value):
    """``value`` with a leading single quote when it is a string a spreadsheet would run as a formula.

    Only text is escaped (OWASP's rule): numbers such as -0.5 stay numbers. The quote is added to the CSV only; the
    raw value stays wherever it came from (FeatureSet, results objects).

    Examples
    --------
    >>> csv_safe_cell("=HYPERLINK(1)"), csv_safe_cell("blast"), csv_safe_cell(-0.5)
    ("'=HYPERLINK(1)", 'blast', -0.5)
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(frame, path, *, index: bool = False) -> Path:
    """Write a pandas DataFrame to ``path`` atomically, every text cell (and header) passed through csv_safe_cell.

    The one way deepfeat writes a CSV meant for people (predictions, failed-image lists, report tables).
    """
    from pandas.api import types

    out = frame.copy()
    out.columns = [csv_safe_cell(c) for c in out.columns]
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if not (types.is_numeric_dtype(col) or types.is_bool_dtype(col) or types.is_datetime64_any_dtype(col)):
            out.isetitem(i, col.astype(object).map(csv_safe_cell))  # text (any pandas string dtype) or mixed
    if index:
        out.index = out.index.map(csv_safe_cell)
    import csv

    # Text quoted: a cell holding a bare CR (not a line end for pandas' "\n") must not split its row.
    return atomic_write(path, lambda tmp: out.to_csv(tmp, index=index, quoting=csv.QUOTE_NONNUMERIC), fsync=False)


def regular_file_problem(path) -> str | None:
    """None when ``path`` is a regular file (after symlinks); else why not (so nothing blocks on a FIFO or device).

    Examples
    --------
    >>> regular_file_problem("/dev/null")
    'is not a regular file (character device)'
    """
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    except ValueError:  # os.stat refuses a path with an embedded NUL byte: no file can have that name
        return "is not a valid path (it contains a NUL byte)"
    if stat.S_ISREG(mode):
        return None
    kind = ("directory" if stat.S_ISDIR(mode) else "FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "character device" if stat.S_ISCHR(mode) else "block device" if stat.S_ISBLK(mode) else
            "socket" if stat.S_ISSOCK(mode) else "special file")
    return f"is not a regular file ({kind})"


def read_toml(path, what: str = "TOML file") -> dict:
    """The TOML document at ``path``; a file that is not UTF-8 or not TOML is one :class:`DeepfeatError` naming
    ``what`` and the file (never a ``UnicodeDecodeError``). A UTF-8 byte-order mark is accepted.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.toml"; _ = p.write_bytes(b"[cv]\\nname = 'caf\\xe9'\\n")
    >>> read_toml(p, "experiment file")
    Traceback (most recent call last):
    ...
    deepfeat.errors.DeepfeatError: experiment file ... is not UTF-8 text (byte 0xe9 at offset 16): save it as UTF-8
    """
    import tomllib

    from deepfeat.errors import DeepfeatError

    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DeepfeatError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                            "save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeepfeatError(f"{what} {path} is not valid TOML: {exc}") from None
