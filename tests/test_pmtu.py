"""measure pmtu without the lab: the search's sizes, the record's rules, a plan's pmtu test on
loopback (the lab tests find the planted black hole: test_pmtu_lab.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
from types import SimpleNamespace

import msgspec
import pytest

from netns import missing
from netvantage.agent.plan import TargetPlan, parse_test
from netvantage.measure.pmtu import _PLATEAUS, PmtuOptions, _candidates
from netvantage.results import PmtuBody, PmtuRecord, decode_record, encode_record


@pytest.mark.parametrize("good, bad, hint", [(68, 1500, None), (1280, 1500, None),
                                             (1400, 1410, None), (68, 1500, 1280)])
def test_each_round_splits_the_interval_and_tries_what_a_ptb_names(good, bad, hint):
    sizes = _candidates(good, bad, hint)
    assert sizes == sorted(set(sizes)) and all(good < s < bad for s in sizes)
    # No gap left wider than an even split into the round's evenly spaced sizes.
    edges = [good, *sizes, bad]
    assert max(b - a for a, b in itertools.pairwise(edges)) <= -(-(bad - good) // 7) + 1
    if hint is not None:
        assert {hint, hint + 1} <= set(sizes)
    for plateau in _PLATEAUS:  # a common MTU is tried exactly, with the size just above it
        if good < plateau < bad - 1:
            assert {plateau, plateau + 1} <= set(sizes)


def test_the_body_refuses_what_cannot_be():
    with pytest.raises(msgspec.ValidationError, match="larger than local_mtu"):
        msgspec.convert({"protocol": "icmp", "ip_version": 4, "local_mtu": 1500,
                         "path_mtu": 1501, "reached": True}, PmtuBody)
    with pytest.raises(msgspec.ValidationError, match="without a PTB"):
        msgspec.convert({"protocol": "icmp", "ip_version": 4, "local_mtu": 1500,
                         "path_mtu": 1400, "reached": True, "black_hole": True,
                         "ptb_received": True}, PmtuBody)
    with pytest.raises(ValueError):
        PmtuOptions(protocol="sctp")  # type: ignore[arg-type]


def test_a_plans_pmtu_test_measures_loopback():
    if os.geteuid() != 0:
        missing("needs root for raw sockets", "the pmtu tests")
    from netvantage.agent.plan import Job
    from netvantage.agent.run import measure_job
    from netvantage.measure.common import Origin

    spec = parse_test("pmtu:udp")
    target = TargetPlan(name="loop", addresses=("127.0.0.1",), tests=(spec,), interval_s=60)

    plan = SimpleNamespace(options={"pmtu": {"timeout_s": 0.5}})  # what measure_job reads
    record = asyncio.run(measure_job(Job(target, "127.0.0.1", spec), plan,  # type: ignore[arg-type]
                                     Origin(agent="t1", region="lo")))
    assert isinstance(record, PmtuRecord) and record.target == "loop"
    assert record.status == "ok" and record.body.protocol == "udp"
    assert record.body.path_mtu == record.body.local_mtu and not record.body.black_hole
    assert decode_record(encode_record(record)) == record
