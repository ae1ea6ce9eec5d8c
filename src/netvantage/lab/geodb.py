"""The lab's own geolocation databases, in the MaxMind DB format.

The lab's addresses are private (``10.10.0.0/16``, ``fd00:10::/32``), so no
public database knows them.  :func:`write_lab_databases` writes two small
databases from the topology so that ``netvantage annotate`` (and any MaxMind DB
reader) tells the lab's hops apart exactly as it would on the internet:

* ``netvantage-lab-ASN.mmdb``, records laid out as GeoLite2-ASN's::

      {"autonomous_system_number": 64700, "autonomous_system_organization": "Southern Transit"}

* ``netvantage-lab-City.mmdb``, records laid out as GeoIP2-City's (the parts
  the topology knows)::

      {"city": {"names": {"en": "Cape Town"}},
       "country": {"iso_code": "ZA"}, "registered_country": {"iso_code": "ZA"},
       "location": {"latitude": -33.969, "longitude": 18.5972}}

What each address is attributed to:

* a node address (``Node.v4``/32 and ``Node.v6``/128) to that node;
* a link subnet (``10.10.i.0/24`` and ``fd00:10:0:i::/64``, both ends) to the
  node on side ``b`` of the link, as a provider's point-to-point subnet belongs
  to the provider.  Links are written "customer (a) - provider (b)" in the
  topology files, so an access link's subnet belongs to its router.

Fields a node lacks are left out of its record (no ``asn``: no ASN record at all).
Both databases are IPv6 databases with IPv4 in the IPv4-compatible ``::/96``
range, as MaxMind's own are; ``geoip2``'s ``Reader.asn()`` and ``Reader.city()``
read them.  Written with the ``mmdb-writer`` package (MIT licence).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MmdbU32, MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

from ..files import replaced_whole
from .topology import Node, Topology

__all__ = ["ASN_DB_NAME", "CITY_DB_NAME", "asn_record", "city_record", "write_lab_databases"]

ASN_DB_NAME = "netvantage-lab-ASN.mmdb"
CITY_DB_NAME = "netvantage-lab-City.mmdb"


def asn_record(node: Node) -> dict[str, Any] | None:
    """The GeoLite2-ASN record of ``node``, ``None`` if the topology gives it no AS number."""
    if node.asn is None:
        return None
    record: dict[str, Any] = {"autonomous_system_number": MmdbU32(node.asn)}
    if node.org:
        record["autonomous_system_organization"] = node.org
    return record


def city_record(node: Node) -> dict[str, Any] | None:
    """The GeoIP2-City record of ``node``, ``None`` if the topology says nothing of its place."""
    record: dict[str, Any] = {}
    if node.city:
        record["city"] = {"names": {"en": node.city}}
    if node.country:
        record["country"] = {"iso_code": node.country}
        record["registered_country"] = {"iso_code": node.country}
    if node.lat is not None and node.lon is not None:
        record["location"] = {"latitude": MmdbF64(float(node.lat)),
                              "longitude": MmdbF64(float(node.lon))}
    return record or None


def _networks(topology: Topology) -> list[tuple[Node, list[str]]]:
    """Every node with the networks attributed to it (see the module's documentation)."""
    owned: dict[str, list[str]] = {name: [f"{n.v4}/32", f"{n.v6}/128"]
                                   for name, n in topology.nodes.items()}
    for link in topology.links:
        v4 = ipaddress.ip_interface(f"{link.b_v4}/24").network
        v6 = ipaddress.ip_interface(f"{link.b_v6}/64").network
        owned[link.b] += [str(v4), str(v6)]
    return [(topology.nodes[name], nets) for name, nets in owned.items()]


def _writer(kind: str, compat: str, topology: Topology) -> MMDBWriter:
    return MMDBWriter(
        ip_version=6, ipv4_compatible=True,
        # geoip2's Reader.asn() wants "GeoLite2-ASN" in the type, Reader.city() "City".
        database_type=f"netvantage-lab-{kind} (compat={compat})",
        languages=["en"],
        description={"en": f"netvantage lab {topology.name!r}: {kind} data from "
                           f"{topology.source}"},
    )


def _save(writer: MMDBWriter, path: Path) -> None:
    with replaced_whole(path) as tmp:
        writer.to_db_file(os.fspath(tmp))


def write_lab_databases(topology: Topology, directory: Path | str) -> tuple[Path, Path]:
    """Write the lab's ASN and City databases into ``directory``; returns their paths.

    The directory is created if needed; each file is replaced whole (written
    beside it, then renamed), so a reader never sees half a database.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    asn_writer = _writer("ASN", "GeoLite2-ASN", topology)
    city_writer = _writer("City", "GeoIP2-City", topology)
    for node, networks in _networks(topology):
        nets = IPSet(networks)
        asn = asn_record(node)
        if asn is not None:
            asn_writer.insert_network(nets, asn)
        city = city_record(node)
        if city is not None:
            city_writer.insert_network(nets, city)
    asn_path, city_path = directory / ASN_DB_NAME, directory / CITY_DB_NAME
    _save(asn_writer, asn_path)
    _save(city_writer, city_path)
    return asn_path, city_path
