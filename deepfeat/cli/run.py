"""``deepfeat run`` and ``deepfeat demo``: a whole experiment file, or the offline demo, as one command."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import say_interrupted, show_messages
from deepfeat.cli.options import PROGRESS_HELP
from deepfeat.errors import DeepfeatError


def _echo_results(results) -> None:
    typer.echo(results.table().to_string())
    for line in results.honesty_lines():
        typer.echo(line)


def run(
    experiment: Annotated[Optional[str], typer.Argument(help="Experiment: a shipped name (see --list) or a TOML "
                                                             "file.")] = None,
    source: Annotated[Optional[str], typer.Argument(help="Image source; overrides [data] source.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-run"),
    weights: Annotated[Optional[str], typer.Option(help="Override [features] weights (e.g. a downloaded "
                                                        "darknet19.weights).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped experiments and exit.")] = False,
):
    """Run a whole experiment file: (fine-tune ->) extract -> cross-validate -> report."""
    from deepfeat.experiments import shipped_descriptions
    from deepfeat.workflows import run_named_experiment

    if list_ or experiment is None:
        for name, description in shipped_descriptions().items():
            typer.echo(f"{name:<28} {description}")
        if not list_:
            raise DeepfeatError("name an experiment: deepfeat run NAME_OR_FILE.toml IMAGES (the shipped ones are "
                                "listed above)")
        return
    show_messages(progress)
    with say_interrupted():
        done = run_named_experiment(experiment, output, source=source, weights=weights, progress=progress,
                                    log=typer.echo)
    _echo_results(done["results"])
    typer.echo(f"report: {output / 'report.html'}")


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for images, features and report.")]
    = Path("deepfeat-demo"),
    n_per_class: Annotated[int, typer.Option(min=10, help="Synthetic images per class.")]
    = defaults.DEMO_IMAGES_PER_CLASS,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = defaults.FOLDS,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Offline demo: synthetic cells -> EfficientNet-Lite0 ImageNet features -> mRMR -> 10-fold cv -> report."""
    from deepfeat.experiments import run_demo

    show_messages(progress)
    with say_interrupted():
        done = run_demo(output, n_per_class=n_per_class, folds=folds, progress=progress, log=typer.echo)
    _echo_results(done["results"])
    typer.echo(f"demo finished in {done['timings']['total_s']:.0f} s; report: {output / 'report.html'}")
