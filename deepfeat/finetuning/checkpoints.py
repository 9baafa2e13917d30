"""Fine-tuning checkpoint files: atomic writes, reading, resuming checks, and the curves beside them.

The format is documented in :mod:`deepfeat.finetuning.run`. Files hold tensors and plain data only, so
``torch.load(path, weights_only=True)`` reads them without executing code.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from deepfeat.backbones.weight_files import checkpoint_model
from deepfeat.errors import DeepfeatError, ModelFileError
from deepfeat.fileio import atomic_write, write_csv
from deepfeat.provenance import package_versions

CHECKPOINT_FORMAT = 1
# options that may differ between an interrupted run and its resumption: they do not change the result on the CPU
RESUMABLE_CHANGES = {"epochs", "device", "workers"}


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill never leaves a half-written file."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def sibling(out: Path, tag: str, suffix: str | None = None) -> Path:
    """``NAME.<tag><suffix>`` beside ``NAME.pt`` (e.g. ``NAME.last.pt``, ``NAME.curves.csv``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{tag}{suffix if suffix is not None else (out.suffix or '.pt')}")


def versions() -> dict:
    """The versions a checkpoint records (plain strings: ``torch.load(weights_only=True)`` reads them)."""
    return package_versions(("deepfeat", "torch", "torchvision", "timm", "numpy", "scikit-learn"))


def plain(obj):
    """JSON-able copy (tuples -> lists, numpy scalars -> Python, paths -> str) so ``weights_only`` loading works."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or type(obj) in (int, float, bool, str):
        return obj
    if isinstance(obj, (int, float)):
        return float(obj) if isinstance(obj, float) else int(obj)
    return str(obj)  # str subclasses (torch's TorchVersion), paths, anything else


def cpu_state(state: dict | None) -> dict | None:
    # contiguous(): channels_last weights are saved in the standard layout
    return None if state is None else {k: v.detach().cpu().contiguous() for k, v in state.items()}


def read_checkpoint(path) -> dict:
    """Load a deepfeat fine-tuning checkpoint (tensors and plain data only; no code is executed)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise ModelFileError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("deepfeat_checkpoint") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a deepfeat fine-tuning checkpoint (format {CHECKPOINT_FORMAT})")
    checkpoint_model(ckpt, path)
    return ckpt


def load_into(model, ckpt: dict, path) -> None:
    """Put a checkpoint's weights into the end-to-end model made by ``training.attach_head``."""
    try:
        if ckpt["head"] == "keep1000":
            model.backbone.load_state_dict(ckpt["state_dict"])
            model.head.load_state_dict(ckpt["head_state_dict"])
        else:
            model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"checkpoint {path} does not fit model {ckpt['model']!r}: {exc}") from exc


def load_finetuned(path):
    """The end-to-end classifier (backbone + task head) of a checkpoint, in eval mode, and its class names.

    Feature extraction does not need this (``create_backbone(model, weights=path)`` gives the backbone alone);
    it is for predicting with the fine-tuned network itself.

    Returns
    -------
    model : torch.nn.Module
    class_names : list of str
    """
    from deepfeat.backbones import create_backbone
    from deepfeat.finetuning.training import attach_head

    ckpt = read_checkpoint(path)
    model = attach_head(create_backbone(ckpt["model"], weights="none"), ckpt["head"], ckpt["num_classes"])
    load_into(model, ckpt, path)
    return model.eval(), list(ckpt["class_names"])


def check_resumable(ckpt: dict, config: dict, model: str, path) -> None:
    """Refuse to resume a run whose options differ in a way that changes the result."""
    if "optimizer_state" not in ckpt:
        raise DeepfeatError(f"{path} has no optimizer state (it is a best-model checkpoint); resume from its "
                            f"'.last' file instead")
    saved = ckpt.get("config", {})
    diff = {k: (saved.get(k), v) for k, v in config.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    if ckpt["model"] != model:
        diff["model"] = (ckpt["model"], model)
    if diff:
        said = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise DeepfeatError(f"cannot resume from {path}: options differ ({said}); use the original options")
    if config["epochs"] <= ckpt["epoch"]:
        warnings.warn(f"{path} already completed {ckpt['epoch']} of epochs={config['epochs']}; nothing to train",
                      stacklevel=3)


def check_same_data(ckpt: dict, train_sha: list, val_sha: list, path) -> None:
    if list(ckpt["train_sha256"]) != list(train_sha) or list(ckpt["val_sha256"]) != list(val_sha):
        raise DeepfeatError(f"cannot resume from {path}: the training / validation images differ from the "
                            "interrupted run's (same source and seed needed)")


def write_curves(curves, out: Path) -> dict:
    """Per-epoch curves as ``NAME.curves.csv`` and a loss / accuracy plot ``NAME.curves.png``; returns the paths."""
    # a bare Figure (no pyplot): no global backend switch, nothing left open in a notebook
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    csv_path, png_path = sibling(out, "curves", ".csv"), sibling(out, "curves", ".png")
    write_csv(curves, csv_path)
    fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(curves["epoch"], curves[f"train_{key}"], "o-", label="train")
        if curves[f"val_{key}"].notna().any():
            ax.plot(curves["epoch"], curves[f"val_{key}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(out.name)
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"), fsync=False)
    return {"curves_csv": csv_path, "curves_png": png_path}
