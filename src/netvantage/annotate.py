"""Hop annotation: AS number, organisation, country, city and coordinates for each responder.

Annotation is a separate step, never part of probing: a probe host needs no
database, and an old trace can be annotated again with a newer database.  The
databases are files in the MaxMind DB format, read with the ``geoip2`` package:

* an **ASN** database: GeoLite2-ASN (MaxMind), DB-IP's "IP to ASN Lite", GeoIP2-ISP,
  or the lab's own (:func:`netvantage.lab.geodb.write_lab_databases`);
* a **City** database: GeoLite2-City or GeoIP2-City (MaxMind), DB-IP's
  "IP to City Lite", GeoIP2-Enterprise, or the lab's own.

Either may be left out.  Data from them must be credited where it is shown:
GeoLite2 — "This product includes GeoLite2 data created by MaxMind, available
from https://www.maxmind.com"; DB-IP Lite — "IP Geolocation by DB-IP"
(https://db-ip.com, CC BY 4.0).

Reverse DNS is off by default (it sends queries to the resolver, one per
address); with ``rdns=True`` every name is looked up with a timeout in a small
pool of daemon threads, so a resolver that never answers costs at most the
timeout per batch of lookups and never blocks the program, not even at exit.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import geoip2.database
import geoip2.errors
import maxminddb
import msgspec

from .errors import NetvantageError
from .results import Annotation, AnyRecord, Hop, TraceRecord

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_RDNS_TIMEOUT_S",
    "GeoDatabaseError",
    "GeoDatabases",
    "annotate_records",
    "reverse_dns",
]

DEFAULT_CACHE_SIZE = 65_536
DEFAULT_RDNS_TIMEOUT_S = 2.0
DEFAULT_RDNS_WORKERS = 16

_Kind = Literal["asn", "city"]


# Which geoip2 reader method reads a database, chosen by what its ``database_type`` contains:
# the same test geoip2 applies before it reads (which is why DB-IP's ASN Lite calls itself
# "DBIP-ASN-Lite (compat=GeoLite2-ASN)", and the lab's "netvantage-lab-ASN (compat=...)").
_METHODS: dict[_Kind, tuple[tuple[str, str], ...]] = {
    "asn": (("GeoLite2-ASN", "asn"), ("GeoIP2-ISP", "isp")),
    "city": (("City", "city"), ("Enterprise", "enterprise")),
}
_LABEL: dict[_Kind, str] = {"asn": "ASN", "city": "City"}


class GeoDatabaseError(NetvantageError):
    """A database file is missing, unreadable, corrupt or of the wrong kind; names the file."""


# --------------------------------------------------------------------------- one database


class _Database:
    """One open MaxMind DB file, checked to be of the kind asked for."""

    def __init__(self, path: Path | str, kind: _Kind) -> None:
        self.path = Path(path)
        self.kind = kind
        name = str(self.path)
        if not self.path.exists():
            raise GeoDatabaseError(f"{name}: no such {_LABEL[kind]} database file")
        if not self.path.is_file():
            raise GeoDatabaseError(f"{name}: not a file")
        try:
            self.reader = geoip2.database.Reader(os.fspath(self.path), locales=["en"])
        except (maxminddb.InvalidDatabaseError, ValueError) as exc:
            raise GeoDatabaseError(f"{name}: not a valid MaxMind DB file ({exc})") from None
        except OSError as exc:
            raise GeoDatabaseError(f"{name}: cannot read: {exc.strerror or exc}") from None
        meta = self.reader.metadata()
        self.database_type = str(meta.database_type)
        method = next((m for marker, m in _METHODS[kind] if marker in self.database_type),
                      None)
        if method is None:
            self.reader.close()
            wanted = " or ".join(marker for marker, _ in _METHODS[kind])
            article = "an" if kind == "asn" else "a"
            raise GeoDatabaseError(
                f"{name}: is a {self.database_type!r} database, not {article} {_LABEL[kind]} "
                f"one (geoip2 reads one whose type contains {wanted})")
        self.method = method
        built = datetime.fromtimestamp(int(meta.build_epoch), UTC)
        self.built = built.date().isoformat()
        #: How the database is named in :attr:`Annotation.source`.
        self.label = f"{self.path.name} (built {self.built})"

    def _get(self, address: str) -> object | None:
        """The geoip2 model for ``address``, ``None`` if the database does not hold it."""
        try:
            model: object = getattr(self.reader, self.method)(address)
        except geoip2.errors.AddressNotFoundError:
            return None
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"{self.path}: corrupt database: {exc}") from None
        except ValueError:
            # An IPv6 address asked of an IPv4-only database: it cannot be there.
            return None
        return model

    def fill(self, address: str, fields: dict[str, Any]) -> None:
        model = self._get(address)
        if model is None:
            return
        if self.kind == "asn":
            fields["asn"] = getattr(model, "autonomous_system_number", None)
            fields["as_org"] = getattr(model, "autonomous_system_organization", None)
            return
        city = getattr(model, "city", None)
        country = getattr(model, "country", None)
        location = getattr(model, "location", None)
        fields["city"] = getattr(city, "name", None)
        fields["country"] = getattr(country, "iso_code", None)
        lat = getattr(location, "latitude", None)
        lon = getattr(location, "longitude", None)
        if lat is not None and lon is not None:
            fields["lat"], fields["lon"] = float(lat), float(lon)

    def close(self) -> None:
        self.reader.close()


# --------------------------------------------------------------------------- reverse DNS


def _ptr(address: str, out: queue.SimpleQueue[tuple[str, str | None]]) -> None:
    try:
        name: str | None = socket.gethostbyaddr(address)[0]
    except (OSError, UnicodeError, ValueError):
        name = None
    out.put((address, name))


def reverse_dns(addresses: Iterable[str], *, timeout_s: float = DEFAULT_RDNS_TIMEOUT_S,
                workers: int = DEFAULT_RDNS_WORKERS) -> dict[str, str | None]:
    """PTR names of ``addresses`` (``None`` where there is none or it took too long).

    At most ``workers`` lookups run at once, each in a daemon thread, each given
    ``timeout_s`` from its start.  A lookup that overruns is abandoned (the C
    resolver cannot be interrupted; its thread ends when the resolver gives up
    and never holds up the program's exit) and its slot goes to the next
    address, so the whole call returns within about
    ``ceil(len(addresses) / workers) * timeout_s``.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    pending = deque(dict.fromkeys(addresses))
    results: dict[str, str | None] = {}
    deadlines: dict[str, float] = {}
    done: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
    while pending or deadlines:
        while pending and len(deadlines) < workers:
            address = pending.popleft()
            deadlines[address] = time.monotonic() + timeout_s
            threading.Thread(target=_ptr, args=(address, done), daemon=True,
                             name=f"netvantage-rdns-{address}").start()
        wait = max(0.0, min(deadlines.values()) - time.monotonic())
        try:
            address, name = done.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            for late in [a for a, d in deadlines.items() if d <= now]:
                del deadlines[late]
                results[late] = None
            continue
        if address in deadlines:  # not already given up on
            del deadlines[address]
            results[address] = name
    return results


# --------------------------------------------------------------------------- the pair


class GeoDatabases:
    """An ASN database and a City database (either optional), with a cache of lookups.

    ::

        with GeoDatabases(asn_db="GeoLite2-ASN.mmdb", city_db="GeoLite2-City.mmdb") as dbs:
            dbs.lookup("192.0.2.1")     # Annotation(asn=..., city=..., source=...)

    :meth:`lookup` never raises for an address: one that no database holds (a
    private address, say) gets an :class:`Annotation` whose data fields are
    ``None``; a string that is no IP address gets ``None``.  Only a database
    found corrupt while reading raises :class:`GeoDatabaseError`.  Safe to
    share between threads.
    """

    def __init__(self, asn_db: Path | str | None = None, city_db: Path | str | None = None, *,
                 cache_size: int = DEFAULT_CACHE_SIZE,
                 rdns_timeout_s: float = DEFAULT_RDNS_TIMEOUT_S,
                 rdns_workers: int = DEFAULT_RDNS_WORKERS) -> None:
        self._dbs: list[_Database] = []
        try:
            if asn_db is not None:
                self._dbs.append(_Database(asn_db, "asn"))
            if city_db is not None:
                self._dbs.append(_Database(city_db, "city"))
        except GeoDatabaseError:
            self.close()
            raise
        self.cache_size = cache_size
        self.rdns_timeout_s = rdns_timeout_s
        self.rdns_workers = rdns_workers
        self._geo_cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._rdns_cache: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    # -- description -------------------------------------------------------

    @property
    def source(self) -> str | None:
        """File names, types and build dates of the open databases (:attr:`Annotation.source`)."""
        return self._source(rdns=False)

    @property
    def asn_db(self) -> Path | None:
        return next((db.path for db in self._dbs if db.kind == "asn"), None)

    @property
    def city_db(self) -> Path | None:
        return next((db.path for db in self._dbs if db.kind == "city"), None)

    # -- lookups -----------------------------------------------------------

    def lookup(self, address: str, *, rdns: bool = False) -> Annotation | None:
        """What the databases (and, with ``rdns``, the resolver) say about one address."""
        return self.lookup_many([address], rdns=rdns).get(address)

    def lookup_many(self, addresses: Iterable[str], *,
                    rdns: bool = False) -> dict[str, Annotation | None]:
        """:meth:`lookup` for many addresses; reverse DNS runs for all of them at once."""
        wanted = list(dict.fromkeys(addresses))
        keys = {a: _normalise(a) for a in wanted}
        geo = {a: self._geo(key) for a, key in keys.items() if key is not None}
        names: dict[str, str | None] = {}
        if rdns:
            names = self._names([k for k in keys.values() if k is not None])
        source = self._source(rdns)
        out: dict[str, Annotation | None] = {}
        for address, key in keys.items():
            if key is None:
                out[address] = None
                continue
            out[address] = Annotation(**geo[address], rdns=names.get(key), source=source)
        return out

    def _source(self, rdns: bool) -> str | None:
        parts = [db.label for db in self._dbs]
        if rdns:
            parts.append("reverse DNS")
        return "; ".join(parts) or None

    def _geo(self, key: str) -> dict[str, Any]:
        with self._lock:
            hit = self._geo_cache.get(key)
            if hit is not None:
                self._geo_cache.move_to_end(key)
                return hit
        fields: dict[str, Any] = {}
        for db in self._dbs:
            db.fill(key, fields)
        with self._lock:
            self._geo_cache[key] = fields
            while len(self._geo_cache) > self.cache_size:
                self._geo_cache.popitem(last=False)
        return fields

    def _names(self, keys: Sequence[str]) -> dict[str, str | None]:
        names: dict[str, str | None] = {}
        missing: list[str] = []
        with self._lock:
            for key in keys:
                if key in self._rdns_cache:
                    self._rdns_cache.move_to_end(key)
                    names[key] = self._rdns_cache[key]
                else:
                    missing.append(key)
        if missing:
            found = reverse_dns(missing, timeout_s=self.rdns_timeout_s,
                                workers=self.rdns_workers)
            names.update(found)
            with self._lock:
                self._rdns_cache.update(found)
                while len(self._rdns_cache) > self.cache_size:
                    self._rdns_cache.popitem(last=False)
        return names

    def cache_info(self) -> tuple[int, int]:
        """Entries in the database cache and in the reverse-DNS cache."""
        with self._lock:
            return len(self._geo_cache), len(self._rdns_cache)

    # -- lifetime ----------------------------------------------------------

    def close(self) -> None:
        for db in self._dbs:
            db.close()

    def __enter__(self) -> GeoDatabases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _normalise(address: str) -> str | None:
    """The canonical text of an address (IPv4-mapped IPv6 as IPv4), ``None`` if it is none."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.scope_id is not None:
            return str(ipaddress.IPv6Address(ip.packed))
    return str(ip)


# --------------------------------------------------------------------------- records


def annotate_records(records: Iterable[AnyRecord], dbs: GeoDatabases, *,
                     rdns: bool = False) -> list[AnyRecord]:
    """New records in which every trace responder carries what ``dbs`` say about it.

    An annotation already present is replaced whole (a newer database, or
    ``rdns`` now asked for, or no longer).  Records of other kinds are returned
    as they are.  Every address is looked up once, and reverse DNS for all of
    them runs at once.
    """
    records = list(records)
    addresses = [r.address for rec in records if isinstance(rec, TraceRecord)
                 for hop in rec.body.hops for r in hop.responders]
    found = dbs.lookup_many(addresses, rdns=rdns)
    return [_annotate(rec, found) if isinstance(rec, TraceRecord) else rec for rec in records]


def _annotate(record: TraceRecord, found: dict[str, Annotation | None]) -> TraceRecord:
    hops = [_annotate_hop(hop, found) for hop in record.body.hops]
    body = msgspec.structs.replace(record.body, hops=hops)
    return msgspec.structs.replace(record, body=body)


def _annotate_hop(hop: Hop, found: dict[str, Annotation | None]) -> Hop:
    responders = [msgspec.structs.replace(r, annotation=found.get(r.address))
                  for r in hop.responders]
    return msgspec.structs.replace(hop, responders=responders)
