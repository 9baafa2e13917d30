"""Report figures (matplotlib, Agg backend, no display needed). Each function returns PNG bytes."""
from __future__ import annotations

import io

import numpy as np


def _figure(w=6.0, h=4.5):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    return fig, ax


def _png(fig, *, tight: bool = False) -> bytes:
    """The figure as PNG bytes; ``tight``: grow the canvas to hold text placed outside the axes (a legend)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def class_labels(classes, width: int = 10) -> tuple[list[str], dict[str, str]]:
    """Short, unique tick labels for class names, and the legend ``{label: full name}`` of those shortened.

    Names of at most ``width`` characters are kept. Otherwise the prefix every name shares is dropped and each name
    is cut to the shortest length (``width`` to ``width + 7``) that keeps all labels distinct, marked with
    ``~``; when no cut is unique (names that differ only late), the labels are ``c1``, ``c2``, ... Any label that
    is not the full name appears in the legend.

    Examples
    --------
    >>> class_labels(["blast", "lymph"])
    (['blast', 'lymph'], {})
    >>> class_labels(["synthetic_blast", "synthetic_lymphocyte"])[0]
    ['blast', 'lymphocyte']
    """
    names = [str(c) for c in classes]
    if all(len(n) <= width for n in names):
        return names, {}
    prefix = _common_prefix(names) if len(names) > 1 else ""
    rest = [n[len(prefix):] or n for n in names]
    for cut in range(width, width + 8):
        labels = [r if len(r) <= cut + 1 else r[:cut] + "~" for r in rest]
        if len(set(labels)) == len(labels):
            break
    else:
        labels = [f"c{i + 1}" for i in range(len(names))]
    return labels, {lab: n for lab, n in zip(labels, names) if lab != n}


def _common_prefix(names: list[str]) -> str:
    """The longest prefix all ``names`` share, cut back to its last separator (``_``, ``-``, space or ``.``)."""
    import os

    prefix = os.path.commonprefix(names)
    cut = max(prefix.rfind(s) for s in "_- .")
    return prefix[:cut + 1] if cut >= 0 else ""


def legend_text(legend: dict[str, str]) -> str:
    """``"basoph~ = basophil; ..."``: the legend of :func:`class_labels`, one line for a caption."""
    return "; ".join(f"{k} = {v}" for k, v in legend.items())


def _legend_below(fig, legend: dict[str, str]) -> None:
    """Write the label legend under a figure, wrapped to its width."""
    if not legend:
        return
    import textwrap

    width = max(40, int(fig.get_figwidth() * 13))
    text = "\n".join(textwrap.wrap("class labels: " + legend_text(legend), width))
    fig.text(0.01, 0.0, text, ha="left", va="top", fontsize=7, family="monospace")


def confusion_png(matrix, classes, title: str) -> bytes:
    """Confusion matrix (counts summed over folds), rows = true class, with row-normalised shading."""
    m = np.asarray(matrix)
    size = max(4.0, 0.55 * len(classes) + 2.5)
    fig, ax = _figure(size, size)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    labels, legend = class_labels(classes)
    ax.set_xticks(range(len(classes)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), labels, fontsize=8)
    _legend_below(fig, legend)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig, tight=bool(legend))


def mrmr_scores_png(mrmr) -> bytes:
    """mRMR score of each pick in pick order: first fold, and the mean over folds at each rank."""
    fig, ax = _figure(7, 4)
    first = mrmr[(mrmr["repeat"] == mrmr["repeat"].min()) & (mrmr["fold"] == mrmr["fold"].min())]
    # one filled step curve, not one bar patch per pick: the same picture, drawn in a fraction of the time
    ax.fill_between(first["rank"] + 1, first["score"], step="mid", color="tab:blue", alpha=0.6, label="first fold")
    mean = mrmr.groupby("rank")["score"].mean()
    ax.plot(mean.index + 1, mean.values, color="tab:red", lw=1.2, label="mean over folds")
    positive = (mrmr["score"] > 0).all()  # fcq/miq scores are > 0; fcd/mid differences can be <= 0
    ax.set_yscale("log") if positive else ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel("pick order")
    ax.set_ylabel("mRMR score at pick time")
    ax.set_title("Feature weights: mRMR scores in pick order", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


# The report's summary figures (issue 10): one picture per question, small multiples instead of one plot per
# configuration.

def _grid(n: int, cols: int, cell: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.4), dpi=90, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def accuracy_intervals_png(intervals) -> bytes:
    """Accuracy of every configuration, best on top, with 95 % interval bars; baselines as vertical lines."""
    deep = intervals[intervals["kind"] != "baseline"].iloc[::-1]
    base = intervals[intervals["kind"] == "baseline"]
    fig, ax = _figure(7.5, max(2.5, 0.38 * len(deep) + 1.4))
    y = np.arange(len(deep))
    colours = ["tab:orange" if "+mrmr" in c else "tab:blue" for c in deep["config"]]
    mean = 100 * deep["mean"].to_numpy()
    err = np.nan_to_num(100 * np.vstack([deep["mean"] - deep["low"], deep["high"] - deep["mean"]]))
    ax.barh(y, mean, color=colours, alpha=0.85, height=0.65)
    ax.errorbar(mean, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
    for yi, m in zip(y, mean):
        ax.text(1, yi, f"{m:.1f}", va="center", fontsize=8, color="white")
    for (_, row), style in zip(base.iterrows(), ("--", ":", "-.")):
        ax.axvline(100 * row["mean"], color="dimgrey", linestyle=style, lw=1.2,
                   label=f"{row['config'].removeprefix('baseline-')} {100 * row['mean']:.1f} %")
    ax.set_yticks(y, deep["config"], fontsize=9)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy % (mean over folds, 95 % interval, logit scale)")
    from matplotlib.patches import Patch

    handles = [Patch(color="tab:blue", label="all features"), Patch(color="tab:orange", label="mRMR-selected")]
    ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=8, loc="lower left",
              bbox_to_anchor=(0, 1.0), ncol=4, frameon=False)
    return _png(fig)


def class_heatmap_png(per_class, configs, classes, metrics=("recall", "f1")) -> bytes:
    """Per-class recall and F1 (mean over folds, %) as configuration x class heatmaps, side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [str(c) for c in classes]
    w = max(4.0, 0.55 * len(names) + 2.6)
    fig, axes = plt.subplots(1, len(metrics), figsize=(w * len(metrics), 0.33 * len(configs) + 1.8), dpi=90,
                             squeeze=False)
    pc = per_class.assign(**{"class": per_class["class"].astype(str)})
    for ax, m in zip(axes[0], metrics):
        grid = pc.pivot(index="config", columns="class", values=f"{m}_mean").reindex(index=configs, columns=names)
        v = 100 * grid.to_numpy(dtype=float)
        ax.imshow(v, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                ax.text(j, i, "–" if np.isnan(v[i, j]) else f"{v[i, j]:.0f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(configs)), configs if ax is axes[0][0] else [""] * len(configs), fontsize=8)
        ax.set_title(f"{m} % per class", fontsize=10)
    return _png(fig)


def confusion_grid_png(confusion: dict, configs) -> bytes:
    """Row-normalised confusion matrices of several configurations as small multiples (counts written in); class
    names shortened to unique labels by :func:`class_labels`, with their legend under the grid."""
    fig, axes = _grid(len(configs), 4, 3.1)
    legend = {}
    for ax, cfg in zip(axes, configs):
        m = np.asarray(confusion[cfg]["matrix"])
        classes = confusion[cfg]["classes"]
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        if len(classes) <= 10:
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if m[i, j]:
                        ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                                color="white" if share[i, j] > 0.6 else "black")
        labels, shortened = class_labels(classes)
        legend.update(shortened)
        ax.set_xticks(range(len(classes)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), labels, fontsize=6)
        acc = np.trace(m) / max(m.sum(), 1)
        ax.set_title(f"{cfg}\n{100 * acc:.1f} % correct", fontsize=8)
    fig.supxlabel("predicted", fontsize=9)
    fig.supylabel("true", fontsize=9)
    _legend_below(fig, legend)
    return _png(fig, tight=bool(legend))


def roc_grid_png(predictions, configs, classes) -> bytes:
    """One-vs-rest ROC curves (pooled out-of-fold, first repeat) of several configurations as small multiples,
    one colour per class throughout, macro AUC in each title."""
    import matplotlib
    from sklearn.metrics import roc_auc_score, roc_curve

    names = [str(c) for c in classes]
    shown = names[1:] if len(names) == 2 else names
    colours = matplotlib.colormaps["tab10"]
    fig, axes = _grid(len(configs), 4, 2.8)
    first = predictions[predictions["repeat"] == predictions["repeat"].min()]
    for ax, cfg in zip(axes, configs):
        p = first[first["config"] == cfg]
        aucs = []
        for k, name in enumerate(shown):
            truth = (p["true"].astype(str) == name).to_numpy()
            if 0 < truth.sum() < len(truth):
                score = p[f"score_{name}"].to_numpy()
                fpr, tpr, _ = roc_curve(truth, score)
                aucs.append(roc_auc_score(truth, score))
                ax.plot(fpr, tpr, lw=1.0, color=colours(k % 10), label=name)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, linestyle="--")
        ax.set_title(f"{cfg}\nmacro AUC {np.mean(aucs):.3f}" if aucs else cfg, fontsize=8)
        ax.tick_params(labelsize=6)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8) or 1, fontsize=7, frameon=False)
    fig.supxlabel("false positive rate", fontsize=9)
    fig.supylabel("true positive rate", fontsize=9)
    buf = io.BytesIO()
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def finetune_curves_png(curves, best_epoch: int | None = None) -> bytes:
    """Fine-tuning loss and accuracy per epoch, train vs validation, the kept (best) epoch marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    for ax, key, title in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "acc", "accuracy")):
        scale = 100 if key == "acc" else 1
        ax.plot(curves["epoch"], scale * curves[f"train_{key}"], "o-", label="train")
        if curves[f"val_{key}"].notna().any():
            ax.plot(curves["epoch"], scale * curves[f"val_{key}"].astype(float), "s-", label="validation")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", lw=1, label=f"kept: epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title + (" %" if key == "acc" else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


# Few-shot and learning-curve reports

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
            yerr = [100 * (g["accuracy_mean"] - g["ci_low"]), 100 * (g["ci_high"] - g["accuracy_mean"])]
            ax.errorbar(g["shots"], 100 * g["accuracy_mean"], yerr=yerr, capsize=3, linestyle=style,
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
    return _png(fig)


def curve_png(summary) -> bytes:
    """Accuracy against training images per class, one line per feature set, 95 % CI as a band."""
    fig, ax = _figure(6, 4.2)
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
    return _png(fig)
