"""scikit-learn's estimator checks for MRMRSelector, one test per check and method."""
from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from deepfeat.selection.mrmr import MRMRSelector

# {check name: reason} for checks MRMRSelector is expected to fail; empty while all pass.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [MRMRSelector(), MRMRSelector(n_features=2, method="mid", n_bins=8), MRMRSelector(n_features=None, threshold=0.0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
