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
statistic exactly as for the point estimate.  It is vectorised with numpy:
replicate weights of the sorted observations, their cumulative sums, and the
order statistics found by one binary search over all replicates.  A group of
fewer than two records has no interval (NaN): one record resampled is itself,
an interval of zero width that would claim a certainty the data do not give.
The random stream of each group is seeded from ``seed`` and the group's own
key, so a group's interval does not change when other groups are added or
removed.  Percentile intervals need not be symmetric, and with few records a
skewed statistic's interval may even miss its point estimate: read them with
the ``records`` column beside them.

The point metrics are plain group-by aggregations (size, sum, mean, quantile)
over records and over observations — the operations a Dask DataFrame offers as
well; the RTT quantiles of every group come from one vectorised pass
(:func:`netvantage.analysis.fastagg.sample_quantiles`, the same figures as
``groupby(...).quantile``) — and the bootstrap is a separate step (:func:`bootstrap_ci`) over the
per-record table.  :func:`windowed` gives the same metrics per time window;
:func:`phase_metrics` gives one row per (group, handshake phase).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import NetvantageError
from .codes import distinct, rows_of
from .fastagg import quantile_column, row_quantiles, sample_quantiles
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
# Cells of one bootstrap chunk (replicates × observations): bounds memory to a
# few tens of MB whatever the group's size.
_CHUNK_CELLS = 2_000_000
# Observations per block of the replicates' order statistics (_Blocks).
_BLOCK = 32
# Groups of at most this many observations take one running sum over all of them.
_FLAT_LIMIT = 128

Frames = Campaign | Mapping[str, pd.DataFrame]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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
    return _point(measurements, samples, keys, gid)


def bootstrap_ci(data: Frames, *, by: Sequence[str] = DEFAULT_BY, ci: float = 0.95,
                 n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The group's columns and :data:`BOOTSTRAP_COLUMNS` only."""
    measurements, samples = _frames(data)
    keys, gid = _groups(measurements, tuple(by))
    _check_level(ci, n_boot)
    boot = _bootstrap(measurements, samples, keys, gid, ci, n_boot, seed)
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
    # The group's columns come from the record, so any measurement column can group.
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
    ids = measurements.loc[sampled, "id"]
    from_samples = samples.loc[samples["id"].isin(ids), ["id", "rtt_ms"]]
    from_records = measurements.loc[~sampled, ["id", "rtt_ms"]]
    return pd.concat([from_samples, from_records], ignore_index=True)


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


def _summary_counts(measurements: pd.DataFrame, g: npt.NDArray[Any],
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
    }).groupby(g, sort=True)
    return (per["n"].sum().reindex(index, fill_value=0),
            per["samples"].sum().reindex(index, fill_value=0),
            per["unknown"].any().reindex(index, fill_value=False))


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


def _point(measurements: pd.DataFrame, samples: pd.DataFrame, keys: pd.DataFrame,
           gid: pd.Series, obs: pd.DataFrame | None = None) -> pd.DataFrame:
    g = gid.to_numpy()
    per = measurements.groupby(g, sort=True)
    counted_sent, counted_received = _counted(measurements)
    sent = counted_sent.groupby(g, sort=True).sum(min_count=1).astype("Int64")
    received = counted_received.groupby(g, sort=True).sum(min_count=1).astype("Int64")
    lost = sent - received
    records = per.size()
    out = pd.DataFrame({
        "records": records.astype(np.int64),
        "success_rate": per["ok"].sum() / records,
    })
    if obs is None:
        obs = _observations(measurements, samples, gid)
    # One vectorised pass for every group's count and exact quantiles (fastagg: the same
    # figures as groupby(...).quantile, without a Python call per group).
    stats = sample_quantiles(obs, by=["_g"], qs=tuple(_RTT_QUANTILES.values())).set_index("_g")
    observed = (stats["count"] - stats["lost"]).reindex(out.index, fill_value=0)
    # A summary record is one observation standing for its declared samples.
    n_summary, declared, unknown = _summary_counts(measurements, g, out.index)
    rtt_samples = (observed - n_summary + declared).astype("Int64")
    out["rtt_samples"] = rtt_samples.mask(unknown.to_numpy(dtype=bool))
    out["summary_records"] = n_summary.astype(np.int64)
    for column, q in _RTT_QUANTILES.items():
        out[column] = stats[quantile_column(q)].reindex(out.index).astype(np.float64)
    out["sent"] = sent
    out["lost"] = lost
    ratio = lost.astype("Float64") / sent.astype("Float64").where(sent > 0)
    out["loss_ratio"] = ratio.astype(np.float64)
    out["jitter_ms"] = per["jitter_ms"].mean()
    out["handshake_p50_ms"] = per["handshake_ms"].quantile(0.50)
    out["handshake_p95_ms"] = per["handshake_ms"].quantile(0.95)
    return pd.concat([keys, out.reindex(keys.index)], axis=1).reset_index(drop=True)


def _observations(measurements: pd.DataFrame, samples: pd.DataFrame,
                  gid: pd.Series) -> pd.DataFrame:
    """The observations of :func:`rtt_observations` (``rtt_ms``, NaN = lost) with their
    record's group number ``_g`` and position in the group ``_r``.

    The samples find their record by one lookup of their ids in the records' (a record
    position per sample), not by a merge on the id strings.
    """
    sampled = (measurements["kind"].isin(_SAMPLED_KINDS)
               & ~_is_summary(measurements)).to_numpy(dtype=bool)
    if not distinct(measurements["id"]):
        raise MetricsError("record ids are not unique: samples cannot be told apart")
    row = np.asarray(rows_of(samples["id"], measurements["id"]), dtype=np.int64)
    known = row >= 0
    known[known] = sampled[row[known]]
    rows = np.concatenate([row[known], np.flatnonzero(~sampled)])
    values = np.concatenate([
        samples["rtt_ms"].to_numpy(dtype=np.float64, na_value=np.nan)[known],
        measurements["rtt_ms"].to_numpy(dtype=np.float64, na_value=np.nan)[~sampled]])
    g = gid.to_numpy(dtype=np.int64)
    return pd.DataFrame({"rtt_ms": values, "_g": g[rows], "_r": _positions(g)[rows]})


def _positions(g: IntArray) -> IntArray:
    """Each row's position among the rows of its group, in frame order (a cumcount)."""
    order = np.argsort(g, kind="stable")
    ordered = g[order]
    first = np.searchsorted(ordered, ordered, side="left")
    out = np.empty(len(g), dtype=np.int64)
    out[order] = np.arange(len(g), dtype=np.int64) - first
    return out


def _with_intervals(measurements: pd.DataFrame, samples: pd.DataFrame, by: tuple[str, ...],
                    ci: float, n_boot: int, seed: int) -> pd.DataFrame:
    _check_level(ci, n_boot)
    keys, gid = _groups(measurements, by)
    obs = _observations(measurements, samples, gid)  # once, for both steps
    point = _point(measurements, samples, keys, gid, obs)
    boot = _bootstrap(measurements, samples, keys, gid, ci, n_boot, seed, obs)
    return pd.concat([point, boot.reset_index(drop=True)], axis=1)


def _check_level(ci: float, n_boot: int) -> None:
    if not 0 < ci < 1:
        raise MetricsError(f"ci is a confidence level between 0 and 1 (e.g. 0.95), not {ci}")
    if n_boot < 0:
        raise MetricsError(f"n_boot is a number of replicates (0 for none), not {n_boot}")


# --------------------------------------------------------------------------- bootstrap


def _bootstrap(measurements: pd.DataFrame, samples: pd.DataFrame, keys: pd.DataFrame,
               gid: pd.Series, ci: float, n_boot: int, seed: int,
               observations: pd.DataFrame | None = None) -> pd.DataFrame:
    result = np.full((len(keys), len(BOOTSTRAP_COLUMNS)), np.nan)
    if n_boot == 0 or keys.empty:
        return pd.DataFrame(result, index=keys.index, columns=list(BOOTSTRAP_COLUMNS))
    g = gid.to_numpy()
    order = np.argsort(g, kind="stable")  # records by group, in their frame order
    counted_sent, counted_received = _counted(measurements)
    sent = counted_sent.to_numpy(dtype=np.float64, na_value=0.0)
    received = counted_received.to_numpy(dtype=np.float64, na_value=0.0)
    rec_sent, rec_lost, rec_g = sent[order], (sent - received)[order], g[order]
    group_numbers = keys.index.to_numpy()
    rec_bounds = np.searchsorted(rec_g, group_numbers, side="left").tolist()
    rec_ends = np.searchsorted(rec_g, group_numbers, side="right").tolist()

    if observations is None:
        observations = _observations(measurements, samples, gid)
    obs_v = observations["rtt_ms"].to_numpy(dtype=np.float64)
    kept = np.flatnonzero(~np.isnan(obs_v))
    obs_g = observations["_g"].to_numpy(dtype=np.int64)[kept]
    obs_v = obs_v[kept]
    by_value = np.lexsort((obs_v, obs_g))  # by group, ascending value within it
    obs_g, obs_v = obs_g[by_value], obs_v[by_value]
    obs_r = observations["_r"].to_numpy(dtype=np.int64)[kept][by_value]
    obs_bounds = np.searchsorted(obs_g, group_numbers, side="left").tolist()
    obs_ends = np.searchsorted(obs_g, group_numbers, side="right").tolist()

    alpha = 1 - ci
    levels = (alpha / 2, 1 - alpha / 2)
    hashes = _key_hashes(keys)
    # Replicates of a block of groups (groups × statistics × replicates), their intervals
    # taken at once by one sort per block: a few tens of MB whatever the campaign's size.
    block = max(1, _CHUNK_CELLS // (3 * n_boot))
    for first in range(0, len(keys), block):
        last = min(first + block, len(keys))
        replicates = np.full((last - first, 3, n_boot), np.nan)
        for i in range(first, last):
            lo_r, hi_r = rec_bounds[i], rec_ends[i]
            n = hi_r - lo_r
            if n < 2:
                continue
            rng = np.random.default_rng([seed, hashes[i]])
            a, b = obs_bounds[i], obs_ends[i]
            rtt, loss = _replicates(rng, n, obs_r[a:b], obs_v[a:b], rec_lost[lo_r:hi_r],
                                    rec_sent[lo_r:hi_r], n_boot)
            # in BOOTSTRAP_COLUMNS order: p50, p95, loss (each lo/hi)
            replicates[i - first, 0:2] = rtt.T
            replicates[i - first, 2] = loss
        result[first:last] = row_quantiles(
            replicates.reshape(-1, n_boot), levels).reshape(last - first, 6)
    return pd.DataFrame(result, index=keys.index, columns=list(BOOTSTRAP_COLUMNS))


def _key_hashes(keys: pd.DataFrame) -> list[int]:
    """Each group's stream key: the CRC-32 of its key values written as text."""
    return [_key_hash(tuple(row)) for row in keys.itertuples(index=False)]


def _key_hash(key: tuple[Any, ...]) -> int:
    return zlib.crc32("\x1f".join(map(str, key)).encode("utf-8"))


def _replicates(rng: np.random.Generator, n: int, rec: IntArray, values: FloatArray,
                lost: FloatArray, sent: FloatArray, n_boot: int
                ) -> tuple[FloatArray, FloatArray]:
    """Bootstrap replicates of (p50, p95) and of the loss ratio, resampling ``n`` records.

    ``values`` are the group's observations sorted ascending and ``rec`` the
    record (0 … n-1) each belongs to; ``lost``/``sent`` are per record.
    """
    m = len(values)
    rtt = np.full((n_boot, len(_BOOT_QUANTILES)), np.nan)
    loss = np.full(n_boot, np.nan)
    chunk = max(1, _CHUNK_CELLS // max(n, m, 1))
    blocks = _Blocks(rec, n) if m > _FLAT_LIMIT else None
    per_record = np.column_stack([sent, lost]).astype(np.float64)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = _draw_counts(rng, n, size)  # (size, n): times each record is drawn
        # Probe counts are whole numbers, so the sums are exact in any order: one product
        # for both, in slices that keep BLAS on this thread (_product).
        probes = _product(counts.astype(np.float64), per_record)
        s = probes[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            loss[start:start + size] = np.where(s > 0, probes[:, 1] / s, np.nan)
        if m == 0:
            continue
        total, position = _running(counts, rec) if blocks is None else blocks.finder(counts)
        # Observation j of the sorted list appears counts[rec[j]] times in the
        # replicate; the k-th (0-based) value of the pooled replicate is the first
        # observation whose cumulative weight exceeds k.
        # Every quantile's two order statistics in one search (rows: p50 and p95 below,
        # then above; columns: replicates).
        h = (total - 1) * np.asarray(_BOOT_QUANTILES)[:, np.newaxis]
        below = np.floor(h).astype(np.int64)
        frac = h - below
        above = np.minimum(below + 1, total - 1)
        found = position(np.concatenate([below, above]))
        lo, hi = found[:len(_BOOT_QUANTILES)], found[len(_BOOT_QUANTILES):]
        est = values[lo] + frac * (values[hi] - values[lo])
        rtt[start:start + size] = np.where(total > 0, est, np.nan).T
    return rtt, loss


def _running(counts: IntArray, rec: IntArray
             ) -> tuple[IntArray, Callable[[IntArray], IntArray]]:
    """(each replicate's number of observations, rank → position of that order statistic)
    by one running sum over all the replicates' weights (row b starts where row b-1
    ended, at ``offset[b]``) and a binary search: for groups of few observations."""
    size, m = len(counts), len(rec)
    flat = np.cumsum(counts[:, rec], axis=None, dtype=np.int64)
    ends = flat[m - 1::m]
    total = np.diff(ends, prepend=0)
    offset = ends - total
    base = np.arange(size, dtype=np.int64) * m

    def position(rank: IntArray) -> IntArray:
        found = np.searchsorted(flat, offset + rank, side="right") - base
        return np.asarray(np.clip(found, 0, m - 1), dtype=np.int64)

    return total, position


def _product(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a @ b`` in slices of rows small enough for OpenBLAS to compute each on the calling
    thread: a product of more than about 2**18 multiply-adds starts its thread pool, which
    for products this small costs more than it gives (measured 1.6 ms instead of 38 µs
    for 500 × 60 @ 60 × 32 on a loaded 2-CPU machine)."""
    rows = max(1, (1 << 18) // max(1, a.shape[1] * b.shape[1]))
    if len(a) <= rows:
        return np.asarray(a @ b, dtype=np.float64)
    return np.concatenate([a[i:i + rows] @ b for i in range(0, len(a), rows)])


class _Blocks:
    """The sorted observations of a group cut into blocks of :data:`_BLOCK` for the
    replicates' order statistics.

    The k-th value of a replicate is the first observation whose cumulative weight
    (the draw counts of the records, observation by observation) exceeds k.  A running
    sum over every observation of every replicate costs replicates × observations; here
    one matrix product gives each replicate's weight before each block (``before``:
    counts × observations of each record in the earlier blocks, exact integers in
    float64), which tells the block holding rank k, and only that block's
    :data:`_BLOCK` weights are summed.  The positions are those the running sum gives.
    """

    def __init__(self, rec: IntArray, n: int) -> None:
        m = len(rec)
        self.m = m
        self.n_blocks = -(-m // _BLOCK)
        per_block = np.bincount(rec * self.n_blocks + np.arange(m) // _BLOCK,
                                minlength=n * self.n_blocks).reshape(n, self.n_blocks)
        # Observations of each record before each block, and (last column) in all.
        before = np.zeros((n, self.n_blocks + 1), dtype=np.float64)
        np.cumsum(per_block, axis=1, out=before[:, 1:])
        self.before = before
        # The records of each block's places; past the last observation, record n (the
        # zero column of position's counts).
        padded = np.full(self.n_blocks * _BLOCK, n, dtype=np.int64)
        padded[:m] = rec
        self.cells = padded.reshape(self.n_blocks, _BLOCK)

    def finder(self, counts: IntArray) -> tuple[IntArray, Callable[[IntArray], IntArray]]:
        """(each replicate's number of observations, rank → position of that order
        statistic) for the replicates' draw ``counts``."""
        size, n = counts.shape
        before = _product(counts.astype(np.float64), self.before)
        total = before[:, -1].astype(np.int64)
        padded = np.zeros((size, n + 1), dtype=np.int64)  # record n: the blocks' padding
        padded[:, :-1] = counts
        flat = padded.ravel()
        return total, lambda rank: self.position(flat, n + 1, before, rank)

    def position(self, counts: IntArray, width: int, before: FloatArray,
                 rank: IntArray) -> IntArray:
        """Index (0 … m-1) of each replicate's ``rank``-th value (clipped for a replicate
        without values, whose result is not used); ``rank`` is (ranks × replicates).
        ``counts`` are the draw counts, flattened rows of ``width`` with a zero for the
        padding record last."""
        size = rank.shape[-1]
        block = np.clip((before <= rank[..., np.newaxis]).sum(axis=-1) - 1, 0,
                        self.n_blocks - 1)
        rows = np.arange(size)
        rest = rank - before[rows, block].astype(np.int64)
        weights = counts[self.cells[block] + (rows * width)[:, np.newaxis]]
        running = np.cumsum(weights, axis=-1)
        inside = (running <= rest[..., np.newaxis]).sum(axis=-1)
        return np.asarray(np.clip(block * _BLOCK + inside, 0, self.m - 1), dtype=np.int64)


def _draw_counts(rng: np.random.Generator, n: int, size: int) -> IntArray:
    """``size`` bootstrap draws of ``n`` records with replacement, as counts per record.

    (Uniform indices and a bincount: the same multinomial counts as
    ``rng.multinomial`` gives, for a fraction of its cost with many records.)
    """
    drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
