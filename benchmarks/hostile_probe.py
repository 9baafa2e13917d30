"""Hostile and awkward inputs, run through the real ``deepfeat`` CLI: exit code, last stderr line, data kept.

Run it against two checkouts to get the before/after table of issue 11::

    PYTHONPATH=/tmp/old  python benchmarks/hostile_probe.py     # release before the fixes
    PYTHONPATH=$PWD      python benchmarks/hostile_probe.py

``PROBE_ONLY=23`` runs only the cases of issue 23 (crafted model files, small or degenerate data, caches that cannot
be written, pipeline files that are not UTF-8, HTML in Markdown reports, messages), e.g. with each
checkout's own interpreter: ``cd OLD && .venv/bin/python NEW/benchmarks/hostile_probe.py``.

Each case runs in its own subprocess with a time limit (a hang shows as ``timeout``). Permission cases run the CLI
as user ``nobody`` (via ``setpriv``) when the probe runs as root, because root reads any file. Tiny inputs only:
32x32 images, ``tiny_darknet`` with random weights, no network.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

PY = sys.executable
TIMEOUT = 180
EXTRACT = ["--model", "tiny_darknet", "--weights", "none", "--quiet", "--image-size", "32", "--device", "cpu"]


def cli(args, *, cwd, env=None, as_nobody=False, prelude="", timeout=TIMEOUT, isolated=False, width=200):
    """Run ``deepfeat ARGS``: in this process (fast: torch is imported once) unless ``isolated`` (a case that may
    hang needs a subprocess and a time limit). Returns (exit code, the `error:` or last stderr line, stdout)."""
    if isolated:
        return _cli_subprocess(args, cwd=cwd, env=env, timeout=timeout)
    import contextlib
    import io
    import traceback

    os.environ.update(env or {})
    err, out = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    undo = _apply(prelude)
    if as_nobody and os.geteuid() == 0:
        os.setegid(65534)
        os.seteuid(65534)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings_shown(err):
            try:
                from deepfeat.cli import main as _main
                _main([str(a) for a in args])
                rc = 0
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException as exc:  # what the console script would show as a traceback: exit 1
                traceback.print_exc(file=err)
                rc = 1
                err.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        if as_nobody and os.getuid() == 0:
            os.seteuid(0)
            os.setegid(0)
        undo()
        os.chdir(here)
    lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
    last = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "")
    return rc, last[:width], out.getvalue()


def warnings_shown(stream):
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            old = warnings.showwarning
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: stream.write(f"{c.__name__}: {m}\n")
            try:
                yield
            finally:
                warnings.showwarning = old
    return ctx()


def _apply(prelude):
    """Monkeypatches named by ``prelude`` ('enospc' or 'interrupt'); returns the undo function."""
    import errno
    if prelude == "enospc":
        real = os.replace

        def full(a, b, *k, **kw):
            if str(b).endswith(".features"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(b))
            return real(a, b, *k, **kw)
        os.replace = full
        return lambda: setattr(os, "replace", real)
    if prelude in ("cache_enospc", "cache_ro_midrun"):  # the feature cache's writes fail (all, or after two)
        import deepfeat.extraction.cache as cache_module
        real_write, calls = cache_module._atomic_write, []
        code = errno.ENOSPC if prelude == "cache_enospc" else errno.EROFS
        after = 0 if prelude == "cache_enospc" else 2

        def failing(path, data):
            calls.append(path)
            if len(calls) > after:
                raise OSError(code, os.strerror(code), str(path))
            return real_write(path, data)
        cache_module._atomic_write = failing
        return lambda: setattr(cache_module, "_atomic_write", real_write)
    if prelude == "report_enospc":  # the disk fills up while a report folder is rewritten
        real = os.replace

        def full_report(a, b, *k, **kw):
            if str(b).endswith("report.html"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(b))
            return real(a, b, *k, **kw)
        os.replace = full_report
        return lambda: setattr(os, "replace", real)
    if prelude == "interrupt":
        import deepfeat.reporting.report as report
        real_fig = report._figures

        def stop(*a, **k):
            raise KeyboardInterrupt
        report._figures = stop
        return lambda: setattr(report, "_figures", real_fig)
    return lambda: None


def _cli_subprocess(args, *, cwd, env=None, timeout=TIMEOUT):
    cmd = [PY, "-c", "from deepfeat.cli import main; main()", *map(str, args)]
    try:
        p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no answer after {timeout} s (hang)", ""
    err = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    last = next((ln for ln in err if ln.startswith("error:")), err[-1] if err else "")
    return p.returncode, last[:200], p.stdout


def images(folder, n, seed=0, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")


def classes(root, names=("a", "b"), n=6):
    for k, c in enumerate(names):
        images(root / c, n, seed=k)
    return root


def labels_of(fs_path):
    if not Path(fs_path).exists():
        return "no FeatureSet written"
    import collections

    from deepfeat import load_features
    fs = load_features(fs_path)
    return dict(collections.Counter(map(str, fs.y))) if fs.y is not None else len(fs)


def make_features(path, X, y, paths=None):
    code = ("import sys, numpy as np, json; from deepfeat.features import FeatureSet; "
            "d=json.load(open(sys.argv[2])); X=np.asarray(d['X'], np.float32); "
            "FeatureSet(X, y=np.asarray(d['y']), paths=d.get('paths'), meta={'backbone': 'tiny_darknet', "
            "'weights': 'none', 'layer': 'logits', 'input_size': [3, 32, 32]}).save(sys.argv[1])")
    spec = Path(path).with_suffix(".json")
    spec.write_text(json.dumps({"X": np.asarray(X).tolist(), "y": list(y), "paths": paths}))
    subprocess.run([PY, "-c", code, str(path), str(spec)], check=True, env=os.environ)


def main():
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    os.chmod(tmp, 0o777)  # the 'nobody' cases write their outputs here too
    cache = tmp / "cache"
    env = {"DEEPFEAT_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "DEEPFEAT_TRUST_DIR": str(tmp / "trust")}

    def case(name, result, data):
        rc, msg, _ = result
        rows.append((name, rc, msg, data))
        print(f"| {name} | {rc} | {msg} | {data} |", flush=True)

    if os.environ.get("PROBE_ONLY") == "23":  # only the cases of issue 23 (model files, degenerate data)
        _issue23(tmp, env, case)
        _issue23_rest(Path(tempfile.mkdtemp(prefix="hostile23b-")), env, case)
        shutil.rmtree(tmp, ignore_errors=True)
        return

    # warm-up as root: every lazily imported module is loaded before a case runs as 'nobody' (who cannot read
    # root's Python installation)
    import importlib.metadata  # noqa: F401
    cli(["extract", classes(tmp / "warm", ("a", "b"), n=2), "-o", tmp / "warm.features", *EXTRACT, "--no-cache"],
        cwd=tmp, env=env)
    import deepfeat.features  # noqa: F401
    # 1. unreadable class folder / sub-folder (as nobody)
    d = classes(tmp / "unread_class", ("a", "b", "c"))
    os.chmod(d / "c", 0o000)
    out = tmp / "u1.features"
    r = cli(["extract", d, "-o", out, *EXTRACT, "--no-cache"], cwd=tmp, env=env, as_nobody=True)
    case("unreadable class folder", r, labels_of(out))
    d = classes(tmp / "unread_sub", ("a", "b"))
    images(d / "b" / "deep", 3, seed=7)
    os.chmod(d / "b" / "deep", 0o000)
    out = tmp / "u2.features"
    r = cli(["extract", d, "-o", out, *EXTRACT, "--no-cache"], cwd=tmp, env=env, as_nobody=True)
    case("unreadable sub-folder", r, labels_of(out))
    # 2. folder symlink pointing back up
    d = classes(tmp / "loop", ("a", "b"))
    os.symlink("..", d / "a" / "loop")
    out = tmp / "loop.features"
    r = cli(["extract", d, "-o", out, *EXTRACT, "--no-cache"], cwd=tmp, env=env)
    case("symlink a/loop -> ..", r, labels_of(out))
    # 3. FIFO and /dev/zero named .jpg
    d = classes(tmp / "fifo", ("a", "b"))
    os.mkfifo(d / "a" / "pipe.jpg")
    out = tmp / "fifo.features"
    r = cli(["extract", d, "-o", out, *EXTRACT, "--no-cache"], cwd=tmp, env=env, timeout=120, isolated=True)
    case("FIFO a/pipe.jpg (extract)", r, labels_of(out))
    d = classes(tmp / "zero", ("a", "b"))
    os.symlink("/dev/zero", d / "a" / "zero.jpg")
    out = tmp / "zero.features"
    r = cli(["extract", d, "-o", out, *EXTRACT, "--no-cache"], cwd=tmp, env=env, timeout=120, isolated=True)
    case("a/zero.jpg -> /dev/zero (extract)", r, labels_of(out))
    # 4. a decompression bomb: a small 16-bit PNG declaring 9500 x 9500 (90.25 M pixels > Pillow's 89.5 M)
    if os.environ.get("PROBE_SKIP_BOMB"):  # minutes and gigabytes on the release before the fix
        bomb = None
    else:
        _bomb_case(tmp, env, case)
    # 5. model files: a forged joblib with a matching sidecar runs code
    _rest(tmp, env, case, cache)
    _issue23(Path(tempfile.mkdtemp(prefix="hostile23-")), env, case)
    _issue23_rest(Path(tempfile.mkdtemp(prefix="hostile23b-")), env, case)


def _bomb_case(tmp, env, case):
    bomb = tmp / "bomb" / "x" / "bomb.png"
    bomb.parent.mkdir(parents=True)
    Image.new("I;16", (9500, 9500), 1000).save(bomb)
    images(tmp / "bomb" / "y", 3)
    out = tmp / "bomb.features"
    code = ("import resource,subprocess,sys; p=subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss//1024, 'MiB', file=sys.stderr); "
            "sys.exit(p.returncode)")
    p = subprocess.run([PY, "-c", code, PY, "-c", "from deepfeat.cli import main; main()", "extract",
                        str(tmp / "bomb"), "-o", str(out), *EXTRACT, "--no-cache"], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=300)
    err = p.stderr.strip().splitlines()
    case(f"16-bit PNG 9500^2 ({bomb.stat().st_size} bytes)", (p.returncode, (err[-2] if len(err) > 1 else "")[:160],
                                                              ""), f"peak RSS {err[-1] if err else '?'}; "
                                                                   f"{labels_of(out)}")


def _rest(tmp, env, case, cache):
    d = classes(tmp / "train", ("a", "b"), n=6)
    feats = tmp / "train.features"
    cli(["extract", d, "-o", feats, *EXTRACT], cwd=tmp, env=env)
    model = tmp / "m.joblib"
    r = cli(["fit", feats, "-o", model, "--classifier", "svm"], cwd=tmp, env=env)
    case("fit (plain)", r, "written" if model.exists() else "no model")
    forged = tmp / "forged.joblib"
    marker = tmp / "PWNED"
    code = (f"import pickle,os,sys\nclass X:\n    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
            "open(sys.argv[1],'wb').write(pickle.dumps(X()))")
    subprocess.run([PY, "-c", code, str(forged)], check=True)
    side = json.loads(Path(str(model) + ".json").read_text())
    import hashlib
    side["sha256"] = hashlib.sha256(forged.read_bytes()).hexdigest()
    Path(str(forged) + ".json").write_text(json.dumps(side))
    r = cli(["predict", forged, tmp / "train" / "a", "-o", tmp / "p.csv"], cwd=tmp, env=env)
    case("predict forged.joblib + recomputed sidecar", r, f"code ran: {marker.exists()}")
    for versions in ({}, None):
        bad = tmp / f"v{versions is None}.joblib"
        shutil.copy(model, bad)
        s = dict(json.loads(Path(str(model) + ".json").read_text()), versions=versions)
        Path(str(bad) + ".json").write_text(json.dumps(s))
        r = cli(["predict", bad, tmp / "train" / "a", "-o", tmp / "p2.csv"], cwd=tmp, env=env)
        case(f"sidecar versions: {json.dumps(versions)}", r, "")
    # 6. cache entries: mode, directory in place of an entry, another image's entry copied over
    entries = sorted((cache / "features").glob("*/*/*.f32"))
    case("cache entry file mode", (0, "", ""), oct(entries[0].stat().st_mode & 0o777) if entries else "no entries")
    victim = entries[0]
    other = entries[1]
    saved = victim.read_bytes()
    shutil.copy(other, victim)
    out = tmp / "swap.features"
    r = cli(["extract", d, "-o", out, *EXTRACT], cwd=tmp, env=env)
    dup = subprocess.run([PY, "-c", "import sys,numpy as np; from deepfeat import load_features; "
                          "X=load_features(sys.argv[1]).X; print(len(X)-len(np.unique(X,axis=0)))", str(out)],
                         capture_output=True, text=True, env=os.environ).stdout.strip()
    case("another image's entry copied over an entry", r, f"duplicate rows served: {dup}")
    victim.unlink()
    victim.mkdir()
    out = tmp / "dir.features"
    r = cli(["extract", d, "-o", out, *EXTRACT], cwd=tmp, env=env)
    case("cache entry replaced by a directory", r, labels_of(out))
    if victim.is_dir():  # deepfeat since 0.2 replaces the directory with the recomputed entry
        shutil.rmtree(victim)
    victim.write_bytes(saved)
    # 7. disk full while saving a FeatureSet
    out = tmp / "full.features"
    prelude = "enospc"
    r = cli(["extract", d, "-o", out, *EXTRACT], cwd=tmp, env=env, prelude=prelude)
    case("disk full (ENOSPC) writing the FeatureSet", r, f"{out.name} exists: {out.exists()}; temp files left: "
                                                          f"{len(list(tmp.glob('.full.features*')))}")
    # 8. shared cache written by another user (as nobody, on root's cache)
    out = tmp / "shared.features"
    r = cli(["extract", d, "-o", out, *EXTRACT], cwd=tmp, env=env, as_nobody=True)
    case("cache written by another user, read as nobody", r, labels_of(out))
    # 9. mRMR keeps 0 features (constant features)
    cfs = tmp / "const.features"
    make_features(cfs, np.ones((20, 6)), ["a"] * 10 + ["b"] * 10)
    r = cli(["cv", cfs, "-o", tmp / "rep_const", "--select", "mrmr", "--classifier", "knn", "--folds", "2",
             "--quiet", "--baseline", "majority"], cwd=tmp, env=env)
    case("cv --select mrmr on constant features", r, "")
    r = cli(["fit", cfs, "-o", tmp / "c.joblib", "--select", "mrmr", "--classifier", "knn"], cwd=tmp, env=env)
    case("fit --select mrmr on constant features", r, "")
    # 10. too few images per class
    sfs = tmp / "small.features"
    rng = np.random.default_rng(0)
    make_features(sfs, rng.normal(size=(13, 4)), ["a"] * 10 + ["b"] * 3)
    r = cli(["fit", sfs, "-o", tmp / "s.joblib"], cwd=tmp, env=env)
    case("fit (svm-calibrated, 5 folds) with a class of 3", r, "")
    tfs = tmp / "tiny.features"
    make_features(tfs, rng.normal(size=(11, 4)), ["a"] * 10 + ["b"])
    r = cli(["cv", tfs, "-o", tmp / "rep_tiny", "--classifier", "knn", "--select", "none", "--quiet"], cwd=tmp,
            env=env)
    case("cv with a class of 1 image", r, "")
    # 11. formula injection in CSV outputs
    d = tmp / "inject"
    images(d / "=HYPERLINK(1)", 6)
    images(d / "+b", 6, seed=3)
    (d / "+b" / "@bad.png").write_bytes(b"not an image")
    out = tmp / "inject.features"
    cli(["extract", d, "-o", out, *EXTRACT], cwd=tmp, env=env)
    failed = Path(str(out) + ".failed.csv")
    r = cli(["cv", out, "-o", tmp / "rep_inj", "--classifier", "knn", "--select", "none", "--folds", "2",
             "--quiet", "--baseline", "majority"], cwd=tmp, env=env)
    bad_cells = 0
    import csv
    for f in [failed, *(tmp / "rep_inj").glob("*.csv")]:
        if f.exists():
            with open(f, newline="") as fh:
                bad_cells += sum(1 for row in csv.reader(fh) for c in row if c[:1] in ("=", "+", "-", "@"))
    case("labels/paths starting with = + @ in CSVs", r, f"unescaped formula cells: {bad_cells}")
    # 12. interrupted cv; rerun into an old folder; stale .failed.csv
    prelude = "interrupt"
    rep = tmp / "rep_int"
    r = cli(["cv", out, "-o", rep, "--classifier", "knn", "--select", "none", "--folds", "2", "--quiet",
             "--baseline", "majority"], cwd=tmp, env=env, prelude=prelude)
    left = sorted(p.name for p in rep.iterdir()) if rep.exists() else []
    case("cv interrupted while plotting", r, f"folder left: {left}")
    rep = tmp / "rep_inj"
    (rep / "plots").mkdir(parents=True, exist_ok=True)
    (rep / "plots" / "stale_old.png").write_bytes(b"old")
    r = cli(["cv", out, "-o", rep, "--classifier", "knn", "--select", "none", "--folds", "2", "--quiet",
             "--baseline", "majority"], cwd=tmp, env=env)
    case("cv rerun into an old report folder", r, f"stale plot kept: {(rep / 'plots' / 'stale_old.png').exists()}")
    (d / "+b" / "@bad.png").unlink()
    r = cli(["extract", d, "-o", out, *EXTRACT], cwd=tmp, env=env)
    case("extract rerun after fixing the bad image", r, f"stale .failed.csv kept: {failed.exists()}")
    shutil.rmtree(tmp, ignore_errors=True)


def _crafted_skops(good: Path, out: Path, payload: dict) -> Path:
    """``good`` with one more attribute node, ``payload``, and a sidecar whose sha256 matches (anyone who can write
    the model file can recompute it)."""
    import hashlib
    import zipfile

    with zipfile.ZipFile(good) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["content"]["x_"] = payload
    schema["content"]["key_types"]["content"].append({"__class__": "str", "__module__": "builtins",
                                                      "__loader__": "TypeNode"})
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    side = json.loads(Path(f"{good}.json").read_text())
    side.update(sha256=hashlib.sha256(out.read_bytes()).hexdigest(), file=out.name)
    Path(f"{out}.json").write_text(json.dumps(side))
    return out


def _issue23(tmp, env, case):
    """Issue 23: a .skops file that runs code, a joblib file from elsewhere, classifiers on small or degenerate data."""
    env = {**env, "DEEPFEAT_CACHE_DIR": str(tmp / "cache"), "DEEPFEAT_TRUST_DIR": str(tmp / "trust")}
    rng = np.random.default_rng(0)
    d = classes(tmp / "imgs", ("a", "b"), n=3)
    feats = tmp / "f.features"
    cli(["extract", d, "-o", feats, *EXTRACT, "--no-cache"], cwd=tmp, env=env)
    good = tmp / "good.skops"
    cli(["fit", feats, "-o", good, "--classifier", "knn"], cwd=tmp, env=env)
    marker = tmp / "PWNED"

    def value(v):
        return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(v),
                "is_json": True}
    namespace = {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {},
                 "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": []}}
    # numpy.testing's runstring(code, namespace) is exec(code, namespace); 0.2 trusted every numpy.* name
    payload = {"__class__": "runstring", "__module__": "numpy.testing._private.utils",
               "__loader__": "ConstructorFromReduceNode",
               "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                           "content": [value(f"open({str(marker)!r}, 'w').close()"), namespace]}}
    crafted = _crafted_skops(good, tmp / "crafted.skops", payload)
    r = cli(["predict", crafted, d / "a", "-o", tmp / "p1.csv"], cwd=tmp, env=env)
    case("23.1 predict crafted.skops (numpy exec payload), no --trust", r, f"code ran: {marker.exists()}")
    # a joblib file written by another install (not in this user's ledger)
    other = tmp / "other.joblib"
    cli(["fit", feats, "-o", other, "--classifier", "knn"], cwd=tmp, env={**env, "DEEPFEAT_TRUST_DIR": str(tmp / "o")})
    r = cli(["predict", other, d / "a", "-o", tmp / "p2.csv"], cwd=tmp, env=env)
    case("23.1 predict a joblib another install wrote, no --trust", r, f"predictions written: "
                                                                         f"{(tmp / 'p2.csv').exists()}")
    r = cli(["predict", other, d / "a", "-o", tmp / "p3.csv", "--trust"], cwd=tmp, env=env)
    case("23.1 the same with --trust", r, f"predictions written: {(tmp / 'p3.csv').exists()}")
    # 3. small or degenerate data
    small = tmp / "small.features"
    make_features(small, rng.normal(size=(10, 4)) + np.repeat([0, 3], 5)[:, None], ["a"] * 5 + ["b"] * 5)
    eight = tmp / "eight.features"
    make_features(eight, rng.normal(size=(40, 8)) + 4 * np.eye(8)[np.repeat(np.arange(8), 5)],
                  [c for c in "abcdefgh" for _ in range(5)])
    const = tmp / "const.features"
    make_features(const, np.ones((20, 6)), ["a"] * 10 + ["b"] * 10)
    normal = tmp / "normal.features"
    make_features(normal, rng.normal(size=(30, 5)) + np.repeat([0, 2], 15)[:, None], ["a"] * 15 + ["b"] * 15)
    cv = ["--quiet", "--baseline", "majority", "--fold-cache", "none"]
    r = cli(["cv", small, "-o", tmp / "r1", "--classifier", "ann", "--select", "none", "--folds", "2", *cv],
            cwd=tmp, env=env)
    case("23.3 cv --classifier ann, 10 images, 2 folds", r,
         f"accuracy per fold: {_csv_values(tmp / 'r1' / 'per_fold.csv', 'accuracy', 'classifier', 'ann')}")
    r = cli(["curve", small, "-o", tmp / "r2", "--classifier", "ann", "--select", "none", "--sizes", "2,3",
             "--repeats", "1", "--baseline", "none"], cwd=tmp, env=env)
    case("23.3 curve --classifier ann --sizes 2,3", r,
         f"accuracy per size: {_csv_values(tmp / 'r2' / 'curve.csv', 'accuracy', 'features', 'features')}")
    r = cli(["cv", eight, "-o", tmp / "r3", "--classifier", "sgd", "--select", "none", "--folds", "5", *cv],
            cwd=tmp, env=env)
    case("23.3 cv --classifier sgd, 8 classes x 5 images, 5 folds", r,
         f"accuracy per fold: {_csv_values(tmp / 'r3' / 'per_fold.csv', 'accuracy', 'classifier', 'sgd')}")
    r = cli(["cv", const, "-o", tmp / "r4", "--classifier", "nb", "--select", "none", "--folds", "2", *cv],
            cwd=tmp, env=env)
    auc = _csv_values(tmp / "r4" / "per_fold.csv", "roc_auc", "classifier", "nb")
    case("23.3 cv --classifier nb on constant features", r, f"roc_auc per fold: {auc}")
    cplx = tmp / "complex.features"
    code = ("import sys, numpy as np; f = dict(np.load(sys.argv[1])); f['X'] = (1j * np.ones(f['X'].shape))"
            ".astype(np.complex64); np.savez(sys.argv[2], **f)")
    subprocess.run([PY, "-c", code, str(const), str(tmp / "complex.npz")], check=True)
    os.replace(tmp / "complex.npz", cplx)
    r = cli(["cv", cplx, "-o", tmp / "r5", "--classifier", "nb", "--select", "none", "--folds", "2", *cv],
            cwd=tmp, env=env)
    case("23.3 cv on a FeatureSet file with complex X", r, "")
    r = cli(["cv", normal, "-o", tmp / "r6", "--classifier", "knn", "--select", "mrmr", "--mrmr-threshold", "1e9",
             "--folds", "2", *cv], cwd=tmp, env=env)
    case("23.3 cv --mrmr-threshold 1e9 (keeps no feature)", r,
         f"mRMR features per fold: {_csv_values(tmp / 'r6' / 'per_fold.csv', 'n_features', 'selection', 'mrmr')}")
    r = cli(["fit", normal, "-o", tmp / "t.joblib", "--classifier", "knn", "--select", "mrmr", "--mrmr-threshold",
             "1e9"], cwd=tmp, env=env)
    case("23.3 fit --mrmr-threshold 1e9", r, "")
    r = cli(["cv", normal, "-o", tmp / "r7", "--classifier", "knn", "--select", "mrmr", "--mrmr-threshold", "nan",
             "--folds", "2", *cv], cwd=tmp, env=env)
    case("23.3 cv --mrmr-threshold nan", r, "")
    shutil.rmtree(tmp, ignore_errors=True)


def _csv_values(path, column, where=None, equals=None):
    if not Path(path).exists():
        return f"no {Path(path).name}"
    import pandas as pd
    table = pd.read_csv(path)
    if where is not None:
        table = table[table[where] == equals]
    return [round(v, 3) for v in table[column].tolist()]


def _same_x(a, b) -> str:
    """Whether FeatureSet files ``a`` and ``b`` hold the same X, bit for bit (in a subprocess: this process may be
    'nobody')."""
    if not Path(a).exists():
        return "no FeatureSet written"
    code = ("import sys; from deepfeat import load_features as L; a, b = L(sys.argv[1]), L(sys.argv[2]); "
            "print(a.X.tobytes() == b.X.tobytes() and list(a.paths) == list(b.paths))")
    p = subprocess.run([PY, "-c", code, str(a), str(b)], capture_output=True, text=True, env=os.environ)
    return f"X equal to a normal run's, bit for bit: {p.stdout.strip() or p.stderr.strip()[-80:]}"


def _raw_html(paths) -> str:
    """How many raw tags from the data (``<script``, ``<img``) the Markdown files hold."""
    found = [p for p in paths if Path(p).exists()]
    if not found:
        return "no report.md"
    n = sum(Path(p).read_text().count(tag) for p in found for tag in ("<script", "<img"))
    return f"raw <script/<img in {len(found)} report.md: {n}"


def _issue23_rest(tmp, env, case):
    """Issue 23 items 2, 4, 5, 6: caches that cannot be written, a pipeline file that is not UTF-8, HTML in Markdown
    reports, and the command line's messages."""
    import time
    env = {**env, "DEEPFEAT_CACHE_DIR": str(tmp / "cache")}
    os.chmod(tmp, 0o777)
    d = classes(tmp / "imgs", ("a", "b"), n=4)
    normal = tmp / "normal.features"
    cli(["extract", d, "-o", normal, *EXTRACT, "--precision", "fp32", "--cache-dir", tmp / "c0"], cwd=tmp, env=env)
    # 2. caches that stop a run
    ro = tmp / "ro_cache"
    ro.mkdir()
    os.chmod(ro, 0o555)  # read-only for 'nobody' (root ignores it: the case runs as nobody)
    out = tmp / "ro.features"
    r = cli(["extract", d, "-o", out, *EXTRACT, "--precision", "fp32", "--cache-dir", ro], cwd=tmp, env=env,
            as_nobody=True)
    case("23.2 extract, cache folder read-only (as nobody)", r, _same_x(out, normal))
    for prelude, name in (("cache_ro_midrun", "cache becomes read-only mid-run (EROFS)"),
                          ("cache_enospc", "cache on a full disk (ENOSPC)")):
        out = tmp / f"{prelude}.features"
        r = cli(["extract", d, "-o", out, *EXTRACT, "--precision", "fp32", "--cache-dir", tmp / prelude], cwd=tmp,
                env=env, prelude=prelude)
        case(f"23.2 extract, {name}", r, _same_x(out, normal))
    cvd = tmp / "cv.features"
    make_features(cvd, np.random.default_rng(3).normal(size=(12, 4)), ["a"] * 6 + ["b"] * 6)
    r = cli(["cv", cvd, "-o", tmp / "cv_ro", "--folds", "2", "--classifier", "nb", "--select", "none", "--baseline",
             "none", "--quiet", "--fold-cache", ro / "cv-folds"], cwd=tmp, env=env, as_nobody=True)
    case("23.2 cv, fold cache in a read-only folder (as nobody)", r,
         f"accuracy per fold: {_csv_values(tmp / 'cv_ro' / 'per_fold.csv', 'accuracy', 'classifier', 'nb')}")
    # 4. a pipeline file that is not UTF-8
    toml = tmp / "latin1.toml"
    toml.write_bytes(b'[experiment]\nname = "caf\xe9"\n')
    r = cli(["run", toml, d, "-o", tmp / "run"], cwd=tmp, env=env)
    case("23.4 run latin1.toml (not UTF-8)", r, "")
    # 5. HTML in the Markdown reports (class, file and backbone names)
    script, img = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"
    hostile = tmp / "hostile.features"
    rng = np.random.default_rng(0)
    make_features(hostile, rng.normal(size=(24, 4)) + np.repeat([0, 2], 12)[:, None], [script] * 12 + [img] * 12,
                  paths=[str(tmp / f"{img}{i}.png") for i in range(24)])
    quiet = ["--quiet", "--baseline", "none"]
    cli(["cv", hostile, "-o", tmp / "h_cv", "--classifier", "knn", "--select", "none", "--folds", "2", *quiet],
        cwd=tmp, env=env)
    cli(["fewshot", hostile, "-o", tmp / "h_fs", "--ways", "2", "--shots", "1", "--queries", "3", "--episodes", "3",
         "--classifier", "knn", "--baseline", "none"], cwd=tmp, env=env)
    cli(["curve", hostile, "-o", tmp / "h_curve", "--sizes", "2,all", "--repeats", "1", "--classifier", "knn",
         "--select", "none", "--baseline", "none"], cwd=tmp, env=env)
    hd = tmp / "h_imgs"
    images(hd / script.replace("/", "_"), 6, seed=1)
    images(hd / img, 6, seed=2)
    mds = [tmp / "h_cv" / "report.md", tmp / "h_fs" / "report.md", tmp / "h_curve" / "report.md"]
    case("23.5 cv, fewshot, curve with <script>/<img onerror> class and file names", (0, "", ""), _raw_html(mds))
    r = cli(["finetune", hd, "-o", tmp / "ft.pt", "--model", "tiny_darknet", "--weights", "none", "--image-size",
             "32", "--epochs", "1", "--device", "cpu", "--quiet", "--workers", "0"], cwd=tmp, env=env)
    case("23.5 finetune with <script>/<img onerror> class folders", r, _raw_html([tmp / "ft.report.md"]))
    # 6. messages
    fs = tmp / "fs.features"
    make_features(fs, rng.normal(size=(16, 4)) + np.repeat([0, 2], 8)[:, None], ["a"] * 8 + ["b"] * 8)
    # 3, re-checked: k nearest neighbours with fewer training images than k
    r = cli(["curve", fs, "-o", tmp / "k1", "--sizes", "2,all", "--repeats", "1", "--classifier", "knn", "--select",
             "none", "--baseline", "none"], cwd=tmp, env=env)
    case("23.3 curve --classifier knn (k=5) --sizes 2,all", r,
         f"accuracy per size: {_csv_values(tmp / 'k1' / 'curve_summary.csv', 'accuracy_mean')}")
    r = cli(["cv", fs, "-o", tmp / "k2", "--nested", "--inner-folds", "2", "--folds", "2", "--classifier",
             "knn-medium", "--select", "none", *quiet], cwd=tmp, env=env)
    case("23.3 cv --nested --classifier knn-medium (k=10), 8 per class", r,
         f"accuracy per fold: {_csv_values(tmp / 'k2' / 'per_fold.csv', 'accuracy', 'classifier', 'knn-medium')}")
    r = cli(["fewshot", fs, "-o", tmp / "w1", "--ways", "1"], cwd=tmp, env=env)
    case("23.6 fewshot --ways 1", r, "")
    nested = ["--nested", "--folds", "2", "--classifier", "nb", "--select", "none", *quiet]
    r = cli(["cv", fs, "-o", tmp / "n1", "--inner-folds", "5", *nested], cwd=tmp, env=env)
    case("23.6 cv --nested --inner-folds 5 (classes of 4 in a training part)", r, "")
    tiny = tmp / "tiny.features"
    make_features(tiny, rng.normal(size=(10, 4)), ["a"] * 8 + ["b"] * 2)
    r = cli(["cv", tiny, "-o", tmp / "n2", "--inner-folds", "2", *nested], cwd=tmp, env=env)
    case("23.6 cv --nested --inner-folds 2 (a class of 1 in a training part)", r, "")
    r = cli(["curve", fs, "-o", tmp / "tf", "--test-fraction", "0.02", "--sizes", "2", "--repeats", "1",
             "--classifier", "knn", "--select", "none", "--baseline", "none"], cwd=tmp, env=env)
    case("23.6 curve --test-fraction 0.02", r, "")
    p = subprocess.run([PY, "-c", "from deepfeat.cli import main; main()", "fewshot", str(fs), "-o", str(tmp / "w6"),
                        "--ways", "2,5", "--shots", "1", "--queries", "3", "--episodes", "3", "--classifier", "knn",
                        "--baseline", "none"], cwd=tmp, env={**os.environ, **env}, capture_output=True, text=True)
    said = [ln for ln in p.stderr.splitlines() if "skipped" in ln]
    noise = [ln for ln in p.stderr.splitlines() if ".py:" in ln or "warnings.warn" in ln]
    case("23.6 fewshot --ways 2,5 on 2 classes (skip warning)", (p.returncode, (said or [""])[0][:200], ""),
         f"stderr lines with file:line or source: {len(noise)}")
    rep = tmp / "rw"
    argv = ["cv", fs, "-o", rep, "--classifier", "nb", "--select", "none", "--folds", "2", *quiet]
    cli(argv, cwd=tmp, env=env)
    r = cli(argv, cwd=tmp, env=env, prelude="report_enospc", width=2000)
    kept = sorted(p.name for p in rep.iterdir()) if rep.exists() else []
    case("23.6 disk full while a report folder is rewritten", (r[0], r[1][:200], r[2]),
         f"says 'nothing finished before was lost': {'nothing finished before was lost' in r[1]}; names the removed "
         f"files: {'results.csv' in r[1]}; files left: {len(kept)}")
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    t0 = time.perf_counter()
    r = cli(["cv", fs, "-o", tmp / "dask", "--scheduler", address, "--folds", "2", "--classifier", "nb",
             "--select", "none", *quiet], cwd=tmp, env=env, isolated=True)
    case("23.6 cv --scheduler at a port nobody answers", r, f"{time.perf_counter() - t0:.1f} s (process start "
                                                             "included)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
