"""The emulated internet, for real: RTT and loss as configured, traceroute hop lists,
TLS from every region, and clean teardown."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import require_lab_tools, run_cli
from netns import TAG, existing
from netvantage.lab.core import Lab

pytestmark = pytest.mark.lab


def lab_ping(lab: Lab, node: str, address: str, count: int, interval: float) -> list[float | None]:
    """iputils ping from ``node``; one entry per sequence number, None for a lost one."""
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns(node), "ping", "-n", "-c", str(count), "-i",
         str(interval), "-W", "2", address],
        capture_output=True, text=True, timeout=count * interval + 30,
    )
    got: dict[int, float] = {}
    for seq, rtt in re.findall(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms", proc.stdout):
        got.setdefault(int(seq), float(rtt))
    return [got.get(i) for i in range(1, count + 1)]


@pytest.fixture(scope="module")
def overhead_ms(lab: Lab) -> float:
    """What one pass through the delay element adds, measured on a 1 ms access link."""
    topo = lab.topology
    rtts = [r for r in lab_ping(lab, "lon", topo.nodes["r-lon"].v4, 50, 0.02) if r is not None]
    configured = topo.rtt_ms("lon", "r-lon")
    per_pass = (statistics.median(rtts) - configured) / 2
    assert 0 <= per_pass < 1.0, f"delay element adds {per_pass:.3f} ms per pass"
    return per_pass


def test_ping_rtt_matches_the_topology_from_every_region(lab, overhead_ms):
    topo = lab.topology
    pairs = [(c.name, d.name) for c in topo.of_role("client") for d in topo.of_role("dc")]

    def measure(pair):
        src, dst = pair
        jitter = any(topo.link(a, b).jitter_ms for a, b in _pairs(topo.path(src, dst)))
        count = 200 if jitter else 40
        return pair, lab_ping(lab, src, topo.nodes[dst].v4, count, 0.02)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(measure, pairs))
    report = []
    for (src, dst), rtts in results:
        got = [r for r in rtts if r is not None]
        configured = topo.rtt_ms(src, dst)
        passes = 2 * (len(topo.path(src, dst)) - 1)
        median = statistics.median(got)
        # iputils prints three significant digits, rounded: 261.443 ms is "261".
        resolution = 1.0 if median >= 100 else 0.1 if median >= 10 else 0.01
        hops = topo.path(src, dst)
        jitters = [topo.link(a, b).jitter_ms for a, b in _pairs(hops) if topo.link(a, b).jitter_ms]
        spread = 0.0
        if jitters:
            # Each jittery pass adds a uniform ±j: the median of n samples has a standard
            # error of about 1.25 σ/√n; allow three of them.
            sigma = math.sqrt(sum(2 * j * j / 3 for j in jitters))
            spread = 3 * 1.25 * sigma / math.sqrt(len(got))
        # Never faster than configured.  At most every pass's overhead as measured on a
        # lone access link, where the element wakes from sleep for each packet (along a
        # chain it is already awake and later passes cost less), plus 2 ms.
        low = configured - resolution / 2 - spread
        high = configured + passes * overhead_ms + resolution / 2 + spread + 2.0
        report.append(f"{src}->{dst}: median {median:.2f}, configured {configured:.2f}, "
                      f"allowed {low:.2f}..{high:.2f}")
        assert low <= median <= high, "\n".join(report)
        floor = configured - 2 * sum(jitters)
        assert min(got) >= floor - resolution / 2, f"{src}->{dst}: a reply beat the delay"


def _pairs(path):
    return list(itertools.pairwise(path))


def test_loss_on_the_degraded_path_is_binomially_right(lab):
    topo = lab.topology
    count = 600
    rtts = lab_ping(lab, "lun", topo.nodes["dc-ams"].v4, count, 0.01)
    lost = sum(r is None for r in rtts)
    p = 1 - topo.delivery_ratio("lun", "dc-ams")
    sd = math.sqrt(count * p * (1 - p))
    expected = f"expected {count * p:.1f}±{4 * sd:.1f}"
    assert abs(lost - count * p) <= 4 * sd, f"lost {lost}/{count}, {expected}"
    healthy = lab_ping(lab, "lon", topo.nodes["dc-ams"].v4, 200, 0.01)
    assert None not in healthy, "a healthy path lost packets"


def traceroute_hops(lab: Lab, node: str, address: str, *extra: str) -> list[str | None]:
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.ns(node), "traceroute", "-n", "-q", "3", "-w", "2",
         "-m", "16", *extra, address],
        capture_output=True, text=True, timeout=120,
    )
    hops: list[str | None] = []
    for line in proc.stdout.splitlines()[1:]:
        found = re.findall(r"\s(\d+\.\d+\.\d+\.\d+|[0-9a-f:]+:[0-9a-f:]*)\s", line + " ")
        hops.append(found[0] if found else None)
    return hops


@pytest.mark.parametrize("family", [4, 6])
def test_traceroute_shows_exactly_the_topology_routers(lab, family):
    topo = lab.topology
    pairs = [(c.name, d.name) for c in topo.of_role("client") for d in topo.of_role("dc")]

    def trace(pair):
        src, dst = pair
        target = topo.nodes[dst]
        address = target.v4 if family == 4 else target.v6
        return pair, traceroute_hops(lab, src, address, f"-{family}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(trace, pairs))
    for (src, dst), hops in results:
        names = [None if h is None else getattr(topo.node_by_address(h), "name", h)
                 for h in hops]
        assert names == topo.path(src, dst)[1:], (src, dst, hops)


def openssl(lab: Lab, node: str, address: str, port: int,
            *extra: str) -> subprocess.CompletedProcess[str]:
    ca = lab.read_state()["ca"]
    host = f"[{address}]" if ":" in address else address
    return subprocess.run(
        ["ip", "netns", "exec", lab.ns(node), "openssl", "s_client", "-connect", f"{host}:{port}",
         "-CAfile", ca, "-verify_return_error", "-verify_ip", address, *extra],
        input="", capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("region", ["lon", "lun"])
def test_tls_from_a_region_verifies_against_the_lab_ca(lab, region):
    topo = lab.topology
    for dc in topo.of_role("dc"):
        for address in (dc.v4, dc.v6):
            for port, extra in ((25, ["-starttls", "smtp"]), (587, ["-starttls", "smtp"]),
                                (143, ["-starttls", "imap"]), (465, []), (993, [])):
                # -verify_return_error: a certificate that does not verify, for
                # the address and for the data centre's name, fails the handshake
                # (judged by the exit status, not by OpenSSL's wording).
                proc = openssl(lab, region, address, port, "-verify_hostname",
                               f"mail.{dc.name}.lab", *extra)
                out = proc.stdout + proc.stderr
                assert proc.returncode == 0, (dc.name, address, port, out[-800:])


def test_link_changes_while_the_lab_runs(lab, overhead_ms):
    topo = lab.topology
    target = topo.nodes["dc-ams"].v4
    base = statistics.median(r for r in lab_ping(lab, "lon", target, 20, 0.02) if r)
    try:
        proc = run_cli("lab", "link", "r-lon", "r-ams", "--delay", "20", "--prefix", lab.prefix)
        assert proc.returncode == 0, proc.stderr
        slower = statistics.median(r for r in lab_ping(lab, "lon", target, 20, 0.02) if r)
        assert abs((slower - base) - 2 * (20 - 3)) < 2.0, (base, slower)
        proc = run_cli("lab", "link", "r-lon", "r-ams", "--loss", "1", "--prefix", lab.prefix)
        assert proc.returncode == 0, proc.stderr
        assert lab_ping(lab, "lon", target, 5, 0.05) == [None] * 5
    finally:
        lab.set_link("r-lon", "r-ams", delay_ms=3.0, loss=0.0)
    restored = statistics.median(r for r in lab_ping(lab, "lon", target, 20, 0.02) if r)
    assert abs(restored - base) < 1.0


def _procs_mentioning(text: str) -> list[str]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                out.append(f"{proc.name}: {cmd}")
    return out


def test_up_and_down_leave_nothing_behind():
    # How long up and down take is a figure for bench/lab_updown.py, not a test.
    require_lab_tools()
    prefix = f"{TAG}c"
    run_cli("lab", "down", "--prefix", prefix)
    up = run_cli("lab", "up", "--prefix", prefix, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        status = run_cli("lab", "status", "--prefix", prefix)
        assert status.returncode == 0 and "up" in status.stdout
        # The delay element runs real-time (root may), and the status says so.
        state = json.loads((Path("/run/netvantage") / prefix / "state.json").read_text())
        assert os.sched_getscheduler(state["delay_pid"]) == os.SCHED_FIFO
        assert "element scheduled SCHED_FIFO 10" in status.stdout
        again = run_cli("lab", "up", "--prefix", prefix, timeout=60)
        assert again.returncode == 2 and "already up" in again.stderr
        state_dir = Path("/run/netvantage") / prefix
        assert _procs_mentioning(str(state_dir)), "expected the lab's daemons to be running"
    finally:
        down = run_cli("lab", "down", "--prefix", prefix, timeout=60)
    assert down.returncode == 0, down.stderr
    assert not [n for n in existing() if n.startswith(prefix + "-")]
    assert not (Path("/run/netvantage") / prefix).exists()
    assert not _procs_mentioning(f"/run/netvantage/{prefix}")
    assert run_cli("lab", "status", "--prefix", prefix).returncode == 1


def test_down_cleans_a_half_built_lab():
    require_lab_tools()
    prefix = f"{TAG}h"
    for node in ("a", "b"):
        subprocess.run(["ip", "netns", "add", f"{prefix}-{node}"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-a", "sleep", "300"])
    state = Path("/run/netvantage") / prefix
    state.mkdir(parents=True, exist_ok=True)
    (state / "state.json").write_text("{not json")
    try:
        down = run_cli("lab", "down", "--prefix", prefix)
        assert down.returncode == 0, down.stderr
        assert not [n for n in existing() if n.startswith(prefix + "-")]
        assert not state.exists()
        assert sleeper.wait(timeout=10) != 0
    finally:
        sleeper.kill()
        for node in ("a", "b"):
            subprocess.run(["ip", "netns", "del", f"{prefix}-{node}"], check=False)
