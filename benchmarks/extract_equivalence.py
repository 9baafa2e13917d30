"""Same features, same cache keys: one version of deepfeat against another, on real images.

For each request below, four runs, each in its own process (so each imports its own deepfeat):

  before-cold   the BEFORE interpreter into an empty cache;
  after-cold    the AFTER interpreter into another empty cache;
  after-warm    AFTER reading a copy of before-cold's cache (what a user upgrading with a full cache sees);
  before-warm   BEFORE reading a copy of after-cold's cache (caches written by AFTER stay readable by BEFORE).

Compared: after-cold with before-cold and after-warm with before-warm (X: max |difference| and bit equality; y,
paths, sha256, feature names and ``meta`` without dates, timings, cache hit counts and the cache folder), and every
warm X with before-cold's. Between the cold caches: the file names under ``features/`` and ``requests/`` (cache
keys and request-note ids), every entry's bytes, and the ``config.json`` notes (informational). Warm runs must hit
every readable row, add no file to the cache they read and, when every image is readable, import no torch (served
from the request notes).

Requests (``../shared/data/all_idb2_small``, 260 images with 2 byte-identical pairs; precision 'auto', device 'auto'):
plain Lite0 logits, Lite0 pooled, fused Lite0 logits,pooled + colour_histogram, Lite0 logits tta d4 on 32 images,
tiny_darknet with the reference ``tiny.weights`` file, darknet19 with weights 'none' (64 images), Lite0 logits in
bf16 (64 images) and Lite0 logits on 32 images plus one undecodable file (``on_error='skip'``). Usage::

    python benchmarks/extract_equivalence.py --before /work/wt/base/.venv/bin/python --after .venv/bin/python \
        [--data ../shared/data/all_idb2_small] [--threads 2] [--cases plain,pooled,...] [--keep DIR]

Exit status 0 when every comparison holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
SHARED = Path(os.environ.get("DEEPFEAT_SHARED", HERE.parents[2] / "shared"))
LITE0 = {"model": "tf_efficientnet_lite0", "weights": "imagenet"}
CASES = {
    "plain": ({**LITE0, "layer": "logits"}, None),
    "pooled": ({**LITE0, "layer": "pooled"}, None),
    "fused": ({"model": "tf_efficientnet_lite0,colour_histogram", "weights": "imagenet", "layer": "logits,pooled"},
              None),
    "tta_d4": ({**LITE0, "layer": "logits", "tta": "d4"}, 32),
    "tiny_darknet": ({"model": "tiny_darknet", "weights": str(SHARED / "reference" / "darknet" / "tiny.weights"),
                      "layer": "logits"}, None),
    "darknet19_none": ({"model": "darknet19", "weights": "none", "layer": "pooled"}, 64),
    "plain_bf16": ({**LITE0, "layer": "logits", "precision": "bf16"}, 64),
    "unreadable": ({**LITE0, "layer": "logits", "on_error": "skip"}, 32),
}
BAD = "not-an-image.jpg"  # written by the driver beside the runs; the "unreadable" case adds it, labelled "bad"
#: meta fields that differ between runs by nature
RUN_FIELDS = {"created", "seconds", "cache_hits", "cache_misses", "cache_dir"}


def worker(case: str, data: str, cache: str, out: str) -> None:
    """One extraction in this interpreter; writes X etc. (npz) and meta + facts (json) to ``out``.*."""
    import numpy as np

    import deepfeat
    from deepfeat.data.sources import open_source
    from deepfeat.extraction.api import extract_features

    kwargs, n = CASES[case]
    source = open_source(data)
    if n is not None:
        step = len(source) // n
        source = source.subset(range(0, step * n, step))
    if case == "unreadable":
        bad = str(Path(cache).parents[1] / BAD)
        source = type(source)(source.paths + [bad], source.labels + ["bad"], name=source.name, root=source.root)
    t0, c0 = time.perf_counter(), time.process_time()
    fs = extract_features(source, cache=cache, progress=False, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    torch_loaded = "torch" in sys.modules
    np.savez(out + ".npz", X=fs.X, y=np.asarray(fs.y, dtype=str), paths=np.asarray(fs.paths, dtype=str),
             sha256=np.asarray(fs.sha256, dtype=str), names=np.asarray(fs.feature_names, dtype=str))
    Path(out + ".json").write_text(json.dumps({
        "meta": fs.meta, "torch_loaded": torch_loaded, "deepfeat": deepfeat.__file__, "wall": wall, "cpu": cpu,
        "threads": __import__("torch").get_num_threads() if torch_loaded else None}, default=str))


def _strip(meta):
    if isinstance(meta, dict):
        return {k: _strip(v) for k, v in meta.items() if k not in RUN_FIELDS}
    if isinstance(meta, list):
        return [_strip(v) for v in meta]
    return meta


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(python, case, data, cache, out, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([python, str(HERE), "worker", case, data, str(cache), str(out)], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{python} {case} failed:\n{done.stderr[-3000:]}")
    import numpy as np

    with np.load(str(out) + ".npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(Path(str(out) + ".json").read_text())


def _compare(ref, other):
    """(max |dX|, X bit-identical, list of other differences)."""
    import numpy as np

    (a, ma), (b, mb) = ref, other
    problems = [k for k in ("y", "paths", "sha256", "names") if not np.array_equal(a[k], b[k])]
    same_shape = a["X"].shape == b["X"].shape
    if not same_shape:
        problems.append(f"X shape {a['X'].shape} vs {b['X'].shape}")
    diff = float(np.abs(a["X"].astype(np.float64) - b["X"]).max()) if same_shape else float("inf")
    bits = same_shape and a["X"].tobytes() == b["X"].tobytes()
    sa, sb = _strip(ma["meta"]), _strip(mb["meta"])
    if sa != sb:
        keys = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
        problems.append("meta differs in " + ", ".join(f"{k}: {sa.get(k)!r} vs {sb.get(k)!r}"[:300] for k in keys))
    return diff, bits, problems


def compare_case(case, args, work: Path) -> bool:
    data = str(Path(args.data).resolve())
    work.mkdir(parents=True, exist_ok=True)
    (work / BAD).write_bytes(b"\xff\xd8 these bytes are no JPEG")
    c = {k: work / case / f"cache-{k}" for k in ("before", "after", "after-on-before", "before-on-after")}
    o = {k: work / case / k for k in ("before-cold", "after-cold", "after-warm", "before-warm")}
    (work / case).mkdir(parents=True)
    runs = {"before-cold": _run(args.before, case, data, c["before"], o["before-cold"], args.threads),
            "after-cold": _run(args.after, case, data, c["after"], o["after-cold"], args.threads)}
    shutil.copytree(c["before"], c["after-on-before"])
    shutil.copytree(c["after"], c["before-on-after"])
    runs["after-warm"] = _run(args.after, case, data, c["after-on-before"], o["after-warm"], args.threads)
    runs["before-warm"] = _run(args.before, case, data, c["before-on-after"], o["before-warm"], args.threads)
    fb, fa = _files(c["before"]), _files(c["after"])
    entries = {k for k in fb if k.startswith("features/") and k.endswith(".f32")}
    configs = sorted(k for k in fb if k.endswith("config.json"))
    keys_same = sorted(fb) == sorted(fa)
    bytes_same = keys_same and all(fb[k] == fa[k] for k in entries)
    config_diff = [k for k in configs if fa.get(k) != fb[k]]
    ok = keys_same and bytes_same
    all_readable = case != "unreadable"
    line = [f"{case}: {runs['before-cold'][0]['X'].shape[0]} x {runs['before-cold'][0]['X'].shape[1]}",
            f"cache files {len(fb)} ({len(entries)} entries, {sum(k.startswith('requests/') for k in fb)} request "
            f"notes): names {'identical' if keys_same else 'DIFFER'}, entry bytes "
            f"{'identical' if bytes_same else 'DIFFER'}"
            + (f", config.json differs: {config_diff}" if config_diff else "")]
    if not keys_same:
        line.append(f"  only before: {sorted(set(fb) - set(fa))[:6]}; only after: {sorted(set(fa) - set(fb))[:6]}")
    for arm, ref in (("after-cold", "before-cold"), ("after-warm", "before-warm"), ("after-warm", "before-cold"),
                     ("before-warm", "before-cold")):
        diff, bits, problems = _compare(runs[ref], runs[arm])
        facts = runs[arm][1]
        meta_only = [p for p in problems if p.startswith("meta")]
        if arm.endswith("warm") and ref.endswith("cold"):  # served vs computed: the rows must agree
            problems = [p for p in problems if not p.startswith("meta")]
        warm = arm.endswith("warm")
        served = warm and not facts["torch_loaded"]
        arm_ok = bits and not problems and (not warm or (facts["meta"].get("cache_misses") == 0 and
                                                         (served or not all_readable)))
        ok = ok and arm_ok
        line.append(f"  {arm:11s} vs {ref:11s}: max|dX| {diff:.3g}, bits {'identical' if bits else 'DIFFER'}, "
                    f"hits {facts['meta'].get('cache_hits')}/{facts['meta'].get('n_input')}"
                    + (f", served without torch: {served}" if warm else "")
                    + (f", meta {'same' if not meta_only else 'differs'}" if warm and ref.endswith("cold") else "")
                    + f", wall {facts['wall']:.1f} s cpu {facts['cpu']:.1f} s"
                    + ("" if not problems else f"\n    PROBLEMS: {problems}"))
    for arm, cache in (("after-warm", "after-on-before"), ("before-warm", "before-on-after")):
        src = c["before"] if arm == "after-warm" else c["after"]
        added = sorted(set(_files(c[cache])) - set(_files(src)))
        if added:
            ok = False
            line.append(f"  {arm} ADDED {len(added)} cache files, e.g. {added[:3]}")
    cold = {k: runs[k][1] for k in ("before-cold", "after-cold")}
    line.append(f"  cold wall after/before {cold['after-cold']['wall'] / cold['before-cold']['wall']:.2f}x, cpu "
                f"{cold['after-cold']['cpu'] / cold['before-cold']['cpu']:.2f}x; deepfeat before "
                f"{cold['before-cold']['deepfeat']}, after {cold['after-cold']['deepfeat']}")
    print("\n".join(line), flush=True)
    return ok


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["worker"]:
        worker(*sys.argv[2:6])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="python of the reference version (e.g. 0.2's venv)")
    ap.add_argument("--after", required=True, help="python of the version under test")
    ap.add_argument("--data", default=str(SHARED / "data" / "all_idb2_small"))
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of every run (the same for both)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--keep", help="keep the caches and outputs in this (new) folder")
    args = ap.parse_args(argv)
    args.before, args.after = os.path.abspath(args.before), os.path.abspath(args.after)  # not resolved: venv links
    if not Path(args.data).is_dir():
        print(f"no data at {args.data}; nothing compared")
        return 0
    print(f"load average {open('/proc/loadavg').read().split()[:3]}, {args.threads} threads per run")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="deepfeat-equiv-"))
    try:
        results = [compare_case(case, args, work) for case in args.cases.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("ALL EQUIVALENT" if all(results) else "SOME DIFFER")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
