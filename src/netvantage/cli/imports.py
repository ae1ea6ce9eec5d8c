"""``netvantage import SOURCE FILES... -o OUT``: other platforms' measurements as records.

Every import streams: records are written as they are converted, into a
temporary file beside OUT that replaces OUT only when the import kept
something.  What was read, kept and refused (counted by reason, with the first
examples) goes to stderr.  An import that keeps nothing leaves OUT alone and
exits 2 with the reason per file.  Source modules (``importers.atlas``, ...)
are imported when their command runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from ._common import CONTEXT, EXIT_USAGE, die

if TYPE_CHECKING:
    from ..importers.io import ImportReport

__all__ = ["StagedOutput", "finish_import", "import_", "staged"]


class StagedOutput:
    """A file written beside its destination and renamed over it only on :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fh: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed by staged()
        self.committed = False

    def write(self, line: bytes) -> None:
        self.fh.write(line)
        self.fh.write(b"\n")

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.committed = True


@contextlib.contextmanager
def staged(path: Path) -> Iterator[StagedOutput]:
    """A :class:`StagedOutput` that is removed unless committed (an error, nothing kept)."""
    try:
        out = StagedOutput(path)
    except OSError as exc:
        die(f"{path}: cannot write: {exc.strerror or exc}", EXIT_USAGE)
    try:
        yield out
    finally:
        if not out.committed:
            out.fh.close()
            with contextlib.suppress(FileNotFoundError):
                out.tmp.unlink()


def finish_import(report: ImportReport, source: str, *outputs: StagedOutput) -> None:
    """Print the report; commit ``outputs`` if something was kept, else exit 2 saying why."""
    click.echo(f"netvantage: {source} import: {report.summary()}", err=True)
    if report.kept_nothing:
        reasons = report.why_nothing() or ["no input file"]
        die(f"{source} import kept nothing; output not written:\n  " + "\n  ".join(reasons),
            EXIT_USAGE)
    for out in outputs:
        out.commit()
    click.echo(f"netvantage: wrote {report.kept} record(s) to {outputs[0].path}"
               + "".join(f" and {o.path}" for o in outputs[1:]), err=True)


@click.group("import", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage import atlas results.json.gz --probes probes.json -o atlas.jsonl
\b
Every import: FILE may be compressed (gzip, bzip2, xz: recognised by its first
bytes) or "-" for standard input; it is read as a stream.  Refusals are counted by
reason on stderr; an import that keeps nothing exits 2 with the reason per file.""")
def import_() -> None:
    """Turn other platforms' measurements into netvantage records."""


@import_.command("atlas", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage import atlas ping.json trace_*.json -o atlas.jsonl
  netvantage import atlas results.jsonl.bz2 --probes probes.csv --targets dcs.toml -o atlas.jsonl
  netvantage import atlas ping.json --geo-db GeoLite2-City.mmdb --locations-out places.csv \\
      -o atlas.jsonl
  netvantage import atlas trace.json --keep-raw -o atlas.jsonl   # + atlas.raw.jsonl
\b
FILE: RIPE Atlas ping or traceroute results (JSON Lines, a JSON array or one object);
other result types (dns, sslcert, ...) are refused and counted.
PROBES: Atlas probe metadata (API JSON, objects/results wrappers, archive dumps, GeoJSON,
or CSV with id, country_code, latitude, longitude); region = the probe's country code.
GEO-DB: a MaxMind-format city database (GeoLite2 City, DB-IP City Lite) placing probes
that the metadata does not place, from their address ("from"); see docs/importers.md.
TARGETS: CSV or TOML of name, address[, location]; a result whose dst_addr is listed gets
that name as target, others keep dst_name. Record ids are derived from msm_id, prb_id,
timestamp and type: importing the same results again gives the same ids.""")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--probes", "probe_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
              help="Atlas probe metadata, JSON or CSV (repeatable).")
@click.option("--targets", "targets_file", type=click.Path(exists=True, dir_okay=False,
                                                            path_type=Path),
              help="Data-centre list (CSV or TOML: name, address[, location]).")
@click.option("--geo-db", type=click.Path(path_type=Path),
              help="City database (MaxMind format) placing probes without metadata.")
@click.option("--region-by", type=click.Choice(["country", "probe"]), default="country",
              show_default=True,
              help="Region label: the probe's country, or the probe itself (atlas-probe-ID).")
@click.option("--locations-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the regions' places (for analyse --locations) to this CSV.")
@click.option("--keep-raw", is_flag=True,
              help="Also write each Atlas original to OUT.raw.jsonl ({id, raw} lines).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON Lines file.")
def import_atlas_cmd(files: tuple[Path, ...], probe_files: tuple[Path, ...],
                     targets_file: Path | None, geo_db: Path | None, region_by: str,
                     locations_out: Path | None, keep_raw: bool, output: Path) -> None:
    """Import RIPE Atlas ping and traceroute results as records (source "atlas")."""
    import json

    from ..importers.atlas import AtlasImporter, load_probes, load_targets, raw_path
    from ..importers.places import open_city_db, write_locations

    # Errors in the metadata (ImportFormatError, GeoDatabaseError) exit 2 with their
    # message, naming the file and line (see cli.Root).
    try:
        probes = load_probes(probe_files) if probe_files else None
        targets = load_targets(targets_file) if targets_file is not None else None
    except OSError as exc:
        die(str(exc), EXIT_USAGE)
    geo = open_city_db(geo_db) if geo_db is not None else None
    try:
        importer = AtlasImporter(probes=probes, targets=targets, geo=geo,
                                 region_by="probe" if region_by == "probe" else "country")
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(staged(output))
            side = stack.enter_context(staged(raw_path(output))) if keep_raw else None
            for rid, data, original in importer.lines(files, keep_raw=keep_raw):
                out.write(data)
                if side is not None:
                    side.write(json.dumps({"id": rid, "raw": original},
                                          separators=(",", ":"),
                                          ensure_ascii=False).encode())
            finish_import(importer.report, "atlas", *([out, side] if side else [out]))
    finally:
        if geo is not None:
            geo.close()
    if locations_out is not None:
        n = write_locations(importer.places(), locations_out)
        click.echo(f"netvantage: wrote {n} place(s) to {locations_out}", err=True)
        if n == 0:
            click.echo("netvantage: warning: no probe has a known place: give --probes "
                       "with coordinates or --geo-db", err=True)
    sys.stderr.flush()


@import_.command("globalping", context_settings=CONTEXT, epilog="""\b
Examples:
  curl -s https://api.globalping.io/v1/measurements/ID > m.json
  netvantage import globalping m.json --locations-out m.locations.csv -o gp.jsonl
  netvantage analyse gp.jsonl --locations m.locations.csv
\b
FILE: Globalping measurements as GET /v1/measurements/{id} returns them (one object,
pretty-printed or not, JSON Lines of them or an array); ping, traceroute and mtr.
Results that are in-progress, failed or offline, and other types (dns, http), are
refused and counted. Region = the probe's "City, CC"; its coordinates go to
--locations-out. A ping given only as stats becomes a summary record; an mtr hop
given only as stats keeps its counts and figures, with no invented RTTs.""")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--locations-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the probes' places (for analyse --locations) to this CSV.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON Lines file.")
def import_globalping_cmd(files: tuple[Path, ...], locations_out: Path | None,
                          output: Path) -> None:
    """Import Globalping ping, traceroute and mtr results as records (source "globalping")."""
    from ..importers.globalping import import_globalping
    from ..importers.io import ImportReport
    from ..importers.places import Place, write_locations
    from ..results import encode_record

    report = ImportReport(source="globalping")
    places: dict[str, Place] = {}
    with staged(output) as out:
        for record in import_globalping(files, report, places=places):
            out.write(encode_record(record))
        finish_import(report, "globalping", out)
    if locations_out is not None:
        n = write_locations(places.values(), locations_out)
        click.echo(f"netvantage: wrote {n} place(s) to {locations_out}", err=True)


@import_.command("scamper", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage import scamper trace.warts ping.warts.gz -o scamper.jsonl
  sc_warts2json trace.warts > trace.json; netvantage import scamper trace.json -o s.jsonl
  netvantage import scamper run.warts --agent jnb-pi --region "Johannesburg, ZA" -o s.jsonl
\b
FILE: scamper warts (read through sc_warts2json, from the scamper package) or the JSON
sc_warts2json printed; ping (ICMP echo) and trace objects. Other types (tracelb,
dealias, ...) and other ping methods are refused and counted. Agent = --agent, else
the hostname of scamper's cycle, else scamper-SRC; scamper records no place: give
--region. Unanswered trace probes are rebuilt from scamper's own counts.""")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--agent", help="Agent name of every record (default: the cycle's hostname).")
@click.option("--region", help="Region of every record (scamper records no place).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON Lines file.")
def import_scamper_cmd(files: tuple[Path, ...], agent: str | None, region: str | None,
                       output: Path) -> None:
    """Import scamper ping and trace results as records (source "scamper")."""
    from ..importers.io import ImportReport
    from ..importers.scamper import import_scamper
    from ..results import encode_record

    report = ImportReport(source="scamper")
    with staged(output) as out:
        for record in import_scamper(files, report, agent=agent, region=region):
            out.write(encode_record(record))
        finish_import(report, "scamper", out)


@import_.command("matrix", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage import matrix pings.csv --from source --to destination --rtt avg -o m.jsonl
  netvantage analyse m.jsonl --locations m.locations.csv
  netvantage import matrix regions.tsv --layout wide --stat p50 -o cloud.jsonl
  netvantage import matrix series.parquet --time ts --rtt rtt_us --stat median --unit us \\
      --from-lat src_lat --from-lon src_lon --to-lat dst_lat --to-lon dst_lon -o s.jsonl
\b
FILE: CSV or TSV (delimiter sniffed, or --delimiter), or Parquet; compressed or "-".
Long layout: one row per (from, to[, time]); wide: rows = from, columns = to (detected
when there is no destination column and the cells are numbers; said on stderr).
The value: --rtt COL with --stat (min, mean/avg, median/p50, max, pNN); without --stat
the column's name says it (avg, min, p90, ...) or it is the median. Without --rtt, every
column named after a statistic (min, avg, max, mdev, ...) goes into one summary.
Places: IATA codes, "City, CC" (or --from-country/--to-country columns), ISO country
codes, or coordinate columns. An unresolved name stops the import (exit 2) with the
list of every one. Gaps (empty, -, NA) are skipped and counted; values <= 0 or not
numbers are refused and counted. One summary record per (from, to[, time]): region =
from, target = to; the places go to OUT.locations.csv (destinations as "dc", sources
as "region"), the file analyse --locations reads.""")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--layout", type=click.Choice(["auto", "long", "wide"]), default="auto",
              show_default=True, help="Long (from, to, value) or wide (a matrix).")
@click.option("--delimiter", help="Field delimiter (',', ';', '|', 'tab') [sniffed].")
@click.option("--from", "from_col", metavar="COL", help="Source column [from, source, src, ...]"
              " (wide: the row-name column) [first column].")
@click.option("--to", "to_col", metavar="COL",
              help="Destination column [to, destination, dst, target, ...].")
@click.option("--rtt", "rtt_col", metavar="COL", help="The value column.")
@click.option("--stat", metavar="STAT",
              help="What the value is: min, mean (avg), median (p50), max, pNN "
                   "[from the column name, else median].")
@click.option("--unit", type=click.Choice(["ms", "s", "us"]),
              help="Unit of the values [a column name's _ms/_s/_us suffix, else ms].")
@click.option("--time", "time_col", metavar="COL",
              help="Time column (ISO 8601, naive = UTC, or Unix seconds): one record per "
                   "(from, to, time) [time, timestamp, date, ...].")
@click.option("--at", metavar="TIME",
              help="started_at of every record without a time column (ISO 8601 with zone) "
                   "[the file's modification time].")
@click.option("--from-lat", metavar="COL", help="Source latitude column.")
@click.option("--from-lon", metavar="COL", help="Source longitude column.")
@click.option("--to-lat", metavar="COL", help="Destination latitude column.")
@click.option("--to-lon", metavar="COL", help="Destination longitude column.")
@click.option("--from-country", metavar="COL", help="Source country column (names are cities).")
@click.option("--to-country", metavar="COL",
              help="Destination country column (names are cities).")
@click.option("--places", type=click.Choice(["auto", "iata", "city", "country"]),
              default="auto", show_default=True,
              help="What the names are (auto: City, CC / 3 letters = IATA / 2 = country).")
@click.option("--ip-version", type=click.Choice(["4", "6"]), default="4", show_default=True,
              help="IP version written in the records (a matrix does not say).")
@click.option("--locations-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where the places go [OUT.locations.csv].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSON Lines file.")
def import_matrix_cmd(files: tuple[Path, ...], layout: str, delimiter: str | None,
                      from_col: str | None, to_col: str | None, rtt_col: str | None,
                      stat: str | None, unit: str | None, time_col: str | None,
                      at: str | None,
                      from_lat: str | None, from_lon: str | None, to_lat: str | None,
                      to_lon: str | None, from_country: str | None, to_country: str | None,
                      places: str, ip_version: str, locations_out: Path | None,
                      output: Path) -> None:
    """Import latency matrices and series (CSV, TSV, Parquet) as summary records."""
    from datetime import datetime

    from ..importers.io import ImportReport
    from ..importers.matrix import MatrixImport, MatrixSpec, locations_path, matrix_lines
    from ..importers.places import write_locations

    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            die(f"--at {at!r}: not an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)", EXIT_USAGE)
    if delimiter is not None and delimiter.lower() in ("tab", "\\t"):
        delimiter = "\t"
    # A bad option or file (ImportFormatError, UnresolvedPlacesError) exits 2 with its
    # message (see cli.Root); the staged output is then removed.
    spec = MatrixSpec(
        layout="wide" if layout == "wide" else "long" if layout == "long" else "auto",
        delimiter=delimiter, from_col=from_col, to_col=to_col, rtt_col=rtt_col, stat=stat,
        unit=unit, time_col=time_col, from_lat=from_lat, from_lon=from_lon, to_lat=to_lat,
        to_lon=to_lon, from_country=from_country, to_country=to_country,
        places="iata" if places == "iata" else "city" if places == "city"
        else "country" if places == "country" else "auto",
        at=when, ip_version=6 if ip_version == "6" else 4)
    result = MatrixImport(report=ImportReport(source="matrix"))
    with staged(output) as out:
        try:
            for line in matrix_lines(files, spec, result):
                out.write(line)
        finally:  # what was inferred helps most when the import fails
            for said in result.said:
                click.echo(f"netvantage: matrix: {said}", err=True)
        finish_import(result.report, "matrix", out)
    target = locations_out if locations_out is not None else locations_path(output)
    n = write_locations(result.location_places(), target)
    click.echo(f"netvantage: wrote {n} place(s) to {target}", err=True)
