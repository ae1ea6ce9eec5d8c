"""Geography: where the places are, how far apart, and the round trip physics allows.

Light in optical fibre travels at c / n_g, where n_g is the fibre's *group* index
(the index that sets how fast a pulse, not a phase front, moves).  Standard
single-mode fibre (ITU-T G.652, the fibre of almost every terrestrial and
submarine link) has n_g ≈ 1.468 around 1310-1550 nm (vendors' datasheets give
1.467-1.468; the refractive index of silica is about 1.45-1.47), so light in
fibre covers c / 1.468 = 299.792458 / 1.468 ≈ **204 km per millisecond**.

This module rounds that speed *down* to **200 km per ms**
(:data:`FIBRE_KM_PER_MS`).  A slower assumed speed gives a *higher* floor: the
round trip over a great-circle distance ``d`` is taken to need at least
``2 d / 200`` ms, i.e. 1 ms per 100 km (:func:`rtt_floor_ms`), about 2 % more
than the physical ``2 d / 204``.  That floor is a convention for *inflation*
(the measured minimum RTT divided by it: a path at exactly the speed of light in
fibre has inflation 0.98, not 1), where a round, easily checked figure matters
more than 2 %.  It is not the bound for calling a measurement impossible: a
stricter floor would call some real measurements impossible, so
:mod:`netvantage.analysis.physics` tests against the faster, more lenient
speed c / 1.468 (:data:`FIBRE_FAST_KM_PER_MS`) and, as the hard limit nothing can
beat, light in vacuum, c = 299.792458 km/ms (:data:`VACUUM_KM_PER_MS`, exact by
the SI definition of the metre).

Real paths follow cables, not great circles, and add equipment and access
delays, so the measured minimum RTT of a healthy path is typically 1.5-2.5
times the floor.  :func:`inflation` compares every (region, target) pair of a
campaign with the campaign's own typical inflation, so the rule needs no
constant of the real internet.

Great-circle distances use the haversine formula on a sphere of the IUGG mean
Earth radius, R = 6371.0088 km (error against the ellipsoid below 0.5 %).

The ``locations`` frame (see :mod:`netvantage.analysis.frames`) is read by
:func:`locations`.  A row may give only an IATA airport code: coordinates,
and the country when missing, come from the ``airportsdata`` package (MIT).
The continent comes from the country with the continent codes (AF, AN, AS, EU, NA,
OC, SA) of GeoNames' ``countryInfo.txt`` (CC BY 4.0), shipped as a 250-row CSV in
``analysis/data/continents.csv``.  Note that "NA" is both Namibia's
country code and North America's continent code: the CSV is read with no
"missing value" guessing for that reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import SchemaError
from .frames import LOCATION_COLUMNS

__all__ = [
    "DETOUR_MIN_RATIO",
    "DETOUR_ROBUST_Z",
    "EARTH_RADIUS_KM",
    "FIBRE_FAST_KM_PER_MS",
    "FIBRE_GROUP_INDEX",
    "FIBRE_KM_PER_MS",
    "MIN_FLOOR_MS",
    "SPEED_OF_LIGHT_KM_PER_MS",
    "VACUUM_KM_PER_MS",
    "continent_of",
    "great_circle_km",
    "inflation",
    "locations",
    "rtt_floor_ms",
]

EARTH_RADIUS_KM = 6371.0088
"""IUGG mean radius of the Earth."""

SPEED_OF_LIGHT_KM_PER_MS = 299.792458
"""c in km per millisecond (exact: the metre is defined from it)."""

VACUUM_KM_PER_MS = SPEED_OF_LIGHT_KM_PER_MS
"""The hard limit: no signal covers more than this per millisecond."""

FIBRE_GROUP_INDEX = 1.468
"""Group index of standard single-mode fibre (ITU-T G.652; datasheets: 1.467-1.468)."""

FIBRE_FAST_KM_PER_MS = SPEED_OF_LIGHT_KM_PER_MS / FIBRE_GROUP_INDEX
"""Light in fibre, c / 1.468 ≈ 204.2 km per ms: the lenient speed of the impossibility test."""

FIBRE_KM_PER_MS = 200.0
"""The speed behind :func:`rtt_floor_ms` and inflation: 204 km/ms rounded *down* to 200.

Rounding the speed down raises the floor by about 2 % (1 ms of round trip per 100
km instead of per 102 km): fine for inflation, which is a ratio read against the
campaign's own typical value, but too strict to call a measurement impossible —
that test uses :data:`FIBRE_FAST_KM_PER_MS`.
"""

MIN_FLOOR_MS = 10.0
"""The smallest round-trip floor :func:`inflation` divides by.

Two places in one city have a floor near 0 ms, and any access network (DSL
interleaving, cable, LTE scheduling) alone costs a few to 10+ ms, so dividing by
the physical floor would make every short pair look hugely inflated.  Pairs
under ~1,000 km are therefore compared with 10 ms: a same-city pair measured at
3 ms has inflation 0.3, one hauled to Europe and back (≥ 100 ms) still has 10+.
"""

DETOUR_ROBUST_Z = 3.0
"""A pair is a detour candidate when its log-inflation exceeds the campaign's
median by more than this many robust standard deviations (1.4826 × MAD) ..."""

DETOUR_MIN_RATIO = 1.5
"""... and its inflation is at least this many times the campaign's typical one
(so that a campaign whose pairs are all alike, MAD ≈ 0, flags nothing for 5 %)."""

_MEASURED_KINDS = ("ping", "tcp", "trace")
_ROLES = ("region", "dc")
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


# --------------------------------------------------------------------------- physics

@overload
def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float: ...
@overload
def great_circle_km(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike,
                    lon2: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
def great_circle_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    """Great-circle distance in km between points given in degrees (haversine).

    Scalars give a float; arrays or Series (broadcast together) give an array.
    A missing coordinate (NaN) gives NaN.
    """
    scalar = all(isinstance(v, (int, float)) for v in (lat1, lon1, lat2, lon2))
    p1, l1, p2, l2 = (np.radians(np.asarray(v, dtype=np.float64))
                      for v in (lat1, lon1, lat2, lon2))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    # min(1, ·) guards against rounding just above 1 for antipodal points.
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    return float(km) if scalar else np.asarray(km, dtype=np.float64)


@overload
def rtt_floor_ms(km: float) -> float: ...
@overload
def rtt_floor_ms(km: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
def rtt_floor_ms(km: Any) -> Any:
    """The conventional fibre floor of a round trip over ``km``: 2 km / 200 km/ms.

    1 ms per 100 km, about 2 % above the physical 2 km / 204 km/ms (see the module
    docstring): the floor of inflation, not the bound of the impossibility test.
    """
    if isinstance(km, (int, float)):
        return 2.0 * float(km) / FIBRE_KM_PER_MS
    return 2.0 * np.asarray(km, dtype=np.float64) / FIBRE_KM_PER_MS


# --------------------------------------------------------------------------- places

@cache
def _airports() -> dict[str, dict[str, Any]]:
    import airportsdata  # imported on first use: ~8,000 rows parsed from CSV

    return {code: dict(info) for code, info in airportsdata.load("IATA").items()}


@cache
def _continents() -> dict[str, str]:
    """GeoNames' country -> continent column, shipped as ``analysis/data/continents.csv``."""
    text = resources.files(__package__).joinpath("data", "continents.csv").read_text("utf-8")
    rows = (line.split(",") for line in text.splitlines() if line and not line.startswith("#"))
    header = next(rows)
    if header != ["country", "continent"]:
        raise SchemaError(f"continents.csv: unexpected header {header!r}")
    return {country: continent for country, continent in rows}


def continent_of(countries: Iterable[object]) -> list[str | None]:
    """The continent code (AF, AN, AS, EU, NA, OC, SA) of each ISO 3166 alpha-2 country.

    Unknown or missing countries give ``None``.  Transcontinental countries are
    placed as GeoNames places them (RU and CY in EU, TR in AS, EG in AF).
    """
    table = _continents()
    out: list[str | None] = []
    for c in countries:
        out.append(table.get(c.upper()) if isinstance(c, str) else None)
    return out


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()) or value is pd.NA


def locations(table_or_path: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """The ``locations`` frame from a CSV file or a DataFrame, every gap filled or refused.

    Columns ``name`` and ``role`` are required; ``iata`` alone is enough for the
    place (coordinates and country come from the airport), ``lat``/``lon`` win
    over the airport when given, and ``continent`` is derived from ``country``
    when missing.  Every problem (unknown role, duplicate name, unknown airport,
    no coordinates) is reported at once as a :class:`SchemaError`.
    """
    if isinstance(table_or_path, pd.DataFrame):
        raw = table_or_path.copy()
        where = "locations table"
    else:
        where = os.fspath(table_or_path)
        raw = pd.read_csv(where, dtype=str, keep_default_na=False, na_values=[""])
    missing = [c for c in ("name", "role") if c not in raw.columns]
    if missing:
        raise SchemaError(f"{where}: no column {', '.join(missing)}; columns needed: "
                          f"{', '.join(LOCATION_COLUMNS)} (lat/lon or iata per row)")
    problems: list[str] = []
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for i, rec in enumerate(raw.to_dict("records"), start=2):  # line 1 is the header
        row = {c: (None if _blank(rec.get(c)) else rec.get(c)) for c in LOCATION_COLUMNS}
        name, role = row["name"], row["role"]
        label = f"row {i} ({name})"
        if name is None:
            problems.append(f"row {i}: no name")
            continue
        name = str(name).strip()
        if name in seen:
            problems.append(f"{label}: name given twice")
        seen.add(name)
        if role not in _ROLES:
            problems.append(f"{label}: role {role!r} is not one of {', '.join(_ROLES)}")
        iata = str(row["iata"]).strip().upper() if row["iata"] is not None else None
        airport = _airports().get(iata) if iata else None
        if iata and airport is None:
            problems.append(f"{label}: IATA code {iata!r} is not a known airport")
        lat, lon = row["lat"], row["lon"]
        if lat is None or lon is None:
            if airport is not None:
                lat, lon = airport["lat"], airport["lon"]
            elif not iata:
                problems.append(f"{label}: give lat and lon, or an IATA code")
        try:
            flat = float(lat) if lat is not None else math.nan
            flon = float(lon) if lon is not None else math.nan
        except ValueError:
            problems.append(f"{label}: lat/lon {lat!r}/{lon!r} are not numbers")
            flat = flon = math.nan
        if not (math.isnan(flat) or -90 <= flat <= 90) or not (math.isnan(flon)
                                                                or -180 <= flon <= 180):
            problems.append(f"{label}: lat/lon {flat}/{flon} out of range")
        country = row["country"]
        if country is None and airport is not None:
            country = airport["country"]
        country = str(country).strip().upper() if country is not None else None
        continent = row["continent"]
        if continent is None and country is not None:
            continent = continent_of([country])[0]
            if continent is None:
                problems.append(f"{label}: country {country!r} is not an ISO 3166 code; "
                                f"give its continent")
        rows.append({"name": name, "role": role, "lat": flat, "lon": flon,
                     "country": country, "continent": continent, "iata": iata})
    if problems:
        raise SchemaError(f"{where}: {len(problems)} problem(s) in the locations table",
                          problems)
    out = pd.DataFrame(rows, columns=list(LOCATION_COLUMNS))
    for c in ("name", "country", "continent", "iata"):
        out[c] = out[c].astype("string")
    out["role"] = pd.Categorical(out["role"], categories=list(_ROLES))
    out["lat"] = out["lat"].astype("float64")
    out["lon"] = out["lon"].astype("float64")
    return out


# --------------------------------------------------------------------------- inflation

def inflation(measurements: pd.DataFrame, locations: pd.DataFrame, *,
              min_floor_ms: float = MIN_FLOOR_MS, robust_z: float = DETOUR_ROBUST_Z,
              min_ratio: float = DETOUR_MIN_RATIO) -> pd.DataFrame:
    """Per (region, target): how far above the physical floor the best round trip is.

    Columns: region, target, n (rows with an ``rtt_min_ms``), distance_km,
    floor_ms (the unclamped fibre floor), rtt_min_ms (the minimum over ping, tcp
    and trace rows), inflation (rtt_min_ms / max(floor_ms, ``min_floor_ms``)),
    typical_inflation (the campaign's median), robust_z and detour_candidate.

    The rule, on logarithms because inflation is a ratio: with ``m`` the median
    and ``s`` = 1.4826 × MAD of log-inflation across pairs, a pair is a detour
    candidate when ``log(inflation) - m > max(robust_z × s, log(min_ratio))``.
    The median and MAD are taken over pairs whose floor is not clamped when
    there are at least three of them: a clamped pair's inflation is understated
    by construction and would drag the typical value down.  Clamped pairs are
    still tested (a same-city pair hauled abroad is the worst detour of all).
    A pair with no location or no RTT has NaN inflation and is no candidate.
    """
    m = measurements[measurements["kind"].astype("string").isin(_MEASURED_KINDS)]
    m = m[["region", "target", "rtt_min_ms"]].copy()
    m["region"] = m["region"].astype("string")
    m["target"] = m["target"].astype("string")
    g = m.groupby(["region", "target"], sort=True)["rtt_min_ms"]
    out = pd.DataFrame({"n": g.count().astype("int64"), "rtt_min_ms": g.min()}).reset_index()
    place = locations.assign(name=locations["name"].astype("string")).set_index("name")
    lat1 = out["region"].map(place["lat"]).astype("float64")
    lon1 = out["region"].map(place["lon"]).astype("float64")
    lat2 = out["target"].map(place["lat"]).astype("float64")
    lon2 = out["target"].map(place["lon"]).astype("float64")
    out.insert(3, "distance_km", great_circle_km(lat1, lon1, lat2, lon2))
    out.insert(4, "floor_ms", rtt_floor_ms(out["distance_km"]))
    denominator = np.maximum(out["floor_ms"].to_numpy(), min_floor_ms)
    out = out[["region", "target", "n", "distance_km", "floor_ms", "rtt_min_ms"]]
    out["inflation"] = out["rtt_min_ms"].to_numpy() / denominator
    logs = np.log(out["inflation"].where(out["inflation"] > 0))
    unclamped = logs[(out["floor_ms"] >= min_floor_ms) & logs.notna()]
    base = unclamped if len(unclamped) >= 3 else logs.dropna()
    if len(base):
        median = float(base.median())
        sigma = _MAD_TO_SIGMA * float((base - median).abs().median())
        excess = logs - median
        limit = max(robust_z * sigma, math.log(min_ratio))
        out["typical_inflation"] = math.exp(median)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["robust_z"] = excess / sigma if sigma > 0 else np.where(
                excess > 0, np.inf, np.where(excess < 0, -np.inf, 0.0))
        out["detour_candidate"] = (excess > limit).fillna(False).astype(bool)
    else:
        out["typical_inflation"] = math.nan
        out["robust_z"] = math.nan
        out["detour_candidate"] = False
    out["robust_z"] = out["robust_z"].astype("float64").where(logs.notna())
    return out.reset_index(drop=True)
