"""Episodes (rises that start and end), improvements, and two snapshots compared pair by pair.

Pure functions over the ``measurements`` frame (see :mod:`netvantage.analysis.frames`).

**One series per pair.**  Each (region, target) is read from one kind of measurement — ping
where the pair has ping records, else tcp, else the traces' destination RTT — so that a pair's
series never mixes an ICMP echo with a TCP connect.  The records are cut into windows and
each window's median RTT is one point of the series.

**Windows follow the data's cadence.**  The cadence is the median gap between a pair's
successive records (the median over pairs), rounded up to a plain unit (seconds, minutes,
hours, days, weeks): weekly data gets one-week windows, a lab campaign probing every 15 s
gets 15 s windows.  No more than ``max_windows`` windows are made: a long, dense series gets
wider windows.  An explicit ``window`` overrides all this.  The window boundaries fall in
the widest lull of the records' phases (weekly records made on Mondays get windows cut on
Thursdays), so records made at about the same time of each window never share one; each
window is dated by its first record.

**Spikes.**  Before segmentation, a window that agrees (within ``z_min`` σ) with the median
of no run of ``2 × min_windows − 1`` windows holding it — an excursion shorter than
``min_windows`` windows — is replaced by the median of the run centred on it.  Segments,
baselines and levels are read on that series; an episode's level and peak on the window
medians as measured.

**Change points.**  The window medians are segmented by PELT (``ruptures``, least-squares
cost, segments of at least ``min_windows`` windows) with the penalty
``penalty × σ² × log n``, σ the noise of the series estimated robustly from its successive
differences (1.4826 × MAD / √2, which a level shift hardly moves) and n the number of windows:
the Bayesian information criterion of a Gaussian series with known variance, times a margin.

**Episodes.**  The segments are read in order against a *rolling robust baseline*: the median
of the last ``baseline_windows`` window medians that are not part of an episode.  A segment
whose median is above the baseline by at least the threshold —
``max(min_rise × baseline, min_rise_ms, z_min × σ)`` — and which holds a run of
``min_windows`` successive windows each above half the threshold (spikes that come and go
lift a median, not a run) opens an episode where that run starts (or, inside one, keeps it
open); the first segment back within the threshold of the episode's baseline ends it.  Only
windows within the threshold of the baseline feed it, and no change is judged against a
baseline that fewer than ``min_windows`` of its windows agree with (as many spikes as usual
windows at the start of a series).  An episode still open at the last window is *ongoing*.
Each episode has its start (the first record of its first window), its end (the first record
of the first window after it) or "ongoing", its baseline, its level (median of its windows)
and its peak (highest window median).

**Improvements.**  A segment below the baseline by at least the threshold, with a run of
``min_windows`` windows each below half of it, outside an episode, is an improvement:
reported as such (with its time, before and after), never as a degradation; the baseline
then follows the new, lower level.

**Snapshots.**  :func:`compare` sets two snapshots side by side per (region, target):
median RTT before and after, the change, and a verdict (``degraded``, ``improved``,
``unchanged``; with a two-sided Mann–Whitney U when both sides have at least
``min_records`` records, by the threshold alone otherwise — said in the row).
:func:`snapshot_split` recognises two snapshots fed as one dataset: two dense clusters of
time, the gap between them at least ten times longer than any gap inside them and than
either cluster's span.

Defaults (``EpisodeOptions``): ``min_rise`` = 0.08 (8 % of the baseline), ``min_rise_ms`` =
1 ms, ``z_min`` = 3, ``min_windows`` = 3, ``baseline_windows`` = 8, ``penalty`` = 3,
``max_windows`` = 400, ``alpha`` = 0.01 (snapshot comparison).  A rise of 10 % lasting
three windows on a series with 2 % noise is found; a single bad window never is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from .codes import give_back
from .events import Event, group_events
from .pathchange import PathChange, find_path_changes

__all__ = ["Changes", "Comparison", "Episode", "EpisodeOptions", "Improvement", "PairChange",
           "cadence", "compare", "episode_window", "find_changes", "find_episodes",
           "series_shared", "snapshot_split", "snapshots"]

FloatArray = npt.NDArray[np.float64]

# Plain window lengths, smallest first: a cadence is rounded up to one of these.
_UNITS = tuple(pd.Timedelta(u) for u in (
    "1s", "2s", "5s", "10s", "15s", "30s", "1min", "2min", "5min", "10min", "15min", "30min",
    "1h", "2h", "3h", "6h", "12h", "1D", "2D", "7D", "14D", "28D", "91D", "364D"))
_KIND_ORDER = ("ping", "tcp", "trace")


@dataclass(frozen=True, slots=True)
class EpisodeOptions:
    """Thresholds of the episode detector and of the snapshot comparison (see the module)."""

    window: pd.Timedelta | None = None  # None: from the data's cadence
    min_rise: float = 0.08
    min_rise_ms: float = 1.0
    z_min: float = 3.0
    min_windows: int = 3
    baseline_windows: int = 8
    penalty: float = 3.0
    max_windows: int = 400
    alpha: float = 0.01
    min_records: int = 3

    def __post_init__(self) -> None:
        if self.min_rise < 0 or self.min_rise_ms < 0 or self.z_min < 0:
            raise ValueError("episode thresholds must not be negative")
        if self.min_windows < 1 or self.baseline_windows < 1 or self.max_windows < 2:
            raise ValueError("min_windows and baseline_windows must be ≥ 1, max_windows ≥ 2")
        if self.penalty <= 0:
            raise ValueError("the change-point penalty factor must be positive")

    def threshold(self, baseline: float, sigma: float) -> float:
        return max(self.min_rise * abs(baseline), self.min_rise_ms, self.z_min * sigma)


def _when(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None else pd.Timestamp(ts).isoformat()


def _short(ts: pd.Timestamp) -> str:
    ts = pd.Timestamp(ts)
    if ts == ts.normalize():
        return f"{ts:%Y-%m-%d}"
    return f"{ts:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True, slots=True)
class Episode:
    """A rise that started (and, unless ``end`` is None, ended): one flag."""

    region: str
    target: str
    kind: str
    start: pd.Timestamp
    end: pd.Timestamp | None  # None: still elevated at the last window ("ongoing")
    baseline_ms: float
    level_ms: float  # median of the episode's window medians
    peak_ms: float  # highest window median
    windows: int
    test: str = "episode"  # or "history" for a step flag of degrade.py taken into events

    @property
    def rise_ms(self) -> float:
        return self.level_ms - self.baseline_ms

    @property
    def rise_ratio(self) -> float:
        return self.rise_ms / self.baseline_ms if self.baseline_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "target": self.target, "kind": self.kind,
                "test": self.test, "start": _when(self.start),
                "end": _when(self.end) if self.end is not None else "ongoing",
                "baseline_ms": self.baseline_ms, "level_ms": self.level_ms,
                "peak_ms": self.peak_ms, "rise_ms": self.rise_ms,
                "rise_ratio": self.rise_ratio if math.isfinite(self.rise_ratio) else None,
                "windows": self.windows}

    def text(self) -> str:
        until = f"until {_short(self.end)}" if self.end is not None else "ongoing"
        return (f"{self.region} -> {self.target} [{self.kind}]: from {_short(self.start)} "
                f"{until}: median {self.level_ms:.1f} ms (peak {self.peak_ms:.1f}) vs baseline "
                f"{self.baseline_ms:.1f} ms (+{100 * self.rise_ratio:.0f} %, "
                f"{self.windows} window(s))")


@dataclass(frozen=True, slots=True)
class Improvement:
    """A lasting fall of a pair's RTT: good news, reported as such."""

    region: str
    target: str
    kind: str
    at: pd.Timestamp
    before_ms: float
    after_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "target": self.target, "kind": self.kind,
                "at": _when(self.at), "before_ms": self.before_ms, "after_ms": self.after_ms,
                "change_ms": self.after_ms - self.before_ms}

    def text(self) -> str:
        return (f"{self.region} -> {self.target} [{self.kind}]: since {_short(self.at)} median "
                f"{self.after_ms:.1f} ms vs {self.before_ms:.1f} ms before "
                f"({self.after_ms - self.before_ms:+.1f} ms)")


@dataclass(frozen=True, slots=True)
class PairChange:
    """One (region, target) in two snapshots."""

    region: str
    target: str
    kind: str
    before_ms: float | None
    after_ms: float | None
    n_before: int
    n_after: int
    p_value: float | None  # None: too few records on a side for a test
    verdict: str  # degraded / improved / unchanged / only before / only after

    def text(self) -> str:
        before = "-" if self.before_ms is None else f"{self.before_ms:.1f}"
        after = "-" if self.after_ms is None else f"{self.after_ms:.1f}"
        test = "" if self.p_value is None else f", p={self.p_value:.2g}"
        return (f"{self.region} -> {self.target} [{self.kind}]: {before} -> {after} ms "
                f"(n {self.n_before}/{self.n_after}{test}): {self.verdict}")

    def to_dict(self) -> dict[str, Any]:
        change = (None if self.before_ms is None or self.after_ms is None
                  else self.after_ms - self.before_ms)
        return {"region": self.region, "target": self.target, "kind": self.kind,
                "before_ms": self.before_ms, "after_ms": self.after_ms, "change_ms": change,
                "n_before": self.n_before, "n_after": self.n_after, "p_value": self.p_value,
                "verdict": self.verdict}


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two snapshots compared pair by pair (never pooled)."""

    before: str  # how the snapshot was chosen, in words (a file, a time range)
    after: str
    pairs: tuple[PairChange, ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.verdict] = out.get(p.verdict, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "counts": self.counts(),
                "pairs": [p.to_dict() for p in self.pairs]}


@dataclass(frozen=True)
class Changes:
    """What changed over time: episodes, improvements, events, and a snapshot comparison."""

    window: pd.Timedelta | None
    episodes: tuple[Episode, ...] = ()
    improvements: tuple[Improvement, ...] = ()
    events: tuple[Event, ...] = ()
    comparison: Comparison | None = None
    notes: tuple[str, ...] = ()
    options: EpisodeOptions = field(default_factory=EpisodeOptions)
    paths: tuple[PathChange, ...] = ()  # path changes over time (see .pathchange)

    def to_dict(self) -> dict[str, Any]:
        """The JSON keys "episodes", "improvements", "events", "path_changes", "comparison"."""
        return {"episodes": [e.to_dict() for e in self.episodes],
                "improvements": [i.to_dict() for i in self.improvements],
                "events": [e.to_dict() for e in self.events],
                "path_changes": [p.to_dict() for p in self.paths],
                "comparison": None if self.comparison is None else self.comparison.to_dict(),
                "episode_window": None if self.window is None else str(self.window)}

    def report_section(self) -> dict[str, Any]:
        """What the report's "Events and episodes" section shows, as sentences."""
        c = self.comparison
        return {"window": str(self.window) if self.window is not None else "none",
                "events": [{"headline": e.headline(), "lines": e.text_lines()[1:]}
                           for e in self.events],
                "episodes": [e.text() for e in self.episodes],
                "improvements": [i.text() for i in self.improvements],
                "path_changes": [{"headline": p.headline(), "lines": p.text_lines()[1:]}
                                 for p in self.paths],
                "comparison": None if c is None else {
                    "before": c.before, "after": c.after,
                    "rows": [p.text() for p in c.pairs]}}

    def text_lines(self) -> list[str]:
        o = self.options
        lines = ["", f"Events ({len(self.events)}: flags of several pairs starting within one "
                 "window and sharing a data centre, a region, an AS or a path segment):"]
        lines += [f"  {line}" for e in self.events for line in e.text_lines()] or ["  none"]
        lines += ["", f"Episodes ({len(self.episodes)}; window {self.window}; a rise of at "
                  f"least {100 * o.min_rise:.0f} % and {o.min_rise_ms:g} ms over the rolling "
                  f"baseline for {o.min_windows}+ windows):"]
        lines += [f"  {e.text()}" for e in self.episodes] or ["  none"]
        lines += ["", f"Improvements ({len(self.improvements)}; not degradations):"]
        lines += [f"  {i.text()}" for i in self.improvements] or ["  none"]
        lines += ["", f"Path changes ({len(self.paths)}; per agent and target, consecutive "
                  "traces whose hops differ and stay so):"]
        lines += [f"  {line}" for p in self.paths for line in p.text_lines()] or ["  none"]
        if self.comparison is not None:
            c = self.comparison
            counts = ", ".join(f"{n} {v}" for v, n in sorted(c.counts().items()))
            lines += ["", f"Two snapshots compared pair by pair ({counts}):",
                      f"  before: {c.before}", f"  after: {c.after}"]
            lines += [f"  {p.text()}" for p in c.pairs]
        return lines


# ---------------------------------------------------------------------------------------
# Cadence and windows


def cadence(measurements: pd.DataFrame) -> pd.Timedelta | None:
    """The median gap between successive records of a pair's series (median over pairs).

    None when no pair has two records at different times.  Only the records of the series
    (one kind per pair, with an RTT) count: a ping and a TCP connect made a second apart
    are not a one-second cadence.
    """
    return _cadence(_series_rows(measurements)[0])


def _cadence(rows: pd.DataFrame) -> pd.Timedelta | None:
    """:func:`cadence` of the rows of :func:`_series_rows`."""
    started = pd.to_datetime(rows["started_at"], utc=True)
    known = started.notna().to_numpy()
    series = rows["_series"].to_numpy()[known]
    t = started.to_numpy(dtype="datetime64[ns]")[known].astype(np.int64)
    if not len(t):
        return None
    # Each series' distinct times in order: one sort of the integer pairs, repeats dropped
    # (a frame's drop_duplicates and sort_values hashed and sorted them as objects).
    order = np.lexsort((t, series))
    series, t = series[order], t[order]
    distinct = np.r_[True, (series[1:] != series[:-1]) | (t[1:] != t[:-1])]
    series, t = series[distinct], t[distinct]
    same = series[1:] == series[:-1]
    if not same.any():
        return None
    # Per series the median gap between its distinct times; the median of those.
    gaps = pd.Series(np.diff(t)[same]).groupby(series[1:][same]).median()
    return pd.Timedelta(int(np.median(gaps.to_numpy(dtype=np.float64))), unit="ns")


def _round_up(td: pd.Timedelta) -> pd.Timedelta:
    for unit in _UNITS:
        if td <= unit * 1.1:  # a 15.02 s cadence is a 15 s one (clocks and scheduling drift)
            return unit
    return pd.Timedelta(days=math.ceil(td / pd.Timedelta(days=1)))


def episode_window(measurements: pd.DataFrame,
                   options: EpisodeOptions | None = None) -> pd.Timedelta | None:
    """The window of the episode detector: the cadence rounded up, widened to ≤ max_windows."""
    o = options or EpisodeOptions()
    if o.window is not None:
        return pd.Timedelta(o.window)
    return _episode_window(measurements, o, _series_rows(measurements)[0])


def _episode_window(measurements: pd.DataFrame, o: EpisodeOptions,
                    rows: pd.DataFrame) -> pd.Timedelta | None:
    """:func:`episode_window` given the rows of :func:`_series_rows` (made once)."""
    if o.window is not None:
        return pd.Timedelta(o.window)
    step = _cadence(rows)
    if step is None:
        return None
    started = pd.to_datetime(measurements["started_at"], utc=True)
    span = started.max() - started.min()
    return _round_up(max(step, span / o.max_windows, pd.Timedelta("1s")))


# ---------------------------------------------------------------------------------------
# Episodes


def _as_str(column: pd.Series) -> npt.NDArray[np.object_]:
    """``column.astype(str)`` as an array, a categorical's categories converted once."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = np.array([str(c) for c in column.cat.categories] + ["nan"], dtype=object)
        return np.asarray(names[column.cat.codes.to_numpy()], dtype=object)
    return np.asarray(column.astype(str).to_numpy(), dtype=object)


def _sorted_codes(column: pd.Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """Codes of ``column.astype(str)``'s values numbered in sorted order, and those values."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = np.array([str(c) for c in column.cat.categories] + ["nan"], dtype=object)
        distinct, inverse = np.unique(names, return_inverse=True)
        return (np.asarray(inverse, dtype=np.int64)[column.cat.codes.to_numpy()],
                np.asarray(distinct, dtype=object))
    codes, distinct = pd.factorize(_as_str(column), sort=True)
    return np.asarray(codes, dtype=np.int64), np.asarray(distinct, dtype=object)


def _distinct(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``np.unique`` of integers by a sort: numpy 2.4's np.unique hashes, which on a million
    timestamps took 0.85 s against 6 ms for the sort (same result: the sorted distinct)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


_SeriesRows = tuple[pd.DataFrame, list[tuple[str, str, str]]]
#: Inside :func:`series_shared`: measurements frame → (that frame, its :func:`_series_rows`).
_SHARED: dict[int, tuple[pd.DataFrame, _SeriesRows]] | None = None


@contextmanager
def series_shared() -> Iterator[None]:
    """Within the block, :func:`_series_rows` of a frame is computed once, however often it
    is asked for (``analyse`` asks for the cadence and then for the episodes of the same
    records).  The block must not change the frames it analyses; its results are those
    computed without it.  Nested blocks share the outer one's."""
    global _SHARED
    if _SHARED is not None:
        yield
        return
    _SHARED = {}
    try:
        yield
    finally:
        _SHARED = None


def _series_rows(measurements: pd.DataFrame) -> _SeriesRows:
    """The records of every series (:func:`_series`) in one frame, numbered by ``_series``
    (an index into the keys, which are sorted by region and target)."""
    if _SHARED is None:
        return _series_rows_of(measurements)
    # Keyed by the frame's identity while the memo holds the frame (the id is not reused).
    hit = _SHARED.get(id(measurements))
    if hit is None or hit[0] is not measurements:
        hit = (measurements, _series_rows_of(measurements))
        _SHARED[id(measurements)] = hit
    return hit[1]


def _series_rows_of(measurements: pd.DataFrame) -> _SeriesRows:
    """:func:`_series_rows`, computed."""
    # Only the columns used, and no astype(str) of the whole kind column (isin reads a
    # categorical's categories): a filter of every column of a million records copied
    # some 100 MB.
    keep = (measurements["kind"].isin(list(_KIND_ORDER)).to_numpy(dtype=bool)
            & measurements["rtt_ms"].notna().to_numpy(dtype=bool))
    m = measurements.loc[keep, ["region", "target", "kind", "started_at", "rtt_ms"]]
    if m.empty:
        return m.assign(_series=np.empty(0, dtype=np.int64)), []
    # (region, target) numbered in their sorted order: each column's sorted codes, combined.
    region, regions = _sorted_codes(m["region"])
    target, targets = _sorted_codes(m["target"])
    combined = region * len(targets) + target
    present = _distinct(combined)
    code = np.searchsorted(present, combined)
    pairs = [(regions[c // len(targets)], targets[c % len(targets)]) for c in present.tolist()]
    kind, kinds = _sorted_codes(m["kind"])
    order = {k: i for i, k in enumerate(_KIND_ORDER)}
    rank = np.array([order.get(str(k), len(_KIND_ORDER)) for k in kinds], dtype=np.int64)[kind]
    best = pd.Series(rank).groupby(code).min().reindex(range(len(pairs))).to_numpy()
    keep = rank == best[code]
    keys = [(str(r), str(t), _KIND_ORDER[int(k)]) for (r, t), k in zip(pairs, best, strict=True)]
    return m[keep].assign(_series=np.asarray(code, dtype=np.int64)[keep]), keys


def _noise(values: FloatArray) -> float:
    """Robust σ of a series from its successive differences (a level shift barely moves it)."""
    if len(values) < 3:
        return 0.0
    d = np.diff(values)
    return float(1.4826 * _median(np.abs(d - _median(d))) / math.sqrt(2.0))


def _median(values: FloatArray) -> float:
    """``np.median`` of finite values (at least one), the same bits without its overhead.

    np.median's middle value, or the mean of the middle two, ``(a + b) / 2`` as its mean of
    two computes it: called tens of thousands of times on short series, np.median's
    argument handling cost more than the sort.
    """
    ordered = np.sort(values)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[half])
    return float((ordered[half - 1] + ordered[half]) / 2)


def _run_medians(series: Sequence[FloatArray], width: int) -> list[FloatArray | None]:
    """Per series, the medians of its runs of ``width`` successive values (None when it is
    shorter), all series' in one ``np.median`` call over the runs of their concatenation
    (each run's median is computed alone, so the values are those of one call per series;
    thousands of calls on short series cost mostly their overhead)."""
    lengths = [len(v) for v in series]
    if width < 1 or not any(n >= width for n in lengths):
        return [None] * len(series)
    runs = np.lib.stride_tricks.sliding_window_view(np.concatenate(series), width)
    medians = np.median(runs, axis=1)
    out: list[FloatArray | None] = []
    offset = 0
    for n in lengths:
        out.append(medians[offset:offset + n - width + 1] if n >= width else None)
        offset += n
    return out


def _despike(values: FloatArray, sigma: float, o: EpisodeOptions,
             medians: FloatArray | None = None) -> FloatArray:
    """``values`` with every excursion shorter than ``min_windows`` windows taken out.

    A window is kept when it agrees, within ``z_min`` σ, with the median of at least one of
    the runs of ``2 × min_windows − 1`` successive windows that hold it; otherwise it is
    replaced by the median of the run centred on it (shifted inside the series at its
    ends).  Fewer than ``min_windows`` outlying windows are a minority of every such run, so
    they go; ``min_windows`` or more are the majority of some run, so they stay, and so does
    the first window of a new level even when a spike follows it.  Least-squares change
    points would otherwise wrap each spike in a segment of its own, misplacing the real
    change points next to it, and a short segment holding two spikes would take a spike's
    value for its median.
    """
    n = len(values)
    width = 2 * o.min_windows - 1
    if width < 3 or n < width:
        return values
    if medians is None:
        medians = np.median(np.lib.stride_tricks.sliding_window_view(values, width), axis=1)
    # Window i is held by the runs starting at i − width + 1 … i that lie in the series:
    # their distances to it, a row per offset (inf where the run does not exist).
    i = np.arange(n)
    starts = i[None, :] - np.arange(width - 1, -1, -1)[:, None]
    exists = (starts >= 0) & (starts <= n - width)
    distance = np.where(exists, np.abs(values[None, :] - medians[np.clip(starts, 0, n - width)]),
                        np.inf)
    outlying = distance.min(axis=0) > o.z_min * sigma
    centred = medians[np.clip(i - o.min_windows + 1, 0, n - width)]
    return np.where(outlying, centred, values)


def _segments(series: Sequence[FloatArray], sigmas: Sequence[float],
              o: EpisodeOptions) -> list[list[tuple[int, int]]]:
    """[start, stop) index ranges of PELT's segmentation (l2 cost) of each series."""
    out: list[list[tuple[int, int]]] = [[(0, len(v))] for v in series]
    long = [k for k, v in enumerate(series) if len(v) >= 2 * o.min_windows]
    pens = []
    for k in long:
        values, n = series[k], len(series[k])
        scale = max(sigmas[k], 1e-3 * _median(np.abs(values)), 1e-9)
        pens.append(o.penalty * scale ** 2 * math.log(n))
    for k, ends in zip(long, _pelt_l2_many([series[k] for k in long], pens, o.min_windows),
                       strict=True):
        out[k] = list(zip([0, *ends[:-1]], ends, strict=True))
    return out


def _pelt_l2(values: FloatArray, pen: float, min_size: int) -> list[int]:
    """The ends of the optimal segments of ``values`` under the l2 cost plus ``pen`` per
    segment, each at least ``min_size`` long (``len(values) ≥ min_size``): PELT (Killick,
    Fearnhead and Eckley, 2012, "Optimal detection of changepoints with a linear
    computational cost", JASA 107).

    The recursion, the pruning and the tie-breaking (the earliest last change) of
    ``ruptures.Pelt(model="l2", jump=1)``, whose segmentations the tests check it gives;
    written here because ruptures evaluates every candidate with Python objects (a dict
    per partition, summed anew each time), which costs seconds per series of a few hundred
    windows.  Every candidate's cost comes from cumulative sums.  A segment's cost is its
    sum of squared deviations from its mean.
    """
    return _pelt_l2_many([values], [pen], min_size)[0]


def _pelt_l2_many(series: Sequence[FloatArray], pens: Sequence[float],
                  min_size: int) -> list[list[int]]:
    """:func:`_pelt_l2` of many series in lockstep: one pass over the ends for all.

    A campaign has thousands of series of a few hundred windows; PELT's step for one end
    is a handful of array operations on few candidates, so one series at a time costs
    mostly the operations' overhead.  Here each step takes that end of every series at
    once: the candidates of all series in one array (grouped by series, earliest first),
    each series' least cost and its earliest argmin found per group, the pruning applied
    to all.  Every value is computed by the same operations as for one series alone, so
    the segmentations are the same.
    """
    count = len(series)
    if count == 0:
        return []
    lengths = np.array([len(v) for v in series], dtype=np.int64)
    longest = int(lengths.max())
    s1 = np.zeros((count, longest + 1))
    s2 = np.zeros((count, longest + 1))
    for k, values in enumerate(series):
        x = values - _median(values)  # centred: the cumulative sums lose less
        s1[k, 1:len(x) + 1] = np.cumsum(x)
        s2[k, 1:len(x) + 1] = np.cumsum(x * x)
    pen = np.asarray(pens, dtype=np.float64)
    best = np.full((count, longest + 1), np.inf)  # best[k, t]: optimal cost of series k[:t]
    best[:, 0] = 0.0
    last = np.zeros((count, longest + 1), dtype=np.int64)  # start of that optimum's last
    solved = np.zeros((count, longest + 1), dtype=bool)
    solved[:, 0] = True
    who = np.empty(0, dtype=np.int64)  # the candidates: their series, and their start
    at = np.empty(0, dtype=np.int64)
    for end in range(min_size, longest + 1):
        keep = lengths[who] >= end  # series that ended drop out
        who, at = who[keep], at[keep]
        new = np.flatnonzero((lengths >= end) & solved[:, end - min_size])
        where = np.searchsorted(who, new, side="right")
        who = np.insert(who, where, new)
        at = np.insert(at, where, end - min_size)
        size = end - at
        total = s1[who, end] - s1[who, at]
        cost = np.maximum((s2[who, end] - s2[who, at]) - total * total / size, 0.0)
        candidate = best[who, at] + (cost + pen[who])
        heads = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        least = np.minimum.reduceat(candidate, heads)
        group = np.repeat(np.arange(len(heads)), np.diff(np.r_[heads, len(who)]))
        hits = np.flatnonzero(candidate == least[group])
        first = hits[np.r_[True, group[hits][1:] != group[hits][:-1]]]
        active = who[heads]
        best[active, end] = least
        last[active, end] = at[first]
        solved[active, end] = True
        prune = candidate <= (least + pen[active])[group]
        who, at = who[prune], at[prune]
    out = []
    for k, n in enumerate(lengths.tolist()):
        ends = [n]
        while last[k, ends[-1]] > 0:
            ends.append(int(last[k, ends[-1]]))
        out.append(sorted(ends))
    return out


def _run(beyond: npt.NDArray[np.bool_], run: int) -> int | None:
    """The first index that starts ``run`` successive True values of ``beyond``, or None."""
    for w in range(len(beyond) - run + 1):
        if bool(np.all(beyond[w:w + run])):
            return w
    return None


def _pair_episodes(key: tuple[str, str, str], times: Sequence[pd.Timestamp], raw: FloatArray,
                   values: FloatArray, sigma: float, segs: list[tuple[int, int]],
                   o: EpisodeOptions) -> tuple[list[Episode], list[Improvement]]:
    """One series' episodes and improvements: ``raw`` its window medians as measured,
    ``values`` the same without short spikes, on which ``segs`` (PELT's) were found."""
    region, target, kind = key
    episodes: list[Episode] = []
    improvements: list[Improvement] = []
    normal: list[float] = [float(v) for v in values[segs[0][0]:segs[0][1]]]
    open_: tuple[int, float] | None = None  # (first window, baseline) of the open episode

    def close(first: int, stop: int, baseline: float, end: pd.Timestamp | None) -> None:
        inside = raw[first:stop]
        episodes.append(Episode(region, target, kind, times[first], end, baseline,
                                _median(inside), float(np.max(inside)),
                                stop - first))

    def fall(a: int, b: int, level: float, baseline: float, thr: float) -> int | None:
        """Where the segment [a, b) starts a sustained fall below ``baseline``, or None."""
        start = _run(baseline - values[a:b] >= thr / 2, min(o.min_windows, b - a))
        if baseline - level < thr or start is None:
            return None
        improvements.append(Improvement(region, target, kind, times[a + start], baseline,
                                        level))
        return a + start

    def usual(a: int, b: int, baseline: float, thr: float) -> list[float]:
        """The windows of [a, b) within the threshold of the baseline: they feed it."""
        part = values[a:b]
        return [float(v) for v in part[np.abs(part - baseline) < thr]]

    for a, b in segs[1:]:
        level = _median(values[a:b])
        if open_ is not None:
            first, baseline = open_
            thr = o.threshold(baseline, sigma)
            if level - baseline >= thr:
                continue  # still elevated
            close(first, a, baseline, times[a])
            open_ = None
            at = fall(a, b, level, baseline, thr)
            if at is not None:
                normal = [float(v) for v in values[at:b]]  # the baseline follows the new level
            else:
                normal += usual(a, b, baseline, thr)
            continue
        recent = np.asarray(normal[-o.baseline_windows:], dtype=np.float64)
        baseline = _median(recent)
        thr = o.threshold(baseline, sigma)
        if int(np.sum(np.abs(recent - baseline) < thr / 2)) < min(o.min_windows, len(recent)):
            # No level to judge against (as many spikes as usual windows at the start of
            # the series): wait for more windows.
            normal += [float(v) for v in values[a:b]]
            continue
        # A rise is a segment whose median is above the threshold and which holds a run of
        # min_windows measured windows each above half of it: sustained, not a median lifted
        # by spikes that come and go.  It starts where that run starts.
        start = _run(values[a:b] - baseline >= thr / 2, min(o.min_windows, b - a))
        if level - baseline >= thr and start is not None:
            open_ = (a + start, baseline)
            normal += usual(a, a + start, baseline, thr)
            continue
        at = fall(a, b, level, baseline, thr)
        if at is not None:
            normal = [float(v) for v in values[at:b]]  # the baseline follows the new level
        else:
            # Spikes that did not last stay out of the baseline.
            normal += usual(a, b, baseline, thr)
    if open_ is not None:
        close(open_[0], len(values), open_[1], None)
    return episodes, improvements


def _origin(started: pd.Series, window: pd.Timedelta) -> pd.Timestamp:
    """Where the windows start: their boundaries fall in the widest lull of the records.

    Records made once a week at some hour of Monday, or every 15 s a little late, sit at
    nearly the same phase of every window; a boundary at the earliest record would cut that
    cluster, putting two weeks' records in one window and none in the next.  The boundary
    goes in the middle of the largest gap between the records' phases instead (circularly),
    and the first window starts at or before the first record.
    """
    first = started.min()
    w = window.value
    phases = _distinct((started - first).to_numpy(dtype="timedelta64[ns]").astype(np.int64)
                       % w)
    gaps = np.diff(np.append(phases, phases[0] + w))
    k = int(np.argmax(gaps))
    boundary = (int(phases[k]) + int(gaps[k]) // 2) % w
    return pd.Timestamp(first + pd.Timedelta(boundary - w, unit="ns"))


def find_episodes(measurements: pd.DataFrame, options: EpisodeOptions | None = None,
                  ) -> tuple[pd.Timedelta | None, list[Episode], list[Improvement]]:
    """The window used, every pair's episodes and improvements (see the module docstring)."""
    o = options or EpisodeOptions()
    rows, keys = _series_rows(measurements)
    window = _episode_window(measurements, o, rows)
    if window is None:
        return None, [], []
    if not keys:
        return window, [], []
    started = pd.to_datetime(rows["started_at"], utc=True)
    origin = _origin(started, window)
    # Every series' window medians in one group-by over (series, window).
    frame = pd.DataFrame({"series": rows["_series"].to_numpy(),
                          "w": ((started - origin) // window).astype("int64").to_numpy(),
                          "rtt": rows["rtt_ms"].astype("float64").to_numpy(),
                          "t": started.reset_index(drop=True)})
    by = frame.groupby(["series", "w"], sort=True)
    table = pd.DataFrame({"median": by["rtt"].median(), "first": by["t"].min()})
    table = table[np.isfinite(table["median"].to_numpy(dtype=np.float64))]
    code = table.index.get_level_values(0).to_numpy()
    bounds: list[int] = (np.flatnonzero(np.r_[True, code[1:] != code[:-1], True]).tolist()
                         if len(code) else [])
    medians = table["median"].to_numpy(dtype=np.float64)
    firsts = table["first"].array  # its items are the Timestamps, taken only when needed
    # Segments, baselines and levels on the series without its short spikes; the runs that
    # confirm a change, and an episode's level and peak, on the window medians as measured.
    spans = [(a, b) for a, b in itertools.pairwise(bounds) if b - a >= 2 * o.min_windows]
    raws = [np.array(medians[a:b]) for a, b in spans]
    sigmas = [_noise(raw) for raw in raws]
    runs = _run_medians(raws, 2 * o.min_windows - 1)
    despiked = [_despike(raw, sigma, o, med)
                for raw, sigma, med in zip(raws, sigmas, runs, strict=True)]
    segments = _segments(despiked, sigmas, o)
    episodes: list[Episode] = []
    improvements: list[Improvement] = []
    for (a, b), raw, values, sigma, segs in zip(spans, raws, despiked, sigmas, segments,
                                                 strict=True):
        e, i = _pair_episodes(keys[int(code[a])], cast(Sequence[pd.Timestamp], firsts[a:b]),
                              raw, values, sigma, segs, o)
        episodes += e
        improvements += i
    return window, episodes, improvements


# ---------------------------------------------------------------------------------------
# Snapshots


def snapshot_split(measurements: pd.DataFrame) -> pd.Timestamp | None:
    """Where two snapshots fed as one dataset meet (the start of the second), or None."""
    if measurements.empty:
        return None
    started = pd.to_datetime(measurements["started_at"], utc=True).dropna()
    values = _distinct(started.to_numpy(dtype="datetime64[ns]").astype(np.int64))
    if len(values) < 2:
        return None
    gaps = np.diff(values)
    i = int(np.argmax(gaps))
    largest = float(gaps[i])
    others = np.delete(gaps, i)
    inside = float(others.max()) if len(others) else 0.0
    spans = max(float(values[i] - values[0]), float(values[-1] - values[i + 1]))
    if largest >= 10.0 * inside and largest >= 10.0 * spans and largest > 0:
        return pd.Timestamp(int(values[i + 1]), unit="ns", tz="UTC")
    return None


def _describe(m: pd.DataFrame) -> str:
    started = pd.to_datetime(m["started_at"], utc=True)
    if started.empty:
        return "no records"
    return f"{len(m)} records, {_short(started.min())} to {_short(started.max())}"


def compare(before: pd.DataFrame, after: pd.DataFrame, options: EpisodeOptions | None = None,
            *, before_label: str | None = None, after_label: str | None = None) -> Comparison:
    """Each (region, target) of two snapshots side by side (see the module docstring)."""
    o = options or EpisodeOptions()
    _, keys_a = _series_rows(before)
    _, keys_b = _series_rows(after)
    pairs_a = {(r, t): k for (r, t, k) in keys_a}
    pairs_b = {(r, t): k for (r, t, k) in keys_b}
    # Every (region, target, kind)'s RTTs of each snapshot, grouped once (not one scan of
    # the whole snapshot per pair and kind).
    rtts_a, rtts_b = _rtts(before), _rtts(after)
    none = np.empty(0, dtype=np.float64)
    rows: list[PairChange] = []
    for key in sorted(set(pairs_a) | set(pairs_b)):
        if key not in pairs_b or key not in pairs_a:
            only_before = key not in pairs_b
            kind = pairs_a[key] if only_before else pairs_b[key]
            x = (rtts_a if only_before else rtts_b).get((*key, kind), none)
            median = float(pd.Series(x, dtype=np.float64).median())
            rows.append(PairChange(key[0], key[1], kind, median if only_before else None,
                                   None if only_before else median,
                                   len(x) if only_before else 0, 0 if only_before else len(x),
                                   None, "only before" if only_before else "only after"))
            continue
        # Like with like: the first kind (ping, tcp, trace) both snapshots have for the pair.
        kind = pairs_b[key]
        for k in _KIND_ORDER:
            if len(rtts_a.get((*key, k), none)) and len(rtts_b.get((*key, k), none)):
                kind = k
                break
        xa = rtts_a.get((*key, kind), none)
        xb = rtts_b.get((*key, kind), none)
        if len(xa) == 0 or len(xb) == 0:
            continue
        ma, mb = float(np.median(xa)), float(np.median(xb))
        p: float | None = None
        if len(xa) >= o.min_records and len(xb) >= o.min_records:
            from scipy import stats  # here: its import costs more than most analyses

            p = float(stats.mannwhitneyu(xb, xa, alternative="two-sided").pvalue)
        big = abs(mb - ma) >= max(o.min_rise * ma, o.min_rise_ms)
        if big and (p is None or p < o.alpha):
            verdict = "degraded" if mb > ma else "improved"
        else:
            verdict = "unchanged"
        rows.append(PairChange(key[0], key[1], kind, ma, mb, len(xa), len(xb), p, verdict))
    return Comparison(before_label or _describe(before), after_label or _describe(after),
                      tuple(rows))


def _rtts(m: pd.DataFrame) -> dict[tuple[str, str, str], FloatArray]:
    """(region, target, kind) → the RTTs of its records that have one, in frame order."""
    m = m[m["rtt_ms"].notna().to_numpy(dtype=bool)]
    if m.empty:
        return {}
    frame = pd.DataFrame({"region": _as_str(m["region"]), "target": _as_str(m["target"]),
                          "kind": _as_str(m["kind"]),
                          "rtt": m["rtt_ms"].to_numpy(dtype=np.float64)})
    return {(str(r), str(t), str(k)): g.to_numpy(dtype=np.float64)
            for (r, t, k), g in frame.groupby(["region", "target", "kind"], sort=False)["rtt"]}


def snapshots(campaign: Any, compare_with: Any = None,
              compare_at: str | pd.Timestamp | None = None) -> tuple[Any, Any]:
    """(the campaign to analyse, the earlier snapshot or None): for ``analyse``.

    ``compare_with`` (a Campaign): the earlier snapshot, ``campaign`` the later one.
    ``compare_at``: split ``campaign`` at that time (records before it are the earlier
    snapshot).  Either way the analysis proper is of the later snapshot; the earlier one is
    only compared with it, pair by pair, never pooled.
    """
    from .frames import Campaign

    if compare_with is not None and compare_at is not None:
        raise ValueError("give either a second snapshot or a time to split at, not both")
    if compare_at is None:
        return campaign, compare_with
    at = pd.Timestamp(compare_at)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    frames = (campaign.measurements, campaign.samples, campaign.hops, campaign.phases,
              getattr(campaign, "readiness", None), getattr(campaign, "pmtu", None))

    def part(before: bool) -> Campaign:
        out: list[pd.DataFrame | None] = []
        for f in frames:
            if f is None:
                out.append(None)
                continue
            started = pd.to_datetime(f["started_at"], utc=True)
            out.append(f[started < at] if before else f[started >= at])
        m, s, h, p, ready, pmtu = out
        assert m is not None and s is not None and h is not None and p is not None
        return Campaign(m, s, h, p, readiness=ready, pmtu=pmtu)

    earlier, later = part(True), part(False)
    if earlier.measurements.empty or later.measurements.empty:
        raise ValueError(f"--compare-at {at.isoformat()} leaves no records on one side")
    return later, earlier


# ---------------------------------------------------------------------------------------
# Everything at once, for analyse()


def _history_members(flags: pd.DataFrame | None) -> list[Episode]:
    """The step flags of degrade.py's history test, as members for events."""
    if flags is None or flags.empty or "test" not in flags.columns:
        return []
    h = flags[(flags["test"] == "history") & (flags["metric"] == "rtt_ms")
              & flags["since"].notna()]
    out = []
    for row in h.to_dict("records"):
        value = float(row["value"])
        out.append(Episode(str(row["region"]), str(row["target"]), str(row["kind"]),
                           pd.Timestamp(row["since"]), None, float(row["reference"]), value,
                           value, 0, test="history"))
    return out


def find_changes(measurements: pd.DataFrame, *, flags: pd.DataFrame | None = None,
                 hops: pd.DataFrame | None = None, earlier: Any = None,
                 window: str | pd.Timedelta | None = None, min_rise: float = 0.08,
                 min_rise_ms: float = 1.0, z_min: float = 3.0, min_windows: int = 3,
                 penalty: float = 3.0, before_label: str | None = None,
                 after_label: str | None = None) -> Changes:
    """Episodes, improvements, events and (with ``earlier``) the snapshot comparison.

    ``flags``: degrade.py's flags (their history steps join the events); ``hops``: the
    campaign's hops (an event's common hop and AS); ``earlier``: the earlier snapshot (a
    Campaign) to compare pair by pair; the thresholds are :class:`EpisodeOptions`'.
    """
    o = EpisodeOptions(window=None if window is None else pd.Timedelta(window),
                       min_rise=min_rise, min_rise_ms=min_rise_ms, z_min=z_min,
                       min_windows=min_windows, penalty=penalty)
    notes: list[str] = []
    comparison = None
    if earlier is not None:
        comparison = compare(earlier.measurements, measurements, o,
                             before_label=before_label, after_label=after_label)
    else:
        split = snapshot_split(measurements)
        if split is not None:
            before = measurements[pd.to_datetime(measurements["started_at"], utc=True) < split]
            after = measurements[pd.to_datetime(measurements["started_at"], utc=True) >= split]
            comparison = compare(before, after, o)
            notes.append(f"the records form two snapshots far apart in time ({comparison.before}"
                         f"; {comparison.after}): the ranking pools them as repeats; they are "
                         f"compared pair by pair below (or give --compare-at "
                         f"{split.isoformat()} to rank the later one alone)")
    window_used, episodes, improvements = find_episodes(measurements, o)
    members = list(episodes)
    for h in _history_members(flags):
        # A step already seen as an episode of the same pair is one flag, not two.
        if not any(e.region == h.region and e.target == h.target
                   and window_used is not None
                   and abs(e.start - h.start) <= max(window_used, pd.Timedelta(0)) * 4
                   for e in episodes):
            members.append(h)
    paths = find_path_changes(hops, measurements, episodes=episodes, improvements=improvements,
                              min_tolerance=2 * (window_used or pd.Timedelta(0)))
    events = group_events(members, window_used or pd.Timedelta("1h"), hops, paths)
    give_back()  # the step's freed memory (some 100 MB at 1M records; see codes.give_back)
    return Changes(window=window_used, episodes=tuple(episodes),
                   improvements=tuple(improvements), events=tuple(events),
                   comparison=comparison, notes=tuple(notes), options=replace(o),
                   paths=tuple(paths))
