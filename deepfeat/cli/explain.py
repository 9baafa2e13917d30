"""``deepfeat explain``: Grad-CAM saliency maps of images for a model file."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import echo_err, show_messages
from deepfeat.cli.options import PROGRESS_HELP, AllowVersionMismatch, MaxPixels, TrustModel, set_max_pixels


def explain(
    model: Annotated[Path, typer.Argument(help="A model from 'deepfeat fit' (.joblib/.skops: explains the "
                                               "classifier's decision through the features), a checkpoint from "
                                               "'deepfeat finetune' (.pt: the network's own prediction) or a "
                                               "FeatureSet from 'deepfeat extract' (its network's top output).")],
    images: Annotated[list[str], typer.Argument(help="Image files and/or folders (searched recursively).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the overlays (PNG), saliency.csv, "
                                                                "saliency.npz and explain.json.")] = Path("saliency"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = defaults.DEVICE,
    allow_version_mismatch: AllowVersionMismatch = False,
    trust: TrustModel = False,
    max_pixels: MaxPixels = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
):
    """Where the network looked: a Grad-CAM overlay per image (red = most evidence for the explained score)."""
    from deepfeat.workflows import explain_images

    show_messages(progress)
    set_max_pixels(max_pixels)
    table = explain_images(model, images, output, trusted=trust, allow_version_mismatch=allow_version_mismatch,
                           device=device)
    bad = table[table["error"] != ""]
    typer.echo(f"wrote {output}: {len(table) - len(bad)} saliency maps, {len(bad)} unreadable")
    for path, error in zip(bad["path"], bad["error"]):
        echo_err(f"  unreadable: {path}: {error}")
