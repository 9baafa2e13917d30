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
        listed = shipped_descriptions()
        width = max(map(len, listed), default=0) + 2
        for name, description in listed.items():
            typer.echo(f"{name:<{width}}{description}")
        if not list_:
            raise DeepfeatError("name an experiment: deepfeat run NAME_OR_FILE.toml IMAGES (the shipped ones are "
                                "listed above)")
        return
    show_messages(progress)
    from deepfeat.workers import warm_up

    warm_up()  # the fold workers' server imports beside the extraction
    with say_interrupted():
        done = run_named_experiment(experiment, output, source=source, weights=weights, progress=progress,
                                    log=typer.echo)
    _echo_results(done["results"])
    typer.echo(f"report: {output / 'report.html'}")


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for images, features and report.")]
    = Path("deepfeat-demo"),
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Generate synthetic smear-like cells instead of "
                                                                "the embedded real sample.")] = False,
    export: Annotated[Optional[Path], typer.Option("--export", help="Only write the embedded sample (320 PBC "
                                                                    "cells, CC BY 4.0) as class folders to this "
                                                                    "folder, and exit.")] = None,
    n_per_class: Annotated[int, typer.Option(min=10, help="Images per class (the embedded sample has 40).")]
    = defaults.DEMO_IMAGES_PER_CLASS,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = defaults.FOLDS,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Offline demo: 320 real blood cells (PBC, CC BY 4.0) -> EfficientNet-Lite0 features -> mRMR -> cv -> report.

    The cells are normal peripheral blood cells of 8 classes (not leukemia); --synthetic uses generated drawings.
    """
    from deepfeat.experiments import run_demo

    if export is not None:
        from deepfeat.data.demo_sample import ATTRIBUTION, export_demo_sample, sample_classes

        export_demo_sample(export)
        counts = sample_classes()
        typer.echo(f"wrote {sum(counts.values())} images in {len(counts)} class folders to {export} "
                   f"({', '.join(counts)}); {ATTRIBUTION}")
        return
    show_messages(progress)
    with say_interrupted():
        done = run_demo(output, synthetic=synthetic, n_per_class=n_per_class, folds=folds, progress=progress,
                        log=typer.echo)
    _echo_results(done["results"])
    typer.echo(f"demo finished in {done['timings']['total_s']:.0f} s; report: {output / 'report.html'}")
