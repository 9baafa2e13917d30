"""One name, one default per parameter: the CLI, the Python API and the TOML files agree, and the old
darknet19/lite0 split is gone. Every option of every command is accounted for below: forwarded to a library
parameter with the same default, forwarded only when given (CLI default None: the library's default applies), or
CLI-only with the reason."""
from __future__ import annotations

import dataclasses
import inspect
import re
from enum import Enum
from pathlib import PurePath

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from deepfeat import defaults, workflows
from deepfeat.classifiers.deep_classifier import DeepFeatureClassifier
from deepfeat.cli import app
from deepfeat.cli import compare as cli_compare
from deepfeat.cli import evaluate as cli_evaluate
from deepfeat.cli import explain as cli_explain
from deepfeat.cli import extract as cli_extract
from deepfeat.cli import fewshot as cli_fewshot
from deepfeat.cli import finetune as cli_finetune
from deepfeat.cli import run as cli_run
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.cross_validation import cross_validate
from deepfeat.evaluation.systems import compare_systems
from deepfeat.evaluation.trust import fit_trust
from deepfeat.experiments import CV_KEYS, FEATURE_KEYS, Experiment, run_demo, run_experiment
from deepfeat.extraction.api import check_request, extract_features
from deepfeat.extraction.engine import FeatureExtractor
from deepfeat.fewshot.curves import learning_curve
from deepfeat.fewshot.evaluate import few_shot_evaluate
from deepfeat.finetuning.config import EXPERIMENT_KEYS, FROM_RECIPE, FinetuneConfig
from deepfeat.finetuning.recipes import RECIPES
from deepfeat.finetuning.run import finetune
from deepfeat.selection.mrmr import MRMRSelector


def _default(func, name):
    value = inspect.signature(func).parameters[name].default
    return _normal(value)


def _normal(value):
    """Comparable form: an Enum as its value, a sequence or comma string as a list of strings."""
    value = value.value if isinstance(value, Enum) else str(value) if isinstance(value, PurePath) else value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str) and "," in value:
        return value.split(",")
    return value


# (CLI command, library function, {CLI option: library parameter})
PAIRS = [
    (cli_extract.extract, extract_features, {"model": "model", "weights": "weights", "layer": "layer",
                                             "device": "device", "precision": "precision",
                                             "batch_size": "batch_size", "workers": "num_workers",
                                             "image_size": "image_size", "crop_border": "crop_border",
                                             "scheduler": "scheduler", "shard_size": "shard_size",
                                             "resources": "resources", "tta": "tta", "cache": "cache",
                                             "manifest": "manifest", "progress": "progress",
                                             "runtime": "runtime"}),
    (cli_extract.extract, FeatureExtractor.__init__, {"model": "model", "weights": "weights", "layer": "layer",
                                                      "device": "device", "precision": "precision",
                                                      "runtime": "runtime"}),
    (cli_extract.extract, check_request, {"model": "model", "layer": "layer", "tta": "tta",
                                          "precision": "precision"}),
    (cli_evaluate.cv, cross_validate, {"classifier": "classifiers", "select": "selections",
                                       "n_features": "n_features", "mrmr_method": "mrmr_method", "folds": "folds",
                                       "repeats": "repeats", "groups": "groups", "seed": "seed", "n_jobs": "n_jobs",
                                       "class_weight": "class_weight", "baseline": "baseline",
                                       "scheduler": "scheduler", "resources": "resources", "mrmr_threshold": "threshold",
                                       "progress": "progress", "conformal_score": "conformal_score",
                                       "class_conditional": "class_conditional"}),
    (cli_evaluate.cv, workflows.cross_validate_experiment, {"saliency": "saliency"}),
    (cli_evaluate.fit, workflows.fit_model, {"classifier": "classifier", "select": "select",
                                             "n_features": "n_features", "mrmr_method": "mrmr_method",
                                             "class_weight": "class_weight", "seed": "seed",
                                             "mrmr_threshold": "threshold", "calibrate": "calibrate",
                                             "coverage": "coverage", "conformal_score": "conformal_score",
                                             "class_conditional": "class_conditional", "non_empty": "non_empty"}),
    # the estimator's classifier stays "svm" (calibrated probabilities need 5 images per class); `deepfeat fit`
    # and fit_model ask for "svm-calibrated" so that predict writes probabilities
    (cli_evaluate.fit, DeepFeatureClassifier.__init__, {"n_features": "n_features", "seed": "seed",
                                                        "class_weight": "class_weight"}),
    (cli_evaluate.predict, workflows.predict_images, {"allow_version_mismatch": "allow_version_mismatch",
                                                      "trust": "trusted", "progress": "progress"}),
    (cli_explain.explain, workflows.explain_images, {"allow_version_mismatch": "allow_version_mismatch",
                                                     "trust": "trusted", "device": "device"}),
    (cli_finetune.finetune_cmd, finetune, {"model": "model", "weights": "weights", "progress": "progress"}),
    (cli_finetune.finetune_cmd, workflows.finetune_from_options, {"model": "model", "weights": "weights",
                                                                  "compare": "compare", "progress": "progress"}),
    (cli_run.demo, run_demo, {"n_per_class": "n_per_class", "folds": "folds", "progress": "progress",
                              "synthetic": "synthetic",
                              "output": "out_dir"}),
    (cli_run.run, workflows.run_named_experiment, {"weights": "weights", "progress": "progress"}),
    (cli_compare.compare, workflows.compare_report, {"systems": "systems", "reference": "reference",
                                                     "folds": "folds", "seed": "seed", "groups": "groups",
                                                     "nested": "nested", "inner_folds": "inner_folds",
                                                     "skip_unavailable": "skip_unavailable",
                                                     "scheduler": "scheduler", "resources": "resources",
                                                     "progress": "progress"}),
    (cli_compare.compare, compare_systems, {"folds": "folds", "seed": "seed", "groups": "groups",
                                            "nested": "nested", "inner_folds": "inner_folds",
                                            "skip_unavailable": "skip_unavailable", "scheduler": "scheduler",
                                            "resources": "resources", "progress": "progress"}),
    (cli_fewshot.fewshot, few_shot_evaluate, {"ways": "ways", "shots": "shots", "queries": "queries",
                                              "episodes": "episodes", "classifier": "classifiers",
                                              "groups": "groups", "standardize": "standardize",
                                              "baseline": "baseline", "seed": "seed"}),
    (cli_fewshot.curve, learning_curve, {"sizes": "sizes", "classifier": "classifier", "select": "select",
                                         "n_features": "n_features", "repeats": "repeats",
                                         "test_fraction": "test_fraction", "groups": "groups",
                                         "baseline": "baseline", "seed": "seed"}),
]

# options forwarded only when given: their CLI default is None and the library's own default applies
GIVEN_ONLY = {
    "cv": {"nested": (cross_validate, "nested"), "inner_folds": (cross_validate, "inner_folds"),
           "fold_cache": (cross_validate, "fold_cache"), "coverage": (cross_validate, "coverage"),
           "finetune": (workflows.cross_validate_experiment, "finetune_in_fold"),
           "experiment": (workflows.cross_validate_experiment, "experiment")},
    "finetune": {"experiment": (workflows.finetune_from_options, "experiment"),
                 "resume": (workflows.finetune_from_options, "resume"),
                 # every training option: FinetuneConfig's default (the recipe's value where it has one)
                 **{f.name: (FinetuneConfig, f.name) for f in dataclasses.fields(FinetuneConfig)}},
    "run": {"source": (workflows.run_named_experiment, "source")},
}

# options that are the CLI's own, and why ("*": of every command)
INPUT = "the input named on the command line"
CLI_ONLY = {
    "*": {"output": "where the command writes (a default folder per command, so runs do not overwrite each other)",
          "config": "the 0.2 name of --experiment (hidden, FutureWarning)"},
    "extract": {"source": INPUT, "cache_dir": "folded into extract_features(cache=PATH)",
                "strict": "extract_to_file(on_error='raise'); without it 'skip' (the failures are listed in a file)",
                "max_pixels": "sets $DEEPFEAT_MAX_PIXELS for the run and its worker processes",
                "list_models": "prints `deepfeat models` and exits"},
    "cv": {"features": INPUT}, "fit": {"features": INPUT}, "fuse": {"inputs": INPUT},
    "predict": {"model": INPUT, "images": INPUT, "max_pixels": "sets $DEEPFEAT_MAX_PIXELS for the run"},
    "explain": {"model": INPUT, "images": INPUT, "max_pixels": "sets $DEEPFEAT_MAX_PIXELS for the run",
                "progress": "the CLI's messages only (explain draws no progress bar)"},
    "finetune": {"source": INPUT}, "run": {"experiment": INPUT, "list_": "prints the shipped experiments and exits"},
    "fewshot": {"features": INPUT, "method": "the 0.2 name of --classifier (hidden, FutureWarning)"},
    "curve": {"features": INPUT},
    "demo": {"export": "export_demo_sample(DIR): writes the embedded sample as class folders and exits"},
    "compare": {"data": INPUT},
}


def _commands():
    return typer.main.get_command(app).commands


@pytest.mark.parametrize("command, function, names", PAIRS, ids=lambda v: getattr(v, "__qualname__", ""))
def test_cli_and_library_share_every_default(command, function, names):
    for option, param in names.items():
        assert _default(command, option) == _default(function, param), (command.__name__, option, function)


def test_every_option_of_every_command_is_accounted_for():
    paired = {}
    for command, _, names in PAIRS:
        paired.setdefault(command.__name__, set()).update(names)
    seen = 0
    for name, command in _commands().items():
        func = command.callback.__name__
        for param in command.params:
            seen += 1
            if param.name in paired.get(func, ()):
                continue
            if param.name in GIVEN_ONLY.get(name, {}):
                function, lib = GIVEN_ONLY[name][param.name]
                assert param.default is None, (name, param.name)
                assert lib in inspect.signature(function).parameters, (name, param.name, function)
                continue
            assert param.name in {**CLI_ONLY["*"], **CLI_ONLY.get(name, {})}, \
                f"deepfeat {name} {param.opts}: pair it with a library default"
    assert seen > 130  # all of them, not an empty loop


def test_the_defaults_table_is_what_the_signatures_use():
    assert _default(extract_features, "model") == _default(finetune, "model") == defaults.MODEL
    assert _default(DeepFeatureClassifier.__init__, "model") == defaults.MODEL
    assert _default(MRMRSelector.__init__, "n_features") == _default(cross_validate, "n_features") == "auto"
    assert _default(DeepFeatureClassifier.__init__, "n_features") == "auto"
    table = [
        (cross_validate, {"classifiers": defaults.CLASSIFIERS, "selections": defaults.SELECTIONS,
                          "mrmr_method": defaults.MRMR_METHOD, "folds": defaults.FOLDS, "repeats": defaults.REPEATS,
                          "groups": defaults.GROUPS, "seed": defaults.SEED, "baseline": defaults.BASELINE,
                          "n_jobs": defaults.N_JOBS, "nested": defaults.NESTED, "fold_cache": defaults.FOLD_CACHE,
                          "rope": defaults.ROPE, "scheduler": defaults.SCHEDULER,
                          "conformal_score": defaults.CONFORMAL_SCORE,
                          "class_conditional": defaults.CLASS_CONDITIONAL}),
        (extract_features, {"weights": defaults.WEIGHTS, "layer": defaults.LAYER, "device": defaults.DEVICE,
                            "precision": defaults.PRECISION, "tta": defaults.TTA,
                            "shard_size": defaults.SHARD_SIZE, "runtime": defaults.RUNTIME}),
        (MRMRSelector.__init__, {"method": defaults.MRMR_METHOD}),
        (workflows.fit_model, {"classifier": defaults.FIT_CLASSIFIER, "select": defaults.FIT_SELECT,
                               "calibrate": defaults.CALIBRATE, "conformal_score": defaults.CONFORMAL_SCORE,
                               "class_conditional": defaults.CLASS_CONDITIONAL, "non_empty": defaults.NON_EMPTY}),
        (fit_trust, {"calibrate": defaults.CALIBRATE, "conformal_score": defaults.CONFORMAL_SCORE,
                     "class_conditional": defaults.CLASS_CONDITIONAL, "non_empty": defaults.NON_EMPTY,
                     "folds": defaults.INNER_FOLDS}),
        (few_shot_evaluate, {"ways": defaults.FEWSHOT_WAYS, "shots": defaults.FEWSHOT_SHOTS,
                             "queries": defaults.FEWSHOT_QUERIES, "episodes": defaults.FEWSHOT_EPISODES,
                             "classifiers": defaults.FEWSHOT_CLASSIFIERS, "standardize": defaults.FEWSHOT_STANDARDIZE,
                             "groups": defaults.GROUPS, "seed": defaults.SEED, "baseline": defaults.BASELINE}),
        (learning_curve, {"sizes": defaults.CURVE_SIZES, "classifier": defaults.CURVE_CLASSIFIER,
                          "select": defaults.CURVE_SELECT, "repeats": defaults.CURVE_REPEATS,
                          "test_fraction": defaults.CURVE_TEST_FRACTION, "groups": defaults.GROUPS,
                          "seed": defaults.SEED, "baseline": defaults.BASELINE}),
        (run_demo, {"n_per_class": defaults.DEMO_IMAGES_PER_CLASS, "folds": defaults.FOLDS,
                    "n_features": defaults.DEMO_N_FEATURES}),
        (compare_systems, {"folds": defaults.COMPARE_FOLDS, "nested": defaults.COMPARE_NESTED,
                           "inner_folds": defaults.INNER_FOLDS, "seed": defaults.SEED, "groups": defaults.GROUPS}),
        (workflows.compare_report, {"reference": defaults.REFERENCE_SYSTEM}),
    ]
    for function, values in table:
        for param, value in values.items():
            assert _default(function, param) == _normal(value), (function.__qualname__, param)
    fields = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    assert (fields["recipe"], fields["device"], fields["precision"], fields["seed"]) == (
        defaults.RECIPE, defaults.DEVICE, defaults.PRECISION, defaults.SEED)
    assert set(defaults.MRMR_METHODS) == {m.value for m in cli_evaluate.MRMRMethod}


# --- the TOML files: one name (the library's) and the library's default for a key left out --------------------
def test_every_toml_key_is_the_library_parameter_of_that_name():
    assert FEATURE_KEYS <= set(inspect.signature(extract_features).parameters)
    assert CV_KEYS <= set(inspect.signature(cross_validate).parameters)
    # [finetune]: the FinetuneConfig fields by their names, plus the two experiment keys
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert set(EXPERIMENT_KEYS).isdisjoint(fields)
    cfg = FinetuneConfig.from_table({"enabled": True, "in_fold": False, "epochs": 2, "seed": 4}, where="t")
    assert (cfg.epochs, cfg.seed, cfg.lr) == (2, 4, RECIPES[defaults.RECIPE]["lr"])
    with pytest.raises(DeepfeatError, match="unknown fine-tuning option"):
        FinetuneConfig.from_table({"epoch": 2}, where="t")


def test_a_key_left_out_of_a_toml_file_takes_the_library_default(tmp_path, monkeypatch):
    import deepfeat.evaluation.cross_validation as cvmod
    import deepfeat.extraction.api as api

    calls = {}

    class Stop(Exception):
        pass

    def fake_extract(source, **kw):
        calls["extract"] = kw
        return type("F", (), {"save": lambda self, path: None})()

    def fake_cv(features, **kw):
        calls["cv"] = kw
        raise Stop

    monkeypatch.setattr(api, "extract_features", fake_extract)
    monkeypatch.setattr(cvmod, "cross_validate", fake_cv)
    toml = tmp_path / "exp.toml"
    toml.write_text("[features]\n[cv]\n")
    with pytest.raises(Stop):
        run_experiment(Experiment.from_toml(toml), tmp_path / "out", source=str(tmp_path), log=lambda *_: None)
    # nothing but the one model of fine-tuning and extraction is filled in: every other key left out is the
    # library's default, which the table above checks
    assert calls["extract"] == {"model": defaults.MODEL, "progress": True}
    assert calls["cv"] == {"progress": True}


class _Stop(Exception):
    pass


def test_cv_passes_only_the_options_typed(tmp_path, monkeypatch):
    """The precedence lives in the library: the CLI forwards what was typed, an experiment's [cv] table sits under
    it and the library's defaults under both."""
    seen = {}

    def fake(source, out_dir, *, overrides, **kw):
        seen.update(overrides)
        raise _Stop

    monkeypatch.setattr(workflows, "cross_validate_experiment", fake)
    res = CliRunner().invoke(app, ["cv", str(tmp_path / "f.features"), "--folds", "3", "--select", "mrmr",
                                   "--mrmr-method", "miq", "--n-features", "7", "--fold-cache", "none"])
    assert isinstance(res.exception, _Stop)
    assert seen == {"folds": 3, "selections": ["mrmr"], "mrmr_method": "miq", "n_features": 7, "fold_cache": False}
    assert type(seen["mrmr_method"]) is str


def test_run_experiment_puts_typed_options_over_the_toml_table(tmp_path, monkeypatch):
    import deepfeat.evaluation.cross_validation as cvmod
    import deepfeat.extraction.api as api

    calls = {}

    def fake_cv(features, **kw):
        calls.update(kw)
        raise _Stop

    monkeypatch.setattr(api, "extract_features", lambda source, **kw: type("F", (), {"save": lambda s, p: None})())
    monkeypatch.setattr(cvmod, "cross_validate", fake_cv)
    toml = tmp_path / "exp.toml"
    toml.write_text("[cv]\nfolds = 5\nseed = 3\n")
    with pytest.raises(_Stop):
        workflows.cross_validate_experiment(str(tmp_path), tmp_path / "o", experiment=toml, overrides={"folds": 4},
                                            log=lambda *_: None)
    assert (calls["folds"], calls["seed"]) == (4, 3)


# --- fine-tuning: the help's defaults are the recipes' ------------------------------------------------------------
def _help_of(command: str) -> dict:
    """option name -> its help text, as ``deepfeat COMMAND --help`` prints it."""
    return {p.name: p.help for p in _commands()[command].params if getattr(p, "help", None)}


def _shown(value, name: str) -> str:
    if value is None:
        return "never" if name == "patience" else "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_finetune_help_states_every_recipe_value():
    helps, checked = _help_of("finetune"), 0
    for field in dataclasses.fields(FinetuneConfig):
        if field.default is not FROM_RECIPE:
            continue
        said = re.search(r"\[default: ([^\]]+)\]", helps[field.name]).group(1)
        values = {recipe: _shown(table[field.name], field.name) for recipe, table in RECIPES.items()}
        if len(set(values.values())) == 1:
            assert said == values[defaults.RECIPE], (field.name, said)
        else:  # the default recipe first, then the others
            assert said == ", ".join(f"{r} {values[r]}" for r in sorted(values, key=lambda r: r != defaults.RECIPE))
        checked += 1
    assert checked == sum(f.default is FROM_RECIPE for f in dataclasses.fields(FinetuneConfig)) == 20
    assert "[default: transfer 15, study 30]" in helps["epochs"] and "transfer 0.001, study 0.01" in helps["lr"]
    assert "[default: 0.3]" in helps["val_fraction"] and f"[default: {defaults.SEED}]" in helps["seed"]
    assert "[default: the model's]" in helps["image_size"] and "[default: never]" not in helps["workers"]
    res = CliRunner().invoke(app, ["finetune", "--help"])
    assert res.exit_code == 0 and "transfer 15, study 30" in " ".join(res.output.split())


def test_finetune_cli_has_an_option_for_every_training_option():
    options = {p.name for p in _commands()["finetune"].params}
    missing = {f.name for f in dataclasses.fields(FinetuneConfig)} - options
    assert missing == {"channels_last"}  # "auto" measured faster everywhere; Python and TOML only


# --- behaviour ------------------------------------------------------------------------------------------------
def test_deep_feature_classifier_mrmr_uses_the_auto_size_not_10():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 40)), np.repeat([0, 1], 30)
    X[:, :3] += y[:, None]
    clf = DeepFeatureClassifier(selector="mrmr", classifier="svm").fit(X, y)
    assert clf.pipeline_.named_steps["select"].get_support().sum() == 20  # half of 40 (521 of >= 1,000)
    X1000 = rng.normal(size=(60, 1000))
    sel = MRMRSelector().fit(X1000 + y[:, None] * rng.random(1000), y)
    assert sel.get_support().sum() == 521


def test_a_pipeline_with_finetuning_and_no_model_uses_one_model_for_both(tmp_path, monkeypatch):
    """Regression: 0.1 fine-tuned darknet19 and then extracted with tf_efficientnet_lite0 (checkpoint refused)."""
    import deepfeat.evaluation.cross_validation as cvmod
    import deepfeat.extraction.api as api
    import deepfeat.finetuning.run as ftmod

    calls = {}

    class Stop(Exception):
        pass

    def fake_finetune(source, *, model, weights, out, config, progress):
        calls["finetune"] = model
        return type("R", (), {"checkpoint": out})()

    def fake_extract(source, *, model=defaults.MODEL, **kw):
        calls["extract"] = model
        raise Stop

    monkeypatch.setattr(ftmod, "finetune", fake_finetune)
    monkeypatch.setattr(api, "extract_features", fake_extract)
    monkeypatch.setattr(cvmod, "cross_validate", lambda *a, **k: None)
    monkeypatch.setattr("deepfeat.reporting.finetune_report.write_finetune_report", lambda result: {})
    toml = tmp_path / "exp.toml"
    toml.write_text("[finetune]\nenabled = true\nepochs = 1\n[cv]\nfolds = 2\n")
    with pytest.raises(Stop):
        run_experiment(Experiment.from_toml(toml), tmp_path / "out", source=str(tmp_path), log=lambda *_: None)
    assert calls == {"finetune": defaults.MODEL, "extract": defaults.MODEL}
