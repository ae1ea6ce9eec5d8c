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
            for record, data, original in importer.records(files, keep_raw=keep_raw):
                out.write(data)
                if side is not None:
                    side.write(json.dumps({"id": record.id, "raw": original},
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
