"""Which model files may be loaded: the skops format (an explicit allow-list of types) and the gate in front of
joblib pickles.

Policy (documented in README, "Hardening"):

- ``.skops`` files (``save_model(model, "m.skops")``, ``deepfeat fit -o m.skops``) are read with ``skops.io``, which
  builds objects from a JSON schema instead of unpickling. A schema can still name any importable function or class,
  and skops calls some of them while building (a "constructor" node calls the named function with arguments from
  the file; numpy and scipy hold functions that execute strings or start processes). So before anything is
  imported or built, every node of the schema must be one of :data:`SKOPS_ALLOWED_TYPES`: the exact (type, skops
  loader) pairs that deepfeat's own models consist of, as written by every classifier preset
  (``tests/test_model_trust.py`` checks that the list equals what the presets write, so it can neither be looser nor
  go stale). Anything else is refused with :class:`~deepfeat.errors.ModelFileError` naming it; skops'
  ``get_untrusted_types`` is then asked too, and its answer must be within the list. ``save_model`` refuses to
  write a ``.skops`` file that this check would refuse to load (save such a model as ``.joblib``).
- ``.joblib`` files are pickles: loading one runs code chosen by whoever wrote it. ``save_model`` records the
  sha256 of every joblib file it writes in a ledger under the user's home (:func:`~deepfeat.locations.
  trusted_models_dir`, one empty file per sha256). A joblib file whose sha256 is in the ledger loads; any other
  needs ``trusted=True`` (CLI ``--trust``). Someone who can write the model file and its sidecar cannot add to
  another user's ledger, which is the point; they can still trick a user who passes ``--trust``. The bytes that are
  hashed are the bytes that are loaded (the file is read once).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from deepfeat.errors import ModelFileError
from deepfeat.fileio import atomic_write_bytes
from deepfeat.locations import trusted_models_dir

#: Every (type, skops loader) that a .skops model written by deepfeat consists of: DeepFeatureClassifier or a
#: features Pipeline, for every classifier preset, with and without mRMR and class_weight="balanced". A file naming
#: anything else is refused before anything is built. Review additions: an "ObjectNode" builds the class without
#: calling __init__ and sets its attributes; "FunctionNode" only refers to the function; no entry may be a
#: loader that calls what it names with arguments from the file (ConstructorFromReduceNode, ReduceNode, ...)
#: unless it is a class whose construction is harmless ("LossNode": sklearn's Hinge loss).
SKOPS_ALLOWED_TYPES: frozenset[tuple[str, str]] = frozenset({
    # containers and values
    ("builtins.dict", "DictNode"),
    ("builtins.list", "ListNode"),
    ("builtins.str", "JsonNode"),
    ("builtins.str", "TypeNode"),  # the key type of attribute dicts
    ("builtins.tuple", "TupleNode"),
    ("numpy.ndarray", "NdArrayNode"),  # read with allow_pickle=False
    ("numpy.float32", "NdArrayNode"),
    ("numpy.float64", "NdArrayNode"),
    ("numpy.random.mtrand.RandomState", "RandomStateNode"),  # MLP, SGD: RandomState() + set_state
    # deepfeat
    ("deepfeat.classifiers.deep_classifier.DeepFeatureClassifier", "ObjectNode"),
    ("deepfeat.classifiers.estimators.BalancedSampleWeight", "ObjectNode"),
    ("deepfeat.classifiers.estimators.FullBatchMLP", "ObjectNode"),
    ("deepfeat.classifiers.estimators.GramSVC", "ObjectNode"),
    ("deepfeat.classifiers.estimators.KernelNaiveBayes", "ObjectNode"),
    ("deepfeat.classifiers.presets._squared_inverse", "FunctionNode"),  # knn-weighted's weights
    ("deepfeat.classifiers.small_data.EarlyStoppingMLP", "ObjectNode"),
    ("deepfeat.classifiers.small_data.EarlyStoppingSGD", "ObjectNode"),
    ("deepfeat.classifiers.small_data.FlooredGaussianNB", "ObjectNode"),
    ("deepfeat.classifiers.small_data.KNeighborsClassifier", "ObjectNode"),
    ("deepfeat.extraction.engine.FeatureExtractor", "ObjectNode"),
    ("deepfeat.selection.mrmr.MRMRSelector", "ObjectNode"),
    # scikit-learn
    ("sklearn.calibration.CalibratedClassifierCV", "ObjectNode"),
    ("sklearn.calibration._CalibratedClassifier", "ObjectNode"),
    ("sklearn.calibration._SigmoidCalibration", "ObjectNode"),
    ("sklearn.isotonic.IsotonicRegression", "ObjectNode"),  # deepfeat fit --calibrate (its interp1d is not pickled)
    ("sklearn.kernel_approximation.Nystroem", "ObjectNode"),
    ("sklearn.linear_model._logistic.LogisticRegression", "ObjectNode"),
    ("sklearn.linear_model._sgd_fast.Hinge", "LossNode"),
    ("sklearn.metrics._dist_metrics.EuclideanDistance64", "ObjectNode"),
    ("sklearn.metrics._dist_metrics.MinkowskiDistance64", "ObjectNode"),
    ("sklearn.neighbors._kd_tree.KDTree", "ObjectNode"),
    ("sklearn.neural_network._multilayer_perceptron.MLPClassifier", "ObjectNode"),
    ("sklearn.neural_network._stochastic_optimizers.AdamOptimizer", "ObjectNode"),
    ("sklearn.pipeline.Pipeline", "ObjectNode"),
    ("sklearn.preprocessing._data.StandardScaler", "ObjectNode"),
    ("sklearn.preprocessing._label.LabelBinarizer", "ObjectNode"),
    ("sklearn.svm._classes.LinearSVC", "ObjectNode"),
    ("sklearn.svm._classes.SVC", "ObjectNode"),
    # written by deepfeat 0.2's nb / nb-gaussian, sgd and knn* presets (0.3 writes the small_data subclasses)
    ("sklearn.naive_bayes.GaussianNB", "ObjectNode"),
    ("sklearn.linear_model._stochastic_gradient.SGDClassifier", "ObjectNode"),
    ("sklearn.neighbors._classification.KNeighborsClassifier", "ObjectNode"),
})
#: The entries above that only 0.2 wrote (tests compare the rest with what the presets write now).
SKOPS_TYPES_OF_0_2 = frozenset({("sklearn.naive_bayes.GaussianNB", "ObjectNode"),
                                ("sklearn.linear_model._stochastic_gradient.SGDClassifier", "ObjectNode"),
                                ("sklearn.neighbors._classification.KNeighborsClassifier", "ObjectNode")})
_NODE_KEYS = ("__class__", "__module__", "__loader__")


def record_trusted(sha256: str) -> None:
    """Remember that this deepfeat install wrote the joblib file with ``sha256``."""
    atomic_write_bytes(trusted_models_dir() / sha256, b"", fsync=False)


def is_recorded(sha256: str) -> bool:
    return (trusted_models_dir() / sha256).is_file()


def check_joblib_trusted(path, sha256: str, trusted: bool) -> None:
    """Refuse a joblib file this install did not write unless the caller trusts it explicitly."""
    if trusted or is_recorded(sha256):
        return
    raise ModelFileError(
        f"model file {path} is a joblib pickle that this deepfeat install did not write (its sha256 {sha256[:16]}... "
        f"is not in {trusted_models_dir()}); loading a pickle runs code chosen by whoever wrote it. If you trust "
        "its source, pass trusted=True (CLI: --trust); better, ask for a .skops model (deepfeat fit -o m.skops)")


def skops_node_types(data: bytes, path) -> set[tuple[str, str]]:
    """Every ``(module.name, loader)`` that the schema of the .skops file ``data`` names, read as plain JSON:
    nothing is imported or built. :class:`ModelFileError` when it is not a readable skops file."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, OSError) as exc:
        raise ModelFileError(f"model file {path} is not a readable .skops file: {type(exc).__name__}: {exc}") from None
    found, stack = set(), [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if any(key in node for key in _NODE_KEYS):
                if not all(isinstance(node.get(key), str) for key in _NODE_KEYS):
                    raise ModelFileError(f"model file {path} is not a readable .skops file: a node without a "
                                         f"string __class__, __module__ and __loader__ ({str(node)[:120]})")
                found.add((f"{node['__module__']}.{node['__class__']}", node["__loader__"]))
            stack.extend(node.values())
    return found


def _refused(types: set[tuple[str, str]]) -> list[str]:
    return sorted(f"{name} (as {loader})" for name, loader in types - SKOPS_ALLOWED_TYPES)


def dump_skops(model, path: Path) -> None:
    """Write ``model`` as a .skops file, unless it holds a type that :func:`load_skops` would refuse."""
    import skops.io

    data = skops.io.dumps(model)
    refused = _refused(skops_node_types(data, path))
    if refused:
        raise ModelFileError(
            f"cannot save {type(model).__name__} as the .skops file {path}: it holds type(s) that deepfeat's .skops "
            f"loader refuses: {', '.join(refused)}. A .skops model may hold only what deepfeat's classifier "
            "presets consist of (deepfeat.classifiers.model_trust.SKOPS_ALLOWED_TYPES); save this model as .joblib")
    atomic_write_bytes(path, data)


def load_skops(path: Path, data: bytes):
    """The model in the .skops file ``data`` (read from ``path``), refusing every type outside
    :data:`SKOPS_ALLOWED_TYPES` before anything is imported or built."""
    import skops.io

    refused = _refused(skops_node_types(data, path))
    try:
        untrusted = [] if refused else skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - a damaged schema: skops raises many kinds
        raise ModelFileError(f"model file {path} is not a readable .skops file: {type(exc).__name__}: {exc}") from None
    allowed_names = {name for name, _ in SKOPS_ALLOWED_TYPES}
    refused += sorted(f"{name} (skops)" for name in untrusted if name not in allowed_names)
    if refused:
        raise ModelFileError(
            f"model file {path} names type(s) deepfeat does not trust: {', '.join(refused)}; refusing to load it "
            "(nothing from it was imported or run). A .skops model may hold only what deepfeat's classifier presets "
            "consist of (deepfeat.classifiers.model_trust.SKOPS_ALLOWED_TYPES)")
    return skops.io.loads(data, trusted=sorted(untrusted))
