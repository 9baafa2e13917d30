"""``deepfeat models``, ``deepfeat extract`` and ``deepfeat fuse``: which networks run here, images -> a FeatureSet
file, FeatureSet files side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepfeat import defaults
from deepfeat.cli.messages import echo_err, models_text, say_interrupted, show_messages
from deepfeat.cli.options import PROGRESS_HELP, SCHEDULER_HELP, MaxPixels, set_max_pixels


def models():
    """List the models whose ImageNet weights are on this machine (offline) and what the others need."""
    typer.echo(models_text())


def _list_models(value: bool):
    if value:
        models()
        raise typer.Exit()


def extract(
    source: Annotated[str, typer.Argument(help="Folder of class sub-folders, a CSV (path,label[,group]) or a "
                                               "folder of unlabelled images.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="FeatureSet file to write (.npz archive).")],
    model: Annotated[str, typer.Option(help="Backbone: darknet19, tiny_darknet, resnet50, tf_efficientnet_lite0 "
                                            "or any timm name; several, comma-separated, and the hand-crafted "
                                            "colour_histogram / colour_moments give one fused FeatureSet.")]
    = defaults.MODEL,
    weights: Annotated[str, typer.Option(help="'imagenet' (offline-first), a file (.pth/.pt/.safetensors/Darknet "
                                              ".weights/deepfeat fine-tune checkpoint) or 'none' (random).")]
    = defaults.WEIGHTS,
    layer: Annotated[str, typer.Option(help="logits = the 1000-d output (as in the study); pooled = pre-logits; "
                                            "stageN = N-th stage feature map, average-pooled; comma-separated "
                                            "for several (one forward pass per model).")]
    = defaults.LAYER,
    manifest: Annotated[Optional[str], typer.Option(help="Dataset manifest (name in data_manifests/ or a TOML "
                                                         "path) to apply: class names, subject ids, counts.")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per forward pass (default: 32 on CUDA, "
                                                                  "8 on the CPU).")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present, else CPU; says which), cpu, cuda, cuda:N.")]
    = defaults.DEVICE,
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader worker processes (default: auto).")]
    = None,
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16.")] = defaults.PRECISION,
    runtime: Annotated[str, typer.Option(help="auto (OpenVINO / ONNX Runtime when installed, fp32 on the CPU, kept "
                                              "only if it matches eager torch within 1e-4), torch, openvino or "
                                              "onnxruntime.")] = defaults.RUNTIME,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the on-disk feature cache.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Feature cache folder (default $DEEPFEAT_CACHE_DIR "
                                                           "or ~/.cache/deepfeat).")] = None,
    image_size: Annotated[Optional[int], typer.Option(min=8, help="Override the network input size.")] = None,
    crop_border: Annotated[bool, typer.Option(help="Crop the dark border of C-NMC-style images first.")] = False,
    strict: Annotated[bool, typer.Option(help="Stop with an error when any image is unreadable (after caching "
                                              "the readable ones). Default: leave them out and list them.")]
    = False,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help=PROGRESS_HELP)] = True,
    tta: Annotated[str, typer.Option(help="none; flip = mean over identity + horizontal flip; d4 = mean over the "
                                          "8 flips / quarter turns (8x compute, one batch).")] = defaults.TTA,
    max_pixels: MaxPixels = None,
    list_models: Annotated[bool, typer.Option("--list-models", is_eager=True, callback=_list_models,
                                              help="List the models whose weights are here (offline) and exit.")]
    = False,
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP + " Shard tasks hash, serve cache hits "
                                                     "and compute misses on the workers; the cache folder must be "
                                                     "a path every worker sees.")] = defaults.SCHEDULER,
    shard_size: Annotated[int, typer.Option(min=1, help="Images per task with --scheduler.")] = defaults.SHARD_SIZE,
    resources: Annotated[Optional[str], typer.Option(help="Dask worker resources each task needs with "
                                                     "--scheduler, e.g. GPU=1 (workers started with "
                                                     "--resources GPU=1).")] = None,
):
    """Extract deep features of every image in SOURCE into a FeatureSet file (cached, resumable)."""
    from deepfeat.workflows import extract_to_file  # torch-free until something is computed

    show_messages(progress)
    set_max_pixels(max_pixels)
    with say_interrupted():
        done = extract_to_file(source, output, manifest=manifest, on_error="raise" if strict else "skip",
                               log=echo_err, model=model, weights=weights, layer=layer, batch_size=batch_size,
                               device=device, num_workers=workers, cache=(cache_dir or True) if cache else False,
                               precision=precision, crop_border=crop_border, image_size=image_size,
                               progress=progress, tta=tta, scheduler=scheduler, shard_size=shard_size,
                               resources=resources, runtime=runtime)
    fs, meta = done.features, done.features.meta
    typer.echo(f"wrote {output}: {len(fs)} images x {fs.n_features} features, cache hits "
               f"{meta.get('cache_hits', 0)}/{meta.get('n_input', len(fs))}, skipped {len(done.skipped)}, "
               f"{meta.get('seconds', 0):.1f} s")
    if done.skipped:
        echo_err(f"{len(done.skipped)} unreadable image(s) were left out (listed in {done.failed_csv}):")
        for item in done.skipped:
            echo_err(f"  {item['path']}: {item['reason']}")


def fuse(
    inputs: Annotated[list[Path], typer.Argument(help="Two or more FeatureSet files of the same images.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Fused FeatureSet file to write.")],
):
    """Put the columns of several FeatureSet files side by side (rows matched by image sha256, any order)."""
    from deepfeat.workflows import fuse_files

    fs = fuse_files(inputs, output)
    typer.echo(f"wrote {output}: {len(fs)} images x {fs.n_features} features ({fs.meta['recipe']})")
