"""Per-group RTT statistics over the ``samples`` frame, fast enough for tens of millions of rows.

:func:`sample_quantiles` computes what ``samples.groupby(by)["rtt_ms"]`` would give for
count, lost, loss ratio, mean and exact quantiles, with the same numbers as pandas
(linear interpolation, ``quantile_cont`` in SQL terms), but without pandas' group-by
machinery:

1. every key column becomes integer codes: a categorical column's codes are used as they
   are (free; the ``samples`` frame stores its repeated strings as categoricals), any other
   column is factorized once (the slow step on strings, which is why categoricals matter);
2. the codes are combined into one small integer group code per row;
3. counts, lost counts and sums come from :func:`numpy.bincount`;
4. the received RTTs are ordered by group code with a stable sort (a radix sort for 8- and
   16-bit codes, linear time) and each group's quantiles are read from its slice with
   :func:`numpy.partition` at the two order statistics around each quantile's position,
   which is cheaper than sorting the slice.

Measured on a 10-million-row campaign (``bench/analysis_scale.py``) this is several times
faster than ``groupby(...).quantile`` and needs a fraction of its memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["group_quantiles", "key_strings", "lerp", "quantile_column", "replicate_quantiles",
           "row_quantiles", "sample_quantiles"]

# Combined group codes are used directly when there are at most this many possible key
# combinations (the product of the key cardinalities); beyond it the observed combinations
# are numbered first, so that the per-group arrays stay as small as the result.
_DENSE_LIMIT = 1 << 20


def quantile_column(q: float) -> str:
    """The result column of quantile ``q``: 0.5 → ``p50``, 0.999 → ``p99.9``."""
    return f"p{round(q * 100, 6):g}"


def _codes(column: pd.Series) -> tuple[npt.NDArray[np.integer], pd.Index]:
    """Integer codes (−1 for a missing key) and the values they stand for."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), pd.Index(column.cat.categories)
    codes, uniques = pd.factorize(column, sort=True, use_na_sentinel=True)
    return np.asarray(codes), pd.Index(uniques)


def _key_column(
    source: pd.Series,
    values: pd.Index,
    codes: npt.NDArray[np.int64],
) -> object:
    """The result's key column, in the input column's dtype."""
    if isinstance(source.dtype, pd.CategoricalDtype):
        return pd.Categorical.from_codes(codes, dtype=source.dtype)
    return pd.Series(values.take(codes), dtype=source.dtype)


def _group_order(
    group: npt.NDArray[np.intp], n_groups: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """The rows ordered by group (stably; rows of group −1 left out) and each group's size.

    pandas' counting sort (what its own group-bys use) is linear and several times faster
    than numpy's stable argsort; numpy's is the fallback should pandas move it.
    """
    try:
        from pandas._libs.algos import groupsort_indexer  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - a private pandas function
        valid = group >= 0
        sizes = np.bincount(group[valid], minlength=n_groups).astype(np.int64)
        order = np.argsort(group, kind="stable")[len(group) - int(sizes.sum()):]
        return order, sizes
    order, counts = groupsort_indexer(group, n_groups)
    return order[int(counts[0]):], np.asarray(counts[1:], dtype=np.int64)


def _segment_statistics(
    values: npt.NDArray[np.float64],
    starts: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    received: npt.NDArray[np.int64],
    qs: Sequence[float],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and exact quantiles (linear interpolation) of each group's received values.

    Group i is ``values[starts[i]:starts[i] + sizes[i]]`` (NaN for a lost sample,
    ``received[i]`` not NaN), reordered in place.  Returns the means (groups) and the
    quantiles (groups × quantiles), NaN for a group without a received value.
    """
    means = np.full(len(sizes), np.nan)
    out = np.full((len(sizes), len(qs)), np.nan)
    q = np.asarray(qs, dtype=np.float64)
    groups = zip(starts.tolist(), sizes.tolist(), received.tolist(), strict=True)
    for i, (start, size, n) in enumerate(groups):
        segment = values[start:start + size]
        if n == 0:
            continue
        position = q * (n - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, n - 1)
        # NaN sorts last, so with n − 1 among the kth the received values are segment[:n].
        segment.partition(np.unique(np.concatenate([low, high, [n - 1]])))
        below = segment[low]
        above = segment[high]
        # The same formula as numpy's "linear" method (and pandas'): exact at the ends.
        out[i] = below + (above - below) * (position - low)
        means[i] = segment[:n].sum() / n
    return means, out


def sample_quantiles(
    samples: pd.DataFrame,
    by: Sequence[str] = ("region", "target", "kind"),
    qs: Sequence[float] = (0.5, 0.9, 0.95, 0.99),
    value: str = "rtt_ms",
) -> pd.DataFrame:
    """Per-group sample statistics of ``samples[value]`` (NaN = lost).

    One row per observed combination of the ``by`` columns (rows with a missing key are
    dropped, as ``groupby`` does), sorted by the keys, with the ``by`` columns (in their
    input dtypes) then:

    ``count``       samples in the group, lost ones included (int64)
    ``lost``        samples whose value is NaN (int64)
    ``loss_ratio``  lost / count
    ``mean``        mean of the received values (NaN if all were lost)
    ``p50`` …       exact quantiles of the received values, linear interpolation between
                    order statistics (pandas' and numpy's default, ``quantile_cont`` in
                    DuckDB); NaN if all were lost.  Named by :func:`quantile_column`.
    """
    by = list(by)
    qs = [float(q) for q in qs]
    if not by:
        raise ValueError("sample_quantiles needs at least one key column")
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"quantiles must be within [0, 1]: {qs}")

    codes: list[npt.NDArray[np.integer]] = []
    values: list[pd.Index] = []
    for name in by:
        c, v = _codes(samples[name])
        codes.append(c)
        values.append(v)
    sizes = [max(len(v), 1) for v in values]
    n_combinations = int(np.prod(np.asarray(sizes, dtype=np.float64)))

    # One group code per row: the keys' codes in mixed radix (row-major, so that the
    # group codes sort as the key tuples do), −1 for a row with a missing key (dropped).
    rtt = samples[value].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.zeros(len(samples), dtype=bool)
    for c in codes:
        missing |= c < 0
    any_missing = bool(missing.any())
    first_row: npt.NDArray[np.intp] | None = None
    if n_combinations <= _DENSE_LIMIT:
        group = np.zeros(len(samples), dtype=np.intp)
        for c, size in zip(codes, sizes, strict=True):
            group *= size
            group += c
        if any_missing:
            group[missing] = -1
        n_groups = n_combinations
        combination = np.arange(n_groups, dtype=np.int64)
    else:
        # Too many possible combinations for dense per-group arrays: number the observed.
        if any_missing:
            keep = ~missing
            rtt = rtt[keep]
            codes = [c[keep] for c in codes]
        if n_combinations < 1 << 62:
            mixed = np.zeros(len(rtt), dtype=np.int64)
            for c, size in zip(codes, sizes, strict=True):
                mixed *= size
                mixed += c
            combination, inverse = np.unique(mixed, return_inverse=True)
            del mixed
        else:
            # Mixed-radix codes would overflow: let pandas number the groups (sorted by key).
            keyed = pd.DataFrame(dict(enumerate(codes)))
            numbers = keyed.groupby(list(keyed.columns), sort=True).ngroup().to_numpy()
            combination, first_row, inverse = np.unique(
                numbers, return_index=True, return_inverse=True)
        group = np.asarray(inverse, dtype=np.intp)
        n_groups = len(combination)
    del missing

    order, count = _group_order(group, n_groups)
    lost_rows = np.isnan(rtt)
    if any_missing and n_combinations <= _DENSE_LIMIT:
        lost_rows &= group >= 0
    lost_all = np.bincount(group[lost_rows], minlength=n_groups).astype(np.int64)
    del lost_rows, group
    values_by_group = rtt.take(order)
    del order
    starts = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(count[:-1], out=starts[1:])
    observed = np.flatnonzero(count)
    mean, quantiles = _segment_statistics(
        values_by_group, starts[observed], count[observed], count[observed] - lost_all[observed],
        qs)
    del values_by_group

    key_codes: list[npt.NDArray[np.int64]] = []
    if first_row is not None:
        key_codes = [np.asarray(c[first_row[observed]], dtype=np.int64) for c in codes]
    else:
        # The key codes back from the combination numbers (mixed radix, last key fastest).
        remaining = np.asarray(combination[observed], dtype=np.int64)
        for size in reversed(sizes):
            key_codes.append(remaining % size)
            remaining = remaining // size
        key_codes.reverse()

    count_o = count[observed]
    lost = lost_all[observed]
    columns: dict[str, object] = {
        name: _key_column(samples[name], v, c)
        for name, v, c in zip(by, values, key_codes, strict=True)
    }
    columns["count"] = count_o
    columns["lost"] = lost
    columns["loss_ratio"] = lost / count_o
    columns["mean"] = mean
    for j, q in enumerate(qs):
        columns[quantile_column(q)] = quantiles[:, j]
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- kernels
# The vectorised kernels the analysis path uses (metrics, rank, paths): quantiles of many
# groups, or of many bootstrap replicates, without a Python call per group or replicate.


def lerp(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64],
         t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Linear interpolation between ``a`` and ``b`` as numpy's quantile does it (its "linear"
    method: ``a + (b − a)·t`` below t = ½, ``b − (b − a)·(1 − t)`` from ½ on), so that the
    kernels below give the very figures of :func:`numpy.nanquantile`."""
    diff = b - a
    out = np.asarray(a + diff * t, dtype=np.float64)
    np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5)
    return out


def group_quantiles(group: npt.NDArray[np.integer], values: npt.NDArray[np.float64],
                    n_groups: int, qs: Sequence[float]) -> npt.NDArray[np.float64]:
    """Quantiles (groups × ``qs``) of ``values`` per group code (0 … n_groups − 1).

    NaN values are left out (numpy's ``nanquantile``); a group without a value gives NaN.
    One sort by (group, value) for every group at once, then the order statistics around
    each quantile's position (numpy's linear method, :func:`lerp`).
    """
    out = np.full((n_groups, len(qs)), np.nan)
    keep = ~np.isnan(values)
    g = np.asarray(group, dtype=np.int64)[keep]
    v = values[keep]
    if not len(v):
        return out
    order = np.lexsort((v, g))
    v = v[order]
    sizes = np.bincount(g, minlength=n_groups)
    starts = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    present = np.flatnonzero(sizes)
    n = sizes[present]
    for j, q in enumerate(qs):
        lo, hi, gamma = _positions(n, q)
        out[present, j] = lerp(v[starts[present] + lo], v[starts[present] + hi], gamma)
    return out


def _positions(n: npt.NDArray[np.int64], q: float
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The 0-based ranks around quantile ``q`` of ``n`` sorted values, and the weight of
    the upper one (numpy's linear method: position (n − 1) q)."""
    h = (n - 1) * float(q)
    below = np.floor(h)
    lo = below.astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), h - below


def replicate_quantiles(values: npt.NDArray[np.float64], weights: npt.NDArray[np.integer],
                        qs: Sequence[float]) -> npt.NDArray[np.float64]:
    """Quantiles (replicates × ``qs``) of weighted bootstrap replicates of sorted values.

    ``values`` are finite and sorted ascending; ``weights[b, j]`` is how many times value
    ``j`` is in replicate ``b`` (a bootstrap draw as counts).  Each replicate's quantile is
    what :func:`numpy.quantile` gives on the replicate's values written out (the order
    statistics around the position, :func:`lerp`), found by one cumulative sum and one
    binary search over all replicates: linear in replicates × values, no sort per
    replicate.  A replicate with no value gives NaN.
    """
    reps, m = weights.shape
    out = np.full((reps, len(qs)), np.nan)
    if m == 0 or reps == 0:
        return out
    # One cumulative sum over all rows: row b starts where row b − 1 ended (``offset``).
    flat = np.cumsum(weights, axis=None, dtype=np.int64)
    ends = flat[m - 1::m]
    total = np.diff(ends, prepend=0)
    offset = ends - total
    base = np.arange(reps, dtype=np.int64) * m
    filled = total > 0
    for j, q in enumerate(qs):
        lo_rank, hi_rank, gamma = _positions(total, q)
        # The k-th value (0-based) is the first whose cumulative weight exceeds k.
        lo = np.clip(np.searchsorted(flat, offset + lo_rank, side="right") - base, 0, m - 1)
        hi = np.clip(np.searchsorted(flat, offset + hi_rank, side="right") - base, 0, m - 1)
        out[:, j] = np.where(filled, lerp(values[lo], values[hi], gamma), np.nan)
    return out


def row_quantiles(rows: npt.NDArray[np.float64], qs: Sequence[float]) -> npt.NDArray[np.float64]:
    """Quantiles (rows × ``qs``) of each row's non-NaN values: row by row what
    :func:`numpy.nanquantile` gives (NaN for a row without a value), from one sort of
    the whole matrix (NaN sorts last) instead of a call per row."""
    out = np.full((rows.shape[0], len(qs)), np.nan)
    if rows.size == 0:
        return out
    ordered = np.sort(rows, axis=1)
    n = rows.shape[1] - np.isnan(ordered).sum(axis=1)
    present = np.flatnonzero(n)
    n = n[present]
    ordered = ordered[present]
    for j, q in enumerate(qs):
        lo, hi, gamma = _positions(n, q)
        out[present, j] = lerp(np.take_along_axis(ordered, lo[:, np.newaxis], axis=1)[:, 0],
                               np.take_along_axis(ordered, hi[:, np.newaxis], axis=1)[:, 0],
                               gamma)
    return out


def key_strings(column: pd.Series) -> npt.NDArray[np.object_]:
    """``column.astype(str)`` as an array of Python strings, a categorical's categories
    converted once (a missing key is ``"nan"``, as ``astype(str)`` writes it)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = np.array([str(c) for c in column.cat.categories] + ["nan"], dtype=object)
        return np.asarray(names[column.cat.codes.to_numpy()], dtype=object)
    return np.asarray(column.astype(str).to_numpy(), dtype=object)
