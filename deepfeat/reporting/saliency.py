"""Saliency pictures: a Grad-CAM map (:mod:`deepfeat.explain`) drawn over the image the network saw.

The map is coloured with matplotlib's ``jet`` (red = most evidence for the explained score, blue/none = none) and
blended over the network input at ``ALPHA``; where the map is zero the image shows through unchanged. The report
embeds overlays as base64 JPEG beside the thumbnails (bounded like them by the gallery limits); ``deepfeat explain``
writes them as PNG files.
"""
from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from deepfeat import defaults

__all__ = ["ALPHA", "attach_saliency", "overlay_image", "overlay_uri"]

ALPHA = 0.5  # the map's opacity where it is strongest


def overlay_image(image: np.ndarray, cam: np.ndarray) -> Image.Image:
    """RGB ``image`` (H, W, 3 uint8) with ``cam`` (H, W in [0, 1]) blended over it, opacity growing with the map."""
    from matplotlib import colormaps

    cam = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    colour = colormaps["jet"](cam)[..., :3]
    alpha = (ALPHA * np.sqrt(cam))[..., None]  # weak evidence stays faint, strong evidence shows
    out = (1 - alpha) * (np.asarray(image, dtype=np.float32) / 255.0) + alpha * colour
    return Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))


def overlay_uri(image: np.ndarray, cam: np.ndarray, px: int = 112, quality: int = 70) -> str:
    """``data:image/jpeg;base64,...`` of the overlay, longer side at most ``px`` (as the gallery's thumbnails)."""
    img = overlay_image(image, cam)
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def attach_saliency(features, results, config: str | None, galleries, limits: dict, *,
                    device: str = defaults.DEVICE) -> dict:
    """Give every item of ``galleries`` (error and correct-cell galleries of ``config``) a ``saliency`` overlay.

    Each map explains the out-of-fold classifier that tested the image (:func:`deepfeat.explain.folds.fold_saliency`).
    Returns ``{"n_overlays", "note", "seconds", "target"}``; when no map can be made (no FeatureSet given, no
    single network behind the features, weights not available offline, images not reachable) ``n_overlays`` is 0
    and ``note`` says why. An item whose map disagrees with the CV prediction (a refit that decides otherwise)
    shows its map with the refit's class named.
    """
    import time

    items = [it for g in galleries if g for it in g["items"] if it.get("uri")]
    if features is None:
        return {"n_overlays": 0, "note": "Saliency maps were not drawn: the report was written without its "
                                         "FeatureSet (write_report(..., features=fs) draws them)."}
    if not config or not items:
        return {"n_overlays": 0, "note": "Saliency maps were not drawn: no reachable gallery image to explain (the "
                                         "images are not at the paths stored in the FeatureSet)."}
    from deepfeat.errors import DeepfeatError
    from deepfeat.explain.folds import fold_saliency

    repeat = {id(it): g.get("repeat", 0) for g in galleries if g for it in g["items"]}
    t0 = time.perf_counter()
    try:
        maps = fold_saliency(features, results, config,
                             [{"path": it["path"], "repeat": repeat[id(it)], "fold": it["fold"]} for it in items],
                             device=device)
    except (DeepfeatError, OSError) as exc:
        return {"n_overlays": 0, "note": f"Saliency maps were not drawn: {exc}"}
    n = 0
    for it in items:
        s = maps.get((repeat[id(it)], it["fold"], it["path"]))
        if s is None or s.map is None:
            continue
        it["saliency"] = overlay_uri(s.image, s.map, limits["px"], limits["quality"])
        it["saliency_note"] = ("no region raises the score (flat map)" if s.flat else
                               f"explains {s.predicted}" + ("" if s.predicted == it["pred"] else
                                                            " (the refit classifier's answer)"))
        n += 1
    seconds = time.perf_counter() - t0
    note = (f"{n} saliency overlays (Grad-CAM, red = most evidence): beside each thumbnail, where in the cell the "
            f"network's features carried the evidence for the out-of-fold {config} classifier's answer (its score "
            f"for the predicted class, differentiated through the features into the network's last feature map; "
            f"the fold's classifier refitted as in the run). Computed in {seconds:.1f} s.")
    return {"n_overlays": n, "note": note, "seconds": seconds}
