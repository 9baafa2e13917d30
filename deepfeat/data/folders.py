"""Class-folder trees: the folder walker and the folder layouts an :class:`~deepfeat.data.sources.ImageSource`
is read from (class sub-folders, an unlabelled folder, labels in file names), and the check that a folder is one
of classes, not of datasets.

The rules live here once: hidden files and folders are ignored, extensions match case-insensitively, order is
sorted and deterministic, a folder that cannot be listed is an error, and nothing found but not used is dropped
silently (every such entry goes to ``skipped`` with its reason). :func:`deepfeat.data.sources.open_source` is the
door; these functions return the fields of the source it builds.
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Sequence

from deepfeat.data.images import IMAGE_EXTENSIONS, is_image_file
from deepfeat.data.manifests import DatasetManifest
from deepfeat.errors import DeepfeatError
from deepfeat.fileio import regular_file_problem

__all__ = ["check_class_level", "read_folder", "visible", "walk_images"]


def visible(name: str) -> bool:
    """False for hidden entries (.DS_Store, .ipynb_checkpoints) and macOS archive debris: never data."""
    return not name.startswith(".") and name != "__MACOSX"


def walk_images(folder: str, skipped: list | None = None, others: Sequence[str] = ()) -> list[str]:
    """Image files anywhere under ``folder`` as sorted relative POSIX paths; never silent, never stuck.

    - A folder that cannot be listed (no permission, I/O error) is an error naming it: a class must never go
      missing quietly.
    - Symlinked folders are followed, but each real folder is entered at most once, and a link that points at
      one of its own ancestors (``loop -> ..``), or into another class folder (``others``, real paths), is not
      entered at all, so no image gets a second, wrong label; all are listed in ``skipped``.
    - Entries that are not regular files or folders (FIFOs, devices, sockets) and broken links are never opened;
      those with an image extension are listed in ``skipped``.
    """
    skipped = [] if skipped is None else skipped
    found: list[str] = []
    visited: set[str] = set()

    def walk(path: str, rel: str, ancestors: tuple[str, ...]):
        real = os.path.realpath(path)
        here = ancestors[-1] if ancestors else None
        if real in ancestors or (here is not None and here.startswith(real.rstrip(os.sep) + os.sep)):
            skipped.append((path, f"symlinked folder points at its own ancestor {real}; not followed"))
            return
        inside = [o for o in others if real == o or real.startswith(o.rstrip(os.sep) + os.sep)]
        if inside:
            skipped.append((path, f"symlinked folder points into another class folder {inside[0]}; not followed "
                                  "(its images keep their own label)"))
            return
        if real in visited:
            skipped.append((path, f"folder {real} was already read through another path; not read twice"))
            return
        visited.add(real)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DeepfeatError(
                f"cannot read folder {path}: {exc.strerror or exc}. Its images would silently go missing; fix its "
                "permissions, or move it out of the data folder") from None
        for entry in entries:
            if not visible(entry.name):
                continue
            sub = entry.name if not rel else f"{rel}/{entry.name}"
            try:
                mode = os.stat(entry.path).st_mode  # follows links
            except OSError as exc:
                if is_image_file(entry.name):
                    skipped.append((entry.path, f"cannot stat ({exc.strerror or exc}; a broken link?)"))
                continue
            if stat.S_ISDIR(mode):
                walk(entry.path, sub, ancestors + (real,))
            elif is_image_file(entry.name):
                if stat.S_ISREG(mode):
                    found.append(sub)
                else:
                    skipped.append((entry.path, regular_file_problem(entry.path) or "is not a regular file"))

    walk(folder, "", ())
    return sorted(found)


def no_images_error(folder: str) -> DeepfeatError:
    """The error for a folder without any image, saying what was looked for."""
    return DeepfeatError(
        f"no images found in folder {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} in any letter case, "
        "hidden files ignored)"
    )


def read_folder(folder: str, manifest: DatasetManifest | None) -> dict:
    """The ImageSource fields (``paths, labels, groups, name, root, skipped``) of a folder: class sub-folders, images
    at its top (unlabelled), or, with a manifest that says so, labels from file names."""
    try:
        entries = sorted(e for e in os.listdir(folder) if visible(e))
    except OSError as exc:
        raise DeepfeatError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
    skipped: list = []
    subdirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    top_images = []
    for e in (e for e in entries if e not in subdirs and is_image_file(e)):
        problem = regular_file_problem(os.path.join(folder, e))
        if problem is None:
            top_images.append(e)
        else:
            skipped.append((os.path.join(folder, e), problem))
    name = manifest.name if manifest is not None else (os.path.basename(os.path.normpath(folder)) or folder)
    if manifest is not None and manifest.label_from == "file_name":
        return _labelled_by_file_name(folder, manifest)
    reals = {d: os.path.realpath(os.path.join(folder, d)) for d in subdirs}
    per_class = {d: walk_images(os.path.join(folder, d), skipped, [r for e, r in reals.items() if e != d])
                 for d in subdirs}
    per_class = {d: files for d, files in per_class.items() if files}
    if top_images and per_class:
        raise DeepfeatError(
            f"folder {folder} has {len(top_images)} images at its top level and class sub-folders "
            f"({', '.join(per_class)}): put every image in a class folder, or point at a folder of images only"
        )
    if top_images:
        return _fields([os.path.join(folder, f) for f in top_images], None, name, folder, skipped)
    if not per_class:
        raise no_images_error(folder)
    empty = sorted(set(subdirs) - set(per_class))
    if empty:
        warnings.warn(f"{folder}: sub-folders without images ignored: {', '.join(empty)}", stacklevel=3)
    paths, labels = [], []
    for class_dir, files in per_class.items():
        label = class_dir
        if manifest is not None:
            label = manifest.class_of_folder(class_dir)
            if label is None:
                raise DeepfeatError(
                    f"folder {os.path.join(folder, class_dir)} is not a class of dataset manifest {manifest.name} "
                    f"(classes: {', '.join(manifest.class_names)}; folder aliases: "
                    f"{', '.join(manifest.class_aliases) or 'none'})"
                )
        paths += [os.path.join(folder, class_dir, *f.split("/")) for f in files]
        labels += [label] * len(files)
    return _fields(paths, labels, name, folder, skipped)


def _labelled_by_file_name(folder: str, manifest: DatasetManifest) -> dict:
    skipped: list = []
    files = walk_images(folder, skipped)
    if not files:
        raise no_images_error(folder)
    labels = [manifest.label_of(f) for f in files]
    unmatched = [f for f, lab in zip(files, labels) if lab is None]
    if unmatched:
        raise DeepfeatError(
            f"{len(unmatched)} of {len(files)} images under {folder} do not match the file-name patterns of dataset "
            f"manifest {manifest.name} ({', '.join(r.pattern.pattern for r in manifest.label_rules)}), "
            f"e.g. {unmatched[0]}; open the folder without manifest= if it is laid out in class folders"
        )
    return _fields([os.path.join(folder, *f.split("/")) for f in files], labels, manifest.name, folder, skipped)


def _fields(paths, labels, name, root, skipped) -> dict:
    return {"paths": paths, "labels": labels, "groups": None, "name": name, "root": root, "skipped": skipped}


# Files that mark the top of a dataset (a sample list, a manifest, a licence), not a class folder.
_DATASET_MARKERS = (".csv", ".toml", ".json", ".md", ".txt", ".yaml", ".yml")


def check_class_level(source) -> None:
    """Refuse a folder one level above the dataset: its "classes" would be datasets (or folds) of classes.

    Called by :func:`~deepfeat.data.sources.open_source` for a labelled folder (an ImageSource: ``paths``,
    ``labels``, ``root``). A class folder is *dataset-like* when its images all lie in two or more sub-folders and
    either it holds a dataset file (a ``.csv``/``.toml``/README... beside them) or several classes hold sub-folders of
    the same names (``fold_0/all``, ``fold_1/all``). Then the error names the level to use. Classes that differ in
    depth (some hold images, others only sub-folders) are a warning.
    """
    if source.labels is None or source.root is None:
        return
    root = os.fspath(source.root)
    subs: dict[str, dict[str, int]] = {}  # class folder -> {image sub-folder: count}; "" = the class folder itself
    for p in source.paths:
        parts = Path(os.path.relpath(p, root)).parts
        if len(parts) >= 2:
            inner = subs.setdefault(parts[0], {})
            key = parts[1] if len(parts) >= 3 else ""
            inner[key] = inner.get(key, 0) + 1
    nested = {c: sorted(k for k in inner if k) for c, inner in subs.items() if "" not in inner and len(inner) >= 2}
    if not nested:
        return
    names = [set(v) for v in nested.values()]
    shared = len(names) >= 2 and any(a & b for i, a in enumerate(names) for b in names[i + 1:])
    marked = [c for c in nested if any(f.lower().endswith(_DATASET_MARKERS) or f.lower().startswith("readme")
                                       for f in os.listdir(os.path.join(root, c))
                                       if os.path.isfile(os.path.join(root, c, f)))]
    if marked or shared:
        first = (marked or sorted(nested))[0]
        raise DeepfeatError(
            f"{root} looks like a folder of datasets, not of classes: "
            + "; ".join(f"'{c}' holds {len(v)} class-like folders ({', '.join(v[:4])}{', ...' if len(v) > 4 else ''})"
                        for c, v in sorted(nested.items())[:3])
            + f". Did you mean {os.path.join(root, first)}? (Point at the folder whose sub-folders are the classes; "
            "extract each dataset on its own.) If those sub-folders really are parts of one class (e.g. patients), "
            "list the images in a CSV with columns path,label,group instead.")
    flat = sorted(c for c, inner in subs.items() if "" in inner)
    if flat:
        warnings.warn(
            f"{root}: class folders differ in depth: {', '.join(flat[:4])} hold images directly while "
            f"{', '.join(sorted(nested)[:4])} hold only sub-folders ({', '.join(next(iter(nested.values()))[:4])}); "
            "if those sub-folders are classes, point at the folder that holds them", stacklevel=3)
