"""Several layers of one model from ONE forward pass, with test-time view averaging (TTA), through the cache.

Layers: ``logits`` (``forward_head(f)``), ``pooled`` (``forward_head(f, pre_logits=True)``) and ``stageN``: the
N-th feature map of timm's ``forward_intermediates`` (N = 1 .. ``len(model.feature_info)``; 5 for the
EfficientNets and ResNets: strides 2, 4, 8, 16, 32), global-average-pooled to one value per channel. ``f`` is
``forward_features(x)``, or the final output of ``forward_intermediates`` when a stage is asked for (timm
computes the same tensor there; checked bit-identical for tf_efficientnet_lite0, resnet18, test_efficientnet).

TTA views act on the preprocessed tensor ``x`` (B, C, H, W) and go through the network as ONE batch of V * B:
``flip`` = {identity, horizontal flip} (V = 2); ``d4`` = the 8 symmetries of the square: quarter turns
k = 0..3 of ``x`` and of its horizontal flip (V = 8, needs H == W). Each image's features (every layer) are the
mean over its V views. Each (layer, tta) is its own cache entry (``model_key(..., tta=...)``).
"""
from __future__ import annotations

import sys

import torch

from deepfeat.errors import DeepfeatError
from deepfeat.extraction.cache import model_key
from deepfeat.extraction.device import autocast
from deepfeat.extraction.engine import _Engine

__all__ = ["TTA_VIEWS", "forward_layers", "tta_views"]

TTA_VIEWS = {"none": 1, "flip": 2, "d4": 8}


def tta_views(x: torch.Tensor, tta: str) -> torch.Tensor:
    """The views of batch ``x`` stacked view-major, (V * B, C, H, W): rows v * B .. v * B + B - 1 are view v."""
    if tta == "none":
        return x
    if tta == "flip":
        return torch.cat([x, x.flip(-1)])
    if tta == "d4":
        if x.shape[-1] != x.shape[-2]:
            raise DeepfeatError(f"tta='d4' needs a square network input; got {tuple(x.shape[-2:])}. Use tta='flip' "
                                "or a square image_size")
        return torch.cat([torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)])
    raise DeepfeatError(f"The 'tta' parameter must be one of {list(TTA_VIEWS)}. Got {tta!r} instead.")


def forward_layers(net, x: torch.Tensor, layers, precision: str, device: torch.device, tta: str = "none") -> dict:
    """``{layer: (B, d) float32 ndarray}`` for every layer in ``layers``, from one forward pass of the views."""
    b = x.shape[0]
    v = tta_views(x, tta)
    n_views = v.shape[0] // b
    stages = sorted({int(layer[5:]) for layer in layers if layer.startswith("stage")})
    out = {}
    with torch.inference_mode(), autocast(device, precision):
        pooled_stage = {}
        if stages:
            final, inter = net.forward_intermediates(v, indices=[s - 1 for s in stages])
            pooled_stage = {s: t.float().mean((2, 3)) for s, t in zip(stages, inter)}
        elif list(layers) == ["logits"]:
            final = None  # exactly the single-layer path: model(x)
        else:
            final = net.forward_features(v)
        for layer in layers:
            if layer == "logits":
                t = net(v) if final is None else net.forward_head(final)
            elif layer == "pooled":
                t = net.forward_head(final, pre_logits=True)
            else:
                t = pooled_stage[int(layer[5:])]
            t = t.float().flatten(1)
            if n_views > 1:
                t = t.reshape(n_views, b, -1).mean(0)
            out[layer] = t.cpu().numpy()
    return out


class BlocksEngine(_Engine):
    """An :class:`_Engine` computing several layers of its model per pass, optionally averaged over TTA views."""

    def __init__(self, *, layers, tta="none", **kwargs):
        super().__init__(layer=layers[0], **kwargs)
        self.layers, self.tta = list(layers), tta
        stages = [int(layer[5:]) for layer in self.layers if layer.startswith("stage")]
        if stages:
            n = len(getattr(self.net, "feature_info", None) or [])
            if not hasattr(self.net, "forward_intermediates") or n == 0:
                raise DeepfeatError(f"layer 'stage{stages[0]}': model {self.backbone!r} has no timm "
                                    "forward_intermediates / feature_info; use logits or pooled")
            if max(stages) > n:
                raise DeepfeatError(f"layer 'stage{max(stages)}': model {self.backbone!r} has stages 1..{n}")

    def block_key(self, layer, precision=None):
        """The cache key of ``layer`` at ``precision`` (default: the decided one) and this engine's TTA."""
        return model_key(backbone=self.backbone, weights_id=self.model_sha256, layer=layer,
                         preprocessing=self.preprocessing, precision=precision or self.precision, tta=self.tta)

    def forward(self, x, precision):
        """The first layer without TTA (what the 'auto' precision check compares)."""
        return self._forward(x, precision, "none")[self.layers[0]]

    def _forward(self, x, precision, tta):
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_layers(self.net, x, self.layers, precision, self.device, tta)

    def run_blocks(self, paths, hashed):
        """Every layer's rows for ``paths``: ``({layer: rows}, failures, {layer: cached sha256 set}, sha256s)``.

        An image is computed when any requested layer misses it; a layer's cached rows are kept (not rewritten).
        """
        shas, failures = hashed
        failures = list(failures)
        self._decide_precision([p for p, s in zip(paths, shas) if s is not None])
        by_sha: dict[str, list[int]] = {}
        for i, sha in enumerate(shas):
            if sha is not None:
                by_sha.setdefault(sha, []).append(i)
        unique = list(by_sha)
        rows = {layer: [None] * len(paths) for layer in self.layers}
        hit, missing = {}, {}
        for layer in self.layers:
            got = self.cache.get_many(self.block_key(layer), unique) if self.cache else [None] * len(unique)
            hit[layer] = {s for s, r in zip(unique, got) if r is not None}
            missing[layer] = set(unique) - hit[layer]
            for sha, row in zip(unique, got):
                if row is not None:
                    for i in by_sha[sha]:
                        rows[layer][i] = row
            if self.cache and missing[layer]:
                self.cache.write_note(self.block_key(layer), "config.json", {
                    "backbone": self.backbone, "weights": self.model_sha256, "layer": layer, "tta": self.tta,
                    "preprocessing": self.preprocessing, "precision": self.precision})
        todo = [s for s in unique if any(s in missing[layer] for layer in self.layers)]
        failures += self._compute_blocks(todo, [paths[by_sha[s][0]] for s in todo], by_sha, rows, missing)
        failures.sort()
        for layer in self.layers:
            if len({r.shape for r in rows[layer] if r is not None}) > 1:
                raise DeepfeatError(f"the feature cache {self.cache.root} holds vectors of different lengths for "
                                    f"{self.backbone} {layer}; clear it (FeatureCache(root).clear()) and extract again")
        return rows, failures, hit, shas

    def _compute_blocks(self, todo, todo_paths, by_sha, rows, missing):
        if not todo:
            return []
        from tqdm.auto import tqdm

        loader = self._loader(todo_paths)
        failures = []
        desc = f"{self.backbone} {','.join(self.layers)}" + ("" if self.tta == "none" else f" tta={self.tta}")
        with tqdm(total=len(todo), unit="img", desc=desc, disable=not self.progress, file=sys.stderr) as bar:
            for x, idx, bad in loader:
                failures += [(i, f.reason) for j, f in bad for i in by_sha[todo[j]]]
                if x is not None:
                    out = self._forward(x, self.precision, self.tta)
                    done = [todo[j] for j in idx.tolist()]
                    for layer, feats in out.items():
                        new = [k for k, sha in enumerate(done) if sha in missing[layer]]
                        if self.cache and new:  # at once: an interrupted run keeps this batch
                            self.cache.put_many(self.block_key(layer), [done[k] for k in new], feats[new])
                        for k in new:
                            for i in by_sha[done[k]]:
                                rows[layer][i] = feats[k]
                bar.update(len(idx) + len(bad))
        return failures

    def layer_meta(self, layer) -> dict:
        """The meta a single-layer extraction of ``layer`` gives (plus ``tta`` when it is not 'none')."""
        meta = {**self.meta(), "layer": layer}
        if self.tta != "none":
            meta["tta"] = self.tta
        return meta
