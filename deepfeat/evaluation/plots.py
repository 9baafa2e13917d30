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


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def accuracy_bars_png(summary) -> bytes:
    """Accuracy of each classifier, all vs selected features (bars, +- std), baselines as horizontal lines."""
    deep = summary[summary["kind"] != "baseline"]
    classifiers = list(dict.fromkeys(deep["classifier"]))
    selections = list(dict.fromkeys(deep["selection"]))
    fig, ax = _figure(max(5.0, 1.3 * len(classifiers) + 2), 4.5)
    width = 0.8 / max(1, len(selections))
    for i, sel in enumerate(selections):
        rows = deep[deep["selection"] == sel].set_index("classifier").reindex(classifiers)
        label = "all features" if sel == "none" else f"{sel} ({rows['n_features'].mean():.0f} features)"
        x = np.arange(len(classifiers)) + (i - (len(selections) - 1) / 2) * width
        ax.bar(x, 100 * rows["accuracy_mean"], width, yerr=100 * rows["accuracy_std"], capsize=3, label=label)
    for (_, row), style in zip(summary[summary["kind"] == "baseline"].iterrows(), ("--", ":", "-.")):
        ax.axhline(100 * row["accuracy_mean"], color="grey", linestyle=style, label=f"baseline: {row['classifier'].removeprefix('baseline-')}")
    ax.set_xticks(range(len(classifiers)), classifiers)
    ax.set_ylabel("accuracy % (mean +- std over folds)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Accuracy: all vs selected features", fontsize=10)
    return _png(fig)


def mrmr_scores_png(mrmr) -> bytes:
    """mRMR score of each pick in pick order: first fold, and the mean over folds at each rank."""
    fig, ax = _figure(7, 4)
    first = mrmr[(mrmr["repeat"] == mrmr["repeat"].min()) & (mrmr["fold"] == mrmr["fold"].min())]
    ax.bar(first["rank"] + 1, first["score"], width=1.0, color="tab:blue", alpha=0.6, label="first fold")
    mean = mrmr.groupby("rank")["score"].mean()
    ax.plot(mean.index + 1, mean.values, color="tab:red", lw=1.2, label="mean over folds")
    positive = (mrmr["score"] > 0).all()  # fcq/miq scores are > 0; fcd/mid differences can be <= 0
    ax.set_yscale("log") if positive else ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_xlabel("pick order")
    ax.set_ylabel("mRMR score at pick time")
    ax.set_title("Feature weights: mRMR scores in pick order", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def roc_png(predictions, config: str, classes) -> bytes:
    """One-vs-rest ROC curves of one configuration from pooled out-of-fold scores (first repeat)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    p = predictions[(predictions["config"] == config) & (predictions["repeat"] == predictions["repeat"].min())]
    fig, ax = _figure(5, 4.5)
    shown = classes[1:] if len(classes) == 2 else classes
    for name in shown:
        truth = (p["true"].astype(str) == str(name)).to_numpy()
        if 0 < truth.sum() < len(truth):
            score = p[f"score_{name}"].to_numpy()
            fpr, tpr, _ = roc_curve(truth, score)
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} (AUC {roc_auc_score(truth, score):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, linestyle="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC (one-vs-rest, pooled out-of-fold): {config}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)
