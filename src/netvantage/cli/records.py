"""Commands over record files: ``annotate`` and ``schema`` (imports: :mod:`.imports`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._common import CONTEXT, EXIT_USAGE, die

__all__ = ["annotate_cmd", "schema_cmd"]


@click.command("annotate", context_settings=CONTEXT, epilog="""\b
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
    from ..annotate import GeoDatabases, annotate_records
    from ..results import read_jsonl, write_jsonl

    if asn_db is None and city_db is None and not rdns:
        die("give --asn-db, --city-db or --rdns (or several)", EXIT_USAGE)
    # A SchemaError or GeoDatabaseError exits 2 with its message (see cli.Root).
    records = read_jsonl(sys.stdin.buffer if str(source) == "-" else source)
    with GeoDatabases(asn_db, city_db, rdns_timeout_s=rdns_timeout) as dbs:
        annotated = annotate_records(records, dbs, rdns=rdns)
    write_jsonl(annotated, output if output is not None else sys.stdout.buffer)
    traces = sum(r.kind == "trace" for r in annotated)
    click.echo(f"netvantage: annotated {traces} trace(s) of {len(annotated)} record(s)",
               err=True)


@click.command("schema", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage schema > result.schema.json
  netvantage schema --validate results.jsonl""")
@click.option("--validate", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Check JSON Lines FILE(s) against the schema instead (repeatable).")
def schema_cmd(files: tuple[str, ...]) -> None:
    """Print the JSON Schema of a result record, or validate JSON Lines files."""
    from ..errors import SchemaError
    from ..results import json_schema_text, read_jsonl

    if not files:
        click.echo(json_schema_text(), nl=False)
        return
    failed = False
    for name in files:
        try:
            records = list(read_jsonl(name))
        except SchemaError as exc:
            click.echo(f"netvantage: error: {exc}", err=True)
            failed = True
        else:
            click.echo(f"{name}: {len(records)} valid record(s)")
    if failed:
        sys.exit(EXIT_USAGE)
