"""Image sources: which image files to read, with their labels and subject groups, in a fixed order.

:func:`open_source` turns what a user points at (a class-folder tree, a CSV, a folder of unlabelled images, a list
of files, or a dataset root plus a manifest from ``data_manifests/``) into an :class:`ImageSource`. Everything
downstream (extraction, cross-validation, prediction) works on that object, so the rules live in one place:
hidden files and folders are ignored, extensions match case-insensitively, order is sorted and deterministic
(folder trees: :mod:`deepfeat.data.folders`; CSV lists, file lists and subject groups: here).
"""
from __future__ import annotations

import csv
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from deepfeat.data.folders import check_class_level, read_folder
from deepfeat.data.images import IMAGE_EXTENSIONS, is_image_file
from deepfeat.data.manifests import (
    DatasetManifest,
    check_counts,
    list_manifests,
    load_manifest,
)
from deepfeat.errors import DeepfeatError
from deepfeat.fileio import regular_file_problem

__all__ = ["ImageSource", "check_class_level", "expand_image_paths", "open_source"]


@dataclass
class ImageSource:
    """Image files with optional labels and subject groups, in a fixed order.

    Parameters
    ----------
    paths : list of str
        Image file paths.
    labels : list of str or None
        One class name per path; None for an unlabelled source (prediction).
    groups : list of str or None
        One subject id per path (for subject-grouped folds); None when unknown.
    name : str
        Short name for reports (folder, CSV or manifest name).
    root : str or None
        The folder the paths were found under, when there is one.
    skipped : list of (str, str)
        Entries found but not used, with the reason: FIFOs and devices named like images, broken links, symlinked
        folders not followed (see :func:`deepfeat.data.folders.walk_images`). Never silently dropped: :func:`open_source` warns.
    """

    paths: list[str]
    labels: list[str] | None = None
    groups: list[str] | None = None
    name: str = "images"
    root: str | None = None
    skipped: list = field(default_factory=list)

    def __post_init__(self):
        self.paths = [os.fspath(p) for p in self.paths]
        for field_name in ("labels", "groups"):
            values = getattr(self, field_name)
            if values is None:
                continue
            values = [str(v) for v in values]
            if len(values) != len(self.paths):
                raise DeepfeatError(
                    f"ImageSource {self.name!r}: {len(values)} {field_name} for {len(self.paths)} paths"
                )
            setattr(self, field_name, values)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def class_names(self) -> list[str]:
        """Sorted distinct labels (empty for an unlabelled source)."""
        return sorted(set(self.labels)) if self.labels is not None else []

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class, in ``class_names`` order."""
        counts = Counter(self.labels or [])
        return {c: counts[c] for c in self.class_names}

    @property
    def is_single_class(self) -> bool:
        """True when labelled with only one class: fine to extract, but nothing to cross-validate."""
        return self.labels is not None and len(set(self.labels)) == 1

    def subset(self, idx: Sequence[int]) -> "ImageSource":
        """A new source with the rows at ``idx`` (integer positions, in the order given)."""
        idx = [int(i) for i in idx]
        pick = (lambda seq: [seq[i] for i in idx])
        return ImageSource(
            paths=pick(self.paths),
            labels=None if self.labels is None else pick(self.labels),
            groups=None if self.groups is None else pick(self.groups),
            name=self.name,
            root=self.root,
        )


def _from_csv(csv_path: str) -> ImageSource:
    base = os.path.dirname(os.path.abspath(csv_path))
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DeepfeatError(f"CSV manifest {csv_path} is not UTF-8 text: {exc}") from None
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DeepfeatError(
            f"CSV manifest {csv_path} lacks column(s) {missing}; its header is {header} "
            "(needs 'path' and 'label', optional 'group')"
        )
    if not rows:
        raise DeepfeatError(f"CSV manifest {csv_path} has a header but no rows")
    has_group = "group" in header
    paths, labels, groups = [], [], []
    for i, raw in enumerate(rows, start=2):  # line 1 is the header
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"CSV manifest {csv_path}, line {i}"
        if not row["path"]:
            raise DeepfeatError(f"{where}: empty 'path'")
        if not row["label"]:
            raise DeepfeatError(f"{where}: empty 'label' for {row['path']}")
        if has_group and not row["group"]:
            raise DeepfeatError(f"{where}: empty 'group' for {row['path']} (fill every row or drop the column)")
        full = os.path.normpath(os.path.join(base, os.path.expanduser(row["path"])))
        problem = regular_file_problem(full)
        if problem is not None:
            problem = "does not exist" if problem == "no such file" else problem
            raise DeepfeatError(f"{where}: image {row['path']!r} {problem} (looked at {full})")
        paths.append(full)
        labels.append(row["label"])
        if has_group:
            groups.append(row["group"])
    return ImageSource(paths, labels, groups if has_group else None, Path(csv_path).stem, base)


def _from_list(items) -> ImageSource:
    paths = [os.fspath(p) for p in items]
    if not paths:
        raise DeepfeatError("open_source got an empty list of image paths")
    for p in paths:
        problem = regular_file_problem(p)  # a FIFO or device would block the reader forever
        if problem is not None:
            problem = "does not exist or is not a file" if problem == "no such file" else problem
            raise DeepfeatError(f"image {p} {problem}")
    return ImageSource(paths, None, None, "images", None)


def _apply_groups(source: ImageSource, groups, manifest: DatasetManifest | None) -> ImageSource:
    names = [os.path.basename(p) for p in source.paths]
    if groups is not None:
        if isinstance(groups, str):
            try:
                pattern = re.compile(groups)
            except re.error as exc:
                raise DeepfeatError(f"groups={groups!r} is not a valid regular expression: {exc}") from None
            found = []
            for n in names:
                m = pattern.search(n)
                if m is None:
                    raise DeepfeatError(f"groups regex {groups!r} does not match file name {n!r}")
                found.append(m.groupdict().get("group") or (m.group(1) if pattern.groups else m.group(0)))
        elif callable(groups):
            found = [str(groups(p)) for p in source.paths]
        else:
            found = [str(g) for g in groups]
            if len(found) != len(source):
                raise DeepfeatError(f"groups has {len(found)} entries for {len(source)} images in {source.name}")
        source.groups = found
    elif manifest is not None and manifest.group_rules and source.groups is None:
        found = [manifest.group_of(n) for n in names]
        unmatched = [n for n, g in zip(names, found) if g is None]
        if len(unmatched) == len(names):
            warnings.warn(
                f"no file name under {source.root} matches the subject patterns of {manifest.name}; "
                "the source has no groups, so subject-grouped folds are impossible", stacklevel=3)
        elif unmatched:
            raise DeepfeatError(
                f"{len(unmatched)} of {len(names)} files under {source.root} give no subject id with the patterns "
                f"of {manifest.name} ({', '.join(manifest.group_regex)}), e.g. {unmatched[0]}"
            )
        else:
            source.groups = found
    return source


def open_source(
    spec,
    *,
    manifest: str | os.PathLike | DatasetManifest | None = None,
    groups: str | Sequence[str] | Callable[[str], str] | None = None,
    warn_skipped: bool = True,
) -> ImageSource:
    """Open images to read: a class-folder tree, a CSV, an unlabelled folder, a list of files, or a dataset.

    Parameters
    ----------
    spec : str, path-like, list of paths, or ImageSource
        - a folder of class sub-folders (ImageFolder layout; images at any depth inside a class folder);
        - a folder holding images and no class sub-folders: an unlabelled source (for prediction);
        - a ``.csv`` file with columns ``path``, ``label`` and optional ``group`` (relative paths resolve
          against the CSV's folder);
        - a single image file or a list of image files: unlabelled;
        - with ``manifest``: the data root of that dataset (its default sub-folder, e.g. ``Original/``, is
          used when the root holds it).
    manifest : str, path-like or DatasetManifest, optional
        A dataset manifest name (see :func:`deepfeat.data.manifests.list_manifests`) or ``.toml`` path. It maps
        folder names to class names, derives labels and subject groups from file names where the dataset
        encodes them, and warns when the class counts differ from the published ones.
    groups : str, sequence of str or callable, optional
        Subject ids, overriding any from the CSV or manifest: one per image, a callable ``path -> id``, or a
        regular expression searched in each file name (its ``group`` named group, else its first group, else
        the whole match).
    warn_skipped : bool, default=True
        Warn when entries were skipped unopened (FIFOs, devices, links not followed). ``False`` when the caller
        reports ``source.skipped`` itself (``deepfeat extract`` lists them with the class counts).

    Returns
    -------
    ImageSource
        Sorted and deterministic for folders; CSV and list order otherwise. A source with a single class is
        returned (``is_single_class`` is True) for extraction; cross-validation refuses it.

    Raises
    ------
    deepfeat.errors.DeepfeatError
        When nothing usable is found; the message names the folder, CSV line or file at fault.

    Examples
    --------
    >>> import tempfile
    >>> from deepfeat.data.synthetic import make_synthetic_smears
    >>> src = make_synthetic_smears(tempfile.mkdtemp(), n_per_class=3, seed=1)
    >>> again = open_source(src.root)
    >>> len(again), again.class_names[0]
    (12, 'synthetic_blast')
    """
    m = load_manifest(manifest) if manifest is not None else None
    if isinstance(spec, ImageSource):
        source = replace(spec)  # never mutate the caller's object
    elif isinstance(spec, (list, tuple)):
        source = _from_list(spec)
    else:
        path = os.fspath(spec)
        if path.lower().endswith(".toml"):
            raise DeepfeatError(
                f"{path} is a dataset manifest; pass the data root and the manifest: "
                f"open_source(DATA_ROOT, manifest={path!r})"
            )
        if not os.path.exists(path):
            if path in list_manifests():
                raise DeepfeatError(
                    f"{path!r} is the name of a dataset manifest, not a folder; pass the data root and the name: "
                    f"open_source(DATA_ROOT, manifest={path!r}) (CLI: SOURCE --manifest {path})"
                )
            raise DeepfeatError(f"{path} does not exist")
        if os.path.isdir(path):
            if m is not None and m.default_subfolder and os.path.isdir(os.path.join(path, m.default_subfolder)):
                path = os.path.join(path, m.default_subfolder)
            source = ImageSource(**read_folder(path, m))
            check_class_level(source)
        elif path.lower().endswith(".csv"):
            source = _from_csv(path)
        elif is_image_file(path):
            source = _from_list([path])
        else:
            raise DeepfeatError(
                f"{path} is neither a folder, a .csv manifest nor an image file ({', '.join(IMAGE_EXTENSIONS)})"
            )
    source = _apply_groups(source, groups, m)
    if source.skipped and warn_skipped:
        shown = "; ".join(f"{p}: {why}" for p, why in source.skipped[:5])
        more = f" (and {len(source.skipped) - 5} more)" if len(source.skipped) > 5 else ""
        warnings.warn(f"{source.root or source.name}: {len(source.skipped)} entr(y/ies) skipped, never opened: "
                      f"{shown}{more}", stacklevel=2)
    if m is not None:
        problems = check_counts(source, m)
        if problems:
            warnings.warn(
                f"{source.root or source.name}: class counts differ from dataset manifest {m.name} (expected for "
                "the full published set): " + "; ".join(problems), stacklevel=2)
    return source


def expand_image_paths(items) -> list[str]:
    """Image files and folders (searched like :func:`open_source`) -> one list of image paths, in order.

    Raises DeepfeatError naming an item that does not exist, or when nothing was found.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.png").write_bytes(b"")
    >>> [pathlib.Path(p).name for p in expand_image_paths([d / "a.png"])]
    ['a.png']
    """
    paths: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(open_source(p).paths)
        elif p.exists():
            paths.append(str(p))
        else:
            raise DeepfeatError(f"{item} does not exist")
    if not paths:
        raise DeepfeatError(f"no images found in {', '.join(map(str, items))}")
    return paths
