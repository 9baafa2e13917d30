"""Benchmark: the ``ann`` preset (full-batch L-BFGS) against 0.2's ``ann-adam`` and a torch full-batch MLP.

For each FeatureSet file given (or the 3,256 x 1,000 synthetic matrix of ``bench_cv.py``), on the same stratified
10 folds (scaler fitted on the training rows, all features): accuracy (mean and per-fold std), CPU seconds per fit
(1 BLAS / torch thread, so the figure does not depend on the machine's load) and the ratio to ``ann``, side by side:

- ``ann``: :class:`~deepfeat.classifiers.estimators.FullBatchMLP` (every row, at most 200 L-BFGS iterations, by
  deepfeat's float32 L-BFGS, :mod:`deepfeat.classifiers.lbfgs`);
- ``ann, scipy L-BFGS-B``: the same network, loss and stopping rules optimised by scipy's L-BFGS-B (float64), as
  ``ann`` was first trained in 0.3;
- ``ann, seed + 100``: ``ann`` from other initial weights: the accuracy differences a seed alone makes, the noise
  against which the optimisers' difference is read;
- ``ann-es``: the same with early stopping on a 10 % validation part's loss;
- ``ann-adam``: deepfeat 0.2's preset (scikit-learn MLPClassifier, adam, batch 64, early stopping);
- ``torch-lbfgs``: a torch ``nn.Sequential`` 100-unit MLP trained by ``torch.optim.LBFGS`` (strong Wolfe line
  search, 100 iterations) on the whole fold at once, float32: the other candidate the issue named.

Run: ``python benchmarks/ann_compare.py [FILE.features ...] [--folds 10]``.
"""
from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np


def _torch_lbfgs(seed, iters=100):
    import torch

    class TorchLBFGS:
        def fit(self, X, y):
            torch.manual_seed(seed)
            Xt, yt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
            self.net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 100), torch.nn.ReLU(),
                                           torch.nn.Linear(100, int(y.max()) + 1))
            opt = torch.optim.LBFGS(self.net.parameters(), max_iter=iters, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(self.net(Xt), yt)
                loss.backward()
                return loss

            opt.step(closure)
            return self

        def predict(self, X):
            with torch.no_grad():
                return self.net(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).argmax(1).numpy()

    return TorchLBFGS()


def _scipy_lbfgsb(fun, x0, *, max_iter, max_fun, callback=None, **_):
    """scipy's L-BFGS-B behind :func:`deepfeat.classifiers.lbfgs.minimize_lbfgs`'s interface (float64 inside)."""
    from scipy.optimize import minimize

    def f64(t):
        loss, g = fun(t.astype(np.float32))
        return loss, g.astype(np.float64)

    def cb(intermediate_result):  # this parameter name makes scipy pass the OptimizeResult
        if callback is not None and callback(intermediate_result.x.astype(np.float32)):
            raise StopIteration

    res = minimize(f64, np.asarray(x0, np.float64), jac=True, method="L-BFGS-B", callback=cb,
                   options={"maxiter": max_iter, "maxfun": max_fun})
    return res.x.astype(np.float32), res.nit, str(res.message)


class _ScipyOptimised:
    """Fits ``est`` with :func:`_scipy_lbfgsb` in place of deepfeat's L-BFGS."""

    def __init__(self, est):
        self.est = est

    def fit(self, X, y):
        import deepfeat.classifiers.estimators as estimators

        saved, estimators.minimize_lbfgs = estimators.minimize_lbfgs, _scipy_lbfgsb
        try:
            self.est.fit(X, y)
        finally:
            estimators.minimize_lbfgs = saved
        return self

    def predict(self, X):
        return self.est.predict(X)


def variants():
    from deepfeat.classifiers.presets import get_classifier

    out = {"ann": lambda s: get_classifier("ann", seed=s),
           "ann, scipy L-BFGS-B": lambda s: _ScipyOptimised(get_classifier("ann", seed=s)),
           "ann, seed + 100": lambda s: get_classifier("ann", seed=s + 100),
           "ann-es": lambda s: get_classifier("ann-es", seed=s),
           "ann-adam (0.2)": lambda s: get_classifier("ann-adam", seed=s)}
    try:
        import torch

        torch.set_num_threads(1)
        out["torch-lbfgs"] = _torch_lbfgs
    except ImportError:
        pass
    return out


def load(name):
    if name == "synthetic":
        from bench_cv import make_features

        fs = make_features()
    else:
        from deepfeat.features import load_features

        fs = load_features(name)
    return np.asarray(fs.X, dtype=np.float32), np.unique(np.asarray(fs.y), return_inverse=True)[1]


def compare(name, folds: int, makers: dict):
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    X, y = load(name)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y))
    prepared = [(StandardScaler().fit(X[tr]), tr, te) for tr, te in splits]
    print(f"\n{name}: {X.shape[0]} x {X.shape[1]}, {len(np.unique(y))} classes, {folds} folds")
    rows = {}
    for label, make in makers.items():
        accs, cpu = [], 0.0
        for i, (sc, tr, te) in enumerate(prepared):
            a, b = sc.transform(X[tr]), sc.transform(X[te])
            c0 = time.process_time()
            pred = make(i).fit(a, y[tr]).predict(b)
            cpu += time.process_time() - c0
            accs.append(float(np.mean(pred == y[te])))
        rows[label] = (100 * np.mean(accs), 100 * np.std(accs), cpu / folds, 100 * np.asarray(accs))
    base, ref = rows["ann"][2], rows["ann"][3]
    for label, (m, sd, c, per_fold) in rows.items():
        diff = per_fold - ref
        print(f"  {label:<21} accuracy {m:6.2f} +- {sd:5.2f} %   CPU/fit {c:6.3f} s   x{c / base:5.2f} of ann"
              + ("" if label == "ann" else f"   minus ann per fold: {diff.mean():+5.2f} +- {diff.std():4.2f} pp"))
    print(f"  peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features", nargs="*", default=["synthetic"])
    ap.add_argument("--folds", type=int, default=10)
    args = ap.parse_args(argv)
    import scipy.optimize  # noqa: F401  (load every BLAS before limiting: threadpoolctl limits loaded ones only;
    import sklearn.model_selection  # noqa: F401  an unlimited one spin-waits on a loaded machine, inflating CPU)
    from threadpoolctl import threadpool_limits

    makers = variants()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of ann-adam at its epoch limit
        for name in args.features:
            compare(name, args.folds, makers)


if __name__ == "__main__":
    main()
