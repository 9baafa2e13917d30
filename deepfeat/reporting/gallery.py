"""The cells themselves: thumbnails of misclassified images and of duplicate images, embedded in the report.

Thumbnails are base64 JPEG data URIs, so one ``report.html`` carries them when mailed. The page size is bounded,
whatever the data set size, by :data:`GALLERY_LIMITS`: at most ``max_errors`` misclassified images (most confident
errors first) and ``max_duplicate_groups`` duplicate groups (conflicting labels first, ``max_per_group`` images
each), every thumbnail at most ``px`` pixels on its longer side at JPEG quality ``quality`` (about 2-5 kB each, so
about 0.5 MB at the caps). Beyond a cap the report says so ("showing 60 of 212 errors"); every prediction stays in
``predictions.csv``. An image that cannot be read (moved, deleted, no paths recorded) is listed by path and
counted instead of drawn.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from deepfeat.errors import ImageReadError

__all__ = ["GALLERY_LIMITS", "correct_gallery", "duplicate_gallery", "error_gallery", "misclassified_gallery",
           "thumbnail_uri"]

GALLERY_LIMITS = {"max_errors": 60, "max_duplicate_groups": 24, "max_per_group": 4, "px": 112, "quality": 70,
                  "correct_per_class": 2}


def thumbnail_uri(path, px: int = 112, quality: int = 70) -> str | None:
    """``data:image/jpeg;base64,...`` of a thumbnail of ``path`` (longer side <= ``px``), or None when unreadable."""
    from deepfeat.data.images import load_image

    try:
        img = load_image(path)
    except (ImageReadError, OSError, ValueError):
        return None
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cache(px, quality):
    made = {}

    def get(path):
        if path not in made:
            made[path] = thumbnail_uri(path, px, quality) if path and Path(path).is_file() else None
        return made[path]
    return get


def error_gallery(predictions, config: str, classes, *, limits: dict | None = None) -> dict:
    """Misclassified images of ``config`` (first repeat), most confident errors first.

    Confidence is the score of the predicted class: a probability for classifiers with ``predict_proba``, else the
    decision value (``score_kind`` says which). Returns ``items`` (dicts with ``uri`` (None when unreadable),
    ``path``, ``true``, ``pred``, ``score_pred``, ``score_true``, ``fold``), ``n_errors``, ``n_tested``, ``n_shown``,
    ``n_unreadable``, ``score_kind``, ``repeat`` and ``note`` (a sentence on what is shown).
    """
    p = predictions[predictions["config"] == config]
    repeat = int(p["repeat"].min()) if len(p) else 0
    p = p[p["repeat"] == repeat]
    wrong = p[p["true"].astype(str) != p["pred"].astype(str)].copy()
    kind = str(p["score_kind"].iloc[0]) if len(p) and "score_kind" in p else "score"
    names = [str(c) for c in classes]
    if len(wrong):
        scores = wrong[[f"score_{c}" for c in names]].to_numpy(dtype=float)
        col = {c: i for i, c in enumerate(names)}
        idx = np.arange(len(wrong))
        wrong["score_pred"] = scores[idx, [col[str(v)] for v in wrong["pred"]]]
        wrong["score_true"] = scores[idx, [col[str(v)] for v in wrong["true"]]]
    several = f" (repeat {repeat} of several)" if predictions["repeat"].nunique() > 1 else ""
    gallery = misclassified_gallery(wrong, len(p), limits=limits, tested=f"test images misclassified by {config}"
                                    f"{several}", listed_in="predictions.csv",
                                    recorded="the paths stored in the FeatureSet")
    return {**gallery, "score_kind": kind, "repeat": repeat, "config": config}


def correct_gallery(predictions, config: str, classes, *, limits: dict | None = None) -> dict:
    """The ``limits["correct_per_class"]`` most confident correct cells of each class of ``config`` (first
    repeat): what the classifier gets right, for comparison with its errors (and their saliency maps).

    Returns ``items`` (as :func:`error_gallery`'s, ``pred`` == ``true``), ``n_shown``, ``n_unreadable``,
    ``repeat``, ``score_kind``, ``config`` and ``note``.
    """
    lim = {**GALLERY_LIMITS, **(limits or {})}
    p = predictions[predictions["config"] == config]
    repeat = int(p["repeat"].min()) if len(p) else 0
    p = p[(p["repeat"] == repeat) & (p["true"].astype(str) == p["pred"].astype(str))]
    thumb = _cache(lim["px"], lim["quality"])
    items = []
    for name in (str(c) for c in classes):
        rows = p[p["true"].astype(str) == name]
        if not len(rows) or f"score_{name}" not in rows:
            continue
        rows = rows.assign(score_pred=rows[f"score_{name}"].astype(float)).sort_values(
            ["score_pred", "row"], ascending=[False, True], kind="stable").head(lim["correct_per_class"])
        for r in rows.to_dict("records"):
            path = str(r["path"]) if r.get("path") is not None and str(r["path"]) != "nan" else None
            items.append({"uri": thumb(path) if path else None, "path": path or f"row {r['row']}", "true": name,
                          "pred": name, "score_pred": float(r["score_pred"]), "score_true": None,
                          "fold": int(r["fold"])})
    unreadable = sum(it["uri"] is None for it in items)
    note = (f"The {lim['correct_per_class']} most confident correct cells of each class ({len(items)} shown).")
    if unreadable:
        note += f" {unreadable} could not be drawn: not reachable at the paths stored in the FeatureSet."
    kind = str(p["score_kind"].iloc[0]) if len(p) and "score_kind" in p else "score"
    return {"items": items, "n_shown": len(items), "n_unreadable": unreadable, "repeat": repeat, "note": note,
            "score_kind": kind, "config": config}


def misclassified_gallery(wrong, n_tested: int, *, limits: dict | None = None, tested: str,
                          listed_in: str | None = None, recorded: str) -> dict:
    """Thumbnails of misclassified images, most confident errors first, capped at ``limits["max_errors"]``.

    Parameters
    ----------
    wrong : DataFrame
        One row per misclassified image, columns ``true``, ``pred``, ``score_pred`` (the score of the predicted
        class) and optionally ``path`` (None: not recorded), ``row`` (ties are broken by it, else by order),
        ``score_true`` and ``fold``; without paths for every row shown, cards are named by ``row``.
    n_tested : int
        How many images were predicted.
    tested, listed_in, recorded : str
        Words of the note: "12 of 40 {tested}; ...", "(cap 60; all are in {listed_in})", "not reachable at
        {recorded}".

    Returns
    -------
    dict
        ``items``, ``n_errors``, ``n_tested``, ``n_shown``, ``n_unreadable``, ``note`` and ``limits``, as
        :func:`error_gallery`.
    """
    lim = {**GALLERY_LIMITS, **(limits or {})}
    if len(wrong):
        order = wrong["row"] if "row" in wrong.columns else np.arange(len(wrong))
        wrong = wrong.assign(_order=np.asarray(order)).sort_values(["score_pred", "_order"],
                                                                   ascending=[False, True], kind="stable")
    shown = wrong.head(lim["max_errors"])
    has_paths = "path" in shown.columns and shown["path"].notna().all()
    thumb = _cache(lim["px"], lim["quality"])
    items = []
    for r in shown.to_dict("records"):
        path = str(r["path"]) if has_paths else None
        items.append({"uri": thumb(path) if path else None, "path": path or f"row {r['row']}", "true": str(r["true"]),
                      "pred": str(r["pred"]), "score_pred": float(r["score_pred"]),
                      "score_true": None if r.get("score_true") is None else float(r["score_true"]),
                      "fold": None if r.get("fold") is None else int(r["fold"])})
    unreadable = [it["path"] for it in items if it["uri"] is None]
    cap = f"cap {lim['max_errors']}" + (f"; all are in {listed_in}" if listed_in else "")
    note = (f"{len(wrong)} of {n_tested} {tested}; "
            + (f"showing the {len(items)} most confident errors ({cap})" if len(items) < len(wrong)
               else f"showing all {len(items)}, most confident first") + ".")
    if unreadable:
        note += (f" {len(unreadable)} of them could not be drawn: the image files are not reachable at {recorded} "
                 f"(first: {unreadable[0]}).")
    return {"items": items, "n_errors": len(wrong), "n_tested": n_tested, "n_shown": len(items),
            "n_unreadable": len(unreadable), "note": note, "limits": lim}


def duplicate_gallery(duplicates: dict, *, limits: dict | None = None) -> dict:
    """Groups of byte-identical images side by side, conflicting labels first; same return shape idea as
    :func:`error_gallery` (``groups`` of ``images``, ``n_groups``, ``n_shown``, ``n_unreadable``, ``note``)."""
    lim = {**GALLERY_LIMITS, **(limits or {})}
    groups = list(duplicates.get("groups", []))
    groups.sort(key=lambda g: len(set(g["labels"])) == 1)  # conflicting first, otherwise in first-row order
    thumb = _cache(lim["px"], lim["quality"])
    shown, unreadable = [], 0
    for g in groups[:lim["max_duplicate_groups"]]:
        images = []
        for path, label in list(zip(g["paths"], g["labels"]))[:lim["max_per_group"]]:
            uri = thumb(path) if not path.startswith("row ") else None
            unreadable += uri is None
            images.append({"uri": uri, "path": path, "label": label})
        shown.append({"sha256": g["sha256"][:12], "conflict": len(set(g["labels"])) > 1, "images": images,
                      "n_images": len(g["paths"])})
    n_conf = sum(len(set(g["labels"])) > 1 for g in groups)
    note = (f"{len(groups)} group(s) of byte-identical images, {n_conf} with conflicting labels"
            + (f"; showing {len(shown)} (cap {lim['max_duplicate_groups']}, conflicting first)"
               if len(shown) < len(groups) else "") + ".")
    if unreadable:
        note += f" {unreadable} image(s) could not be drawn: not reachable at the stored paths."
    return {"groups": shown, "n_groups": len(groups), "n_shown": len(shown), "n_unreadable": unreadable,
            "note": note}
