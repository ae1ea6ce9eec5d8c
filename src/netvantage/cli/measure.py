"""``netvantage measure ping|tcp|trace|pmtu|smtp|imap``: one-shot measurements, JSON Lines out.

Each command imports its probe module when it runs, not when the CLI starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from ._common import CONTEXT, EXIT_USAGE, common_options, die, emit, origin, run, targets

if TYPE_CHECKING:
    from ..measure.target import Target

__all__ = ["measure"]


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure ping 192.0.2.10 --count 10
  netvantage measure tcp mail.example.net:25 --table""")
def measure() -> None:
    """One-shot measurements; JSON Lines (one record per target) on stdout."""


@measure.command("ping", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure ping 127.0.0.1 --count 5
  netvantage measure ping 192.0.2.1 2001:db8::1 --interval 0.2 --table
  netvantage measure ping 10.0.0.1 --timeout 1 --fail-on-error -o ping.jsonl
  netvantage measure ping 10.10.255.15 --pcap ping.pcap   # then: tcpdump -r ping.pcap
\b
Without root or CAP_NET_RAW, unprivileged ICMP sockets are used where
net.ipv4.ping_group_range allows; otherwise the command exits 3 and says what to do.
Every target is active at once and the global --pace bounds the sweep (like
fping -i); --concurrency N lets only N targets have requests in flight.""")
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
@click.option("--pcap", "pcap", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every probe and answer to this pcap file (tcpdump -r, Wireshark).")
@common_options
def measure_ping(hosts: tuple[str, ...], count: int, interval: float, timeout: float,
                 size: int, ttl: int, dont_fragment: bool, pace: float,
                 socket_kind: Literal["auto", "raw", "dgram"], pcap: Path | None,
                 output: Path | None,
                 table: bool, fail_on_error: bool, agent: str | None, region: str | None,
                 concurrency: int, family: Literal[4, 6] | None) -> None:
    """ICMP echo: every RTT, min/median/mean/max, jitter and loss per target."""
    parsed = targets(hosts, require_port=False)
    from ..measure.ping import PingOptions, ping_many

    if click.get_current_context().get_parameter_source("concurrency") is \
            click.core.ParameterSource.DEFAULT:
        concurrency = len(parsed)  # the pace, not a small batch, bounds a sweep (fping -i)

    opts = PingOptions(count=count, interval_s=interval, timeout_s=timeout, payload_bytes=size,
                       ttl=ttl, dont_fragment=dont_fragment, socket=socket_kind, pace_s=pace)
    records = run(ping_many(parsed, opts, origin=origin(agent, region), family=family,
                            concurrency=concurrency, pcap=pcap))
    emit(records, output, table, fail_on_error)


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
@common_options
def measure_tcp(endpoints: tuple[str, ...], attempts: int, interval: float, timeout: float,
                output: Path | None, table: bool, fail_on_error: bool, agent: str | None,
                region: str | None, concurrency: int, family: Literal[4, 6] | None) -> None:
    """TCP connect time per attempt (application view and kernel handshake RTT)."""
    parsed = targets(endpoints, require_port=True)
    from ..measure.tcp import TcpOptions, tcp_many

    opts = TcpOptions(attempts=attempts, interval_s=interval, timeout_s=timeout)
    records = run(tcp_many(parsed, opts, origin=origin(agent, region), family=family,
                           concurrency=concurrency))
    emit(records, output, table, fail_on_error)


@measure.command("trace", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure trace 10.10.255.15 --table
  netvantage measure trace mx.example.net --protocol tcp --port 25
  netvantage measure trace 192.0.2.1 --cycles 10 --protocol udp --table
  netvantage measure trace 192.0.2.1 --method recverr   # no privilege needed
  netvantage measure trace 10.10.255.21 --mda --protocol udp --table
  netvantage measure trace 10.10.255.15 --pcap trace.pcap   # then: tcpdump -r trace.pcap
\b
Paris traceroute: one flow per trace; every TTL and probe kept; loss and RTT per
(TTL, responder). raw needs root or CAP_NET_RAW; recverr (UDP or ICMP) needs none.
--mda varies the flow per probe (Multipath Detection Algorithm) to list every
load-balanced interface per TTL, the links between them and the diamonds.""")
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
@click.option("--mda", is_flag=True,
              help="Multipath Detection Algorithm: vary the flow per probe, list every "
                   "load-balanced interface, link and diamond (raw sockets; -q, --cycles "
                   "and --window do not apply).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95,
              show_default=True,
              help="MDA: confidence of having seen every successor of each interface.")
@click.option("--pcap", "pcap", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every probe and answer to this pcap file (tcpdump -r, Wireshark).")
@common_options
def measure_trace(hosts: tuple[str, ...], protocol: str, port: int | None, probes: int,
                  cycles: int, cycle_interval: float, max_ttl: int, window: int, pps: float,
                  timeout: float, deadline: float, method: str, mda: bool,
                  confidence: float, pcap: Path | None, output: Path | None, table: bool,
                  fail_on_error: bool, agent: str | None, region: str | None, concurrency: int,
                  family: Literal[4, 6] | None) -> None:
    """Paris traceroute (ICMP, UDP, TCP SYN): per-hop RTT and loss, every probe kept."""
    from ..measure.trace import TraceOptions, trace_many

    parsed = targets(hosts, require_port=False)
    try:
        opts = TraceOptions(protocol=protocol,  # type: ignore[arg-type]
                            port=port, probes_per_hop=probes, cycles=cycles,
                            cycle_interval_s=cycle_interval, max_ttl=max_ttl, window=window,
                            pps=pps, probe_timeout_s=timeout, deadline_s=deadline,
                            method=method,  # type: ignore[arg-type]
                            mda=mda, confidence=confidence)
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    records = run(trace_many(parsed, opts, origin=origin(agent, region), family=family,
                             concurrency=concurrency, pcap=pcap))
    emit(records, output, table, fail_on_error)


@measure.command("pmtu", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure pmtu 10.10.255.16 --table
  netvantage measure pmtu mx.example.net --protocol tcp --port 25
  netvantage measure pmtu 2001:db8::25 -6 --protocol udp --pcap pmtu.pcap
\b
Don't-Fragment probes of growing size (binary search in rounds): the path MTU, the
hop where a larger packet stops, and whether the ICMP "fragmentation needed" /
"packet too big" came back (none: a black hole). Needs root or CAP_NET_RAW.""")
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@click.option("-P", "--protocol", type=click.Choice(["icmp", "udp", "tcp"]), default="icmp",
              show_default=True)
@click.option("-p", "--port", type=click.IntRange(1, 65535),
              help="Destination port (UDP: 33434, TCP: 443 by default).")
@click.option("-W", "--timeout", type=click.FloatRange(0.01, 60), default=1.0,
              show_default=True,
              help="Seconds each round waits for answers (at least 4 RTTs).")
@click.option("--tries", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Copies of each size per round (a lost copy is not a too-big packet).")
@click.option("-m", "--max-ttl", type=click.IntRange(1, 255), default=30, show_default=True)
@click.option("--deadline", type=click.FloatRange(0.1, 3600), default=60.0,
              show_default=True, help="Seconds for each target.")
@click.option("--pcap", "pcap", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every probe and answer to this pcap file (tcpdump -r, Wireshark).")
@common_options
def measure_pmtu(hosts: tuple[str, ...], protocol: str, port: int | None, timeout: float,
                 tries: int, max_ttl: int, deadline: float, pcap: Path | None,
                 output: Path | None, table: bool, fail_on_error: bool, agent: str | None,
                 region: str | None, concurrency: int, family: Literal[4, 6] | None) -> None:
    """Path MTU: DF probes by binary search; the hop where it drops; PTB seen or not."""
    parsed = targets(hosts, require_port=False)
    from ..measure.pmtu import PmtuOptions, measure_pmtu

    if pcap is not None and len(parsed) > 1:
        die("--pcap takes one target", EXIT_USAGE)
    try:
        opts = PmtuOptions(protocol=protocol,  # type: ignore[arg-type]
                           port=port, timeout_s=timeout, tries=tries, max_ttl=max_ttl,
                           deadline_s=deadline, pcap=pcap)
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    records = [measure_pmtu(t.host, opts, origin=origin(agent, region), family=family)
               for t in parsed]
    emit(records, output, table, fail_on_error)


def _mail_command(protocol: Literal["smtp", "imap"]) -> Any:
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
    @common_options
    def command(endpoints: tuple[str, ...], mode: str | None, ca_file: Path | None,
                server_name: str | None, helo: str | None, username: str | None,
                password_env: str | None, timeout: float, phase_timeout: float,
                output: Path | None, table: bool, fail_on_error: bool, agent: str | None,
                region: str | None, concurrency: int, family: Literal[4, 6] | None) -> None:
        import os

        from ..measure.mail import MailOptions, mail_many

        parsed = targets(endpoints, require_port=False)
        password = None
        if username is not None:
            if not password_env or password_env not in os.environ:
                die("--user needs --password-env NAME of a set environment variable",
                    EXIT_USAGE)
            password = os.environ[password_env]
        try:
            opts = MailOptions(mode=mode, timeout_s=timeout,  # type: ignore[arg-type]
                               phase_timeout_s=phase_timeout, ca_file=ca_file,
                               server_name=server_name, helo=helo, username=username,
                               password=password)
        except ValueError as exc:
            die(str(exc), EXIT_USAGE)
        endpoints_: list[Target | str] = [*parsed]
        records = run(mail_many(protocol, endpoints_, opts, origin=origin(agent, region),
                                family=family, concurrency=concurrency))
        emit(records, output, table, fail_on_error)

    command.__doc__ = (f"{protocol.upper()} handshake, phase by phase: TLS version, cipher, "
                       "certificate and its verification.")
    return command


measure_smtp = _mail_command("smtp")
measure_imap = _mail_command("imap")


@measure.command("mailready", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage measure mailready 10.10.255.15 --domain mail.example --selector s1
  netvantage measure mailready mx.example.net --domain example.net --selector s1 \\
      --selector s2 --resolver 192.0.2.53 --zones zones.txt --table
\b
Checks: dnsbl, rhsbl, rdns, spf, dkim, dmarc, mta_sts, tls_rpt, mx, tls, port25;
each pass, warn, fail or unknown, with its evidence. A blocklist that times out
is unknown, never clean. Zones file: one 'ip ZONE' or 'domain ZONE' a line
(default: well-known public zones). Exit 1 with --fail-on-error if a check fails.""")
@click.argument("host", metavar="HOST_OR_IP")
@click.option("--domain", help="Mail domain whose SPF, DKIM, DMARC, MTA-STS, TLS-RPT and MX "
              "are read (also checked against domain blocklists).")
@click.option("--selector", "selectors", multiple=True, help="DKIM selector (repeatable).")
@click.option("--resolver", "resolvers", multiple=True,
              help="DNS resolver IP[:PORT] (repeatable) [the system's, /etc/resolv.conf].")
@click.option("--zones", "zones_file", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="File of blocklist zones ('ip ZONE' / 'domain ZONE' lines).")
@click.option("-W", "--timeout", type=click.FloatRange(0.1, 60), default=2.0,
              show_default=True, help="Seconds to wait for each DNS answer.")
@click.option("--budget", type=click.FloatRange(0.5, 600), default=20.0, show_default=True,
              help="Seconds for all DNS queries of the check together.")
@click.option("--smtp/--no-smtp", default=True, show_default=True,
              help="Probe port 25 (banner, EHLO, STARTTLS certificate).")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verify certificates against this CA file instead of the system's.")
@click.option("--helo", help="EHLO name for the SMTP probe [an address literal].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON record here instead of stdout.")
@click.option("--table", is_flag=True, help="Print one line per check instead of JSON.")
@click.option("--fail-on-error", is_flag=True, help="Exit 1 if any check fails.")
@click.option("--agent", default=None, help="Agent name in the record [host name].")
@click.option("--region", default=None, help="Region label in the record.")
def measure_mailready(host: str, domain: str | None, selectors: tuple[str, ...],
                      resolvers: tuple[str, ...], zones_file: Path | None, timeout: float,
                      budget: float, smtp: bool, ca_file: Path | None, helo: str | None,
                      output: Path | None, table: bool, fail_on_error: bool,
                      agent: str | None, region: str | None) -> None:
    """Will mail flow from this host on day one? Blocklists, rDNS, SPF/DKIM/DMARC, TLS, port 25."""
    import sys

    from ..measure.mailready import (
        DEFAULT_ZONES,
        MailReadyError,
        MailReadyOptions,
        mailready,
        read_zones,
    )
    from ..results import READY_CHECKS, encode_record

    try:
        zones = read_zones(zones_file) if zones_file else DEFAULT_ZONES
        opts = MailReadyOptions(domain=domain, selectors=selectors, resolvers=resolvers,
                                zones=zones, timeout_s=timeout, budget_s=budget, smtp=smtp,
                                ca_file=ca_file, helo=helo)
        record = run(mailready(host, opts, origin=origin(agent, region)))
    except (MailReadyError, ValueError) as exc:
        die(str(exc), EXIT_USAGE)
    if table:
        b = record.body
        lines = [f"mailready {record.target} ({record.address or '-'}): {b.verdict}"
                 + (f", failing: {', '.join(b.failing)}" if b.failing else "")]
        for name in READY_CHECKS:
            check = b.check(name)
            lines.append(f"  {name:<8} {check.status:<8} {check.summary}")
            lines += [f"           {e}" for e in check.evidence]
        text = "\n".join(lines) + "\n"
    else:
        text = encode_record(record).decode() + "\n"
    if output is not None:
        output.write_text(text)
    else:
        click.echo(text, nl=False)
    if fail_on_error and record.body.failing:
        sys.exit(1)
