"""Image data: decoding (images), what to read (sources), dataset descriptions (manifests), synthetic images."""
from __future__ import annotations

from deepfeat.data.images import (
    IMAGE_EXTENSIONS,
    crop_dark_border,
    load_image,
    sha256_file,
)
from deepfeat.data.manifests import (
    DatasetManifest,
    check_counts,
    list_manifests,
    load_manifest,
)
from deepfeat.data.sources import ImageSource, open_source
from deepfeat.data.synthetic import make_synthetic_smears

__all__ = [
    "IMAGE_EXTENSIONS", "DatasetManifest", "ImageSource", "check_counts", "crop_dark_border", "list_manifests",
    "load_image", "load_manifest", "make_synthetic_smears", "open_source", "sha256_file",
]
