"""Per-group network metrics with bootstrap confidence intervals: frames in, frame out.

:func:`metrics` summarises a campaign per group (by default
``region × target × kind × port``), one row per group, the group's columns first:

===================  ===============================================================
column               meaning
===================  ===============================================================
records              measurements (records) in the group
success_rate         share of records whose status is ``ok``
rtt_samples          RTTs behind the percentiles (below; Int64, <NA> when a
                     summary record in the group does not say how many)
summary_records      summary records among the RTT observations (int)
rtt_p50_ms …         percentiles p50, p90, p95, p99 of the RTT observations
rtt_p99_ms
sent, lost           probes sent and lost (Int64; <NA> when no record counts probes);
                     records whose sent or received is unknown are left out
loss_ratio           lost / sent, over the group's probes (not a mean of ratios)
jitter_ms            mean of the records' jitter (records without one skipped)
handshake_p50_ms,    percentiles of smtp/imap ``handshake_ms``
handshake_p95_ms
rtt_p50_lo/_hi,      percentile-bootstrap confidence interval (level ``ci``) of
rtt_p95_lo/_hi,      rtt_p50_ms, rtt_p95_ms and loss_ratio
loss_ratio_lo/_hi
===================  ===============================================================

**RTT observations.** For ping and tcp every sample of the ``samples`` frame is
one observation (an echo's RTT, a connect time); a lost sample is no
observation (missing is missing: it is never 0 ms) but is counted in ``lost``.
For trace, smtp and imap each record's headline ``measurements.rtt_ms`` is one
observation.  A group that mixes kinds pools them (group by ``kind`` to avoid it).

**Summary records** (schema 2: a ping or tcp record carrying statistics without
samples) have no samples: each is *one* observation, its headline
``measurements.rtt_ms`` (the median if the summary gives one, else the mean, …:
see ``rtt_stat`` and :mod:`netvantage.analysis.load`).  Pooling a summary's
median as if it were one RTT is the honest reading of what is stored: the
individual RTTs are not there to pool.  ``rtt_samples`` still counts what
stands behind the figures: one per sample observation, a summary's
``samples`` for a summary record; it is <NA> when a summary in the group does
not say (unknown is not 1), and ``summary_records`` says how many of the
observations are summaries.  A summary counts in ``sent``/``lost`` only when
the source gave both counts.
Percentiles interpolate linearly between order statistics (numpy's and pandas'
default, "type 7").

**Confidence intervals** come from a percentile bootstrap that resamples
*records*, not samples: the ten echoes of one ping share its path, its queue and
its moment, so they are not independent, and resampling them one by one would
give intervals far narrower than the data support.  Each replicate draws the
group's ``n`` records with replacement (multinomial counts), pools the drawn
records' observations (a record drawn twice counts twice) and computes the
statistic exactly as for the point estimate.  It is vectorised with numpy over
many groups at once (:class:`_Plan`): each group's draws from its own stream,
one count of them for a batch of groups, the order statistics of every
replicate found block by block in the sorted observations.  A group of
fewer than two records has no interval (NaN): one record resampled is itself,
an interval of zero width that would claim a certainty the data do not give.
The random stream of each group is seeded from ``seed`` and the group's own
key, so a group's interval does not change when other groups are added or
removed.  Percentile intervals need not be symmetric, and with few records a
skewed statistic's interval may even miss its point estimate: read them with
the ``records`` column beside them.

The point metrics are plain group-by aggregations (size, sum, mean, quantile)
over records and over observations — the operations a Dask DataFrame offers as
well; the RTT quantiles of every group are read from the observations sorted by
group and value (the same figures as ``groupby(...).quantile``), one sort that the
bootstrap reads too — and the bootstrap is a separate step (:func:`bootstrap_ci`) over the
per-record table.  Both go a batch of groups at a time (:func:`_summarise`): a batch's
observations are gathered from the frames' columns, sorted and resampled, then dropped,
so memory follows the batch, not the campaign; no figure depends on the batches.
:func:`windowed` gives the same metrics per time window; :func:`phase_metrics` gives one
row per (group, handshake phase).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import NetvantageError
from .codes import give_back, rows_of
from .fastagg import _group_order, row_quantiles
from .frames import Campaign

__all__ = ["BOOTSTRAP_COLUMNS", "DEFAULT_BY", "METRIC_COLUMNS", "MetricsError",
           "bootstrap_ci", "metrics", "phase_metrics", "point_metrics", "rtt_observations",
           "windowed"]

DEFAULT_BY: tuple[str, ...] = ("region", "target", "kind", "port")

#: Point-metric columns of :func:`metrics`, after the group's own columns.
METRIC_COLUMNS = (
    "records", "success_rate", "rtt_samples", "summary_records", "rtt_p50_ms", "rtt_p90_ms",
    "rtt_p95_ms", "rtt_p99_ms", "sent", "lost", "loss_ratio", "jitter_ms", "handshake_p50_ms",
    "handshake_p95_ms",
)
#: Interval columns of :func:`metrics` (and of :func:`bootstrap_ci`).
BOOTSTRAP_COLUMNS = ("rtt_p50_lo", "rtt_p50_hi", "rtt_p95_lo", "rtt_p95_hi", "loss_ratio_lo",
                     "loss_ratio_hi")

_RTT_QUANTILES = {"rtt_p50_ms": 0.50, "rtt_p90_ms": 0.90, "rtt_p95_ms": 0.95,
                  "rtt_p99_ms": 0.99}
_BOOT_QUANTILES = (0.50, 0.95)
_SAMPLED_KINDS = ("ping", "tcp")
# Cells of one bootstrap batch (replicates × (draws, counts, blocks, searched lanes)):
# bounds memory to some tens of MB whatever the groups' sizes.  1M rather than 2M:
# measured 5-10 % less CPU at 1M records (the batch's arrays nearer the cache).
_CHUNK_CELLS = 1_000_000
# Observations and records of one batch of groups (_summarise): bounds the memory of the
# batch's gathered, sorted observations and its records' columns.
_BATCH_OBSERVATIONS = 1 << 18
# Cells of a group-number column counted at a time (_group_sizes).
_SCAN = 1 << 20
# Whole numbers of magnitude below this are exact in float32.
_EXACT_FLOAT32 = 2 ** 24
# Observations per block of the replicates' order statistics (_Plan).
_BLOCK = 32

Frames = Campaign | Mapping[str, pd.DataFrame]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Codes = npt.NDArray[np.signedinteger[Any]]


class MetricsError(NetvantageError, ValueError):
    """Bad arguments to a metric (an unknown column, a level outside (0, 1))."""


# --------------------------------------------------------------------------- entry points


def metrics(data: Frames, *, by: Sequence[str] = DEFAULT_BY, ci: float = 0.95,
            n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Point metrics and bootstrap intervals per group (see the module docstring)."""
    measurements, samples = _frames(data)
    return _with_intervals(measurements, samples, tuple(by), ci, n_boot, seed)


def windowed(data: Frames, freq: str = "5min", *, by: Sequence[str] = DEFAULT_BY,
             ci: float = 0.95, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`metrics` per time window: a ``window`` column (UTC start) after the group's.

    A record belongs to the window its ``started_at`` falls in (windows are
    aligned on multiples of ``freq`` since the epoch, as ``Series.dt.floor``
    does); its samples go with it.  Windows without records have no row.
    """
    measurements, samples = _frames(data)
    _need(measurements, by)
    try:
        window = measurements["started_at"].dt.floor(freq)
    except ValueError as exc:
        raise MetricsError(f"freq {freq!r} is not a fixed time span ({exc})") from None
    return _with_intervals(measurements.assign(window=window), samples, (*by, "window"), ci,
                           n_boot, seed)


def point_metrics(data: Frames, *, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """The point metrics of :func:`metrics` without the intervals (no resampling)."""
    measurements, samples = _frames(data)
    keys, gid = _groups(measurements, tuple(by))
    counts, quantiles, _ = _summarise(measurements, samples, keys, gid, 0.95, 0, 0)
    return _point(measurements, keys, gid, counts, quantiles)


def bootstrap_ci(data: Frames, *, by: Sequence[str] = DEFAULT_BY, ci: float = 0.95,
                 n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The group's columns and :data:`BOOTSTRAP_COLUMNS` only."""
    measurements, samples = _frames(data)
    keys, gid = _groups(measurements, tuple(by))
    _check_level(ci, n_boot)
    _, _, intervals = _summarise(measurements, samples, keys, gid, ci, n_boot, seed)
    boot = pd.DataFrame(intervals, index=keys.index, columns=list(BOOTSTRAP_COLUMNS))
    return pd.concat([keys, boot], axis=1).reset_index(drop=True)


def phase_metrics(data: Frames, *, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """One row per (group, handshake phase) of the smtp/imap records.

    Columns: the group's, ``phase``, ``phases`` (how many records ran it),
    ``ok_rate`` (share that completed), ``duration_p50_ms``, ``duration_p95_ms``
    (over the completed ones; a failed phase has no duration).
    """
    measurements, _ = _frames(data)
    if isinstance(data, Campaign):
        phases = data.phases
    elif "phases" in data:
        phases = data["phases"]
    else:
        raise MetricsError("phase_metrics needs the phases frame")
    by = tuple(by)
    _need(measurements, by)
    # The group's columns come from the record, so any measurement column can group:
    # taken at the phases' record rows when their ids are the loader's codes, else by a
    # merge on the id strings.
    at = _record_rows(phases["id"], measurements["id"]) if "id" not in by else None
    if at is not None:  # (the rows of a merge "inner": the phases' with a record, in order)
        found = np.flatnonzero(at >= 0)
        rows = pd.concat([phases[["phase", "duration_ms", "ok"]].take(found)
                          .reset_index(drop=True),
                          measurements[list(by)].take(at[found]).reset_index(drop=True)],
                         axis=1)
    else:
        rows = phases[["id", "phase", "duration_ms", "ok"]].merge(
            measurements[["id", *by]], on="id", how="inner", validate="many_to_one")
    keys, gid = _groups(rows, (*by, "phase"))
    grouped = rows.groupby(gid.to_numpy(), sort=True)
    out = pd.DataFrame({
        "phases": grouped.size(),
        "ok_rate": grouped["ok"].mean(),
        "duration_p50_ms": grouped["duration_ms"].quantile(0.50),
        "duration_p95_ms": grouped["duration_ms"].quantile(0.95),
    })
    return pd.concat([keys, out.reindex(keys.index)], axis=1).reset_index(drop=True)


def rtt_observations(measurements: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The long table of RTT observations: ``id``, ``rtt_ms`` (NaN rows = lost samples).

    Samples of ping and tcp records; the headline ``rtt_ms`` of the others and of
    summary records (which have no samples).
    """
    sampled = measurements["kind"].isin(_SAMPLED_KINDS) & ~_is_summary(measurements)
    at = _record_rows(samples["id"], measurements["id"])
    if at is None:
        ids = measurements.loc[sampled, "id"]
        from_samples = samples.loc[samples["id"].isin(ids), ["id", "rtt_ms"]]
    else:  # the samples of sampled records, their ids as the records' strings
        keep = at >= 0
        keep[keep] = sampled.to_numpy(dtype=bool)[at[keep]]
        from_samples = pd.DataFrame({"id": measurements["id"].array.take(at[keep]),
                                     "rtt_ms": samples["rtt_ms"].array[keep]})
    from_records = measurements.loc[~sampled, ["id", "rtt_ms"]]
    return pd.concat([from_samples, from_records], ignore_index=True)


def _record_rows(ids: pd.Series, records: pd.Series) -> npt.NDArray[np.int32] | None:
    """A child frame's rows' record rows (-1: none) when its ``ids`` are a Categorical (the
    loader's codes, or their categories looked up: no string per row, and no hash table
    left on the shared categories as ``isin`` or a merge would build); ``None`` for ids
    held as strings or records' ids not distinct (the caller matches the strings)."""
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        return None
    return rows_of(ids, records)


# --------------------------------------------------------------------------- point metrics


def _is_summary(measurements: pd.DataFrame) -> pd.Series:
    """Which records are summaries (all False for frames without the column)."""
    if "summary" not in measurements.columns:
        return pd.Series(False, index=measurements.index)
    return measurements["summary"].fillna(False).astype(bool)


def _counted(measurements: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(sent, received) as Int64, both <NA> where either is unknown (a summary that gives
    one count and not the other says nothing about loss)."""
    sent = measurements["sent"].astype("Int64")
    received = measurements["received"].astype("Int64")
    both = sent.notna() & received.notna()
    return sent.where(both), received.where(both)


def _summary_counts(measurements: pd.DataFrame, g: pd.CategoricalIndex,
                    index: pd.Index) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per group: summary records with an RTT figure, the samples they declare
    (known ones summed), and whether any of them does not say."""
    figure = _is_summary(measurements) & measurements["rtt_ms"].notna()
    if "rtt_samples" in measurements.columns:
        declared = measurements["rtt_samples"].astype("Int64")
    else:
        declared = pd.Series(pd.NA, index=measurements.index, dtype="Int64")
    per = pd.DataFrame({
        "n": figure.to_numpy(dtype=np.int64),
        "samples": declared.where(figure, 0).fillna(0).to_numpy(dtype=np.int64),
        "unknown": (figure & declared.isna()).to_numpy(dtype=bool),
    }).groupby(g, observed=False, sort=True)  # every group, in order: as ``index``
    return (per["n"].sum().set_axis(index), per["samples"].sum().set_axis(index),
            per["unknown"].any().set_axis(index))


def _frames(data: Frames) -> tuple[pd.DataFrame, pd.DataFrame]:
    if isinstance(data, Campaign):
        return data.measurements, data.samples
    try:
        return data["measurements"], data["samples"]
    except KeyError as exc:
        raise MetricsError(f"metrics need the measurements and samples frames; "
                           f"missing {exc}") from None


def _need(frame: pd.DataFrame, by: Sequence[str]) -> None:
    missing = [c for c in by if c not in frame.columns]
    if missing:
        raise MetricsError(f"cannot group by {missing}: not columns of the frame "
                           f"(columns: {', '.join(map(str, frame.columns))})")


def _groups(frame: pd.DataFrame, by: tuple[str, ...]) -> tuple[pd.DataFrame, pd.Series]:
    """(the groups' key columns indexed by group number, each row's group number).

    Numbering the groups once lets every later step group by one integer,
    whatever the key columns hold (a missing region or port is a group of its own).
    """
    _need(frame, by)
    if not by:
        zeros = pd.Series(np.zeros(len(frame), dtype=np.int64), index=frame.index)
        return pd.DataFrame(index=pd.RangeIndex(1 if len(frame) else 0)), zeros
    gid = frame.groupby(list(by), observed=True, dropna=False, sort=True).ngroup()
    first = ~gid.duplicated()
    keys = frame.loc[first, list(by)].set_axis(gid[first].to_numpy()).sort_index()
    return keys, gid.astype(np.int64)


def _point(measurements: pd.DataFrame, keys: pd.DataFrame, gid: pd.Series,
           observed_counts: IntArray, quantiles: FloatArray) -> pd.DataFrame:
    """The point metrics, given each group's received observations and their RTT
    quantiles (groups × :data:`_RTT_QUANTILES`, from :func:`_summarise`)."""
    # The group numbers (0 … groups - 1, each with records) as a Categorical's codes:
    # pandas groups by those as they are, where it hashes an integer key first (at 1M
    # records some 40 MiB of temporaries for each group-by).
    g = pd.CategoricalIndex(pd.Categorical.from_codes(
        gid.to_numpy(dtype=_code(len(keys))), categories=pd.RangeIndex(len(keys))))
    per = measurements.groupby(g, observed=True, sort=True)
    counted_sent, counted_received = _counted(measurements)
    sent = counted_sent.groupby(g, observed=True, sort=True).sum(min_count=1).astype("Int64")
    received = counted_received.groupby(g, observed=True, sort=True).sum(
        min_count=1).astype("Int64")
    del counted_sent, counted_received
    lost = sent - received
    records = per.size()
    out = pd.DataFrame({
        "records": records.astype(np.int64),
        "success_rate": per["ok"].sum() / records,
    })
    observed = pd.Series(observed_counts, index=out.index)
    # A summary record is one observation standing for its declared samples.
    n_summary, declared, unknown = _summary_counts(measurements, g, out.index)
    rtt_samples = (observed - n_summary + declared).astype("Int64")
    out["rtt_samples"] = rtt_samples.mask(unknown.to_numpy(dtype=bool))
    out["summary_records"] = n_summary.astype(np.int64)
    for j, column in enumerate(_RTT_QUANTILES):
        out[column] = quantiles[:, j]
    out["sent"] = sent
    out["lost"] = lost
    ratio = lost.astype("Float64") / sent.astype("Float64").where(sent > 0)
    out["loss_ratio"] = ratio.astype(np.float64)
    out["jitter_ms"] = per["jitter_ms"].mean()
    # Over the records that have a handshake only (a quantile skips NaN: the same
    # figures), a group without one NaN (every group kept: ``observed=False``): the
    # group-by's sort of every record took some 40 MiB of temporaries at 1M records.
    timed = measurements["handshake_ms"].notna().to_numpy(dtype=bool)
    handshakes = measurements.loc[timed, "handshake_ms"].groupby(g[timed], observed=False,
                                                                 sort=True)
    for column, q in (("handshake_p50_ms", 0.50), ("handshake_p95_ms", 0.95)):
        # By position: the groups in the categories' order, as ``out``'s rows (reindexing
        # a CategoricalIndex by another whose codes have another width fails in pandas).
        out[column] = handshakes.quantile(q).to_numpy(dtype=np.float64)
    return pd.concat([keys, out.set_axis(keys.index)], axis=1).reset_index(drop=True)


def _code(n_groups: int) -> type[np.signedinteger[Any]]:
    """The narrowest integer type for group numbers 0 … ``n_groups`` - 1 and -1 (none)."""
    return np.int16 if n_groups < np.iinfo(np.int16).max else np.int32


class _Observations:
    """Where the received RTT observations of :func:`rtt_observations` are, and the group
    of each, without copying them: the samples' RTTs (ping and tcp records but summaries)
    and the other records' headline ``rtt_ms``, read in place from the frames' columns.

    Each observation's group number is kept in the narrowest integer that holds it (-1:
    no observation: a lost sample, a sample of a record measured otherwise, a record
    whose RTT is in its samples).  :meth:`take` gathers the observations of a range of
    groups, so that the observations of a campaign are never copied all at once (at 1M
    records they were 4.7M values and record rows, 57 MiB, and their sort as much again
    in temporaries).
    """

    def __init__(self, measurements: pd.DataFrame, samples: pd.DataFrame, g: IntArray,
                 n_groups: int) -> None:
        sampled = (measurements["kind"].isin(_SAMPLED_KINDS)
                   & ~_is_summary(measurements)).to_numpy(dtype=bool)
        row = rows_of(samples["id"], measurements["id"])
        if row is None:
            raise MetricsError("record ids are not unique: samples cannot be told apart")
        self.sample_values = samples["rtt_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
        self.record_values = measurements["rtt_ms"].to_numpy(dtype=np.float64,
                                                             na_value=np.nan)
        self.sample_record = row
        # int16 halves the group numbers' memory and scans for up to 32,766 groups.
        code = _code(n_groups)
        # The group of each sampled record, and a last cell for the samples whose id is
        # no record's (row -1 reads it).
        of_record = np.full(len(g) + 1, -1, dtype=code)
        of_record[:-1][sampled] = g[sampled]
        self.sample_group: Codes = np.asarray(of_record[row])
        del of_record
        self.sample_group[np.isnan(self.sample_values)] = -1
        headline = ~sampled & ~np.isnan(self.record_values)
        self.record_group: Codes = np.full(len(g), -1, dtype=code)
        self.record_group[headline] = g[headline]
        #: Received observations per group.
        self.counts = (_group_sizes(self.sample_group, n_groups)
                       + _group_sizes(self.record_group, n_groups))
        self.n_groups = n_groups

    def take(self, g0: int, g1: int) -> tuple[FloatArray, IntArray, IntArray]:
        """The observations of groups ``g0`` … ``g1 - 1``: (values, their records' rows
        among the measurements, their groups less ``g0``), in no particular order."""
        whole = g0 == 0 and g1 == self.n_groups
        values, rows, groups = [], [], []
        for group, source, record in ((self.sample_group, self.sample_values,
                                       self.sample_record),
                                      (self.record_group, self.record_values, None)):
            inside = group >= g0
            if not whole:
                inside &= group < g1
            at = np.flatnonzero(inside)
            del inside
            values.append(source[at])
            rows.append(np.asarray(record[at] if record is not None else at, dtype=np.int64))
            groups.append(group[at].astype(np.int64) - g0)
        return np.concatenate(values), np.concatenate(rows), np.concatenate(groups)


def _group_sizes(group: Codes, n_groups: int) -> IntArray:
    """How many of ``group``'s cells hold each group number (-1 left out), counted a
    slice at a time: ``bincount`` copies its input to int64 first."""
    counts = np.zeros(n_groups + 1, dtype=np.int64)
    for start in range(0, len(group), _SCAN):
        counts += np.bincount(group[start:start + _SCAN].astype(np.int64) + 1,
                              minlength=n_groups + 1)
    return counts[1:]


class _Sorted(NamedTuple):
    """The received observations ordered by group, ascending value within one (a lost
    sample, NaN, is left out): what both the point percentiles and the bootstrap's order
    statistics read.  Group ``i`` is ``values[starts[i]:starts[i] + counts[i]]``."""

    values: FloatArray
    record: npt.NDArray[np.int32]
    counts: IntArray
    starts: IntArray

    def quantiles(self, qs: Sequence[float]) -> FloatArray:
        """Each group's quantiles (groups × ``qs``), linear interpolation between order
        statistics ("type 7": numpy's and pandas' default), NaN for a group without a
        received value: the arithmetic of :func:`fastagg.sample_quantiles`, on every
        group at once."""
        out = np.full((len(self.counts), len(qs)), np.nan)
        present = np.flatnonzero(self.counts)
        n = self.counts[present][:, np.newaxis]
        start = self.starts[present][:, np.newaxis]
        position = np.asarray(qs, dtype=np.float64) * (n - 1)
        low = np.floor(position).astype(np.int64)
        below = self.values[start + low]
        above = self.values[start + np.minimum(low + 1, n - 1)]
        out[present] = below + (above - below) * (position - low)
        return out


def _sorted(values: FloatArray, groups: IntArray, records: npt.NDArray[np.int32],
            n_groups: int) -> _Sorted:
    """The observations ``values`` of groups ``groups`` (0 … ``n_groups`` - 1) as
    :class:`_Sorted`, ``records`` their records' positions in their group: sorted by
    value, then stably by group with a counting sort (twice as fast as a lexsort of
    both).  Tied values may come in any order: order statistics are values, the same
    whatever it."""
    by_value = np.argsort(values)
    by_group, counts = _group_order(groups[by_value], n_groups)
    kept = by_value[by_group]
    del by_value, by_group
    return _Sorted(values[kept], records[kept], counts, np.cumsum(counts) - counts)


class _Records(NamedTuple):
    """The records by group (stably: in their frame order within a group): group ``i``'s
    are ``bounds[i]`` … ``bounds[i] + sizes[i] - 1`` in that order; ``position``: each
    record's place in its group."""

    bounds: IntArray
    sizes: IntArray
    position: npt.NDArray[np.int32]


def _records(g: IntArray, n_groups: int) -> tuple[IntArray, _Records]:
    """(the records' rows by group, :class:`_Records`)."""
    order = np.argsort(g, kind="stable")
    sizes = np.bincount(g, minlength=n_groups).astype(np.int64)
    bounds = np.cumsum(sizes) - sizes
    position = np.empty(len(g), dtype=np.int32)
    # int32 throughout (no frame holds 2**31 records): half the temporaries.
    position[order] = (np.arange(len(g), dtype=np.int32)
                       - np.repeat(bounds.astype(np.int32), sizes))
    return order, _Records(bounds, sizes, position)


def _probes(measurements: pd.DataFrame, order: IntArray
            ) -> tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]]:
    """Each record's probes sent and lost, the records in ``order``: the counts of
    :func:`_counted`, 0 where unknown, in float32 when every figure is exact in it (whole
    numbers below 2**24: half the memory through the batches), else in float64.

    One column at a time, as floats (whole numbers below 2**53, exact): :func:`_counted`'s
    masked columns took some 40 MiB of temporaries at 1M records."""
    def counts(column: str) -> FloatArray:
        values = measurements[column]
        if not isinstance(values.dtype, pd.Int64Dtype):
            values = values.astype("Int64")
        return values.to_numpy(dtype=np.float64, na_value=np.nan)[order]

    sent = counts("sent")
    lost = counts("received")
    unknown = np.isnan(sent)
    unknown |= np.isnan(lost)
    np.subtract(sent, lost, out=lost)
    sent[unknown] = 0.0
    lost[unknown] = 0.0
    del unknown
    if not len(sent) or max(np.abs(sent).max(), np.abs(lost).max()) < _EXACT_FLOAT32:
        return sent.astype(np.float32), lost.astype(np.float32)
    return sent, lost


def _batches(weights: IntArray, limit: int) -> Iterator[tuple[int, int]]:
    """Ranges ``(g0, g1)`` of consecutive groups whose ``weights`` add up to at most
    ``limit`` (a group weighing more alone)."""
    ends = np.cumsum(weights)
    g0 = 0
    while g0 < len(weights):
        base = int(ends[g0 - 1]) if g0 else 0
        g1 = max(g0 + 1, int(np.searchsorted(ends, base + limit, side="right")))
        yield g0, g1
        g0 = g1


def _summarise(measurements: pd.DataFrame, samples: pd.DataFrame, keys: pd.DataFrame,
               gid: pd.Series, ci: float, n_boot: int, seed: int
               ) -> tuple[IntArray, FloatArray, FloatArray]:
    """(each group's received observations, its RTT quantiles: groups ×
    :data:`_RTT_QUANTILES`, its intervals: groups × :data:`BOOTSTRAP_COLUMNS`, NaN when
    ``n_boot`` is 0).

    The groups are taken a batch at a time, about :data:`_BATCH_OBSERVATIONS`
    observations and records each: the batch's observations are gathered and sorted,
    its percentiles read and its replicates drawn (each group from its own stream, so
    the batches change no figure), and the batch's arrays dropped before the next.
    """
    n_groups = len(keys)
    g = gid.to_numpy(dtype=np.int64)
    quantiles = np.full((n_groups, len(_RTT_QUANTILES)), np.nan)
    intervals = np.full((n_groups, len(BOOTSTRAP_COLUMNS)), np.nan)
    # The observations first: the look-up of the samples' records takes Arrow's memory,
    # which does not reuse the C heap's freed pages (measured at 1M records: 151 MiB at
    # its peak when it comes first, 182 MiB after the records' columns).
    observations = _Observations(measurements, samples, g, n_groups)
    give_back()  # the look-up's and the masks' freed memory
    order, records = _records(g, n_groups)
    # As before the batches: no intervals without key columns either (``keys.empty``).
    boot = n_boot > 0 and not keys.empty
    if boot:
        sent, lost = _probes(measurements, order)
        hashes = _key_hashes(keys)
    del order
    give_back()  # the temporaries of the records' columns, before the batches
    qs = tuple(_RTT_QUANTILES.values())
    for g0, g1 in _batches(observations.counts + records.sizes, _BATCH_OBSERVATIONS):
        values, rows, groups = observations.take(g0, g1)
        ordered = _sorted(values, groups, records.position[rows], g1 - g0)
        del values, rows, groups
        quantiles[g0:g1] = ordered.quantiles(qs)
        if boot:
            first = int(records.bounds[g0])
            last = int(records.bounds[g1 - 1] + records.sizes[g1 - 1])
            intervals[g0:g1] = _intervals(
                ordered, records.bounds[g0:g1] - first, records.sizes[g0:g1],
                sent[first:last].astype(np.float64), lost[first:last].astype(np.float64),
                hashes[g0:g1], ci, n_boot, seed)
    counts = observations.counts
    del observations, records
    give_back()
    return counts, quantiles, intervals


def _with_intervals(measurements: pd.DataFrame, samples: pd.DataFrame, by: tuple[str, ...],
                    ci: float, n_boot: int, seed: int) -> pd.DataFrame:
    _check_level(ci, n_boot)
    keys, gid = _groups(measurements, by)
    counts, quantiles, intervals = _summarise(measurements, samples, keys, gid, ci, n_boot,
                                              seed)
    point = _point(measurements, keys, gid, counts, quantiles)
    boot = pd.DataFrame(intervals, columns=list(BOOTSTRAP_COLUMNS))
    return pd.concat([point, boot], axis=1)


def _check_level(ci: float, n_boot: int) -> None:
    if not 0 < ci < 1:
        raise MetricsError(f"ci is a confidence level between 0 and 1 (e.g. 0.95), not {ci}")
    if n_boot < 0:
        raise MetricsError(f"n_boot is a number of replicates (0 for none), not {n_boot}")


# --------------------------------------------------------------------------- bootstrap


def _intervals(ordered: _Sorted, rec_bounds: IntArray, n_records: IntArray, sent: FloatArray,
               lost: FloatArray, hashes: list[int], ci: float, n_boot: int, seed: int
               ) -> FloatArray:
    """The intervals (groups × :data:`BOOTSTRAP_COLUMNS`) of the groups of ``ordered``:
    their records are ``rec_bounds``/``n_records`` into ``sent`` and ``lost``, grouped."""
    result = np.full((len(n_records), len(BOOTSTRAP_COLUMNS)), np.nan)
    obs_v, obs_r, n_obs, obs_bounds = ordered
    # Per record (in group order): probes sent, lost, and observations kept.
    per_record = np.column_stack([
        sent, lost,
        np.bincount(np.repeat(rec_bounds, n_obs) + obs_r,
                    minlength=len(sent)).astype(np.float64)])
    plan = _Plan(n_boot, seed, hashes, rec_bounds, n_records, obs_bounds, n_obs,
                 per_record, obs_r, obs_v)
    alpha = 1 - ci
    levels = (alpha / 2, 1 - alpha / 2)
    for numbers, replicates in plan.run():
        # in BOOTSTRAP_COLUMNS order: p50, p95, loss (each lo/hi)
        result[numbers] = row_quantiles(
            replicates.reshape(-1, n_boot), levels).reshape(len(numbers), 6)
    return result


def _key_hashes(keys: pd.DataFrame) -> list[int]:
    """Each group's stream key: the CRC-32 of its key values written as text."""
    return [_key_hash(tuple(row)) for row in keys.itertuples(index=False)]


def _key_hash(key: tuple[Any, ...]) -> int:
    return zlib.crc32("\x1f".join(map(str, key)).encode("utf-8"))


class _Unit(NamedTuple):
    """Replicates ``start`` … ``start + size - 1`` of the group at position ``group``."""

    group: int
    start: int
    size: int


class _Plan:
    """The bootstrap replicates of every group of two records or more, computed batch by
    batch: each batch holds many groups (or a part of one large group's replicates), and
    every step but drawing (each group's own stream) and one matrix product per group is
    one numpy operation over the whole batch.

    A replicate draws the group's ``n`` records with replacement (uniform indices, as
    ``rng.integers(0, n)`` gives them, counted per record: the multinomial counts) and
    pools the drawn records' observations.  Its loss ratio is the drawn records' lost
    over sent probes; its RTT quantiles are order statistics of the pooled observations.
    Observation j of the group's sorted list appears counts[rec[j]] times in the
    replicate; the k-th (0-based) value of the pooled replicate is the first
    observation whose cumulative weight exceeds k.  The sorted observations are cut into
    blocks of :data:`_BLOCK`: one matrix product per group gives each replicate's
    weight before each block (draw counts × each record's observations in the earlier
    blocks, exact integers in float64), which tells the block holding rank k, and only
    that block's :data:`_BLOCK` weights are summed.

    Per group the arithmetic is that of the point estimate (type-7 interpolation between
    the two order statistics), the sums are of whole numbers (exact in any order), and
    the draws are those of the group's stream in replicate order, however the group's
    replicates are cut in batches: the replicates do not depend on the batching.
    """

    def __init__(self, n_boot: int, seed: int, hashes: list[int], rec_bounds: IntArray,
                 n_records: IntArray, obs_bounds: IntArray, n_obs: IntArray,
                 per_record: FloatArray, obs_rec: npt.NDArray[np.int32],
                 obs_v: FloatArray) -> None:
        self.n_boot, self.seed, self.hashes = n_boot, seed, hashes
        self.rec_bounds, self.n_records = rec_bounds.tolist(), n_records.tolist()
        self.obs_bounds, self.n_obs = obs_bounds.tolist(), n_obs.tolist()
        self.n_blocks = np.maximum(1, -(-n_obs // _BLOCK)).tolist()
        self.per_record, self.obs_rec, self.obs_v = per_record, obs_rec, obs_v
        # Groups whose every count, product and sum is a whole number below 2**24: exact
        # in float32 (in any order of summation), and so the same as in float64.  A
        # replicate's sum of a column is at most n × the column's largest magnitude.
        largest = (np.maximum.reduceat(np.abs(per_record).max(axis=1), rec_bounds)
                   if len(per_record) else np.zeros(len(n_records)))
        self.narrow = (n_records * largest < _EXACT_FLOAT32).tolist()
        self.levels = np.asarray(_BOOT_QUANTILES)[:, np.newaxis]
        self._rng: np.random.Generator | None = None
        self._matrix_of: tuple[int, npt.NDArray[Any], IntArray] | None = None

    def run(self) -> Iterator[tuple[IntArray, FloatArray]]:
        """(group positions, their replicates: groups × (p50, p95, loss) × n_boot), for the
        groups completed by each batch."""
        pending: dict[int, FloatArray] = {}
        for batch in self._batches():
            for unit in batch:
                if unit.start == 0:
                    pending[unit.group] = np.full((3, self.n_boot), np.nan)
            rtt, loss = self._replicates(batch)
            done = []
            row = 0
            for unit in batch:
                out = pending[unit.group]
                stop = unit.start + unit.size
                out[0:2, unit.start:stop] = rtt[:, row:row + unit.size]
                out[2, unit.start:stop] = loss[row:row + unit.size]
                row += unit.size
                if stop == self.n_boot:
                    done.append(unit.group)
            if done:  # none when the batch is a part of a large group's replicates
                yield (np.asarray(done, dtype=np.int64),
                       np.stack([pending.pop(i) for i in done]))

    def _batches(self) -> Iterator[list[_Unit]]:
        """Units of at most about :data:`_CHUNK_CELLS` cells each, batched up to as many:
        groups in order of their number of observations, so that a batch's rows have about
        as many blocks (the block search runs over the batch's widest)."""
        eligible = [i for i, n in enumerate(self.n_records) if n >= 2]
        eligible.sort(key=self.n_obs.__getitem__)
        batch: list[_Unit] = []
        cells = 0
        for i in eligible:
            width = self._width(i)
            rows = max(1, _CHUNK_CELLS // width)
            for start in range(0, self.n_boot, rows):
                size = min(rows, self.n_boot - start)
                if batch and cells + size * width > _CHUNK_CELLS:
                    yield batch
                    batch, cells = [], 0
                batch.append(_Unit(i, start, size))
                cells += size * width
        if batch:
            yield batch

    def _width(self, i: int) -> int:
        """Cells per replicate: draws, counts, block weights and the searched blocks."""
        return int(2 * self.n_records[i] + 2 + self.n_blocks[i] + 2 * _BLOCK)

    def _matrix(self, i: int, dtype: type[np.floating[Any]]
                ) -> tuple[npt.NDArray[Any], IntArray]:
        """The group's (records × (sent, lost, observations, observations before each
        block but the first)) in ``dtype`` and its blocks' records (blocks ×
        :data:`_BLOCK`, padded with record n, whose count is always 0)."""
        if (self._matrix_of is not None and self._matrix_of[0] == i
                and self._matrix_of[1].dtype == dtype):
            return self._matrix_of[1], self._matrix_of[2]
        n, m, nb = self.n_records[i], self.n_obs[i], self.n_blocks[i]
        rec = self.obs_rec[self.obs_bounds[i]:self.obs_bounds[i] + m].astype(np.int64)
        matrix = np.empty((n, 2 + nb), dtype=dtype)
        matrix[:, :3] = self.per_record[self.rec_bounds[i]:self.rec_bounds[i] + n]
        if nb > 1:
            per_block = np.bincount(rec * nb + np.arange(m) // _BLOCK,
                                    minlength=n * nb).reshape(n, nb)
            matrix[:, 3:] = np.cumsum(per_block[:, :-1], axis=1)  # exact: whole numbers
        cells = np.full(nb * _BLOCK, n, dtype=np.int64)
        cells[:m] = rec
        self._matrix_of = (i, matrix, cells)
        return matrix, cells

    def _replicates(self, batch: list[_Unit]) -> tuple[FloatArray, FloatArray]:
        """The batch's replicates, row after row in the units' order: ((p50, p95) × rows,
        loss ratio per row)."""
        sizes = np.array([u.size for u in batch], dtype=np.int64)
        n = np.array([self.n_records[u.group] for u in batch], dtype=np.int64)
        nb = np.array([self.n_blocks[u.group] for u in batch], dtype=np.int64)
        rows = int(sizes.sum())
        unit_of = np.repeat(np.arange(len(batch)), sizes)
        row_in_unit = np.arange(rows) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        # Each row's draw counts: n + 1 cells, the last one always 0 (the blocks' padding).
        unit_cells = sizes * (n + 1)
        cell_start = (np.repeat(np.cumsum(unit_cells) - unit_cells, sizes)
                      + row_in_unit * (n + 1)[unit_of])
        # Counts, products and running sums in float32 when they are exact in it (half
        # the memory traffic, a faster product), else in float64.
        dtype = np.float32 if all(self.narrow[u.group] for u in batch) else np.float64
        weights = np.empty(int(unit_cells.sum()), dtype=dtype)
        at = 0
        for unit, k in zip(batch, n.tolist(), strict=True):
            if unit.start == 0:
                self._rng = np.random.default_rng([self.seed, self.hashes[unit.group]])
            assert self._rng is not None
            # The same values as int64 draws from the same stream, in half the memory.
            drawn = self._rng.integers(0, k, size=(unit.size, k), dtype=np.int32)
            # Counted unit by unit: the unit's counts stay in the cache (measured 3.7 times
            # faster than one count of the whole batch's draws).
            place = drawn + (np.arange(unit.size, dtype=np.int64) * (k + 1))[:, np.newaxis]
            cells = unit.size * (k + 1)
            weights[at:at + cells] = np.bincount(place.ravel(), minlength=cells)
            at += cells

        # Per row: probes sent, lost, observations, and the weight before each block
        # (block × row, so that the block search runs along rows; past the row's last
        # block: +inf, never at or below a rank).
        sums = np.empty((rows, 3), dtype=np.float64)
        before = np.full((int(nb.max()) + 1, rows), np.inf)
        before[0] = 0.0
        first = np.empty(rows, dtype=np.int64)  # each row's first padded cell
        tables = []
        cells_at, at, row = 0, 0, 0
        for unit, k, blocks in zip(batch, n.tolist(), nb.tolist(), strict=True):
            matrix, cells = self._matrix(unit.group, dtype)
            counts = weights[at:at + unit.size * (k + 1)].reshape(unit.size, k + 1)[:, :k]
            product = _product(counts, matrix)
            sums[row:row + unit.size] = product[:, :3]
            before[1:blocks, row:row + unit.size] = product[:, 3:].T
            first[row:row + unit.size] = cells_at
            tables.append(cells)
            cells_at += len(cells)
            at += unit.size * (k + 1)
            row += unit.size
        total = sums[:, 2].astype(np.int64)
        before[nb[unit_of], np.arange(rows)] = sums[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = np.where(sums[:, 0] > 0, sums[:, 1] / sums[:, 0], np.nan)
        rtt = np.full((len(_BOOT_QUANTILES), rows), np.nan)
        if len(self.obs_v) == 0:
            return rtt, loss

        table = np.concatenate(tables)
        m_row = np.array([self.n_obs[u.group] for u in batch], dtype=np.int64)[unit_of]
        obs_first = np.array([self.obs_bounds[u.group] for u in batch],
                             dtype=np.int64)[unit_of]
        nb_row = nb[unit_of]
        # Rows of one block: every block of a group of several, the observations of the
        # batch's largest group when each of its groups fits in one.
        lanes = np.arange(_BLOCK if nb.max() > 1 else max(1, int(m_row.max())))[:, np.newaxis]
        last = len(self.obs_v) - 1
        # The counts of blocks and lanes at or below a rank are summed in the narrowest
        # integer that holds them (int8 for up to 127): the sums cast their booleans to
        # it, several times faster than to int64.
        block_count = _counter(int(nb.max()) + 1)

        def locate(rank: IntArray, which: IntArray | slice
                   ) -> tuple[IntArray, FloatArray, FloatArray]:
            """(block holding each rank, the rank within it, the block's running weights:
            lanes × rows, a running sum down the columns)."""
            edges = before[:, which]
            block = np.clip((edges <= rank).sum(axis=0, dtype=block_count) - 1, 0,
                            nb_row[which] - 1)
            rest = rank - edges[block, np.arange(len(block))]
            places = np.take(table, first[which] + block * _BLOCK + lanes)
            places += cell_start[which]
            running = np.take(weights, places)
            # Row after row: numpy's cumsum down axis 0 walks each column on its own, a
            # few times slower for these short columns.
            for lane in range(1, len(running)):
                np.add(running[lane], running[lane - 1], out=running[lane])
            return block, rest, running

        def position(block: IntArray, rest: FloatArray, running: FloatArray,
                     which: IntArray | slice) -> IntArray:
            """Index in ``obs_v`` of each rank's observation (clipped where a replicate has
            none: its result is not used)."""
            # The rank in the weights' dtype: a whole number exact in it (float32 only
            # where every weight sum is below 2**24), so the comparison does not cast
            # the lanes × rows weights to float64.
            inside = (running <= rest.astype(running.dtype)).sum(
                axis=0, dtype=_counter(len(running)))
            found = obs_first[which] + np.clip(block * _BLOCK + inside, 0, m_row[which] - 1)
            return np.asarray(np.clip(found, 0, last), dtype=np.int64)

        h = (total - 1) * self.levels
        below = np.floor(h).astype(np.int64)
        frac = h - below
        above = np.minimum(below + 1, total - 1)
        every = slice(None)
        single = locate(np.zeros(rows, dtype=np.int64), every) if nb.max() == 1 else None
        for q in range(len(_BOOT_QUANTILES)):
            # The two order statistics are next to each other: the block of the lower
            # one mostly holds the upper one too, whose position comes from the same
            # running weights; the others search again.
            if single is None:
                block, rest, running = locate(below[q], every)
            else:  # one block per group: the same running weights for every rank
                block, rest, running = single[0], below[q].astype(np.float64), single[2]
            lo = position(block, rest, running, every)
            rest_above = rest + (above[q] - below[q])
            hi = position(block, rest_above, running, every)
            later = np.flatnonzero(rest_above >= running[-1])
            if len(later):
                hi[later] = position(*locate(above[q][later], later), later)
            est = self.obs_v[lo] + frac[q] * (self.obs_v[hi] - self.obs_v[lo])
            rtt[q] = np.where(total > 0, est, np.nan)
        return rtt, loss


_COUNTERS: tuple[tuple[int, type[np.signedinteger[Any]]], ...] = (
    (2**7 - 1, np.int8), (2**15 - 1, np.int16), (2**31 - 1, np.int32))


def _counter(largest: int) -> type[np.signedinteger[Any]]:
    """The narrowest signed integer type holding ``largest``."""
    for top, kind in _COUNTERS:
        if largest <= top:
            return kind
    return np.int64


def _product(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``a @ b`` in slices of rows small enough for OpenBLAS to compute each on the calling
    thread: a product of more than about 2**18 multiply-adds starts its thread pool, which
    for products this small costs more than it gives (measured 1.6 ms instead of 38 µs
    for 500 × 60 @ 60 × 32 on a loaded 2-CPU machine)."""
    rows = max(1, (1 << 18) // max(1, a.shape[1] * b.shape[1]))
    if len(a) <= rows:
        return np.asarray(a @ b)
    return np.concatenate([a[i:i + rows] @ b for i in range(0, len(a), rows)])
