"""Physics as a data check: measurements faster than light are bad data, not good paths.

A pair's minimum RTT cannot be below the time light needs to go there and back.  Two
bounds are tested, each on the great-circle distance between the two ends:

* **fibre**: ``2 d' / (c / 1.468)`` — light in standard single-mode fibre (ITU-T G.652,
  group index ≈ 1.468, see :mod:`netvantage.analysis.geo`), the faster and therefore
  more lenient figure than the 200 km/ms of the inflation floor;
* **vacuum**: ``2 d' / c`` with c = 299.792458 km/ms — the hard limit.

``d'`` is the distance less a slack for where the coordinates point, not where the
machines are: :data:`SLACK_KM` for both ends together (a city's airport or centre stands
for a probe somewhere in it) plus :data:`SPHERE_ERROR` of the distance (the haversine's
sphere against the ellipsoid).  A pair whose minimum RTT is below the fibre bound is an
*impossible measurement* ("impossible (fibre)"); below the vacuum bound too, "impossible
(vacuum)".

Where the source end is: the probe's own coordinates when the locations table has a row
named after the record's ``agent``, else the region's point.  A pair that is impossible
from the region point but possible from every probe's own coordinates is *not* impossible;
it is counted as "explained by the probes' coordinates" (the region point is not where the
probes are).

The likely cause of each impossible pair, tested in this order:

1. **anycast target** — at least :data:`ANYCAST_MIN_REGIONS` regions are below the floor
   to the target and no single place of the target agrees with the minimum RTTs of all
   the regions that measured it, even leaving any one region out (each region's RTT
   bounds the target to a disc around it; the discs have no common point, with one
   outlier allowed, on a 1° grid).  One address answered from several places.
2. **location of the region** — the region is below the floor to at least two targets
   that are not anycast, and to more of its targets (as a share) than the target is
   from its regions; the place its RTTs fit is named when the discs meet.
3. **location of the target** (wrong geolocation) — the mirror case: at least two regions
   are below the floor to the target, more than the region's share.
4. **location of either end** — one pair alone: the region point, the probe's
   coordinates or the target's location is wrong, the data cannot say which.

Impossible pairs are excluded from the ranking by default (:meth:`Physics.ranked` drops
their records from what :func:`netvantage.analysis.rank.rank` sees, and the notes say
so); ``keep_impossible=True`` (``--keep-impossible``) keeps them, flagged all the same.

Inflation (minimum RTT over the 200 km/ms floor, see
:func:`netvantage.analysis.geo.inflation`) is a printed result: per pair, the median
over pairs and per continent pair (region's continent → target's continent).  The
medians leave out impossible pairs (bad data) and pairs whose floor is under
:data:`netvantage.analysis.geo.MIN_FLOOR_MS` (their inflation is understated by the
clamp); both are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from .geo import (
    FIBRE_FAST_KM_PER_MS,
    FIBRE_KM_PER_MS,
    MIN_FLOOR_MS,
    VACUUM_KM_PER_MS,
    _airports,
    great_circle_km,
)
from .geo import inflation as inflation_table

__all__ = [
    "ANYCAST_MIN_REGIONS",
    "SLACK_KM",
    "SPHERE_ERROR",
    "Physics",
    "bound_ms",
    "check",
    "json_keys",
]

SLACK_KM = 50.0
"""Kilometres taken off every distance before the bounds: both ends' coordinates name
a city (an airport, a centre), not the machine — 25 km each."""

SPHERE_ERROR = 0.005
"""Share of the distance taken off too: the haversine on a sphere is within 0.5 % of
the distance on the ellipsoid."""

ANYCAST_MIN_REGIONS = 3
"""An anycast target is suspected only when at least this many regions are below the
floor to it (two could be two bad region points)."""

_MEASURED_KINDS = ("ping", "tcp", "trace")
_GRID_DEG = 1.0
_GRID_SLACK_KM = 80.0  # half the diagonal of a 1° cell at the equator: a disc can miss a node
FloatArray = npt.NDArray[np.float64]

POSSIBLE = "possible"
FIBRE = "impossible (fibre)"
VACUUM = "impossible (vacuum)"
UNLOCATED = "unlocated"


def bound_ms(km: Any, speed_km_per_ms: float, *, slack_km: float = SLACK_KM) -> Any:
    """The round trip at ``speed_km_per_ms`` over ``km`` less the slack (never below 0)."""
    d = np.maximum(np.asarray(km, dtype=np.float64) * (1.0 - SPHERE_ERROR) - slack_km, 0.0)
    out = 2.0 * d / speed_km_per_ms
    return float(out) if np.ndim(out) == 0 else out


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class Physics:
    """The physical checks of a campaign's pairs; see the module docstring for the rules.

    ``pairs``: one row per (region, target) with a minimum RTT — region, target, n,
    rtt_min_ms, source (which coordinates the source end had: "probe AGENT" or "region
    point"), distance_km, fibre_bound_ms, vacuum_bound_ms, status (possible, impossible
    (fibre), impossible (vacuum), unlocated), shortfall_ms (bound − RTT when impossible),
    explained_by_probe, cause, why, region_continent, target_continent, floor_ms (200
    km/ms, unclamped), inflation (as :func:`netvantage.analysis.geo.inflation`).
    ``continents``: per continent pair, n, the median and quartiles of inflation.
    """

    pairs: pd.DataFrame
    continents: pd.DataFrame
    keep_impossible: bool = False
    slack_km: float = SLACK_KM
    anycast: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def impossible(self) -> pd.DataFrame:
        return self.pairs[self.pairs["status"].isin([FIBRE, VACUUM])]

    @property
    def usable(self) -> pd.DataFrame:
        """Pairs whose inflation counts in the medians: possible, located, not clamped."""
        p = self.pairs
        return p[(p["status"] == POSSIBLE) & (p["floor_ms"] >= MIN_FLOOR_MS)
                 & p["inflation"].notna()]

    @property
    def median_inflation(self) -> float:
        u = self.usable["inflation"]
        return float(u.median()) if len(u) else math.nan

    def ranked(self, measurements: pd.DataFrame) -> pd.DataFrame:
        """``measurements`` without the impossible pairs' records (all kept if asked to)."""
        bad = self.impossible
        if self.keep_impossible or bad.empty:
            return measurements
        keys = set(zip(bad["region"].astype(str), bad["target"].astype(str), strict=True))
        pair = pd.Series(list(zip(measurements["region"].astype(str),
                                  measurements["target"].astype(str), strict=True)),
                         index=measurements.index)
        return measurements[~pair.isin(keys)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON keys "impossible" and "inflation" (JSON types only)."""
        bad = self.impossible
        p = self.pairs
        impossible = {
            "checked_pairs": int((p["status"] != UNLOCATED).sum()),
            "unlocated_pairs": int((p["status"] == UNLOCATED).sum()),
            "fibre": len(bad), "vacuum": int((bad["status"] == VACUUM).sum()),
            "excluded_from_ranking": not self.keep_impossible and not bad.empty,
            "explained_by_probe_coordinates": int(p["explained_by_probe"].sum()),
            "anycast_suspected": list(self.anycast),
            "bounds": {"fibre_km_per_ms": round(FIBRE_FAST_KM_PER_MS, 3),
                       "vacuum_km_per_ms": VACUUM_KM_PER_MS, "slack_km": self.slack_km,
                       "sphere_error": SPHERE_ERROR},
            "pairs": [{"region": str(r.region), "target": str(r.target),
                       "status": str(r.status), "rtt_min_ms": _f(r.rtt_min_ms),
                       "distance_km": _f(r.distance_km), "fibre_bound_ms": _f(r.fibre_bound_ms),
                       "vacuum_bound_ms": _f(r.vacuum_bound_ms),
                       "shortfall_ms": _f(r.shortfall_ms), "source": str(r.source),
                       "cause": str(r.cause), "why": str(r.why)}
                      for r in bad.itertuples()],
        }
        u = self.usable
        inflation = {
            "floor": f"2 × great-circle distance / {FIBRE_KM_PER_MS:g} km/ms, at least "
                     f"{MIN_FLOOR_MS:g} ms",
            "median": _f(self.median_inflation), "pairs_used": len(u),
            "left_out": {"impossible": len(bad),
                         "short": int(((p["status"] == POSSIBLE)
                                       & (p["floor_ms"] < MIN_FLOOR_MS)).sum()),
                         "unlocated": int((p["status"] == UNLOCATED).sum())},
            "per_continent_pair": [
                {"from": str(r.region_continent), "to": str(r.target_continent),
                 "pairs": int(cast(Any, r.n)), "median": _f(r.median), "p25": _f(r.p25),
                 "p75": _f(r.p75)} for r in self.continents.itertuples()],
            "pairs": [{"region": str(r.region), "target": str(r.target),
                       "inflation": _f(r.inflation), "status": str(r.status)}
                      for r in p.itertuples()],
        }
        return {"impossible": impossible, "inflation": inflation}

    def text_lines(self) -> list[str]:
        """The section of ``netvantage analyse``'s text output."""
        bad = self.impossible
        checked = int((self.pairs["status"] != UNLOCATED).sum())
        n_vac = int((bad["status"] == VACUUM).sum())
        what = ("kept in the ranking (--keep-impossible)" if self.keep_impossible
                else "excluded from the ranking (--keep-impossible keeps them)")
        lines = [f"Impossible measurements: {len(bad)} of {checked} located pairs below the "
                 f"fibre bound ({FIBRE_FAST_KM_PER_MS:.1f} km/ms), {n_vac} of them below "
                 f"light in vacuum" + (f"; {what}" if len(bad) else "")
                 if checked else
                 "Impossible measurements: nothing to check (no pair has both a minimum RTT "
                 "and the places of both ends)"]
        for r in bad.sort_values(["status", "region", "target"]).itertuples():
            lines.append(f"  {r.region} -> {r.target}: {r.status}: min RTT "
                         f"{r.rtt_min_ms:.1f} ms < {r.fibre_bound_ms:.1f} ms over "
                         f"{r.distance_km:,.0f} km (from the {r.source}); likely cause: "
                         f"{r.cause} — {r.why}")
        explained = int(self.pairs["explained_by_probe"].sum())
        if explained:
            lines.append(f"  {explained} pair(s) below the bound from the region point but "
                         "not from the probes' own coordinates (the region point is not "
                         "where the probes are): not impossible")
        med = self.median_inflation
        if not len(self.usable):
            return [*lines, "", f"Inflation (min RTT / fibre floor at {FIBRE_KM_PER_MS:g} "
                    "km/ms): no figure (no possible pair with a minimum RTT and a floor of "
                    f"at least {MIN_FLOOR_MS:g} ms)"]
        lines += ["", f"Inflation (min RTT / fibre floor at {FIBRE_KM_PER_MS:g} km/ms): median "
                  + (f"{med:.2f}" if not math.isnan(med) else "-")
                  + f" over {len(self.usable)} pairs (impossible pairs and pairs with a floor "
                  f"under {MIN_FLOOR_MS:g} ms left out)"]
        if not self.continents.empty:
            rows = [("CONTINENTS", "PAIRS", "MEDIAN", "P25-P75")]
            rows += [(f"{r.region_continent} -> {r.target_continent}", str(int(cast(Any, r.n))),
                      f"{r.median:.2f}", f"{r.p25:.2f}-{r.p75:.2f}")
                     for r in self.continents.itertuples()]
            from ..text import columns

            lines += ["  " + line for line in columns(rows)]
        return lines


def _f(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else round(x, 3)


def json_keys(physics: Physics | None) -> dict[str, Any]:
    """The "impossible" and "inflation" keys of ``analyse --json``, also without locations."""
    if physics is not None:
        return physics.to_dict()
    why = "no locations given: the physical checks need --locations"
    return {"impossible": {"checked_pairs": 0, "skipped": why},
            "inflation": {"median": None, "skipped": why}}


# --------------------------------------------------------------------------- the check


def _places(locations: pd.DataFrame) -> dict[str, tuple[float, float, str | None]]:
    out: dict[str, tuple[float, float, str | None]] = {}
    for name, lat, lon, cont in zip(locations["name"].astype(str),
                                    locations["lat"].to_numpy(dtype=float),
                                    locations["lon"].to_numpy(dtype=float),
                                    locations["continent"], strict=True):
        if math.isfinite(lat) and math.isfinite(lon):
            out[name] = (float(lat), float(lon), None if pd.isna(cont) else str(cont))
    return out


@dataclass(frozen=True, slots=True)
class _Grid:
    lat: FloatArray
    lon: FloatArray


def _grid() -> _Grid:
    lats = np.arange(-90 + _GRID_DEG / 2, 90, _GRID_DEG)
    lons = np.arange(-180 + _GRID_DEG / 2, 180, _GRID_DEG)
    la, lo = np.meshgrid(lats, lons, indexing="ij")
    return _Grid(la.ravel(), lo.ravel())


def _fit(grid: _Grid, points: list[tuple[float, float, float]],
         slack_km: float) -> tuple[int, tuple[float, float] | None]:
    """Fewest discs missed by one place, and the place (mean of the best grid nodes).

    ``points``: (lat, lon, rtt_min_ms) — the other end lies within rtt × fibre / 2
    (plus the slack) of each point.
    """
    missed = np.zeros(grid.lat.size, dtype=np.int64)
    for lat, lon, rtt in points:
        radius = rtt * FIBRE_FAST_KM_PER_MS / 2 + slack_km + _GRID_SLACK_KM
        missed += great_circle_km(lat, lon, grid.lat, grid.lon) > radius
    best = int(missed.min())
    where = missed == best
    # A circular mean, so that a fit across the antimeridian is not put at longitude 0.
    lon_r = np.radians(grid.lon[where])
    lon = math.degrees(math.atan2(float(np.sin(lon_r).mean()), float(np.cos(lon_r).mean())))
    return best, (float(grid.lat[where].mean()), lon)


def _nearest_airport(lat: float, lon: float) -> str:
    table = _airports()
    codes = list(table)
    la = np.array([table[c]["lat"] for c in codes], dtype=float)
    lo = np.array([table[c]["lon"] for c in codes], dtype=float)
    i = int(np.argmin(great_circle_km(lat, lon, la, lo)))
    a = table[codes[i]]
    return f"{codes[i]}, {a['city']}, {a['country']}"


def _source_rows(m: pd.DataFrame, places: dict[str, tuple[float, float, str | None]],
                 slack_km: float) -> pd.DataFrame:
    """Per (region, agent, target): the minimum RTT and both bounds from the best place."""
    g = (m.groupby(["region", "agent", "target"], sort=True, observed=True)["rtt_min_ms"]
         .agg(rtt="min", k="count").reset_index())
    g = g[g["k"] > 0]
    rows: list[dict[str, Any]] = []
    for r in g.itertuples():
        region, agent, target = str(r.region), str(r.agent), str(r.target)
        dst = places.get(target)
        own = places.get(agent) if agent != region else None
        src = own or places.get(region)
        region_pt = places.get(region)
        rtt = float(cast(Any, r.rtt))
        row: dict[str, Any] = {"region": region, "agent": agent, "target": target,
                               "n": int(cast(Any, r.k)), "rtt_min_ms": rtt,
                               "source": f"probe {agent}" if own else "region point"}
        if dst is None or src is None:
            row.update(distance_km=math.nan, fibre_bound_ms=math.nan,
                       vacuum_bound_ms=math.nan, region_point_short=False)
        else:
            km = great_circle_km(src[0], src[1], dst[0], dst[1])
            row.update(distance_km=km, fibre_bound_ms=bound_ms(km, FIBRE_FAST_KM_PER_MS,
                                                               slack_km=slack_km),
                       vacuum_bound_ms=bound_ms(km, VACUUM_KM_PER_MS, slack_km=slack_km))
            short = False
            if own is not None and region_pt is not None:
                km_r = great_circle_km(region_pt[0], region_pt[1], dst[0], dst[1])
                short = rtt < bound_ms(km_r, FIBRE_FAST_KM_PER_MS, slack_km=slack_km)
            row["region_point_short"] = short
        rows.append(row)
    return pd.DataFrame(rows)


def _pair_rows(src: pd.DataFrame, places: dict[str, tuple[float, float, str | None]]
               ) -> pd.DataFrame:
    """One row per (region, target) from its sources (:func:`_source_rows`), all at once.

    The pair is judged on its worst located source (the smallest margin over the fibre
    bound; the first such row on ties), or on its first source when none is located;
    ``rtt_min_ms`` is the smallest over its sources.  Group-bys, no frame per pair.
    """
    src = src.reset_index(drop=True)
    located = src["fibre_bound_ms"].notna()
    ordered = src.assign(_unlocated=~located,
                         _margin=src["margin"].where(located, np.inf),
                         _at=np.arange(len(src)))
    ordered = ordered.sort_values(["region", "target", "_unlocated", "_margin", "_at"],
                                  kind="stable")
    worst = ordered.drop_duplicates(["region", "target"]).set_index(["region", "target"])
    by = src.groupby(["region", "target"], sort=True)
    pairs = pd.DataFrame({"rtt": by["rtt_min_ms"].min(), "n": by["n"].sum(),
                          "short": by["region_point_short"].any(),
                          "any_located": located.groupby([src["region"], src["target"]],
                                                         sort=True).any()})
    worst = worst.reindex(pairs.index)
    w_rtt = worst["rtt_min_ms"].to_numpy(dtype=np.float64)
    vacuum = worst["vacuum_bound_ms"].to_numpy(dtype=np.float64)
    fibre = worst["fibre_bound_ms"].to_numpy(dtype=np.float64)
    any_located = pairs["any_located"].to_numpy(dtype=bool)
    with np.errstate(invalid="ignore"):
        status = np.where(~any_located, UNLOCATED, np.where(
            w_rtt < vacuum, VACUUM, np.where(w_rtt < fibre, FIBRE, POSSIBLE)))
    impossible = np.isin(status, [FIBRE, VACUUM])
    regions = [str(r) for r in pairs.index.get_level_values(0)]
    targets = [str(t) for t in pairs.index.get_level_values(1)]
    return pd.DataFrame({
        "region": regions, "target": targets,
        "n": pairs["n"].to_numpy(dtype=np.int64).tolist(),
        "rtt_min_ms": pairs["rtt"].to_numpy(dtype=np.float64),
        "source": worst["source"].astype(str).to_numpy(),
        "distance_km": worst["distance_km"].to_numpy(dtype=np.float64),
        "fibre_bound_ms": fibre, "vacuum_bound_ms": vacuum, "status": status.astype(object),
        "shortfall_ms": np.where(impossible, fibre - w_rtt, math.nan),
        "explained_by_probe": (status == POSSIBLE) & pairs["short"].to_numpy(dtype=bool),
        "cause": "", "why": "",
        "region_continent": [places.get(r, (0, 0, None))[2] for r in regions],
        "target_continent": [places.get(t, (0, 0, None))[2] for t in targets]})


def check(measurements: pd.DataFrame, locations: pd.DataFrame, *,
          inflation: pd.DataFrame | None = None, slack_km: float = SLACK_KM,
          keep_impossible: bool = False) -> Physics:
    """Test every (region, target) pair against the fibre and vacuum bounds.

    ``inflation``: :func:`netvantage.analysis.geo.inflation` of the same frames when the
    caller has it (computed otherwise); ``slack_km``: see :data:`SLACK_KM`;
    ``keep_impossible``: keep impossible pairs in :meth:`Physics.ranked` (default: drop).
    """
    m = measurements[measurements["kind"].astype("string").isin(_MEASURED_KINDS)
                     & measurements["rtt_min_ms"].notna()]
    m = m[["region", "agent", "target", "rtt_min_ms"]].copy()
    for c in ("region", "agent", "target"):
        m[c] = m[c].astype("string").fillna(m["region"].astype("string") if c == "agent"
                                             else pd.NA)
    m = m.dropna(subset=["region", "target"])
    places = _places(locations)
    src = _source_rows(m, places, slack_km)
    columns = ["region", "target", "n", "rtt_min_ms", "source", "distance_km",
               "fibre_bound_ms", "vacuum_bound_ms", "status", "shortfall_ms",
               "explained_by_probe", "cause", "why", "region_continent", "target_continent",
               "floor_ms", "inflation"]
    if src.empty:
        return Physics(pd.DataFrame(columns=columns),
                       pd.DataFrame(columns=["region_continent", "target_continent", "n",
                                             "median", "p25", "p75"]),
                       keep_impossible, slack_km)
    src["margin"] = src["rtt_min_ms"] - src["fibre_bound_ms"]
    pairs = _pair_rows(src, places)
    anycast = _causes(pairs, places, slack_km)
    table = inflation if inflation is not None else inflation_table(measurements, locations)
    keyed = table.assign(region=table["region"].astype(str), target=table["target"].astype(str))
    pairs = pairs.merge(keyed[["region", "target", "floor_ms", "inflation"]],
                        on=["region", "target"], how="left")[columns]
    physics = Physics(pairs, _continents(pairs), keep_impossible, slack_km, anycast)
    bad = physics.impossible
    if len(bad):
        physics.notes.append(
            f"{len(bad)} impossible pair(s) (minimum RTT below light in fibre"
            + (f"; {int((bad['status'] == VACUUM).sum())} below light in vacuum"
               if (bad["status"] == VACUUM).any() else "") + "): "
            + (f"kept in the ranking as asked ({', '.join(_names(bad))})" if keep_impossible
               else f"their records are left out of the ranking ({', '.join(_names(bad))}); "
                    "--keep-impossible keeps them"))
    return physics


def _names(bad: pd.DataFrame) -> list[str]:
    return [f"{r.region}->{r.target}" for r in bad.itertuples()]


def _continents(pairs: pd.DataFrame) -> pd.DataFrame:
    u = pairs[(pairs["status"] == POSSIBLE) & (pairs["floor_ms"] >= MIN_FLOOR_MS)
              & pairs["inflation"].notna() & pairs["region_continent"].notna()
              & pairs["target_continent"].notna()]
    if u.empty:
        return pd.DataFrame(columns=["region_continent", "target_continent", "n", "median",
                                     "p25", "p75"])
    g = u.groupby(["region_continent", "target_continent"], sort=True)["inflation"]
    return pd.DataFrame({"n": g.count(), "median": g.median(), "p25": g.quantile(0.25),
                         "p75": g.quantile(0.75)}).reset_index()


def _causes(pairs: pd.DataFrame, places: dict[str, tuple[float, float, str | None]],
            slack_km: float) -> tuple[str, ...]:
    """Fill ``cause`` and ``why`` of the impossible pairs (in place); the anycast targets."""
    bad_mask = pairs["status"].isin([FIBRE, VACUUM])
    if not bad_mask.any():
        return ()
    located = pairs[pairs["status"] != UNLOCATED]
    bad = pairs[bad_mask]
    grid = _grid()
    per_target: dict[str, set[str]] = {str(k): set(map(str, v)) for k, v in
                                       bad.groupby("target")["region"].apply(set).items()}
    per_region: dict[str, set[str]] = {str(k): set(map(str, v)) for k, v in
                                       bad.groupby("region")["target"].apply(set).items()}
    n_regions = located.groupby("target")["region"].nunique().to_dict()
    n_targets = located.groupby("region")["target"].nunique().to_dict()

    anycast: list[str] = []
    target_fit: dict[str, tuple[int, tuple[float, float] | None]] = {}
    for target, regions in sorted(per_target.items()):
        seen = located[located["target"] == target]
        pts = [(places[r][0], places[r][1], float(rtt))
               for r, rtt in zip(seen["region"], seen["rtt_min_ms"], strict=True)
               if r in places]
        missed, spot = _fit(grid, pts, slack_km)
        target_fit[target] = (missed, spot)
        if len(regions) >= ANYCAST_MIN_REGIONS and missed >= 2:
            anycast.append(target)

    region_fit: dict[str, tuple[int, tuple[float, float] | None]] = {}
    for region, targets in sorted(per_region.items()):
        if len(targets - set(anycast)) < 2:
            continue
        seen = located[(located["region"] == region) & ~located["target"].isin(anycast)]
        pts = [(places[t][0], places[t][1], float(rtt))
               for t, rtt in zip(seen["target"], seen["rtt_min_ms"], strict=True)
               if t in places]
        region_fit[region] = _fit(grid, pts, slack_km)

    def fits(spot: tuple[float, float] | None, missed: int) -> str:
        if spot is None or missed > 1:
            return ""
        return (f"; its RTTs fit a place near {spot[0]:.0f}, {spot[1]:.0f} "
                f"(nearest airport {_nearest_airport(*spot)})")

    for i in bad.index:
        region, target = str(pairs.at[i, "region"]), str(pairs.at[i, "target"])
        src = str(pairs.at[i, "source"])
        r_bad = len(per_region.get(region, set()) - set(anycast))
        t_bad = len(per_target.get(target, set()))
        r_share = r_bad / max(n_targets.get(region, 1), 1)
        t_share = t_bad / max(n_regions.get(target, 1), 1)
        where = (f"the coordinates of probe {src.removeprefix('probe ')}"
                 if src.startswith("probe ") else f"{region}'s region point")
        if target in anycast:
            conts = sorted({str(places[r][2]) for r in per_target[target] if r in places})
            cause = "anycast target"
            why = (f"{t_bad} regions ({', '.join(conts)}) are all below the floor to {target} "
                   "and no single place of it fits their RTTs: one address answering "
                   "from several places")
        elif r_bad >= 2 and r_share >= t_share:
            cause = "location of the region"
            missed, spot = region_fit.get(region, (9, None))
            why = (f"{region} is below the floor to {r_bad} of {n_targets.get(region, 0)} "
                   f"targets: {where} is likely wrong" + fits(spot, missed))
        elif t_bad >= 2:
            cause = "location of the target"
            missed, spot = target_fit.get(target, (9, None))
            why = (f"{t_bad} of {n_regions.get(target, 0)} regions are below the floor to "
                   f"{target}: its location (geolocation) is likely wrong" + fits(spot, missed))
        else:
            cause = "location of either end"
            why = (f"only this pair is below the floor: check {where} and {target}'s "
                   "location")
        pairs.at[i, "cause"] = cause
        pairs.at[i, "why"] = why
    return tuple(anycast)
