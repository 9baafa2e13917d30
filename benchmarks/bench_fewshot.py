"""Few-shot speed: episodes per second on 3,000 x 1,000 features, 2-way 5-shot, 15 queries per class.

    python benchmarks/bench_fewshot.py                # 1,000 episodes for the batched methods, 100 for the fitted
    python benchmarks/bench_fewshot.py --episodes 300

Measured side by side in one run on the same episodes (same EpisodePlan):

- ``prototype_euc`` / ``prototype_cos`` batched over episodes (deepfeat) vs a naive loop: one Python iteration
  per episode, and inside it one per query (the implementation the issue rules out), checked to give the
  same per-episode accuracies;
- ``knn`` (1-NN, batched);
- ``logreg`` and ``svm``: one fit per episode (on fewer episodes: they are slower), reported in episodes/s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from deepfeat.fewshot.episodes import EpisodeSampler
from deepfeat.fewshot.evaluate import episode_accuracies


def naive_prototype(X, plan) -> np.ndarray:
    """Per episode, per query: class means and Euclidean distances in plain loops."""
    acc = np.empty(plan.n_episodes)
    for e in range(plan.n_episodes):
        protos = [X[plan.support[e, w]].mean(axis=0) for w in range(plan.n_ways)]
        correct = total = 0
        for w in range(plan.n_ways):
            for r in plan.query[e, w]:
                dist = [float(((X[r] - p) ** 2).sum()) for p in protos]
                correct += int(np.argmin(dist) == w)
                total += 1
        acc[e] = correct / total
    return acc


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--fitted-episodes", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, args.n)
    X = (rng.normal(0, 1, (args.n, args.d)) + 0.3 * (y[:, None] == np.arange(args.d) % args.classes)).astype(
        np.float32)
    sampler = EpisodeSampler(y)
    plan, t_plan = timed(lambda: sampler.plan(2, 5, 15, args.episodes, seed=0))
    print(f"{args.n} x {args.d} features, {args.episodes} episodes of 2-way 5-shot, 15 queries per class")
    print(f"episode sampling: {args.episodes / t_plan:,.0f} episodes/s")
    fast, t_fast = timed(lambda: episode_accuracies(X, plan, "prototype_euc"))
    slow, t_slow = timed(lambda: naive_prototype(X, plan))
    same = int(np.isclose(fast, slow).sum())
    print(f"prototype_euc batched: {args.episodes / t_fast:,.0f} episodes/s ({t_fast:.2f} s); naive per-episode/"
          f"per-query loop: {args.episodes / t_slow:,.0f} episodes/s ({t_slow:.2f} s); speedup {t_slow / t_fast:.1f}x;"
          f" identical per-episode accuracy: {same}/{args.episodes}")
    for m in ("prototype_cos", "knn"):
        _, t = timed(lambda m=m: episode_accuracies(X, plan, m))
        print(f"{m} batched: {args.episodes / t:,.0f} episodes/s ({t:.2f} s)")
    small = sampler.plan(2, 5, 15, args.fitted_episodes, seed=0)
    for m in ("logreg", "svm"):
        _, t = timed(lambda m=m: episode_accuracies(X, small, m))
        print(f"{m} (one fit per episode): {args.fitted_episodes / t:,.1f} episodes/s ({t:.2f} s for "
              f"{args.fitted_episodes})")


if __name__ == "__main__":
    main()
