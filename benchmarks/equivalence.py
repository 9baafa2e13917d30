"""Behaviour unchanged, measured: the same CV, nested CV, grid, repeated and Dask numbers from two code versions.

Runs, on the real images in ``../shared/data`` (ALL-IDB2 small, 260 images; the PBC sample, 1,607), with the
default EfficientNet-Lite0 features (extracted once; the feature cache makes later runs quick):

========================  ==========================================================================
``idb2-default``          default CV: svm / knn / ann / nb x none / mrmr, 10 folds, seed 0, baselines
``pbc-default``           the same on the PBC sample
``idb2-nested``           ``nested=True`` (the table and the nested outer folds)
``idb2-grid``             a grid of two FeatureSets (Lite0 logits and Lite0 pooled) on identical folds
``idb2-repeats2``         ``repeats=2``
``idb2-dask``             ``scheduler="local:2"`` (the Dask task map)
========================  ==========================================================================

and writes, per configuration, per-fold metrics, out-of-fold predictions and class scores, mRMR rankings and the
nested outer folds to a JSON file. Nothing is read back from the fold cache (``fold_cache=None``). Only public
names are used (``deepfeat.cross_validate``, ``deepfeat.extract_features``, ``deepfeat.load_features``), so the
same file runs against 0.2 and 0.3.

Run::

    python benchmarks/equivalence.py -o before.json            # with one version's interpreter
    python benchmarks/equivalence.py -o after.json             # with the other's
    python benchmarks/equivalence.py --compare before.json after.json

``--compare`` prints, per run and configuration, the maximum absolute difference of every number (accuracies and
other metrics, predicted class indices, class scores, mRMR picks and scores, nested figures); wall-clock times
are left out, and any key present in one file only is listed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

RUNS = ("idb2-default", "pbc-default", "idb2-nested", "idb2-grid", "idb2-repeats2", "idb2-dask")
METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")


def _features(data: Path):
    import deepfeat

    out = {}
    for name, folder, layer in (("idb2", "all_idb2_small", "logits"), ("idb2-pooled", "all_idb2_small", "pooled"),
                                ("pbc", "pbc_sample", "logits")):
        t0 = time.perf_counter()
        out[name] = deepfeat.extract_features(str(data / folder), layer=layer, progress=False)
        print(f"features {name}: {len(out[name])} x {out[name].n_features} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return out


def _run(name: str, fs: dict):
    import deepfeat

    opts = dict(folds=10, seed=0, fold_cache=None, progress=False)
    if name == "idb2-default":
        return deepfeat.cross_validate(fs["idb2"], **opts)
    if name == "pbc-default":
        return deepfeat.cross_validate(fs["pbc"], **opts)
    if name == "idb2-nested":
        return deepfeat.cross_validate(fs["idb2"], nested=True, **opts)
    if name == "idb2-grid":
        return deepfeat.cross_validate({"logits": fs["idb2"], "pooled": fs["idb2-pooled"]}, **opts)
    if name == "idb2-repeats2":
        return deepfeat.cross_validate(fs["idb2"], repeats=2, **opts)
    if name == "idb2-dask":
        return deepfeat.cross_validate(fs["idb2"], scheduler="local:2", **opts)
    raise SystemExit(f"unknown run {name!r}; choose from {', '.join(RUNS)}")


def _num(v):
    v = float(v)
    return None if math.isnan(v) else v


def _record(res) -> dict:
    """Per configuration and fold: metrics, predictions (class indices), class scores; mRMR; nested."""
    classes = [str(c) for c in res.classes]
    index = {c: i for i, c in enumerate(classes)}
    out = {"per_fold": {}, "predictions": {}, "mrmr": {}, "nested": None}
    for _, row in res.per_fold.iterrows():
        out["per_fold"].setdefault(row["config"], {})[f"r{row['repeat']}f{row['fold']}"] = {
            m: _num(row[m]) for m in METRICS}
    score_cols = [f"score_{c}" for c in classes]
    for (cfg, r, k), part in res.predictions.groupby(["config", "repeat", "fold"], sort=True):
        part = part.sort_values("row")
        out["predictions"].setdefault(cfg, {})[f"r{r}f{k}"] = {
            "row": part["row"].astype(int).tolist(), "pred": [index[str(p)] for p in part["pred"]],
            "scores": [[_num(v) for v in s] for s in part[score_cols].to_numpy()]}
    keys = ["features"] if "features" in res.mrmr.columns else []
    for key, part in res.mrmr.groupby(keys + ["repeat", "fold"], sort=True):
        part = part.sort_values("rank")
        out["mrmr"]["/".join(map(str, key))] = {"feature": part["feature"].astype(int).tolist(),
                                                "score": [_num(v) for v in part["score"]]}
    if res.nested:
        n = res.nested
        outer = n["outer"]
        out["nested"] = {k: _num(n[k]) for k in ("estimate", "ci_low", "ci_high", "std", "best_of_table_accuracy",
                                                 "gap")}
        out["nested"]["best_of_table"] = n["best_of_table"]
        out["nested"]["outer"] = {f"r{r['repeat']}f{r['fold']}": {
            "config": r["config"], "n_features": int(r["n_features"]), "inner_accuracy": _num(r["inner_accuracy"]),
            "accuracy": _num(r["accuracy"])} for _, r in outer.iterrows()}
        if n.get("baseline"):
            out["nested"]["baseline"] = {k: _num(v) for k, v in n["baseline"].items() if isinstance(v, (int, float))}
    return out


def measure(data: Path, runs, output: Path) -> None:
    import deepfeat

    fs = _features(data)
    doc = {"meta": {"deepfeat": deepfeat.__version__, "deepfeat_file": deepfeat.__file__, "python": sys.version,
                    "loadavg_start": os.getloadavg(), "identities": {k: v.identity() for k, v in fs.items()},
                    "wall_s": {}, "cpu_s": {}}, "runs": {}}
    for name in runs:
        t0, c0 = time.perf_counter(), time.process_time()
        res = _run(name, fs)
        doc["meta"]["wall_s"][name] = time.perf_counter() - t0
        doc["meta"]["cpu_s"][name] = time.process_time() - c0
        doc["runs"][name] = _record(res)
        print(f"{name}: {doc['meta']['wall_s'][name]:.0f} s wall, {doc['meta']['cpu_s'][name]:.0f} s CPU (this "
              f"process), load {os.getloadavg()[0]:.2f}", flush=True)
    doc["meta"]["loadavg_end"] = os.getloadavg()
    output.write_text(json.dumps(doc))
    print(f"wrote {output}")


# ------------------------------------------------------------------------------------------------ compare

def _leaves(obj, path=()):
    """(path, value) of every leaf; lists are walked by index."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path, obj


def _group(path) -> tuple[str, str, str]:
    """(run, configuration, quantity) of a leaf, e.g. ('idb2-default', 'ann+mrmr', 'scores')."""
    run, section = path[0], path[1]
    if section in ("per_fold", "predictions"):
        return run, path[2], path[4]
    if section == "mrmr":
        return run, "mrmr ranking", path[3]
    return run, "nested", "/".join(str(p) for p in path[2:3] + path[4:] if not isinstance(p, int)) or "nested"


def compare(a_path: Path, b_path: Path) -> int:
    A, B = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    print(f"A: {a_path} (deepfeat {A['meta']['deepfeat']} from {A['meta']['deepfeat_file']})")
    print(f"B: {b_path} (deepfeat {B['meta']['deepfeat']} from {B['meta']['deepfeat_file']})")
    same_features = A["meta"]["identities"] == B["meta"]["identities"]
    print(f"feature identities (sha256 of X, y, meta): {'identical' if same_features else 'DIFFERENT'}")
    for name in A["meta"]["wall_s"]:
        if name in B["meta"]["wall_s"]:
            print(f"  {name}: wall {A['meta']['wall_s'][name]:.0f} s vs {B['meta']['wall_s'][name]:.0f} s "
                  f"(B/A {B['meta']['wall_s'][name] / A['meta']['wall_s'][name]:.2f})")
    a, b = dict(_leaves(A["runs"])), dict(_leaves(B["runs"]))
    a = {k: v for k, v in a.items() if not (len(k) == 2 and v is None)}  # "nested": None in an ordinary run
    b = {k: v for k, v in b.items() if not (len(k) == 2 and v is None)}
    only = sorted(set(a) ^ set(b), key=str)
    worst, counts, other = {}, {}, {}
    for path in sorted(set(a) & set(b), key=str):
        va, vb = a[path], b[path]
        run, config, quantity = _group(path)
        key = (run, config)
        counts[key] = counts.get(key, 0) + 1
        cell = worst.setdefault(key, {})
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            cell[quantity] = max(cell.get(quantity, 0.0), abs(va - vb))
        else:
            cell.setdefault(quantity, 0.0)
            if va != vb:  # None (NaN) on one side only, or a differing text (a chosen configuration)
                other[key] = other.get(key, 0) + 1
    quantities = ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "pred", "scores", "feature", "score"]
    print(f"\nmaximum |A - B| per run and configuration ({', '.join(quantities)}: per-fold metrics, predicted "
          "class, class scores, mRMR picks and scores; 'nested': every nested figure):")
    print(f"{'run':<14} {'configuration':<30} {'values':>7} {'max |A - B|':>12} {'other':>6}  by quantity")
    for key in sorted(worst):
        cell = worst[key]
        detail = ", ".join(f"{q} {cell[q]:.3g}" for q in quantities + sorted(set(cell) - set(quantities))
                           if q in cell and q != "row")
        print(f"{key[0]:<14} {key[1]:<30} {counts[key]:>7} {max(cell.values()):>12.3g} {other.get(key, 0):>6}  "
              f"{detail}")
    overall = max((max(c.values()) for c in worst.values()), default=0.0)
    print(f"\nmaximum absolute difference over {sum(counts.values())} compared values: {overall:.3g}; "
          f"{sum(other.values())} non-numeric differences; {len(only)} keys in one file only")
    for path in only[:20]:
        print("  only in " + ("A" if path in a else "B") + ": " + "/".join(map(str, path)))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("equivalence.json"))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma list of: " + ", ".join(RUNS))
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not (args.data / "all_idb2_small").is_dir() or not (args.data / "pbc_sample").is_dir():
        raise SystemExit(f"{args.data} lacks all_idb2_small/ and pbc_sample/ (see ../shared/data/README.md)")
    measure(args.data.resolve(), [r for r in args.runs.split(",") if r], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
