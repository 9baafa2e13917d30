"""Paired statistics: the corrected resampled t-test against a hand-worked example and two independent
implementations (scipy's t distribution directly, and baycomp's correlated Bayesian t-test)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.compare import (
    bayesian_t_test,
    compare_scores,
    corrected_t_test,
)


def test_corrected_t_worked_example_by_hand():
    # 10 folds, 1 repeat, 100 images: n_test = 10, n_train = 90.
    d = [0.02, 0.03, -0.01, 0.04, 0.00, 0.02, 0.05, 0.01, 0.03, 0.01]
    mean = sum(d) / 10  # 0.020
    var = sum((x - mean) ** 2 for x in d) / 9  # squared deviations sum to 0.0030: sample variance 0.0030 / 9
    assert mean == pytest.approx(0.02) and var == pytest.approx(0.003 / 9)
    se = math.sqrt((1 / 10 + 10 / 90) * var)  # Nadeau & Bengio: 1/(k r) + n_test/n_train
    t = mean / se  # = 0.02 / sqrt(0.21111 * 0.00033333) = 0.02 / 0.0083887 = 2.3842
    assert t == pytest.approx(2.3842, abs=1e-4)
    got = corrected_t_test(d, 10 / 90)
    assert got["t"] == pytest.approx(t) and got["dof"] == 9
    assert got["p_value"] == pytest.approx(2 * stats.t.sf(t, 9))
    assert got["p_value"] == pytest.approx(0.0409, abs=1e-4)  # t table, 9 dof: between 0.05 (2.262) and 0.02
    plain = stats.ttest_1samp(d, 0.0)
    assert plain.pvalue == pytest.approx(0.0071, abs=1e-4)  # uncorrected: 5.8x too confident here
    assert plain.pvalue < got["p_value"] / 5
    q = stats.t.ppf(0.975, 9)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((mean - q * se, mean + q * se))
    assert got["ci_low"] > 0  # consistent with p < 0.05


def test_corrected_t_repeated_cv_form():
    # Bouckaert & Frank: r x k values, variance factor 1/(k r) + n_test/n_train, k r - 1 dof.
    rng = np.random.default_rng(3)
    d = rng.normal(0.01, 0.02, size=30)  # 3 x 10-fold
    got = corrected_t_test(d, 1 / 9)
    se = np.sqrt((1 / 30 + 1 / 9) * d.var(ddof=1))
    assert got["dof"] == 29
    assert got["t"] == pytest.approx(d.mean() / se)
    assert got["p_value"] == pytest.approx(2 * stats.t.sf(abs(d.mean() / se), 29))


def test_corrected_t_agrees_with_baycomp_posterior():
    # baycomp's correlated t-test has the same Student posterior (rho = 1/k  <=>  n_test/n_train = 1/(k-1)):
    # with rope 0 its P(A worse) is the corrected one-sided p-value.
    pytest.importorskip("baycomp")
    rng = np.random.default_rng(0)
    a = 0.90 + rng.normal(0, 0.02, 20)
    b = a - 0.01 + rng.normal(0, 0.015, 20)  # 2 x 10-fold
    got = corrected_t_test(a - b, 1 / 9)
    bayes = bayesian_t_test(a, b, rope=0.0, runs=2)
    assert bayes["p_worse"] == pytest.approx(got["p_value"] / 2, rel=1e-6)
    with_rope = compare_scores(a, b, 1 / 9, repeats=2, rope=0.01)
    assert with_rope["p_better"] + with_rope["p_rope"] + with_rope["p_worse"] == pytest.approx(1.0)
    assert with_rope["rope"] == 0.01


def test_corrected_t_degenerate_and_bad_input():
    assert corrected_t_test([0.0, 0.0, 0.0], 0.5)["p_value"] == 1.0
    assert corrected_t_test([0.25, 0.25, 0.25], 0.5)["p_value"] == 0.0
    with pytest.raises(DeepfeatError, match="needs >= 2 paired fold scores"):
        corrected_t_test([0.1], 0.5)
    with pytest.raises(DeepfeatError, match="test_train_ratio must be > 0"):
        corrected_t_test([0.1, 0.2], 0.0)
