"""DeepFeatureClassifier: a scikit-learn classifier that takes image paths (deep features -> [mRMR] -> classifier).

Two kinds of input are accepted wherever ``X`` appears (``fit``, ``predict``, ``predict_proba``,
``decision_function``, ``score``):

* **image paths** -- a list/tuple/1-D array/Series (or one-column DataFrame) of ``str`` or path-like: features are
  extracted with the estimator's backbone through the on-disk feature cache, then classified;
* **a 2-D numeric array** (or DataFrame) -- taken as features *already extracted with this estimator's backbone,
  weights and layer* (e.g. ``FeatureSet.X``): extraction is skipped. This is what lets a model trained from a
  FeatureSet (:meth:`DeepFeatureClassifier.from_featureset`, ``deepfeat fit``) predict on new images later, and it is
  the input scikit-learn's estimator checks use (they feed numeric arrays, never paths), so
  ``parametrize_with_checks`` exercises the real estimator, not a stand-in. Nothing checks that such a matrix really
  came from the same backbone beyond its width (``n_features_in_``): passing features of another model is a user
  error deepfeat cannot detect.

``n_features_in_`` is the width of the feature matrix the inner pipeline was fitted on: the deep-feature dimension
for path input, the number of columns for array input (as scikit-learn defines it). Numeric input to ``predict`` is
checked against it; path input is checked after extraction.

Same extractor at fit and predict time: ``extractor_identity_`` records the sha256 of the backbone's parameters
and buffers and its preprocessing (from the extractor when fitted on paths, from ``FeatureSet.meta`` when trained
from a FeatureSet). Predicting on paths with a backbone that differs (weights "imagenet" resolved to another file on
another machine, an edited weights file, or ``weights="none"``, whose random network is rebuilt differently after
unpickling) raises instead of silently classifying features of another network. Numeric precision (fp32/bf16, set
per machine by the extractor's ``precision="auto"``) is not part of the identity: bf16 features stay within cosine
0.999 of fp32 where deepfeat checks it, so predictions can differ only for images at a decision boundary.
"""
from __future__ import annotations

import json
import os
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from deepfeat import defaults
from deepfeat.classifiers.class_sizes import check_class_sizes
from deepfeat.classifiers.presets import build_pipeline, get_classifier
from deepfeat.errors import DeepfeatError
from deepfeat.features import FeatureSet

#: FeatureSet.meta keys that name the extractor; a FeatureSet without them cannot train a model for image input.
#: FeatureSet.meta key -> parameter (the FeatureSet file keeps 0.1's field name "backbone" for the network)
EXTRACTOR_META_KEYS = {"backbone": "model", "weights": "weights", "layer": "layer"}


def make_pipeline(classifier="svm", **kwargs):
    """``StandardScaler -> [MRMRSelector] -> classifier`` for a feature matrix; see
    :func:`deepfeat.classifiers.presets.build_pipeline` for the arguments."""
    return build_pipeline(classifier, **kwargs)


def _image_paths(X) -> list[str] | None:
    """``X`` as a list of path strings when it is a sequence of paths; ``None`` when it is (meant as) a matrix."""
    if isinstance(X, (str, bytes, os.PathLike)):
        raise DeepfeatError(f"X must be a list of image paths or a 2-D feature matrix; got the single path {X!r}. "
                            "Wrap it in a list: [path].")
    if isinstance(X, FeatureSet):
        raise DeepfeatError("X is a FeatureSet: use fit_features(fs) / from_featureset(fs) to train, "
                            "or pass fs.X to predict")
    ndim = getattr(X, "ndim", None)
    if ndim is None and isinstance(X, (list, tuple)):
        items = X
    elif ndim == 1 or (ndim == 2 and X.shape[1] == 1):  # a Series, or one column of paths (e.g. a DataFrame)
        items = np.asarray(X, dtype=object).reshape(-1)
    else:
        return None  # a matrix, or something validate_data will reject with scikit-learn's message
    if len(items) and all(isinstance(p, (str, os.PathLike)) for p in items):
        return [os.fspath(p) for p in items]
    return None


def _classifier_has(attr):
    """For ``available_if``: does the (fitted, else configured) final classifier have ``attr``?"""
    def check(self):
        if hasattr(self, "pipeline_"):
            return hasattr(self.pipeline_[-1], attr)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # class_weight warnings belong to fit, not to hasattr()
                return hasattr(get_classifier(self.classifier, seed=self.seed, class_weight=self.class_weight),
                               attr)
        except Exception:  # an invalid 'classifier' is reported by fit, with the parameter named
            return True
    return check


class DeepFeatureClassifier(ClassifierMixin, BaseEstimator):
    """Classify images by deep CNN features, optional mRMR selection and a shallow classifier.

    Parameters
    ----------
    model : str, default="tf_efficientnet_lite0"
        Network name for :class:`~deepfeat.extraction.engine.FeatureExtractor` (any name ``deepfeat.create_backbone``
        accepts, e.g. ``"darknet19"``, ``"resnet50"``).
    weights : str or path-like, default="imagenet"
        Weights id or file; ``"none"`` for random weights (tests only).
    layer : str, default="logits"
        Which activations are the features (``"logits"``, ``"pooled"``, ...).
    selector : None, "mrmr" or MRMRSelector, default=None
        Feature selection fitted on the training features only. ``"mrmr"`` builds ``MRMRSelector(n_features)``.
    n_features : int or "auto", default="auto"
        Features kept by ``selector="mrmr"``; more than the features' columns is an error at ``fit``
        (:func:`deepfeat.selection.mrmr.resolve_n_features`).
    classifier : str or estimator, default="svm"
        A preset name of :func:`deepfeat.classifiers.presets.get_classifier` or any scikit-learn classifier.
    class_weight : None, "balanced" or dict, default=None
        Passed to the classifier when it supports it.
    batch_size : int, optional
        Images per forward pass (default: 32 on CUDA, 8 on the CPU).
    device : str, default="auto"
        Where the backbone runs; ``"auto"`` picks CUDA when the *running* machine has it.
    cache : bool or path, default=True
        Feature cache of the extractor (features of an image are computed once per backbone/weights/layer).
    seed : int, default=0
        Seed of the classifier and selector.
    crop_border : bool, default=False
        Crop dark image borders before resizing (C-NMC-style images); part of the preprocessing.
    image_size : int, optional
        Square network input size instead of the backbone's own.
    progress : bool, default=True
        Progress bar and decision lines (device, precision) on stderr while extracting.

    Attributes
    ----------
    pipeline_ : sklearn.pipeline.Pipeline
        The fitted ``StandardScaler -> [MRMRSelector] -> classifier``.
    extractor_ : FeatureExtractor
        The extractor used for path input (its torch model is built on first use and never pickled).
    classes_ : ndarray
    n_features_in_ : int
        Width of the feature matrix seen in fit (see the module docstring).
    feature_names_in_ : ndarray
        Only when fitted on a DataFrame with string column names.
    training_features_ : dict or None
        Identity of the FeatureSet trained on (``from_featureset`` / ``fit_features``): its sha256 and metadata.
    extractor_identity_ : dict or None
        ``{"model_sha256", "preprocessing"}`` of the backbone the training features came from; None when fitted
        on a bare matrix (then nothing can be checked at predict time).

    Notes
    -----
    A 2-D numeric ``X`` is taken as precomputed features (see the module docstring). Pickles (``joblib.dump``,
    :func:`deepfeat.save_model`) hold no torch objects, so a model fitted on a GPU machine predicts on a CPU one.

    Examples
    --------
    A tiny timm network with random weights, on generated cells (a real run uses e.g. ``"darknet19"`` with its
    weights file, or the default ImageNet ``"tf_efficientnet_lite0"``):

    >>> import tempfile
    >>> from deepfeat.data.synthetic import make_synthetic_smears
    >>> cells = make_synthetic_smears(tempfile.mkdtemp(), n_per_class=6, size=48, seed=0)
    >>> clf = DeepFeatureClassifier("test_efficientnet", weights="none", image_size=48, selector="mrmr",
    ...                             n_features=20, classifier="svm", cache=False, progress=False)
    >>> clf.fit(cells.paths, cells.labels).predict(cells.paths[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        "model": [str],
        "weights": [str, os.PathLike],
        "layer": [str],
        "selector": [None, StrOptions({"mrmr"}), HasMethods(["fit", "transform"])],
        "n_features": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "classifier": [str, HasMethods(["fit", "predict"])],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str],
        "cache": ["boolean", str, os.PathLike],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "crop_border": ["boolean"],
        "image_size": [Interval(Integral, 8, None, closed="left"), None],
        "progress": ["boolean"],
    }

    def __init__(self, model=defaults.MODEL, *, weights=defaults.WEIGHTS, layer=defaults.LAYER, selector=None,
                 n_features=defaults.N_FEATURES, classifier="svm", class_weight=None,
                 batch_size=None, device=defaults.DEVICE, cache=True, seed=defaults.SEED, crop_border=False,
                 image_size=None, progress=True):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.selector = selector
        self.n_features = n_features
        self.classifier = classifier
        self.class_weight = class_weight
        self.batch_size = batch_size
        self.device = device
        self.cache = cache
        self.seed = seed
        self.crop_border = crop_border
        self.image_size = image_size
        self.progress = progress

    def __setstate__(self, state):
        if "backbone" in state and "model" not in state:  # a model file written by deepfeat 0.1
            warnings.warn("this model file was written by deepfeat 0.1 (parameter 'backbone'); it loads as "
                          "'model' in this release only: re-save it with save_model", FutureWarning, stacklevel=2)
            state["model"] = state.pop("backbone")
        super().__setstate__(state)

    # --- construction from a FeatureSet ------------------------------------------------------------
    @classmethod
    def from_featureset(cls, features: FeatureSet, *, y=None, **params) -> "DeepFeatureClassifier":
        """Train on a FeatureSet without re-extracting; later ``predict(paths)`` uses the same extractor.

        ``model``, ``weights``, ``layer``, ``crop_border`` and ``image_size`` are taken from
        ``features.meta`` (written by ``deepfeat extract``); every other parameter comes from ``params``.

        Raises
        ------
        DeepfeatError
            When the metadata lacks the extractor identity, or ``params`` contradicts it.
        """
        meta = _extractor_params(features)
        for key, value in meta.items():
            if params.get(key) is not None and str(params[key]) != str(value):
                raise DeepfeatError(f"from_featureset: {key}={params[key]!r} contradicts the FeatureSet, whose "
                                    f"features were extracted with {key}={value!r}")
        return cls(**{**params, **meta}).fit_features(features, y)

    def fit_features(self, features: FeatureSet, y=None) -> "DeepFeatureClassifier":
        """Fit on ``features.X`` (labels ``y`` or ``features.y``), after checking that the FeatureSet was
        extracted with this estimator's backbone, weights, layer and preprocessing."""
        for key, value in _extractor_params(features).items():
            # image_size=None means "the backbone's own"; a real mismatch is caught at predict time by the
            # preprocessing identity check.
            if str(getattr(self, key)) != str(value) and not (key == "image_size" and self.image_size is None):
                raise DeepfeatError(f"FeatureSet was extracted with {key}={value!r} but this classifier has "
                                    f"{key}={getattr(self, key)!r}; use DeepFeatureClassifier.from_featureset(fs)")
        if y is None:
            features.check_trainable("training a classifier")
            y = features.y
        self.fit(features.X, y)
        self.training_features_ = {"sha256": features.identity(), "n_samples": len(features),
                                   "meta": dict(features.meta)}
        self.extractor_identity_ = {"model_sha256": features.meta.get("model_sha256"),
                                    "preprocessing": features.meta.get("preprocessing")}
        return self

    # --- scikit-learn API --------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit on image paths (features extracted through the cache) or on a precomputed feature matrix.

        An image that cannot be decoded makes ``fit`` raise ``UnreadableImagesError`` listing every such file
        (after the readable ones were cached): training never skips images silently.
        """
        if self.n_features not in (None, "auto") and not (isinstance(self.selector, str) and self.selector == "mrmr"):
            raise DeepfeatError(f"n_features={self.n_features} only applies to selector='mrmr'; with selector="
                                f"{self.selector!r} set the number of features on the selector itself")
        self.extractor_ = self._make_extractor()
        self.extractor_identity_ = None
        F, from_paths = self._matrix(X)
        if from_paths:
            self.extractor_identity_ = _identity(self.extractor_)
        F, y = validate_data(self, F, y)
        check_classification_targets(y)
        n_features = self.n_features
        if isinstance(self.selector, str) and self.selector == "mrmr":  # the one check, as cross_validate's
            from deepfeat.selection.mrmr import resolve_n_features

            n_features = resolve_n_features(self.n_features, F.shape[1])
        self.pipeline_ = build_pipeline(self.classifier, selector=self.selector, n_features=n_features,
                                        seed=self.seed, class_weight=self.class_weight)
        check_class_sizes(self.pipeline_, y, self.classifier)
        self.pipeline_.fit(F, y)
        self.classes_ = self.pipeline_.classes_
        self.training_features_ = None
        for stale in ("calibration_", "conformal_"):  # fit_trust's records describe the previous fit only
            self.__dict__.pop(stale, None)
        return self

    def predict(self, X):
        """Class labels of image paths or feature rows; unreadable images raise ``UnreadableImagesError`` (an
        ``ImageReadError``) naming them all (use :meth:`predict_paths` to list them instead)."""
        F = self._features(X)  # checks fitted-ness first (NotFittedError, not AttributeError)
        return self.pipeline_.predict(F)

    @available_if(_classifier_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities, columns in ``classes_`` order (only when the classifier provides them)."""
        F = self._features(X)
        return self.pipeline_.predict_proba(F)

    @available_if(_classifier_has("predict_log_proba"))
    def predict_log_proba(self, X):
        F = self._features(X)
        return self.pipeline_.predict_log_proba(F)

    @available_if(_classifier_has("decision_function"))
    def decision_function(self, X):
        F = self._features(X)
        return self.pipeline_.decision_function(F)

    def predict_paths(self, paths, *, on_error="skip"):
        """Predict images one row each, listing unreadable ones instead of failing.

        Parameters
        ----------
        paths : sequence of str or path-like
        on_error : {"skip", "raise"}, default="skip"
            ``"skip"``: an image that cannot be decoded gets no label and its reason in ``error``;
            ``"raise"``: unreadable images raise ``UnreadableImagesError`` (after the others were cached).

        Returns
        -------
        pandas.DataFrame
            One row per input path, in order: ``path``, ``label`` (None when unreadable), ``proba_<class>`` per
            class when the classifier has ``predict_proba`` (NaN when unreadable) and ``error`` (``""`` when
            predicted).
        """
        import pandas as pd

        if on_error not in ("skip", "raise"):
            raise DeepfeatError(f"on_error must be 'skip' or 'raise'; got {on_error!r}")
        check_is_fitted(self)
        paths = _image_paths(list(paths))
        if paths is None:
            raise DeepfeatError("predict_paths expects a non-empty list of image paths")
        F, failures = self._extract(paths)
        if on_error == "raise":
            _raise_failures(paths, failures)
        ok = np.ones(len(paths), dtype=bool)
        ok[list(failures)] = False
        table = pd.DataFrame({"path": paths, "label": pd.Series([None] * len(paths), dtype=object)})
        proba = np.full((len(paths), len(self.classes_)), np.nan) if hasattr(self, "predict_proba") else None
        if ok.any():
            F_ok = validate_data(self, F[ok], reset=False)
            table.loc[ok, "label"] = pd.Series(list(self.pipeline_.predict(F_ok)), index=np.flatnonzero(ok))
            if proba is not None:
                proba[ok] = self.pipeline_.predict_proba(F_ok)
        for j, c in enumerate(self.classes_ if proba is not None else []):
            table[f"proba_{c}"] = proba[:, j]
        table["error"] = [failures.get(i, "") for i in range(len(paths))]
        return table

    # --- internals ---------------------------------------------------------------------------------
    def _make_extractor(self):
        from deepfeat.extraction.engine import FeatureExtractor

        # on_error="nan" keeps one row per path; this class turns NaN rows into errors or table entries itself,
        # so the extractor's parameters (and its built network) never change between fit and predict.
        return FeatureExtractor(self.model, weights=self.weights, layer=self.layer, batch_size=self.batch_size,
                                device=self.device, cache=self.cache, crop_border=self.crop_border,
                                image_size=self.image_size, on_error="nan", progress=self.progress)

    def _features(self, X):
        """The checked feature matrix for ``X`` (paths are extracted with the fitted extractor)."""
        check_is_fitted(self)
        return validate_data(self, self._matrix(X)[0], reset=False)

    def _matrix(self, X):
        """``(X, False)`` for a feature matrix; ``(features, True)`` for image paths (unreadable ones raise)."""
        paths = _image_paths(X)
        if paths is None:
            return X, False
        F, failures = self._extract(paths)
        _raise_failures(paths, failures)
        return F, True

    def _extract(self, paths):
        """Features of ``paths`` (NaN rows where unusable) and ``{row: reason}`` for every unusable image."""
        expected = getattr(self, "extractor_identity_", None)
        if hasattr(self, "pipeline_") and expected is not None:  # fit() resets it to None before extracting
            found = _identity(self.extractor_)
            for key in ("model_sha256", "preprocessing"):
                if expected.get(key) is not None and _canonical(found[key]) != _canonical(expected[key]):
                    hint = "supply the same weights file (weights=PATH) and settings, or retrain"
                    raise DeepfeatError(
                        f"the {self.model!r} network built here (weights={self.weights!r}) differs from the one "
                        f"this model was trained with ({key}: trained {_short(expected[key])}, here "
                        f"{_short(found[key])}), so its features would not match; {hint}")
        with warnings.catch_warnings():
            # The extractor warns about NaN rows; they are reported below with their reasons instead.
            warnings.filterwarnings("ignore", message=".*unreadable image", category=RuntimeWarning)
            F = np.asarray(self.extractor_.transform(paths), dtype=np.float32)
        failures = {}
        for i in np.flatnonzero(~np.isfinite(F).all(axis=1)) if F.shape[1] else range(len(paths)):
            failures[int(i)] = _unusable_reason(paths[i])
        return F, failures


def _canonical(value) -> str:
    """JSON text of ``value``: a preprocessing dict read back from a FeatureSet file compares equal to a fresh one."""
    return json.dumps(value, sort_keys=True)


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:16] + "..." if len(text) > 19 else text


def _identity(extractor) -> dict:
    """What makes an extractor's features what they are: the network's weights hash and its preprocessing."""
    # FeatureExtractor builds (or reuses) its network here; the transform that follows reuses it.
    engine = extractor._get_engine()
    return {"model_sha256": engine.model_sha256, "preprocessing": engine.preprocessing}


def _unusable_reason(path: str) -> str:
    """Why an image gave no finite features: its decoding error, else a non-finite network output."""
    from deepfeat.data.images import load_image
    from deepfeat.errors import ImageReadError

    try:
        load_image(path)
    except ImageReadError as exc:
        return exc.reason
    return "the backbone produced NaN/inf features for this image (check the weights and precision)"


def _raise_failures(paths, failures: dict) -> None:
    if failures:
        from deepfeat.extraction.engine import UnreadableImagesError

        raise UnreadableImagesError([(paths[i], reason) for i, reason in sorted(failures.items())])


def _extractor_params(features) -> dict:
    """DeepFeatureClassifier parameters that reproduce a FeatureSet's extractor; refuses incomplete metadata."""
    if not isinstance(features, FeatureSet):
        raise DeepfeatError(f"expected a FeatureSet (deepfeat.load_features(path)); got {type(features).__name__}")
    meta = features.meta
    missing = [k for k in EXTRACTOR_META_KEYS if meta.get(k) in (None, "")]
    if missing:
        raise DeepfeatError(
            f"the FeatureSet's metadata lacks {', '.join(missing)}: deepfeat cannot tell which extractor made "
            "these features, so a model trained on them could not predict on images. Re-extract with "
            "'deepfeat extract', or fit DeepFeatureClassifier(model=..., weights=..., layer=...).fit(fs.X, fs.y)"
            " if you know them")
    params = {param: meta[key] for key, param in EXTRACTOR_META_KEYS.items()}
    preprocessing = meta.get("preprocessing") or {}
    params["crop_border"] = bool(preprocessing.get("crop_border", False))
    size = meta.get("input_size")
    # A square size is pinned (equal to the backbone's own it changes nothing); an override is always square.
    params["image_size"] = int(size[-1]) if size and len(size) == 3 and size[-1] == size[-2] else None
    return params
