"""Image sources: which image files to read, with their labels and subject groups, in a fixed order.

:func:`open_source` turns what a user points at (a class-folder tree, a CSV, a folder of unlabelled images, a list
of files, or a dataset root plus a manifest from ``data_manifests/``) into an :class:`ImageSource`. Everything
downstream (extraction, cross-validation, prediction) works on that object, so the rules live here once:
hidden files and folders are ignored, extensions match case-insensitively, order is sorted and deterministic.
"""
from __future__ import annotations

import csv
import os
import re
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from deepfeat.data.images import IMAGE_EXTENSIONS, is_image_file
from deepfeat.data.manifests import (
    DatasetManifest,
    check_counts,
    list_manifests,
    load_manifest,
)
from deepfeat.errors import DeepfeatError
from deepfeat.fileio import regular_file_problem


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
        folders not followed (see :func:`_walk_images`). Never silently dropped: :func:`open_source` warns.
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


def _visible(name: str) -> bool:
    # Hidden entries (.DS_Store, .ipynb_checkpoints) and macOS archive debris are never data.
    return not name.startswith(".") and name != "__MACOSX"


def _walk_images(folder: str, skipped: list | None = None, others: Sequence[str] = ()) -> list[str]:
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
            if not _visible(entry.name):
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


def _no_images(folder: str) -> DeepfeatError:
    return DeepfeatError(
        f"no images found in folder {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} in any letter case, "
        "hidden files ignored)"
    )


def _from_folder(folder: str, manifest: DatasetManifest | None) -> ImageSource:
    try:
        entries = sorted(e for e in os.listdir(folder) if _visible(e))
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
    per_class = {d: _walk_images(os.path.join(folder, d), skipped, [r for e, r in reals.items() if e != d])
                 for d in subdirs}
    per_class = {d: files for d, files in per_class.items() if files}
    if top_images and per_class:
        raise DeepfeatError(
            f"folder {folder} has {len(top_images)} images at its top level and class sub-folders "
            f"({', '.join(per_class)}): put every image in a class folder, or point at a folder of images only"
        )
    if top_images:
        return ImageSource([os.path.join(folder, f) for f in top_images], None, None, name, folder, skipped)
    if not per_class:
        raise _no_images(folder)
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
    return ImageSource(paths, labels, None, name, folder, skipped)


def _labelled_by_file_name(folder: str, manifest: DatasetManifest) -> ImageSource:
    skipped: list = []
    files = _walk_images(folder, skipped)
    if not files:
        raise _no_images(folder)
    labels = [manifest.label_of(f) for f in files]
    unmatched = [f for f, lab in zip(files, labels) if lab is None]
    if unmatched:
        raise DeepfeatError(
            f"{len(unmatched)} of {len(files)} images under {folder} do not match the file-name patterns of dataset "
            f"manifest {manifest.name} ({', '.join(r.pattern.pattern for r in manifest.label_rules)}), "
            f"e.g. {unmatched[0]}; open the folder without manifest= if it is laid out in class folders"
        )
    return ImageSource([os.path.join(folder, *f.split("/")) for f in files], labels, None, manifest.name, folder,
                       skipped)


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


# Files that mark the top of a dataset (a sample list, a manifest, a licence), not a class folder.
_DATASET_MARKERS = (".csv", ".toml", ".json", ".md", ".txt", ".yaml", ".yml")


def check_class_level(source: ImageSource) -> None:
    """Refuse a folder one level above the dataset: its "classes" would be datasets (or folds) of classes.

    Called by :func:`open_source` for a labelled folder. A class folder is *dataset-like* when its images all lie
    in two or more sub-folders and either it holds a dataset file (a ``.csv``/``.toml``/README... beside them) or
    several classes hold sub-folders of the same names (``fold_0/all``, ``fold_1/all``). Then the error names the
    level to use. Classes that differ in depth (some hold images, others only sub-folders) are a warning.
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
            source = _from_folder(path, m)
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
