"""Paired statistics of configurations scored on the same cross-validation folds.

Fold scores of one cross-validation are not independent (training sets overlap), so the plain paired t-test is far
too confident. The corrected resampled t-test (Nadeau & Bengio 2003, in the form of Bouckaert & Frank 2004 for r x
k-fold CV) inflates the variance of the per-fold differences ``d_j`` (j = 1..k*r):

    t = mean(d) / sqrt((1 / (k*r) + n_test / n_train) * var(d)),   var with ddof=1,   k*r - 1 degrees of freedom.

The 95 % interval is ``mean(d) +- t_{0.975, k*r-1} * sqrt(...)``. Optionally (when ``baycomp`` is installed) the
correlated Bayesian t-test (Corani & Benavoli 2015) gives the posterior probabilities that the first
configuration is better, practically equivalent (|difference| < ROPE), or worse.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from deepfeat.errors import DeepfeatError

__all__ = ["bayesian_t_test", "compare_configs", "compare_scores", "corrected_t_test", "fold_size_ratio"]


def corrected_t_test(diffs, test_train_ratio: float, *, confidence: float = 0.95) -> dict:
    """Corrected resampled t-test of paired per-fold differences (all folds of all repeats).

    Parameters
    ----------
    diffs : array-like of shape (k * r,)
        Score of A minus score of B on each fold of each repeat.
    test_train_ratio : float
        ``n_test / n_train`` of the folds (``1 / (k - 1)`` for equal folds).
    confidence : float
        Of the interval.

    Returns
    -------
    dict
        ``mean_diff``, ``ci_low``, ``ci_high``, ``p_value`` (two-sided), ``t``, ``dof``, ``se``.

    Examples
    --------
    >>> r = corrected_t_test([0.02, 0.03, 0.01, 0.04, 0.0], 0.25)
    >>> round(r["mean_diff"], 3), r["dof"], round(r["p_value"], 3)
    (0.02, 4, 0.132)
    """
    d = np.asarray(diffs, dtype=float).ravel()
    n = d.size
    if n < 2:
        raise DeepfeatError(f"the corrected t-test needs >= 2 paired fold scores; got {n}")
    if not test_train_ratio > 0:
        raise DeepfeatError(f"test_train_ratio must be > 0; got {test_train_ratio}")
    mean, dof = float(d.mean()), n - 1
    se = float(np.sqrt((1.0 / n + test_train_ratio) * d.var(ddof=1)))
    q = stats.t.ppf(0.5 + confidence / 2, dof)
    if se == 0.0:  # identical differences on every fold: no spread to test against
        t, p = (0.0, 1.0) if mean == 0 else (float(np.sign(mean) * np.inf), 0.0)
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), dof))
    return {"mean_diff": mean, "ci_low": mean - q * se, "ci_high": mean + q * se, "p_value": p, "t": float(t),
            "dof": dof, "se": se}


def bayesian_t_test(a, b, *, rope: float = 0.01, runs: int = 1) -> dict | None:
    """Correlated Bayesian t-test via ``baycomp``: ``p_better`` (A > B + rope), ``p_rope``, ``p_worse``.

    baycomp corrects for the fold correlation with ``rho = 1 / k`` (k = ``len(a) / runs``), the same
    ``n_test / n_train = 1 / (k - 1)`` as :func:`corrected_t_test` for equal folds. None when baycomp is absent.
    """
    try:
        from baycomp import two_on_single
    except ImportError:
        return None
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.all(a == b):
        return {"p_better": 0.0, "p_rope": 1.0, "p_worse": 0.0}
    if np.var(a - b) == 0:  # baycomp divides by the spread; a constant non-zero difference is certain
        worse = float(np.mean(a - b) < 0)
        inside = float(abs(np.mean(a - b)) < rope)
        return {"p_better": (1 - worse) * (1 - inside), "p_rope": inside, "p_worse": worse * (1 - inside)}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = two_on_single(a, b, rope=rope, runs=runs)
    if rope == 0:
        return {"p_better": float(p[0]), "p_rope": 0.0, "p_worse": float(p[1])}
    return {"p_better": float(p[0]), "p_rope": float(p[1]), "p_worse": float(p[2])}


def compare_scores(a, b, test_train_ratio: float, *, repeats: int = 1, rope: float | None = 0.01) -> dict:
    """Paired comparison of two score vectors on the same folds: corrected t, plus Bayesian when available."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    out = corrected_t_test(a - b, test_train_ratio)
    if rope is not None:
        bayes = bayesian_t_test(a, b, rope=rope, runs=repeats)
        if bayes is not None:
            out.update(bayes, rope=rope)
    return out


def fold_size_ratio(results) -> float:
    """Mean ``n_test / n_train`` over the folds of a :class:`~deepfeat.evaluation.results.CVResults`."""
    n = results.config["featureset"]["n_rows"]
    first = results.predictions["config"].iloc[0]
    sizes = results.predictions.loc[results.predictions["config"] == first].groupby(["repeat", "fold"]).size()
    n_test = float(sizes.mean())
    return n_test / (n - n_test)


def fold_scores(results, metric: str = "accuracy") -> pd.DataFrame:
    """Per-fold ``metric``: one column per configuration (summary order), rows ``(repeat, fold)``."""
    table = results.per_fold.pivot_table(index=["repeat", "fold"], columns="config", values=metric)
    return table[[c for c in results.summary["config"] if c in table.columns]]


def compare_configs(results, *, metric: str = "accuracy", rope: float | None = 0.01) -> pd.DataFrame:
    """Every pair of configurations of ``results`` (scored on the same folds): difference, interval, p-value.

    Parameters
    ----------
    results : CVResults
    metric : str
        Per-fold metric compared (default accuracy).
    rope : float or None
        Region of practical equivalence for the Bayesian test (None: skip it). The Bayesian columns
        (``p_better``, ``p_rope``, ``p_worse``: A better / equivalent / worse) appear when baycomp is installed.

    Returns
    -------
    pandas.DataFrame
        One row per pair, A before B in table order: ``config_a``, ``config_b``, ``<metric>_a``, ``<metric>_b``,
        ``mean_diff`` (A - B), ``ci_low``, ``ci_high`` (95 %), ``p_value`` (corrected resampled t-test), ``t``,
        ``dof``, and the Bayesian columns with ``rope``.
    """
    scores = fold_scores(results, metric)
    ratio = fold_size_ratio(results)
    repeats = int(results.config["parameters"]["repeats"])
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        x, z = scores[a].to_numpy(), scores[b].to_numpy()
        ok = ~(np.isnan(x) | np.isnan(z))
        if ok.sum() < 2:
            continue
        res = compare_scores(x[ok], z[ok], ratio, repeats=repeats, rope=rope)
        res.pop("se")
        rows.append({"config_a": a, "config_b": b, f"{metric}_a": float(x[ok].mean()),
                     f"{metric}_b": float(z[ok].mean()), **res})
    cols = ["config_a", "config_b", f"{metric}_a", f"{metric}_b", "mean_diff", "ci_low", "ci_high", "p_value", "t",
            "dof"]
    return pd.DataFrame(rows, columns=cols + [c for c in ("p_better", "p_rope", "p_worse", "rope")
                                              if rows and c in rows[0]])


def lookup(comparisons: pd.DataFrame, a: str, b: str) -> dict | None:
    """The comparison of ``a`` against ``b`` (signs flipped when stored as b vs a), or None."""
    hit = comparisons[(comparisons.config_a == a) & (comparisons.config_b == b)]
    if len(hit):
        return hit.iloc[0].to_dict()
    hit = comparisons[(comparisons.config_a == b) & (comparisons.config_b == a)]
    if not len(hit):
        return None
    r = hit.iloc[0].to_dict()
    flipped = {**r, "config_a": a, "config_b": b, "mean_diff": -r["mean_diff"], "ci_low": -r["ci_high"],
               "ci_high": -r["ci_low"], "t": -r["t"]}
    for k in [c for c in r if c.endswith("_a") and c != "config_a"]:
        flipped[k], flipped[k[:-2] + "_b"] = r[k[:-2] + "_b"], r[k]
    if "p_better" in r:
        flipped["p_better"], flipped["p_worse"] = r["p_worse"], r["p_better"]
    return flipped
