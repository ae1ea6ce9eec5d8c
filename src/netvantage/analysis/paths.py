"""Paths: where on a traceroute the latency or the loss starts, which ASes and places it crosses.

Every function takes the ``hops`` frame (:mod:`netvantage.analysis.frames`: one
row per trace, TTL and responder; a silent TTL is one row with address <NA>)
and returns a DataFrame or a dict; none reads files or the network.

The rules, and why
------------------
*Per TTL* the representative responder is the one with the most replies (a
per-packet load balancer can give several); the TTL's RTT is the smallest
``rtt_min_ms`` of its responders (the minimum is the least disturbed by
queueing noise, yet a *standing* queue still shows in it); its loss is
1 - replies / sent.

*First RTT jump.*  A step is the RTT increase from the previous answering TTL
(from 0 ms at the source for the first).  When both ends of a step have a
trusted location, the fibre floor of the distance between them is taken off
the step: a long submarine cable is expected to cost its length, a queue is
not.  The first step larger than ``max(JUMP_MIN_MS, JUMP_FACTOR × typical)``
is the jump, ``typical`` being the median of the trace's positive steps.  With
10 ms and 3 ×, the Lagos-Lisbon segment of the lab (about 60 ms of excess on
a 5-10 ms typical step) is found, ordinary steps of a few ms are not, and a
router whose ICMP answers are slow but whose later hops are not fast again is
not mistaken (only increases from the previous hop count).

*First persistent loss.*  Loss "shows" at a TTL when some probe there went
unanswered; it "persists" when at least half of the later TTLs, and at least
half of the next ``LOSS_WINDOW`` (3) TTLs, lose at least ``LOSS_CARRY_FRACTION``
(half) as much.  A router that rate-limits its ICMP replies, or never answers,
loses alone and is skipped, even when a lossy link further on makes most of
the path behind it lose too (hence the window); a congested link loses at its
far end and at everything behind it.  With two or three probes per TTL
one trace rarely sees loss of a few percent, so :func:`where_it_starts` pools
the probes of all traces of a (region, target) per TTL and applies the same
rule to the pooled ratios.

*Geography sanity.*  A hop located ``d`` km from the source cannot answer
faster than light in fibre: ``d ≤ rtt_min_ms / 2 × 200 km/ms``.  A hop beyond
that plus ``GEO_TOLERANCE_KM`` (the region's own extent and a database's
city-level error) is a ``geo_violation``; its location is not used for the
countries, the continents, the detour test or the step correction.  Without a
``locations`` frame the source is unknown and nothing can be checked.

*Continental detour.*  Source and destination on one continent (from
``locations``, else from the first and last located hops) and a trusted hop on
another.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .codes import give_back, sorted_codes
from .geo import continent_of, great_circle_km, rtt_floor_ms

__all__ = [
    "GEO_TOLERANCE_KM",
    "JUMP_FACTOR",
    "JUMP_MIN_MS",
    "LOSS_CARRY_FRACTION",
    "LOSS_PERSIST_SHARE",
    "LOSS_WINDOW",
    "path_changes",
    "path_evidence",
    "path_summary",
    "where_it_starts",
]

JUMP_MIN_MS = 10.0
JUMP_FACTOR = 3.0
LOSS_CARRY_FRACTION = 0.5
LOSS_PERSIST_SHARE = 0.5
LOSS_WINDOW = 3
GEO_TOLERANCE_KM = 500.0
SILENT = "*"

_HOP_INFO = ("address", "asn", "as_org", "city", "country")


def _nz(value: object) -> Any:
    """``None`` for any kind of missing value (pd.NA, NaN, None), the value otherwise."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------- per TTL

def _per_ttl(hops: pd.DataFrame) -> pd.DataFrame:
    """One row per (trace, TTL): representative responder, RTT, loss and the responder set.

    Rows in (id, TTL) order; the representative is the responder with the most replies,
    then the lower address (silent last); region, target, started_at and protocol are the
    TTL's first non-missing ones in that order.  Computed on integer codes by one stable
    sort and reductions over the (trace, TTL) runs: no copy of the hops frame, no group-by
    of its string columns (at 1M records this step took 2 s and some hundreds of MB).
    """
    return _ttl_table(hops, full=True)[0]


@dataclass(frozen=True, slots=True)
class _Runs:
    """How :func:`_ttl_table`'s rows stand to the hops frame, as arrays (one entry per
    (trace, TTL) row): ``rep`` its representative's hop row, ``trace`` its trace's code
    (0, 1, … in row order: what ``pd.factorize(per["id"])`` gives), ``address`` the
    representative's address code (codes that sort as the addresses do;
    ``len(addresses)`` when silent), ``region``/``target`` the row's first non-missing
    region and target as hop rows (-1: none)."""

    rep: npt.NDArray[np.intp]
    trace: npt.NDArray[np.intp]
    address: npt.NDArray[np.intp]
    addresses: npt.NDArray[np.object_]
    region: npt.NDArray[np.intp]
    target: npt.NDArray[np.intp]


def _ttl_table(hops: pd.DataFrame, *, full: bool) -> tuple[pd.DataFrame, _Runs]:
    """:func:`_per_ttl`'s table and its :class:`_Runs`.  Without ``full`` only the
    numeric columns (ttl, lat, lon, rtt_ms, replies, sent, loss) and region and target
    are built: :func:`path_evidence` reads the string columns of a few rows only, from
    the hops frame through ``rep`` (building them took most of this step's time)."""
    ids, names = sorted_codes(hops["id"])
    ttl_all = hops["ttl"].to_numpy()
    rows = np.flatnonzero((ids >= 0) & ~pd.isna(ttl_all))
    address, addresses = sorted_codes(hops["address"])
    address = np.where(address >= 0, address, len(addresses))  # silent sorts last
    replies = pd.to_numeric(hops["replies"]).fillna(0).astype("float64").to_numpy()
    order = np.lexsort((address[rows], -replies[rows], ttl_all[rows], ids[rows]))
    rows = rows[order]
    trace, ttl = ids[rows], ttl_all[rows]
    starts = np.ones(len(rows), dtype=bool)
    starts[1:] = (trace[1:] != trace[:-1]) | (ttl[1:] != ttl[:-1])
    at = np.flatnonzero(starts)
    rep = rows[at]
    new_trace = np.ones(len(at), dtype=bool)
    new_trace[1:] = trace[at][1:] != trace[at][:-1]
    runs = _Runs(rep, np.cumsum(new_trace) - 1, address[rep], addresses,
                 _first_valid_rows(hops["region"], rows, at) if "region" in hops.columns
                 else np.full(len(at), -1, dtype=np.intp),
                 _first_valid_rows(hops["target"], rows, at) if "target" in hops.columns
                 else np.full(len(at), -1, dtype=np.intp))
    out = pd.DataFrame({"id": pd.array(names[trace[at]], dtype="string")} if full else {})
    out["ttl"] = hops["ttl"].array.take(rep)
    for c in ("region", "target", "started_at", "protocol") if full else ("region", "target"):
        out[c] = _first_valid(hops[c], rows, at) if c in hops.columns else pd.NA
    if full:
        for c in _HOP_INFO:
            out[c] = hops[c].array.take(rep)
        out["address"] = out["address"].astype("string")
    for c in ("lat", "lon"):
        out[c] = pd.to_numeric(hops[c]).astype("float64").to_numpy()[rep]
    rtt = pd.to_numeric(hops["rtt_min_ms"]).astype("float64").to_numpy()[rows]
    sent = pd.to_numeric(hops["sent"]).astype("float64").to_numpy()[rows]
    if len(at):
        out["rtt_ms"] = np.fmin.reduceat(rtt, at)
        out["replies"] = np.add.reduceat(replies[rows], at)
        out["sent"] = np.fmax.reduceat(sent, at)
    else:
        for c in ("rtt_ms", "replies", "sent"):
            out[c] = np.empty(0)
    if full:
        dest = hops["is_destination"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        out["is_destination"] = pd.array(np.logical_or.reduceat(dest[rows], at) if len(at)
                                         else np.empty(0, dtype=bool), dtype="boolean")
    out["loss"] = 1.0 - out["replies"] / out["sent"].where(out["sent"] > 0)
    silent = out["rtt_ms"].isna() & out["replies"].eq(0)
    out["loss"] = out["loss"].where(~(silent & out["loss"].isna()), 1.0)
    if not full:
        return out, runs
    out["responders"] = pd.Series(
        _responders(np.cumsum(starts) - 1, address[rows], addresses, len(at)), dtype=object)
    return out[["id", "ttl", "region", "target", "started_at", "protocol", *_HOP_INFO, "lat",
                "lon", "rtt_ms", "replies", "sent", "loss", "is_destination",
                "responders"]], runs


def _first_valid_rows(column: pd.Series, rows: npt.NDArray[np.intp],
                      at: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Per run of ``rows`` (runs starting at ``at``), the row of ``column``'s first
    non-missing value; -1 when the run has none."""
    if not len(at):
        return np.empty(0, dtype=np.intp)
    valid = column.notna().to_numpy(dtype=bool)[rows]
    position = np.where(valid, np.arange(len(rows)), len(rows))
    first = np.minimum.reduceat(position, at)
    return np.where(first < len(rows), rows[np.minimum(first, len(rows) - 1)], -1)


def _first_valid(column: pd.Series, rows: npt.NDArray[np.intp], at: npt.NDArray[np.intp]
                 ) -> Any:
    """Per run of ``rows`` (runs starting at ``at``), ``column``'s first non-missing value
    (missing when the run has none), as ``GroupBy.first`` reads it."""
    return column.array.take(_first_valid_rows(column, rows, at), allow_fill=True)


def _responders(group: npt.NDArray[np.intp], address: npt.NDArray[np.intp],
                addresses: npt.NDArray[np.object_], groups: int) -> npt.NDArray[np.object_]:
    """Per (id, ttl) run: its distinct addresses, sorted, joined by "|" (``*`` when none
    answered).  ``group``: each row's run; ``address``: its address code (codes that sort
    as the addresses; ``len(addresses)`` for a silent row).

    Most TTLs have one responder: its address is taken as it is; only the TTLs with
    several are joined one by one.
    """
    out = np.full(groups, SILENT, dtype=object)
    answered = address < len(addresses)
    group, address = group[answered], address[answered]
    order = np.lexsort((address, group))
    group, address = group[order], address[order]
    keep = np.ones(len(group), dtype=bool)
    keep[1:] = (group[1:] != group[:-1]) | (address[1:] != address[:-1])
    group, address = group[keep], address[keep]
    several = np.zeros(len(group), dtype=bool)
    several[1:] = group[1:] == group[:-1]
    several[:-1] |= group[:-1] == group[1:]
    single = ~several
    out[group[single]] = addresses[address[single]]
    out[group[single]] = np.where(out[group[single]] == "", SILENT, out[group[single]])
    multi = np.flatnonzero(several)
    if len(multi):
        bounds = np.flatnonzero(np.r_[True, group[multi][1:] != group[multi][:-1], True])
        for a, b in itertools.pairwise(bounds.tolist()):
            out[group[multi[a]]] = "|".join(addresses[address[multi[a:b]]].tolist())
    return out


def _located(lat: object, lon: object) -> bool:
    return _nz(lat) is not None and _nz(lon) is not None


def _first_jump(rtts: list[float | None], coords: list[tuple[float, float] | None],
                source: tuple[float, float] | None,
                jump_min_ms: float, jump_factor: float) -> tuple[int, float] | None:
    """Index into the TTL list of the first jump and its (excess) step, or None."""
    steps: list[tuple[int, float]] = []
    prev_rtt, prev_at = 0.0, source
    for i, rtt in enumerate(rtts):
        if rtt is None:
            continue
        step = rtt - prev_rtt
        here = coords[i]
        if prev_at is not None and here is not None:
            step -= rtt_floor_ms(great_circle_km(prev_at[0], prev_at[1], here[0], here[1]))
        steps.append((i, step))
        prev_rtt, prev_at = rtt, here
    positive = [s for _, s in steps if s > 0]
    if not positive:
        return None
    limit = max(jump_min_ms, jump_factor * float(np.median(positive)))
    for i, s in steps:
        if s > limit:
            return i, s
    return None


def _first_loss(losses: list[float | None], carry: float, share: float) -> int | None:
    """Index of the first TTL whose loss persists over at least ``share`` of the later TTLs."""
    for i, loss in enumerate(losses):
        if loss is None or loss <= 0:
            continue
        later = [x >= carry * loss for x in losses[i + 1:] if x is not None]
        near = later[:LOSS_WINDOW]
        if not later or (sum(later) >= share * len(later) and sum(near) >= share * len(near)):
            return i
    return None


# --------------------------------------------------------------------------- per trace

def _place_index(locations: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    if locations is None:
        return {}
    return {str(r["name"]): {str(k): v for k, v in r.items()}
            for r in locations.to_dict("records")}


def path_summary(hops: pd.DataFrame, locations: pd.DataFrame | None = None, *,
                 jump_min_ms: float = JUMP_MIN_MS, jump_factor: float = JUMP_FACTOR,
                 geo_tolerance_km: float = GEO_TOLERANCE_KM) -> pd.DataFrame:
    """One row per trace id: its path, where RTT jumps and loss starts, what it crosses.

    Columns: id, region, target, started_at, protocol, ttls, reached,
    responders (tuple, one entry per TTL: an address, "a|b" for several, "*"
    silent), as_path (tuple of ASNs, consecutive repeats and unknowns dropped),
    countries and continents (tuples, in path order, repeats dropped, trusted
    hops only), src_continent, dst_continent, continental_detour (boolean,
    <NA> when a continent is unknown), geo_violation (bool) and
    geo_violation_ttls (tuple), then for the first jump ``jump_ttl``,
    ``jump_step_ms`` and ``jump_address``/``_asn``/``_as_org``/``_city``/``_country``
    and the same ``loss_*`` fields with ``loss_ratio`` for the first persistent
    loss (all <NA> when none was found).  The rules are in the module docstring.
    """
    per = _per_ttl(hops)
    places = _place_index(locations)
    rows: list[dict[str, Any]] = []
    for tid, t in per.groupby("id", sort=False):
        t = t.sort_values("ttl")
        recs = [{str(k): v for k, v in r.items()} for r in t.to_dict("records")]
        region, target = _nz(recs[0]["region"]), _nz(recs[0]["target"])
        src = places.get(str(region)) if region is not None else None
        dst = places.get(str(target)) if target is not None else None
        source = (float(src["lat"]), float(src["lon"])) if src and _located(
            src["lat"], src["lon"]) else None
        coords: list[tuple[float, float] | None] = []
        violations: list[int] = []
        for r in recs:
            here = (float(r["lat"]), float(r["lon"])) if _located(r["lat"], r["lon"]) else None
            rtt = _nz(r["rtt_ms"])
            if here is not None and source is not None and rtt is not None:
                km = great_circle_km(source[0], source[1], here[0], here[1])
                if km > rtt / 2 * 200.0 + geo_tolerance_km:
                    violations.append(int(r["ttl"]))
                    here = None
            coords.append(here)
        trusted = [r for r, c in zip(recs, coords, strict=True) if c is not None]
        countries = _dedup(_nz(r["country"]) for r in trusted)
        hop_continents = continent_of(_nz(r["country"]) for r in trusted)
        continents = _dedup(hop_continents)
        src_cont = _nz(src["continent"]) if src else (hop_continents[0] if hop_continents
                                                      else None)
        dst_cont = _nz(dst["continent"]) if dst else (hop_continents[-1] if hop_continents
                                                      else None)
        detour: object = pd.NA
        if src_cont is not None and dst_cont is not None:
            detour = src_cont == dst_cont and any(c not in (None, src_cont) for c in continents)
        row: dict[str, Any] = {
            "id": tid, "region": region, "target": target,
            "started_at": recs[0]["started_at"], "protocol": _nz(recs[0]["protocol"]),
            "ttls": len(recs), "reached": bool(any(r["is_destination"] for r in recs)),
            "responders": tuple(str(r["responders"]) for r in recs),
            "as_path": tuple(int(a) for a in _dedup(_nz(r["asn"]) for r in recs)),
            "countries": tuple(countries), "continents": tuple(continents),
            "src_continent": src_cont, "dst_continent": dst_cont,
            "continental_detour": detour,
            "geo_violation": bool(violations), "geo_violation_ttls": tuple(violations),
        }
        jump = _first_jump([_nz(r["rtt_ms"]) for r in recs], coords, source,
                           jump_min_ms, jump_factor)
        row.update(_hop_fields("jump", recs[jump[0]] if jump else None))
        row["jump_step_ms"] = jump[1] if jump else math.nan
        loss = _first_loss([_nz(r["loss"]) for r in recs], LOSS_CARRY_FRACTION,
                           LOSS_PERSIST_SHARE)
        row.update(_hop_fields("loss", recs[loss] if loss is not None else None))
        row["loss_ratio"] = float(recs[loss]["loss"]) if loss is not None else math.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=_SUMMARY_COLUMNS)
    out["continental_detour"] = out["continental_detour"].astype("boolean")
    for c in ("jump_ttl", "loss_ttl", "jump_asn", "loss_asn"):
        out[c] = out[c].astype("Int64")
    for c in ("jump_step_ms", "loss_ratio"):
        out[c] = out[c].astype("float64")
    return out


_SUMMARY_COLUMNS = [
    "id", "region", "target", "started_at", "protocol", "ttls", "reached", "responders",
    "as_path", "countries", "continents", "src_continent", "dst_continent",
    "continental_detour", "geo_violation", "geo_violation_ttls",
    "jump_ttl", "jump_step_ms", *(f"jump_{f}" for f in _HOP_INFO),
    "loss_ttl", "loss_ratio", *(f"loss_{f}" for f in _HOP_INFO),
]


def _dedup(values: Any) -> list[Any]:
    """Consecutive repeats removed, unknowns (None) skipped."""
    out: list[Any] = []
    for v in values:
        if v is not None and (not out or out[-1] != v):
            out.append(v)
    return out


def _hop_fields(prefix: str, rec: dict[str, Any] | None) -> dict[str, Any]:
    fields = {f"{prefix}_ttl": int(rec["ttl"]) if rec else None}
    for f in _HOP_INFO:
        fields[f"{prefix}_{f}"] = _nz(rec[f]) if rec else None
    return fields


# --------------------------------------------------------------------------- aggregates

def _describe(ttl: int, info: dict[str, Any]) -> str:
    where = [f"AS{info['asn']}" if info.get("asn") is not None else None,
             info.get("as_org"), info.get("city")]
    label = " ".join(w for w in where[:2] if w)
    place = ", ".join(w for w in (label, where[2]) if w)
    address = info.get("address") or "(silent)"
    return f"TTL {ttl}, {address}" + (f" ({place})" if place else "")


def where_it_starts(hops: pd.DataFrame, region: str, target: str,
                    locations: pd.DataFrame | None = None, *,
                    jump_min_ms: float = JUMP_MIN_MS, jump_factor: float = JUMP_FACTOR,
                    ) -> dict[str, Any]:
    """Where, over all traces of one (region, target), the RTT jumps and the loss starts.

    Returns a flat dict (a list of them makes a DataFrame):

    * ``traces``: how many traces there are;
    * ``jump_ttl``, ``jump_address``/``_asn``/``_as_org``/``_city``/``_country``:
      the modal first-jump hop of :func:`path_summary` (by TTL and address),
      ``jump_traces`` how many traces found it there, ``jump_step_ms`` their
      median step, ``jump_evidence`` a sentence;
    * ``loss_ttl`` and the same hop fields: the first TTL whose **pooled** loss
      (all probes of all traces at that TTL) shows and persists (the rule of
      the module docstring), ``loss_lost``/``loss_sent`` there,
      ``loss_before_lost``/``loss_before_sent`` over the TTLs before it,
      ``loss_traces`` how many traces lost a probe there, ``loss_evidence``.

    Hop fields are ``None`` and counts 0 when nothing was found (or there are
    no traces).  Filter ``hops`` by time first to ask about a period.
    """
    sel = hops[(hops["region"].astype("string") == region)
               & (hops["target"].astype("string") == target)]
    found = _evidence_rows(sel, locations, jump_min_ms, jump_factor, GEO_TOLERANCE_KM)
    if found:
        return found[0]
    out: dict[str, Any] = {"region": region, "target": target, "traces": 0}
    out.update(_hop_fields("jump", None))
    out.update(jump_traces=0, jump_step_ms=math.nan, jump_evidence=None)
    out.update(_hop_fields("loss", None))
    out.update(loss_lost=0, loss_sent=0, loss_before_lost=0, loss_before_sent=0,
               loss_traces=0, loss_evidence=None)
    return out


# --------------------------------------------------------------------------- every pair at once

def _trace_jumps(per: pd.DataFrame, locations: pd.DataFrame | None, jump_min_ms: float,
                 jump_factor: float, geo_tolerance_km: float,
                 trace: npt.NDArray[np.intp] | None = None) -> pd.DataFrame:
    """The first RTT jump of every trace of ``per`` (:func:`_per_ttl`), vectorised.

    The rules of :func:`path_summary` (``_first_jump``, with the geography sanity that
    drops a hop's location when it answered faster than light from the source), over all
    traces at once.  One row per trace with a jump, in the order of ``per``: ``row`` (its
    position in ``per``) and ``step`` (the excess step).  ``trace``: the trace codes of
    ``per``'s rows (``pd.factorize(per["id"])``) when the caller has them.
    """
    n = len(per)
    rtt = per["rtt_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
    lat = per["lat"].to_numpy(dtype=np.float64, na_value=np.nan)
    lon = per["lon"].to_numpy(dtype=np.float64, na_value=np.nan)
    if trace is None:
        trace = pd.factorize(per["id"], sort=False)[0]
    src_lat, src_lon = np.full(n, np.nan), np.full(n, np.nan)
    if locations is not None and n:
        places = locations.assign(name=locations["name"].astype(str)).drop_duplicates("name")
        places = places.set_index("name")
        region = pd.Index(per["region"].astype("string"))
        lat_of = pd.to_numeric(places["lat"]).astype(np.float64)
        lon_of = pd.to_numeric(places["lon"]).astype(np.float64)
        src_lat = lat_of.reindex(region).to_numpy(dtype=np.float64, na_value=np.nan)
        src_lon = lon_of.reindex(region).to_numpy(dtype=np.float64, na_value=np.nan)
        # A trace's source is its first TTL's region (as path_summary reads it).
        first = np.r_[True, trace[1:] != trace[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        src_lat, src_lon = src_lat[start], src_lon[start]
    located = ~np.isnan(lat) & ~np.isnan(lon)
    sourced = ~np.isnan(src_lat) & ~np.isnan(src_lon)
    with np.errstate(invalid="ignore"):
        km = great_circle_km(src_lat, src_lon, lat, lon)
        violation = located & sourced & ~np.isnan(rtt) & (
            km > rtt / 2 * 200.0 + geo_tolerance_km)
    located &= ~violation
    answered = np.flatnonzero(~np.isnan(rtt))
    if not len(answered):
        return pd.DataFrame({"row": np.empty(0, dtype=np.int64), "step": np.empty(0)})
    a_trace = trace[answered]
    a_rtt = rtt[answered]
    first = np.r_[True, a_trace[1:] != a_trace[:-1]]
    prev = np.r_[0, np.arange(len(answered) - 1)]
    prev_rtt = np.where(first, 0.0, a_rtt[prev])
    prev_lat = np.where(first, src_lat[answered], lat[answered][prev])
    prev_lon = np.where(first, src_lon[answered], lon[answered][prev])
    prev_located = np.where(first, sourced[answered], located[answered][prev])
    here = located[answered]
    step = a_rtt - prev_rtt
    both = prev_located & here
    if both.any():
        step[both] -= rtt_floor_ms(great_circle_km(prev_lat[both], prev_lon[both],
                                                   lat[answered][both], lon[answered][both]))
    steps = pd.DataFrame({"trace": a_trace, "step": step})
    positive = steps[steps["step"] > 0]
    typical = positive.groupby("trace", sort=False)["step"].median()
    limit = (jump_factor * typical).clip(lower=jump_min_ms)
    bound = limit.reindex(a_trace).to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        over = step > bound  # NaN bound (no positive step): no jump
    hits = pd.DataFrame({"trace": a_trace[over], "row": answered[over], "step": step[over]})
    return hits.drop_duplicates("trace")[["row", "step"]].reset_index(drop=True)


def path_evidence(hops: pd.DataFrame, locations: pd.DataFrame | None = None, *,
                  jump_min_ms: float = JUMP_MIN_MS, jump_factor: float = JUMP_FACTOR,
                  geo_tolerance_km: float = GEO_TOLERANCE_KM) -> pd.DataFrame:
    """:func:`where_it_starts` for every (region, target) of ``hops`` at once: one row each.

    The same rules and figures as calling :func:`where_it_starts` pair by pair, computed
    in one pass: the per-TTL table (:func:`_per_ttl`) once, every trace's first jump
    vectorised, the pooled loss and the modal hops by group-bys over (pair, TTL).  Pairs in
    the order they first appear in ``hops``; an empty frame when there are no hops.
    """
    out = pd.DataFrame(_evidence_rows(hops, locations, jump_min_ms, jump_factor,
                                      geo_tolerance_km))
    give_back()  # the per-TTL table's memory, kept by the allocators (+250 MB at 1M records)
    return out


def _evidence_rows(hops: pd.DataFrame, locations: pd.DataFrame | None, jump_min_ms: float,
                   jump_factor: float, geo_tolerance_km: float) -> list[dict[str, Any]]:
    """The rows of :func:`path_evidence` (the dicts :func:`where_it_starts` returns)."""
    if hops.empty or "region" not in hops.columns or "target" not in hops.columns:
        return []
    # The pairs, in the order they first appear in the hops, from the keys' codes (not a
    # frame of their strings); each per-TTL row's pair from its region's and target's rows.
    region_code, regions = sorted_codes(hops["region"])
    target_code, targets = sorted_codes(hops["target"])
    width = max(len(targets), 1)
    combined = region_code * width + target_code
    keyed = (region_code >= 0) & (target_code >= 0)
    distinct, first_at = np.unique(combined[keyed], return_index=True)
    if not len(distinct):
        return []
    by_first = np.argsort(first_at, kind="stable")
    number = np.empty(len(distinct), dtype=np.intp)
    number[by_first] = np.arange(len(distinct))
    names = [(regions[c // width], targets[c % width]) for c in distinct[by_first].tolist()]
    per, runs = _ttl_table(hops, full=False)
    keyed_run = (runs.region >= 0) & (runs.target >= 0)
    run_code = np.where(keyed_run, region_code[np.maximum(runs.region, 0)] * width
                        + target_code[np.maximum(runs.target, 0)], -1)
    found_at = np.clip(np.searchsorted(distinct, run_code), 0, len(distinct) - 1)
    pair = np.where(keyed_run & (distinct[found_at] == run_code), number[found_at], -1)
    per["_pair"] = pair
    per["_row"] = np.arange(len(per))
    # Distinct traces per pair from the traces' integer codes (one numbering of the
    # ids, shared with _trace_jumps), not a nunique over the id strings.
    trace = runs.trace
    paired = pair >= 0
    combos = np.unique(pair[paired].astype(np.int64) * (int(trace.max(initial=0)) + 1)
                       + trace[paired])
    traces = np.bincount(combos // (int(trace.max(initial=0)) + 1), minlength=len(names))
    out: list[dict[str, Any]] = []
    jumps = _trace_jumps(per, locations, jump_min_ms, jump_factor, geo_tolerance_km, trace)
    jump_rows = jumps["row"].to_numpy(dtype=np.intp)
    # An address by its code (codes sort as the addresses; silent: its own code).
    found = pd.DataFrame({"_pair": pair[jump_rows], "_row": jump_rows,
                          "ttl": per["ttl"].array.take(jump_rows),
                          "address": runs.address[jump_rows],
                          "step": jumps["step"].to_numpy()})
    found = found[found["_pair"] >= 0]
    modal_jump: dict[int, tuple[int, int, float, int]] = {}
    if len(found):
        # The modal (TTL, address) of the traces' first jumps: most traces, then the lower
        # TTL, then the first seen; its hop fields from the first trace there.
        by = found.groupby(["_pair", "ttl", "address"], sort=False)
        agg = by.agg(count=("_row", "size"), first=("_row", "min"), step=("step", "median"))
        agg = agg.reset_index().sort_values(["_pair", "count", "ttl", "first"],
                                            ascending=[True, False, True, True])
        best = agg.drop_duplicates("_pair")
        for p, ttl, count, step, at in zip(best["_pair"].tolist(), best["ttl"].tolist(),
                                           best["count"].tolist(), best["step"].tolist(),
                                           best["first"].tolist(), strict=True):
            modal_jump[int(p)] = (int(ttl), int(count), float(step), int(at))

    lost = (per["sent"] - per["replies"]).clip(lower=0)
    pooled = pd.DataFrame({"_pair": pair, "ttl": per["ttl"], "lost": lost, "sent": per["sent"],
                           "lossy": (lost > 0).astype(np.int64)})[paired]
    pooled = pooled.groupby(["_pair", "ttl"], sort=True).agg(
        lost=("lost", "sum"), sent=("sent", "sum"), traces=("lossy", "sum"))
    # Addresses by their codes, which sort as the addresses do.
    answered = pd.DataFrame({"_pair": pair, "ttl": per["ttl"], "address": runs.address,
                             "_row": per["_row"]})[
        paired & (runs.address < len(runs.addresses))]
    responders = answered.groupby(["_pair", "ttl", "address"], sort=True).agg(
        count=("_row", "size"), first=("_row", "min")).reset_index()
    # The modal responder of each (pair, TTL) (ties: the lowest address, as Series.mode
    # orders them): the row its hop fields come from.
    modal = responders.sort_values(["_pair", "ttl", "count", "address"],
                                   ascending=[True, True, False, True], kind="mergesort")
    modal = modal.drop_duplicates(["_pair", "ttl"])
    modal_row = dict(zip(zip(modal["_pair"].tolist(), modal["ttl"].tolist(), strict=True),
                         modal["first"].tolist(), strict=True))
    pair_level = pooled.index.get_level_values(0).to_numpy(dtype=np.int64)
    table = _Pooled(pooled.index.get_level_values(1).to_numpy(),
                    pooled["lost"].to_numpy(dtype=np.float64),
                    pooled["sent"].to_numpy(dtype=np.float64),
                    pooled["traces"].to_numpy(dtype=np.int64))
    bounds = np.flatnonzero(np.r_[True, pair_level[1:] != pair_level[:-1], True])
    pooled_of = {int(pair_level[a]): (a, b) for a, b in itertools.pairwise(bounds.tolist())}
    hop_info = _hop_reader(hops, runs.rep, [*modal_row.values(),
                                            *(jump[3] for jump in modal_jump.values())])

    for p, (region, target) in enumerate(names):
        row: dict[str, Any] = {"region": str(region), "target": str(target),
                               "traces": int(traces[p])}
        row.update(_hop_fields("jump", None))
        row.update(jump_traces=0, jump_step_ms=math.nan, jump_evidence=None)
        jump = modal_jump.get(p)
        if jump is not None:
            ttl, count, step, at = jump
            info = hop_info(at)
            row.update({"jump_ttl": ttl, **{f"jump_{f}": v for f, v in info.items()}})
            row.update(jump_traces=count, jump_step_ms=step, jump_evidence=(
                f"RTT first jumps at {_describe(ttl, info)}: +{step:.0f} ms beyond the "
                f"previous hop (median), in {count} of {row['traces']} traces"))
        row.update(_hop_fields("loss", None))
        row.update(loss_lost=0, loss_sent=0, loss_before_lost=0, loss_before_sent=0,
                   loss_traces=0, loss_evidence=None)
        span = pooled_of.get(p)
        if span is not None:
            _loss_fields(row, table, span, modal_row, p, hop_info)
        out.append(row)
    return out


def _hop_reader(hops: pd.DataFrame, rep: npt.NDArray[np.intp], wanted: list[int]
                ) -> Callable[[int], dict[str, Any]]:
    """The hop fields (:data:`_HOP_INFO`) of a row of the per-TTL table, read from its
    representative hop row ``rep[at]`` (the hops' columns as they are, not a per-TTL copy
    of them).

    The string columns are read at the ``wanted`` rows in one take each: element by
    element an Arrow string column costs some 4 µs a value, and the evidence of a campaign
    of 1M records names some 6,000 hops, five fields each.  The values are the same
    (``tolist`` gives the strings and missing values that indexing gives); other columns
    (the ASN's nullable integers, whose ``tolist`` gives other types) are indexed.
    """
    at_of = {at: i for i, at in enumerate(dict.fromkeys(wanted))}
    rows = rep[np.fromiter(at_of, dtype=np.intp, count=len(at_of))]
    read: dict[str, list[Any]] = {}
    for f in _HOP_INFO:
        if isinstance(hops[f].dtype, pd.StringDtype):
            read[f] = [_nz(v) for v in hops[f].array.take(rows).tolist()]
    columns = {f: hops[f].array for f in _HOP_INFO}

    def hop_info(at: int) -> dict[str, Any]:
        i = at_of.get(at)
        return {f: read[f][i] if i is not None and f in read else _nz(columns[f][int(rep[at])])
                for f in _HOP_INFO}

    return hop_info


@dataclass(frozen=True, slots=True)
class _Pooled:
    """The pooled per-(pair, TTL) loss, sorted by pair then TTL, as arrays."""

    ttl: npt.NDArray[Any]
    lost: npt.NDArray[np.float64]
    sent: npt.NDArray[np.float64]
    traces: npt.NDArray[np.int64]


def _loss_fields(row: dict[str, Any], pooled: _Pooled, span: tuple[int, int],
                 modal_row: dict[tuple[int, int], int], pair: int,
                 hop_info: Callable[[int], dict[str, Any]]) -> None:
    """Fill ``row``'s loss fields from the pair's pooled per-TTL loss (where_it_starts):
    rows ``span`` of ``pooled``; ``modal_row[(pair, ttl)]`` the row of the TTL's modal
    responder."""
    a, b = span
    lost_at, sent_at = pooled.lost[a:b], pooled.sent[a:b]
    ratios = [float(lo / se) if se > 0 else None for lo, se in zip(lost_at, sent_at, strict=True)]
    first = _first_loss(ratios, LOSS_CARRY_FRACTION, LOSS_PERSIST_SHARE)
    if first is None:
        return
    ttl = int(pooled.ttl[a + first])
    info: dict[str, Any] = {f: None for f in _HOP_INFO}
    at = modal_row.get((pair, ttl))
    if at is not None:
        info = hop_info(int(at))
    lost, sent = int(lost_at[first]), int(sent_at[first])
    traces_with = int(pooled.traces[a + first])
    row.update({"loss_ttl": ttl, **{f"loss_{f}": v for f, v in info.items()}})
    row.update(loss_lost=lost, loss_sent=sent, loss_before_lost=int(lost_at[:first].sum()),
               loss_before_sent=int(sent_at[:first].sum()), loss_traces=traces_with)
    later_text = ", ".join(f"{x:.0%}" for x in ratios[first + 1:] if x is not None)
    row["loss_evidence"] = (
        f"loss first shows at {_describe(ttl, info)}: {lost} of {sent} probes "
        f"({lost / sent:.1%}) lost there, in {traces_with} of {row['traces']} traces; "
        f"{row['loss_before_lost']} of {row['loss_before_sent']} before it"
        + (f"; later hops {later_text}" if later_text else ""))


def path_changes(hops: pd.DataFrame) -> pd.DataFrame:
    """Per (region, target), each pair of consecutive traces whose paths differ.

    Columns: region, target, id_before, id_after, started_at (of the later
    trace), before, after (the responder tuples of :func:`path_summary`) and
    ttls (the TTLs that changed).  A TTL changed when both traces have
    responders there and they share none, or when one trace has a responder at
    a TTL the other did not reach.  A silent TTL ("*") matches anything: a lost
    probe is not a new path.
    """
    per = _per_ttl(hops)
    rows: list[dict[str, Any]] = []
    traces = []
    for tid, t in per.groupby("id", sort=False):
        first = t.iloc[0]
        traces.append((str(first["region"]), str(first["target"]), first["started_at"], tid,
                       dict(zip(t["ttl"].astype(int), t["responders"].astype(str),
                                strict=True))))
    traces.sort(key=lambda x: (x[0], x[1], x[2]))
    for i in range(1, len(traces)):
        (r0, t0, _, id0, a), (r1, t1, at, id1, b) = traces[i - 1], traces[i]
        if (r0, t0) != (r1, t1):
            continue
        changed = _changed_ttls(a, b)
        if changed:
            rows.append({"region": r1, "target": t1, "id_before": id0, "id_after": id1,
                         "started_at": at, "before": _as_tuple(a), "after": _as_tuple(b),
                         "ttls": tuple(changed)})
    return pd.DataFrame(rows, columns=["region", "target", "id_before", "id_after",
                                       "started_at", "before", "after", "ttls"])


def _as_tuple(seq: dict[int, str]) -> tuple[str, ...]:
    return tuple(seq[k] for k in sorted(seq))


def _changed_ttls(a: dict[int, str], b: dict[int, str]) -> list[int]:
    """TTLs where the two traces' responders disagree (see :func:`path_changes`)."""
    changed: list[int] = []
    for ttl in sorted(set(a) | set(b)):
        x, y = a.get(ttl), b.get(ttl)
        if x == SILENT or y == SILENT:
            continue
        if x is None or y is None or not set(x.split("|")) & set(y.split("|")):
            changed.append(ttl)
    return changed
