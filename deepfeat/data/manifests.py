"""Dataset manifests: TOML files in ``data_manifests/`` describing a public dataset and how to read it.

A manifest says what a dataset is (citation, licence, where to get it), which classes it has and how many images
of each to expect, how its class folders are named (``class_aliases``), and, where the file names encode them,
how to derive the label and the subject (``group``) of each image (``label_rules`` / ``group_rules``: regular
expressions matched against the file's base name with :func:`re.fullmatch`, whose named groups fill a
``str.format`` template). ``examples`` list sample file names with the label and group they must give; the
tests check every manifest against its own examples.

Where manifests are looked up, in order: an explicit ``.toml`` path; the folders in ``$DEEPFEAT_MANIFESTS``
(``os.pathsep``-separated, for your own datasets); ``deepfeat/data_manifests/`` inside an installed wheel (the
build maps the top-level folder there); the top-level ``data_manifests/`` beside the ``deepfeat`` package in a
source checkout or editable install. The top-level folder is the single source: nothing is copied by hand.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deepfeat.errors import DeepfeatError
from deepfeat.fileio import read_toml

_KNOWN_KEYS = {
    "name", "title", "citation", "license", "url", "where_to_get", "image_format", "notes", "label_from",
    "class_names", "class_aliases", "expected_counts", "subfolders", "default_subfolder", "label_rules",
    "group_rules", "examples",
}
# An installed wheel carries the top-level data_manifests/ as deepfeat/data_manifests/ (pyproject package-dir
# mapping); a source checkout or editable install reads the top-level folder itself.
_PACKAGED_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"
_REPO_MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"


@dataclass(frozen=True)
class FileNameRule:
    """A regular expression on a file's base name and the template its named groups fill."""

    pattern: re.Pattern
    template: str

    def apply(self, file_name: str) -> str | None:
        match = self.pattern.fullmatch(file_name)
        return None if match is None else self.template.format(**match.groupdict())


@dataclass(frozen=True)
class DatasetManifest:
    """What a public dataset is and how to read it; see the module docstring for the TOML keys."""

    name: str
    citation: str
    license: str
    url: str
    class_names: tuple[str, ...]
    title: str = ""
    where_to_get: str = ""
    image_format: str = ""
    notes: str = ""
    label_from: str = "folder"
    class_aliases: dict[str, str] = field(default_factory=dict)
    expected_counts: dict[str, int] = field(default_factory=dict)
    subfolders: dict[str, str] = field(default_factory=dict)
    default_subfolder: str | None = None
    label_rules: tuple[FileNameRule, ...] = ()
    group_rules: tuple[FileNameRule, ...] = ()
    examples: tuple[dict, ...] = ()
    path: str | None = None

    @property
    def group_regex(self) -> tuple[str, ...]:
        """The regular expressions that give the subject of a file (empty when the names carry none)."""
        return tuple(rule.pattern.pattern for rule in self.group_rules)

    def class_of_folder(self, folder_name: str) -> str | None:
        """Class name of a class folder (through ``class_aliases``), or None when it is not one of the classes."""
        name = self.class_aliases.get(folder_name, folder_name)
        return name if name in self.class_names else None

    def label_of(self, file_name: str) -> str | None:
        """Label given by the first matching ``label_rules`` entry (aliases applied), or None."""
        for rule in self.label_rules:
            value = rule.apply(os.path.basename(file_name))
            if value is not None:
                return self.class_aliases.get(value, value)
        return None

    def group_of(self, file_name: str) -> str | None:
        """Subject id given by the first matching ``group_rules`` entry, or None."""
        for rule in self.group_rules:
            value = rule.apply(os.path.basename(file_name))
            if value is not None:
                return value
        return None


def _search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("DEEPFEAT_MANIFESTS", "").split(os.pathsep) if p]
    dirs += [_PACKAGED_MANIFESTS, _REPO_MANIFESTS]
    seen, unique = set(), []
    for d in dirs:
        key = os.path.realpath(d)
        if key not in seen and d.is_dir():
            seen.add(key)
            unique.append(d)
    return unique


def list_manifests() -> list[str]:
    """Names of the dataset manifests that :func:`load_manifest` can find by name, sorted."""
    return sorted({p.stem for d in _search_dirs() for p in d.glob("*.toml")})


def _rules(raw, key: str, value_key: str, where: str) -> tuple[FileNameRule, ...]:
    if not isinstance(raw, list):
        raise DeepfeatError(f"{where}: '{key}' must be an array of tables [[{key}]] with 'pattern' and '{value_key}'")
    rules = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != {"pattern", value_key}:
            raise DeepfeatError(f"{where}: {key}[{i}] must have exactly the keys 'pattern' and '{value_key}'")
        try:
            pattern = re.compile(entry["pattern"])
        except re.error as exc:
            raise DeepfeatError(f"{where}: {key}[{i}] pattern {entry['pattern']!r} is not a valid regex: {exc}") from None
        unknown = set(re.findall(r"{(\w+)}", entry[value_key])) - set(pattern.groupindex)
        if unknown:
            raise DeepfeatError(f"{where}: {key}[{i}] template uses {sorted(unknown)} that the pattern does not name")
        rules.append(FileNameRule(pattern, entry[value_key]))
    return tuple(rules)


def _parse(data: dict, where: str) -> DatasetManifest:
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise DeepfeatError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_KNOWN_KEYS)})")
    missing = [k for k in ("name", "citation", "license", "url", "class_names") if k not in data]
    if missing:
        raise DeepfeatError(f"{where}: missing required keys {missing}")
    classes = tuple(str(c) for c in data["class_names"])
    if len(set(classes)) != len(classes) or not classes:
        raise DeepfeatError(f"{where}: 'class_names' must be a non-empty list of distinct names")
    aliases = {str(k): str(v) for k, v in data.get("class_aliases", {}).items()}
    counts = {str(k): int(v) for k, v in data.get("expected_counts", {}).items()}
    for what, names in (("class_aliases values", aliases.values()), ("expected_counts keys", counts)):
        stray = sorted(set(names) - set(classes))
        if stray:
            raise DeepfeatError(f"{where}: {what} {stray} are not in class_names {list(classes)}")
    label_from = data.get("label_from", "folder")
    if label_from not in ("folder", "file_name"):
        raise DeepfeatError(f"{where}: 'label_from' must be 'folder' or 'file_name'; got {label_from!r}")
    label_rules = _rules(data.get("label_rules", []), "label_rules", "label", where)
    if label_from == "file_name" and not label_rules:
        raise DeepfeatError(f"{where}: label_from = 'file_name' needs [[label_rules]]")
    subfolders = {str(k): str(v) for k, v in data.get("subfolders", {}).items()}
    default_sub = data.get("default_subfolder")
    if default_sub is not None and default_sub not in subfolders.values():
        raise DeepfeatError(f"{where}: default_subfolder {default_sub!r} is not one of subfolders {subfolders}")
    return DatasetManifest(
        name=str(data["name"]), citation=str(data["citation"]).strip(), license=str(data["license"]).strip(),
        url=str(data["url"]), class_names=classes, title=str(data.get("title", "")),
        where_to_get=str(data.get("where_to_get", "")).strip(), image_format=str(data.get("image_format", "")),
        notes=str(data.get("notes", "")).strip(), label_from=label_from, class_aliases=aliases,
        expected_counts=counts, subfolders=subfolders, default_subfolder=default_sub,
        label_rules=label_rules, group_rules=_rules(data.get("group_rules", []), "group_rules", "group", where),
        examples=tuple(dict(e) for e in data.get("examples", [])), path=where,
    )


def load_manifest(name_or_path) -> DatasetManifest:
    """Read a dataset manifest by name (``"taleqani_all"``) or from a ``.toml`` path.

    Parameters
    ----------
    name_or_path : str, path-like or DatasetManifest
        A manifest name as listed by :func:`list_manifests`, or a path to a TOML file. A
        :class:`DatasetManifest` is returned unchanged.

    Returns
    -------
    DatasetManifest

    Raises
    ------
    deepfeat.errors.DeepfeatError
        Unknown name (the message lists the known ones), unreadable TOML, or invalid content.

    Examples
    --------
    >>> m = load_manifest("pbc_2020")
    >>> len(m.class_names), sum(m.expected_counts.values())
    (8, 17092)
    """
    if isinstance(name_or_path, DatasetManifest):
        return name_or_path
    text = os.fspath(name_or_path)
    candidate = Path(text)
    if candidate.suffix.lower() != ".toml" and not candidate.is_file():
        for d in _search_dirs():
            if (d / f"{text}.toml").is_file():
                candidate = d / f"{text}.toml"
                break
        else:
            raise DeepfeatError(
                f"unknown dataset manifest {text!r}; known: {', '.join(list_manifests()) or '(none found)'}. "
                "Pass a .toml path or add its folder to $DEEPFEAT_MANIFESTS."
            )
    try:
        data = read_toml(candidate, "dataset manifest")
    except FileNotFoundError:
        raise DeepfeatError(f"dataset manifest {candidate} does not exist") from None
    return _parse(data, str(candidate))


def check_counts(source, manifest) -> list[str]:
    """Compare a source's class counts with a manifest's ``expected_counts``.

    Parameters
    ----------
    source : ImageSource
        Anything with a ``labels`` list (None for an unlabelled source).
    manifest : DatasetManifest or str
        The manifest, or its name/path.

    Returns
    -------
    list of str
        One line per discrepancy (missing class, unexpected class, different count); empty when all agree.
        Callers warn with these; a subset of a dataset (one fold) legitimately differs.
    """
    manifest = load_manifest(manifest)
    if not manifest.expected_counts:
        return []
    if source.labels is None:
        return [f"source is unlabelled; manifest {manifest.name} expects classes {list(manifest.expected_counts)}"]
    found = Counter(source.labels)
    problems = []
    for cls, expected in manifest.expected_counts.items():
        if found.get(cls, 0) != expected:
            problems.append(f"class {cls!r}: expected {expected} images, found {found.get(cls, 0)}")
    for cls in sorted(set(found) - set(manifest.expected_counts)):
        problems.append(f"class {cls!r}: {found[cls]} images, but {manifest.name} has no such class")
    return problems
