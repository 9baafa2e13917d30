"""Error types. Each subclasses the built-in (or scikit-learn) error a caller would already catch."""
from __future__ import annotations


class DeepfeatError(ValueError):
    """Bad input or configuration: the message names the file or parameter and what to do."""


class ImageReadError(DeepfeatError):
    """An image file could not be decoded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class WeightsUnavailableError(DeepfeatError):
    """No source could provide the requested weights; the message lists every source tried."""


class FeatureFileError(DeepfeatError):
    """A FeatureSet file is missing, malformed or inconsistent."""


class ModelFileError(DeepfeatError):
    """A saved model file failed its integrity or version check."""


class ExtractionInterrupted(KeyboardInterrupt):
    """An extraction stopped by Ctrl-C / SIGTERM; ``done`` of ``total`` images have their features cached."""

    def __init__(self, done: int, total: int, cached: bool = True):
        self.done, self.total, self.cached = int(done), int(total), bool(cached)
        super().__init__(f"{self.done} of {self.total} images cached; run the same command again to resume"
                         if cached else f"interrupted after {self.done} of {self.total} images (no cache: a rerun "
                         "starts again)")

    def __reduce__(self):
        return type(self), (self.done, self.total, self.cached)
