"""Multipath tracing without a network: the MDA's stopping rule, diamonds, the record's
optional ``multipath`` field, and the lab topology's ECMP option."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import msgspec
import pytest

from conftest import invoke_cli
from netvantage.lab.topology import TopologyError, load_topology, parse_topology
from netvantage.measure.trace import TraceOptions
from netvantage.measure.trace.mda import diamonds, miss_probability, stopping_points
from netvantage.results import (
    Diamond,
    Hop,
    MdaLink,
    Multipath,
    TraceBody,
    TraceProbe,
    TraceRecord,
    decode_record,
    encode_record,
    new_id,
    utc_now,
)


def _stirling2(n: int, k: int) -> int:
    """Stirling numbers of the second kind, by their recurrence (an independent route)."""
    row = [1] + [0] * k
    for _ in range(n):
        row = [0] + [j * row[j] + row[j - 1] for j in range(1, k + 1)]
    return row[k]


@pytest.mark.parametrize(("n", "k"), [(3, 2), (6, 2), (11, 3), (16, 4), (9, 5), (30, 6)])
def test_miss_probability_equals_the_exact_count_of_surjections(n, k):
    # All k successors seen after n flows: k! S(n, k) of the k^n equally likely outcomes.
    seen_all = Fraction(math.factorial(k) * _stirling2(n, k), k ** n)
    assert miss_probability(n, k) == pytest.approx(float(1 - seen_all), abs=1e-12)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_stopping_points_are_the_least_probes_that_reject_one_more_successor(confidence):
    alpha = 1 - confidence
    table = stopping_points(confidence, 12)
    for k, n in enumerate(table, start=1):
        assert miss_probability(n, k + 1) <= alpha < miss_probability(n - 1, k + 1), (k, n)
    assert table == sorted(table) and len(set(table)) == len(table)


def test_stopping_points_match_the_table_published_with_the_mda():
    # Augustin, Friedman, Teixeira (2007): n_k for k = 1..16 at 95 % and 99 % confidence.
    assert stopping_points(0.95) == [6, 11, 16, 21, 27, 33, 38, 44, 51, 57, 63, 70, 76, 83,
                                     90, 96]
    assert stopping_points(0.99)[:8] == [8, 15, 21, 28, 36, 43, 51, 58]


def _links(*pairs: tuple[int, str, str]) -> list[MdaLink]:
    return [MdaLink(ttl=ttl, near=a, far=b, flows=1) for ttl, a, b in pairs]


def test_a_diamond_splits_and_meets_again():
    links = _links((1, "s", "a"), (1, "s", "b"), (2, "a", "c"), (2, "b", "c"), (3, "c", "d"))
    assert diamonds(links, 4) == [Diamond(divergence="s", divergence_ttl=1, convergence="c",
                                          convergence_ttl=3, width=2, length=2)]


def test_a_wider_longer_diamond_and_one_that_never_meets():
    links = _links((1, "s", "a"), (1, "s", "b"), (2, "a", "x"), (2, "a", "y"), (2, "b", "z"),
                   (3, "x", "m"), (3, "y", "m"), (3, "z", "m"))
    found = {d.divergence: d for d in diamonds(links, 4)}
    assert (found["s"].width, found["s"].length, found["s"].convergence) == (3, 3, "m")
    assert (found["a"].width, found["a"].convergence_ttl) == (2, 4)
    open_ended = diamonds(_links((1, "s", "a"), (1, "s", "b")), 2)
    assert open_ended[0].convergence is None and open_ended[0].convergence_ttl is None


def test_no_diamond_on_a_single_path_and_silent_hops_do_not_split():
    links = [*_links((1, "s", "a"), (2, "a", "b")), MdaLink(ttl=2, near="a", far=None, flows=3)]
    assert diamonds(links, 3) == []


def _record(multipath: Multipath | msgspec.UnsetType) -> TraceRecord:
    hops = [Hop.from_probes(1, [TraceProbe(address="192.0.2.1", rtt_ms=1.0, icmp_type=11)]),
            Hop.from_probes(2, [TraceProbe(address="192.0.2.9", rtt_ms=2.0, icmp_type=3)])]
    body = TraceBody(protocol="udp", ip_version=4, port=33434, method="raw", probes_per_hop=3,
                     max_ttl=30, reached=True, dest_ttl=2, stop_reason="reached", hops=hops,
                     multipath=multipath)
    return TraceRecord(id=new_id(), agent="a", region="r", target="t", address="192.0.2.9",
                       started_at=utc_now(), duration_ms=3.0, status="ok", body=body)


def test_multipath_is_optional_and_round_trips():
    plain = _record(msgspec.UNSET)
    assert b"multipath" not in encode_record(plain)  # older readers see what they always saw
    assert decode_record(encode_record(plain)) == plain
    m = Multipath(confidence=0.95, flow_field="sport", flows=14, probes_sent=43,
                  stopping=[6, 11], interfaces=[["192.0.2.1"], ["192.0.2.9"]],
                  links=_links((1, "192.0.2.1", "192.0.2.9")))
    rich = _record(m)
    assert decode_record(encode_record(rich)) == rich


def test_mda_options_are_checked():
    with pytest.raises(ValueError, match="recverr"):
        TraceOptions(mda=True, method="recverr")
    with pytest.raises(ValueError, match="confidence"):
        TraceOptions(mda=True, confidence=1.0)
    out = invoke_cli("measure", "trace", "192.0.2.1", "--mda", "--method", "recverr")
    assert out.returncode == 2 and "recverr" in out.stderr


def test_ecmp_routes_over_every_equal_next_hop_only_where_asked():
    topo = load_topology()
    multipath = {(a, b): topo.next_hops(a, b) for a, b in itertools.permutations(topo.nodes, 2)
                 if len(topo.next_hops(a, b)) > 1}
    # The diamond: r-lon spreads Frankfurt and Munich over its two London core routers...
    assert multipath == {("r-lon", "r-fra"): ["r-lhr1", "r-lhr2"],
                         ("r-lon", "r-muc"): ["r-lhr1", "r-lhr2"]}
    # ... and every other route is the single shortest path, as before.
    for a, b in itertools.permutations(topo.nodes, 2):
        if (a, b) not in multipath:
            assert topo.next_hops(a, b) == [topo.next_hop(a, b)]


def test_ecmp_must_be_a_boolean():
    raw = {"nodes": {"a": {"role": "client"}, "b": {"role": "router", "ecmp": "yes"}},
           "links": [{"a": "a", "b": "b"}]}
    with pytest.raises(TopologyError, match=r"nodes\.b\.ecmp"):
        parse_topology(raw)
