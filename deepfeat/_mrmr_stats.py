"""Relevance and redundancy terms for :class:`deepfeat.mrmr.MRMRSelector`.

Two families live here:

* F-statistic / Pearson (``fcq``, ``fcd``): :func:`f_statistic` reproduces, bit for bit, the per-column
  ``sklearn.feature_selection.f_classif`` call that mrmr-selection's ``mrmr_classif`` makes, and
  :class:`CorrelationRedundancy` gives ``|Pearson r|`` of one picked column with every candidate.
* Mutual information (``miq``, ``mid``): :func:`equal_frequency_codes` discretises every column once, and
  :class:`MutualInformation` computes ``I(x_j; x_s)`` of one picked column with every candidate from the codes.

Everything is vectorised over columns; the only Python loops run over classes, bins or summation blocks.
"""
from __future__ import annotations

import numpy as np

# numpy's 1-D float reductions use pairwise summation with blocks of this many elements (PW_BLOCKSIZE).
_PAIRWISE_BLOCK = 128


def _column_sums(a):
    """Sum ``a`` (m, d) over axis 0 with numpy's 1-D pairwise algorithm, independently per column.

    ``a.sum(axis=0)`` on a 2-D array accumulates row by row, whereas ``f_classif`` on a single column (what
    ``mrmr_classif`` calls) reduces a contiguous 1-D run with pairwise summation. The results differ in the
    last bits, which is enough to reorder near-tied features, so the same association order is replayed here
    on whole rows at once (elementwise float additions are exact IEEE operations, so this is bit-identical).
    """
    m = a.shape[0]
    if m < 8:
        res = a[0].copy() if m else np.zeros(a.shape[1:], a.dtype)
        for i in range(1, m):
            res += a[i]
        return res
    if m <= _PAIRWISE_BLOCK:
        r = a[0:8].copy()
        for i in range(8, m - m % 8, 8):
            r += a[i:i + 8]
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for i in range(m - m % 8, m):
            res += a[i]
        return res
    half = m // 2
    half -= half % 8
    return _column_sums(a[:half]) + _column_sums(a[half:])


def f_statistic(X, y_codes, n_classes):
    """One-way ANOVA F of each column of ``X`` against the class codes, exactly as ``mrmr_classif`` gets it.

    This mirrors ``sklearn.feature_selection.f_oneway`` operation by operation, in the dtype of ``X``
    (float32 input stays float32 in the sums, as in scikit-learn), so the relevance values, and therefore the
    picks, match mrmr-selection's. Columns where the F-test is undefined (0/0) come back as NaN.
    """
    groups = [X[y_codes == k] for k in range(n_classes)]
    counts = np.array([g.shape[0] for g in groups])
    n_samples = np.sum(counts)
    ss_alldata = sum(_column_sums(g * g) for g in groups)
    sums = [_column_sums(g) for g in groups]
    square_of_sums_alldata = sum(sums) ** 2
    sstot = ss_alldata - square_of_sums_alldata / float(n_samples)
    ssbn = 0.0
    for k in range(n_classes):
        ssbn += sums[k] ** 2 / counts[k]
    ssbn -= square_of_sums_alldata / float(n_samples)
    sswn = sstot - ssbn
    msb = ssbn / float(n_classes - 1)
    msw = sswn / float(n_samples - n_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(msb / msw, dtype=np.float64)


class CorrelationRedundancy:
    """``|Pearson r|`` between one column and all columns of ``X``, one matrix-vector product per call.

    The columns are centred and scaled to unit norm once, in float64 and stored transposed (d, n), so that
    ``r = Z @ z_j``. With ``gram=True`` the whole ``|Z Z^T|`` (d x d) is computed up front with one matrix
    product instead, which is faster when many columns will be picked; both use O(n*d + d*d) memory at most.
    """

    def __init__(self, X, *, gram=False):
        Z = np.array(X, dtype=np.float64, order="F").T  # (d, n), rows contiguous
        Z -= Z.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
        norms[norms == 0] = 1.0  # constant columns are never candidates; avoid 0/0
        Z /= norms[:, None]
        self._Z = Z
        self._gram = np.abs(Z @ Z.T) if gram else None

    def __call__(self, j):
        if self._gram is not None:
            return np.minimum(self._gram[j], 1.0)
        return np.minimum(np.abs(self._Z @ self._Z[j]), 1.0)
