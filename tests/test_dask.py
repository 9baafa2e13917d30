"""Dask scale-out: CV grids and sharded extraction through a scheduler equal local runs, bit for bit.

Mostly on a threads-mode LocalCluster (fast); one processes-mode CV, one worker killed mid-run (slow). Every wait
on the cluster is bounded (timeouts), inputs are tiny.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.naive_bayes import GaussianNB

from deepfeat.dask_client import DaskUnavailableError, check_scheduler, parse_resources
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.extraction.api import extract_features
from deepfeat.features import FeatureSet, load_features

distributed = pytest.importorskip("distributed")

CV = dict(classifiers=["svm", "knn", "nb"], folds=3, n_features=8, progress=False, baseline="majority",
          fold_cache=None)
EX = dict(model="test_efficientnet", weights="none", layer="pooled", image_size=32, precision="fp32",
          progress=False, num_workers=0)
TIMEOUT = 60


def _features(seed=0, n=60, d=24):
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b", "c"], n // 3)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, :3] += (y == "a")[:, None]
    X[:, 3:5] += (y == "b")[:, None]
    return FeatureSet(X, y, sha256=[f"{i:064x}" for i in range(n)])


def _assert_same(a, b):
    """Every table of two CV runs equal, except wall-clock times."""
    for attr in ("per_fold", "predictions", "summary"):
        A, B = getattr(a, attr), getattr(b, attr)
        cols = [c for c in A.columns if "time" not in c]
        pd.testing.assert_frame_equal(A[cols], B[cols], check_exact=True)


@pytest.fixture(autouse=True)
def _bounded(monkeypatch):
    """No test waits on the cluster for more than TIMEOUT seconds: a hang fails instead of blocking the suite."""
    from deepfeat.evaluation import distributed as cv_tasks
    from deepfeat.extraction import distributed as shard_tasks

    monkeypatch.setattr(cv_tasks, "RUN_TIMEOUT_S", TIMEOUT)
    monkeypatch.setattr(shard_tasks, "TIMEOUT_S", TIMEOUT)


@pytest.fixture(scope="module")
def client():
    """A threads-mode cluster (2 workers x 1 thread) on TCP, so the CLI can reach it by address too."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from deepfeat.data.synthetic import make_synthetic_smears

    root = tmp_path_factory.mktemp("dask-images")
    src = make_synthetic_smears(root / "img", n_per_class=3, size=40, seed=0)
    (root / "img" / src.labels[0] / "broken.png").write_bytes(b"not an image")  # one unreadable file
    return root / "img"


# ------------------------------------------------------------------------------------------------ the scheduler

@pytest.mark.parametrize("bad", ["local:0", "local", "cluster", "http://x:1", 3])
def test_a_bad_scheduler_is_refused_before_any_work(bad):
    with pytest.raises(DeepfeatError, match="The 'scheduler' parameter must be"):
        check_scheduler(bad)


def test_resources_parse_and_bad_ones_are_named():
    assert parse_resources("GPU=1") == {"GPU": 1.0}
    assert parse_resources("GPU=1, MEM=2.5") == {"GPU": 1.0, "MEM": 2.5}
    assert parse_resources(None) is None
    with pytest.raises(DeepfeatError, match="must look like 'GPU=1'"):
        parse_resources("GPU")
    with pytest.raises(DeepfeatError, match="resource 'GPU' needs a positive amount"):
        parse_resources("GPU=0")


def test_without_dask_every_scheduler_path_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    monkeypatch.setitem(sys.modules, "dask", None)
    fs = _features()
    with pytest.raises(DaskUnavailableError, match=r'pip install "deepfeat\[dask\]"'):
        cross_validate(fs, scheduler="local:1", **CV)
    with pytest.raises(DaskUnavailableError, match=r"deepfeat\[dask\]"):
        extract_features(["x.png"], scheduler="local:1", **EX)
    fs.save(tmp_path / "f.features")
    code, _, err = run(capsys, "cv", tmp_path / "f.features", "-o", tmp_path / "r", "--scheduler", "local:1",
                       "--quiet")
    assert code == 2 and r'deepfeat[dask]' in err and err.startswith("error:")


def test_deepfeat_imports_and_runs_without_dask(tmp_path):
    """dask stays optional: with its import failing, deepfeat, its CLI and a CV run as before."""
    code = textwrap.dedent("""
        import sys
        sys.modules["dask"] = None
        sys.modules["distributed"] = None
        import numpy as np
        import deepfeat, deepfeat.cli, deepfeat.dask_client
        import deepfeat.evaluation.distributed, deepfeat.extraction.distributed
        from deepfeat import FeatureSet, cross_validate
        X = np.random.default_rng(0).normal(size=(30, 6)); y = np.repeat(["a", "b"], 15)
        r = cross_validate(FeatureSet(X, y), classifiers=["nb"], folds=3, progress=False, fold_cache=None)
        print("ok", len(r.per_fold))
    """)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "ok"


# ------------------------------------------------------------------------------------------------ cross-validation

def test_cv_on_the_scheduler_equals_n_jobs_1(client):
    fs = _features()
    local = cross_validate(fs, n_jobs=1, selections=["none", "mrmr"], **CV)
    dist = cross_validate(fs, scheduler=client, selections=["none", "mrmr"], **CV)
    _assert_same(local, dist)
    assert dist.config["parameters"]["scheduler"].startswith("dask tcp://")
    assert len(dist.per_fold) == 3 * (3 * 2 + 1)  # folds x (classifiers x selections + majority)


def test_a_grid_and_nested_cv_on_the_scheduler_equal_local(client):
    a, b = _features(0), _features(0)
    b.X = b.X[:, ::-1] * 2
    sets = {"a": a, "b": b}
    local = cross_validate(sets, n_jobs=1, nested=True, inner_folds=2, **CV)
    dist = cross_validate(sets, scheduler=client, nested=True, inner_folds=2, **CV)
    _assert_same(local, dist)
    pd.testing.assert_frame_equal(local.nested["outer"], dist.nested["outer"], check_exact=True)


def test_cv_on_the_scheduler_fills_and_reads_the_fold_cache(client, tmp_path):
    fs = _features(1)
    kw = {**CV, "fold_cache": tmp_path / "folds"}
    first = cross_validate(fs, scheduler=client, **kw)
    n_files = len(list((tmp_path / "folds").rglob("*.pkl")))
    assert n_files == 3 * (1 + 3 * 2)  # per fold: one ranking + classifiers x selections
    again = cross_validate(fs, scheduler=client, **kw)
    assert len(list((tmp_path / "folds").rglob("*.pkl"))) == n_files  # nothing new computed
    _assert_same(first, again)
    _assert_same(first, cross_validate(fs, n_jobs=1, **CV))


def test_cv_scheduler_resources_are_for_fold_features_only(client):
    # fold_features on a scheduler (one task per fold) is tested in test_infold_fast.py
    with pytest.raises(DeepfeatError, match="'resources' parameter"):
        cross_validate(_features(), scheduler=client, resources="GPU=1", **CV)


def test_cv_on_a_processes_local_cluster_equals_n_jobs_1():
    fs = _features(2)
    local = cross_validate(fs, n_jobs=1, **CV)
    dist = cross_validate(fs, scheduler="local:2", **CV)
    _assert_same(local, dist)


class DieOnce(ClassifierMixin, BaseEstimator):
    """A classifier whose first fit (in any process) kills that process, as a crashed worker would."""

    def __init__(self, marker=""):
        self.marker = marker

    def fit(self, X, y):
        try:  # O_EXCL: exactly one process dies, even when both workers start this fit at the same instant
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os._exit(1)
        self.model_ = GaussianNB().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(tmp_path):
    marker = tmp_path / "died"
    fs = _features(3)
    kw = {**CV, "classifiers": ["nb", DieOnce(str(marker))]}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") \
            as cluster, distributed.Client(cluster, timeout=TIMEOUT) as c:
        pids = set(c.run(os.getpid).values())
        dist = cross_validate(fs, scheduler=c, **kw)
        assert marker.exists()  # a worker process really died ...
        assert set(c.run(os.getpid).values()) != pids  # ... and the nanny replaced it
    _assert_same(cross_validate(fs, n_jobs=1, **kw), dist)


# ------------------------------------------------------------------------------------------------ extraction

def test_extraction_on_the_scheduler_equals_local_and_then_hits_the_cache(client, images, tmp_path):
    # shard_size a multiple of the batch size (8 on the CPU; as the defaults 2048 and 8 / 32): the same batches as
    # locally. (A shard ending in a batch of 1 can differ by ~1e-8: some CPU kernels round a batch of 1 apart.)
    local = extract_features(images, cache=tmp_path / "c1", on_error="skip", **EX)
    dist = extract_features(images, cache=tmp_path / "c2", on_error="skip", scheduler=client, shard_size=8, **EX)
    assert np.array_equal(local.X, dist.X) and local.X.dtype == dist.X.dtype
    for field in ("y", "paths", "sha256"):
        assert list(getattr(local, field)) == list(getattr(dist, field))
    assert dist.meta["skipped"] == local.meta["skipped"] and len(dist.meta["skipped"]) == 1
    assert dist.meta["model_sha256"] == local.meta["model_sha256"]
    assert dist.meta["precision"] == local.meta["precision"] == "fp32"
    assert dist.meta["cache_misses"] == len(dist) and dist.meta["distributed"]["shards"] == 2  # 13 paths / 8
    again = extract_features(images, cache=tmp_path / "c2", on_error="skip", scheduler=client, shard_size=8, **EX)
    assert again.meta["cache_hits"] == len(again) and again.meta["cache_misses"] == 0
    assert np.array_equal(again.X, local.X)
    with pytest.raises(DeepfeatError, match="1 image"):
        extract_features(images, cache=tmp_path / "c2", on_error="raise", scheduler=client, **EX)


def test_extraction_refuses_fused_requests_and_built_models(client, images):
    with pytest.raises(DeepfeatError, match="one model and one layer without TTA"):
        extract_features(images, scheduler=client, **{**EX, "layer": "logits,pooled"})
    import torch

    with pytest.raises(DeepfeatError, match="needs the model as a name"):
        extract_features(images, scheduler=client, **{**EX, "model": torch.nn.Linear(2, 2)})
    with pytest.raises(DeepfeatError, match="The 'shard_size' parameter must be an int >= 1"):
        extract_features(images, scheduler=client, shard_size=0, **EX)


def test_a_worker_with_another_model_or_precision_is_an_error(images, tmp_path):
    from deepfeat.extraction import distributed as dx

    request = {k: EX[k] for k in ("model", "weights", "layer", "image_size", "precision")}
    request.update(device="cpu", channels_last="auto", crop_border=False, batch_size=None)
    spec = dx._settle(request, [], None, os.getpid(), 1)  # this process: its torch threads are left alone
    assert spec["precision"] == "fp32" and spec["device"] == "cpu"
    dx._ENGINES.clear()
    bad = {**spec, "model_sha256": "0" * 64}
    with pytest.raises(dx.WorkerMismatchError, match="model_sha256 .* but the run was settled with 000000000000"):
        dx._engine_for(bad, None)
    auto = {**spec, "precision": "fp16", "request": {**request, "precision": "auto"}}
    with pytest.raises(dx.WorkerMismatchError, match="would choose precision .* settled at fp16"):
        dx._engine_for(auto, None)
    dx._ENGINES.clear()


def test_extraction_passes_resources_to_the_tasks(images, tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  resources={"GPU": 1}) as cluster, distributed.Client(cluster) as c:
        asked, submit = [], c.submit
        c.submit = lambda *a, **k: asked.append(k.get("resources")) or submit(*a, **k)
        fs = extract_features(images, cache=False, on_error="skip", scheduler=c, resources="GPU=1", **EX)
    assert fs.meta["distributed"]["resources"] == {"GPU": 1.0} and len(fs) == 12
    assert asked == [{"GPU": 1.0}] * (1 + 1)  # the settle task and the one shard


# ------------------------------------------------------------------------------------------------ the CLI

def test_cli_cv_and_extract_take_scheduler_options(client, images, tmp_path, capsys):
    address = client.scheduler.address
    out = tmp_path / "f.features"
    code, stdout, err = run(capsys, "extract", images, "-o", out, "--model", "test_efficientnet", "--weights",
                            "none", "--layer", "pooled", "--image-size", 32, "--precision", "fp32", "--cache-dir",
                            tmp_path / "cache", "--scheduler", address, "--shard-size", 8, "--quiet")
    assert code == 0, err
    fs = load_features(out)
    assert len(fs) == 12 and fs.meta["distributed"]["shard_size"] == 8 and fs.meta["distributed"]["shards"] == 2
    np.testing.assert_array_equal(fs.X, extract_features(images, cache=False, on_error="skip", **EX).X)
    code, stdout, err = run(capsys, "cv", out, "-o", tmp_path / "r", "--classifier", "nb", "--folds", 3,
                            "--select", "none", "--baseline", "majority", "--fold-cache", "none", "--scheduler",
                            address, "--quiet")
    assert code == 0, err
    assert "nb" in stdout and (tmp_path / "r" / "report.html").exists()
    code, _, err = run(capsys, "cv", out, "-o", tmp_path / "r2", "--folds", 3, "--scheduler", "cluster", "--quiet")
    assert code == 2 and "error: --scheduler must be" in err
    code, _, err = run(capsys, "extract", images, "-o", out, "--scheduler", address, "--resources", "GPU",
                       "--quiet")
    assert code == 2 and "must look like 'GPU=1'" in err


# ------------------------------------------------------------------------------------------------ big FeatureSets

def test_load_features_memory_maps_x_and_refuses_a_compressed_one(tmp_path):
    fs = _features(4, n=30, d=7)
    fs.save(tmp_path / "f.features")
    mapped = load_features(tmp_path / "f.features", mmap_mode="r")
    assert isinstance(mapped.X.base, np.memmap) or isinstance(mapped.X, np.memmap)
    assert np.array_equal(mapped.X, fs.X) and mapped.identity() == fs.identity()
    assert np.array_equal(load_features(tmp_path / "f.features").X, fs.X)
    mapped.save(tmp_path / "g.features")  # saving a mapped X writes the same file content
    assert np.array_equal(np.load(tmp_path / "g.features")["X"], fs.X)
    with open(tmp_path / "z.features", "wb") as fh:
        np.savez_compressed(fh, X=fs.X, meta_json=np.asarray("{}"))
    with pytest.raises(DeepfeatError, match="stored compressed, so it cannot be memory-mapped"):
        load_features(tmp_path / "z.features", mmap_mode="r")
    assert np.array_equal(load_features(tmp_path / "z.features").X, fs.X)


@pytest.mark.slow
def test_extraction_on_a_processes_local_cluster_equals_local(images, tmp_path, monkeypatch):
    """Worker processes build their own model; with the same torch thread count the rows are the same bits."""
    import torch

    monkeypatch.setenv("DEEPFEAT_WORKER_TORCH_THREADS", str(torch.get_num_threads()))  # inherited by the workers
    local = extract_features(images, cache=False, on_error="skip", **EX)
    dist = extract_features(images, cache=tmp_path / "c", on_error="skip", scheduler="local:1", shard_size=8, **EX)
    assert np.array_equal(local.X, dist.X)
    assert dist.meta["distributed"]["torch_threads_per_task"] == torch.get_num_threads()
    assert len(dist.meta["distributed"]["workers"]) >= 1 and dist.meta["model_sha256"] == local.meta["model_sha256"]
