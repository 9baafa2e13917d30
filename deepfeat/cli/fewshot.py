"""``deepfeat fewshot`` and ``deepfeat curve``: how many labelled cells a lab needs, from a FeatureSet file."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import echo_err
from deepfeat.cli.options import comma_list, int_or_auto, renamed_option


def _echo_results(table: str, honesty: list, skipped: list, paths: dict) -> None:
    typer.echo(table)
    for line in honesty:
        typer.echo(line)
    for line in skipped:
        echo_err(line)
    typer.echo(f"report: {paths['report_html']}")


def fewshot(
    ctx: typer.Context,
    features: Annotated[Path, typer.Argument(help="FeatureSet file (any, fused ones included).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-fewshot"),
    ways: Annotated[str, typer.Option(help="Comma list of classes per episode; 'all' = every class with enough "
                                           "images. More ways than classes: skipped, said so.")]
    = comma_list(defaults.FEWSHOT_WAYS),
    shots: Annotated[str, typer.Option(help="Comma list of labelled support images per class.")]
    = comma_list(defaults.FEWSHOT_SHOTS),
    queries: Annotated[int, typer.Option(min=1, help="Query images per class per episode.")]
    = defaults.FEWSHOT_QUERIES,
    episodes: Annotated[int, typer.Option(min=2)] = defaults.FEWSHOT_EPISODES,
    classifier: Annotated[str, typer.Option(help="Comma list of few-shot classifiers: prototype (= "
                                                 "prototype_cos + prototype_euc), knn (1-NN), logreg, svm.")]
    = comma_list(defaults.FEWSHOT_CLASSIFIERS),
    method: Annotated[Optional[str], typer.Option(hidden=True, help="0.2 name of --classifier.")] = None,
    groups: Annotated[str, typer.Option(help="auto (support and query never share a subject when the FeatureSet "
                                             "has subject ids) or none.")] = defaults.GROUPS,
    standardize: Annotated[str, typer.Option(help="support (knn/logreg/svm standardised with the support set's "
                                                  "statistics only) or none.")] = defaults.FEWSHOT_STANDARDIZE,
    baseline: Annotated[str, typer.Option(help="auto (colour histograms of the images on the same episodes when "
                                               "reachable), histogram or none.")] = defaults.BASELINE,
    seed: Annotated[int, typer.Option()] = defaults.SEED,
):
    """Few-shot accuracy (N-way K-shot episodes, 95 % CI) of a FeatureSet: fewshot.csv, plot, report."""
    from deepfeat.workflows import few_shot_report

    results, paths = few_shot_report(features, output, ways=ways, shots=shots, queries=queries, episodes=episodes,
                                     classifiers=renamed_option(ctx, "method", "classifier"), groups=groups,
                                     standardize=standardize, seed=seed, baseline=baseline)
    _echo_results(results.display().to_string(), results.honesty_lines(), [
        f"skipped ways={s['ways']} shots={s['shots']}: {s['reason']}" for s in results.skipped], paths)


def curve(
    features: Annotated[Path, typer.Argument(help="FeatureSet file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path("deepfeat-curve"),
    sizes: Annotated[str, typer.Option(help="Comma list of training images per class; 'all' = the whole "
                                            "training pool.")] = comma_list(defaults.CURVE_SIZES),
    classifier: Annotated[str, typer.Option(help="Classifier preset (see 'deepfeat cv --help').")]
    = defaults.CURVE_CLASSIFIER,
    select: Annotated[str, typer.Option(help="mrmr or none.")] = defaults.CURVE_SELECT,
    n_features: Annotated[str, typer.Option(parser=int_or_auto, metavar="<int|auto>",
                                            help="Features kept by mRMR: an int, or auto (as 'deepfeat cv').")]
    = defaults.N_FEATURES,
    repeats: Annotated[int, typer.Option(min=1)] = defaults.CURVE_REPEATS,
    test_fraction: Annotated[float, typer.Option(help="Share of images in each repeat's fixed test set.")]
    = defaults.CURVE_TEST_FRACTION,
    groups: Annotated[str, typer.Option(help="auto or none.")] = defaults.GROUPS,
    baseline: Annotated[str, typer.Option(help="auto (colour histograms when the images are reachable), "
                                               "histogram or none.")] = defaults.BASELINE,
    seed: Annotated[int, typer.Option()] = defaults.SEED,
):
    """Learning curve: accuracy on a fixed test set per repeat against training images per class."""
    from deepfeat.workflows import learning_curve_report

    results, paths = learning_curve_report(features, output, sizes=sizes, classifier=classifier, select=select,
                                           n_features=n_features, repeats=repeats, test_fraction=test_fraction,
                                           groups=groups, seed=seed, baseline=baseline)
    _echo_results(results.summary.to_string(index=False), results.honesty_lines(),
                  [f"skipped size {s['size']}: {s['reason']}" for s in results.skipped], paths)
