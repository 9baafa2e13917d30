"""Few-shot evaluation of frozen features: N-way K-shot episodes, accuracy mean and 95 % confidence interval.

Choices (stated in every report):

- Classifiers are fitted on the support set only. Standardisation: by default (``standardize="support"``) knn,
  logreg and svm see features standardised with the mean / standard deviation of each episode's support set
  (never its queries); ``standardize="none"`` turns that off. The prototype methods always work on the features
  as they are; 1-shot episodes are never standardised (a scale from one image per class turns every feature into
  a sign: 2-way all_idb2_small svm fell from 61.1 % to 51.2 %). Measured on pbc_sample colour histograms, 8-way
  20-shot svm: 30.0 % without, 80.0 % with support standardisation: without it a baseline looks far weaker.
- ``prototype_euc``: nearest class mean, Euclidean. ``prototype_cos``: highest cosine similarity to the class mean
  of the L2-normalised support vectors. ``knn``: 1-nearest neighbour (Euclidean; the ``knn-fine`` preset, since a
  1-shot support holds one image per class). ``logreg``: ``LogisticRegression(C=1, lbfgs)``; ``svm``: the ``svm``
  preset (RBF, C=1, gamma='scale'). Prototypes and knn are batched over episodes (no Python loop per episode or
  query); logreg and svm fit once per episode.
- An integer ``ways`` larger than the number of classes, or a (ways, shots) whose classes lack ``shots + queries``
  distinct images, is *skipped* with its reason in ``FewShotResults.skipped`` (a UserWarning too): the other rows
  of the table are still computed. "all" means every class with enough images.
- 95 % CI: the logit-scale interval of :func:`deepfeat.evaluation.intervals.mean_interval` over the episodes (close
  to the usual mean +- 1.96 x standard error, but never outside 0-100 %; joined with the Wilson interval of the
  pooled queries, counted at most once per image of the FeatureSet); it describes the uncertainty of the mean over
  episodes drawn from *this* data set, not over data sets.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from deepfeat import defaults
from deepfeat.errors import DeepfeatError
from deepfeat.fewshot.episodes import EpisodePlan, EpisodeSampler

__all__ = ["METHODS", "FewShotResults", "episode_accuracies", "few_shot_evaluate", "parse_list"]

METHODS = ("prototype_cos", "prototype_euc", "knn", "logreg", "svm")
_ALIASES = {"prototype": ("prototype_cos", "prototype_euc")}
_CHUNK_BYTES = 256 * 2**20  # episodes gathered at once are capped at about this many bytes of float32


def parse_list(value, name: str, *, allow=(), minimum: int = 1) -> list:
    """``"2,5,all"`` or a sequence -> list of ints >= ``minimum`` (and the strings in ``allow``).

    Examples
    --------
    >>> parse_list("2,5,all", "ways", allow=("all",), minimum=2)
    [2, 5, 'all']
    >>> parse_list("1", "ways", minimum=2)
    Traceback (most recent call last):
    ...
    deepfeat.errors.DeepfeatError: The 'ways' parameter must hold integers >= 2; got 1
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        s = str(item).strip()
        if s in allow:
            out.append(s)
            continue
        try:
            v = int(s)
        except ValueError:
            raise DeepfeatError(f"The '{name}' parameter must be a comma list of integers >= {minimum}"
                                + (f" or {', '.join(allow)}" if allow else "") + f"; got {value!r}") from None
        if v < minimum:
            raise DeepfeatError(f"The '{name}' parameter must hold integers >= {minimum}; got {v}")
        out.append(v)
    if not out:
        raise DeepfeatError(f"The '{name}' parameter is empty")
    return out


def _classifier_names(classifiers) -> list[str]:
    out = []
    for m in (classifiers.split(",") if isinstance(classifiers, str) else classifiers):
        m = str(m).strip()
        for name in _ALIASES.get(m, (m,)):
            if name not in METHODS:
                raise DeepfeatError(f"The 'classifiers' parameter names an unknown few-shot method {m!r}; choose "
                                    f"from prototype, {', '.join(METHODS)}")
            if name not in out:
                out.append(name)
    return out


def _renamed_methods(methods):
    warnings.warn("few_shot_evaluate(methods=...) is renamed classifiers=... (method names an mRMR variant); "
                  "methods= keeps working in 0.3 and goes in 0.4", FutureWarning, stacklevel=3)
    return methods


# --- batched classifiers: X support (E, W, K, d), query (E, W*Q, d) -> predicted way index (E, W*Q) -------------
def _predict_prototype(S, Q, metric: str) -> np.ndarray:
    if metric == "cos":
        S = S / np.maximum(np.linalg.norm(S, axis=-1, keepdims=True), 1e-12)
        P = S.mean(axis=2)
        P = P / np.maximum(np.linalg.norm(P, axis=-1, keepdims=True), 1e-12)
        return (Q @ P.transpose(0, 2, 1)).argmax(axis=-1)  # same argmax as cosine: Q's norm is per row
    P = S.mean(axis=2)
    d2 = (P * P).sum(-1)[:, None, :] - 2 * (Q @ P.transpose(0, 2, 1))  # |q|^2 is the same for every class
    return d2.argmin(axis=-1)


def _predict_1nn(S, Q) -> np.ndarray:
    E, W, K, d = S.shape
    flat = S.reshape(E, W * K, d)
    d2 = (flat * flat).sum(-1)[:, None, :] - 2 * (Q @ flat.transpose(0, 2, 1))
    return d2.argmin(axis=-1) // K


def _standardise(S, Q):
    E, W, K, d = S.shape
    flat = S.reshape(E, W * K, d)
    mu = flat.mean(axis=1, keepdims=True)
    sd = flat.std(axis=1, keepdims=True)
    sd[sd == 0] = 1.0  # as StandardScaler: constant features are centred, not scaled
    return ((flat - mu) / sd).reshape(S.shape), (Q - mu) / sd


def _predict_fitted(S, Q, method: str, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    from deepfeat.classifiers.presets import get_classifier

    E, W, K, d = S.shape
    y = np.repeat(np.arange(W), K)
    out = np.empty(Q.shape[:2], dtype=np.int64)
    for e in range(E):
        Se, Qe = S[e].reshape(W * K, d), Q[e]
        if method == "logreg":
            # The L2-penalised solution w lies in the span of the support rows (representer theorem; the intercept
            # is unpenalised), so fitting on coordinates in an orthonormal basis of that span gives the same model
            # in <= W*K dimensions instead of d: ~100x faster on 1,000-d features, same predictions.
            basis = np.linalg.svd(Se.astype(np.float64), full_matrices=False)[2]
            Se, Qe = Se @ basis.T, Qe @ basis.T
            est = LogisticRegression(C=1.0, max_iter=1000)
        else:
            est = get_classifier("svm", seed=seed)
        est.fit(Se, y)
        out[e] = est.predict(Qe)
    return out


def episode_accuracies(X, plan: EpisodePlan, method: str, *, standardize: str = "support",
                       seed: int = 0) -> np.ndarray:
    """Accuracy of ``method`` on each episode of ``plan`` (features ``X``, rows indexed by the plan)."""
    X = np.asarray(X, dtype=np.float32)
    E, W, K = plan.support.shape
    Qn = plan.query.shape[2]
    truth = np.repeat(np.arange(W), Qn)
    per = W * (K + Qn) * X.shape[1] * 4 * (3 if method.startswith("prototype") or method == "knn" else 1)
    chunk = max(1, _CHUNK_BYTES // max(per, 1))
    acc = np.empty(E)
    for a in range(0, E, chunk):
        S = X[plan.support[a:a + chunk]]                       # (e, W, K, d)
        Q = X[plan.query[a:a + chunk]].reshape(S.shape[0], W * Qn, -1)
        # 1 shot: the support's per-feature scale comes from one image per class, which turns every feature into
        # a +-1 sign (2-way all_idb2_small svm: 51.2 % with it vs 61.1 % without), so 1-shot is never standardised
        if standardize == "support" and K >= 2 and not method.startswith("prototype"):
            S, Q = _standardise(S, Q)
        if method == "prototype_cos":
            pred = _predict_prototype(S, Q, "cos")
        elif method == "prototype_euc":
            pred = _predict_prototype(S, Q, "euc")
        elif method == "knn":
            pred = _predict_1nn(S, Q)
        else:
            pred = _predict_fitted(S, Q, method, seed)
        acc[a:a + chunk] = (pred == truth).mean(axis=1)
    return acc


def ci95(acc, n_queries: int | None = None):
    """The 95 % :func:`~deepfeat.evaluation.intervals.mean_interval` of per-episode accuracies (a proportion, inside
    [0, 1]); ``n_queries``: the distinct query images the episodes pooled."""
    from deepfeat.evaluation.intervals import mean_interval

    return mean_interval(acc, bounds=(0.0, 1.0), n_items=n_queries)


@dataclass
class FewShotResults:
    """``table``: one row per (features, ways, shots, method) with accuracy mean, 95 % CI and episodes/s;
    ``per_episode``: every episode's accuracy; ``skipped``: configurations not run and why; ``statements``: the
    honesty sentences the report prints first (also :meth:`honesty_lines`); ``config``: every parameter, seeds and
    versions."""

    table: pd.DataFrame
    per_episode: pd.DataFrame
    skipped: list = field(default_factory=list)
    statements: list = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def honesty_lines(self) -> list[str]:
        """The honesty statements, one sentence each (as ``CVResults.honesty_lines()``)."""
        return list(self.statements)

    @property
    def honesty(self) -> list:
        """Deprecated: the list of sentences, now :meth:`honesty_lines` (``honesty`` names the structured record
        of ``CVResults``)."""
        import warnings

        warnings.warn("FewShotResults.honesty (a list of sentences) is deprecated and will be removed after 0.3; "
                      "use FewShotResults.honesty_lines()", FutureWarning, stacklevel=2)
        return self.statements

    def display(self) -> pd.DataFrame:
        """Compact table: ``mean (95 % interval)`` in %, one column per method."""
        from deepfeat.evaluation.intervals import mean_with_interval

        t = self.table.copy()
        t["acc"] = [mean_with_interval(m, lo, hi)
                    for m, lo, hi in zip(t["accuracy_mean"], t["ci_low"], t["ci_high"])]
        return t.pivot_table(index=["features", "ways", "shots"], columns="method", values="acc", aggfunc="first",
                             sort=False)


def _honesty(features, sampler, grouped: bool, standardize: str, query_rows: set) -> list[str]:
    lines = [f"Episodes: support and query of an episode never share an image; {sampler.n_duplicates} "
             "byte-identical duplicate rows (same sha256) were counted as one image."
             if features.sha256 is not None else
             "Episodes: support and query never share a row, but the FeatureSet records no sha256, so byte-identical "
             "duplicate images could not be detected."]
    lines.append("Support and query never share a subject (FeatureSet subject ids)." if grouped else
                 "Episodes are NOT grouped by subject (no subject ids): images of one patient may be on both sides "
                 "of an episode (optimistic if they are).")
    lines.append("Classifiers were fitted on each episode's support set only; "
                 + ("knn/logreg/svm standardised with a scaler fitted on the support set only; prototypes on raw "
                    "features (1-shot episodes are not standardised: one image per class gives no usable scale)."
                    if standardize == "support" else "no standardisation (features used as they are)."))
    ft = features.meta.get("finetune")
    if ft:
        train = set(ft.get("train_sha256") or []) | set(ft.get("val_sha256") or [])  # val picked the epoch
        if features.sha256 is None or not train:
            lines.append("WARNING: the backbone was fine-tuned, but the training-image hashes or the FeatureSet's "
                         "sha256 are missing: whether query images were seen in training is unknown.")
        else:
            seen = sum(features.sha256[r] in train for r in query_rows)
            if seen:
                lines.append(f"WARNING: the backbone was fine-tuned (or validated) on {seen} of the "
                             f"{len(query_rows)} images used as queries: those accuracies are optimistic.")
            else:
                lines.append(f"The backbone was fine-tuned and validated on {len(train)} images, none of which "
                             f"appears in any query set ({len(query_rows)} query images checked by sha256).")
    return lines


def _feature_sets(features, baseline) -> tuple[list, str]:
    """(name, X) of the features and of the baseline (when there is one), and why a histogram baseline is absent."""
    sets = [("features", features.X)]
    hist_note = ""
    if baseline is None or isinstance(baseline, str):  # the one check (evaluation.parameters.resolve_baseline)
        from deepfeat.evaluation.honesty import histogram_features
        from deepfeat.evaluation.parameters import resolve_baseline

        wanted = resolve_baseline(baseline)
        hist, hist_note = histogram_features(features, wanted) if wanted in ("auto", "histogram") else (None, "")
        baseline = None if hist is None else ("colour-histogram", hist)
    if baseline is not None:
        name, Xb = baseline
        Xb = np.asarray(Xb, dtype=np.float32)
        if Xb.shape[0] != len(features):
            raise DeepfeatError(f"baseline features have {Xb.shape[0]} rows; the FeatureSet has {len(features)}")
        sets.append((name, Xb))
    return sets, hist_note


def _evaluate_plan(plan, k: int, sets, method_l, *, queries: int, episodes: int, standardize: str, seed: int,
                   progress: bool, rows: list, per_ep: list) -> None:
    """Every feature set x method on the episodes of ``plan``: one row of ``rows`` and one frame of ``per_ep``."""
    for set_name, X in sets:
        for m in method_l:
            t0 = time.perf_counter()
            acc = episode_accuracies(X, plan, m, standardize=standardize, seed=seed)
            dt = time.perf_counter() - t0
            iv = ci95(acc, n_queries=min(queries * plan.n_ways * episodes, len(X)))
            mean, half = iv.mean, iv.half
            rows.append({"features": set_name, "ways": plan.ways_label, "n_ways": plan.n_ways, "shots": k,
                         "queries": queries, "method": m, "episodes": episodes, "accuracy_mean": mean,
                         "ci95": half, "ci_low": iv.low, "ci_high": iv.high, "accuracy_std": iv.sd,
                         "episodes_per_s": episodes / dt if dt > 0 else float("inf"),
                         "classes_used": len(plan.eligible), "classes_too_small": len(plan.too_small)})
            per_ep.append(pd.DataFrame({"features": set_name, "ways": plan.ways_label, "shots": k,
                                        "method": m, "episode": np.arange(episodes), "accuracy": acc}))
            if progress:
                print(f"{set_name} {plan.ways_label}-way {k}-shot {m}: {100 * mean:.1f} ± {100 * half:.1f} %"
                      f" ({episodes / dt:.0f} episodes/s)")


def few_shot_evaluate(features, *, ways=defaults.FEWSHOT_WAYS, shots=defaults.FEWSHOT_SHOTS,
                      queries: int = defaults.FEWSHOT_QUERIES, episodes: int = defaults.FEWSHOT_EPISODES,
                      classifiers=defaults.FEWSHOT_CLASSIFIERS, groups=defaults.GROUPS,
                      standardize: str = defaults.FEWSHOT_STANDARDIZE, seed: int = defaults.SEED,
                      baseline=defaults.BASELINE, progress: bool = False, methods=None) -> FewShotResults:
    """Few-shot accuracy of ``features`` over seeded N-way K-shot episodes.

    Parameters
    ----------
    features : FeatureSet
        Labelled features (any FeatureSet, fused ones included); ``sha256`` and ``groups`` are used when present.
    ways : sequence of int or "all", or a comma string
    shots : sequence of int, or a comma string
    queries : int
        Query images per class per episode.
    episodes : int
    classifiers : sequence of str, or a comma string
        The few-shot classifiers: "prototype" (= prototype_cos + prototype_euc), "prototype_cos",
        "prototype_euc", "knn", "logreg", "svm".
    groups : "auto", "none" or None
        "auto": support and query never share a subject when the FeatureSet has subject ids.
    standardize : "support" (default) or "none"
        Standardise knn / logreg / svm inputs with the support set's statistics, or not at all.
    seed : int
        Episodes depend only on the seed and the rows' labels / sha256 / subjects.
    baseline : "auto", "histogram", "majority", "none" (None) or (name, array of shape (n, p))
        Other features of the same rows evaluated on the very same episodes: "auto" = colour histograms of the
        images when every path is reachable (else said so in the honesty statements), "histogram" requires them
        ("majority" and "none": no baseline; episodes have no majority-class row); a ``(name, array)`` pair gives
        them directly.
    methods : deprecated
        The 0.2 name of ``classifiers`` (a FutureWarning; removed in 0.4): ``method`` names an mRMR variant only.

    Returns
    -------
    FewShotResults

    Examples
    --------
    >>> import numpy as np
    >>> from deepfeat.features import FeatureSet
    >>> rng = np.random.default_rng(0)
    >>> fs = FeatureSet(np.r_[rng.normal(0, 1, (40, 3)), rng.normal(3, 1, (40, 3))], y=[0] * 40 + [1] * 40)
    >>> r = few_shot_evaluate(fs, ways=[2], shots=[1], queries=5, episodes=50, classifiers=["prototype_euc"])
    >>> round(float(r.table["accuracy_mean"].iloc[0]), 2) > 0.8
    True
    """
    from deepfeat import __version__

    features.check_trainable("few-shot evaluation")
    ways_l = parse_list(ways, "ways", allow=("all",), minimum=2)  # a 1-way episode has nothing to tell apart
    shots_l = parse_list(shots, "shots")
    method_l = _classifier_names(classifiers if methods is None else _renamed_methods(methods))
    if not isinstance(queries, (int, np.integer)) or queries < 1:
        raise DeepfeatError(f"The 'queries' parameter must be an int >= 1. Got {queries!r} instead.")
    if not isinstance(episodes, (int, np.integer)) or episodes < 2:
        raise DeepfeatError(f"The 'episodes' parameter must be an int >= 2. Got {episodes!r} instead.")
    if standardize not in ("none", "support"):
        raise DeepfeatError(f"The 'standardize' parameter must be 'none' or 'support'. Got {standardize!r} instead.")
    if groups not in ("auto", "none", None):
        raise DeepfeatError(f"The 'groups' parameter must be 'auto' or 'none'. Got {groups!r} instead.")
    grouped = groups == "auto" and features.groups is not None
    sampler = EpisodeSampler(features.y, sha256=features.sha256, groups=features.groups if grouped else None)
    n_classes = len(sampler.class_names)
    sets, hist_note = _feature_sets(features, baseline)
    rows, per_ep, skipped, query_rows, done = [], [], [], set(), set()
    for w in ways_l:
        if w != "all" and w > n_classes:
            skipped.append({"ways": str(w), "shots": None, "reason": f"{w}-way asked for, but the FeatureSet has "
                                                                     f"only {n_classes} classes"})
            continue
        for k in shots_l:
            try:
                plan = sampler.plan(w, k, queries, episodes, seed)
            except DeepfeatError as exc:
                skipped.append({"ways": str(w), "shots": k, "reason": str(exc)})
                continue
            if (plan.n_ways, k) in done:  # e.g. "all" on a 2-class set next to 2: the very same episodes
                skipped.append({"ways": str(w), "shots": k, "reason": f"same episodes as {plan.n_ways}-way "
                                                                      f"{k}-shot (listed once)"})
                continue
            done.add((plan.n_ways, k))
            query_rows.update(plan.query.ravel().tolist())
            _evaluate_plan(plan, k, sets, method_l, queries=queries, episodes=episodes, standardize=standardize,
                           seed=seed, progress=progress, rows=rows, per_ep=per_ep)
    for s in skipped:
        which = f"ways={s['ways']}" + ("" if s["shots"] is None else f" shots={s['shots']}")
        warnings.warn(f"few-shot: skipped {which}: {s['reason']}", UserWarning, stacklevel=2)
    if not rows:
        raise DeepfeatError("no few-shot configuration could be run: " + "; ".join(s["reason"] for s in skipped))
    import sklearn

    config = {"ways": [str(w) for w in ways_l], "shots": shots_l, "queries": queries, "episodes": episodes,
              "methods": method_l, "groups": groups, "grouped": grouped, "standardize": standardize, "seed": seed,
              "episode_seed_rule": "numpy default_rng([seed, n_ways, shots, queries])",
              "baseline": sets[1][0] if len(sets) > 1 else None, "class_counts_distinct_images": sampler.counts(),
              "n_rows": len(features), "n_features": features.n_features, "featureset_identity": features.identity(),
              "featureset_meta": features.meta,
              "versions": {"deepfeat": __version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}}
    lines = _honesty(features, sampler, grouped, standardize, query_rows)
    lines.append(f"Baseline '{sets[1][0]}' evaluated on the very same episodes." if len(sets) > 1 else
                 "No baseline features: " + (hist_note.split(";")[0] if hist_note else "none requested") + ".")
    return FewShotResults(pd.DataFrame(rows), pd.concat(per_ep, ignore_index=True), skipped, lines, config)
