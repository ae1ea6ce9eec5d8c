"""Path changes over time on synthetic traces: a lasting move is one change, dated by the
first trace on the new path; load balancing, lost probes and one-off detours are not."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
import pytest

from netvantage.analysis.episodes import Episode, Improvement
from netvantage.analysis.pathchange import find_path_changes

T0 = pd.Timestamp("2026-01-01 10:00:00", tz="UTC")
STEP = pd.Timedelta("10s")
ASN = {"a1": "64601", "a2": "64700", "b2": "64720", "b3": "64720", "d": "65001"}


def frames(paths: Sequence[Sequence[str | None]], *, agent: str = "jnb-1", region: str = "ZA",
           target: str = "dc-ams", rtts: list[float] | None = None, start: int = 0,
           reached: list[bool] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hops and measurements for one agent's traces; None in a path is a silent TTL."""
    hops: list[dict[str, Any]] = []
    meas: list[dict[str, Any]] = []
    for n, path in enumerate(paths):
        tid = f"{agent}-{start + n}"
        at = T0 + (start + n) * STEP
        ok = reached[n] if reached else True
        for ttl, address in enumerate(path, start=1):
            last = ttl == len(path)
            hops.append({"id": tid, "region": region, "target": target, "started_at": at,
                         "ttl": ttl, "address": address, "replies": 0 if address is None else 2,
                         "is_destination": last and ok and address is not None,
                         "asn": ASN.get(address or "")})
        meas.append({"id": tid, "kind": "trace", "agent": agent, "region": region,
                     "target": target, "started_at": at,
                     "rtt_ms": rtts[n] if rtts else 100.0})
    return pd.DataFrame(hops), pd.DataFrame(meas)


A = ["a1", "a2", "d"]
B = ["a1", "b2", "b3", "d"]


def test_a_route_that_moves_and_stays_is_one_change_dated_by_its_first_trace():
    hops, meas = frames([A] * 8 + [B] * 8, rtts=[220.0] * 8 + [165.0] * 8)
    (change,) = find_path_changes(hops, meas)
    assert change.at == T0 + 8 * STEP and change.last_before == T0 + 7 * STEP
    assert (change.agent, change.region, change.target) == ("jnb-1", "ZA", "dc-ams")
    assert change.ttls == (2, 3, 4)
    assert change.before == (("a1",), ("a2",), ("d",))
    assert change.after == (("a1",), ("b2",), ("b3",), ("d",))
    assert change.as_before == ("64601", "64700", "65001")
    assert change.as_after == ("64601", "64720", "65001") and change.as_changed
    assert (change.rtt_before_ms, change.rtt_after_ms) == (220.0, 165.0)
    assert change.to_dict()["as_changed"] is True


def test_a_change_back_is_a_second_change():
    hops, meas = frames([A] * 5 + [B] * 5 + [A] * 5)
    assert [c.at for c in find_path_changes(hops, meas)] == [T0 + 5 * STEP, T0 + 10 * STEP]


def test_load_balanced_branches_lost_probes_and_one_off_detours_are_not_changes():
    rng = random.Random(7)
    balanced = [["a1", rng.choice(["x", "y"]), "d"] for _ in range(40)]
    hops, meas = frames(balanced)
    assert find_path_changes(hops, meas) == []
    lossy = [A] * 5 + [["a1", None, "d"]] + [A] * 5
    assert find_path_changes(*frames(lossy)) == []
    one_off = [A] * 5 + [B] + [A] * 5
    assert find_path_changes(*frames(one_off)) == []


def test_a_change_whose_first_trace_lost_the_new_hop_is_dated_by_the_next():
    moved = ["a1", "b2", "d"]
    paths = [A] * 5 + [["a1", None, "d"]] + [moved] * 5
    (change,) = find_path_changes(*frames(paths))
    assert change.at == T0 + 6 * STEP and change.ttls == (2,)
    assert change.before == (("a1",), ("a2",), ("d",))  # the lost hop filled from before


def test_traces_that_did_not_arrive_say_nothing():
    paths = [A] * 5 + [["a1", "b2", None]] * 3 + [A] * 5
    reached = [True] * 5 + [False] * 3 + [True] * 5
    assert find_path_changes(*frames(paths, reached=reached)) == []


def test_each_agent_is_followed_on_its_own():
    h1, m1 = frames([A] * 6 + [B] * 6, agent="jnb-1")
    h2, m2 = frames([A] * 12, agent="jnb-2")
    changes = find_path_changes(pd.concat([h1, h2]), pd.concat([m1, m2]))
    assert [c.agent for c in changes] == ["jnb-1"]


def test_a_coinciding_improvement_or_rise_is_named_and_a_distant_one_is_not():
    hops, meas = frames([A] * 8 + [B] * 8, rtts=[220.0] * 8 + [165.0] * 8)
    near = Improvement("ZA", "dc-ams", "ping", T0 + 8 * STEP + pd.Timedelta("4s"), 221.0,
                       166.0)
    far = Episode("ZA", "dc-ams", "ping", T0 + 2 * STEP, None, 200.0, 240.0, 250.0, 3)
    other_pair = Improvement("GB", "dc-ams", "ping", T0 + 8 * STEP, 20.0, 10.0)
    (change,) = find_path_changes(hops, meas, episodes=[far],
                                  improvements=[near, other_pair])
    assert change.coincides is not None and change.coincides.startswith("an improvement")
    assert "166.0 ms vs 221.0 ms" in change.coincides
    (alone,) = find_path_changes(hops, meas, episodes=[far], improvements=[other_pair])
    assert alone.coincides is None
    assert any("coincides with an improvement" in line for line in change.text_lines())


@pytest.mark.parametrize("hops", [None, pd.DataFrame()])
def test_no_traces_no_changes(hops):
    assert find_path_changes(hops) == []


def test_a_path_change_of_an_events_pair_joins_its_timeline():
    from netvantage.analysis.events import group_events

    hops, meas = frames([A] * 8 + [B] * 8, region="R1", target="dcX")
    (change,) = find_path_changes(hops, meas)
    rise = T0 + 8 * STEP
    flags = [Episode("R1", "dcX", "ping", rise, None, 10.0, 30.0, 31.0, 3),
             Episode("R2", "dcX", "ping", rise, None, 12.0, 33.0, 35.0, 3)]
    (event,) = group_events(flags, pd.Timedelta("30s"), paths=[change])
    assert (change.at, "R1 -> dcX: path changed at TTL 2, 3, 4 (agent jnb-1)") \
        in event.timeline
    (far,) = group_events([replace(f, start=f.start + pd.Timedelta("1h")) for f in flags],
                          pd.Timedelta("30s"), paths=[change])
    assert not any("path changed" in what for _, what in far.timeline)


def test_the_array_comparison_finds_what_trace_by_trace_sets_find() -> None:
    """pathchange._found (a traces × TTLs table) against the comparison of address sets one
    trace after the other, on random sequences: routes of different lengths that move and
    come back, load-balanced branches, silent TTLs, repeats; and a TTL with two addresses
    in one trace, which the table leaves to the sets."""
    from netvantage.analysis.pathchange import _found_all, _found_one_by_one, _traces

    rng = random.Random(4)
    routes = [A, B, ["a1", "a2", "c3", "c4", "d"], ["x1", "d"], ["a1", "b2", "d"]]
    every_hops, every_meas = [], []
    for trial in range(60):
        paths: list[list[str | None]] = []
        route = rng.randrange(len(routes))
        for _ in range(rng.randrange(2, 60)):
            if rng.random() < 0.15:
                route = rng.randrange(len(routes))
            path: list[str | None] = list(routes[route])
            if trial % 3 == 1 and len(path) > 2:
                path[1] = rng.choice(["lb1", "lb2", path[1]])  # per-flow load balancing
            for k in range(len(path) - 1):
                if rng.random() < 0.1:
                    path[k] = None  # a lost probe
            paths.append(path)
        hops, meas = frames(paths, agent=f"ag-{trial}")
        if trial % 10 == 9:  # a second address at TTL 1 of one trace
            hops = pd.concat([hops, hops.iloc[[0]].assign(address="a9")], ignore_index=True)
        every_hops.append(hops)
        every_meas.append(meas)
    # All sequences in one table, as find_path_changes does, and each on its own.
    table = _traces(pd.concat(every_hops, ignore_index=True),
                    pd.concat(every_meas, ignore_index=True))
    assert table is not None
    seqs = [table.sequence(g) for g in range(len(table.groups))]
    expected = [_found_one_by_one(seq, 3) for seq in seqs]
    assert _found_all(table, 3) == expected

    def named(found: Any, addresses: Any) -> Any:
        """The found changes with the paths' address codes as the addresses."""
        return [(i, {ttl: frozenset(str(addresses[c]) for c in codes)
                     for ttl, codes in hops.items()}, last, ttls)
                for i, (hops, last), ttls in found]

    alone = []  # each sequence in a table of its own (its agent's trial alone)
    for agent, _, _ in table.groups:
        trial = int(agent.removeprefix("ag-"))
        own = _traces(every_hops[trial], every_meas[trial])
        assert own is not None and len(own.groups) == 1
        alone.append(named(_found_all(own, 3)[0], own.rows.addresses))
    assert alone == [named(found, table.rows.addresses) for found in expected]
    assert len(seqs) == 60 and sum(len(seq) for seq in seqs) > 1000
    assert sum(len(f) for f in expected) > 50
