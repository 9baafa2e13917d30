"""Benchmark: the full default ``deepfeat cv`` on a study-sized synthetic FeatureSet.

4 classifiers (svm, knn, ann, nb) x {all features, mRMR k=521} x 10 folds on 3,256 x 1,000 float32 features
(4 classes, informative + correlated features; synthetic, for timing only), on the cores given (default 2).
Prints the wall time against the 60 s target, and the wall time when mRMR is NOT shared across classifiers
(each classifier cross-validated on its own, so mRMR is recomputed for each) as a ratio, measured side by side.

Run: ``python benchmarks/bench_cv.py [--n-jobs 2] [--skip-unshared]``. On a shared, loaded machine wall times
inflate; ``--n-jobs 1`` also prints the process CPU time (all BLAS threads), a load-independent figure.

``--against TREE [--rounds 3]``: the whole default command from this checkout and from another source tree (e.g. a
``git worktree`` of the previous commit), alternated on one file: wall, machine CPU (Linux /proc/stat, so the forked
workers count), and whether every classifier's per-fold accuracies and predictions are identical.

``--cli``: instead, the whole default command ``deepfeat cv FILE --fold-cache none`` (imports and report included)
as a child process, once with the default classifiers (svm, knn, ann, nb) and once with 0.2's network in place of
``ann`` (``ann-adam``), side by side: wall seconds, CPU seconds of the child (user + system, all threads), its peak
RSS, and whether svm / knn / nb give the same per-fold accuracies and predictions in both runs (bit for bit).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def make_features(n=3256, d=1000, n_classes=4, seed=0):
    from sklearn.datasets import make_classification

    from deepfeat.features import FeatureSet

    X, y = make_classification(n_samples=n, n_features=d, n_informative=60, n_redundant=140, n_repeated=0,
                               n_classes=n_classes, n_clusters_per_class=2, class_sep=0.8, flip_y=0.02,
                               random_state=seed)
    # correlated blocks like CNN logits: mix some noise columns with informative ones
    rng = np.random.default_rng(seed)
    X[:, 200:400] += 0.5 * X[:, rng.integers(0, 200, 200)]
    return FeatureSet(X.astype(np.float32), [f"class{c}" for c in y], meta={"backbone": "synthetic"})


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (Linux /proc/stat: user + nice + system + irq + softirq), or
    None. The forked fold workers are grandchildren reaped by their server, so a child's rusage misses them; on a
    quiet machine this delta is the command's CPU time, workers included."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _run_cli(path, out, classifiers, blas_threads=None, tree=None) -> dict:
    """Wall, CPU seconds and peak RSS of one ``deepfeat cv`` command (a fresh child process; ``tree``: run the
    deepfeat package of that source tree instead of the installed one)."""
    import resource
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "deepfeat.cli", "cv", str(path), "-o", str(out), "--fold-cache", "none", "--quiet"]
    for c in classifiers:
        cmd += ["--classifier", c]
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = str(tree)
    if blas_threads:  # on a loaded machine idle BLAS threads spin-wait and inflate CPU time: 1 gives a cleaner figure
        env.update({v: str(blas_threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    before, busy = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, cwd=tree)
    wall = time.perf_counter() - t0
    after, busy_after = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if busy is not None:
        cpu = busy_after - busy
    return {"wall": wall, "cpu": cpu, "rss_mb": after.ru_maxrss / 1024}  # max over children so far


def side_by_side(tree, rounds: int, blas_threads=None):
    """The default command from this checkout and from the source tree ``tree`` (e.g. a ``git worktree`` of the
    previous release), alternated ``rounds`` times on the same file: wall, machine CPU, and whether every per-fold
    accuracy and prediction is identical."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    here = Path(__file__).resolve().parents[1]
    clfs = ("svm", "knn", "ann", "nb")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.features"
        make_features().save(path)
        times = {"this checkout": [], f"{tree}": []}
        for r in range(rounds):
            for label, src in (("this checkout", here), (f"{tree}", Path(tree).resolve())):
                out = Path(tmp) / f"{'a' if src == here else 'b'}{r}"
                res = _run_cli(path, out, clfs, blas_threads, tree=src)
                times[label].append(res)
                print(f"round {r + 1} {label}: {res['wall']:.2f} s wall, {res['cpu']:.1f} s machine CPU "
                      f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        a, b = (pd.read_csv(Path(tmp) / f"{k}0" / "per_fold.csv") for k in "ab")
        pa, pb = (pd.read_csv(Path(tmp) / f"{k}0" / "predictions.csv") for k in "ab")
        for clf in clfs:
            same = a[a.classifier == clf]["accuracy"].tolist() == b[b.classifier == clf]["accuracy"].tolist()
            preds = pa[pa.config.str.startswith(clf + "+")]["pred"].tolist() == \
                pb[pb.config.str.startswith(clf + "+")]["pred"].tolist()
            print(f"  {clf}: per-fold accuracies {'identical' if same else 'differ'}, predictions "
                  f"{'identical' if preds else 'differ'}; mean accuracy "
                  f"{100 * a[a.classifier == clf].accuracy.mean():.2f} vs {100 * b[b.classifier == clf].accuracy.mean():.2f} %")
        for label, rs in times.items():
            walls = sorted(x["wall"] for x in rs)
            print(f"{label}: wall median {walls[len(walls) // 2]:.2f} s (min {walls[0]:.2f}, max {walls[-1]:.2f}); "
                  f"machine CPU median {sorted(x['cpu'] for x in rs)[len(rs) // 2]:.1f} s")


def cli_compare(blas_threads=None):
    """The whole default command, with ``ann`` and with ``ann-adam``, side by side (see the module docstring)."""
    import tempfile
    from pathlib import Path

    import pandas as pd


    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.features"
        make_features().save(path)
        runs = {}
        for label, clfs in (("ann (0.3)", ("svm", "knn", "ann", "nb")),
                            ("ann-adam (0.2)", ("svm", "knn", "ann-adam", "nb"))):
            runs[label] = _run_cli(path, Path(tmp) / label.split()[0], clfs, blas_threads)
            runs[label]["per_fold"] = pd.read_csv(Path(tmp) / label.split()[0] / "per_fold.csv")
            r = runs[label]
            print(f"deepfeat cv, classifiers {', '.join(clfs)}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS "
                  f"{r['rss_mb']:.0f} MB (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        a, b = (runs[k]["per_fold"] for k in runs)
        for clf in ("svm", "knn", "nb"):
            same = a[a.classifier == clf]["accuracy"].tolist() == b[b.classifier == clf]["accuracy"].tolist()
            print(f"  {clf}: per-fold accuracies {'identical' if same else 'DIFFER'} in both runs")
        for label, key in (("ann", a), ("ann-adam", b)):
            acc = key[key.classifier == label].groupby("selection")["accuracy"]
            print(f"  {label}: accuracy " + ", ".join(f"{s} {100 * m:.2f} +- {100 * sd:.2f} %" for s, (m, sd) in
                                                     acc.agg(["mean", "std"]).iterrows()))
        ra, rb = runs["ann (0.3)"], runs["ann-adam (0.2)"]
        print(f"ratio ann-adam / ann: wall {rb['wall'] / ra['wall']:.2f}x, CPU {rb['cpu'] / ra['cpu']:.2f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--k", type=int, default=521)
    ap.add_argument("--skip-unshared", action="store_true")
    ap.add_argument("--cli", action="store_true", help="time the whole default `deepfeat cv` command, ann vs ann-adam")
    ap.add_argument("--blas-threads", type=int, help="with --cli: BLAS / OpenMP threads of the commands")
    ap.add_argument("--against", metavar="TREE", help="the default command from this checkout and from the source "
                    "tree TREE (e.g. `git worktree add ../base v0.2`), alternated --rounds times")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.against:
        return side_by_side(args.against, args.rounds, args.blas_threads)
    if args.cli:
        return cli_compare(args.blas_threads)

    from deepfeat.evaluation.cross_validation import cross_validate

    fs = make_features()
    classifiers = ("svm", "knn", "ann", "nb")
    opts = dict(selections=("none", "mrmr"), n_features=args.k, folds=10, seed=0, n_jobs=args.n_jobs,
                baseline="majority", progress=False)
    print(f"FeatureSet {len(fs)} x {fs.n_features}, 4 classes; {os.cpu_count()} CPUs visible, n_jobs={args.n_jobs}")
    from threadpoolctl import threadpool_limits

    # one BLAS thread per fold worker, as joblib's loky workers get: with n_jobs=1 on a busy machine, multi-threaded
    # BLAS spin-waits and inflates both wall and CPU time (measured: mRMR 13 s vs 0.7 s per fold)
    with threadpool_limits(limits=1 if args.n_jobs == 1 else None):
        t0, c0 = time.perf_counter(), time.process_time()
        res = cross_validate(fs, classifiers=classifiers, **opts)
        shared, cpu = time.perf_counter() - t0, time.process_time() - c0
    pf = res.per_fold
    print(res.table().to_string())
    print("\nper-fold mean times (s):")
    print(pf.groupby("config", sort=False)[["fit_time", "predict_time", "mrmr_time"]].mean().round(3).to_string())
    print(f"\nshared mRMR (default cv): {shared:.1f} s  (target <= 60 s: {'met' if shared <= 60 else 'MISSED'}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.n_jobs == 1:  # all work ran in this process: its CPU time does not depend on other load
        print(f"CPU time (1 BLAS thread) {cpu:.1f} s -> {cpu / 2:.1f} s on 2 idle cores (folds are independent)")
    if not args.skip_unshared:
        t0 = time.perf_counter()
        for clf in classifiers:  # each classifier on its own: mRMR recomputed for each one, same folds
            cross_validate(fs, classifiers=(clf,), **opts)
        unshared = time.perf_counter() - t0
        print(f"mRMR recomputed per classifier: {unshared:.1f} s  -> sharing saves {unshared / shared:.2f}x")


if __name__ == "__main__":
    main()
