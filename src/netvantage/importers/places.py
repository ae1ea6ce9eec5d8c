"""One model of places for every importer, the resolvers that find them, and the CSV out.

A :class:`Place` is what the analysis needs of a probe, a region or a data
centre: a name, and where it is (coordinates, country, continent).  The
resolvers turn what a source gives into a place, each saying in
:attr:`Place.source` how it was found, so nobody mistakes a country's centre
for a probe's position:

=====================  ==========================================================
resolver               where the place comes from (``source``)
=====================  ==========================================================
:func:`from_iata`      the airport of that IATA code (``"iata"``), from the
                       ``airportsdata`` package (MIT) — what ``analyse
                       --locations`` uses for an ``iata`` column too.
:func:`from_city`      a city *that has an airport*: the airports of that city
                       and country in ``airportsdata`` (``"city"``), their mean
                       position.  A city without an airport is not found
                       (``None``): give coordinates or a nearby airport's code.
:func:`from_country`   an ISO 3166 alpha-2 code (``"country"``): an approximate
                       centre, the component-wise *median* of the positions of
                       the country's airports in ``airportsdata``.  Not the
                       capital, and not a geometric centroid (no borders are
                       shipped): good to the scale of a country, and marked so.
:func:`from_coordinates` latitude and longitude as given (``"coordinates"``);
                       country and city are those of the nearest airport when
                       one lies within :data:`NEAR_AIRPORT_KM`, else unknown.
:func:`from_address`   an IP address looked up in a MaxMind-format *city*
                       database the user supplies (``"geo-db"``): GeoLite2 City
                       or GeoIP2 City (MaxMind), DB-IP City Lite (CC BY 4.0).
                       See docs/importers.md for where to get them.
=====================  ==========================================================

The continent comes from the country (GeoNames' table shipped with the
analysis, see :func:`netvantage.analysis.geo.continent_of`).

:func:`write_locations` writes the locations CSV that ``netvantage analyse
--locations`` reads (columns of :data:`netvantage.analysis.frames.LOCATION_COLUMNS`:
name, role, lat, lon, country, continent, iata).
"""

from __future__ import annotations

import csv
import ipaddress
import math
import os
import statistics
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from ..errors import NetvantageError

__all__ = [
    "EARTH_RADIUS_KM",
    "LOCATION_COLUMNS",
    "NEAR_AIRPORT_KM",
    "Place",
    "PlaceError",
    "from_address",
    "from_city",
    "from_coordinates",
    "from_country",
    "from_iata",
    "open_city_db",
    "write_locations",
]

#: :func:`from_coordinates` names the country and city of the nearest airport this close.
NEAR_AIRPORT_KM = 50.0

Role = Literal["region", "dc"]


class PlaceError(NetvantageError, ValueError):
    """A place that cannot be made (coordinates out of range, no name)."""


@dataclass(frozen=True, slots=True)
class Place:
    """A named place.  ``source`` says how it was found (see the module's table)."""

    name: str
    country: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    continent: str | None = None
    source: str | None = None
    #: ``"region"`` (clients, probes) or ``"dc"`` (a data centre) in the locations file.
    role: Role | None = None
    iata: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise PlaceError("a place needs a name")
        if (self.lat is None) != (self.lon is None):
            raise PlaceError(f"{self.name}: give both lat and lon, or neither")
        if self.lat is not None and self.lon is not None and not (
                math.isfinite(self.lat) and math.isfinite(self.lon)
                and -90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise PlaceError(f"{self.name}: lat/lon {self.lat}/{self.lon} out of range")

    @property
    def located(self) -> bool:
        """Whether the place has coordinates."""
        return self.lat is not None

    def named(self, name: str, role: Role | None = None) -> Place:
        """The same place under another name (and role)."""
        return replace(self, name=name, role=role if role is not None else self.role)


# --------------------------------------------------------------------------- data


@cache
def _airports() -> dict[str, dict[str, Any]]:
    import airportsdata  # ~8,000 rows parsed on first use

    return {code: dict(info) for code, info in airportsdata.load("IATA").items()}


def _fold(text: str) -> str:
    """Case- and accent-insensitive form of a city name ("São Paulo" = "sao paulo")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c))
                    .casefold().replace("-", " ").split())


@cache
def _by_city() -> dict[tuple[str, str], list[dict[str, Any]]]:
    table: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for info in _airports().values():
        if info.get("city") and info.get("country"):
            table.setdefault((_fold(info["city"]), info["country"]), []).append(info)
    return table


@cache
def _by_country() -> dict[str, tuple[float, float]]:
    points: dict[str, list[tuple[float, float]]] = {}
    for info in _airports().values():
        if info.get("country"):
            points.setdefault(info["country"], []).append((info["lat"], info["lon"]))
    return {cc: (statistics.median(p[0] for p in pts), statistics.median(p[1] for p in pts))
            for cc, pts in points.items()}


#: The columns of the locations CSV, as :data:`netvantage.analysis.frames.LOCATION_COLUMNS`
#: (written out here so that an import does not load the analysis: pandas, numpy;
#: ``tests/test_import_places.py`` checks that the two agree).
LOCATION_COLUMNS = ("name", "role", "lat", "lon", "country", "continent", "iata")
#: Mean Earth radius (IUGG), the one :func:`netvantage.analysis.great_circle_km` uses.
EARTH_RADIUS_KM = 6371.0088


@cache
def _continents() -> dict[str, str]:
    """Country -> continent, from the table the analysis ships (``analysis/data/
    continents.csv``, GeoNames), read as a file of the ``netvantage`` package:
    ``resources.files("netvantage.analysis")`` would import the analysis package."""
    text = (resources.files("netvantage").joinpath("analysis", "data", "continents.csv")
            .read_text("utf-8"))
    rows = (line.split(",") for line in text.splitlines() if line and not line.startswith("#"))
    if next(rows, None) != ["country", "continent"]:
        raise PlaceError("continents.csv: unexpected header (country,continent expected)")
    return {country: continent for country, continent in rows}


def _continent(country: str | None) -> str | None:
    """The continent code of ISO country ``country`` (``"NA"`` is Namibia's country
    code and North America's continent code: the table is read without guessing)."""
    if country is None:
        return None
    return _continents().get(country.upper())


def _great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km, the formula of :func:`netvantage.analysis.great_circle_km`
    for scalars (without numpy)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(h, 1.0)))


def _country(code: str | None) -> str | None:
    if code is None or not str(code).strip():
        return None
    return str(code).strip().upper()


# --------------------------------------------------------------------------- resolvers


def from_iata(code: str, *, name: str | None = None) -> Place | None:
    """The airport of IATA ``code`` (case-insensitive), ``None`` if there is none."""
    key = code.strip().upper()
    info = _airports().get(key)
    if info is None:
        return None
    return Place(name=name or key, country=info["country"], city=info.get("city") or None,
                 lat=float(info["lat"]), lon=float(info["lon"]),
                 continent=_continent(info["country"]), source="iata", iata=key)


def from_city(city: str, country: str, *, name: str | None = None) -> Place | None:
    """A city that has an airport, in ISO country ``country``; ``None`` otherwise."""
    cc = _country(country)
    if cc is None or not city.strip():
        return None
    airports = _by_city().get((_fold(city), cc))
    if not airports:
        return None
    lat = statistics.fmean(a["lat"] for a in airports)
    lon = statistics.fmean(a["lon"] for a in airports)
    return Place(name=name or f"{city.strip()}, {cc}", country=cc, city=airports[0]["city"],
                 lat=lat, lon=lon, continent=_continent(cc), source="city")


def from_country(iso2: str, *, name: str | None = None) -> Place | None:
    """An approximate centre of country ``iso2``: the median position of its airports."""
    cc = _country(iso2)
    if cc is None:
        return None
    centre = _by_country().get(cc)
    if centre is None:
        return None
    return Place(name=name or cc, country=cc, lat=centre[0], lon=centre[1],
                 continent=_continent(cc), source="country")


def _nearest_airport(lat: float, lon: float) -> tuple[dict[str, Any], float] | None:
    best: tuple[dict[str, Any], float] | None = None
    for info in _airports().values():
        if abs(info["lat"] - lat) > 1.0:  # 1 degree of latitude > 110 km: skip cheaply
            continue
        km = _great_circle_km(lat, lon, float(info["lat"]), float(info["lon"]))
        if best is None or km < best[1]:
            best = (info, km)
    return best


def from_coordinates(lat: float, lon: float, *, name: str | None = None,
                     country: str | None = None) -> Place:
    """A place at ``lat``/``lon``; raises :class:`PlaceError` when they are out of range.

    The country (unless given) and city are those of the nearest airport within
    :data:`NEAR_AIRPORT_KM`, else unknown.
    """
    lat, lon = float(lat), float(lon)
    label = name or f"{lat:.4f},{lon:.4f}"
    Place(name=label, lat=lat, lon=lon)  # range check first
    near = _nearest_airport(lat, lon)
    city = None
    cc = _country(country)
    if near is not None and near[1] <= NEAR_AIRPORT_KM:
        city = near[0].get("city") or None
        if cc is None:
            cc = near[0]["country"]
        elif cc != near[0]["country"]:
            city = None
    return Place(name=label, country=cc, city=city, lat=lat, lon=lon,
                 continent=_continent(cc), source="coordinates")


class CityReader(Protocol):
    """What :func:`from_address` needs of a database: geoip2's ``Reader.city``."""

    def city(self, ip_address: Any) -> Any: ...


def open_city_db(path: str | Path) -> Any:
    """A geoip2 reader of a MaxMind-format city database, checked to be one.

    Raises :class:`~netvantage.annotate.GeoDatabaseError` naming the file when it
    is missing, corrupt or not a city database.  Close it with ``.close()``.
    """
    from ..annotate import _Database

    return _Database(path, "city").reader


def from_address(ip: str, reader: CityReader, *, name: str | None = None) -> Place | None:
    """The place of address ``ip`` in a city database; ``None`` if it holds no coordinates."""
    import geoip2.errors
    import maxminddb

    try:
        address = str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        return None
    try:
        model = reader.city(address)
    except geoip2.errors.AddressNotFoundError:
        return None
    except ValueError:  # an IPv6 address asked of an IPv4-only database
        return None
    except maxminddb.InvalidDatabaseError as exc:
        from ..annotate import GeoDatabaseError

        raise GeoDatabaseError(f"city database: corrupt: {exc}") from None
    location = getattr(model, "location", None)
    lat = getattr(location, "latitude", None)
    lon = getattr(location, "longitude", None)
    if lat is None or lon is None:
        return None
    country = _country(getattr(getattr(model, "country", None), "iso_code", None))
    continent = getattr(getattr(model, "continent", None), "code", None) or _continent(country)
    return Place(name=name or address, country=country,
                 city=getattr(getattr(model, "city", None), "name", None),
                 lat=float(lat), lon=float(lon), continent=continent, source="geo-db")


# --------------------------------------------------------------------------- output


def write_locations(places: Iterable[Place], path: str | Path, *,
                    role: Role = "region") -> int:
    """Write the locations CSV ``analyse --locations`` reads; returns the rows written.

    Each place's own :attr:`Place.role` wins over ``role``.  Places are written
    in order; a name given twice is written once (the first).  The file is
    replaced whole (written beside it, then renamed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    seen: set[str] = set()
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(LOCATION_COLUMNS)
        for place in places:
            if place.name in seen:
                continue
            seen.add(place.name)
            row = {"name": place.name, "role": place.role or role,
                   "lat": "" if place.lat is None else round(place.lat, 6),
                   "lon": "" if place.lon is None else round(place.lon, 6),
                   "country": place.country or "", "continent": place.continent or "",
                   "iata": place.iata or ""}
            writer.writerow([row[c] for c in LOCATION_COLUMNS])
            n += 1
    os.replace(tmp, path)
    return n
