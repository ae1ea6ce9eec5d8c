"""The ``netvantage`` command: a thin shell that parses arguments and calls the library.

Exit codes (stable, for scripts):

* 0 – the command ran; every measurement produced a record (whatever its status)
* 1 – ``--fail-on-error`` was given and at least one record's status is not ``ok``
* 2 – bad usage or bad input (a malformed target, an invalid file)
* 3 – missing privilege (no ICMP socket could be opened)
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import click

from . import __version__
from .errors import PrivilegeError, SchemaError, TargetError
from .measure.common import Origin
from .measure.target import Target, parse_target
from .results import (
    AnyRecord,
    ImapRecord,
    PingRecord,
    Record,
    SmtpRecord,
    TcpRecord,
    TraceRecord,
    encode_record,
    json_schema_text,
    read_jsonl,
    write_jsonl,
)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PRIVILEGE", "EXIT_USAGE", "cli", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PRIVILEGE = 0, 1, 2, 3

T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _die(message: str, code: int) -> NoReturn:
    click.echo(f"netvantage: error: {message}", err=True)
    sys.exit(code)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except PrivilegeError as exc:
        _die(str(exc), EXIT_PRIVILEGE)


def _targets(texts: Sequence[str], *, require_port: bool) -> list[Target]:
    out: list[Target] = []
    problems: list[str] = []
    for text in texts:
        try:
            out.append(parse_target(text, require_port=require_port))
        except TargetError as exc:
            problems.append(str(exc))
    if problems:
        _die("bad target(s):\n  " + "\n  ".join(problems), EXIT_USAGE)
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mail_table(records: Sequence[AnyRecord]) -> list[str]:
    rows = [("KIND", "TARGET", "MODE", "STATUS", "TOTAL", "PHASES (ms)", "TLS", "CERT", "ERROR")]
    for r in records:
        if not isinstance(r, SmtpRecord | ImapRecord):
            continue
        b = r.body
        phases = " ".join(f"{p.name}={_fmt(p.duration_ms)}" if p.ok else f"{p.name}=FAILED"
                          for p in b.phases)
        tls = b.tls.version or "-" if b.tls else "-"
        cert = "-"
        if b.tls is not None and b.tls.verified is not None:
            cert = "verified" if b.tls.verified else "REFUSED"
        rows.append((r.kind, str(Target(r.target, b.port)), b.mode, r.status,
                     _fmt(r.duration_ms), phases, tls, cert, r.error or ""))
    return _columns(rows) if len(rows) > 1 else []


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _table(records: Sequence[AnyRecord]) -> str:
    mail = _mail_table(records) + _trace_table(records)
    measured = [r for r in records if isinstance(r, PingRecord | TcpRecord)]
    if not measured:
        return "\n".join([*mail, "(times in ms)"])
    rows = [("KIND", "TARGET", "ADDRESS", "STATUS", "SENT", "OK", "LOSS", "MIN", "MEDIAN",
             "MAX", "JITTER", "ERROR")]
    for r in measured:
        if isinstance(r, PingRecord):
            sent, got = r.body.sent, r.body.received
            loss = "-" if r.body.loss_ratio is None else f"{r.body.loss_ratio:.0%}"
            stats = r.body.stats
            target = r.target
        else:
            sent, got = len(r.body.attempts), r.body.succeeded
            loss = "-" if not sent else f"{1 - got / sent:.0%}"
            stats = r.body.stats
            target = str(Target(r.target, r.body.port))
        rows.append((r.kind, target, r.address or "-", r.status, str(sent), str(got), loss,
                     _fmt(stats.min_ms), _fmt(stats.median_ms), _fmt(stats.max_ms),
                     _fmt(stats.jitter_ms), r.error or ""))
    lines = _columns(rows)
    if mail:
        lines += ["", *mail]
    lines.append("(times in ms)")
    return "\n".join(lines)


def _emit(records: Sequence[AnyRecord], output: Path | None, table: bool,
          fail_on_error: bool) -> None:
    if output is not None:
        write_jsonl(records, output)
    if table:
        click.echo(_table(records))
    elif output is None:
        out = sys.stdout.buffer
        for record in records:
            out.write(encode_record(record) + b"\n")
        out.flush()
    if fail_on_error and any(r.status != "ok" for r in records):
        sys.exit(EXIT_FAILED)


# ----------------------------------------------------------------------------- groups


@click.group(context_settings=CONTEXT, epilog="""\b
Example:
  netvantage measure ping 127.0.0.1 --count 5
\b
Exit codes: 0 ran, 1 a record is not ok (with --fail-on-error),
2 bad usage or input, 3 missing privilege.""")
@click.version_option(__version__, "-V", "--version", prog_name="netvantage")
def cli() -> None:
    """Network path diagnostics and data-centre comparison, from the clients' side."""


@cli.group(context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure ping 192.0.2.10 --count 10
  netvantage measure tcp mail.example.net:25 --table""")
def measure() -> None:
    """One-shot measurements; JSON Lines (one record per target) on stdout."""


def _common_options(f: Any) -> Any:
    options = [
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write JSON Lines to FILE (replaced whole) instead of stdout."),
        click.option("--table", is_flag=True, help="Print a readable table instead of JSON."),
        click.option("--fail-on-error", is_flag=True,
                     help="Exit 1 if any record's status is not ok."),
        click.option("--agent", default=None, help="Agent name in the records [host name]."),
        click.option("--region", default=None, help="Region label in the records."),
        click.option("-c", "--concurrency", type=click.IntRange(1, 4096), default=8,
                     show_default=True, help="Targets measured at once."),
        click.option("-4", "family", flag_value=4, help="IPv4 only."),
        click.option("-6", "family", flag_value=6, help="IPv6 only."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _origin(agent: str | None, region: str | None) -> Origin:
    local = Origin.local(region)
    return Origin(agent=agent or local.agent, region=region)


@measure.command("ping", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure ping 127.0.0.1 --count 5
  netvantage measure ping 192.0.2.1 2001:db8::1 --interval 0.2 --table
  netvantage measure ping 10.0.0.1 --timeout 1 --fail-on-error -o ping.jsonl
\b
Without root or CAP_NET_RAW, unprivileged ICMP sockets are used where
net.ipv4.ping_group_range allows; otherwise the command exits 3 and says what to do.""")
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@click.option("-n", "--count", type=click.IntRange(1, 10_000), default=5, show_default=True,
              help="Echo requests per target.")
@click.option("-i", "--interval", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Seconds between requests to one target.")
@click.option("-W", "--timeout", type=click.FloatRange(0.001, 60), default=2.0,
              show_default=True, help="Seconds to wait for each reply.")
@click.option("-s", "--size", type=click.IntRange(0, 65_000), default=56, show_default=True,
              help="ICMP payload bytes.")
@click.option("--ttl", type=click.IntRange(1, 255), default=64, show_default=True)
@click.option("--df", "dont_fragment", is_flag=True, help="Set Don't Fragment (IPv4 PMTU).")
@click.option("--pace", type=click.FloatRange(0.0001, 10), default=0.001, show_default=True,
              help="Minimum seconds between any two requests of the run (like fping -i).")
@click.option("--socket", "socket_kind", type=click.Choice(["auto", "raw", "dgram"]),
              default="auto", show_default=True,
              help="raw needs CAP_NET_RAW; dgram needs net.ipv4.ping_group_range.")
@_common_options
def measure_ping(hosts: tuple[str, ...], count: int, interval: float, timeout: float,
                 size: int, ttl: int, dont_fragment: bool, pace: float,
                 socket_kind: Literal["auto", "raw", "dgram"], output: Path | None,
                 table: bool, fail_on_error: bool, agent: str | None, region: str | None,
                 concurrency: int, family: Literal[4, 6] | None) -> None:
    """ICMP echo: every RTT, min/median/mean/max, jitter and loss per target."""
    targets = _targets(hosts, require_port=False)
    from .measure.ping import PingOptions, ping_many

    opts = PingOptions(count=count, interval_s=interval, timeout_s=timeout, payload_bytes=size,
                       ttl=ttl, dont_fragment=dont_fragment, socket=socket_kind, pace_s=pace)
    records = _run(ping_many(targets, opts, origin=_origin(agent, region), family=family,
                             concurrency=concurrency))
    _emit(records, output, table, fail_on_error)


@measure.command("tcp", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure tcp 127.0.0.1:22
  netvantage measure tcp mx.example.net:25 [2001:db8::25]:465 --attempts 5 --table
\b
Each attempt is ok, refused (RST), unreachable (ICMP error or no route) or
timeout (no answer). No privilege needed.""")
@click.argument("endpoints", nargs=-1, required=True, metavar="HOST:PORT...")
@click.option("-n", "--attempts", type=click.IntRange(1, 1_000), default=3, show_default=True,
              help="Connections per target.")
@click.option("-i", "--interval", type=click.FloatRange(0.05), default=0.5, show_default=True,
              help="Seconds between attempts to one target.")
@click.option("-W", "--timeout", type=click.FloatRange(0.001, 120), default=3.0,
              show_default=True, help="Seconds to wait for each connection.")
@_common_options
def measure_tcp(endpoints: tuple[str, ...], attempts: int, interval: float, timeout: float,
                output: Path | None, table: bool, fail_on_error: bool, agent: str | None,
                region: str | None, concurrency: int, family: Literal[4, 6] | None) -> None:
    """TCP connect time per attempt (application view and kernel handshake RTT)."""
    targets = _targets(endpoints, require_port=True)
    from .measure.tcp import TcpOptions, tcp_many

    opts = TcpOptions(attempts=attempts, interval_s=interval, timeout_s=timeout)
    records = _run(tcp_many(targets, opts, origin=_origin(agent, region), family=family,
                            concurrency=concurrency))
    _emit(records, output, table, fail_on_error)


@cli.group(context_settings=CONTEXT, epilog="""\b
Example:
  netvantage agent run --plan probes/example-plan.toml""")
def agent() -> None:
    """The probe agent: measures its plan on a schedule and uploads to a collector."""


@agent.command("run", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage agent run --plan /etc/netvantage/plan.toml
  netvantage agent run --plan plan.toml --duration 300 --status-interval 30
\b
Every result is written to the spool (SQLite) before it is uploaded; it leaves
the spool only when the collector acknowledges it. SIGTERM stops cleanly.""")
@click.option("--plan", "plan_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--duration", type=click.FloatRange(0.1), help="Stop after this many seconds.")
@click.option("--status-interval", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds between status lines on stderr.")
@click.option("--audit", is_flag=True,
              help="Keep every spooled id in the spool's audit table (for tests).")
@click.option("--check", is_flag=True, help="Only check the plan and list its measurements.")
def agent_run(plan_path: Path, duration: float | None, status_interval: float, audit: bool,
              check: bool) -> None:
    """Run the measurement plan until stopped (or for --duration seconds)."""
    from .agent.plan import PlanError, load_plan
    from .agent.run import Agent
    from .agent.spool import SpoolError

    try:
        plan = load_plan(plan_path)
    except PlanError as exc:
        _die(str(exc), EXIT_USAGE)
    if check:
        click.echo(f"plan {plan_path}: agent {plan.agent} ({plan.region or 'no region'}), "
                   f"{len(plan.jobs)} measurement(s):")
        for job in plan.jobs:
            click.echo(f"  {job.key} every {job.target.interval_s:g} s")
        return

    async def main() -> None:
        try:
            runner = Agent(plan, audit=audit, status_interval_s=status_interval)
        except SpoolError as exc:
            _die(str(exc), EXIT_USAGE)
        await runner.run(duration_s=duration)

    asyncio.run(main())


def _parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            _die(f"--weights: {part!r} is not REGION=NUMBER", EXIT_USAGE)
    return weights


def _load_campaign_and_places(data: tuple[str, ...], locations_path: Path | None) -> Any:
    from .analysis.geo import locations as read_locations
    from .analysis.load import LoadError, load

    try:
        campaign = load(list(data) if len(data) > 1 else data[0])
        places = read_locations(locations_path) if locations_path else None
    except (LoadError, SchemaError, OSError) as exc:
        _die(str(exc), EXIT_USAGE)
    return campaign, places


@cli.command("analyse", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage analyse data/campaigns/lab-sample.jsonl --locations data/locations/lab.csv
  netvantage analyse results.db --weights ZM-LUN=0.45,ZA-JNB=0.45,GB-LHR=0.1
  netvantage analyse dataset/ --format json > analysis.json
\b
DATA: JSON Lines file(s), the collector's store, or an exported Parquet dataset.""")
@click.argument("data", nargs=-1, required=True)
@click.option("--locations", "locations_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="CSV of regions and data centres (name, role, lat, lon "
              "or iata): enables the physical-bound tests.")
@click.option("--weights", help="Client weights per region, REGION=W,... [equal].")
@click.option("--window", help="Time window of the history test [a tenth of the campaign].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def analyse_cmd(data: tuple[str, ...], locations_path: Path | None, weights: str | None,
                window: str | None, fmt: str) -> None:
    """Rank the data centres for the client mix and flag degraded regions, with evidence."""
    from .analysis.summary import analyse

    campaign, places = _load_campaign_and_places(data, locations_path)
    result = analyse(campaign, weights=_parse_weights(weights), locations=places, window=window)
    if fmt == "json":
        import json as _json

        out = {
            "weights": result.weights, "winner": result.winner, "notes": result.notes,
            "ranking": _json.loads(result.ranking.table.to_json(orient="records")),
            "breakdown": _json.loads(result.ranking.breakdown.to_json(orient="records")),
            "flags": _json.loads(result.flags.to_json(orient="records", date_format="iso")),
        }
        click.echo(_json.dumps(out, indent=2, default=str))
        return
    for line in _analysis_text(result):
        click.echo(line)


def _analysis_text(result: Any) -> list[str]:
    lines = ["Which data centre serves this client mix best?",
             "  weights: " + ", ".join(f"{r} {w:.2f}" for r, w in result.weights.items()), ""]
    table = result.ranking.table.sort_values("rank")
    rows: list[tuple[str, ...]] = [
        ("RANK", "DATA CENTRE", "SCORE", "95% CI", "P(BEST)", "THRESHOLDS")]
    for r in table.itertuples():
        rows.append((str(r.rank), str(r.target), f"{r.score:.0f}",
                     f"{r.score_lo:.0f}-{r.score_hi:.0f}", f"{r.p_best:.0%}",
                     "met" if r.meets_thresholds else f"not met: {r.fails}"))
    lines += _columns(rows)
    st = result.stability
    lines += ["", f"winner {st.winner}: stays first in {st.dirichlet_share:.0%} of perturbed "
              f"weightings, {st.leave_one_out_share:.0%} of leave-one-region-out checks", "",
              "Per region (cost in ms-equivalents; lower is better):"]
    b = result.ranking.breakdown
    rows = [("REGION", "DATA CENTRE", "RTT P50", "RTT P95", "LOSS %", "HANDSHAKE P95", "COST")]
    for r in b.sort_values(["region", "cost"]).itertuples():
        rows.append((str(r.region), str(r.target), _fmt(r.rtt_p50_ms), _fmt(r.rtt_p95_ms),
                     f"{r.loss_pct:.1f}", _fmt(r.handshake_p95_ms), f"{r.cost:.0f}"))
    lines += _columns(rows)
    lines += ["", f"Flags ({len(result.flags)}; history window {result.window}):"]
    if result.flags.empty:
        lines.append("  none")
    for (region, target), group in result.flags.groupby(["region", "target"], sort=True):
        lines.append(f"  {region} -> {target}:")
        for f in group.itertuples():
            lines.append(f"    [{f.test}/{f.kind}] {f.evidence}")
        where = group["where"].dropna()
        if not where.empty:
            lines.append(f"    where: {where.iloc[0]}")
    for note in result.notes:
        lines.append(f"note: {note}")
    return lines


def _trace_table(records: Sequence[AnyRecord]) -> list[str]:
    lines: list[str] = []
    for r in records:
        if not isinstance(r, TraceRecord):
            continue
        b = r.body
        port = f":{b.port}" if b.port else ""
        lines.append(f"trace {b.protocol}{port} to {r.target} ({r.address or '-'}): {r.status}"
                     f", {b.stop_reason}" + (f" at TTL {b.dest_ttl}" if b.dest_ttl else ""))
        rows = [("TTL", "ADDRESS", "ASN", "CITY", "LOSS", "SENT", "BEST", "MEDIAN", "WORST")]
        for hop in b.hops:
            sent = str(len(hop.probes))
            loss = "-" if hop.loss_ratio is None else f"{hop.loss_ratio:.0%}"
            if not hop.responders:
                rows.append((str(hop.ttl), "*", "", "", loss, sent, "-", "-", "-"))
            for k, resp in enumerate(hop.responders):
                note = resp.annotation
                rows.append((str(hop.ttl) if k == 0 else "", resp.address,
                             f"AS{note.asn}" if note and note.asn else "",
                             (note.city or "") if note else "", loss if k == 0 else "",
                             sent if k == 0 else "", _fmt(resp.stats.min_ms),
                             _fmt(resp.stats.median_ms), _fmt(resp.stats.max_ms)))
        lines += ["  " + line for line in _columns(rows)]
    return lines


@measure.command("trace", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure trace 10.10.255.15 --table
  netvantage measure trace mx.example.net --protocol tcp --port 25
  netvantage measure trace 192.0.2.1 --cycles 10 --protocol udp --table
  netvantage measure trace 192.0.2.1 --method recverr   # no privilege needed
\b
Paris traceroute: one flow per trace; every TTL and probe kept; loss and RTT per
(TTL, responder). raw needs root or CAP_NET_RAW; recverr (UDP or ICMP) needs none.""")
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@click.option("-P", "--protocol", type=click.Choice(["icmp", "udp", "tcp"]), default="icmp",
              show_default=True)
@click.option("-p", "--port", type=click.IntRange(1, 65535),
              help="Destination port (UDP: 33434, TCP: 80 by default).")
@click.option("-q", "--probes", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Probes per TTL.")
@click.option("--cycles", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Repeat the trace (mtr style), one cycle per --cycle-interval.")
@click.option("--cycle-interval", type=click.FloatRange(0.05, 3600), default=1.0,
              show_default=True)
@click.option("-m", "--max-ttl", type=click.IntRange(1, 255), default=30, show_default=True)
@click.option("--window", type=click.IntRange(1, 64), default=8, show_default=True,
              help="TTLs in flight at once.")
@click.option("--pps", type=click.FloatRange(0.1, 10_000), default=100.0, show_default=True,
              help="Probes per second, for the whole run.")
@click.option("-W", "--timeout", type=click.FloatRange(0.01, 60), default=2.0,
              show_default=True, help="Seconds to wait for each window's answers.")
@click.option("--deadline", type=click.FloatRange(0.1, 3600), default=60.0,
              show_default=True, help="Seconds for the whole run.")
@click.option("--method", type=click.Choice(["auto", "raw", "recverr"]), default="auto",
              show_default=True)
@_common_options
def measure_trace(hosts: tuple[str, ...], protocol: str, port: int | None, probes: int,
                  cycles: int, cycle_interval: float, max_ttl: int, window: int, pps: float,
                  timeout: float, deadline: float, method: str, output: Path | None,
                  table: bool, fail_on_error: bool, agent: str | None, region: str | None,
                  concurrency: int, family: Literal[4, 6] | None) -> None:
    """Paris traceroute (ICMP, UDP, TCP SYN): per-hop RTT and loss, every probe kept."""
    from .measure.trace import TraceOptions, trace_many

    targets = _targets(hosts, require_port=False)
    try:
        opts = TraceOptions(protocol=protocol,  # type: ignore[arg-type]
                            port=port, probes_per_hop=probes, cycles=cycles,
                            cycle_interval_s=cycle_interval, max_ttl=max_ttl, window=window,
                            pps=pps, probe_timeout_s=timeout, deadline_s=deadline,
                            method=method)  # type: ignore[arg-type]
    except ValueError as exc:
        _die(str(exc), EXIT_USAGE)
    records = _run(trace_many(list(targets), opts, origin=_origin(agent, region),
                              family=family, concurrency=concurrency))
    _emit(records, output, table, fail_on_error)


def _mail_command(protocol: str) -> Any:
    default = {"smtp": 25, "imap": 143}[protocol]
    tls_port = {"smtp": 465, "imap": 993}[protocol]
    examples = {
        "smtp": ("netvantage measure smtp mx.example.net --ca lab-ca.pem",
                 "netvantage measure smtp 10.10.255.15:587 10.10.255.15:465 --table"),
        "imap": ("netvantage measure imap imap.example.net:993",
                 "netvantage measure imap 10.10.255.15:143 --ca ca.pem --user probe "
                 "--password-env IMAP_PASSWORD"),
    }[protocol]

    @measure.command(protocol, context_settings=CONTEXT, epilog=f"""\b
Examples:
  {examples[0]}
  {examples[1]}
\b
Port {default} is the default; ports {tls_port} use implicit TLS, others STARTTLS, unless
--tls/--starttls/--plain says otherwise. Never sends mail; logs in only with --user.""")
    @click.argument("endpoints", nargs=-1, required=True, metavar="HOST[:PORT]...")
    @click.option("--starttls", "mode", flag_value="starttls", help="Plain connect, then STARTTLS.")
    @click.option("--tls", "mode", flag_value="tls", help="TLS from the first byte.")
    @click.option("--plain", "mode", flag_value="plain", help="No TLS at all.")
    @click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="Verify against this CA file instead of the system's trust store.")
    @click.option("--server-name", help="Name (or IP) the certificate must carry [the HOST].")
    @click.option("--helo", help="EHLO name (SMTP) [an address literal of our address].")
    @click.option("--user", "username", help="Log in as USER (only over TLS).")
    @click.option("--password-env", help="Environment variable holding the password.")
    @click.option("-W", "--timeout", type=click.FloatRange(0.1, 600), default=20.0,
                  show_default=True, help="Deadline for the whole probe, in seconds.")
    @click.option("--phase-timeout", type=click.FloatRange(0.1, 600), default=10.0,
                  show_default=True, help="Limit for each phase, in seconds.")
    @_common_options
    def command(endpoints: tuple[str, ...], mode: str | None, ca_file: Path | None,
                server_name: str | None, helo: str | None, username: str | None,
                password_env: str | None, timeout: float, phase_timeout: float,
                output: Path | None, table: bool, fail_on_error: bool, agent: str | None,
                region: str | None, concurrency: int, family: Literal[4, 6] | None) -> None:
        import os

        from .measure.mail import MailOptions, mail_many

        targets = _targets(endpoints, require_port=False)
        password = None
        if username is not None:
            if not password_env or password_env not in os.environ:
                _die("--user needs --password-env NAME of a set environment variable",
                     EXIT_USAGE)
            password = os.environ[password_env]
        try:
            opts = MailOptions(mode=mode, timeout_s=timeout,  # type: ignore[arg-type]
                               phase_timeout_s=phase_timeout, ca_file=ca_file,
                               server_name=server_name, helo=helo, username=username,
                               password=password)
        except ValueError as exc:
            _die(str(exc), EXIT_USAGE)
        records = _run(mail_many(protocol, list(targets), opts,  # type: ignore[arg-type]
                                 origin=_origin(agent, region), family=family,
                                 concurrency=concurrency))
        _emit(records, output, table, fail_on_error)

    command.__doc__ = (f"{protocol.upper()} handshake, phase by phase: TLS version, cipher, "
                       "certificate and its verification.")
    return command


measure_smtp = _mail_command("smtp")
measure_imap = _mail_command("imap")


@cli.command("annotate", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage annotate traces.jsonl --asn-db GeoLite2-ASN.mmdb --city-db GeoLite2-City.mmdb \\
      -o annotated.jsonl
  netvantage annotate old.jsonl --asn-db dbip-asn-lite.mmdb --rdns > annotated.jsonl
  netvantage measure trace 192.0.2.1 | netvantage annotate - --city-db GeoLite2-City.mmdb
\b
Every responder of every trace gets its AS number and organisation, country, city
and coordinates (an annotation already there is replaced); other records pass
unchanged. Databases: MaxMind DB files, e.g. GeoLite2 (data created by MaxMind,
https://www.maxmind.com) or DB-IP Lite (IP Geolocation by DB-IP, https://db-ip.com).""")
@click.argument("source", metavar="IN.jsonl",
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--asn-db", type=click.Path(path_type=Path),
              help="ASN database (GeoLite2-ASN, DB-IP ASN Lite, the lab's).")
@click.option("--city-db", type=click.Path(path_type=Path),
              help="City database (GeoLite2-City, GeoIP2-City, DB-IP City Lite, the lab's).")
@click.option("--rdns", is_flag=True, help="Also look up reverse DNS names (sends queries).")
@click.option("--rdns-timeout", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
              help="Seconds allowed for each reverse DNS lookup.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write JSON Lines to FILE (replaced whole) instead of stdout.")
def annotate_cmd(source: Path, asn_db: Path | None, city_db: Path | None, rdns: bool,
                 rdns_timeout: float, output: Path | None) -> None:
    """Add AS, organisation, place (and reverse DNS) to the hops of traces."""
    from .annotate import GeoDatabaseError, GeoDatabases, annotate_records

    if asn_db is None and city_db is None and not rdns:
        _die("give --asn-db, --city-db or --rdns (or several)", EXIT_USAGE)
    try:
        records = read_jsonl(sys.stdin.buffer if str(source) == "-" else source)
        with GeoDatabases(asn_db, city_db, rdns_timeout_s=rdns_timeout) as dbs:
            annotated = annotate_records(records, dbs, rdns=rdns)
    except (SchemaError, GeoDatabaseError) as exc:
        _die(str(exc), EXIT_USAGE)
    write_jsonl(annotated, output if output is not None else sys.stdout.buffer)
    traces = sum(r.kind == "trace" for r in annotated)
    click.echo(f"netvantage: annotated {traces} trace(s) of {len(annotated)} record(s)",
               err=True)


# ----------------------------------------------------------------------------- collector


_store_option = click.option(
    "--store", "store_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The collector's SQLite file (created if missing).")


@cli.group(context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector add-agent lusaka-1 --store results.db
  netvantage collector serve --store results.db --host 0.0.0.0 \\
      --tls-cert collector.pem --tls-key collector.key""")
def collector() -> None:
    """The ingest service agents upload to, and its agent tokens."""


@collector.command("serve", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector serve --store results.db
  netvantage collector serve --store results.db --host 0.0.0.0 --port 8750 \\
      --tls-cert /etc/netvantage/cert.pem --tls-key /etc/netvantage/key.pem
\b
API: POST /v1/records (Authorization: Bearer TOKEN, Content-Type: application/x-ndjson,
one record per line) answers {"accepted", "duplicates", "ids"}; GET /v1/health.
A refused batch (401, 403, 400, 422, 413, 415) stores nothing and says why, line by line.
SIGTERM or Ctrl-C stops it gracefully: batches in flight finish, then the store closes.""")
@_store_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 or :: for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8750, show_default=True,
              help="TCP port (0: any free port, printed at start).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate (chain) for HTTPS; needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key for HTTPS.")
@click.option("--max-body-mb", type=click.FloatRange(0.001, 1024), default=16.0,
              show_default=True, help="Largest batch accepted, in MiB (larger: 413).")
@click.option("--synchronous", type=click.Choice(["full", "normal"]), default="full",
              show_default=True,
              help="full: every acknowledged batch is on disk (survives power loss); normal: "
                   "faster, a power loss may lose the last acknowledged batches.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the port (decoding uses one CPU per process).")
def collector_serve(store_path: Path, host: str, port: int, tls_cert: Path | None,
                    tls_key: Path | None, max_body_mb: float, synchronous: str,
                    workers: int) -> None:
    """Receive agents' records over HTTP(S) and store them."""
    from .collector.serve import serve
    from .collector.store import StoreError

    try:
        serve(store_path, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
              max_body_bytes=int(max_body_mb * 1024 * 1024),
              synchronous="normal" if synchronous == "normal" else "full", workers=workers,
              announce=lambda line: click.echo(line))
    except StoreError as exc:
        _die(str(exc), EXIT_USAGE)


@collector.command("add-agent", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector add-agent lusaka-1 --store results.db
  netvantage collector add-agent lusaka-1 --store results.db --rotate
\b
The token is printed once, on stdout; the store keeps only its SHA-256.
Give it to the agent (e.g. in its plan's token file).""")
@click.argument("name")
@_store_option
@click.option("--rotate", is_flag=True,
              help="Replace the token of an existing agent (the old one stops working).")
def collector_add_agent(name: str, store_path: Path, rotate: bool) -> None:
    """Create an agent and print its new upload token."""
    from .collector.store import Store, StoreError

    try:
        with Store(store_path) as store:
            token = store.add_agent(name, rotate=rotate)
    except StoreError as exc:
        _die(str(exc), EXIT_USAGE)
    click.echo(token)
    click.echo(f"netvantage: {'new token for' if rotate else 'created'} agent {name!r} in "
               f"{store_path}; this token is shown only now", err=True)


@cli.command("export", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage export --store results.db --format parquet -o dataset/
  netvantage export --store results.db --format jsonl --kind ping -o ping.jsonl
  netvantage export --store results.db --format csv -o - | head
\b
Parquet: a dataset partitioned by kind and date (dataset/kind=ping/date=2026-11-28/
part-0.parquet), envelope columns flattened, the body as a JSON string column.
JSON Lines: the records as the schema writes them. CSV: envelope columns + body JSON.
The store may be in use by a running collector: the export reads one snapshot.""")
@_store_option
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl", "csv"]),
              required=True, help="Output format.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, allow_dash=True),
              help="Output file (jsonl, csv; '-' for stdout) or directory (parquet, must not "
                   "exist yet).")
@click.option("--kind", type=click.Choice(["ping", "tcp", "trace", "smtp", "imap"]),
              help="Only records of this kind.")
def export_cmd(store_path: Path, fmt: str, output: Path, kind: str | None) -> None:
    """Write the store's records as Parquet, JSON Lines or CSV."""
    from .collector.export import export
    from .collector.store import Store, StoreError

    target: Path | Any = sys.stdout.buffer if str(output) == "-" else output
    try:
        with Store(store_path, create=False) as store:
            n = export(store, fmt, target, kind=kind)  # type: ignore[arg-type]
    except (StoreError, SchemaError) as exc:
        _die(str(exc), EXIT_USAGE)
    click.echo(f"netvantage: exported {n} record(s) as {fmt} to {output}", err=True)


# ----------------------------------------------------------------------------- import


@cli.group("import", context_settings=CONTEXT, epilog="""\b
Example:
  netvantage import atlas results.json --probes probes.json --targets dcs.csv -o atlas.jsonl""")
def import_() -> None:
    """Turn other platforms' measurements into netvantage records."""


@import_.command("atlas", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage import atlas ping.json trace_*.json -o atlas.jsonl
  netvantage import atlas results.jsonl --probes probes.json --targets dcs.toml -o atlas.jsonl
  netvantage import atlas trace.json --keep-raw -o atlas.jsonl   # + atlas.raw.jsonl
\b
FILE: RIPE Atlas ping or traceroute results (JSON Lines, a JSON array or one object).
PROBES: an Atlas probe list (API JSON); region = the probe's country code.
TARGETS: CSV or TOML of name, address[, location]; a result whose dst_addr is listed gets
that name as target, others keep dst_name. Record ids are derived from msm_id, prb_id,
timestamp and type: importing the same results again gives the same ids.
The summary (read, imported, refused and why) goes to stderr.""")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--probes", "probe_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Atlas probe metadata JSON (repeatable).")
@click.option("--targets", "targets_file", type=click.Path(exists=True, dir_okay=False,
                                                            path_type=Path),
              help="Data-centre list (CSV or TOML: name, address[, location]).")
@click.option("--keep-raw", is_flag=True,
              help="Also write each Atlas original to OUT.raw.jsonl ({id, raw} lines).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON Lines file.")
def import_atlas_cmd(files: tuple[Path, ...], probe_files: tuple[Path, ...],
                     targets_file: Path | None, keep_raw: bool, output: Path) -> None:
    """Import RIPE Atlas ping and traceroute results as records (source "atlas")."""
    from .atlas import import_atlas, load_probes, load_targets, write_import

    try:
        probes = load_probes(probe_files) if probe_files else None
        targets = load_targets(targets_file) if targets_file is not None else None
    except (OSError, ValueError) as exc:
        _die(str(exc), EXIT_USAGE)
    result = import_atlas(files, probes=probes, targets=targets, keep_raw=keep_raw)
    n, side = write_import(result, output)
    click.echo(f"netvantage: atlas import: {result.report.summary()}", err=True)
    click.echo(f"netvantage: wrote {n} record(s) to {output}"
               + (f" and the originals to {side}" if side else ""), err=True)


@cli.command("report", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage report data/campaigns/lab-sample.jsonl --locations data/locations/lab.csv \\
      -o report.html
  netvantage report results.db --weights ZM-LUN=0.45,ZA-JNB=0.45,GB-LHR=0.1 \\
      --locations data/locations/lab.csv --title "Mail host: where next?" -o report.html
  netvantage report dataset/ --format md --figures report-figures -o report.md
\b
DATA: JSON Lines file(s), the collector's store, or an exported Parquet dataset.
The HTML page is self-contained (figures embedded; nothing fetched when it is opened).
The recommendation and the flags are exactly those of `netvantage analyse` for the same
DATA, --weights and --locations. Progress goes to stderr.""")
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The report file to write (HTML, or Markdown with --format md).")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html",
              show_default=True)
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the figures as PNG files in DIR (Markdown links to them).")
@click.option("--locations", "locations_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="CSV of regions and data centres: enables the map and "
              "the physical-bound tests.")
@click.option("--weights", help="Client weights per region, REGION=W,... [equal].")
@click.option("--window", help="Time window of the history test [a tenth of the campaign].")
@click.option("--title", help="Title of the report.")
def report_cmd(data: tuple[str, ...], output: Path, fmt: str, figures_dir: Path | None,
               locations_path: Path | None, weights: str | None, window: str | None,
               title: str | None) -> None:
    """Write the report a person reads: recommendation, flags, ranking, map and figures."""
    import time

    from .report import make_report

    started = time.perf_counter()

    def progress(message: str) -> None:
        click.echo(f"netvantage: report: {message} ({time.perf_counter() - started:.1f} s)",
                   err=True)

    parsed = _parse_weights(weights)
    progress("loading…")
    campaign, places = _load_campaign_and_places(data, locations_path)
    try:
        report = make_report(campaign, weights=parsed, locations=places, title=title,
                             window=window, sources=[Path(d).name for d in data],
                             progress=progress)
    except ValueError as exc:
        _die(str(exc), EXIT_USAGE)
    progress(f"writing {output}…")
    files = report.write(output, fmt=fmt, figures_dir=figures_dir)
    progress(f"wrote {', '.join(str(f) for f in files)}; recommended: "
             f"{report.analysis.winner or 'none'}, {len(report.analysis.flags)} flag(s)")


@cli.command("schema", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage schema > result.schema.json
  netvantage schema --validate results.jsonl""")
@click.option("--validate", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Check JSON Lines FILE(s) against the schema instead (repeatable).")
def schema_cmd(files: tuple[str, ...]) -> None:
    """Print the JSON Schema of a result record, or validate JSON Lines files."""
    if not files:
        click.echo(json_schema_text(), nl=False)
        return
    failed = False
    for name in files:
        try:
            records: list[Record] = list(read_jsonl(name))
        except SchemaError as exc:
            click.echo(f"netvantage: error: {exc}", err=True)
            failed = True
        else:
            click.echo(f"{name}: {len(records)} valid record(s)")
    if failed:
        sys.exit(EXIT_USAGE)


@cli.command("demo", context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage demo                 # lab + agents + collector + report, ~4 minutes
  netvantage demo                      # without root: the report of the bundled campaign
  netvantage demo --quick              # loopback ping and TCP only
\b
As root it brings the lab up, measures from every client region for --minutes with a
degradation switched on half-way, writes OUT/report.html and tears the lab down.""")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out"), show_default=True, help="Where the demo writes its files.")
@click.option("--minutes", type=click.FloatRange(1, 60), default=3.0, show_default=True,
              help="Length of the lab campaign.")
@click.option("--quick", is_flag=True, help="Only measure loopback (ICMP and TCP).")
def demo_cmd(out_dir: Path, minutes: float, quick: bool) -> None:
    """The whole pipeline on this machine, ending with the report a person reads."""
    if quick:
        from .demo import run_quick_demo

        records, output, notes = run_quick_demo(out_dir)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        click.echo(_table(records))
        click.echo(f"\n{len(records)} records written to {output}")
        return
    from .demo import run_demo

    result = run_demo(out_dir, minutes=minutes, say=lambda m: click.echo(f"demo: {m}",
                                                                          err=True))
    click.echo(f"report: {result.report.resolve()}")
    click.echo(f"data:   {result.data.resolve()}"
               + ("" if result.live else " (bundled sample: run as root for a live campaign)"))


# ----------------------------------------------------------------------------- lab


def _lab(prefix: str) -> Any:
    from .lab.core import Lab, LabError

    try:
        return Lab(prefix)
    except LabError as exc:
        _die(str(exc), EXIT_USAGE)


_prefix_option = click.option(
    "--prefix", default="nvl", show_default=True,
    help="Namespace prefix of this lab (namespaces are PREFIX-NODE).")


@cli.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage lab up
  sudo netvantage lab exec lun -- ping -c 3 10.10.255.15
  sudo netvantage lab link r-los r-lis --loss 0.2 --delay 90
  sudo netvantage lab down""")
def lab() -> None:
    """The emulated internet: client regions, routers and data centres in namespaces."""


@lab.command("up", context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage lab up
  sudo netvantage lab up data/lab/default.toml --no-mail""")
@click.argument("topology", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--mail/--no-mail", default=True, show_default=True,
              help="Start Postfix and Dovecot in every data centre.")
@_prefix_option
def lab_up(topology: str | None, mail: bool, prefix: str) -> None:
    """Build the lab from a topology file (default: the bundled africa-amsterdam story)."""
    from .lab.core import Lab, LabError
    from .lab.topology import TopologyError, load_topology

    try:
        topo = load_topology(topology)
        lab_ = Lab(prefix, topo)
        state = lab_.up(mail=mail, progress=lambda m: click.echo(f"  {m}", err=True))
    except (LabError, TopologyError) as exc:
        _die(str(exc), EXIT_USAGE)
    click.echo(f"lab {prefix!r} up in {state['up_seconds']:.2f} s: {len(topo.nodes)} nodes, "
               f"{len(topo.links)} links (delay: {state['delay_method']})")
    _print_nodes(topo)
    if state.get("ca"):
        click.echo(f"lab CA certificate: {state['ca']}")
    if state.get("geo"):
        click.echo(f"lab geo databases: --asn-db {state['geo']['asn']} "
                   f"--city-db {state['geo']['city']}")


def _print_nodes(topo: Any) -> None:
    for role in ("client", "router", "dc"):
        for node in topo.of_role(role):
            where = ", ".join(x for x in (node.city, node.country) if x)
            click.echo(f"  {role:<6}  {node.name:<8} {node.v4:<14} {node.v6:<16} {where}")


@lab.command("down", context_settings=CONTEXT, epilog="""\b
Example:
  sudo netvantage lab down""")
@_prefix_option
def lab_down(prefix: str) -> None:
    """Remove every namespace, process and file of the lab (also a half-built one)."""
    done = _lab(prefix).down()
    for line in done:
        click.echo(f"  {line}")
    click.echo(f"lab {prefix!r} is down" if done else f"lab {prefix!r} was not up")


@lab.command("status", context_settings=CONTEXT, epilog="""\b
Example:
  sudo netvantage lab status""")
@_prefix_option
def lab_status(prefix: str) -> None:
    """Say whether the lab is up, and list its nodes and addresses."""
    from .lab.core import LabError

    lab_ = _lab(prefix)
    try:
        st = lab_.status()
    except LabError as exc:
        _die(str(exc), EXIT_USAGE)
    if not st.namespaces and not st.state:
        click.echo(f"lab {prefix!r} is down")
        sys.exit(EXIT_FAILED)
    phase = st.state.get("phase", "unknown (no state file)")
    scheduling = st.state.get("delay_scheduling")
    click.echo(f"lab {prefix!r}: {phase}, {len(st.namespaces)} namespace(s), "
               f"delay: {st.state.get('delay_method', '?')}"
               + (f" (element scheduled {scheduling})" if scheduling else ""))
    if st.state.get("topology"):
        _print_nodes(lab_.topology)
    for key in ("loss_overrides", "delay_overrides"):
        if st.state.get(key):
            click.echo(f"  {key}: {json.dumps(st.state[key])}")
    if not st.up:
        sys.exit(EXIT_FAILED)


@lab.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True},
             epilog="""\b
Examples:
  sudo netvantage lab exec lun -- traceroute -n 10.10.255.15
  sudo netvantage lab exec jnb -- netvantage measure ping 10.10.255.16""")
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_prefix_option
def lab_exec(node: str, command: tuple[str, ...], prefix: str) -> None:
    """Run COMMAND inside NODE's namespace; exits with its exit code."""
    from .lab.core import LabError

    try:
        sys.exit(_lab(prefix).exec(node, command))
    except LabError as exc:
        _die(str(exc), EXIT_USAGE)


@lab.command("link", context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage lab link r-los r-lis --loss 0.10
  sudo netvantage lab link r-lon r-ams --delay 25 --jitter 5""")
@click.argument("a")
@click.argument("b")
@click.option("--delay", "delay_ms", type=click.FloatRange(0, 10_000),
              help="One-way delay in ms.")
@click.option("--jitter", "jitter_ms", type=click.FloatRange(0, 10_000), help="Jitter in ms.")
@click.option("--loss", type=click.FloatRange(0, 1), help="Loss ratio each way (0..1).")
@_prefix_option
def lab_link(a: str, b: str, delay_ms: float | None, jitter_ms: float | None,
             loss: float | None, prefix: str) -> None:
    """Change a link's delay, jitter or loss while the lab runs."""
    from .lab.core import LabError

    if delay_ms is None and jitter_ms is None and loss is None:
        _die("give at least one of --delay, --jitter, --loss", EXIT_USAGE)
    try:
        link = _lab(prefix).set_link(a, b, delay_ms=delay_ms, jitter_ms=jitter_ms, loss=loss)
    except LabError as exc:
        _die(str(exc), EXIT_USAGE)
    click.echo(f"link {link.a}-{link.b} changed")


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="netvantage")
