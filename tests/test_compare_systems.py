"""``deepfeat compare``: related systems on the same outer folds, kept per system and fold, one report.

Tiny systems (timm's ``test_efficientnet`` with random weights, 32 px, one epoch) on 2 classes x 8 synthetic
images; the system files are written in tmp_path as a user would write them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from deepfeat.cli import app
from deepfeat.data.synthetic import make_synthetic_smears
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation import infold
from deepfeat.evaluation.systems import compare_systems, system_table
from deepfeat.experiments import Experiment, load_system, run_experiment

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore:an epoch is only")]

TINY_FT = 'epochs = 1\nbatch_size = 8\nimage_size = 32\nworkers = 0\nval_fraction = 0.3\n'

SYSTEMS = {
    "ref_tiny": ('kind = "features"\nlabel = "tiny reference"\n',
                 '[features]\nmodel = "test_efficientnet"\nweights = "none"\nlayer = "logits"\n'
                 '[cv]\nclassifiers = ["svm"]\nselections = ["mrmr"]\nn_features = 20\n'),
    "net_tiny": ('kind = "network"\nlabel = "tiny network"\npaper = "Nobody 2024"\nreported = "99 %"\n',
                 '[features]\nmodel = "test_efficientnet"\nweights = "none"\nlayer = "logits"\n'
                 f'[finetune]\nrecipe = "transfer"\nhead = "replace"\n{TINY_FT}'),
    "net_tiny_offline": ('kind = "network"\nlabel = "tiny network, twin"\ntwin_of = "net_tiny"\n'
                         'twin_note = "the same, as a twin"\n',
                         '[features]\nmodel = "test_efficientnet"\nweights = "none"\nlayer = "logits"\n'
                         f'[finetune]\nrecipe = "transfer"\n{TINY_FT}'),
    "feat_tiny": ('kind = "features"\nlabel = "tiny features + kNN"\n',
                  '[features]\nmodel = "test_efficientnet"\nweights = "none"\nlayer = "pooled"\n'
                  '[cv]\nclassifiers = ["knn"]\nselections = ["none"]\n'),
    "hub_only": ('kind = "network"\nlabel = "needs the hub"\n',
                 '[features]\nmodel = "resnet10t"\nweights = "imagenet"\nlayer = "logits"\n'
                 f'[finetune]\nrecipe = "transfer"\n{TINY_FT}'),
}


def _write(folder, name, system=None, body=None):
    s, b = SYSTEMS[name]
    path = folder / f"{name}.toml"
    path.write_text(f'[experiment]\nname = "{name}"\n[system]\n{system or s}{body or b}')
    return path


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    return make_synthetic_smears(root / "imgs", n_per_class=8, classes=["blast", "lymphocyte"], size=32, seed=2)


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "systems"
    folder.mkdir()
    return {name: _write(folder, name) for name in SYSTEMS}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DEEPFEAT_OFFLINE", "1")


def _run(cells, files, out, names=("net_tiny", "feat_tiny"), **kw):
    return compare_systems(cells, [load_system(files[n]) for n in names], reference=load_system(files["ref_tiny"]),
                           out_dir=out, folds=2, seed=0, progress=False, **kw)


def test_every_system_saw_the_same_test_rows_and_is_a_row_of_the_table(cells, files, tmp_path, offline):
    comp = _run(cells, files, tmp_path / "out", nested=False)
    pred = comp.results.predictions
    configs = set(pred["config"])
    assert {"net_tiny+end-to-end", "feat_tiny+none", "svm+mrmr", "baseline-histogram-svm"} <= configs
    rows_of = {c: {k: sorted(p["row"]) for k, p in part.groupby("fold")} for c, part in pred.groupby("config")}
    first = next(iter(rows_of.values()))
    assert all(r == first for r in rows_of.values())  # fold identity across systems and baselines
    assert sorted(np.concatenate(list(first.values()))) == list(range(len(cells)))
    # the kept fold files hold exactly those test rows, and the training never saw them
    for k, rows in first.items():
        with np.load(tmp_path / "out" / "systems" / "net_tiny" / f"fold{k:02d}.npz") as z:
            assert sorted(z["test_rows"]) == rows
        rec = json.loads((tmp_path / "out" / "systems" / "net_tiny" / f"fold{k:02d}.json").read_text())
        assert rec["n_train"] + rec["n_test"] == len(cells) and rec["cpu_s"] > 0 and rec["gpu_s"] == 0
        ckpt = infold.read_checkpoint(rec["checkpoint"])
        test_sha = {comp.results.predictions.set_index("row")["sha256"].to_dict()[r] for r in rows}
        assert not test_sha & (set(ckpt["train_sha256"]) | set(ckpt["val_sha256"]))
    table = system_table(comp)
    assert list(table["system"][:3]) == ["ref_tiny", "net_tiny", "feat_tiny"]
    assert {"baseline-histogram-svm", "baseline-majority"} <= set(table["system"])
    row = table.set_index("system").loc["net_tiny"]
    acc = comp.results.summary.set_index("config").loc["net_tiny+end-to-end", "accuracy_mean"]
    assert row["accuracy"] == pytest.approx(acc) and row["accuracy_low"] <= acc <= row["accuracy_high"]
    assert 0 <= row["p_vs_reference"] <= 1 and 0 <= row["p_vs_colour_baseline"] <= 1
    assert row["reported"] == "99 %" and row["train_cpu_s"] > 0


def test_a_finished_fold_is_loaded_never_recomputed(cells, files, tmp_path, offline, monkeypatch):
    out, train_for_real = tmp_path / "out", infold.finetune
    first = _run(cells, files, out, names=("net_tiny",), nested=False)

    def no_training(*a, **k):
        raise AssertionError("a finished fold was fine-tuned again")

    monkeypatch.setattr(infold, "finetune", no_training)
    again = _run(cells, files, out, names=("net_tiny",), nested=False)
    a, b = (x.results.predictions.query("config == 'net_tiny+end-to-end'") for x in (first, again))
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    assert all(r["run_id"] == first.run_id for r in again.records["net_tiny"])  # loaded, from the first run
    # a changed configuration is recomputed (and says why); adding a system trains only the new one
    monkeypatch.setattr(infold, "finetune", train_for_real)
    s, body = SYSTEMS["net_tiny"]
    _write(files["net_tiny"].parent, "net_tiny", body=body.replace("val_fraction = 0.3", "val_fraction = 0.25"))
    third = _run(cells, files, out, names=("net_tiny",), nested=False)
    assert [r["computed_because"] for r in third.records["net_tiny"]] == ["the system's configuration changed"] * 2
    calls, train = [], infold.finetune
    monkeypatch.setattr(infold, "finetune", lambda *a, **k: (calls.append(k["out"].parent.name), train(*a, **k))[1])
    fourth = _run(cells, files, out, names=("net_tiny", "net_tiny_offline"), nested=False)
    assert calls == ["net_tiny_offline"] * 2
    assert all(r["run_id"] == third.run_id for r in fourth.records["net_tiny"])


def test_weights_that_need_a_download_fail_fast_or_are_skipped_and_said(cells, files, tmp_path, offline,
                                                                          monkeypatch):
    monkeypatch.setattr(infold, "finetune", lambda *a, **k: pytest.fail("trained before the weights check"))
    with pytest.raises(DeepfeatError, match=r"1 system\(s\) need weights.*hub_only.*hub_only_offline"
                                            r".*--skip-unavailable"):
        _run(cells, files, tmp_path / "out", names=("hub_only", "net_tiny"))
    comp = _run(cells, files, tmp_path / "out", names=("hub_only", "feat_tiny"), skip_unavailable=True, nested=False)
    assert list(comp.skipped) == ["hub_only"] and [s.name for s in comp.systems] == ["feat_tiny"]


def test_system_files_are_checked_key_by_key(tmp_path):
    bad = [('kind = "magic"\nlabel = "x"\n', "kind must be one of network, fewshot, features"),
           ('label = "x"\n', r"\[system\] needs kind"),
           ('kind = "network"\nlabel = ""\n', "label must be a non-empty string"),
           ('kind = "network"\nlabel = "x"\ncolour = "red"\n', r"unknown key\(s\) \['colour'\] in \[system\]"),
           ('kind = "network"\nlabel = "x"\ntwin_note = "y"\n', "twin_note without twin_of")]
    for system, message in bad:
        path = _write(tmp_path, "net_tiny", system=system)
        with pytest.raises(DeepfeatError, match=message) as err:
            load_system(path)
        assert str(path) in str(err.value)
    path = _write(tmp_path, "net_tiny", body='[features]\nmodel = "test_efficientnet"\n')
    with pytest.raises(DeepfeatError, match="needs a \\[finetune\\] table"):
        load_system(path)
    path = _write(tmp_path, "feat_tiny", body='[features]\nmodel = "m"\n[cv]\nclassifiers = ["svm", "knn"]\n')
    with pytest.raises(DeepfeatError, match="one row of the table"):
        load_system(path)
    with pytest.raises(DeepfeatError, match="`deepfeat compare DATA --systems net_tiny`"):
        run_experiment(Experiment.from_toml(_write(tmp_path, "net_tiny")), tmp_path / "o", source=tmp_path)


def test_compare_cli_end_to_end(cells, files, tmp_path, offline):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["compare", str(cells.root), "--systems",
                                      f"{files['net_tiny_offline']},{files['feat_tiny']}",
                                      "--reference", str(files["ref_tiny"]), "--folds", "2", "--inner-folds", "2",
                                      "-o", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "net_tiny_offline" in result.output and "report:" in result.output
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["system"]) == ["ref_tiny", "ref_tiny (nested)", "net_tiny_offline", "feat_tiny",
                                     "baseline-histogram-svm", "baseline-majority"]
    assert table.set_index("system").loc["net_tiny_offline", "offline_twin_of"] == "net_tiny"
    md = (out / "report.md").read_text()
    assert "OFFLINE TWIN of net_tiny" in md and "Nested estimate" in md and "p vs reference" in md
    assert "<html" in (out / "report.html").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["folds"] == 2 and config["seed"] == 0 and "torch" in config["versions"]
    folds = pd.read_csv(out / "folds.csv")
    assert sorted(folds["system"]) == ["feat_tiny"] * 2 + ["net_tiny_offline"] * 2 and folds["cpu_s"].min() > 0


def test_a_fewshot_system_is_scored_by_its_fold_checkpoint(cells, tmp_path, offline, monkeypatch):
    """kind = "fewshot": fine-tuned with a metric objective on the training rows, then scored by the few-shot
    rule (here a stand-in that records what it was given) on the test rows."""
    import sys
    import types

    import deepfeat.evaluation

    seen = []

    def fake(checkpoint, source, train_idx, test_idx, *, layer="pooled"):
        seen.append((infold.read_checkpoint(checkpoint)["config"]["objective"], layer, len(train_idx)))
        scores = np.full((len(test_idx), 2), 0.5)
        return {"pred": np.zeros(len(test_idx), int), "scores": scores, "score_kind": "probability",
                "fit_time": 0.0, "predict_time": 0.0}

    module = types.ModuleType("deepfeat.evaluation.systems_fewshot")
    module.fewshot_fold_predictions = fake
    module.__spec__ = types.SimpleNamespace(name=module.__name__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(deepfeat.evaluation, "systems_fewshot", module, raising=False)
    path = tmp_path / "shot_tiny.toml"
    path.write_text('[experiment]\nname = "shot_tiny"\n[system]\nkind = "fewshot"\nlabel = "tiny siamese"\n'
                    '[features]\nmodel = "test_efficientnet"\nweights = "none"\n'
                    f'[finetune]\nobjective = "siamese"\n{TINY_FT}')
    system = load_system(path)
    assert system.layer == "pooled"
    ref = _write(tmp_path, "ref_tiny")
    comp = compare_systems(cells, [system], reference=load_system(ref), out_dir=tmp_path / "out", folds=2,
                           progress=False, nested=False)
    assert seen == [("siamese", "pooled", 8)] * 2
    assert "shot_tiny+end-to-end" in set(comp.results.summary["config"])


def test_systems_offline_takes_the_twins_and_what_needs_no_download(files, monkeypatch, offline):
    import deepfeat.experiments as experiments

    shipped = {name: path for name, path in files.items()}
    shipped["demo_like"] = files["ref_tiny"].with_name("plain.toml")  # an experiment without [system]: not a system
    shipped["demo_like"].write_text('[experiment]\nname = "plain"\n[features]\nmodel = "test_efficientnet"\n')
    monkeypatch.setattr(experiments, "shipped_experiments", lambda: shipped)
    # net_tiny has a twin (the twin runs instead); hub_only needs a download; the others need none
    assert experiments.offline_system_names() == ["ref_tiny", "net_tiny_offline", "feat_tiny"]
    names = [s.name for s in experiments.resolve_systems("offline,hub_only, feat_tiny")]
    assert names == ["ref_tiny", "net_tiny_offline", "feat_tiny", "hub_only"]
    with pytest.raises(DeepfeatError, match="not a system for `deepfeat compare`"):
        experiments.load_system("demo_like")
    with pytest.raises(DeepfeatError, match="--systems names no system"):
        experiments.resolve_systems(" , ")


def test_the_folds_as_dask_tasks_give_the_local_results(cells, files, tmp_path, offline):
    pytest.importorskip("distributed")
    local = _run(cells, files, tmp_path / "local", nested=False)
    dask = _run(cells, files, tmp_path / "dask", nested=False, scheduler="local:2")
    assert dask.results.config["parameters"]["scheduler"].startswith("dask ")
    cols = ["config", "row", "fold", "pred"]
    a, b = (x.results.predictions.sort_values(["config", "row"])[cols].reset_index(drop=True) for x in (local, dask))
    pd.testing.assert_frame_equal(a, b)
    assert all(r is not None for r in dask.records["net_tiny"])  # the workers kept the folds in the shared folder


def test_two_runs_into_one_folder_compute_a_fold_once(tmp_path, monkeypatch):
    """The second run waits for the first's fold (a lock per fold) and loads it instead of training again."""
    import threading
    import time
    from types import SimpleNamespace

    from deepfeat.evaluation.system_folds import SystemFolds

    source = SimpleNamespace(labels=["a", "b"] * 4)
    system = SimpleNamespace(name="slow", config_hash="h1")
    folds = SystemFolds(source, [system], np.zeros((8, 2)), features={}, out_dir=tmp_path, sha256=list("abcdefgh"),
                        seed=0, run_id="r")
    computed = []

    def compute(self, system, fold_index, train_idx, test_idx):
        computed.append(threading.current_thread().name)
        time.sleep(0.5)
        n = len(test_idx)
        return ({"pred": np.zeros(n, int), "scores": np.full((n, 2), 0.5), "score_kind": "probability",
                 "fit_time": 0.5, "predict_time": 0.0}, None, "cpu")

    monkeypatch.setattr(SystemFolds, "_compute", compute)
    train, test = np.arange(6), np.arange(6, 8)
    got = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, folds.result(system, 0, train, test)),
                                name=f"run{i}") for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    assert computed == ["run0"]  # the second run loaded the first's fold
    np.testing.assert_array_equal(got[0]["scores"], got[1]["scores"])
