from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns import TAG, Namespaces, missing, ns_exec, remove_stale, require_root_netns

ROOT = Path(__file__).resolve().parents[1]
NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))


def invoke_cli(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """``netvantage ARGS`` in this process (click's CliRunner), for tests where no real
    process is the point; the answer has :func:`run_cli`'s shape.  A bug (any exception
    but an exit) raises.  ``timeout`` is accepted for symmetry and not enforced."""
    from click.testing import CliRunner

    from netvantage.cli import cli

    result = CliRunner().invoke(cli, list(args), prog_name="netvantage", catch_exceptions=False)
    return subprocess.CompletedProcess(["netvantage", *args], result.exit_code, result.stdout,
                                       result.stderr)


def run_cli(*args: str, ns: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``netvantage`` command, optionally inside a namespace."""
    cmd = [NETVANTAGE, *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def paths() -> Iterator[Namespaces]:
    """client ── router ── server, plus routes so that:

    * 10.231.2.2 / fd00:231:2::2 (server) answers ping and has a TCP listener on 2525;
    * 10.231.3.0/24 is *unreachable* at the router (ICMP type 3 from 10.231.1.1);
    * 10.231.2.3 answers nothing: the server drops every packet to it (timeouts).
    """
    require_root_netns()
    if shutil.which("nft") is None:
        missing("needs nftables")
    remove_stale()
    ns = Namespaces(["client", "router", "server"])
    try:
        ns.create()
        ns.link("client", ["10.231.1.2/24", "fd00:231:1::2/64"],
                "router", ["10.231.1.1/24", "fd00:231:1::1/64"])
        ns.link("router", ["10.231.2.1/24", "fd00:231:2::1/64"],
                "server", ["10.231.2.2/24", "10.231.2.3/24", "fd00:231:2::2/64"])
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            ns_exec(ns["router"], "sysctl", "-qw", key)
        ns_exec(ns["client"], "ip", "route", "add", "10.231.0.0/16", "via", "10.231.1.1")
        ns_exec(ns["client"], "ip", "-6", "route", "add", "fd00:231::/32", "via",
                "fd00:231:1::1")
        ns_exec(ns["server"], "ip", "route", "add", "10.231.0.0/16", "via", "10.231.2.1")
        ns_exec(ns["server"], "ip", "-6", "route", "add", "fd00:231::/32", "via",
                "fd00:231:2::1")
        ns_exec(ns["router"], "ip", "route", "add", "unreachable", "10.231.3.0/24")
        ns_exec(ns["router"], "ip", "-6", "route", "add", "unreachable", "fd00:231:3::/64")
        subprocess.run(
            ["ip", "netns", "exec", ns["server"], "nft", "-f", "-"],
            input=("table inet nvt {\n chain inbound {\n"
                   "  type filter hook input priority 0;\n"
                   "  ip daddr 10.231.2.3 drop\n }\n}\n"),
            text=True, check=True, capture_output=True, timeout=30,
        )
        yield ns
    finally:
        ns.destroy()


@pytest.fixture
def listener_in(paths: Namespaces) -> Iterator[int]:
    """A real TCP listener on 2525 inside the server namespace (both families)."""
    code = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
        "s.bind(('::',2525)); s.listen(64); print('ready',flush=True)\n"
        "s.settimeout(120)\n"
        "while True:\n"
        "    try: c,_=s.accept(); c.close()\n"
        "    except OSError: break\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", paths["server"], sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield 2525
    finally:
        proc.kill()
        proc.wait(timeout=10)


def require_lab_tools() -> None:
    """The lab also needs nft, Postfix, Dovecot and openssl: same skip/fail rule as root."""
    require_root_netns()
    absent = [t for t in ("nft", "postfix", "dovecot", "openssl", "traceroute", "ping")
               if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if absent:
        missing(f"lab tools missing: {', '.join(absent)}")


@pytest.fixture(scope="session")
def lab():
    """The default topology, up once for the session under its own prefix; always torn down."""
    require_lab_tools()
    from netvantage.lab.core import Lab
    from netvantage.lab.topology import load_topology

    lab = Lab(f"{TAG}l", load_topology())
    lab.down()  # a stale lab of *our* prefix from a crashed run
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def campaign_sources(records: list[object], folder: Path) -> dict[str, Path]:
    """``records`` written in ``folder`` as each source the loader reads: a JSON Lines file
    ("jsonl"), the collector's SQLite store ("store") and its Parquet export ("parquet")."""
    from netvantage.collector.export import export_parquet
    from netvantage.collector.store import Store
    from netvantage.results import write_jsonl

    jsonl = folder / "campaign.jsonl"
    write_jsonl(records, jsonl)  # type: ignore[arg-type]
    db = folder / "collector.db"
    with Store(db, synchronous="normal") as store:
        store.add_records(records)  # type: ignore[arg-type]
        export_parquet(store, folder / "parquet")
    return {"jsonl": jsonl, "store": db, "parquet": folder / "parquet"}
