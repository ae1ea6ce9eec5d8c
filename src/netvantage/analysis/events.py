"""Events: flags of several pairs that start together and share something, grouped as one.

Real networks shift many pairs at once for one cause (a cable, a peering, a data centre's
uplink).  Two flags are *linked* when they start within one window of each other (the episode
detector's window) **and** their pairs share a data centre, a region, an AS on their traced
paths, or a path segment (two successive responding hops).  An event is a connected group
of linked flags covering at least two (region, target) pairs.  Each event carries its pairs,
what they all share (the data centre, the region, the ASes and hops common to every traced
pair), and its timeline (each pair's start and end, and the path changes of its pairs
around it, in order: a rise that comes with a new route says so).

Pure functions: the flags (see :class:`netvantage.analysis.episodes.Episode`) and the
``hops`` frame in, :class:`Event` objects out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .codes import sorted_codes

if TYPE_CHECKING:
    from .episodes import Episode
    from .pathchange import PathChange

__all__ = ["Event", "group_events", "path_facts"]


def _short(ts: pd.Timestamp) -> str:
    ts = pd.Timestamp(ts)
    return f"{ts:%Y-%m-%d}" if ts == ts.normalize() else f"{ts:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True, slots=True)
class PathFacts:
    """What the traces of one pair crossed."""

    asns: frozenset[str]
    hops: frozenset[str]  # responding addresses
    segments: frozenset[tuple[str, str]]  # successive responding addresses
    names: tuple[tuple[str, str], ...]  # address → "address (city, AS…)" for the text


@dataclass(frozen=True, slots=True)
class Event:
    """Several pairs' flags starting together, with what they share and their timeline."""

    number: int
    members: tuple[Episode, ...]
    shared: tuple[str, ...]  # what every pair shares, in words
    common_asns: tuple[str, ...]
    common_hops: tuple[str, ...]
    timeline: tuple[tuple[pd.Timestamp, str], ...]

    @property
    def start(self) -> pd.Timestamp:
        return min(m.start for m in self.members)

    @property
    def end(self) -> pd.Timestamp | None:
        """The last recovery, or None while any pair is still elevated."""
        ends = [m.end for m in self.members]
        return None if any(e is None for e in ends) else max(e for e in ends if e is not None)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({(m.region, m.target) for m in self.members}))

    def headline(self) -> str:
        until = f"until {_short(self.end)}" if self.end is not None else "ongoing"
        share = "; ".join(self.shared) if self.shared else "linked pairs"
        return (f"Event {self.number}: {len(self.pairs)} pairs from {_short(self.start)} "
                f"{until} ({share})")

    def to_dict(self) -> dict[str, Any]:
        end = self.end
        return {"event": self.number, "start": pd.Timestamp(self.start).isoformat(),
                "end": end.isoformat() if end is not None else "ongoing",
                "pairs": [m.to_dict() for m in self.members],
                "shared": list(self.shared), "common_asns": list(self.common_asns),
                "common_hops": list(self.common_hops),
                "timeline": [{"at": pd.Timestamp(t).isoformat(), "what": what}
                             for t, what in self.timeline]}

    def text_lines(self) -> list[str]:
        lines = [self.headline()]
        if self.common_hops:
            lines.append("  common hops: " + ", ".join(self.common_hops))
        if self.common_asns:
            lines.append("  common ASes: " + ", ".join(self.common_asns))
        lines += [f"  {_short(t)}  {what}" for t, what in self.timeline]
        return lines


def path_facts(hops: pd.DataFrame | None,
               pairs: Collection[tuple[str, str]] | None = None
               ) -> dict[tuple[str, str], PathFacts]:
    """(region, target) → ASes, hops and segments its traces crossed (``pairs``: only those).

    One pass over the answering hops sorted by (pair, trace, TTL): a trace's segments are
    its successive answering TTLs (the first responder listed at each), whatever the
    number of pairs or traces.
    """
    if hops is None or hops.empty:
        return {}
    keep = hops["address"].notna().to_numpy(dtype=bool)
    if pairs is not None:
        keep = keep & _of_pairs(hops["region"], hops["target"], pairs)
    # Only the rows and columns read below: the flagged pairs are a few of the hops'.
    h = hops.loc[keep, [c for c in _FACT_COLUMNS if c in hops.columns]]
    region, target = h["region"].astype(str), h["target"].astype(str)
    if h.empty:
        return {}
    pair_code, pair_keys = pd.MultiIndex.from_arrays([region, target]).factorize(sort=True)
    trace = pd.factorize(h["id"], sort=False)[0]
    frame = pd.DataFrame({"pair": pair_code, "trace": trace,
                          "ttl": h["ttl"].to_numpy(), "address": h["address"].astype(str)})
    frame = frame.sort_values(["pair", "trace", "ttl"], kind="stable")
    at_ttl = frame.drop_duplicates(["pair", "trace", "ttl"])
    same = ((at_ttl["pair"].to_numpy()[1:] == at_ttl["pair"].to_numpy()[:-1])
            & (at_ttl["trace"].to_numpy()[1:] == at_ttl["trace"].to_numpy()[:-1]))
    address = at_ttl["address"].to_numpy()
    segments = pd.DataFrame({"pair": at_ttl["pair"].to_numpy()[1:][same],
                             "a": address[:-1][same], "b": address[1:][same]}
                            ).drop_duplicates()
    asn = (h["asn"] if "asn" in h.columns else pd.Series(pd.NA, index=h.index))
    asns = pd.DataFrame({"pair": pair_code, "asn": asn.to_numpy()}).dropna().drop_duplicates()
    first = pd.DataFrame({"pair": pair_code, "address": h["address"].astype(str).to_numpy(),
                          "city": (h["city"] if "city" in h.columns
                                   else pd.Series(None, index=h.index)).to_numpy(),
                          "asn": asn.to_numpy()}).drop_duplicates(["pair", "address"])

    def grouped(frame: pd.DataFrame) -> dict[int, pd.DataFrame]:
        return {int(g["pair"].iloc[0]): g for _, g in frame.groupby("pair", sort=False)}

    by_asn, by_segment, by_first = grouped(asns), grouped(segments), grouped(first)
    empty = pd.DataFrame({"pair": [], "asn": [], "a": [], "b": [], "address": [], "city": []})
    out: dict[tuple[str, str], PathFacts] = {}
    for p, (r, t) in enumerate(pair_keys):
        names: dict[str, str] = {}
        rows = by_first.get(p, empty)
        for address, city, number in zip(rows["address"], rows["city"], rows["asn"],
                                         strict=True):
            extra = [str(v) for v in (city, number) if v is not None and not pd.isna(v)]
            names[str(address)] = f"{address} ({', '.join(extra)})" if extra else str(address)
        seg = by_segment.get(p, empty)
        out[(str(r), str(t))] = PathFacts(
            frozenset(str(a) for a in by_asn.get(p, empty)["asn"]),
            frozenset(str(a) for a in rows["address"]),
            frozenset(zip(seg["a"].astype(str), seg["b"].astype(str), strict=True)),
            tuple(sorted(names.items())))
    return out


#: The hops' columns :func:`path_facts` reads.
_FACT_COLUMNS = ("id", "region", "target", "ttl", "address", "asn", "city")


def _of_pairs(region: pd.Series, target: pd.Series, pairs: Collection[tuple[str, str]]
              ) -> npt.NDArray[np.bool_]:
    """Which rows' (region, target), as strings (a missing key matches nothing), is one of
    ``pairs``.

    Compared on the keys' codes (:func:`codes.sorted_codes`: a categorical's categories
    turned into strings once): at 1M records the two flagged pairs' rows were found by a
    string per hop row and a MultiIndex of them, which cost most of this step (0.5-1 s).
    """
    (rc, r_names), (tc, t_names) = sorted_codes(region), sorted_codes(target)
    at_region = {str(name): i for i, name in enumerate(r_names)}
    at_target = {str(name): j for j, name in enumerate(t_names)}
    width = max(len(t_names), 1)
    wanted = [at_region[r] * width + at_target[t] for r, t in pairs
              if r in at_region and t in at_target]
    return np.asarray((rc >= 0) & (tc >= 0) & np.isin(rc * width + tc, wanted), dtype=bool)


def _shares(a: Episode, b: Episode, facts: dict[tuple[str, str], PathFacts]) -> bool:
    if a.target == b.target or a.region == b.region:
        return True
    fa, fb = facts.get((a.region, a.target)), facts.get((b.region, b.target))
    return bool(fa and fb and (fa.asns & fb.asns or fa.segments & fb.segments))


def group_events(flags: Sequence[Episode], window: pd.Timedelta,
                 hops: pd.DataFrame | None = None,
                 paths: Sequence[PathChange] = ()) -> list[Event]:
    """Events of at least two pairs, earliest first (see the module docstring).

    ``paths``: path changes (:mod:`.pathchange`); those of an event's pairs from one
    window before its start to one window after its end join its timeline.
    """
    n = len(flags)
    # What the flagged pairs' paths crossed (only theirs; none needed below two flags).
    facts = path_facts(hops, {(f.region, f.target) for f in flags}) if n >= 2 else {}
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = flags[i], flags[j]
            if abs(a.start - b.start) <= window and _shares(a, b, facts):
                parent[root(i)] = root(j)
    groups: dict[int, list[Episode]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(flags[i])
    events: list[Event] = []
    for members in sorted(groups.values(), key=lambda g: min(m.start for m in g)):
        if len({(m.region, m.target) for m in members}) < 2:
            continue
        members = sorted(members, key=lambda m: (m.start, m.region, m.target))
        events.append(_event(len(events) + 1, members, facts, paths, window))
    return events


def _event(number: int, members: list[Episode], facts: dict[tuple[str, str], PathFacts],
           paths: Sequence[PathChange] = (), window: pd.Timedelta | None = None) -> Event:
    shared: list[str] = []
    targets = {m.target for m in members}
    regions = {m.region for m in members}
    if len(targets) == 1:
        shared.append(f"data centre {next(iter(targets))}")
    if len(regions) == 1:
        shared.append(f"region {next(iter(regions))}")
    traced = [facts[(m.region, m.target)] for m in members if (m.region, m.target) in facts]
    asns: tuple[str, ...] = ()
    common: tuple[str, ...] = ()
    if len(traced) >= 2:
        asns = tuple(sorted(frozenset.intersection(*(f.asns for f in traced))))
        names = dict(traced[0].names)
        common = tuple(names.get(a, a) for a in
                       sorted(frozenset.intersection(*(f.hops for f in traced))))
        if asns:
            shared.append("AS " + ", ".join(asns))
        segments = frozenset.intersection(*(f.segments for f in traced))
        if segments and not (len(targets) == 1 or len(regions) == 1):
            shared.append(f"{len(segments)} path segment(s)")
    timeline: list[tuple[pd.Timestamp, str]] = []
    for m in members:
        what = (f"{m.region} -> {m.target} rises to {m.level_ms:.1f} ms from "
                f"{m.baseline_ms:.1f} ms" + (" (step)" if m.test == "history" else ""))
        timeline.append((m.start, what))
        if m.end is not None:
            timeline.append((m.end, f"{m.region} -> {m.target} back to its baseline"))
    pairs = {(m.region, m.target) for m in members}
    window = window if window is not None else pd.Timedelta(0)
    first = min(m.start for m in members) - window
    ends = [m.end for m in members]
    last = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    for p in paths:
        if (p.region, p.target) in pairs and p.at >= first and (
                last is None or p.at <= last + window):
            timeline.append((p.at, f"{p.region} -> {p.target}: path changed at TTL "
                             f"{', '.join(map(str, p.ttls))} (agent {p.agent})"))
    timeline.sort(key=lambda t: t[0])
    return Event(number, tuple(members), tuple(shared), asns, common, tuple(timeline))
