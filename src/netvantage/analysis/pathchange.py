"""Path changes over time: per (agent, target), each trace compared with the path before it.

Pure functions over the ``hops`` and ``measurements`` frames (see
:mod:`netvantage.analysis.frames`); the episodes and improvements of
:mod:`netvantage.analysis.episodes` to tie a latency change to a path change.

The rules, and why
------------------
*A trace's path* is, per TTL, the set of addresses that answered there.  Only traces
that reached their target count: one that stopped short says nothing about where the
path ends.  Each trace is compared with the path *known so far*: the trace before it,
with the TTLs it left silent filled from the traces before that (a lost probe is neither
a new path nor the end of the old one).

*A trace differs* at a TTL where it and the known path both have answers and share
none, or where only one of them has a hop at all (the path got longer or shorter).
Consecutive traces with the same hops are recognised by a 64-bit key of their (TTL,
address) rows, so a long campaign is mostly array work.  The AS path (the annotated ASes
along the path, each once, in order) is reported too, when the hops are annotated.

*A difference is a path change* when it lasts and is not load balancing: the trace
after the new one agrees with it (as known after it), the addresses that left do not
come back at their TTL in the next ``window`` traces, and the addresses that arrived
were not there in the ``window`` traces before.  A per-flow load balancer whose
branches alternate from trace to trace (each trace draws its own flow) therefore makes
no path changes; a route that moves and stays makes one, dated by the first trace on the
new path, so it is found within one trace interval of the moment the route moved (two,
if that first trace lost exactly the hops that moved).  A change back is a second one.

*Latency*: each change carries the median destination RTT of the traces on the old path
(up to ``window`` × 3 of them, since the change before) and on the new one (until the
change after).  A change *coincides* with an episode (a rise) or an improvement of the
same (region, target) starting within ``tolerance`` of it: the analysis says so, and the
report marks the change on its time line.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .codes import positions

if TYPE_CHECKING:
    from .episodes import Episode, Improvement

__all__ = ["PathChange", "find_path_changes"]

WINDOW = 3


def _short(ts: pd.Timestamp) -> str:
    return f"{pd.Timestamp(ts):%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True, slots=True)
class PathChange:
    """One agent's path to one target moved (see the module docstring)."""

    agent: str
    region: str
    target: str
    at: pd.Timestamp  # start of the first trace on the new path
    last_before: pd.Timestamp  # start of the last trace on the old path
    id_before: str
    id_after: str
    ttls: tuple[int, ...]  # where the two traces differ
    before: tuple[tuple[str, ...], ...]  # per TTL from 1, the addresses ("*": silent)
    after: tuple[tuple[str, ...], ...]
    as_before: tuple[str, ...]
    as_after: tuple[str, ...]
    rtt_before_ms: float | None
    rtt_after_ms: float | None
    coincides: str | None = None  # the episode or improvement it coincides with, in words

    @property
    def as_changed(self) -> bool:
        return bool(self.as_before or self.as_after) and self.as_before != self.as_after

    def _hops(self, side: tuple[tuple[str, ...], ...]) -> str:
        return ", ".join(f"{ttl}: {'|'.join(side[ttl - 1]) if ttl <= len(side) else '-'}"
                         for ttl in self.ttls)

    def headline(self) -> str:
        rtt = ""
        if self.rtt_before_ms is not None and self.rtt_after_ms is not None:
            rtt = (f"; RTT {self.rtt_before_ms:.1f} -> {self.rtt_after_ms:.1f} ms "
                   f"({self.rtt_after_ms - self.rtt_before_ms:+.1f})")
        return (f"{_short(self.at)}  {self.region} -> {self.target} (agent {self.agent}): "
                f"path changed at TTL {', '.join(map(str, self.ttls))}{rtt}")

    def text_lines(self) -> list[str]:
        lines = [self.headline(),
                 f"  before (until {_short(self.last_before)}): {self._hops(self.before)}",
                 f"  after: {self._hops(self.after)}"]
        if self.as_changed:
            lines.append(f"  AS path: {' '.join(self.as_before) or '?'} -> "
                         f"{' '.join(self.as_after) or '?'}")
        if self.coincides:
            lines.append(f"  coincides with {self.coincides}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "region": self.region, "target": self.target,
                "at": pd.Timestamp(self.at).isoformat(),
                "last_before": pd.Timestamp(self.last_before).isoformat(),
                "id_before": self.id_before, "id_after": self.id_after,
                "ttls": list(self.ttls), "before": [list(x) for x in self.before],
                "after": [list(x) for x in self.after], "as_before": list(self.as_before),
                "as_after": list(self.as_after), "as_changed": self.as_changed,
                "rtt_before_ms": self.rtt_before_ms, "rtt_after_ms": self.rtt_after_ms,
                "coincides": self.coincides}


class _Rows:
    """The answered hop rows of all reached traces, sorted by (trace, TTL, address)."""

    def __init__(self, ttls: npt.NDArray[np.int64], codes: npt.NDArray[np.int64],
                 addresses: npt.NDArray[Any], asns: npt.NDArray[Any] | None) -> None:
        self.ttls, self.codes, self.addresses, self.asns = ttls, codes, addresses, asns


class _Trace:
    """One reached trace: a slice of :class:`_Rows`, decoded on demand."""

    __slots__ = ("_asns", "_hops", "at", "end", "id", "key", "last", "rows", "rtt_ms", "start")

    def __init__(self, tid: str, at: int, rows: _Rows, start: int, end: int, key: int,
                 last: int, rtt_ms: float | None) -> None:
        self.id, self.at, self.rows, self.start, self.end = tid, at, rows, start, end
        self.key, self.last, self.rtt_ms = key, last, rtt_ms  # at: ns since the epoch
        self._hops: dict[int, frozenset[int]] | None = None
        self._asns: tuple[str, ...] | None = None

    @property
    def when(self) -> pd.Timestamp:
        return pd.Timestamp(self.at, tz="UTC")

    @property
    def hops(self) -> dict[int, frozenset[int]]:
        """TTL → address codes (answered TTLs only; :meth:`names` turns codes to text)."""
        if self._hops is None:
            r = self.rows
            per: dict[int, set[int]] = {}
            for ttl, code in zip(r.ttls[self.start:self.end].tolist(),
                                 r.codes[self.start:self.end].tolist(), strict=True):
                if ttl in per:
                    per[ttl].add(code)
                else:
                    per[ttl] = {code}
            self._hops = {ttl: frozenset(v) for ttl, v in per.items()}
        return self._hops

    def names(self, codes: frozenset[int]) -> tuple[str, ...]:
        if len(codes) == 1:  # most TTLs: no sort of one name
            (code,) = codes
            return (str(self.rows.addresses[code]),)
        return tuple(sorted(str(self.rows.addresses[c]) for c in codes))

    @property
    def asns(self) -> tuple[str, ...]:
        """The AS path: each TTL's first annotated AS, consecutive repeats once."""
        if self._asns is None:
            path: list[str] = []
            r = self.rows
            if r.asns is not None:
                seen: set[int] = set()
                for ttl, value in zip(r.ttls[self.start:self.end].tolist(),
                                      r.asns[self.start:self.end], strict=True):
                    if ttl in seen or value is None or value is pd.NA or (
                            isinstance(value, float) and math.isnan(value)):
                        continue
                    seen.add(ttl)
                    if not path or path[-1] != str(value):
                        path.append(str(value))
            self._asns = tuple(path)
        return self._asns


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A 64-bit mixer (the finaliser of SplitMix64) so that sums of mixed rows rarely meet."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_Path = tuple[dict[int, frozenset[int]], int]  # TTL → address codes, and the last TTL


def _differ(x: _Path, y: _Path) -> list[int]:
    """TTLs where two paths differ: both answered and share no address, or one ends first."""
    (hx, last_x), (hy, last_y) = x, y
    out = []
    for ttl in range(1, max(last_x, last_y) + 1):
        u, v = hx.get(ttl), hy.get(ttl)
        if ttl > last_x or ttl > last_y or (u is not None and v is not None and not u & v):
            out.append(ttl)
    return out


def _path(t: _Trace) -> _Path:
    return t.hops, t.last


def _merge(ref: _Path, t: _Trace) -> _Path:
    """The path as known after trace ``t``: its answers, and the earlier ones where it was
    silent (a lost probe does not erase a hop)."""
    hops = {ttl: v for ttl, v in ref[0].items() if ttl <= t.last}
    hops.update(t.hops)
    return hops, t.last


def _side(t: _Trace, path: _Path) -> tuple[tuple[str, ...], ...]:
    hops, last = path
    return tuple(t.names(hops[ttl]) if ttl in hops else ("*",) for ttl in range(1, last + 1))


class _Table:
    """Every reached trace as arrays, in the order of its group (agent, region, target;
    the groups sorted) and, within a group, of its start time.

    A campaign has some hundred thousand traces and a few thousand changes: the
    :class:`_Trace` objects are made only for the traces a change or a set-wise comparison
    reads (:meth:`trace`).
    """

    def __init__(self, rows: _Rows, tids: list[str], start: npt.NDArray[np.int64],
                 end: npt.NDArray[np.int64], key: npt.NDArray[np.uint64],
                 last: npt.NDArray[np.int64], at: npt.NDArray[np.int64],
                 rtt: npt.NDArray[np.float64], groups: list[tuple[str, str, str]],
                 bounds: list[int]) -> None:
        self.rows, self.tids, self.start, self.end, self.key = rows, tids, start, end, key
        self.last, self.at, self.rtt, self.groups, self.bounds = last, at, rtt, groups, bounds

    def trace(self, i: int) -> _Trace:
        rtt = float(self.rtt[i])
        return _Trace(self.tids[i], int(self.at[i]), self.rows, int(self.start[i]),
                      int(self.end[i]), int(self.key[i]), int(self.last[i]),
                      None if math.isnan(rtt) else rtt)

    def sequence(self, g: int) -> list[_Trace]:
        """Group ``g``'s traces, by start time."""
        return [self.trace(i) for i in range(self.bounds[g], self.bounds[g + 1])]


def _traces(hops: pd.DataFrame, measurements: pd.DataFrame | None) -> _Table | None:
    """The reached traces (:class:`_Table`), None when there are none.

    Array work only: a campaign's hops frame can hold millions of rows.  Each trace gets a
    64-bit key summing its mixed (TTL, address) rows and its last TTL: equal keys, equal
    paths, so most consecutive traces are compared by their keys alone.
    """
    answered = hops["address"].notna().to_numpy(dtype=bool)
    dest = hops["is_destination"].fillna(False).to_numpy(dtype=bool) & answered
    id_codes, id_values = pd.factorize(hops["id"])
    reached = np.zeros(len(id_values) + 1, dtype=bool)
    reached[id_codes[dest]] = True
    keep = answered & reached[id_codes]
    if not keep.any():
        return None
    # The kept rows of the columns used, not a copy of the whole frame's kept rows.
    kept = np.flatnonzero(keep)
    ids = id_codes[kept]
    addr_codes, addr_values = pd.factorize(hops["address"].iloc[kept])
    ttl = hops["ttl"].to_numpy(dtype=np.int64)[kept]
    order = np.lexsort((addr_codes, ttl, ids))
    ids, ttl, addr = ids[order], ttl[order], addr_codes[order].astype(np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
    ends = np.append(starts[1:], len(ids))
    mixed = _mix((ttl.astype(np.uint64) << np.uint64(40)) ^ addr.astype(np.uint64))
    with np.errstate(over="ignore"):
        keys = np.add.reduceat(mixed, starts)
    lasts = np.maximum.reduceat(ttl, starts)
    keys ^= _mix(lasts.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    rows = _Rows(ttl, addr, np.asarray(addr_values, dtype=object),
                 hops["asn"].iloc[kept[order]].to_numpy(dtype=object)
                 if "asn" in hops.columns else None)
    first = kept[order[starts]]
    names = np.asarray(id_values, dtype=object)[ids[starts]]
    regions = [str(r) for r in hops["region"].iloc[first].to_numpy(dtype=object)]
    targets = [str(t) for t in hops["target"].iloc[first].to_numpy(dtype=object)]
    ats = pd.to_datetime(hops["started_at"].iloc[first], utc=True)
    at_ns = ats.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    tids = [str(name) for name in names]
    agents, rtts = _agents_and_rtts(measurements, tids)
    owners = [r if a is None else a for a, r in zip(agents, regions, strict=True)]
    # Groups in the order of their (agent, region, target) strings, each group's traces by
    # start time (ties: in trace order, as a stable sort of each group's list kept them).
    codes = [pd.factorize(np.asarray(col, dtype=object), sort=True)
             for col in (owners, regions, targets)]
    (agent, agent_names), (region, region_names), (target, target_names) = codes
    by = np.lexsort((at_ns, target, region, agent))
    agent, region, target = agent[by], region[by], target[by]
    heads = np.flatnonzero(np.r_[True, (agent[1:] != agent[:-1]) | (region[1:] != region[:-1])
                                 | (target[1:] != target[:-1])])
    groups = [(str(agent_names[agent[i]]), str(region_names[region[i]]),
               str(target_names[target[i]])) for i in heads.tolist()]
    rtt = np.array([math.nan if v is None else v for v in rtts], dtype=np.float64)
    return _Table(rows, [tids[i] for i in by.tolist()], starts[by], ends[by], keys[by],
                  lasts[by], at_ns[by], rtt[by], groups, [*heads.tolist(), len(by)])


def _agents_and_rtts(measurements: pd.DataFrame | None, tids: list[str]
                     ) -> tuple[list[str | None], list[float | None]]:
    """Per trace id of ``tids``: the agent of its trace record (``astype(str)`` of it) and
    its destination RTT, None where there is none; the last record wins, and for the RTT
    the last one with an RTT.

    Looked up by the records' positions among the ids (Arrow's hash lookup), not by
    dictionaries of every trace record's id (a copy of the trace rows of the whole
    measurements frame, and two dicts of 150k strings, at 1M records).
    """
    agents: list[str | None] = [None] * len(tids)
    rtts: list[float | None] = [None] * len(tids)
    if measurements is None or measurements.empty or not tids:
        return agents, rtts
    trace = np.flatnonzero((measurements["kind"] == "trace").to_numpy(dtype=bool))
    at = positions(measurements["id"].iloc[trace], np.asarray(tids, dtype=object))
    rtt = pd.to_numeric(measurements["rtt_ms"].iloc[trace]).to_numpy(dtype=float)
    for keep, fill in ((at >= 0, agents), ((at >= 0) & ~np.isnan(rtt), rtts)):
        rows = np.flatnonzero(keep)
        # The last of each id's rows: the first in reverse order.
        found, first = np.unique(at[rows][::-1], return_index=True)
        last = rows[::-1][first]
        values = (measurements["agent"].iloc[trace[last]].astype(str).tolist()
                  if fill is agents else rtt[last].tolist())
        for i, v in zip(found.tolist(), values, strict=True):
            fill[i] = v
    return agents, rtts


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not None (None when none are).

    ``statistics.median``: the same middle value, or mean of the two middle ones, as
    ``numpy.median`` of a short list, at a tenth of its cost (it was called twice per
    change).
    """
    got = [v for v in values if v is not None]
    return float(statistics.median(got)) if got else None


def find_path_changes(hops: pd.DataFrame | None, measurements: pd.DataFrame | None = None,
                      *, window: int = WINDOW, episodes: Sequence[Episode] = (),
                      improvements: Sequence[Improvement] = (),
                      tolerance: pd.Timedelta | None = None,
                      min_tolerance: pd.Timedelta | None = None) -> list[PathChange]:
    """Every lasting path change, earliest first (see the module docstring).

    ``measurements`` gives each trace its agent and destination RTT (without it the
    region stands for the agent); ``episodes``/``improvements`` within ``tolerance``
    (default: twice the median gap between an agent's traces, at least ``min_tolerance``)
    of a change coincide with it.
    """
    if hops is None or hops.empty:
        return []
    changes: list[PathChange] = []
    table = _traces(hops, measurements)
    if table is None:
        return []
    for g, found in enumerate(_found_all(table, window)):
        if not found:
            continue
        agent, region, target = table.groups[g]
        lo, hi = table.bounds[g], table.bounds[g + 1]
        gaps = np.diff(table.at[lo:hi])
        tol = tolerance if tolerance is not None else max(
            pd.Timedelta(int(2 * np.median(gaps)), "ns") if gaps.size else pd.Timedelta(0),
            min_tolerance or pd.Timedelta(0))
        for n, (i, before, ttls) in enumerate(found):
            a, b = table.trace(lo + i - 1), table.trace(lo + i)
            start = max(found[n - 1][0] if n else 0, i - 3 * window)
            stop = min(found[n + 1][0] if n + 1 < len(found) else hi - lo, i + 3 * window)
            change = PathChange(
                agent=agent, region=region, target=target, at=b.when, last_before=a.when,
                id_before=a.id, id_after=b.id, ttls=tuple(ttls), before=_side(a, before),
                after=_side(b, _path(b)), as_before=a.asns, as_after=b.asns,
                rtt_before_ms=_median(_rtts(table.rtt[lo + start:lo + i])),
                rtt_after_ms=_median(_rtts(table.rtt[lo + i:lo + stop])))
            changes.append(_tie(change, episodes, improvements, tol))
    changes.sort(key=lambda c: (c.at, c.region, c.target, c.agent))
    return changes


def _rtts(values: npt.NDArray[np.float64]) -> list[float | None]:
    """The traces' destination RTTs as :func:`_median` takes them (None: no RTT)."""
    return [None if math.isnan(v) else v for v in values.tolist()]


def _found_all(table: _Table, window: int) -> list[list[tuple[int, _Path, list[int]]]]:
    """Per sequence, its lasting changes: (index of the first trace on the new path, the path
    known before it, the TTLs where they differ).  The traces share one :class:`_Rows`.

    Each trace is compared with the path known so far (the earlier traces merged, a later
    answer replacing an earlier one at its TTL, a shorter trace cutting the path).  When
    every TTL of a sequence has at most one address, that comparison is array work over one
    traces × TTLs table of address codes for all the sequences at once (the known path is
    a carry-forward down the table, restarted at each sequence's first trace), and so is
    the flapping test; only the lasting changes are turned into paths.  A sequence with
    several addresses at a TTL of a trace (load balancing seen within one trace) is
    compared as sets, one trace after the other (:func:`_found_one_by_one`).
    """
    out: list[list[tuple[int, _Path, list[int]]]] = [[] for _ in table.groups]
    count = len(table.tids)
    if count < 2:
        return out
    lengths = np.diff(np.asarray(table.bounds, dtype=np.int64)).astype(np.int64)
    group = np.repeat(np.arange(len(table.groups)), lengths)
    offset = np.cumsum(lengths) - lengths  # each sequence's first trace
    rows = table.rows
    starts = table.start
    sizes = table.end - starts
    lasts = table.last
    keys = table.key
    which = np.repeat(np.arange(count), sizes)
    at = np.arange(int(sizes.sum())) + np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
    ttl, code = rows.ttls[at], rows.codes[at]
    twice = np.flatnonzero((which[1:] == which[:-1]) & (ttl[1:] == ttl[:-1]))
    by_sets = np.zeros(len(table.groups), dtype=bool)
    by_sets[group[which[twice]]] = True
    width = int(lasts.max()) + 1
    column = np.arange(width)[None, :]
    hops = np.full((count, width), -1, dtype=np.int64)  # -1: no answer at that TTL
    hops[which, ttl] = code
    first = np.zeros(count, dtype=bool)
    first[offset[lengths > 0]] = True
    # The known path after each trace: per TTL the latest answer not cut off since by a
    # shorter trace; a trace marks the TTLs it answered or does not reach (the first of a
    # sequence marks them all: nothing is known before it).
    cut = (column > lasts[:, None]) | first[:, None]
    mark = np.where((hops >= 0) | cut, np.arange(count)[:, None], -1)
    latest = np.maximum.accumulate(mark, axis=0)
    known = hops[latest, column]
    # differ[i − 1]: the TTLs where trace i differs from the path known after trace i − 1.
    before, now = known[:-1], hops[1:]
    last_before, last_now = lasts[:-1, None], lasts[1:, None]
    differ = ((column >= 1) & (column <= np.maximum(last_before, last_now))
              & ((column > last_before) | (column > last_now)
                 | ((before >= 0) & (now >= 0) & (before != now))))
    differs = np.r_[False, differ.any(axis=1)] & ~first
    lasting = np.r_[~differs[1:] & ~first[1:], False]
    new = np.r_[False, keys[1:] != keys[:-1]] & ~first
    candidates = np.flatnonzero(new & differs & lasting & ~by_sets[group])
    # Flapping (see _flapping): at a TTL where they differ, the address that left is back
    # in one of the next window − 1 traces, or the one that came was in the window before.
    where = differ[candidates - 1]
    old, arrived = known[candidates - 1], hops[candidates]
    flapping = np.zeros(len(candidates), dtype=bool)
    for step in range(1, window + 1):
        for other, mine, ok in ((candidates + step, old, step < window),
                                (candidates - step, arrived, True)):
            inside = ok & (other >= 0) & (other < count)
            inside &= group[np.clip(other, 0, count - 1)] == group[candidates]
            if not inside.any():
                continue
            seen = hops[np.clip(other, 0, count - 1)]
            flapping |= inside & np.any(where & (mine >= 0) & (seen == mine), axis=1)
    for i in candidates[~flapping].tolist():
        g = int(group[i])
        ref: _Path = ({int(t): frozenset((int(c),)) for t, c in enumerate(known[i - 1].tolist())
                       if c >= 0}, int(lasts[i - 1]))
        out[g].append((i - int(offset[g]), ref, np.flatnonzero(differ[i - 1]).tolist()))
    for g in np.flatnonzero(by_sets).tolist():
        out[g] = _found_one_by_one(table.sequence(g), window)
    return out


def _found_one_by_one(seq: Sequence[_Trace], window: int) -> list[tuple[int, _Path, list[int]]]:
    """:func:`_found` by comparing each trace's address sets with the known path's."""
    found: list[tuple[int, _Path, list[int]]] = []  # index, path before, TTLs
    ref = _path(seq[0])
    for i in range(1, len(seq)):
        if seq[i].key == seq[i - 1].key:
            continue  # the same hops as the trace before: nothing new
        b = seq[i]
        ttls = _differ(ref, _path(b))
        after = _merge(ref, b)
        if ttls and i + 1 < len(seq) and not _differ(after, _path(seq[i + 1])) \
                and not _flapping(ref, b, ttls, seq[i + 1:i + window],
                                  seq[max(0, i - window):i]):
            found.append((i, ref, ttls))
        ref = after
    return found


def _flapping(before: _Path, b: _Trace, ttls: list[int], later: Sequence[_Trace],
              earlier: Sequence[_Trace]) -> bool:
    """Whether the hops that left come back soon, or the new ones were there just before:
    load balancing or a one-off, not a path change."""
    none: frozenset[int] = frozenset()
    for ttl in ttls:
        old, new = before[0].get(ttl, none), b.hops.get(ttl, none)
        if any(old & t.hops.get(ttl, none) for t in later) or \
                any(new & t.hops.get(ttl, none) for t in earlier):
            return True
    return False


def _tie(change: PathChange, episodes: Sequence[Episode],
         improvements: Sequence[Improvement], tolerance: pd.Timedelta) -> PathChange:
    """The change with the nearest coinciding episode or improvement of its pair named."""
    best: tuple[pd.Timedelta, str] | None = None
    at = pd.Timestamp(change.at)
    for e in episodes:
        if (e.region, e.target) == (change.region, change.target):
            gap = abs(pd.Timestamp(e.start) - at)
            if gap <= tolerance and (best is None or gap < best[0]):
                best = (gap, f"a rise [{e.kind}] from {_short(e.start)}: median "
                              f"{e.level_ms:.1f} ms vs {e.baseline_ms:.1f} ms before")
    for imp in improvements:
        if (imp.region, imp.target) == (change.region, change.target):
            gap = abs(pd.Timestamp(imp.at) - at)
            if gap <= tolerance and (best is None or gap < best[0]):
                best = (gap, f"an improvement [{imp.kind}] from {_short(imp.at)}: median "
                              f"{imp.after_ms:.1f} ms vs {imp.before_ms:.1f} ms before")
    if best is None:
        return change
    return replace(change, coincides=best[1])
