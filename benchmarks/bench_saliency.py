"""Benchmark: the cost of a Grad-CAM saliency map per image on the CPU, EfficientNet-Lite0 at 224 px.

Side by side in one run, on the same images and batches: one plain forward pass (what extraction costs), Grad-CAM
of the network's own top output, and Grad-CAM of an SVM's decision through the features (``logits``, 1000
features; the SVM trained on the same images, mRMR keeping ``--k`` of them, so 2 x k probe rows per image). Images:
``../shared/data/all_idb2_small`` when present, else synthetic cells. Prints seconds per image and the ratios to
the plain forward pass, with ``uptime`` (timings on a loaded machine inflate; the ratios are what count).

Run: ``python benchmarks/bench_saliency.py [--n 32] [--k 521]``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "all_idb2_small"


def _images(n):
    from deepfeat.data.sources import open_source
    from deepfeat.data.synthetic import make_synthetic_smears

    src = open_source(DATA) if DATA.is_dir() else make_synthetic_smears(tempfile.mkdtemp(), n_per_class=n,
                                                                         size=224, seed=0)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(src.paths), size=min(len(src.paths), 4 * n), replace=False)
    return [src.paths[i] for i in pick], [src.labels[i] for i in pick]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images timed (the SVM trains on 4 x n)")
    ap.add_argument("--k", type=int, default=521, help="features mRMR keeps for the SVM")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
    from deepfeat.explain.gradcam import top_output_gradient
    from deepfeat.explain.targets import explainer_for_classifier

    paths, labels = _images(args.n)
    clf = DeepFeatureClassifier("tf_efficientnet_lite0", selector="mrmr", n_features=args.k, cache=False,
                                progress=False, device="cpu").fit(paths, labels)
    ex = explainer_for_classifier(clf, device="cpu")
    timed = paths[:args.n]
    ex.explain(timed[:args.batch_size])  # warm-up: first-call allocations

    from deepfeat.extraction.preprocessing import ImageDataset

    data = ImageDataset(timed, ex.transform)

    def forward_only():
        with torch.inference_mode():
            for s in range(0, len(data), args.batch_size):
                ex.net(torch.stack([data[i][0] for i in range(s, min(s + args.batch_size, len(data)))]))

    rows = {}
    for name, run in (("plain forward (extraction)", forward_only),
                      ("Grad-CAM, network's top output", lambda: ex.explain(timed, batch_size=args.batch_size,
                                                                            direction=top_output_gradient())),
                      ("Grad-CAM, SVM decision through features", lambda: ex.explain(timed,
                                                                                     batch_size=args.batch_size))):
        t0 = time.perf_counter()
        run()
        rows[name] = (time.perf_counter() - t0) / len(timed)
    base = rows["plain forward (extraction)"]
    print(f"EfficientNet-Lite0 224 px, CPU, {torch.get_num_threads()} torch threads, batch {args.batch_size}, "
          f"{len(timed)} images ({'all_idb2_small' if DATA.is_dir() else 'synthetic'}); mRMR k={args.k}")
    for name, sec in rows.items():
        print(f"  {name:<42} {1000 * sec:7.1f} ms/image   x{sec / base:.2f}")
    print("load:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
