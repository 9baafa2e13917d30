"""Relevance and redundancy terms for :class:`deepfeat.selection.mrmr.MRMRSelector`.

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
# Columns discretised together; bounds the temporaries of equal_frequency_codes.
_CODES_BLOCK = 128


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
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 (constant column, no within-class df): NaN
        return _f_oneway([X[y_codes == k] for k in range(n_classes)])


def _f_oneway(groups):
    """``sklearn.feature_selection.f_oneway`` with its column sums replaced by :func:`_column_sums`."""
    n_classes = len(groups)
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


def equal_frequency_codes(X, n_bins):
    """Discretise every column of ``X`` into at most ``n_bins`` equal-frequency bins; returns (d, n) codes.

    Rule, per column with sorted values ``x_(0) <= ... <= x_(n-1)``:

    * at most ``n_bins`` distinct values: one bin per distinct value (code = rank among distinct values);
    * otherwise the ``n_bins - 1`` edges are the order statistics ``x_(floor(i * n / n_bins))``,
      ``i = 1 .. n_bins - 1`` (no interpolation) and a value ``v`` gets code ``#{edges <= v}``. Equal values
      therefore always share a bin, and repeated edges (heavy ties) merge bins, so a tied column gets fewer,
      larger bins; codes may skip numbers, which changes no entropy.

    Codes are small unsigned ints (uint8 up to 256 bins), stored one row per column so that the per-step
    sorts in :class:`MutualInformation` run over contiguous memory.
    """
    n, d = X.shape
    codes = np.empty((d, n), dtype=np.uint8 if n_bins <= 256 else np.uint32)
    # blocks of columns bound the int32/int64 temporaries to a few MB whatever d is
    for start in range(0, d, _CODES_BLOCK):
        stop = min(start + _CODES_BLOCK, d)
        codes[start:stop] = _equal_frequency_codes_block(X[:, start:stop], n_bins).T
    return codes


def _equal_frequency_codes_block(X, n_bins):
    n, d = X.shape
    order = np.argsort(X, axis=0, kind="stable")
    xs = np.take_along_axis(X, order, axis=0)
    is_start = np.ones((n, d), dtype=bool)
    is_start[1:] = xs[1:] != xs[:-1]
    dense = np.cumsum(is_start, axis=0, dtype=np.int32) - 1
    few_values = dense[-1] < n_bins
    # sorted position of the last copy of each value: where its tie group ends
    is_end = np.ones((n, d), dtype=bool)
    is_end[:-1] = is_start[1:]
    end = np.where(is_end, np.arange(n, dtype=np.int32)[:, None], np.int32(n))
    end = np.minimum.accumulate(end[::-1], axis=0)[::-1]
    edges = np.arange(1, n_bins, dtype=np.int64) * n // n_bins
    sorted_codes = np.where(few_values, dense, np.searchsorted(edges, end, side="right"))
    codes = np.empty((n, d), dtype=sorted_codes.dtype)
    np.put_along_axis(codes, order, sorted_codes, axis=0)
    return codes


def _sum_n_log_n_of_runs(sorted_keys, n_log_n):
    """For each row of row-sorted keys, sum ``c * log(c)`` over the counts ``c`` of equal keys.

    ``n_log_n[c]`` holds ``c * log(c)``. Each row is handled through whichever is sparser, so the cost
    follows min(#distinct keys, #repeated keys) rather than n: continuous columns give few repeats (a count
    of 1 adds 0, so only runs of repeats matter), heavily tied columns (e.g. ReLU zeros) give few runs.
    """
    m, n = sorted_keys.shape
    starts = np.empty((m, n), dtype=bool)
    starts[:, 0] = True
    np.not_equal(sorted_keys[:, 1:], sorted_keys[:, :-1], out=starts[:, 1:])
    runs_per_row = np.count_nonzero(starts, axis=1)
    few_runs = runs_per_row <= n - runs_per_row
    out = np.zeros(m)
    if few_runs.any():
        out[few_runs] = _from_run_starts(starts[few_runs], runs_per_row[few_runs], n_log_n)
    if not few_runs.all():
        out[~few_runs] = _from_repeats(starts[~few_runs], n_log_n)
    return out


def _from_run_starts(starts, runs_per_row, n_log_n):
    m, n = starts.shape
    lengths = np.diff(np.flatnonzero(starts), append=m * n)
    offsets = np.zeros(m, dtype=np.intp)
    np.cumsum(runs_per_row[:-1], out=offsets[1:])
    return np.add.reduceat(n_log_n[lengths], offsets)


def _from_repeats(starts, n_log_n):
    # flat positions of keys equal to their left neighbour (never column 0, so a run of consecutive
    # repeat positions never spans two rows); t repeats in a run = a key seen t + 1 times
    m, n = starts.shape
    repeat = np.flatnonzero(~starts)
    if repeat.size == 0:
        return np.zeros(m)
    new_run = np.empty(repeat.size, dtype=bool)
    new_run[0] = True
    np.not_equal(np.diff(repeat), 1, out=new_run[1:])
    counts = np.bincount(np.cumsum(new_run) - 1) + 1
    return np.bincount(repeat[new_run] // n, weights=n_log_n[counts], minlength=m)


class MutualInformation:
    """Plug-in mutual information (nats) between discretised columns, for many columns at once.

    ``I(a; b) = log n + (S_ab - S_a - S_b) / n`` with ``S = sum c log c`` over the cell counts ``c`` of
    the (joint) histogram. ``S_ab`` comes from sorting the combined codes ``b * M + a`` of each column,
    which needs O(n) memory per column and no ``n_bins x n_bins`` table.
    """

    def __init__(self, codes, n_bins, n_classes):
        self.n_samples = codes.shape[1]
        self._mult = max(n_bins, n_classes)
        key_max = self._mult * self._mult
        self._key_dtype = np.uint16 if key_max <= 2**16 else (np.uint32 if key_max <= 2**32 else np.uint64)
        self._scaled = codes.astype(self._key_dtype) * self._key_dtype(self._mult)  # (d, n) codes * M
        self._codes = codes
        counts = np.arange(self.n_samples + 1, dtype=np.float64)
        self._n_log_n = counts * np.log(np.maximum(counts, 1.0))
        self._s_single = _sum_n_log_n_of_runs(np.sort(codes, axis=1), self._n_log_n)

    def __call__(self, other, rows, s_other=None):
        """MI of each column in ``rows`` with the code vector ``other`` (length n, values < M)."""
        if s_other is None:
            s_other = _sum_n_log_n_of_runs(np.sort(other)[None, :], self._n_log_n)[0]
        keys = np.take(self._scaled, rows, axis=0)
        keys += other.astype(self._key_dtype)[None, :]
        keys.sort(axis=1)
        s_joint = _sum_n_log_n_of_runs(keys, self._n_log_n)
        n = self.n_samples
        mi = np.log(n) + (s_joint - self._s_single[rows] - s_other) / n
        # exact zeros (e.g. a constant column) come out as +-1e-16 rounding noise
        mi[mi < 1e-12] = 0.0
        return mi

    def with_column(self, j, rows):
        """MI of each column in ``rows`` with column ``j``."""
        return self(self._codes[j], rows, self._s_single[j])
