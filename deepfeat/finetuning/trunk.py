"""The frozen trunk of a fine-tuning run: split a network into stages, freeze the first ones, cache their output.

On a CPU, a useful fine-tune of a 224-px network must fit in minutes. Two things make that possible:

- **Frozen early stages** (``freeze_stages``): the first stages of the network (stem and early blocks, which
  compute generic edges and textures) keep their pretrained weights, run in eval mode and get no gradient. Only
  the last stages and the head are trained. For ``tf_efficientnet_lite0`` at 224 px on 2 cores, training the
  last two stages + head ran at 58 images/s against 7 for the whole network (``benchmarks/bench_finetune_recipes.py``).
- **Cached trunk activations** (``cache_trunk``): the frozen stages compute the same output for an image every
  epoch, so it is computed once per image and *view* and kept in memory. The views are the 8 elements of the
  dihedral group D4 (flips and quarter turns), the cell augmentation's exact symmetries: an epoch draws a view
  per image as the uncached augmentation would (same random draws, :func:`view_of_draw`), so cached and uncached
  training see the same inputs. Colour jitter changes pixels at random and cannot be cached: with ``color`` in
  ``augment`` the cache is refused (``cache_trunk=True``) or skipped (``"auto"``).

Stage lists are known for timm's EfficientNet / MobileNet (``conv_stem`` + ``bn1``, each entry of ``blocks``,
EfficientNet's ``conv_head`` + ``bn2``), ResNet (stem, ``layer1`` .. ``layer4``), VGG (the conv blocks, each
ending at its max-pool), Inception-v3 (stem, the 35 / 17 / 8-px grids' Mixed blocks), legacy Xception (entry
flow, the middle flow, the exit flow), deepfeat's Darknet (each module of ``features``), ``deepfeat_small_cnn``
(its conv blocks) and a hybrid whose members are known and aligned (``hybrid_lite012``: stage i runs each member's
stage i on its channels of the concatenated activation, so the cache holds one tensor per image and view;
:meth:`deepfeat.backbones.related.HybridNet.parallel_stages`). Other networks train whole (``freeze_stages=0``;
``"auto"`` says so and trains them whole), and so does the exact VGG16 + Inception-v3 + Xception hybrid: its
members' stages do not line up (Xception has 6, the others 5; VGG pads, Inception-v3 does not, so the grids
differ), so their activations cannot be stacked stage by stage.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepfeat.errors import DeepfeatError
from deepfeat.finetuning.training import backbone_of

__all__ = ["D4_VIEWS", "TrunkSplit", "apply_view", "network_stages", "resolve_freeze_stages", "trunk_identity",
           "view_of_draw"]


def network_stages(body: nn.Module) -> list[nn.Module]:
    """The stages whose composition is ``body.forward_features``, stem first."""
    names = {cls.__name__ for cls in type(body).__mro__}
    if hasattr(body, "conv_stem") and hasattr(body, "blocks"):  # timm EfficientNet / MobileNetV3 family
        stages = [nn.Sequential(body.conv_stem, body.bn1), *body.blocks]
        if "EfficientNet" in names:
            stages.append(nn.Sequential(body.conv_head, body.bn2))
        elif "MobileNetV3" not in names:
            raise DeepfeatError(f"freeze_stages: {type(body).__name__} has conv_stem/blocks but is neither timm's "
                                "EfficientNet nor MobileNetV3; use freeze_stages=0")
        return stages
    if "ResNet" in names and hasattr(body, "layer4"):
        return [nn.Sequential(body.conv1, body.bn1, body.act1, body.maxpool), body.layer1, body.layer2,
                body.layer3, body.layer4]
    if "Darknet" in names:
        return list(body.features)
    if "VGG" in names and hasattr(body, "features"):  # timm VGG: the conv blocks, each ending at its max-pool
        stages, block = [], []
        for m in body.features:
            block.append(m)
            if isinstance(m, nn.MaxPool2d):
                stages.append(nn.Sequential(*block))
                block = []
        return stages + ([nn.Sequential(*block)] if block else [])
    if "InceptionV3" in names and not getattr(body, "aux_logits", False):  # timm Inception-v3: stem, then grids
        return [_chain(body, "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Pool1"),
                _chain(body, "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Pool2"),
                _chain(body, "Mixed_5b", "Mixed_5c", "Mixed_5d"),
                _chain(body, "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
                _chain(body, "Mixed_7a", "Mixed_7b", "Mixed_7c")]
    if "Xception" in names and hasattr(body, "block12"):  # timm legacy_xception: entry, middle and exit flows
        return [_chain(body, "conv1", "bn1", "act1", "conv2", "bn2", "act2"), body.block1, body.block2, body.block3,
                _chain(body, *(f"block{i}" for i in range(4, 12))),
                _chain(body, "block12", "conv3", "bn3", "act3", "conv4", "bn4", "act4")]
    if "SmallCNN" in names:
        return list(body.blocks)
    if "HybridNet" in names:  # parallel stages: stage i = every member's stage i (HybridNet.parallel_stages)
        return body.parallel_stages([network_stages(m) for m in body.members])
    raise DeepfeatError(f"freeze_stages needs a network whose stages deepfeat knows (timm EfficientNet / "
                        f"MobileNetV3 / ResNet / VGG / Inception-v3 / legacy Xception, darknet19, deepfeat_small_cnn, "
                        f"a hybrid of such members); "
                        f"{type(body).__name__} is not one. Use freeze_stages=0 (train the whole network).")


def _chain(body: nn.Module, *names: str) -> nn.Sequential:
    return nn.Sequential(*(getattr(body, n) for n in names))


def resolve_freeze_stages(value, body: nn.Module, device) -> int:
    """``freeze_stages`` as a number: "auto" freezes all but the last third of the stages (at least 2 stay
    trainable) on a CPU, and nothing on a GPU, where the whole network trains in reasonable time, nor for
    ``deepfeat_small_cnn``, which is trained from scratch (its first stages have no pretrained weights to keep)."""
    if value == "auto":
        if device.type != "cpu" or type(body).__name__ == "SmallCNN":  # a from-scratch network freezes nothing
            return 0
        n = len(network_stages(body))
        return max(0, n - max(2, round(n / 3)))
    k = int(value)
    if k:
        n = len(network_stages(body))
        if k >= n:
            raise DeepfeatError(f"freeze_stages={k} would freeze every stage of the network ({n} stages); "
                                f"use at most {n - 1}")
    return k


class _Prefix(nn.Module):
    def __init__(self, stages):
        super().__init__()
        self.stages = nn.Sequential(*stages)

    def forward(self, x):
        return self.stages(x)


class SuffixClassifier(nn.Module):
    """The trainable part of the end-to-end network, run on cached trunk activations: the stages after the frozen
    ones, the backbone's head, and the task head. Shares its parameters with ``net``."""

    def __init__(self, net: nn.Module, head: str, stages):
        super().__init__()
        self.net, self.head_kind = net, head
        self.stages = nn.Sequential(*stages)

    def forward(self, h):
        body = backbone_of(self.net, self.head_kind)
        out = body.forward_head(self.stages(h))
        return self.net.head(out) if self.head_kind == "keep1000" else out


class TrunkSplit:
    """A network cut after its first ``k`` stages: ``prefix`` (frozen, eval mode, no gradient) and ``suffix``."""

    def __init__(self, net: nn.Module, head: str, k: int):
        stages = network_stages(backbone_of(net, head))
        self.k, self.n_stages = k, len(stages)
        self.prefix = _Prefix(stages[:k])
        self.suffix = SuffixClassifier(net, head, stages[k:])
        self.frozen_parameters = {id(p) for p in self.prefix.parameters()}

    def fingerprint(self) -> str:
        """sha256 of the frozen stages' weights and buffers: what their output depends on, besides the input."""
        import hashlib

        h = hashlib.sha256()
        for name, t in self.prefix.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def freeze(self) -> None:
        """No gradient and eval mode (pretrained batch-norm statistics) for the frozen stages."""
        for p in self.prefix.parameters():
            p.requires_grad_(False)
        self.prefix.eval()


# --- views: the D4 group, drawn as the uncached cell augmentation draws them ------------------------------------
_PROBE = np.arange(6).reshape(2, 3)


def _apply_draw(a: np.ndarray, hflip: bool, vflip: bool, k: int) -> np.ndarray:
    # PIL's FLIP_LEFT_RIGHT / FLIP_TOP_BOTTOM / ROTATE_90 (counter-clockwise) on an array
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1, :]
    return np.rot90(a, k)


D4_VIEWS = [(h, v, k) for h in (False, True) for v in (False,) for k in range(4)]  # 8 canonical elements
_CANON = {_apply_draw(_PROBE, *d).tobytes() + bytes(_apply_draw(_PROBE, *d).shape): i for i, d in enumerate(D4_VIEWS)}


def view_of_draw(hflip: bool, vflip: bool, k: int) -> int:
    """Index in :data:`D4_VIEWS` of the image that the draws (hflip, vflip, k quarter turns) produce."""
    a = _apply_draw(_PROBE, hflip, vflip, k)
    return _CANON[a.tobytes() + bytes(a.shape)]


def draw_view(rng, ops) -> int:
    """The view :class:`deepfeat.finetuning.training.CellAugment` would produce with ``rng`` (same draws, same
    order), for ``ops`` without colour."""
    hflip = vflip = False
    k = 0
    if "flip" in ops:
        hflip = rng.random() < 0.5
        vflip = rng.random() < 0.5
    if "rot90" in ops:
        k = int(rng.integers(4))
    return view_of_draw(hflip, vflip, k)


def needed_views(ops) -> list[int]:
    """The views an augmentation without colour can produce."""
    if not ops:
        return [0]
    seen = set()
    for h in ((False, True) if "flip" in ops else (False,)):
        for v in ((False, True) if "flip" in ops else (False,)):
            for k in (range(4) if "rot90" in ops else (0,)):
                seen.add(view_of_draw(h, v, k))
    return sorted(seen)


def apply_view(img, view: int):
    """The PIL image ``img`` transformed by view ``view`` of :data:`D4_VIEWS` (exact: no interpolation)."""
    from PIL import Image

    hflip, _, k = D4_VIEWS[view]
    if hflip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if k:
        img = img.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                             Image.Transpose.ROTATE_270)[k])
    return img


class _ViewOf:
    def __init__(self, view):
        self.view = view

    def __call__(self, img):
        return apply_view(img, self.view)


# --- the activation cache ----------------------------------------------------------------------------------------
# Process-wide: the folds of one in-fold cross-validation share it, so each image and view passes the frozen stages
# once per run, not once per fold. Keyed by the trunk's identity (model, weights hash, k, input transform) and the
# image's sha256; one trunk identity is kept at a time, so memory is bounded by one network's activations.
_CACHE: dict = {"identity": None, "rows": {}}


def trunk_identity(model: str, split: TrunkSplit, data_config: dict, crop_border, device, amp_dtype) -> str:
    """What the cached activations depend on besides the image: the network, its frozen stages' weights, the input
    transform, the device and the autocast dtype. The training run and the fold features both key the cache so."""
    from deepfeat.finetuning.checkpoints import plain

    return "|".join(map(str, (model, split.fingerprint(), split.k, plain(data_config), crop_border, str(device),
                              amp_dtype)))


def trunk_activations(split: TrunkSplit, identity: str, paths, sha256, views, transform, *, device, amp_dtype,
                      channels_last, batch_size, workers) -> dict:
    """``{(sha256, view): activation tensor (CPU, fp32)}`` for every image and view, computing only the missing."""
    from torch.utils.data import DataLoader

    from deepfeat.errors import ImageReadError
    from deepfeat.extraction.preprocessing import Compose, ImageDataset, collate_images

    if _CACHE["identity"] != identity:
        _CACHE["identity"], _CACHE["rows"] = identity, {}
    rows = _CACHE["rows"]
    split.freeze()
    for view in views:
        todo = [i for i, s in enumerate(sha256) if (s, view) not in rows]
        if not todo:
            continue
        ds = ImageDataset([paths[i] for i in todo], Compose([_ViewOf(view), transform]) if view else transform)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_images,
                            pin_memory=device.type == "cuda")
        with torch.no_grad():
            for x, idx, failures in loader:
                if failures:
                    raise ImageReadError(failures[0][1].path, f"{failures[0][1].reason}; fix or remove unreadable "
                                         "images before fine-tuning")
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if amp_dtype is not None:
                    with torch.autocast(device.type, dtype=amp_dtype):
                        h = split.prefix(x)
                else:
                    h = split.prefix(x)
                h = h.float().cpu().contiguous()
                for j, i in enumerate(idx.tolist()):
                    rows[(sha256[todo[i]], view)] = h[j].clone()
    return rows


def clear_trunk_cache() -> None:
    """Forget every cached activation (the next fine-tuning computes its trunk again)."""
    _CACHE["identity"], _CACHE["rows"] = None, {}


class CachedEpoch(torch.utils.data.Dataset):
    """Cached activations with integer targets, in the ``(x, index)`` form the training loop's loaders give; an
    epoch's view per image is drawn from ``(seed, epoch, index)`` exactly as the uncached augmentation draws it."""

    def __init__(self, rows: dict, sha256, targets, *, ops=(), seed: int = 0):
        self.rows, self.sha256, self.ops, self.seed = rows, list(sha256), tuple(ops), int(seed)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.epoch = 0

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        view = draw_view(np.random.default_rng([self.seed, self.epoch, int(i)]), self.ops) if self.ops else 0
        return self.rows[(self.sha256[i], view)], i


def collate_cached(batch):
    x = torch.stack([b[0] for b in batch])
    return x, torch.as_tensor([b[1] for b in batch], dtype=torch.long), []
