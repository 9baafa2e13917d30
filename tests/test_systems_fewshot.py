"""The few-shot system's scoring (deepfeat.evaluation.systems_fewshot): nearest training-fold class mean by cosine,
on a tiny network (timm ``test_efficientnet``, random weights, 32 px) fine-tuned with the siamese objective."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.sources import open_source
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.systems_fewshot import cosine_prototypes, cosine_scores, fewshot_fold_predictions
from deepfeat.finetuning.run import FinetuneConfig, finetune

MODEL = dict(model="test_efficientnet", weights="none")
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore:an epoch is only")]


def _finetune(train_src, out, **options):
    cfg = FinetuneConfig(epochs=1, batch_size=8, image_size=32, workers=0, **{"objective": "siamese", **options})
    finetune(train_src, out=out, config=cfg, progress=False, **MODEL)
    return out


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_smears(root / "imgs", n_per_class=8, classes=["synthetic_blast", "synthetic_lymphocyte"],
                                 size=32, seed=3)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Two classes no network can confuse: red fields and blue fields, each with a little pixel noise."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    for label, rgb in (("blue", (20, 30, 220)), ("red", (220, 30, 20))):
        (root / label).mkdir()
        for i in range(8):
            img = np.clip(np.asarray(rgb) + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / label / f"{label}{i}.png")
    return open_source(root)


def test_predicts_the_held_out_images_of_a_fold(cells, tmp_path):
    train = np.arange(0, len(cells), 2)
    test = np.arange(1, len(cells), 2)
    ckpt = _finetune(cells.subset(train), tmp_path / "fold.pt")
    out = fewshot_fold_predictions(ckpt, cells, train, test)
    assert set(out) == {"pred", "scores", "score_kind", "fit_time", "predict_time"}
    assert out["score_kind"] == "probability"
    assert out["pred"].shape == (len(test),) and set(out["pred"]) <= {0, 1}
    assert out["scores"].shape == (len(test), 2)
    np.testing.assert_allclose(out["scores"].sum(axis=1), 1.0)
    assert (out["pred"] == out["scores"].argmax(axis=1)).all()
    assert out["fit_time"] > 0 and out["predict_time"] > 0
    # the training fold is the support set: a test image never makes a prototype
    with pytest.raises(DeepfeatError, match="share rows"):
        fewshot_fold_predictions(ckpt, cells, train, np.r_[test, train[:1]])


# the fold's embeddings come from the cached trunk when the run cached one (on a CPU, by default, for the metric
# objectives too), else from a full extraction pass (cache_trunk=False)
@pytest.mark.parametrize("objective,cached", [("siamese", False), ("siamese", True), ("crossentropy", True)],
                         ids=["full-pass", "cached-trunk", "crossentropy-cached-trunk"])
def test_a_planted_separable_set_scores_100_percent(planted, tmp_path, objective, cached):
    from deepfeat.finetuning.checkpoints import read_checkpoint

    rows = np.arange(len(planted))
    train, test = rows[rows % 4 != 0], rows[rows % 4 == 0]  # 2 of 8 images per class held out
    ckpt = _finetune(planted.subset(train), tmp_path / "fold.pt", objective=objective,
                     **({} if cached else {"cache_trunk": False}))
    assert read_checkpoint(ckpt)["plan"]["cached_trunk"] is cached
    out = fewshot_fold_predictions(ckpt, planted, train, test)
    truth = np.searchsorted(planted.class_names, np.asarray(planted.labels)[test])
    assert (out["pred"] == truth).all()
    assert (out["scores"][np.arange(len(test)), truth] > 0.5).all()


def test_the_rule_is_fewshot_prototype_cos():
    """On a balanced K-shot set the fold rule and `deepfeat fewshot`'s prototype_cos give the same predictions."""
    from deepfeat.fewshot.evaluate import _predict_prototype

    rng = np.random.default_rng(1)
    W, K, d = 3, 4, 6
    support = rng.normal(size=(1, W, K, d)) + rng.normal(size=(1, W, 1, d))
    query = rng.normal(size=(1, 9, d))
    ours = cosine_scores(query[0], cosine_prototypes(support[0].reshape(W * K, d), np.repeat(np.arange(W), K), W))
    assert (ours.argmax(axis=1) == _predict_prototype(support, query, "cos")[0]).all()


def test_planted_embeddings_and_a_class_without_training_images():
    train = np.array([[3.0, 0.1], [9.0, -0.2], [0.1, 2.0], [-0.1, 7.0]])
    protos = cosine_prototypes(train, [0, 0, 1, 1], 2)
    cos = cosine_scores(np.array([[5.0, 1.0], [0.5, 4.0]]), protos)
    assert (cos.argmax(axis=1) == [0, 1]).all()
    with pytest.raises(DeepfeatError, match=r"class index\(es\) \[2\] have no training image"):
        cosine_prototypes(train, [0, 0, 1, 1], 3)
