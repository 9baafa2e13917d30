"""Write few-shot and learning-curve results: CSVs, a PNG plot, ``config.json``, ``report.md`` and ``report.html``.

Both reports are rendered from the same templates, macros and style as the cross-validation report
(``fewshot_report.html.j2`` / ``fewshot_report.md.j2``), their CSVs go through
:func:`deepfeat.fileio.write_csv` (formula-safe, atomic), and the folder is closed with the completion marker
(:func:`deepfeat.reporting.writing.check_report` tells a finished folder from an interrupted run).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from deepfeat.evaluation.intervals import mean_with_interval
from deepfeat.fileio import atomic_write_bytes, write_csv
from deepfeat.reporting.plots import curve_png, fewshot_png
from deepfeat.reporting.writing import (finish_report, fmt_number, render, start_report, table_block, write_json,
                                        write_text)

__all__ = ["curve_png", "fewshot_png", "write_curve_report", "write_fewshot_report"]

#: Written by both reports, beside their own CSVs and plot; a rerun removes them first (replace, not merge).
_PAGE_FILES = ("config.json", "report.md", "report.html")


def _write(out: Path, *, title: str, intro: str, results, tables: list, figure: dict, csvs: dict) -> dict:
    """The files of a few-shot or learning-curve report folder, the completion marker last; name -> Path."""
    files = [f"{name}.csv" for name in csvs] + [f"{figure['stem']}.png"]
    start_report(out, files + list(_PAGE_FILES))
    paths = {}
    for name, df in csvs.items():
        paths[name] = write_csv(df, out / f"{name}.csv")
    paths["plot"] = atomic_write_bytes(out / f"{figure['stem']}.png", figure["png"], fsync=False)
    paths["config"] = write_json(out / "config.json", {**results.config, "honesty": results.honesty_lines(),
                                                        "skipped": results.skipped})
    context = {"title": title, "intro": intro, "honesty": results.honesty_lines(), "tables": tables,
               "figures": [figure], "files": files}
    paths["report_md"] = write_text(out / "report.md", render("fewshot_report.md.j2", **context))
    paths["report_html"] = write_text(out / "report.html", render("fewshot_report.html.j2", **context))
    paths["complete"] = finish_report(out, paths)
    return paths


def _skipped_table(skipped: list, title: str):
    return table_block(pd.DataFrame(skipped), title=title, key="skipped", open_=True)


def write_fewshot_report(results, out_dir) -> dict:
    """``fewshot.csv`` (one row per features x ways x shots x method), ``episodes.csv``, ``fewshot.png``,
    ``config.json``, ``report.md``, ``report.html`` and ``report.complete.json`` in ``out_dir``.

    Parameters
    ----------
    results : FewShotResults
        From :func:`deepfeat.fewshot.evaluate.few_shot_evaluate`.
    out_dir : path-like

    Returns
    -------
    dict
        name -> Path: ``fewshot``, ``episodes``, ``plot``, ``config``, ``report_md``, ``report_html``, ``complete``.
    """
    cfg = results.config
    model = cfg["featureset_meta"].get("backbone") or cfg["featureset_meta"].get("model") or "features"
    intro = (f"{cfg['n_rows']} rows x {cfg['n_features']} features ({model}); distinct images per class "
             f"{cfg['class_counts_distinct_images']}; {cfg['episodes']} episodes per configuration, "
             f"{cfg['queries']} queries per class, seed {cfg['seed']}.")
    speed = results.table.groupby("method", sort=False)["episodes_per_s"].median()
    tables = [table_block(results.display().reset_index(), title="Accuracy % (mean and 95 % CI over episodes)",
                          key="accuracy", open_=True),
              table_block(pd.DataFrame({"method": speed.index, "median episodes/s": [fmt_number(v, 1)
                                                                                      for v in speed]}),
                          title="Speed", key="speed", open_=True)]
    if results.skipped:
        tables.append(_skipped_table(results.skipped, "Skipped configurations"))
    figure = {"stem": "fewshot", "png": fewshot_png(results.table),
              "caption": "Accuracy against shots, one panel per ways (mean, 95 % CI over episodes)"}
    return _write(Path(out_dir), title="deepfeat few-shot report", intro=intro, results=results, tables=tables,
                  figure=figure, csvs={"fewshot": results.table, "episodes": results.per_episode})


def write_curve_report(results, out_dir) -> dict:
    """``curve.csv`` (per repeat), ``curve_summary.csv``, ``curve.png``, ``config.json``, ``report.md``,
    ``report.html`` and ``report.complete.json`` in ``out_dir``.

    Parameters
    ----------
    results : CurveResults
        From :func:`deepfeat.fewshot.curves.learning_curve`.
    out_dir : path-like

    Returns
    -------
    dict
        name -> Path: ``curve``, ``curve_summary``, ``plot``, ``config``, ``report_md``, ``report_html``,
        ``complete``.
    """
    cfg = results.config
    s = results.summary
    shown = s.assign(acc=[mean_with_interval(m, lo, hi) for m, lo, hi in zip(s["accuracy_mean"], s["ci_low"],
                                                                              s["ci_high"])])
    shown = shown.pivot_table(index="size", columns="features", values="acc", aggfunc="first", sort=False)
    intro = (f"{cfg['n_rows']} images, classes {cfg['classes']}; classifier {cfg['classifier']}, selection "
             f"{cfg['select']}; {cfg['repeats']} repeats, seed {cfg['seed']}.")
    tables = [table_block(shown.reset_index(), key="accuracy", open_=True,
                          title="Test accuracy % by training images per class (mean and 95 % CI over repeats)")]
    if results.skipped:
        tables.append(_skipped_table(results.skipped, "Skipped sizes"))
    figure = {"stem": "curve", "png": curve_png(s),
              "caption": "Test accuracy against training images per class (mean, 95 % CI over repeats)"}
    return _write(Path(out_dir), title="deepfeat learning curve", intro=intro, results=results, tables=tables,
                  figure=figure, csvs={"curve": results.per_repeat, "curve_summary": s})
