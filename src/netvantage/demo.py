"""``netvantage demo``: the whole pipeline, end to end, on this machine.

As root: bring the lab up (client regions, routers, data centres with Postfix
and Dovecot), run an agent in every client region against every data centre
with a collector in one of them, switch a degradation on half-way (the
London–Amsterdam link), export and annotate the results, tear the lab down,
and write the report a person reads before choosing a data centre.

Without root (no network namespaces): say so, and build the report from the
campaign recorded the same way and bundled under ``data/campaigns/``.

``--quick`` keeps the first demo: real ICMP and TCP measurements of loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import PrivilegeError
from .measure.common import Origin
from .measure.ping import PingOptions, ping_many
from .measure.tcp import TcpOptions, tcp_many
from .results import AnyRecord, write_jsonl

__all__ = ["DemoResult", "bundled_sample", "run_demo", "run_quick_demo"]

ROOT = Path(__file__).resolve().parents[2]


def bundled_sample() -> tuple[Path, Path]:
    """The bundled campaign and its locations table (source tree or installed data)."""
    for base in (ROOT / "data", Path(__file__).resolve().parent / "data"):
        data = base / "campaigns" / "lab-sample.jsonl"
        if data.exists():
            return data, base / "locations" / "lab.csv"
    raise FileNotFoundError("the bundled sample campaign (data/campaigns/lab-sample.jsonl) "
                            "is missing; run from a checkout of netvantage")


@dataclass(frozen=True, slots=True)
class DemoResult:
    report: Path
    data: Path
    live: bool
    notes: list[str]


def _can_run_lab() -> str | None:
    if os.geteuid() != 0:
        return "not running as root: the lab needs network namespaces"
    for tool in ("ip", "nft", "postfix", "dovecot"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (make test installs the lab's packages)"
    return None


def run_demo(out_dir: Path, *, minutes: float = 3.0, interval_s: float = 10.0,
             say: Callable[[str], None] = print) -> DemoResult:
    from .report import build_report

    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    reason = _can_run_lab()
    sample, places = bundled_sample()
    if reason is not None:
        say(f"{reason}; building the report from the bundled sample campaign instead "
            f"({sample.relative_to(ROOT) if sample.is_relative_to(ROOT) else sample})")
        notes.append(reason)
        data, live = sample, False
    else:
        data = _live_campaign(out_dir, minutes, interval_s, say)
        live = True
    say("analysing and writing the report")
    report = out_dir / "report.html"
    # One analysis, written twice: the page, and the Markdown version with its figures.
    built = build_report(data, report, locations=places, progress=say)
    built.write(out_dir / "report.md", fmt="md", figures_dir=out_dir / "figures")
    return DemoResult(report=report, data=data, live=live, notes=notes)


def _live_campaign(out_dir: Path, minutes: float, interval_s: float,
                   say: Callable[[str], None]) -> Path:
    from .annotate import GeoDatabases, annotate_records
    from .campaign import Degradation, run_lab_campaign
    from .lab.geodb import write_lab_databases
    from .lab.topology import load_topology
    from .results import read_jsonl

    # The demo tells the detour's story; the lab's planted path MTU black hole is the
    # lesson of `measure pmtu` and the mail probes' verdict, and would add a mail outage
    # to the story: the demo's lab is built without it.
    topo = load_topology().without_mtu_faults()
    duration = minutes * 60
    work = out_dir / "campaign"
    if work.exists():
        shutil.rmtree(work)
    degradation = Degradation("r-lon", "r-ams", delay_ms=30.0, loss=0.05, at_s=duration / 2)
    result = run_lab_campaign(work, duration_s=duration, interval_s=interval_s,
                              degradation=degradation, prefix="nvd", topology=topo, say=say)
    say(f"campaign: {sum(result.counts.values())} records "
        f"({', '.join(f'{k} {n}' for k, n in sorted(result.counts.items()))})")
    asn, city = write_lab_databases(topo, out_dir / "geo")
    with GeoDatabases(asn, city) as dbs:
        annotated = annotate_records(read_jsonl(result.jsonl), dbs)
    data = out_dir / "campaign.jsonl"
    write_jsonl(annotated, data)
    return data


# ----------------------------------------------------------------------------- quick


async def _measure(origin: Origin, notes: list[str]) -> list[AnyRecord]:
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(64)
    open_port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
    closed_port = closed.getsockname()[1]
    records: list[AnyRecord] = []
    try:
        try:
            records += await ping_many(["127.0.0.1", "::1"],
                                       PingOptions(count=5, interval_s=0.2), origin=origin)
        except PrivilegeError as exc:
            notes.append(f"ping skipped: {exc}")
        records += await tcp_many(
            [f"127.0.0.1:{open_port}", f"[::1]:{open_port}", f"127.0.0.1:{closed_port}"],
            TcpOptions(attempts=5, interval_s=0.1), origin=origin,
        )
    finally:
        listener.close()
        closed.close()
    return records


def run_quick_demo(out_dir: Path) -> tuple[list[AnyRecord], Path, list[str]]:
    """Real ICMP and TCP measurements of loopback, written as JSON Lines."""
    notes: list[str] = []
    records = asyncio.run(_measure(Origin.local(region="local"), notes))
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / "demo-measurements.jsonl"
    write_jsonl(records, output)
    return records, output, notes
