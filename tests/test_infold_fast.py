"""In-fold fine-tuning, fast paths: fold features from the cached trunk equal a full forward pass; the folds' fine-
tunings as Dask tasks give the local run's results (tiny model, random weights, 32 px images, 1 epoch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.data.images import sha256_file
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.evaluation.infold import cross_validate_finetuned
from deepfeat.extraction.api import extract_features
from deepfeat.features import FeatureSet
from deepfeat.finetuning import trunk as TR
from deepfeat.finetuning.run import FinetuneConfig, finetune, read_checkpoint
from deepfeat.finetuning.trunk_features import features_from_trunk

CFG = FinetuneConfig(epochs=1, batch_size=8, image_size=32, workers=0)
MODEL = dict(model="test_efficientnet", weights="none")

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),  # Dask fold tasks run torch with 1 thread too
              pytest.mark.filterwarnings("ignore:an epoch is only")]


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_smears(root / "imgs", n_per_class=8, classes=["blast", "lymphocyte"], size=32, seed=2)


@pytest.fixture
def prefix_images(monkeypatch):
    """How many images passed the frozen stages (the trunk) from here on."""
    seen = []
    forward = TR._Prefix.forward
    monkeypatch.setattr(TR._Prefix, "forward", lambda self, x: (seen.append(x.shape[0]), forward(self, x))[1])
    return seen


def _full_pass(cells, ckpt, layer):
    return extract_features(cells, weights=str(ckpt), layer=layer, cache=False, progress=False, image_size=32,
                            precision="fp32",  # the fine-tuning's precision on a CPU
                            model=MODEL["model"]).X


def test_fold_features_from_the_cached_trunk_equal_a_full_pass(cells, tmp_path, prefix_images):
    TR.clear_trunk_cache()
    sha = [sha256_file(p) for p in cells.paths]
    train = cells.subset(list(range(0, len(cells), 2)))  # the test images are the other half
    finetune(train, out=tmp_path / "fold.pt", config=CFG, progress=False, trunk_images=(cells.paths, sha), **MODEL)
    plan = read_checkpoint(tmp_path / "fold.pt")["plan"]
    assert plan["cached_trunk"] and plan["frozen_stages"] > 0
    prefix_images.clear()
    for layer in ("logits", "pooled"):
        fast = features_from_trunk(tmp_path / "fold.pt", cells.paths, sha, layer=layer)
        full = _full_pass(cells, tmp_path / "fold.pt", layer)
        assert fast.shape == full.shape == (len(cells), 1000 if layer == "logits" else full.shape[1])
        np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-5 * np.abs(full).max())
    # every image, test images included, was cached by the run: no image passed the frozen stages again
    assert prefix_images == []
    # without a cache (a new process, a resumed run) the activations are computed, to the same features
    TR.clear_trunk_cache()
    again = features_from_trunk(tmp_path / "fold.pt", cells.paths, sha, layer="logits")
    np.testing.assert_allclose(again, _full_pass(cells, tmp_path / "fold.pt", "logits"), rtol=1e-4,
                               atol=1e-5 * np.abs(again).max())


def test_no_cached_trunk_means_a_full_pass(cells, tmp_path):
    sha = [sha256_file(p) for p in cells.paths]
    finetune(cells, out=tmp_path / "f.pt", config=FinetuneConfig.from_dict({**CFG.to_dict(), "cache_trunk": False}),
             progress=False, **MODEL)
    assert features_from_trunk(tmp_path / "f.pt", cells.paths, sha, layer="logits") is None


def _outcome(res):
    pred = res.predictions.sort_values(["config", "row"]).reset_index(drop=True)
    return pred[["config", "row", "fold", "pred"]], pred.filter(regex="^score_(?!kind)").to_numpy(np.float64)


@pytest.mark.slow  # two worker processes import torch and fine-tune: 3-6 min here at load average 20-28
def test_fold_finetuning_on_dask_equals_local(cells, tmp_path):
    pytest.importorskip("distributed")
    cv = dict(classifiers=["svm"], selections=["none"], folds=2, baseline="majority", progress=False, **MODEL)
    TR.clear_trunk_cache()  # the activations are then computed as a fresh Dask worker computes them
    local = cross_validate_finetuned(cells, finetune=CFG, work_dir=tmp_path / "local", **cv)
    dask = cross_validate_finetuned(cells, finetune=CFG, work_dir=tmp_path / "dask", scheduler="local:2", **cv)
    assert dask.config["parameters"]["scheduler"].startswith("dask ")
    assert set(dask.summary["config"]) == {"svm+none", "baseline-majority", "network+end-to-end"}
    (a, sa), (b, sb) = _outcome(local), _outcome(dask)
    assert a.equals(b) and sa.shape[1] == 2 and np.array_equal(sa, sb, equal_nan=True)
    for fold in ("fold00.pt", "fold01.pt"):  # the same networks, bit for bit
        x, y = (torch.load(tmp_path / w / fold, weights_only=True)["state_dict"] for w in ("local", "dask"))
        assert all(torch.equal(x[k], y[k]) for k in x)


class _Shifted:
    """A picklable ``fold_features`` that checks it holds the worker's one GPU resource while it runs."""

    def __init__(self, X):
        self.X = X

    def __call__(self, fold_index, train_idx, test_idx):
        try:
            from distributed import get_worker

            assert get_worker().state.available_resources["GPU"] == 0, "the task does not hold the GPU"
        except ValueError:  # not on a worker: the local run
            pass
        return self.X + 0.01 * fold_index


def test_fold_features_tasks_get_their_resources_and_equal_local():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 20)
    fs = FeatureSet(rng.normal(size=(40, 6)).astype(np.float32) + (y == "b")[:, None], y=y)
    cv = dict(classifiers=["knn"], selections=["none"], folds=4, baseline="none", progress=False, fold_cache=None)
    local = cross_validate(fs, fold_features=_Shifted(fs.X), **cv)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"GPU": 1},
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        dask = cross_validate(fs, fold_features=_Shifted(fs.X), scheduler=client, resources="GPU=1", **cv)
    assert dask.config["parameters"]["resources"] == {"GPU": 1.0}
    assert local.per_fold["accuracy"].tolist() == dask.per_fold["accuracy"].tolist()
    assert local.predictions["pred"].tolist() == dask.predictions["pred"].tolist()


def test_resources_need_a_scheduler_and_fold_features():
    fs = FeatureSet(np.eye(8, dtype=np.float32), y=np.repeat(["a", "b"], 4))
    with pytest.raises(DeepfeatError, match="'resources' parameter .*--finetune with --scheduler"):
        cross_validate(fs, resources="GPU=1", folds=2, progress=False)
    with pytest.raises(DeepfeatError, match="'resources' parameter must look like 'GPU=1'"):
        cross_validate(fs, resources="GPU", folds=2, fold_features=lambda *a: fs.X, scheduler="local:1",
                       progress=False)
