"""Image data: decoding (images), what to read (sources), dataset descriptions (manifests), synthetic images, the
embedded PBC sample of the demo (demo_sample)."""
from __future__ import annotations

from deepfeat.data.demo_sample import ATTRIBUTION, export_demo_sample, sample_classes
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
    "ATTRIBUTION", "IMAGE_EXTENSIONS", "DatasetManifest", "ImageSource", "check_counts", "crop_dark_border",
    "export_demo_sample", "list_manifests", "load_image", "load_manifest", "make_synthetic_smears", "open_source",
    "sample_classes", "sha256_file",
]
