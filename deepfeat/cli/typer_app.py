"""The ``deepfeat`` typer app: its commands (one module per group), ``--version`` and the console entry point.

Exit codes: 0 success; 1 unexpected failure (a bug: traceback shown); 2 bad input or configuration (a one-line
message naming the file or option and what to do); 130 interrupted.
"""
from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from deepfeat import __version__
from deepfeat.cli import compare, evaluate, explain, extract, fewshot, finetune, run
from deepfeat.cli.messages import (cli_warnings, echo_err, ordinary_os_error, report_lost, sigterm_interrupts,
                                   to_cli)
from deepfeat.errors import DeepfeatError

app = typer.Typer(
    help="Deep CNN features + mRMR + shallow classifiers for blood-smear images, measured honestly.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        typer.echo(f"deepfeat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False):
    """Deep CNN features + mRMR + shallow classifiers for blood-smear images, measured honestly."""


# the commands, in the order of --help
app.command()(extract.models)
app.command()(extract.extract)
app.command()(evaluate.cv)
app.command()(evaluate.fit)
app.command()(evaluate.predict)
app.command()(explain.explain)
app.command(name="finetune")(finetune.finetune_cmd)
app.command()(extract.fuse)
app.command()(run.run)
app.command()(run.demo)
app.command()(fewshot.fewshot)
app.command()(fewshot.curve)
app.command()(compare.compare)


def _is_invalid_parameter(exc: Exception) -> bool:
    """A scikit-learn parameter check (``InvalidParameterError``, e.g. of MRMRSelector) failed: bad input."""
    checks = sys.modules.get("sklearn.utils._param_validation")  # loaded whenever such a check ran
    return checks is not None and isinstance(exc, checks.InvalidParameterError)


def main(argv=None):
    """Console entry point: bad input -> one clear line on stderr and exit code 2; usage errors as click does."""
    previous = sigterm_interrupts()
    report_lost()  # forget report folders an earlier command of this process left unfinished
    try:
        with cli_warnings():
            app(args=argv, prog_name="deepfeat")
    except (DeepfeatError, FileNotFoundError) as exc:
        lost = report_lost()
        echo_err(f"error: {to_cli(exc)}" + (f" ({lost})" if lost else ""))
        sys.exit(2)
    except ValueError as exc:
        if not _is_invalid_parameter(exc):
            raise
        echo_err(f"error: {to_cli(exc)}")
        sys.exit(2)
    except OSError as exc:
        message = ordinary_os_error(exc)
        if message is None:
            raise
        echo_err(f"error: {message}")
        sys.exit(2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
