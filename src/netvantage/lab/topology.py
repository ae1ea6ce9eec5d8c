"""The lab's topology: nodes, links, addresses and routes, from a TOML file.

Addressing plan (inside the lab's own prefixes, e.g. 10.10.0.0/16 and fd00:10::/32):

* every node has one *node address* on its loopback, ``10.10.255.N/32`` and
  ``fd00:10:ff::N/128`` (N = 1-based position in the file).  Measurements target
  node addresses, and every route carries the node address as its preferred
  source, so a router answers a traceroute from its node address: one address
  per router, which makes hop lists and annotation unambiguous.
* link *i* (0-based) is a point-to-point subnet ``10.10.i.0/24`` and
  ``fd00:10:0:i::/64``; side ``a`` is ``.1``/``::1``, side ``b`` ``.2``/``::2``.

Routing: shortest paths by link ``cost`` (default: the delay), computed once,
ties broken by node name so that the result is deterministic; with symmetric
costs the path back is the reverse of the path there.  A node with ``ecmp = true``
routes instead over *every* equally short next hop (a Linux multipath route hashing
addresses and ports): an ECMP diamond for multipath tracing.

MTU: a link may set ``mtu`` (bytes; by default its interfaces keep Linux's 1500).
With ``mtu_for = [X, Y]`` the smaller MTU holds only for packets between nodes X
and Y, as over a tunnel (GRE, IPsec) the link carries for them: the routers at the
link's ends get a policy rule and a route with ``mtu lock`` for that pair, the
interfaces keep theirs, and no other pair sees it.  ``drop_ptb = true`` makes the
link's two routers drop the ICMP "fragmentation needed" (RFC 1191) and ICMPv6
"packet too big" (RFC 8201) they would send: a path MTU black hole.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from ..errors import NetvantageError

__all__ = ["DEFAULT_TOPOLOGY", "Link", "Node", "Topology", "TopologyError", "load_topology"]

def _default_topology() -> Path:
    """The bundled topology: inside the wheel, or in the source tree for a checkout."""
    packaged = Path(__file__).resolve().parent / "topologies" / "default.toml"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[3] / "data" / "lab" / "default.toml"


DEFAULT_TOPOLOGY = _default_topology()

Role = Literal["client", "router", "dc"]
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,10}$")
_MAX_LINKS = 250  # one /24 per link inside a /16, leaving 255 for node addresses


class TopologyError(NetvantageError):
    """A topology file is wrong; ``problems`` lists every problem with its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" +
                         "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    role: Role
    index: int
    v4: str
    v6: str
    city: str | None = None
    country: str | None = None
    iata: str | None = None
    lat: float | None = None
    lon: float | None = None
    asn: int | None = None
    org: str | None = None
    #: A data centre's planted mail-readiness problem (see :mod:`netvantage.lab.dns`):
    #: ``listed`` (its address on a blocklist), ``ptr`` (generic PTR, not
    #: forward-confirmed), ``dkim`` (its DKIM key never published); ``None``: clean.
    mail_plant: str | None = None
    # Equal-cost multipath: where several next hops are equally short, route over all of
    # them with a flow hash on the ports (Linux fib_multipath_hash_policy=1, IPv4 and
    # IPv6) instead of the one the name tie-break picks.  False changes nothing.
    ecmp: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    a: str
    b: str
    index: int
    delay_ms: float
    jitter_ms: float
    loss: float
    cost: float
    a_v4: str
    b_v4: str
    a_v6: str
    b_v6: str
    mtu: int | None = None
    mtu_for: tuple[str, str] | None = None
    drop_ptb: bool = False

    def mtu_between(self, src: str, dst: str) -> int | None:
        """This link's MTU for packets from ``src`` to ``dst`` (None: the interfaces' own)."""
        if self.mtu is None:
            return None
        if self.mtu_for is not None and {src, dst} != set(self.mtu_for):
            return None
        return self.mtu

    def dev(self, node: str) -> str:
        """The interface name of this link inside ``node`` (named after the peer)."""
        return f"to-{self.peer(node)}"

    def peer(self, node: str) -> str:
        if node == self.a:
            return self.b
        if node == self.b:
            return self.a
        raise KeyError(f"{node} is not on link {self.a}-{self.b}")

    def addresses(self, node: str) -> tuple[str, str]:
        return (self.a_v4, self.a_v6) if node == self.a else (self.b_v4, self.b_v6)

    @property
    def delayed(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0


@dataclass(frozen=True)
class Topology:
    name: str
    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network
    nodes: dict[str, Node]
    links: list[Link]
    source: str = "<memory>"
    _by_pair: dict[frozenset[str], Link] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for link in self.links:
            self._by_pair[frozenset((link.a, link.b))] = link

    # -- queries -----------------------------------------------------------

    def node_lines(self) -> list[str]:
        """One line per node (clients, routers, data centres): role, name, addresses, place."""
        lines = []
        roles: tuple[Role, ...] = ("client", "router", "dc")
        for role in roles:
            for node in self.of_role(role):
                where = ", ".join(x for x in (node.city, node.country) if x)
                lines.append(f"{role:<6}  {node.name:<8} {node.v4:<14} {node.v6:<16} "
                             f"{where}".rstrip())
        return lines

    def of_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == role]

    def link(self, a: str, b: str) -> Link:
        try:
            return self._by_pair[frozenset((a, b))]
        except KeyError:
            raise KeyError(f"no link between {a} and {b}") from None

    def links_of(self, node: str) -> list[Link]:
        return [link for link in self.links if node in (link.a, link.b)]

    def node_by_address(self, address: str) -> Node | None:
        for node in self.nodes.values():
            if address in (node.v4, node.v6):
                return node
        return None

    @cached_property
    def _trees(self) -> dict[str, dict[str, str]]:
        """For every source, each node's predecessor on the shortest path from it."""
        adj: dict[str, list[tuple[float, str]]] = {n: [] for n in self.nodes}
        for link in self.links:
            adj[link.a].append((link.cost, link.b))
            adj[link.b].append((link.cost, link.a))
        trees: dict[str, dict[str, str]] = {}
        for src in self.nodes:
            dist = {src: 0.0}
            prev: dict[str, str] = {}
            heap: list[tuple[float, tuple[str, ...], str]] = [(0.0, (src,), src)]
            done: set[str] = set()
            while heap:
                d, route, node = heapq.heappop(heap)
                if node in done:
                    continue
                done.add(node)
                for cost, nxt in sorted(adj[node], key=lambda c: c[1]):
                    nd = d + cost
                    # The route tuple breaks ties by node names: deterministic.
                    if nxt not in done and (nd < dist.get(nxt, math.inf) - 1e-9):
                        dist[nxt] = nd
                        prev[nxt] = node
                        heapq.heappush(heap, (nd, (*route, nxt), nxt))
            trees[src] = prev
        return trees

    def path(self, src: str, dst: str) -> list[str]:
        """Nodes from ``src`` to ``dst`` inclusive, as packets travel them."""
        prev = self._trees[src]
        if dst != src and dst not in prev:
            raise KeyError(f"{dst} is unreachable from {src}")
        hops = [dst]
        while hops[-1] != src:
            hops.append(prev[hops[-1]])
        return hops[::-1]

    def next_hop(self, src: str, dst: str) -> str:
        return self.path(src, dst)[1]

    @cached_property
    def _distances(self) -> dict[str, dict[str, float]]:
        """Shortest-path cost from every node to every node."""
        adj: dict[str, list[tuple[float, str]]] = {n: [] for n in self.nodes}
        for link in self.links:
            adj[link.a].append((link.cost, link.b))
            adj[link.b].append((link.cost, link.a))
        out: dict[str, dict[str, float]] = {}
        for src in self.nodes:
            dist = {src: 0.0}
            heap = [(0.0, src)]
            while heap:
                d, node = heapq.heappop(heap)
                if d > dist.get(node, math.inf):
                    continue
                for cost, nxt in adj[node]:
                    if d + cost < dist.get(nxt, math.inf) - 1e-9:
                        dist[nxt] = d + cost
                        heapq.heappush(heap, (d + cost, nxt))
            out[src] = dist
        return out

    def next_hops(self, src: str, dst: str) -> list[str]:
        """The next hops ``src`` routes ``dst`` over: all the equally short ones where
        ``src`` has ``ecmp`` set (sorted by name), else the one of :meth:`path`."""
        first = self.next_hop(src, dst)
        if not self.nodes[src].ecmp:
            return [first]
        dist = self._distances
        best = dist[src][dst]
        hops = {lk.peer(src) for lk in self.links_of(src)
                if abs(lk.cost + dist[lk.peer(src)].get(dst, math.inf) - best) < 1e-9}
        return sorted(hops | {first})

    def one_way_ms(self, src: str, dst: str) -> float:
        hops = self.path(src, dst)
        return sum(self.link(x, y).delay_ms for x, y in pairwise(hops))

    def rtt_ms(self, src: str, dst: str) -> float:
        """Configured round trip: the delays there and (by its own path) back."""
        return self.one_way_ms(src, dst) + self.one_way_ms(dst, src)

    def path_mtu(self, src: str, dst: str, interface_mtu: int = 1500) -> int:
        """The configured path MTU from ``src`` to ``dst``: the smallest MTU on its links."""
        hops = self.path(src, dst)
        mtus = [self.link(x, y).mtu_between(src, dst) for x, y in pairwise(hops)]
        return min([interface_mtu, *(m for m in mtus if m is not None)])

    def without_mtu_faults(self) -> Topology:
        """The same network with every link's ``mtu``, ``mtu_for`` and ``drop_ptb`` removed."""
        links = [replace(link, mtu=None, mtu_for=None, drop_ptb=False) for link in self.links]
        return Topology(name=self.name, ipv4=self.ipv4, ipv6=self.ipv6, nodes=self.nodes,
                        links=links, source=self.source)

    def delivery_ratio(self, src: str, dst: str) -> float:
        """Probability that a packet and its answer both survive every lossy link."""
        ratio = 1.0
        for a, b in ((src, dst), (dst, src)):
            hops = self.path(a, b)
            for x, y in pairwise(hops):
                ratio *= 1 - self.link(x, y).loss
        return ratio


# --------------------------------------------------------------------------- loading

_NODE_KEYS = {"role", "city", "country", "iata", "lat", "lon", "asn", "org", "ecmp",
              "mail_plant"}
MAIL_PLANTS = ("listed", "ptr", "dkim")
_LINK_KEYS = {"a", "b", "delay_ms", "jitter_ms", "loss", "cost", "mtu", "mtu_for", "drop_ptb"}
_MIN_MTU, _MAX_MTU = 1280, 9000  # IPv6's minimum link MTU (RFC 8200) .. jumbo frames


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_topology(path: Path | str | None = None) -> Topology:
    """Read and check a topology file; every problem is reported at once."""
    path = Path(path) if path is not None else DEFAULT_TOPOLOGY
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TopologyError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_topology(raw, str(path))


def parse_topology(raw: dict[str, Any], source: str = "<memory>") -> Topology:
    problems: list[str] = []
    lab = raw.get("lab", {})
    if not isinstance(lab, dict):
        lab = {}
        problems.append("[lab] must be a table")
    for key in set(raw) - {"lab", "nodes", "links"}:
        problems.append(f"{key}: unknown top-level key")
    name = str(lab.get("name", Path(source).stem))
    try:
        v4net = ipaddress.IPv4Network(lab.get("ipv4", "10.10.0.0/16"))
        if v4net.prefixlen > 16:
            problems.append("lab.ipv4: must be a /16 or larger")
    except ValueError as exc:
        problems.append(f"lab.ipv4: {exc}")
        v4net = ipaddress.IPv4Network("10.10.0.0/16")
    try:
        v6net = ipaddress.IPv6Network(lab.get("ipv6", "fd00:10::/32"))
        if v6net.prefixlen > 32:
            problems.append("lab.ipv6: must be a /32 or larger")
    except ValueError as exc:
        problems.append(f"lab.ipv6: {exc}")
        v6net = ipaddress.IPv6Network("fd00:10::/32")

    nodes: dict[str, Node] = {}
    raw_nodes = raw.get("nodes", {})
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        problems.append("nodes: at least one [nodes.NAME] table is needed")
        raw_nodes = {}
    for index, (node_name, spec) in enumerate(raw_nodes.items()):
        where = f"nodes.{node_name}"
        if not _NAME.match(node_name):
            problems.append(f"{where}: name must match {_NAME.pattern} (it names a namespace "
                            "and, prefixed with 'to-', an interface)")
        if not isinstance(spec, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in set(spec) - _NODE_KEYS:
            problems.append(f"{where}.{key}: unknown key")
        role: Role = "router"
        if spec.get("role") in ("client", "router", "dc"):
            role = spec["role"]
        else:
            problems.append(f"{where}.role: must be client, router or dc, "
                            f"not {spec.get('role')!r}")
        for key in ("lat", "lon"):
            if key in spec and not _number(spec[key]):
                problems.append(f"{where}.{key}: must be a number")
        if "lat" in spec and _number(spec["lat"]) and not -90 <= spec["lat"] <= 90:
            problems.append(f"{where}.lat: outside -90..90")
        if "lon" in spec and _number(spec["lon"]) and not -180 <= spec["lon"] <= 180:
            problems.append(f"{where}.lon: outside -180..180")
        if "asn" in spec and not (isinstance(spec["asn"], int) and 0 < spec["asn"] < 2**32):
            problems.append(f"{where}.asn: must be an AS number")
        if "mail_plant" in spec and (spec["mail_plant"] not in MAIL_PLANTS
                                     or role != "dc"):
            problems.append(f"{where}.mail_plant: one of {', '.join(MAIL_PLANTS)}, on a "
                            "data centre only")
        if "ecmp" in spec and not isinstance(spec["ecmp"], bool):
            problems.append(f"{where}.ecmp: must be true or false")
        nodes[node_name] = Node(
            name=node_name, role=role, index=index,
            v4=str(v4net.network_address + (255 << 8) + index + 1),
            v6=str(v6net.network_address + (0xFF << 80) + index + 1),
            city=spec.get("city"), country=spec.get("country"), iata=spec.get("iata"),
            lat=spec.get("lat"), lon=spec.get("lon"), asn=spec.get("asn"), org=spec.get("org"),
            mail_plant=spec.get("mail_plant"),
            ecmp=spec.get("ecmp") is True,
        )
    if len(nodes) > 250:
        problems.append("nodes: at most 250")

    links: list[Link] = []
    seen: set[frozenset[str]] = set()
    raw_links = raw.get("links", [])
    if not isinstance(raw_links, list):
        problems.append("links: must be an array of tables ([[links]])")
        raw_links = []
    if len(raw_links) > _MAX_LINKS:
        problems.append(f"links: at most {_MAX_LINKS}")
    for index, spec in enumerate(raw_links):
        where = f"links[{index}]"
        if not isinstance(spec, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in set(spec) - _LINK_KEYS:
            problems.append(f"{where}.{key}: unknown key")
        a, b = spec.get("a"), spec.get("b")
        for side, value in (("a", a), ("b", b)):
            if value not in nodes:
                problems.append(f"{where}.{side}: unknown node {value!r}")
        if a == b:
            problems.append(f"{where}: a link needs two different nodes")
        pair = frozenset((str(a), str(b)))
        if pair in seen:
            problems.append(f"{where}: a second link between {a} and {b}")
        seen.add(pair)
        values: dict[str, float] = {}
        for key, default, low, high in (("delay_ms", 0.0, 0.0, 10_000.0),
                                        ("jitter_ms", 0.0, 0.0, 10_000.0),
                                        ("loss", 0.0, 0.0, 1.0)):
            value = spec.get(key, default)
            if not _number(value) or not low <= value <= high:
                problems.append(f"{where}.{key}: must be a number in {low:g}..{high:g}")
                value = default
            values[key] = float(value)
        cost = spec.get("cost", values["delay_ms"] or 1.0)
        if not _number(cost) or cost <= 0:
            problems.append(f"{where}.cost: must be a positive number")
            cost = 1.0
        if values["jitter_ms"] > values["delay_ms"]:
            problems.append(f"{where}.jitter_ms: larger than delay_ms")
        mtu = spec.get("mtu")
        if mtu is not None and not (isinstance(mtu, int) and not isinstance(mtu, bool)
                                    and _MIN_MTU <= mtu <= _MAX_MTU):
            problems.append(f"{where}.mtu: must be an integer in {_MIN_MTU}..{_MAX_MTU}")
            mtu = None
        mtu_for = spec.get("mtu_for")
        if mtu_for is not None:
            if (not isinstance(mtu_for, list) or len(mtu_for) != 2
                    or any(n not in nodes for n in mtu_for) or mtu_for[0] == mtu_for[1]):
                problems.append(f"{where}.mtu_for: must name two different nodes")
                mtu_for = None
            elif mtu is None:
                problems.append(f"{where}.mtu_for: needs an mtu")
        drop_ptb = spec.get("drop_ptb", False)
        if not isinstance(drop_ptb, bool):
            problems.append(f"{where}.drop_ptb: must be true or false")
            drop_ptb = False
        sub4 = v4net.network_address + (index << 8)
        sub6 = v6net.network_address + (index << 64)
        links.append(Link(
            a=str(a), b=str(b), index=index, cost=float(cost),
            a_v4=str(sub4 + 1), b_v4=str(sub4 + 2), a_v6=str(sub6 + 1), b_v6=str(sub6 + 2),
            mtu=mtu, mtu_for=(mtu_for[0], mtu_for[1]) if mtu_for else None,
            drop_ptb=drop_ptb, **values,
        ))
    if problems:
        raise TopologyError(source, problems)
    topo = Topology(name=name, ipv4=v4net, ipv6=v6net, nodes=nodes, links=links, source=source)
    unreachable = [f"nodes.{n}: not connected to {first}"
                   for first in list(nodes)[:1] for n in nodes
                   if n != first and n not in topo._trees[first]]
    if unreachable:
        raise TopologyError(source, unreachable)
    for link in links:
        if link.mtu_for is not None:
            x, y = link.mtu_for
            if {link.a, link.b} not in [{u, v} for u, v in pairwise(topo.path(x, y))]:
                problems.append(f"links[{link.index}].mtu_for: the path from {x} to {y} "
                                f"does not cross {link.a}-{link.b}")
    if problems:
        raise TopologyError(source, problems)
    return topo
