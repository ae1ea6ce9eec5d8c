"""Detours: which traces leave the direct route, through where, and what it costs.

Everything here is computed over whole frames (one pass over the hops, no loop
per trace), so that a campaign of a hundred thousand traces takes seconds.

Where a trace starts
--------------------
The light-speed test needs the probe's place.  :func:`trace_sources` looks the
record's ``agent`` up in ``locations`` first (an import can write one row per
probe, e.g. ``atlas-probe-<id>``), then its ``region`` (a region's point, for
imported data often the median of its probes).  ``src_from`` says which one
was used ("probe", "region" or <NA> when neither is known).

Which hop locations are believed
--------------------------------
A hop located ``d`` km from the probe cannot answer faster than light in
fibre: ``d ≤ rtt_min_ms / 2 × 200 km/ms + tolerance`` (``tolerance``, 500 km by
default: a city-level database's error and the extent of a region's point).
A hop that fails this test is *mislocated*: it is dropped from every claim
(countries, continents, distances) and counted in ``dropped_hops``.  A hop in
the probe's own country is never called impossible (databases often place an
address at its country's centre, and a region's point may be far from the
probe): if it fails the test it still counts for the country, but its
coordinates are not used for distances (``country_only_hops``).  Without the
probe's place nothing can be tested: the trace's hops are ``unchecked`` and
its claims rest on the database alone (counted in the summaries).

What a detour is
----------------
* ``continent``: source and destination on one continent (from ``locations``,
  else from the first and last believed hops), and a believed hop on another
  (African traffic hauled through Europe and back).  The offending hop is the
  first one off the home continent (the *exit*).
* ``stretch``: the believed hops prove a path at least ``stretch_min`` (1.5)
  times the direct great-circle distance and ``extra_km_min`` (1,000 km)
  longer.  The proven length is the sum of the great-circle legs probe → hop →
  … → target through believed hops only; a hop left out only shortens it
  (triangle inequality), so the claim is a lower bound.  The offending hop is
  the one where the path loses most time beyond its geography: the largest
  RTT step from the previous answering hop less the fibre floor of that leg
  (the first RTT jump's rule of :mod:`netvantage.analysis.paths`); ``via_*``
  names the believed hop farthest off the direct route.

``exits`` counts how many times the believed path leaves the source's
continent.  A trace's ``inflation`` is its destination's minimum RTT over the
fibre floor of the probe-target distance (floored at
:data:`~netvantage.analysis.geo.MIN_FLOOR_MS`, as :func:`~.geo.inflation`
does); the summaries compare the median inflation of detoured and direct traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .codes import give_back, positions, sorted_codes
from .geo import FIBRE_KM_PER_MS, MIN_FLOOR_MS, continent_of, great_circle_km, rtt_floor_ms

__all__ = [
    "DETOUR_EXTRA_KM_MIN",
    "DETOUR_STRETCH_MIN",
    "LIGHT_TOLERANCE_KM",
    "Detours",
    "detours",
    "trace_detours",
    "trace_sources",
]

DETOUR_STRETCH_MIN = 1.5
"""A path proven this many times longer than the direct distance is a detour ..."""

DETOUR_EXTRA_KM_MIN = 1000.0
"""... when it is also this much longer (a few hundred km around a city is no detour)."""

LIGHT_TOLERANCE_KM = 500.0
"""What the light-speed test forgives: a city-level database's error, a region's extent."""

_HOP = ("ttl", "address", "asn", "as_org", "city", "country")

TRACE_COLUMNS = (
    "id", "region", "target", "agent", "src_from", "src_country", "src_continent",
    "dst_continent", "hops_located", "dropped_hops", "dropped_ttls", "country_only_hops",
    "unchecked", "countries", "continents", "exits", "continental_detour", "direct_km",
    "path_km", "stretch", "stretch_detour", "detoured", "kind", "rtt_ms", "inflation",
    *(f"hop_{f}" for f in _HOP), "hop_excess_ms", "via_city", "via_country",
)


def _string(s: pd.Series) -> pd.Series:
    return s.astype("string")


def _place_table(locations: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["lat", "lon", "country", "continent"]
    if locations is None or locations.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], dtype="string", name="name"))
    table = locations.assign(name=_string(locations["name"])).drop_duplicates("name")
    out = table.set_index("name")[cols].copy()
    out["lat"] = pd.to_numeric(out["lat"]).astype("float64")
    out["lon"] = pd.to_numeric(out["lon"]).astype("float64")
    out["country"] = _string(out["country"]).str.upper()
    out["continent"] = _string(out["continent"])
    return out


def _lookup(keys: pd.Series, table: pd.Series) -> pd.Series:
    """``keys.map(table)``, looked up once per distinct key (a campaign's hundred
    thousand traces share a few hundred regions and agents)."""
    codes, uniques = pd.factorize(keys)
    found = pd.Series(uniques).map(table)
    return pd.Series(found.array.take(codes, allow_fill=True), index=keys.index)


def _placed(out: pd.DataFrame, locations: pd.DataFrame | None) -> pd.DataFrame:
    """``out`` (per trace: region, target, agent) with the probe's and the target's
    places added (the columns of :func:`trace_sources`)."""
    agent = out["agent"]
    place = _place_table(locations)
    own = {c: _lookup(agent, place[c]) for c in place.columns}
    reg = {c: _lookup(out["region"], place[c]) for c in place.columns}
    has_own = own["lat"].notna() & own["lon"].notna()
    has_reg = reg["lat"].notna() & reg["lon"].notna()
    for c in place.columns:
        out[f"src_{c}"] = own[c].where(has_own, reg[c])
    # The probe's country: its own row's, else its region's (even without coordinates).
    out["src_country"] = _string(out["src_country"].fillna(reg["country"]))
    out["src_continent"] = _string(out["src_continent"].fillna(reg["continent"]))
    out["src_lat"] = out["src_lat"].astype("float64")
    out["src_lon"] = out["src_lon"].astype("float64")
    out["src_from"] = pd.Series(np.where(has_own.to_numpy(), "probe", np.where(
        has_reg.to_numpy(), "region", "")), index=out.index, dtype="string").replace("", pd.NA)
    out["dst_lat"] = _lookup(out["target"], place["lat"]).astype("float64")
    out["dst_lon"] = _lookup(out["target"], place["lon"]).astype("float64")
    out["dst_continent"] = _string(_lookup(out["target"], place["continent"]))
    return out


def trace_sources(measurements: pd.DataFrame | None, hops: pd.DataFrame,
                  locations: pd.DataFrame | None) -> pd.DataFrame:
    """Per trace id: where the probe is (see the module docstring), indexed by id.

    Columns: region, target, agent, src_lat, src_lon, src_country,
    src_continent, src_from ("probe", "region" or <NA>), dst_lat, dst_lon,
    dst_continent (the target's place, when ``locations`` has it).
    """
    first = hops.drop_duplicates("id")[["id", "region", "target"]]
    out = pd.DataFrame({"region": _string(first["region"]).to_numpy(),
                        "target": _string(first["target"]).to_numpy()},
                       index=pd.Index(_string(first["id"]).to_numpy(), name="id"))
    agent = pd.Series(pd.NA, index=out.index, dtype="string")
    if measurements is not None and "agent" in measurements.columns and len(measurements):
        # The first record of each id, found by one lookup of the traces' ids.
        by_id = measurements.drop_duplicates("id")
        at = pd.Index(_string(by_id["id"])).get_indexer(out.index)
        agents = _string(by_id["agent"]).array.take(at, allow_fill=True)
        agent = _string(pd.Series(agents, index=out.index))
    out["agent"] = agent
    return _placed(out, locations)


def _taken(column: pd.Series, rows: npt.NDArray[np.intp]) -> pd.Series:
    """``column``'s values at ``rows`` as strings, <NA> where a row is -1 (only those rows
    are converted, not the whole column)."""
    if not len(column):
        return pd.Series(pd.NA, index=range(len(rows)), dtype="string")
    values = _string(column.iloc[np.maximum(rows, 0)]).reset_index(drop=True)
    return values.mask(rows < 0)


def _named(codes: npt.NDArray[np.intp], names: npt.NDArray[np.object_]) -> pd.Series:
    """The strings that ``codes`` stand for (<NA> for -1), as a string Series."""
    values = np.full(len(codes), None, dtype=object)
    values[codes >= 0] = names[codes[codes >= 0]]
    return pd.Series(values, dtype="string")


def _pick(values: npt.NDArray[Any], at: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
    """``values[at]``, and ``fill`` where ``at`` is -1 (also when ``values`` is empty)."""
    out = np.full(len(at), fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    found = at >= 0
    out[found] = values[at[found]]
    return out


def _bounds(ids: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.intp]:
    """For ids 0..n-1 in sorted ``ids``: where each one's rows start (``n + 1`` bounds)."""
    return np.searchsorted(ids, np.arange(n + 1), side="left")


def _first_of(ids: npt.NDArray[np.intp], n: int, *, last: bool = False) -> npt.NDArray[np.intp]:
    """Per id 0..n-1, the position of its first (or last) row in sorted ``ids``; -1: none."""
    b = _bounds(ids, n)
    at = b[1:] - 1 if last else b[:-1]
    return np.where(b[1:] > b[:-1], at, -1)


def _upper_codes(column: pd.Series) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.object_]]:
    """Codes of a column of country codes upper-cased (-1: missing), and the countries.

    Upper-cased per distinct value, not per row ("za" and "ZA" become one code)."""
    raw, uniques = pd.factorize(column)
    upper = _string(pd.Series(np.asarray(uniques, dtype=object))).str.upper()
    codes, names = pd.factorize(upper)
    out = _pick(codes, raw, -1)
    return out, np.asarray(names, dtype=object)


def _runs(ids: npt.NDArray[np.intp], values: npt.NDArray[np.intp],
          names: npt.NDArray[np.object_], n: int) -> pd.Series:
    """Per id 0..n-1, its ``values`` (codes of ``names``) in row order, consecutive repeats
    dropped, as tuples of names; ``()`` for an id without rows.  ``ids`` are sorted.

    The tuples share the few distinct name strings (no string object per row).
    """
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (values[1:] != values[:-1])
    words = names[values[keep]].tolist() if len(names) else []
    b = _bounds(ids[keep], n).tolist()
    return pd.Series([tuple(words[a:z]) for a, z in pairwise(b)],
                     dtype=object)


def _sources_by_code(hops: pd.DataFrame, codes: npt.NDArray[np.intp],
                     names: npt.NDArray[np.object_], measurements: pd.DataFrame | None,
                     locations: pd.DataFrame | None) -> pd.DataFrame:
    """:func:`trace_sources` indexed by trace code (0..n-1), the codes of
    :func:`_sorted_codes` of the hops' ids: each trace's region and target from its first
    hop row, its agent from the first record with its id."""
    n = len(names)
    named = np.flatnonzero(codes >= 0)
    first = named[np.unique(codes[named], return_index=True)[1]]
    out = pd.DataFrame({"region": _taken(hops["region"], first).to_numpy(),
                        "target": _taken(hops["target"], first).to_numpy()})
    agent = pd.Series(pd.NA, index=out.index, dtype="string")
    if measurements is not None and "agent" in measurements.columns and len(measurements):
        at = positions(measurements["id"], names)
        records = np.flatnonzero(at >= 0)
        found, where = np.unique(at[records], return_index=True)
        rows = np.full(n, -1, dtype=np.intp)
        rows[found] = records[where]
        agent = _taken(measurements["agent"], rows)
    out["agent"] = agent
    return _placed(out, locations)


@dataclass(frozen=True)
class _PerTtl:
    """One row per (trace, TTL), in trace then TTL order: the responder with the most
    replies (ties: the lower address; silent last) and the TTL's min RTT and destination
    flag over every responder.  Arrays, with ``row`` pointing into the hops frame."""

    trace: npt.NDArray[Any]
    ttl: npt.NDArray[Any]
    row: npt.NDArray[Any]
    rtt: npt.NDArray[Any]
    dest: npt.NDArray[Any]


def _per_ttl(hops: pd.DataFrame, codes: npt.NDArray[np.intp]) -> _PerTtl:
    """The representatives of :class:`_PerTtl`, by one stable sort of integer keys."""
    rows = np.flatnonzero(codes >= 0)
    trace = codes[rows]
    ttl = pd.to_numeric(hops["ttl"]).astype("int64").to_numpy()[rows]
    replies = pd.to_numeric(hops["replies"]).fillna(0).astype("float64").to_numpy()[rows]
    address, names = sorted_codes(hops["address"])
    address = np.where(address >= 0, address, len(names))[rows]  # silent sorts last
    order = np.lexsort((address, -replies, ttl, trace))
    rows, trace, ttl = rows[order], trace[order], ttl[order]
    starts = np.ones(len(rows), dtype=bool)
    starts[1:] = (trace[1:] != trace[:-1]) | (ttl[1:] != ttl[:-1])
    at = np.flatnonzero(starts)
    rtt = pd.to_numeric(hops["rtt_min_ms"]).astype("float64").to_numpy()[rows]
    dest = hops["is_destination"].astype("boolean").fillna(False).astype(bool).to_numpy()[rows]
    return _PerTtl(trace=trace[at], ttl=ttl[at], row=rows[at],
                   rtt=np.fmin.reduceat(rtt, at) if len(at) else rtt,
                   dest=np.logical_or.reduceat(dest, at) if len(at) else dest)


def _previous(values: npt.NDArray[Any], first: npt.NDArray[np.bool_],
              start: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Each row's previous row's value within its trace; ``start`` on a trace's first row."""
    prev = np.empty_like(values)
    prev[1:] = values[:-1]
    prev[first] = start[first]
    return prev


def _firsts(ids: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """True on the first row of each id in sorted ``ids``."""
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return first


def _km(lat1: npt.NDArray[np.float64], lon1: npt.NDArray[np.float64],
        lat2: npt.NDArray[np.float64], lon2: npt.NDArray[np.float64]
        ) -> npt.NDArray[np.float64]:
    """``great_circle_km`` of arrays, all NaN at once when one of them is (no probe or
    target placed: no locations given), which is what the trigonometry would give."""
    arrays = [np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2)]
    if any(a.size and np.isnan(a).all() for a in arrays):
        return np.full(np.broadcast_shapes(*(a.shape for a in arrays)), np.nan)
    return great_circle_km(*arrays)


def _best(ids: npt.NDArray[np.intp], key: npt.NDArray[np.float64], n: int
          ) -> npt.NDArray[np.intp]:
    """Per id 0..n-1, the position of its row with the largest ``key`` (ties: the first
    row; NaN only when all are); -1: no row.  ``ids`` are sorted.

    Each id's largest key by one reduction over its run of rows, then its first row
    holding it (not a sort of every row by id and key)."""
    out = np.full(n, -1, dtype=np.intp)
    if not len(ids):
        return out
    new = np.r_[True, ids[1:] != ids[:-1]]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    top = np.fmax.reduceat(key, starts)  # NaN only when every key of the id is NaN
    hit = np.flatnonzero(key == top[group])
    first = np.full(len(starts), -1, dtype=np.intp)
    first[group[hit][::-1]] = hit[::-1]  # written last to first: each id's first hit stays
    out[ids[starts]] = np.where(first >= 0, first, starts)  # all NaN: the id's first row
    return out


def trace_detours(hops: pd.DataFrame, locations: pd.DataFrame | None = None,
                  measurements: pd.DataFrame | None = None, *,
                  tolerance_km: float = LIGHT_TOLERANCE_KM,
                  stretch_min: float = DETOUR_STRETCH_MIN,
                  extra_km_min: float = DETOUR_EXTRA_KM_MIN) -> pd.DataFrame:
    """One row per trace: what it crosses, whether it detours, through which hop.

    ``measurements`` (optional) gives each trace's ``agent``, whose own row in
    ``locations`` places the probe better than its region's.  The columns are
    :data:`TRACE_COLUMNS`; countries and continents are tuples in path order
    (consecutive repeats dropped, believed hops only); the rules are in the
    module docstring.
    """
    # Computed on numpy arrays of integer codes (traces, countries, continents) over one
    # row per (trace, TTL) that points into the hops frame: no copy of the hops' string
    # columns, and strings only for the one hop per trace that the result names.
    # (On frames of strings this step held some hundreds of MB past its end at 1M records.)
    if hops.empty:
        return pd.DataFrame(columns=list(TRACE_COLUMNS))
    codes, names = sorted_codes(hops["id"])
    if not len(names):
        return pd.DataFrame(columns=list(TRACE_COLUMNS))
    n = len(names)
    src = _sources_by_code(hops, codes, names, measurements, locations)
    per = _per_ttl(hops, codes)
    del codes
    pid, rtt = per.trace, per.rtt
    slat, slon = src["src_lat"].to_numpy(), src["src_lon"].to_numpy()
    lat = pd.to_numeric(hops["lat"]).astype("float64").to_numpy()[per.row]
    lon = pd.to_numeric(hops["lon"]).astype("float64").to_numpy()[per.row]
    country_all, countries = _upper_codes(hops["country"])
    country = country_all[per.row]
    del country_all
    at_src = pd.Index(countries, dtype="string").get_indexer(pd.Index(src["src_country"]))
    at_src = np.where(src["src_country"].notna().to_numpy(), at_src, -1)[pid]
    located = ~np.isnan(lat) & ~np.isnan(lon)
    km_src = _km(slat[pid], slon[pid], lat, lon)
    testable = located & ~np.isnan(km_src) & ~np.isnan(rtt)
    too_far = testable & (km_src > rtt / 2.0 * FIBRE_KM_PER_MS + tolerance_km)
    home = (country >= 0) & (country == at_src)
    dropped = too_far & ~home
    country_only = too_far & home
    believed = ~dropped & (country >= 0)
    continent_names, continent_codes = _continent_codes(countries)
    continent = _pick(continent_codes, country, -1)
    # Coordinates used for distances: believed, located, not country-only.
    use = located & ~dropped & ~country_only
    plat = np.where(use, lat, np.nan)
    plon = np.where(use, lon, np.nan)

    out = src[["region", "target", "agent", "src_from", "src_country", "src_continent",
               "dst_continent"]].copy()
    out["hops_located"] = np.bincount(pid, weights=located, minlength=n).astype("int64")
    out["dropped_hops"] = np.bincount(pid, weights=dropped, minlength=n).astype("int64")
    out["country_only_hops"] = np.bincount(pid, weights=country_only, minlength=n).astype(
        "int64")
    out["unchecked"] = np.bincount(pid, weights=located & np.isnan(km_src), minlength=n) > 0
    # Each (trace, TTL) array goes once read for the last time: at 1M records each is some
    # 5 MB, and the step's peak comes at its end, while the metrics child holds its own.
    del lat, lon, km_src, testable, too_far, home, at_src, use, located, country_only

    # Countries and continents crossed, in path order, consecutive repeats dropped.
    b = np.flatnonzero(believed)
    bc = b[continent[b] >= 0]
    first_cont = _first_of(pid[bc], n)
    last_cont = _first_of(pid[bc], n, last=True)
    out["src_continent"] = out["src_continent"].fillna(
        _named(_pick(continent[bc], first_cont, -1), continent_names))
    out["dst_continent"] = out["dst_continent"].fillna(
        _named(_pick(continent[bc], last_cont, -1), continent_names))
    out["countries"] = _runs(pid[b], country[b], countries, n)
    out["continents"] = _runs(pid[bc], continent[bc], continent_names, n)
    home_at = pd.Index(continent_names, dtype="string").get_indexer(
        pd.Index(out["src_continent"]))
    home_at = np.where(out["src_continent"].isna().to_numpy(), -1,
                       np.where(home_at >= 0, home_at, -2))[pid[bc]]
    away = (home_at != -1) & (continent[bc] != home_at)
    starts = _firsts(pid[bc])
    prev_away = _previous(away, starts, np.zeros(len(away), dtype=bool))
    out["exits"] = np.bincount(pid[bc][away & ~prev_away], minlength=n).astype("int64")
    known = out["src_continent"].notna() & out["dst_continent"].notna()
    same = known & (out["src_continent"] == out["dst_continent"]).fillna(False)
    out["continental_detour"] = (same & (out["exits"] > 0)).astype("boolean").mask(~known)
    # The exit hop: the first believed hop off the home continent.
    exit_at = _first_of(pid[bc][away], n)
    exit_at = _pick(bc[away], exit_at, -1)
    del continent, away, prev_away, home_at

    # Proven path length: probe -> believed located hops -> target, leg by leg.
    p = np.flatnonzero(~np.isnan(plat))
    pp = pid[p]
    p_first = _firsts(pp)
    leg = great_circle_km(_previous(plat[p], p_first, slat[pp]),
                          _previous(plon[p], p_first, slon[pp]), plat[p], plon[p])
    path_km = pd.Series(np.nan_to_num(leg)).groupby(pp).sum()
    first_p, last_p = _first_of(pp, n), _first_of(pp, n, last=True)
    last = pd.DataFrame({"plat": _pick(plat[p], last_p, np.nan),
                         "plon": _pick(plon[p], last_p, np.nan)})
    first = pd.DataFrame({"plat": _pick(plat[p], first_p, np.nan),
                          "plon": _pick(plon[p], first_p, np.nan)})
    o = src
    start_lat = o["src_lat"].fillna(first["plat"])
    start_lon = o["src_lon"].fillna(first["plon"])
    end_lat = o["dst_lat"].fillna(last["plat"])
    end_lon = o["dst_lon"].fillna(last["plon"])
    tail = _km(last["plat"].to_numpy(), last["plon"].to_numpy(),
                           o["dst_lat"].to_numpy(), o["dst_lon"].to_numpy())
    out["direct_km"] = great_circle_km(start_lat.to_numpy(), start_lon.to_numpy(),
                                       end_lat.to_numpy(), end_lon.to_numpy())
    out["path_km"] = (path_km.reindex(out.index).to_numpy()
                      + np.nan_to_num(tail))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["stretch"] = np.where(out["direct_km"] > 0, out["path_km"] / out["direct_km"],
                                  np.nan)
    extra = out["path_km"] - out["direct_km"]
    out["stretch_detour"] = ((extra >= extra_km_min)
                             & ((out["stretch"] >= stretch_min)
                                | (out["direct_km"] <= 0))).fillna(False).astype(bool)
    out["detoured"] = out["continental_detour"].fillna(False).astype(bool) | out[
        "stretch_detour"]
    kind = pd.Series(pd.NA, index=out.index, dtype="string")
    kind[out["stretch_detour"]] = "stretch"
    kind[out["continental_detour"].fillna(False).astype(bool)] = "continent"
    out["kind"] = kind

    # The destination's RTT and the trace's inflation.
    dest_rtt = np.full(n, np.nan)
    np.fmin.at(dest_rtt, pid[per.dest], rtt[per.dest])
    out["rtt_ms"] = dest_rtt
    direct_floor = rtt_floor_ms(_km(o["src_lat"].to_numpy(), o["src_lon"].to_numpy(),
                                    o["dst_lat"].to_numpy(), o["dst_lon"].to_numpy()))
    out["inflation"] = out["rtt_ms"].to_numpy() / np.maximum(direct_floor, MIN_FLOOR_MS)

    # Where the time goes: the largest RTT step beyond the fibre floor of its leg.
    a = np.flatnonzero(~np.isnan(rtt))
    aid = pid[a]
    a_first = _firsts(aid)
    prev_rtt = _previous(rtt[a], a_first, np.zeros(len(a)))
    leg_floor = rtt_floor_ms(great_circle_km(_previous(plat[a], a_first, slat[aid]),
                                             _previous(plon[a], a_first, slon[aid]),
                                             plat[a], plon[a]))
    excess = (rtt[a] - prev_rtt) - np.nan_to_num(leg_floor)
    del prev_rtt, leg_floor, a_first
    worst = _best(aid, excess, n)
    worst_at = _pick(a, worst, -1)

    # Farthest off the direct route: max of d(start, hop) + d(hop, end).
    hop_lat, hop_lon = plat[p], plon[p]
    off = great_circle_km(start_lat.to_numpy()[pp], start_lon.to_numpy()[pp], hop_lat,
                          hop_lon)
    off += great_circle_km(hop_lat, hop_lon, end_lat.to_numpy()[pp], end_lon.to_numpy()[pp])
    del hop_lat, hop_lon
    via = _best(pp, off, n)
    via_at = _pick(p, via, -1)
    out["via_city"] = _taken(hops["city"], _pick(per.row, via_at, -1))
    out["via_country"] = _named(_pick(country, via_at, -1), countries)

    continental = (out["kind"] == "continent").fillna(False).to_numpy(dtype=bool)
    named_at = np.where(continental, exit_at, worst_at)
    named_at = np.where(out["detoured"].to_numpy(dtype=bool), named_at, -1)
    hop_row = _pick(per.row, named_at, -1)
    out["hop_ttl"] = pd.Series(_pick(per.ttl, named_at, 0),
                               dtype="Int64").mask(named_at < 0)
    out["hop_address"] = _taken(hops["address"], hop_row)
    asn = hops["asn"].astype("Int64")
    out["hop_asn"] = (asn.array.take(hop_row, allow_fill=True) if len(asn)
                      else pd.array([pd.NA] * n, dtype="Int64"))
    out["hop_as_org"] = _taken(hops["as_org"], hop_row)
    out["hop_city"] = _taken(hops["city"], hop_row)
    out["hop_country"] = _named(_pick(country, named_at, -1), countries)
    out["hop_excess_ms"] = np.where(out["detoured"].to_numpy(dtype=bool),
                                    _pick(excess, worst, np.nan), np.nan)
    gone = np.flatnonzero(dropped)
    ttls = per.ttl[gone].tolist()
    b_gone = _bounds(pid[gone], n).tolist()
    out["dropped_ttls"] = pd.Series([tuple(ttls[x:y]) for x, y in
                                     pairwise(b_gone)], dtype=object)
    out = out.set_axis(pd.Index(names, name="id"))
    out = out.rename_axis("id").reset_index()
    for c in ("hop_address", "hop_as_org", "hop_city", "hop_country"):
        out[c] = _string(out[c])
    return out[list(TRACE_COLUMNS)]


def _continent_codes(countries: npt.NDArray[np.object_]
                     ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.intp]]:
    """The continents of ``countries`` (distinct, upper-cased) and each country's code
    among them (-1: unknown country)."""
    codes, names = pd.factorize(pd.Series(continent_of(countries.tolist()), dtype=object))
    return np.asarray(names, dtype=object), codes


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Detours:
    """Per trace, per region and per (region, data centre): the detours of a campaign."""

    traces: pd.DataFrame
    by_region: pd.DataFrame
    by_pair: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def detoured(self) -> int:
        return int(self.traces["detoured"].sum()) if len(self.traces) else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON types only: the totals, the per-region and per-pair tables, the notes."""
        t = self.traces
        return {
            "traces": len(t), "detoured": self.detoured,
            "dropped_hops": int(t["dropped_hops"].sum()) if len(t) else 0,
            "country_only_hops": int(t["country_only_hops"].sum()) if len(t) else 0,
            "unchecked_traces": int(t["unchecked"].sum()) if len(t) else 0,
            "rules": {"stretch_min": DETOUR_STRETCH_MIN, "extra_km_min": DETOUR_EXTRA_KM_MIN,
                      "light_tolerance_km": LIGHT_TOLERANCE_KM},
            "by_region": _records(self.by_region),
            "by_pair": _records(self.by_pair),
            "notes": list(self.notes),
        }

    def text_lines(self) -> list[str]:
        """The ``analyse`` text: one line per region, one per detoured pair with its hop."""
        t = self.traces
        lines = [f"Detours ({self.detoured} of {len(t)} traces; "
                 f"{int(t['dropped_hops'].sum()) if len(t) else 0} mislocated hop(s) dropped):"]
        if t.empty:
            return [*lines, "  no traces"]
        for r in self.by_region.itertuples():
            lines.append(
                f"  {r.region}: {r.detoured} of {r.traces} traces detoured ({r.share:.0%}); "
                f"countries crossed {str(r.countries) or '-'}; inflation detoured "
                f"{_x(r.inflation_detoured)} vs direct {_x(r.inflation_direct)}")
        for p in self.by_pair[self.by_pair["detoured"] > 0].itertuples():
            lines.append(f"  {p.region} -> {p.target}: {p.evidence}")
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _x(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.1f}x"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    import json

    return list(json.loads(frame.to_json(orient="records")))


def _describe_hop(r: Any) -> str:
    asn = f"AS{int(r['hop_asn'])}" if not pd.isna(r["hop_asn"]) else None
    org = None if pd.isna(r["hop_as_org"]) else str(r["hop_as_org"])
    place = ", ".join(str(v) for v in (r["hop_city"], r["hop_country"]) if not pd.isna(v))
    what = " ".join(v for v in (asn, org) if v)
    inside = ", ".join(v for v in (what, place) if v)
    address = "(silent)" if pd.isna(r["hop_address"]) else str(r["hop_address"])
    return f"TTL {int(r['hop_ttl'])}, {address}" + (f" ({inside})" if inside else "")


def _group(traces: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The per-``keys`` summary of traces (the columns of :func:`detours`' ``by_region``).

    Sums and medians over the groups' numbers (one group-by of the keys), the countries
    counted over the traces' tuples flattened once (no ``explode`` of a frame).
    """
    g = traces.groupby(keys, sort=True, observed=True)
    size = g.size()
    gid = g.ngroup().to_numpy()
    k = len(size)

    def total(values: Any) -> npt.NDArray[np.int64]:
        return np.bincount(gid, weights=np.asarray(values, dtype=np.float64),
                           minlength=k).astype("int64")

    def median(values: npt.NDArray[np.float64], rows: Any = slice(None)) -> Any:
        by = pd.Series(values[rows]).groupby(gid[rows]).median()
        return by.reindex(range(k)).to_numpy(dtype=np.float64)

    out = pd.DataFrame({"traces": size,
                        "detoured": total(traces["detoured"]),
                        "continental": total(traces["continental_detour"].fillna(False)),
                        "exits": total(traces["exits"].to_numpy() > 0),
                        "dropped_hops": total(traces["dropped_hops"])}, index=size.index)
    out["share"] = out["detoured"] / out["traces"]
    seqs = traces["countries"].tolist()
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    out["countries"] = _ranked_countries(np.repeat(gid, lengths),
                                         list(chain.from_iterable(seqs)), k)
    out["countries_median"] = median(lengths.astype("float64"))
    detoured = traces["detoured"].to_numpy(dtype=bool)
    inflation = traces["inflation"].to_numpy(dtype=np.float64)
    out["inflation_detoured"] = median(inflation, detoured)
    out["inflation_direct"] = median(inflation, ~detoured)
    return out


def _ranked_countries(gid: npt.NDArray[np.intp], countries: list[str], k: int) -> list[str]:
    """Per group 0..k-1, its countries (one entry per trace crossing it), most frequent
    first (ties: alphabetical), comma-separated; "" for none."""
    codes, names = pd.factorize(np.asarray(countries, dtype=object), sort=True)
    pairs, n = np.unique(gid * max(len(names), 1) + codes, return_counts=True)
    group, country = np.divmod(pairs, max(len(names), 1))
    order = np.lexsort((country, -n, group))
    words = np.asarray(names, dtype=object)[country[order]].tolist()
    b = np.searchsorted(group[order], np.arange(k + 1)).tolist()
    return [",".join(words[x:y]) for x, y in pairwise(b)]


def detours(hops: pd.DataFrame, locations: pd.DataFrame | None = None,
            measurements: pd.DataFrame | None = None, *,
            tolerance_km: float = LIGHT_TOLERANCE_KM,
            stretch_min: float = DETOUR_STRETCH_MIN,
            extra_km_min: float = DETOUR_EXTRA_KM_MIN) -> Detours:
    """:func:`trace_detours` and its summaries per region and per (region, data centre).

    ``by_region`` columns: region, traces, detoured, continental, exits (traces
    leaving their continent at least once), dropped_hops, share (detoured /
    traces), countries (crossed, most often first, comma-separated),
    countries_median (per trace), inflation_detoured and inflation_direct
    (median trace inflation of each kind, NaN when none).  ``by_pair`` has the
    same per (region, target) and the modal offending hop of its detoured
    traces: hop_ttl, hop_address, hop_asn, hop_as_org, hop_city, hop_country,
    hop_traces (how many detoured traces name it), kind, stretch (median),
    via_city, evidence (a sentence).
    """
    traces = trace_detours(hops, locations, measurements, tolerance_km=tolerance_km,
                           stretch_min=stretch_min, extra_km_min=extra_km_min)
    notes: list[str] = []
    if traces.empty:
        empty = pd.DataFrame(columns=["region", "traces", "detoured", "share"])
        return Detours(traces, empty, empty.assign(target=[]), notes)
    t = traces.dropna(subset=["region", "target"])
    by_region = _group(t, ["region"]).reset_index()
    by_pair = _group(t, ["region", "target"])
    d = t[t["detoured"]]
    hop_cols = [f"hop_{f}" for f in _HOP]
    modal = (d.assign(n=1).groupby(["region", "target", "hop_ttl", "hop_address"],
                                   dropna=False, observed=True, sort=True)
             .agg(n=("n", "sum"), **{c: (c, "first") for c in hop_cols
                                     if c not in ("hop_ttl", "hop_address")},
                  kind=("kind", "first"), excess=("hop_excess_ms", "median"))
             .reset_index().sort_values(["region", "target", "n", "hop_ttl"],
                                        ascending=[True, True, False, True])
             .drop_duplicates(["region", "target"]).set_index(["region", "target"]))
    for c in hop_cols:
        by_pair[c] = modal[c].reindex(by_pair.index) if len(modal) else pd.NA
    by_pair["hop_traces"] = (modal["n"].reindex(by_pair.index).fillna(0).astype("int64")
                             if len(modal) else 0)
    by_pair["kind"] = modal["kind"].reindex(by_pair.index) if len(modal) else pd.NA
    by_pair["hop_excess_ms"] = (modal["excess"].reindex(by_pair.index) if len(modal)
                                else np.nan)
    by_pair["stretch"] = d.groupby(["region", "target"], observed=True)["stretch"].median(
    ).reindex(by_pair.index).astype("float64")
    by_pair["via_city"] = _modal(d, ["region", "target"], "via_city").reindex(by_pair.index)
    by_pair = by_pair.reset_index()
    by_pair["evidence"] = [_evidence({str(k): v for k, v in r.items()})
                           for r in by_pair.to_dict("records")]
    by_pair["hop_ttl"] = by_pair["hop_ttl"].astype("Int64")
    by_pair["hop_asn"] = by_pair["hop_asn"].astype("Int64")
    dropped = int(traces["dropped_hops"].sum())
    if dropped:
        notes.append(f"{dropped} hop(s) in {int((traces['dropped_hops'] > 0).sum())} trace(s) "
                     "answered faster than light in fibre allows from the probe's place: "
                     "their locations are wrong and were left out of every detour claim")
    unchecked = int(traces["unchecked"].sum())
    if unchecked:
        notes.append(f"{unchecked} trace(s) without a known probe place: their hops' "
                     "locations could not be tested against the speed of light")
    by_region_src = traces.groupby("region", observed=True)["src_from"].agg(
        lambda s: ",".join(sorted(set(s.dropna()))))
    if (by_region_src == "region").any():
        notes.append("probe places: the region's point (no per-probe place in the locations)"
                     " for " + ", ".join(sorted(map(str, by_region_src.index[
                         by_region_src == "region"]))))
    give_back()
    return Detours(traces, by_region, by_pair, notes)


def _modal(rows: pd.DataFrame, keys: list[str], col: str) -> pd.Series:
    """Per group of ``keys``, the most frequent non-missing value of ``col`` (ties: the
    smallest, as ``Series.mode`` orders them), as strings.

    Counted in one group-by, not a ``mode()`` call per group (3,300 pairs took 1 s).
    """
    counts = rows.groupby([*keys, col], observed=True, sort=True).size()
    if counts.empty:
        return pd.Series(dtype="string", index=pd.MultiIndex.from_tuples([], names=keys))
    top = (counts.rename("n").reset_index()
           .sort_values([*keys, "n"], ascending=[True] * len(keys) + [False], kind="mergesort")
           .drop_duplicates(keys).set_index(keys)[col])
    return _string(top)


def _evidence(r: dict[str, Any]) -> str:
    """One sentence per pair: how many traces detour, how, and the hop named."""
    n, total = int(r["detoured"]), int(r["traces"])
    if n == 0:
        return f"no detour in {total} traces"
    how = ("leave the continent and come back" if r["kind"] == "continent" else
           f"take a path at least {float(r['stretch']):.1f}x the direct distance"
           + (f" (via {r['via_city']})" if r.get("via_city") else ""))
    text = f"{n} of {total} traces {how}"
    if r.get("hop_ttl") is None or pd.isna(r["hop_ttl"]):
        return text
    where = ("first hop off the continent" if r["kind"] == "continent"
             else "largest RTT step beyond its leg's fibre floor")
    extra = r.get("hop_excess_ms")
    cost = (f": +{float(extra):.0f} ms" if extra is not None and not pd.isna(extra)
            and r["kind"] != "continent" else "")
    return (f"{text}; {where} at {_describe_hop(r)}{cost}, in {int(r['hop_traces'])} of "
            f"{n} detoured traces")
