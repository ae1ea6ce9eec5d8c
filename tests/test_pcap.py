"""``--pcap FILE`` on measure ping, trace and pmtu (loopback): every probe and answer is in
a file tcpdump reads, stamped with the very times the record's RTTs come from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import invoke_cli
from netns import missing


@pytest.fixture(autouse=True)
def _root_and_tcpdump():
    if os.geteuid() != 0:
        missing("needs root for raw sockets", "the --pcap tests")
    if shutil.which("tcpdump") is None:
        missing("needs tcpdump", "the --pcap tests")


def tcpdump(path) -> list[str]:
    out = subprocess.run(["tcpdump", "-nn", "--nano", "-tt", "-r", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_ping_pcap_holds_each_request_and_reply_at_the_rtts_own_stamps(tmp_path):
    capture = tmp_path / "ping.pcap"
    out = invoke_cli("measure", "ping", "127.0.0.1", "::1", "-n", "3", "-i", "0.02",
                     "--socket", "raw", "--pcap", str(capture))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    lines = tcpdump(capture)
    for record in records:
        assert record["status"] == "ok"
        mine = [x for x in lines if f" {record['address']} > " in x]
        requests = [float(x.split()[0]) for x in mine if "echo request" in x]
        replies = [float(x.split()[0]) for x in mine if "echo reply" in x]
        assert len(requests) == len(replies) == 3, mine
        # The reply's stamp is the kernel's receive stamp and the request's the send
        # stamp: their difference is the RTT the record holds (µs rounding aside).
        for rtt, sent, got in zip(record["body"]["rtts_ms"], requests, replies, strict=True):
            assert abs((got - sent) * 1000 - rtt) < 0.002, (rtt, sent, got)


def test_trace_and_pmtu_pcaps_read_back(tmp_path):
    trace_file, pmtu_file = tmp_path / "trace.pcap", tmp_path / "pmtu.pcap"
    out = invoke_cli("measure", "trace", "127.0.0.1", "--protocol", "udp", "--pcap",
                     str(trace_file))
    assert out.returncode == 0, out.stderr
    (trace,) = [json.loads(line) for line in out.stdout.splitlines()]
    probes = [p for hop in trace["body"]["hops"] for p in hop["probes"]]
    lines = tcpdump(trace_file)
    assert sum(" UDP, length" in x for x in lines) == len(probes)
    assert sum("udp port" in x and "unreachable" in x for x in lines) == sum(
        p["address"] is not None for p in probes)
    out = invoke_cli("measure", "pmtu", "127.0.0.1", "--pcap", str(pmtu_file))
    assert out.returncode == 0, out.stderr
    (pmtu,) = [json.loads(line) for line in out.stdout.splitlines()]
    lines = tcpdump(pmtu_file)
    answered = sum(p["answer"] is not None for p in pmtu["body"]["probes"])
    assert len(lines) == len(pmtu["body"]["probes"]) + answered
    assert pmtu["body"]["path_mtu"] == pmtu["body"]["local_mtu"]
