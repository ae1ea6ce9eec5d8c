"""``netvantage collector serve|add-agent|agents`` and ``netvantage export``.

The store's two sides: agents' records coming in, files for analysis going out.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ._common import CONTEXT, store_option

__all__ = ["collector", "export_cmd"]


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector add-agent lusaka-1 --store results.db
  netvantage collector serve --store results.db --host 0.0.0.0 \\
      --tls-cert collector.pem --tls-key collector.key
  netvantage collector serve --store postgresql://netvantage@db.example/results
  netvantage collector agents --store results.db""")
def collector() -> None:
    """The ingest service agents upload to, and its agent tokens."""


@collector.command("serve", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector serve --store results.db
  netvantage collector serve --store results.db --host 0.0.0.0 --port 8750 \\
      --tls-cert /etc/netvantage/cert.pem --tls-key /etc/netvantage/key.pem
  netvantage collector serve --store 'postgresql://netvantage@/results?host=/run/postgresql'
\b
With a postgresql:// store, several collectors (behind one address) may share one
database: the database keeps each (agent, id) once. The tables are created, or
migrated, when the collector starts.
\b
API: POST /v1/records (Authorization: Bearer TOKEN, Content-Type: application/x-ndjson,
one record per line) answers {"accepted", "duplicates", "ids"}; GET /v1/health;
GET /metrics (Prometheus: records by agent, latency, store size; docs/monitoring.md).
A refused batch (401, 403, 400, 422, 413, 415) stores nothing and says why, line by line.
A connection over --max-connections is answered 503; a request whose headers or body
arrive too slowly (--header-timeout, --body-timeout) is answered 408 and closed.
SIGTERM or Ctrl-C stops it gracefully: batches in flight finish, then the store closes.""")
@store_option
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
              help="SQLite only. full: every acknowledged batch is on disk (survives power "
                   "loss); normal: faster, a power loss may lose the last acknowledged batches.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the port (decoding uses one CPU per process).")
@click.option("--max-connections", type=click.IntRange(1, 1_000_000), default=1000,
              show_default=True,
              help="Open connections per process at most; one more is answered 503 and closed.")
@click.option("--header-timeout", type=click.FloatRange(0.1, 3600), default=10.0,
              show_default=True,
              help="Seconds a request's line and headers may take to arrive (then 408).")
@click.option("--body-timeout", type=click.FloatRange(0.1, 3600), default=60.0,
              show_default=True,
              help="Seconds a request's body may take to arrive after its headers (then 408).")
@click.option("--keep-alive", type=click.IntRange(1, 3600), default=30, show_default=True,
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-header-kb", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Request line and headers buffered at most while incomplete, in KiB "
                   "(more: 400).")
@click.option("--backlog", type=click.IntRange(1, 65535), default=1024, show_default=True,
              help="Connections the kernel queues before they are accepted.")
def collector_serve(store_path: str, host: str, port: int, tls_cert: Path | None,
                    tls_key: Path | None, max_body_mb: float, synchronous: str,
                    workers: int, max_connections: int, header_timeout: float,
                    body_timeout: float, keep_alive: int, max_header_kb: int,
                    backlog: int) -> None:
    """Receive agents' records over HTTP(S) and store them."""
    from ..collector.serve import Limits, serve

    limits = Limits(max_connections=max_connections, header_timeout_s=header_timeout,
                    body_timeout_s=body_timeout, keep_alive_s=keep_alive,
                    max_header_bytes=max_header_kb * 1024, backlog=backlog)
    serve(store_path, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
          max_body_bytes=int(max_body_mb * 1024 * 1024),
          synchronous="normal" if synchronous == "normal" else "full", workers=workers,
          limits=limits, announce=lambda line: click.echo(line))


@collector.command("add-agent", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector add-agent lusaka-1 --store results.db
  netvantage collector add-agent lusaka-1 --store results.db --rotate
\b
The token is printed once, on stdout; the store keeps only its SHA-256.
Give it to the agent (e.g. in its plan's token file).""")
@click.argument("name")
@store_option
@click.option("--rotate", is_flag=True,
              help="Replace the token of an existing agent (the old one stops working).")
def collector_add_agent(name: str, store_path: str, rotate: bool) -> None:
    """Create an agent and print its new upload token."""
    from ..collector.store import open_store

    with open_store(store_path) as store:
        token = store.add_agent(name, rotate=rotate)
    click.echo(token)
    click.echo(f"netvantage: {'new token for' if rotate else 'created'} agent {name!r} in "
               f"{store.location}; this token is shown only now", err=True)


@collector.command("agents", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage collector agents --store results.db
  netvantage collector agents --store postgresql://netvantage@db.example/results --json
\b
Columns: last seen (the last batch a collector took from it, ago), records stored,
backlog (records in the agent's spool when it last uploaded) and the age of the oldest,
clock skew (the agent's clock minus the collector's, from the agent's send time),
lag (receive time minus the start of the newest record of the last batch), duplicates
and conflicts over its uploads. '-': not known (never uploaded, or an agent too old to
report it). --json prints the same as one JSON object per agent, times in UTC.""")
@store_option
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line instead of a table.")
def collector_agents(store_path: str, as_json: bool) -> None:
    """Every agent: last seen, records, backlog, clock skew (fleet health)."""
    from ..collector.store import open_store

    with open_store(store_path, create=False) as store:
        health = store.agent_health()
    if as_json:
        for h in health:
            click.echo(json.dumps(h.as_dict()))
        return
    now = datetime.now(UTC)
    header = ("agent", "last seen", "records", "backlog", "oldest unsent", "clock skew",
              "lag", "duplicates", "conflicts")
    table = [header] + [(
        h.agent + ("" if h.has_token else " (no token)"),
        "-" if h.last_seen_at is None else _ago(now, h.last_seen_at),
        str(h.records), _or_dash(h.backlog), _seconds(h.oldest_unsent_s),
        _seconds(h.clock_skew_s, signed=True), _seconds(h.record_lag_s),
        str(h.duplicates), str(h.conflicts)) for h in health]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                             ).rstrip())
    if not health:
        click.echo("netvantage: no agents yet (add one with 'netvantage collector add-agent')",
                   err=True)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _seconds(value: float | None, *, signed: bool = False) -> str:
    """A duration for a table: ``-``, ``+0.4 s``, ``12 min``, ``3.0 h``, ``2.1 d``."""
    if value is None:
        return "-"
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    size = abs(value)
    if size < 60:
        return f"{sign}{size:.1f} s"
    if size < 3600:
        return f"{sign}{size / 60:.0f} min"
    if size < 86400:
        return f"{sign}{size / 3600:.1f} h"
    return f"{sign}{size / 86400:.1f} d"


def _ago(now: datetime, when: str) -> str:
    return _seconds((now - datetime.fromisoformat(when)).total_seconds()) + " ago"


@click.command("export", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage export --store results.db --format parquet -o dataset/
  netvantage export --store results.db --format jsonl --kind ping -o ping.jsonl
  netvantage export --store results.db --format csv -o - | head
  netvantage export --store postgresql://netvantage@db.example/results --format parquet -o ds/
\b
Parquet: a dataset partitioned by kind and date (dataset/kind=ping/date=2026-11-28/
part-0.parquet), envelope columns flattened, the body as a JSON string column.
JSON Lines: the records as the schema writes them. CSV: envelope columns + body JSON.
The store may be in use by a running collector: the export reads one snapshot.""")
@store_option
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl", "csv"]),
              required=True, help="Output format.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, allow_dash=True),
              help="Output file (jsonl, csv; '-' for stdout) or directory (parquet, must not "
                   "exist yet).")
@click.option("--kind", type=click.Choice(["ping", "tcp", "trace", "smtp", "imap", "pmtu",
                                           "mailready"]),
              help="Only records of this kind.")
def export_cmd(store_path: str, fmt: str, output: Path, kind: str | None) -> None:
    """Write the store's records as Parquet, JSON Lines or CSV."""
    from ..collector.export import export
    from ..collector.store import open_store

    target: Path | Any = sys.stdout.buffer if str(output) == "-" else output
    with open_store(store_path, create=False) as store:
        n = export(store, fmt, target, kind=kind)  # type: ignore[arg-type]
    click.echo(f"netvantage: exported {n} record(s) as {fmt} to {output}", err=True)
