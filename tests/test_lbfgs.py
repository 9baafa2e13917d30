"""deepfeat.classifiers.lbfgs: the float32 L-BFGS behind the ann preset converges, stops by its rules, and says why."""
from __future__ import annotations

import numpy as np
import pytest

from deepfeat.classifiers.estimators import FullBatchMLP
from deepfeat.classifiers.lbfgs import minimize_lbfgs


def _rosenbrock(x):
    x = x.astype(np.float64)
    f = np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return float(f), g.astype(np.float32)


def test_rosenbrock_reaches_its_minimum():
    x, n_iter, why = minimize_lbfgs(_rosenbrock, np.full(6, -1.2, np.float32), max_iter=500, max_fun=2000,
                                    pgtol=1e-4)
    assert why in ("pgtol", "ftol") and n_iter < 500
    np.testing.assert_allclose(x, 1.0, atol=2e-3)


def test_an_ill_conditioned_quadratic_converges_to_its_solution():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(40, 40)).astype(np.float32)
    A = Q @ Q.T / 40 + np.diag(np.logspace(-2, 1, 40)).astype(np.float32)
    b = rng.normal(size=40).astype(np.float32)
    A64, b64 = A.astype(np.float64), b.astype(np.float64)

    def f(x):
        x = x.astype(np.float64)
        return float(0.5 * x @ A64 @ x - b64 @ x), (A64 @ x - b64).astype(np.float32)

    x, _, why = minimize_lbfgs(f, np.zeros(40, np.float32), max_iter=1000, max_fun=3000, pgtol=1e-5, ftol=0.0)
    assert why == "pgtol"
    np.testing.assert_allclose(A64 @ x, b64, atol=1e-5)


def test_the_budgets_and_the_callback_stop_it():
    start = np.full(6, -1.2, np.float32)
    assert minimize_lbfgs(_rosenbrock, start, max_iter=3, max_fun=100)[1:] == (3, "max_iter")
    assert minimize_lbfgs(_rosenbrock, start, max_iter=100, max_fun=4)[2] == "max_fun"
    calls = []
    x, n, why = minimize_lbfgs(_rosenbrock, start, max_iter=100, max_fun=500,
                               callback=lambda x: calls.append(x.copy()) or len(calls) == 5)
    assert (n, why) == (5, "callback") and np.array_equal(x, calls[-1])


def test_every_step_decreases_the_loss():
    seen = []

    def f(x):
        out = _rosenbrock(x)
        seen.append(out[0])
        return out

    losses = []
    minimize_lbfgs(f, np.full(6, -1.2, np.float32), max_iter=60, max_fun=500,
                   callback=lambda x: losses.append(_rosenbrock(x)[0]) and False)
    assert all(b < a for a, b in zip([seen[0]] + losses, losses))


def test_a_flat_start_stops_at_once():
    x, n, why = minimize_lbfgs(lambda x: (0.0, np.zeros_like(x)), np.ones(3, np.float32), max_iter=10, max_fun=10)
    assert (n, why) == (0, "pgtol") and np.array_equal(x, np.ones(3))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_network_records_why_it_stopped(early_stopping):
    rng = np.random.default_rng(0)
    y = np.arange(200) % 3
    X = rng.normal(size=(200, 20)) + y[:, None]
    m = FullBatchMLP(early_stopping=early_stopping, random_state=0).fit(X, y)
    assert m.stop_reason_ in ("pgtol", "ftol", "callback", "max_iter")
    assert m.coefs_[0].dtype == np.float32 and m.score(X, y) > 0.9
    assert 0 < m.best_iter_ <= m.n_iter_ <= m.max_iter
