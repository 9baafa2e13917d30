"""Write few-shot and learning-curve results: CSV, PNG plot, ``config.json``, ``report.md`` and ``report.html``."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from deepfeat.reporting import plots
from deepfeat.reporting.report import _json_default, markdown_table

__all__ = ["curve_png", "fewshot_png", "write_curve_report", "write_fewshot_report"]


def fewshot_png(table) -> bytes:
    """Accuracy against shots, one panel per ways, one line per (features, method), 95 % CI as error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ways = list(dict.fromkeys(table["ways"]))
    fig, axes = plt.subplots(1, len(ways), figsize=(5 * len(ways), 4.2), dpi=100, squeeze=False)
    for ax, w in zip(axes[0], ways):
        sub = table[table["ways"] == w]
        for (name, method), g in sub.groupby(["features", "method"], sort=False):
            style = "-" if name == "features" else "--"
            ax.errorbar(g["shots"], 100 * g["accuracy_mean"], yerr=100 * g["ci95"], capsize=3, linestyle=style,
                        marker="o", ms=3, label=method if name == "features" else f"{name}: {method}")
        ax.axhline(100 / sub["n_ways"].iloc[0], color="grey", lw=0.8, linestyle=":", label="chance")
        ax.set_xscale("log")
        shots = sorted(set(sub["shots"]))
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots (labelled images per class)")
        ax.set_ylabel("accuracy % (mean, 95 % CI)")
        ax.set_title(f"{w}-way", fontsize=10)
        ax.legend(fontsize=7)
    return plots._png(fig)


def curve_png(summary) -> bytes:
    """Accuracy against training images per class, one line per feature set, 95 % CI as a band."""
    fig, ax = plots._figure(6, 4.2)
    for name, g in summary.groupby("features", sort=False):
        x = g["n_per_class"].to_numpy()
        ax.plot(x, 100 * g["accuracy_mean"], marker="o", label=name)
        ax.fill_between(x, 100 * g["ci_low"], 100 * g["ci_high"], alpha=0.2)
    ax.set_xscale("log")
    ticks = sorted(set(np.round(summary["n_per_class"], 1)))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images per class (mean when 'all')")
    ax.set_ylabel("test accuracy % (mean, 95 % CI over repeats)")
    ax.set_title("Learning curve", fontsize=10)
    ax.legend(fontsize=8)
    return plots._png(fig)


def _write(out: Path, title: str, intro: str, honesty: list, tables: list, png: bytes, stem: str, config: dict,
           csvs: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in csvs.items():
        paths[name] = out / f"{name}.csv"
        df.to_csv(paths[name], index=False)
    paths["plot"] = out / f"{stem}.png"
    paths["plot"].write_bytes(png)
    paths["config"] = out / "config.json"
    paths["config"].write_text(json.dumps(config, indent=2, default=_json_default))
    md = [f"# {title}", "", intro, "", "## Honesty", ""] + [f"- {line}" for line in honesty]
    for caption, df in tables:
        md += ["", f"## {caption}", "", markdown_table(df, index=True)]
    md += ["", f"![{title}]({stem}.png)", "", "Files: " + ", ".join(f"{n}.csv" for n in csvs)
           + ", config.json (parameters, seeds, versions)."]
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text("\n".join(md) + "\n")
    items = "".join(f"<li class='{'warn' if line.startswith('WARNING') else ''}'>{html.escape(line)}</li>"
                    for line in honesty)
    body = "".join(f"<h2>{html.escape(c)}</h2>{df.to_html(border=0, classes='t')}" for c, df in tables)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table.t{{border-collapse:collapse;font-size:13px}} table.t td,table.t th{{padding:3px 8px;border-bottom:1px solid #ddd}}
li.warn{{color:#b00;font-weight:bold}} img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><h2>Honesty</h2><ul>{items}</ul>{body}
<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></body></html>"""
    paths["report_html"] = out / "report.html"
    paths["report_html"].write_text(page)
    return paths


def write_fewshot_report(results, out_dir) -> dict:
    """``fewshot.csv`` (one row per features x ways x shots x method), ``episodes.csv``, ``fewshot.png``,
    ``config.json``, ``report.md`` and ``report.html`` in ``out_dir``; returns name -> Path."""
    cfg = results.config
    model = cfg["featureset_meta"].get("backbone") or cfg["featureset_meta"].get("model") or "features"
    intro = (f"{cfg['n_rows']} rows x {cfg['n_features']} features ({model}); distinct images per class "
             f"{cfg['class_counts_distinct_images']}; {cfg['episodes']} episodes per configuration, "
             f"{cfg['queries']} queries per class, seed {cfg['seed']}.")
    speed = results.table.groupby("method", sort=False)["episodes_per_s"].median().to_frame("median episodes/s")
    tables = [("Accuracy % (mean ± 95 % CI over episodes)", results.display()), ("Speed", speed.round(1))]
    if results.skipped:
        import pandas as pd

        tables.append(("Skipped configurations", pd.DataFrame(results.skipped)))
    return _write(Path(out_dir), "deepfeat few-shot report", intro, results.honesty_lines(), tables,
                  fewshot_png(results.table), "fewshot", {**cfg, "honesty": results.honesty_lines(),
                                                          "skipped": results.skipped},
                  {"fewshot": results.table, "episodes": results.per_episode})


def write_curve_report(results, out_dir) -> dict:
    """``curve.csv`` (per repeat), ``curve_summary.csv``, ``curve.png``, ``config.json``, ``report.md`` and
    ``report.html`` in ``out_dir``; returns name -> Path."""
    cfg = results.config
    s = results.summary
    shown = s.assign(acc=[f"{100 * m:.1f} ± {100 * c:.1f}" if np.isfinite(c) else f"{100 * m:.1f}"
                          for m, c in zip(s["accuracy_mean"], s["ci95"])])
    shown = shown.pivot_table(index="size", columns="features", values="acc", aggfunc="first", sort=False)
    intro = (f"{cfg['n_rows']} images, classes {cfg['classes']}; classifier {cfg['classifier']}, selection "
             f"{cfg['select']}; {cfg['repeats']} repeats, seed {cfg['seed']}.")
    tables = [("Test accuracy % by training images per class (mean ± 95 % CI over repeats)", shown)]
    if results.skipped:
        import pandas as pd

        tables.append(("Skipped sizes", pd.DataFrame(results.skipped)))
    return _write(Path(out_dir), "deepfeat learning curve", intro, results.honesty_lines(), tables, curve_png(s),
                  "curve",
                  {**cfg, "honesty": results.honesty_lines(), "skipped": results.skipped},
                  {"curve": results.per_repeat, "curve_summary": s})
