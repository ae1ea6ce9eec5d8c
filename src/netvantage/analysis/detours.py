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
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

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
    place = _place_table(locations)
    own = {c: agent.map(place[c]) for c in place.columns}
    reg = {c: out["region"].map(place[c]) for c in place.columns}
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
    out["dst_lat"] = out["target"].map(place["lat"]).astype("float64")
    out["dst_lon"] = out["target"].map(place["lon"]).astype("float64")
    out["dst_continent"] = _string(out["target"].map(place["continent"]))
    return out


def _per_ttl_rows(hops: pd.DataFrame, ids: npt.NDArray[np.intp] | None = None
                  ) -> pd.DataFrame:
    """One row per (trace, TTL): the responder with the most replies, the TTL's min RTT.

    ``ids``: the traces' integer codes to use as ``id`` instead of the id strings (codes
    that sort as the strings do, so that the rows come in the same order).
    """
    h = pd.DataFrame({
        "id": _string(hops["id"]) if ids is None else ids,
        "ttl": pd.to_numeric(hops["ttl"]).astype("int64"),
        "address": _string(hops["address"]),
        "replies": pd.to_numeric(hops["replies"]).fillna(0).astype("float64"),
        "rtt": pd.to_numeric(hops["rtt_min_ms"]).astype("float64"),
        "asn": hops["asn"].astype("Int64"), "as_org": _string(hops["as_org"]),
        "city": _string(hops["city"]), "country": _string(hops["country"]).str.upper(),
        "lat": pd.to_numeric(hops["lat"]).astype("float64"),
        "lon": pd.to_numeric(hops["lon"]).astype("float64"),
        "dest": hops["is_destination"].astype("boolean").fillna(False).astype(bool),
    })
    h = h.sort_values(["id", "ttl", "replies", "address"], ascending=[True, True, False, True],
                      na_position="last", kind="mergesort")
    g = h.groupby(["id", "ttl"], sort=False)
    rep = h.drop_duplicates(["id", "ttl"]).set_index(["id", "ttl"])
    rep["rtt"] = g["rtt"].min()
    rep["dest"] = g["dest"].max()
    return rep.reset_index()


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
    if hops.empty:
        return pd.DataFrame(columns=list(TRACE_COLUMNS))
    src = trace_sources(measurements, hops, locations)
    # The trace ids as integer codes in the ids' sorted order from here on: every group-by,
    # sort and lookup by trace below is on integers (on the id strings they held some GB
    # and most of the time at a million records); the strings come back at the end.
    codes, uniques = pd.factorize(_string(hops["id"]), sort=True)
    named = codes >= 0  # a row without a trace id belongs to no trace
    id_strings = src.index
    src_codes = uniques.get_indexer(id_strings)
    src = src.set_axis(pd.Index(src_codes, name="id"))
    string_of = np.full(len(uniques), -1, dtype=np.int64)
    string_of[src_codes[src_codes >= 0]] = np.flatnonzero(src_codes >= 0)
    per = _per_ttl_rows(hops, codes) if named.all() else _per_ttl_rows(hops[named], codes[named])
    # Only the source's place per row (a full reindex of every column costs GBs at scale).
    s = src[["src_lat", "src_lon", "src_country"]].reindex(per["id"])
    slat, slon = s["src_lat"].to_numpy(), s["src_lon"].to_numpy()
    lat, lon, rtt = per["lat"].to_numpy(), per["lon"].to_numpy(), per["rtt"].to_numpy()
    located = ~np.isnan(lat) & ~np.isnan(lon)
    km_src = great_circle_km(slat, slon, lat, lon)
    testable = located & ~np.isnan(km_src) & ~np.isnan(rtt)
    too_far = testable & (km_src > rtt / 2.0 * FIBRE_KM_PER_MS + tolerance_km)
    home = (per["country"] == s["src_country"].to_numpy()).fillna(False).to_numpy(dtype=bool)
    per["dropped"] = too_far & ~home
    per["country_only"] = too_far & home
    per["unchecked"] = located & np.isnan(km_src)
    per["located"] = located
    believed = ~per["dropped"].to_numpy() & per["country"].notna().to_numpy()
    per["believed"] = believed
    uniq = per["country"].dropna().unique().tolist()
    per["continent"] = per["country"].map(dict(zip(uniq, continent_of(uniq), strict=True)))
    # Coordinates used for distances: believed, located, not country-only.
    use = located & ~per["dropped"].to_numpy() & ~per["country_only"].to_numpy()
    per["plat"] = np.where(use, lat, np.nan)
    per["plon"] = np.where(use, lon, np.nan)

    g = per.groupby("id", sort=False)
    out = src.loc[g.size().index, ["region", "target", "agent", "src_from", "src_country",
                                   "src_continent", "dst_continent"]].copy()
    out["hops_located"] = g["located"].sum().astype("int64")
    out["dropped_hops"] = g["dropped"].sum().astype("int64")
    out["country_only_hops"] = g["country_only"].sum().astype("int64")
    out["unchecked"] = g["unchecked"].any()

    # Countries and continents crossed, in path order, consecutive repeats dropped.
    # The subsets below take only the columns they use: each is a copy of its rows, and
    # the per-TTL table of a million-record campaign is some hundreds of MB wide.
    b = per.loc[believed, ["id", "continent", *_HOP]]
    first_cont = b.dropna(subset=["continent"]).groupby("id", sort=False)["continent"]
    out["src_continent"] = out["src_continent"].fillna(first_cont.first())
    out["dst_continent"] = out["dst_continent"].fillna(first_cont.last())
    out["countries"] = _sequences(b, "country", out.index)
    bc = b.dropna(subset=["continent"])
    out["continents"] = _sequences(bc, "continent", out.index)
    home_cont = out["src_continent"].reindex(bc["id"]).to_numpy()
    home_known = pd.notna(home_cont)
    away = (bc["continent"].to_numpy() != home_cont) & home_known
    prev_away = pd.Series(away).groupby(bc["id"].to_numpy(), sort=False).shift(
        1, fill_value=False).to_numpy(dtype=bool)
    exits = pd.Series(away & ~prev_away, index=bc.index)
    out["exits"] = exits.groupby(bc["id"]).sum().reindex(out.index, fill_value=0).astype(
        "int64")
    known = out["src_continent"].notna() & out["dst_continent"].notna()
    same = known & (out["src_continent"] == out["dst_continent"]).fillna(False)
    out["continental_detour"] = (same & (out["exits"] > 0)).astype("boolean").mask(~known)
    # The exit hop: the first believed hop off the home continent.
    exit_rows = bc[away].drop_duplicates("id")
    exit_rows = exit_rows.set_index("id")

    # Proven path length: probe -> believed located hops -> target, leg by leg.
    p = per.loc[~np.isnan(per["plat"].to_numpy()), ["id", "plat", "plon", "city", "country"]]
    legs_from_lat = p.groupby("id", sort=False)["plat"].shift(1)
    legs_from_lon = p.groupby("id", sort=False)["plon"].shift(1)
    sp = src[["src_lat", "src_lon"]].reindex(p["id"])
    legs_from_lat = legs_from_lat.fillna(pd.Series(sp["src_lat"].to_numpy(), index=p.index))
    legs_from_lon = legs_from_lon.fillna(pd.Series(sp["src_lon"].to_numpy(), index=p.index))
    leg = great_circle_km(legs_from_lat.to_numpy(), legs_from_lon.to_numpy(),
                          p["plat"].to_numpy(), p["plon"].to_numpy())
    path_km = pd.Series(np.nan_to_num(leg), index=p.index).groupby(p["id"]).sum()
    last = p.groupby("id", sort=False)[["plat", "plon"]].last()
    first = p.groupby("id", sort=False)[["plat", "plon"]].first()
    o = src.loc[out.index]
    start_lat = o["src_lat"].fillna(first["plat"].reindex(out.index))
    start_lon = o["src_lon"].fillna(first["plon"].reindex(out.index))
    end_lat = o["dst_lat"].fillna(last["plat"].reindex(out.index))
    end_lon = o["dst_lon"].fillna(last["plon"].reindex(out.index))
    tail = great_circle_km(last["plat"].reindex(out.index).to_numpy(),
                           last["plon"].reindex(out.index).to_numpy(),
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
    dest = per[per["dest"]].groupby("id", sort=False)["rtt"].min()
    out["rtt_ms"] = dest.reindex(out.index).astype("float64")
    direct_floor = rtt_floor_ms(great_circle_km(o["src_lat"].to_numpy(), o["src_lon"].to_numpy(),
                                                o["dst_lat"].to_numpy(), o["dst_lon"].to_numpy()))
    out["inflation"] = out["rtt_ms"].to_numpy() / np.maximum(direct_floor, MIN_FLOOR_MS)

    # Where the time goes: the largest RTT step beyond the fibre floor of its leg.
    a = per.loc[~np.isnan(rtt), ["id", "rtt", "plat", "plon", *_HOP]]
    ga = a.groupby("id", sort=False)
    prev_rtt = ga["rtt"].shift(1).fillna(0.0)
    plat_prev = ga["plat"].shift(1)
    plon_prev = ga["plon"].shift(1)
    sa = src[["src_lat", "src_lon"]].reindex(a["id"])
    is_first = ga.cumcount().to_numpy() == 0
    plat_prev = plat_prev.where(~is_first, pd.Series(sa["src_lat"].to_numpy(), index=a.index))
    plon_prev = plon_prev.where(~is_first, pd.Series(sa["src_lon"].to_numpy(), index=a.index))
    leg_floor = rtt_floor_ms(great_circle_km(plat_prev.to_numpy(), plon_prev.to_numpy(),
                                             a["plat"].to_numpy(), a["plon"].to_numpy()))
    a["excess"] = (a["rtt"] - prev_rtt).to_numpy() - np.nan_to_num(leg_floor)
    worst = a.sort_values(["id", "excess", "ttl"], ascending=[True, False, True],
                          kind="mergesort").drop_duplicates("id").set_index("id")

    # Farthest off the direct route: max of d(start, hop) + d(hop, end).
    pe = pd.DataFrame({"id": p["id"].to_numpy(), "city": p["city"].to_numpy(),
                       "country": p["country"].to_numpy()}, index=p.index)
    st = pd.DataFrame({"slat": start_lat, "slon": start_lon, "elat": end_lat,
                       "elon": end_lon}).reindex(p["id"])
    pe["off"] = (great_circle_km(st["slat"].to_numpy(), st["slon"].to_numpy(),
                                 p["plat"].to_numpy(), p["plon"].to_numpy())
                 + great_circle_km(p["plat"].to_numpy(), p["plon"].to_numpy(),
                                   st["elat"].to_numpy(), st["elon"].to_numpy()))
    via = pe.sort_values(["id", "off"], ascending=[True, False],
                         kind="mergesort").drop_duplicates("id").set_index("id")
    out["via_city"] = _string(via["city"].reindex(out.index))
    out["via_country"] = _string(via["country"].reindex(out.index))

    cont = out["kind"] == "continent"
    for f in _HOP:
        x = exit_rows[f].reindex(out.index)
        y = worst[f].reindex(out.index)
        col = x.where(cont.fillna(False), y)
        out[f"hop_{f}"] = col.where(out["detoured"])
    out["hop_excess_ms"] = worst["excess"].reindex(out.index).where(
        out["detoured"]).astype("float64")
    dropped = per[per["dropped"]].groupby("id", sort=False)["ttl"].agg(tuple)
    out["dropped_ttls"] = dropped.reindex(out.index)
    out["dropped_ttls"] = out["dropped_ttls"].map(lambda v: v if isinstance(v, tuple) else ())
    out = out.set_axis(id_strings.take(string_of[out.index.to_numpy()]))
    out = out.rename_axis("id").reset_index()
    out["hop_ttl"] = out["hop_ttl"].astype("Int64")
    out["hop_asn"] = out["hop_asn"].astype("Int64")
    for c in ("hop_address", "hop_as_org", "hop_city", "hop_country"):
        out[c] = _string(out[c])
    return out[list(TRACE_COLUMNS)]


def _sequences(rows: pd.DataFrame, col: str, index: pd.Index) -> pd.Series:
    """Per id, the values of ``col`` in row order, consecutive repeats dropped, as tuples."""
    if rows.empty:
        return pd.Series([()] * len(index), index=index, dtype=object)
    ids = rows["id"].to_numpy(dtype=object)
    vals = rows[col].to_numpy(dtype=object)
    keep = np.ones(len(rows), dtype=bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (vals[1:] != vals[:-1])
    kept = pd.Series(vals[keep], index=pd.Index(ids[keep], name="id"))
    # One tuple per id: split the flat array at the ids' boundaries (no call per row).
    codes, uniques = pd.factorize(kept.index)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    parts = np.split(kept.to_numpy(dtype=object)[order], bounds)
    seqs = pd.Series([tuple(part) for part in parts], index=uniques, dtype=object)
    out = seqs.reindex(index)
    return out.map(lambda v: v if isinstance(v, tuple) else ())


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
    g = traces.groupby(keys, sort=True, observed=True)
    out = pd.DataFrame({"traces": g.size(), "detoured": g["detoured"].sum().astype("int64"),
                        "continental": g["continental_detour"].sum().astype("int64"),
                        "exits": (traces["exits"] > 0).groupby(
                            [traces[k] for k in keys], sort=True, observed=True).sum().astype(
                            "int64"),
                        "dropped_hops": g["dropped_hops"].sum().astype("int64")})
    out["share"] = out["detoured"] / out["traces"]
    exploded = traces[[*keys, "countries"]].explode("countries").dropna(subset=["countries"])
    counts = exploded.groupby([*keys, "countries"], sort=True, observed=True).size()
    ranked = counts.reset_index(name="n").sort_values(
        [*keys, "n", "countries"], ascending=[True] * len(keys) + [False, True])
    out["countries"] = ranked.groupby(keys, sort=False, observed=True)["countries"].agg(
        ",".join).reindex(out.index).fillna("")
    lengths = pd.Series([len(x) for x in traces["countries"]], index=traces.index,
                        dtype="float64")
    out["countries_median"] = lengths.groupby([traces[k] for k in keys], sort=True,
                                              observed=True).median().astype("float64")
    det = traces[traces["detoured"]].groupby(keys, observed=True)["inflation"].median()
    dirr = traces[~traces["detoured"]].groupby(keys, observed=True)["inflation"].median()
    out["inflation_detoured"] = det.reindex(out.index).astype("float64")
    out["inflation_direct"] = dirr.reindex(out.index).astype("float64")
    return out


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
    by_pair["via_city"] = d.dropna(subset=["via_city"]).groupby(
        ["region", "target"], observed=True)["via_city"].agg(
        lambda s: str(s.mode().iloc[0])).reindex(by_pair.index)
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
    return Detours(traces, by_region, by_pair, notes)


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
