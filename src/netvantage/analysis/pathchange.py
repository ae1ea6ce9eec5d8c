"""Path changes over time: per (agent, target), each trace compared with the one before.

Pure functions over the ``hops`` and ``measurements`` frames (see
:mod:`netvantage.analysis.frames`); the episodes and improvements of
:mod:`netvantage.analysis.episodes` to tie a latency change to a path change.

The rules, and why
------------------
*A trace's path* is, per TTL, the set of addresses that answered there.  Only traces
that reached their target count: one that stopped short says nothing about where the
path ends.  A silent TTL matches anything (a lost probe is not a new path).

*Two consecutive traces differ* (of one agent towards one target, by start time) at a TTL
where both have answers and share none, or where only one of them has a hop at all
(the path got longer or shorter).  The AS path (the annotated ASes along the path, each
once, in order) is compared too, when the hops are annotated.

*A difference is a path change* when it lasts and is not load balancing: the trace
after the new one agrees with it, the addresses that left do not come back at their TTL
in the next ``window`` traces, and the addresses that arrived were not there in the
``window`` traces before.  A per-flow load balancer whose branches alternate from trace
to trace (each trace draws its own flow) therefore makes no path changes; a route that
moves and stays makes one, dated by the first trace on the new path, so it is found
within one trace interval of the moment the route moved.  A change back is a second
change.

*Latency*: each change carries the median destination RTT of the traces on the old path
(up to ``window`` × 3 of them, since the change before) and on the new one (until the
change after).  A change *coincides* with an episode (a rise) or an improvement of the
same (region, target) starting within ``tolerance`` of it: the analysis says so, and the
report marks the change on its time line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

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


@dataclass(frozen=True, slots=True)
class _Trace:
    id: str
    at: pd.Timestamp
    hops: dict[int, frozenset[str]]  # TTL → addresses (answered TTLs only)
    last: int
    asns: tuple[str, ...]
    rtt_ms: float | None


def _differ(a: _Trace, b: _Trace) -> list[int]:
    out = []
    for ttl in range(1, max(a.last, b.last) + 1):
        x, y = a.hops.get(ttl), b.hops.get(ttl)
        if ttl > a.last or ttl > b.last or (x is not None and y is not None and not x & y):
            out.append(ttl)
    return out


def _side(t: _Trace) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(sorted(t.hops[ttl])) if ttl in t.hops else ("*",)
                 for ttl in range(1, t.last + 1))


def _traces(hops: pd.DataFrame, measurements: pd.DataFrame | None
            ) -> dict[tuple[str, str, str], list[_Trace]]:
    """(agent, region, target) → its reached traces, by start time."""
    h = hops[["id", "region", "target", "started_at", "ttl", "address", "replies",
              "is_destination", *(["asn"] if "asn" in hops.columns else [])]]
    ids = h["id"].astype(str)
    reached = set(ids[h["is_destination"].fillna(False).astype(bool)
                      & h["address"].notna()])
    agents: dict[str, str] = {}
    rtts: dict[str, float] = {}
    if measurements is not None and not measurements.empty:
        m = measurements[measurements["kind"].astype(str) == "trace"]
        agents = dict(zip(m["id"].astype(str), m["agent"].astype(str), strict=True))
        rtts = {k: float(v) for k, v in zip(m["id"].astype(str),
                                            pd.to_numeric(m["rtt_ms"]), strict=True)
                if v is not None and not math.isnan(float(v))}
    h = h.assign(id=ids)[ids.isin(reached)]
    if h.empty:
        return {}
    h = h.sort_values(["id", "ttl"], kind="mergesort")
    out: dict[tuple[str, str, str], list[_Trace]] = {}
    for tid, t in h.groupby("id", sort=False):
        first = t.iloc[0]
        answered = t[t["address"].notna()]
        per: dict[int, frozenset[str]] = {}
        for ttl, address in zip(answered["ttl"].astype(int), answered["address"].astype(str),
                                strict=True):
            per[ttl] = per.get(ttl, frozenset()) | {address}
        asns: list[str] = []
        if "asn" in answered.columns:
            for value in answered.sort_values(["ttl", "replies"],
                                              ascending=[True, False]).drop_duplicates(
                                                  "ttl")["asn"]:
                if value is None or (isinstance(value, float) and math.isnan(value)) \
                        or value is pd.NA:
                    continue
                if not asns or asns[-1] != str(value):
                    asns.append(str(value))
        tid = str(tid)
        key = (agents.get(tid, str(first["region"])), str(first["region"]),
               str(first["target"]))
        out.setdefault(key, []).append(_Trace(tid, pd.Timestamp(first["started_at"]), per,
                                              int(t["ttl"].max()), tuple(asns),
                                              rtts.get(tid)))
    for seq in out.values():
        seq.sort(key=lambda x: x.at)
    return out


def _median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.median(got)) if got else None


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
    for (agent, region, target), seq in sorted(_traces(hops, measurements).items()):
        gaps = [b.at - a.at for a, b in itertools.pairwise(seq)]
        tol = tolerance if tolerance is not None else max(
            2 * pd.Series(gaps).median() if gaps else pd.Timedelta(0),
            min_tolerance or pd.Timedelta(0))
        found: list[int] = []
        for i in range(1, len(seq) - 1):
            a, b = seq[i - 1], seq[i]
            ttls = _differ(a, b)
            if not ttls or _differ(b, seq[i + 1]):
                continue  # no difference, or the new path does not hold
            later, earlier = seq[i + 1:i + window], seq[max(0, i - window):i - 1]
            flapping = any(a.hops.get(ttl, frozenset()) & t.hops.get(ttl, frozenset())
                           for ttl in ttls for t in later) or \
                any(b.hops.get(ttl, frozenset()) & t.hops.get(ttl, frozenset())
                    for ttl in ttls for t in earlier)
            if not flapping:
                found.append(i)
        for n, i in enumerate(found):
            a, b = seq[i - 1], seq[i]
            start = max(found[n - 1] if n else 0, i - 3 * window)
            stop = min(found[n + 1] if n + 1 < len(found) else len(seq), i + 3 * window)
            change = PathChange(
                agent=agent, region=region, target=target, at=b.at, last_before=a.at,
                id_before=a.id, id_after=b.id, ttls=tuple(_differ(a, b)), before=_side(a),
                after=_side(b), as_before=a.asns, as_after=b.asns,
                rtt_before_ms=_median([t.rtt_ms for t in seq[start:i]]),
                rtt_after_ms=_median([t.rtt_ms for t in seq[i:stop]]))
            changes.append(_tie(change, episodes, improvements, tol))
    changes.sort(key=lambda c: (c.at, c.region, c.target, c.agent))
    return changes


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
