"""The topology file: validation, addressing and routing (no root needed)."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from netvantage.lab.topology import TopologyError, load_topology, parse_topology


@pytest.fixture(scope="module")
def topo():
    return load_topology()


def test_default_topology_tells_the_story(topo):
    clients = {n.name for n in topo.of_role("client")}
    dcs = {n.name for n in topo.of_role("dc")}
    assert {"lun", "jnb", "lon", "yyz"} <= clients
    assert {"dc-ams", "dc-jnb", "dc-yyz"} <= dcs
    lossy = {(link.a, link.b) for link in topo.links if link.loss > 0}
    for region in clients:
        for dc in dcs:
            path = topo.path(region, dc)
            on_lossy = any((a, b) in lossy or (b, a) in lossy
                           for a, b in itertools.pairwise(path))
            african = topo.nodes[region].country in ("ZM", "ZA")
            # Only southern Africa -> Amsterdam crosses the congested detour.
            assert on_lossy == (african and dc == "dc-ams"), (region, dc, path)
            assert len(path) >= 3
            assert topo.path(dc, region) == path[::-1], "paths must be symmetric"


def test_several_routers_on_long_paths(topo):
    routers = [n for n in topo.path("lun", "dc-ams") if topo.nodes[n].role == "router"]
    assert routers == ["r-lun", "r-jnb", "r-cpt", "r-los", "r-lis", "r-ams"]


def test_rtt_and_delivery(topo):
    assert topo.rtt_ms("lon", "dc-ams") == pytest.approx(2 * (1 + 3 + 0.5))
    assert topo.delivery_ratio("lon", "dc-ams") == 1.0
    assert topo.delivery_ratio("lun", "dc-ams") == pytest.approx(0.97 ** 2)


def test_addresses_unique_and_inside_the_lab_prefixes(topo):
    addrs = [n.v4 for n in topo.nodes.values()] + [n.v6 for n in topo.nodes.values()]
    for link in topo.links:
        addrs += [link.a_v4, link.b_v4, link.a_v6, link.b_v6]
    assert len(addrs) == len(set(addrs))
    for a in addrs:
        ip = ipaddress.ip_address(a)
        assert ip in (topo.ipv4 if ip.version == 4 else topo.ipv6)
    assert all(len(link.dev(link.a)) <= 15 and len(link.dev(link.b)) <= 15
               for link in topo.links)


def test_every_problem_is_reported_at_once():
    raw = {
        "lab": {"ipv4": "10.10.0.0/24"},
        "nodes": {"a": {"role": "client", "lat": 100}, "Bad_Name": {"role": "dc"},
                  "c": {"role": "moon", "colour": "red"}},
        "links": [{"a": "a", "b": "zz", "delay_ms": -1},
                  {"a": "a", "b": "c", "loss": 2, "jitter_ms": 5}],
        "extra": 1,
    }
    with pytest.raises(TopologyError) as info:
        parse_topology(raw, "t.toml")
    text = str(info.value)
    for expected in ["lab.ipv4: must be a /16", "nodes.a.lat: outside -90..90",
                     "nodes.Bad_Name: name must match", "nodes.c.role: must be client",
                     "nodes.c.colour: unknown key", "links[0].b: unknown node 'zz'",
                     "links[0].delay_ms: must be a number", "links[1].loss: must be",
                     "links[1].jitter_ms: larger than delay_ms", "extra: unknown top-level"]:
        assert expected in text
    assert len(info.value.problems) >= 10


def test_disconnected_nodes_are_refused():
    raw = {"nodes": {"a": {"role": "client"}, "b": {"role": "dc"}}, "links": []}
    with pytest.raises(TopologyError, match="not connected"):
        parse_topology(raw)


def test_broken_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[nodes.a\nrole=1")
    with pytest.raises(TopologyError, match=r"(?s)bad.toml.*not valid TOML.*line 1"):
        load_topology(bad)


def test_mtu_fields_default_to_nothing_and_are_checked():
    nodes = {"x": {"role": "client"}, "r": {"role": "router"}, "s": {"role": "router"},
             "y": {"role": "dc"}, "z": {"role": "dc"}}
    links = [{"a": "x", "b": "r"}, {"a": "r", "b": "s"}, {"a": "s", "b": "y"},
             {"a": "s", "b": "z"}]
    plain = parse_topology({"nodes": nodes, "links": links})
    assert all(link.mtu is None and link.mtu_for is None and not link.drop_ptb
               for link in plain.links)
    assert plain.path_mtu("x", "y") == 1500
    tunnel = parse_topology({"nodes": nodes, "links": [
        *links[:1], {**links[1], "mtu": 1280, "mtu_for": ["x", "y"], "drop_ptb": True},
        *links[2:]]})
    # The tunnel's MTU holds for its pair, both ways, and for no other.
    assert tunnel.path_mtu("x", "y") == tunnel.path_mtu("y", "x") == 1280
    assert tunnel.path_mtu("x", "z") == 1500
    assert tunnel.without_mtu_faults().path_mtu("x", "y") == 1500
    whole = parse_topology({"nodes": nodes, "links": [*links[:3], {**links[3], "mtu": 1400}]})
    assert whole.path_mtu("x", "z") == whole.path_mtu("z", "x") == 1400
    bad = [*links[:1], {**links[1], "mtu": 500, "drop_ptb": "yes"},
           {**links[2], "mtu_for": ["x", "nowhere"]}, {**links[3], "mtu_for": ["x", "z"]}]
    with pytest.raises(TopologyError) as info:
        parse_topology({"nodes": nodes, "links": bad})
    text = str(info.value)
    for expected in ["links[1].mtu: must be an integer in 1280..9000",
                     "links[1].drop_ptb: must be true or false",
                     "links[2].mtu_for: must name two different nodes",
                     "links[3].mtu_for: needs an mtu"]:
        assert expected in text
    with pytest.raises(TopologyError, match=r"links\[2\].mtu_for: the path from x to z"):
        parse_topology({"nodes": nodes, "links": [
            *links[:2], {**links[2], "mtu": 1400, "mtu_for": ["x", "z"]}, links[3]]})


def test_the_default_lab_plants_one_black_hole(topo):
    holes = [(c.name, d.name) for c in topo.of_role("client") for d in topo.of_role("dc")
             if topo.path_mtu(c.name, d.name) < 1500]
    assert holes == [("yyz", "dc-jnb")]
    assert [link.drop_ptb for link in topo.links].count(True) == 1
