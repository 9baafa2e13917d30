"""The one-entry memo that lets predict and predict_proba / decision_function share their work on a test fold,
and ``n_jobs="auto"``."""
import pickle

import numpy as np
import pytest
from sklearn.datasets import make_classification

import deepfeat.classifiers.estimators as estimators_module
from deepfeat.classifiers.estimators import GramSVC
from deepfeat.classifiers.memo import LastRows, rows_key
from deepfeat.classifiers.small_data import KNeighborsClassifier
from deepfeat.errors import DeepfeatError
from deepfeat.evaluation.parameters import AUTO_PARALLEL_VALUES, resolve_n_jobs


def _data():
    X, y = make_classification(200, 20, n_informative=6, n_classes=3, random_state=0)
    return X[:150], y[:150], X[150:]


def test_rows_key_separates_values_shape_and_dtype():
    a = np.arange(6.0).reshape(2, 3)
    assert rows_key(a) == rows_key(a.copy())
    assert rows_key(a) != rows_key(a.reshape(3, 2))
    assert rows_key(a) != rows_key(a.astype(np.float32))
    b = a.copy()
    b[1, 2] = np.nextafter(b[1, 2], 10)
    assert rows_key(a) != rows_key(b)


def test_gram_svc_computes_the_test_kernel_once(monkeypatch):
    Xtr, ytr, Xte = _data()
    svc = GramSVC().fit(Xtr, ytr)
    calls = []
    real = estimators_module.rbf_kernel
    monkeypatch.setattr(estimators_module, "rbf_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    pred, dec = svc.predict(Xte), svc.decision_function(Xte)
    assert len(calls) == 1
    svc.predict(Xte[:10])  # other rows: computed again
    assert len(calls) == 2
    fresh = GramSVC().fit(Xtr, ytr)  # a new memo: computes from scratch
    assert np.array_equal(pred, fresh.predict(Xte)) and np.array_equal(dec, fresh.decision_function(Xte))


def test_memo_never_answers_for_other_rows_or_a_refit():
    Xtr, ytr, Xte = _data()
    knn = KNeighborsClassifier(5).fit(Xtr, ytr)
    p1 = knn.predict_proba(Xte)
    p1[:] = -1  # the caller's copy: mutating it leaves the memo intact
    assert np.array_equal(knn.predict_proba(Xte), KNeighborsClassifier(5).fit(Xtr, ytr).predict_proba(Xte))
    knn.fit(Xtr[:60], ytr[:60])  # refit: a new memo
    assert np.array_equal(knn.predict_proba(Xte), KNeighborsClassifier(5).fit(Xtr[:60], ytr[:60]).predict_proba(Xte))
    knn.set_params(n_neighbors=1)  # a parameter changed after the fit is part of the key
    assert np.array_equal(knn.predict_proba(Xte), KNeighborsClassifier(1).fit(Xtr[:60], ytr[:60]).predict_proba(Xte))


def test_memo_is_left_out_of_pickles():
    Xtr, ytr, Xte = _data()
    svc = GramSVC().fit(Xtr, ytr)
    svc.predict(Xte)
    assert svc._test_gram._last is not None
    copy = pickle.loads(pickle.dumps(svc))
    assert not hasattr(copy, "_test_gram")  # model files hold what they held before the memo
    assert np.array_equal(copy.predict(Xte), svc.predict(Xte))
    knn = pickle.loads(pickle.dumps(KNeighborsClassifier(3).fit(Xtr, ytr)))
    assert not hasattr(knn, "_proba") and knn.predict_proba(Xte).shape == (len(Xte), 3)
    assert LastRows() == LastRows()  # scikit-learn's checks compare __dict__ around predict


def test_n_jobs_auto_is_one_on_small_data_and_per_core_on_large(monkeypatch):
    import joblib

    monkeypatch.setattr(joblib, "cpu_count", lambda: 4)
    assert resolve_n_jobs("auto", n_values=AUTO_PARALLEL_VALUES - 1, n_tasks=10) == 1
    assert resolve_n_jobs("auto", n_values=AUTO_PARALLEL_VALUES, n_tasks=10) == 4
    assert resolve_n_jobs("auto", n_values=AUTO_PARALLEL_VALUES, n_tasks=3) == 3
    assert resolve_n_jobs("auto", n_values=10 ** 9, n_tasks=10, per_fold_features=True) == 1
    assert resolve_n_jobs(-1, n_values=1, n_tasks=1) == -1
    for bad in (0, True, "two", 1.5):
        with pytest.raises(DeepfeatError, match="'n_jobs' parameter"):
            resolve_n_jobs(bad, n_values=1, n_tasks=1)


def test_cross_validate_records_the_workers_it_used():
    from deepfeat.evaluation.cross_validation import cross_validate
    from deepfeat.features import FeatureSet

    rng = np.random.default_rng(0)
    fs = FeatureSet(rng.normal(size=(60, 8)), [f"c{i % 2}" for i in range(60)])
    res = cross_validate(fs, classifiers=["nb"], selections=["none"], folds=3, progress=False, baseline="majority")
    assert res.config["parameters"]["n_jobs"] == 1  # "auto" on 480 values: here, no worker started
