"""Path MTU in the lab: ``measure pmtu`` finds the configured MTU on every pair, and the
planted black hole (a 1280-byte tunnel whose routers drop "fragmentation needed" /
"packet too big", on Toronto's path to the Johannesburg data centre only) with the hop
where it drops; ``--pcap`` writes what tcpdump reads back."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conftest import NETVANTAGE
from netns import missing

pytestmark = pytest.mark.lab


def pmtu(lab, node: str, addresses: list[str], *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(["ip", "netns", "exec", lab.ns(node), NETVANTAGE, "measure", "pmtu",
                           *addresses, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def planted(topo) -> tuple[str, str, Any]:
    (link,) = [link for link in topo.links if link.mtu_for and link.drop_ptb]
    assert link.mtu_for is not None
    region, dc = sorted(link.mtu_for, key=lambda n: topo.nodes[n].role != "client")
    return region, dc, link


def test_path_mtu_equals_the_configured_mtu_on_every_pair(lab):
    topo = lab.topology
    regions = [c.name for c in topo.of_role("client")]
    dcs = topo.of_role("dc")
    with ThreadPoolExecutor(len(regions)) as pool:
        found = dict(zip(regions, pool.map(lambda r: pmtu(lab, r, [d.v4 for d in dcs]),
                                           regions), strict=True))
    hole_region, hole_dc, link = planted(topo)
    for region in regions:
        for dc, record in zip(dcs, found[region], strict=True):
            body = record["body"]
            assert record["status"] == "ok", (region, dc.name, record["error"])
            assert body["path_mtu"] == topo.path_mtu(region, dc.name), (region, dc.name, body)
            assert body["black_hole"] == ((region, dc.name) == (hole_region, hole_dc))
    body = found[hole_region][dcs.index(topo.nodes[hole_dc])]["body"]
    # The router that cannot forward 1281 bytes into the tunnel, and the hop behind it.
    path = topo.path(hole_region, hole_dc)
    near, far = (link.a, link.b) if path.index(link.a) < path.index(link.b) else (link.b, link.a)
    assert body["path_mtu"] == link.mtu < body["local_mtu"]
    assert not body["ptb_received"] and body["ptb_mtu"] is None
    assert (body["hop_ttl"], body["hop_address"]) == (path.index(near), topo.nodes[near].v4)
    assert body["next_hop_address"] == topo.nodes[far].v4
    # Nothing taught the measuring kernel a smaller MTU: the ICMP never arrived.
    assert body["cached_mtu"] is None


def test_black_hole_over_ipv6_and_tcp_written_to_a_pcap_tcpdump_reads(lab, tmp_path):
    if shutil.which("tcpdump") is None:
        missing("needs tcpdump")
    topo = lab.topology
    region, dc, link = planted(topo)
    tmp_path.chmod(0o755)
    capture = tmp_path / "pmtu.pcap"
    (v6,) = pmtu(lab, region, [topo.nodes[dc].v6], "--protocol", "tcp", "--port", "465",
                 "--pcap", str(capture))
    body = v6["body"]
    assert v6["status"] == "ok" and body["ip_version"] == 6
    assert body["path_mtu"] == link.mtu and body["black_hole"]
    path = topo.path(region, dc)
    near = link.a if path.index(link.a) < path.index(link.b) else link.b
    assert body["hop_address"] == topo.nodes[near].v6
    read = subprocess.run(["tcpdump", "-nn", "-r", str(capture)], capture_output=True,
                          text=True, timeout=30)
    assert read.returncode == 0, read.stderr
    lines = read.stdout.splitlines()
    answered = sum(p["answer"] is not None for p in body["probes"])
    assert len(lines) == len(body["probes"]) + answered
    sent = [line for line in lines if f"{topo.nodes[region].v6}." in line.split(" > ")[0]]
    assert len(sent) == len(body["probes"])
    # Every size the record says it sent is in the capture, at its length on the wire.
    lengths = {int(x.rsplit("length ", 1)[1].split()[0].rstrip(":")) for x in sent}
    assert {p["size"] - 60 for p in body["probes"]} == lengths  # IPv6 and TCP headers off


def mail(lab, node: str, protocol: str, endpoints: list[str], *args: str) -> list[dict[str, Any]]:
    ca = lab.read_state()["ca"]
    proc = subprocess.run(["ip", "netns", "exec", lab.ns(node), NETVANTAGE, "measure", protocol,
                           *endpoints, "--ca", ca, "--phase-timeout", "3", "-W", "8", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_mail_flags_the_black_hole_on_465_and_starttls_from_that_region_only(lab):
    """SMTP on 465 and 25 from every region to every data centre, and IMAP on 993 from the
    hole's region: only that region's probes to that data centre stall, and say why."""
    topo = lab.topology
    hole_region, hole_dc, link = planted(topo)
    ports = ["465", "25"]  # implicit TLS and STARTTLS
    regions = [c.name for c in topo.of_role("client")]
    dcs = topo.of_role("dc")

    def run(region: str) -> list[dict[str, Any]]:
        return mail(lab, region, "smtp", [f"{d.v4}:{p}" for d in dcs for p in ports])

    with ThreadPoolExecutor(len(regions) + 1) as pool:
        imap = pool.submit(mail, lab, hole_region, "imap", [f"{topo.nodes[hole_dc].v4}:993"])
        found = dict(zip(regions, pool.map(run, regions), strict=True))
    found[hole_region] += imap.result()  # the same verdict from the IMAP probe
    path = topo.path(hole_region, hole_dc)
    near = link.a if path.index(link.a) < path.index(link.b) else link.b
    for region in regions:
        for record in found[region]:
            dc = topo.node_by_address(record["address"])
            assert dc is not None
            body = record["body"]
            if (region, dc.name) != (hole_region, hole_dc):
                assert record["status"] == "ok" and "tls_stall" not in body, (region, record)
                continue
            # Connected (and on 25 the greeting, EHLO and STARTTLS answered): small packets pass.
            assert record["status"] == "timeout" and body["failed_phase"] == "tls_handshake"
            passed = [p["name"] for p in body["phases"] if p["ok"]]
            assert passed == (["connect"] if body["mode"] == "tls"
                              else ["connect", "greeting", "ehlo", "starttls"]), passed
            stall = body["tls_stall"]
            assert stall["verdict"] == "pmtu_black_hole", stall
            assert stall["hello_acked"] is True and stall["flight_bytes"] is not None
            assert stall["path_mtu"] == link.mtu and stall["ptb_received"] is False
            assert stall["hop_address"] == topo.nodes[near].v4
            assert "black hole" in record["error"]
