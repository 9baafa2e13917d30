"""Few-shot episodes drawn from a FeatureSet: which rows are support and which are query, leak-free.

An *image* here is a unique sha256: byte-identical rows collapse to their first row (the others are never used),
so one picture cannot sit on both sides of an episode. When subject ids exist, an episode's support and query
share no subject (across all of its classes). Episodes depend only on ``seed`` and the rows' labels, sha256 and
subject ids, so two FeatureSets of the same images (deep features, colour histograms) get the same episodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepfeat.errors import DeepfeatError

_MAX_TRIES = 50  # redraws of a grouped episode whose subjects cannot fill both sides


@dataclass
class EpisodePlan:
    """Row indices of ``n_episodes`` episodes of ``ways`` classes, ``shots`` support and ``queries`` query images
    per class: ``support`` (E, W, K), ``query`` (E, W, Q), ``classes`` (E, W) indices into ``class_names``."""

    ways_label: str
    shots: int
    queries: int
    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray
    class_names: np.ndarray
    eligible: list = field(default_factory=list)
    too_small: dict = field(default_factory=dict)

    @property
    def n_episodes(self) -> int:
        return self.support.shape[0]

    @property
    def n_ways(self) -> int:
        return self.support.shape[1]


def image_units(sha256, n: int) -> tuple[np.ndarray, int]:
    """Representative rows (first row of each distinct sha256, in row order) and how many rows were dropped."""
    if sha256 is None:
        return np.arange(n), 0
    _, first = np.unique(np.asarray(sha256), return_index=True)
    first = np.sort(first)
    return first, n - len(first)


class EpisodeSampler:
    """Draw seeded episodes from labelled rows.

    Parameters
    ----------
    y : array-like of shape (n,)
        Class labels.
    sha256 : array-like of shape (n,), optional
        Image hashes: duplicates count as one image.
    groups : array-like of shape (n,), optional
        Subject ids: support and query of an episode never share one.
    """

    def __init__(self, y, *, sha256=None, groups=None):
        y = np.asarray(y)
        self.n_rows = len(y)
        self.units, self.n_duplicates = image_units(sha256, len(y))
        self.class_names, y_codes = np.unique(y[self.units], return_inverse=True)
        self.unit_class = y_codes
        self.groups = None if groups is None else np.asarray([str(g) for g in np.asarray(groups)])[self.units]
        self.by_class = [self.units[self.unit_class == c] for c in range(len(self.class_names))]

    def counts(self) -> dict:
        return {str(c): len(r) for c, r in zip(self.class_names, self.by_class)}

    def plan(self, ways, shots: int, queries: int, episodes: int, seed: int) -> EpisodePlan:
        """Episodes for one (ways, shots). ``ways``: an int or "all" (every class with >= shots + queries images).

        Raises
        ------
        DeepfeatError
            When fewer than ``ways`` (or 2) classes have ``shots + queries`` images, or subjects are too few to
            fill support and query apart.
        """
        need = shots + queries
        eligible = [c for c, r in enumerate(self.by_class) if len(r) >= need]
        too_small = {str(self.class_names[c]): len(r) for c, r in enumerate(self.by_class) if len(r) < need}
        n_ways = len(eligible) if ways == "all" else int(ways)
        label = f"all ({n_ways})" if ways == "all" else str(n_ways)
        if n_ways < 2 or len(eligible) < n_ways:
            raise DeepfeatError(
                f"{label}-way {shots}-shot with {queries} queries needs {max(n_ways, 2)} classes with >= {need} "
                f"distinct images each; only {len(eligible)} of {len(self.class_names)} have that many "
                f"(too small: {too_small})")
        rng = np.random.default_rng([seed, n_ways, shots, queries])
        # the classes of every episode at once: the first n_ways of a random permutation of the eligible ones
        classes = np.asarray(eligible)[rng.random((episodes, len(eligible))).argsort(axis=1)[:, :n_ways]]
        if self.groups is None:
            support, query = self._plan_images(classes, shots, queries, rng)
        else:
            support, query = self._plan_subjects(classes, shots, queries, rng)
        return EpisodePlan(label, shots, queries, support, query, classes, self.class_names, eligible, too_small)

    def _plan_images(self, classes, shots, queries, rng):
        """Vectorised: for each class, one random permutation of its images per episode; first K support, next Q
        query. Distinct positions of one permutation are distinct images, so the sides never overlap."""
        E, W = classes.shape
        support = np.empty((E, W, shots), dtype=np.int64)
        query = np.empty((E, W, queries), dtype=np.int64)
        for c in np.unique(classes):
            rows = self.by_class[c]
            pick = rows[rng.random((E, len(rows))).argsort(axis=1)[:, :shots + queries]]
            e, w = np.nonzero(classes == c)
            support[e, w] = pick[e, :shots]
            query[e, w] = pick[e, shots:]
        return support, query

    def _plan_subjects(self, classes, shots, queries, rng):
        """Per episode: walk each class's subjects in random order, giving whole subjects to the support side until
        it holds ``shots`` images; query images come only from subjects never used on the support side."""
        E, W = classes.shape
        support = np.empty((E, W, shots), dtype=np.int64)
        query = np.empty((E, W, queries), dtype=np.int64)
        unit_groups = {r: g for r, g in zip(self.units, self.groups)}
        for e in range(E):
            for _ in range(_MAX_TRIES):
                drawn = self._one_grouped(classes[e], shots, queries, rng, unit_groups)
                if drawn is not None:
                    support[e], query[e] = drawn
                    break
            else:
                raise DeepfeatError(
                    f"cannot draw a {W}-way {shots}-shot episode with {queries} queries in which support and query "
                    f"share no subject (tried {_MAX_TRIES} times): too few subjects per class; lower --shots / "
                    "--queries or use --groups none (image-level episodes, optimistic if a subject has many images)")
        return support, query

    def _one_grouped(self, episode_classes, shots, queries, rng, unit_groups):
        side: dict[str, str] = {}
        sup, qry = [], []
        for c in episode_classes:
            rows = self.by_class[c]
            subjects = np.unique([unit_groups[r] for r in rows])
            chosen: list[int] = []
            for s in subjects[rng.permutation(len(subjects))]:
                if len(chosen) >= shots:
                    break
                if side.get(s) == "Q":
                    continue
                side[s] = "S"
                mine = [r for r in rows if unit_groups[r] == s]
                chosen += list(rng.permutation(mine))
            if len(chosen) < shots:
                return None
            pool = [r for r in rows if side.get(unit_groups[r]) != "S"]
            if len(pool) < queries:
                return None
            q = list(rng.choice(pool, size=queries, replace=False))
            for r in q:
                side[unit_groups[r]] = "Q"
            sup.append(chosen[:shots])
            qry.append(q)
        return np.asarray(sup), np.asarray(qry)
