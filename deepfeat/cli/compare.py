"""``deepfeat compare``: related published systems and the reference method on the same folds, one report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import say_interrupted, show_messages
from deepfeat.cli.options import PROGRESS_HELP, SCHEDULER_HELP


def compare(
    data: Annotated[str, typer.Argument(help="Labelled images: a folder of class sub-folders or a CSV.")],
    systems: Annotated[str, typer.Option(help="Comma-separated systems: shipped names (`deepfeat run --list` "
                                              "shows them), TOML files, or 'offline' = every shipped offline twin, "
                                              "the small CNN and the reference.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder; each system's folds are kept in "
                                                                "OUTPUT/systems and reused by a later run.")]
    = Path("deepfeat-compare"),
    reference: Annotated[str, typer.Option(help="The reference method (a features system), always in the "
                                                "table.")] = defaults.REFERENCE_SYSTEM,
    folds: Annotated[int, typer.Option(help="Outer cross-validation folds, the same for every system.")]
    = defaults.COMPARE_FOLDS,
    seed: Annotated[int, typer.Option(help="Seed of the folds (and of fine-tuning where a system sets none).")]
    = defaults.SEED,
    groups: Annotated[str, typer.Option(help="auto (subject ids when the source has them), none.")]
    = defaults.GROUPS,
    nested: Annotated[bool, typer.Option("--nested/--no-nested", help="Also the nested estimate of the reference "
                                                                      "method on the same folds.")]
    = defaults.COMPARE_NESTED,
    inner_folds: Annotated[int, typer.Option(help="Inner folds of the nested estimate.")] = defaults.INNER_FOLDS,
    skip_unavailable: Annotated[bool, typer.Option("--skip-unavailable", help="Leave out systems whose weights "
                                                                              "need a download (the report lists "
                                                                              "them) instead of stopping.")] = False,
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP + " One task per outer fold (every "
                                                                           "system's training for it).")] = None,
    resources: Annotated[Optional[str], typer.Option(help="Dask worker resources each fold task needs, e.g. "
                                                          "GPU=1.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Related systems side by side: every system trained on the same training folds only, one table with
    intervals, paired p-values against the reference method and the colour baseline, and training cost."""
    from deepfeat.workflows import compare_report

    show_messages(progress)
    log = (lambda msg: typer.echo(msg, err=True)) if progress else None
    with say_interrupted():
        done = compare_report(data, systems, output, reference=reference, folds=folds, seed=seed, groups=groups,
                              nested=nested, inner_folds=inner_folds, skip_unavailable=skip_unavailable, scheduler=scheduler,
                              resources=resources, progress=progress, log=log)
    t = done["table"]
    for r in t.itertuples():
        interval = (f"({100 * r.accuracy_low:.1f} to {100 * r.accuracy_high:.1f})"
                    if r.accuracy_low == r.accuracy_low else "")
        p_ref = "" if r.p_vs_reference != r.p_vs_reference else f"  p vs reference {r.p_vs_reference:.3f}"
        typer.echo(f"{r.system:<44} {100 * r.accuracy:5.1f} % {interval:<16}{p_ref}")
    typer.echo(f"report: {output / 'report.html'}")
