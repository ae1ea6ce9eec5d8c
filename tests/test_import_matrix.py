"""Latency matrices and series in (CSV, TSV, Parquet; long and wide), summary records out.

Fixtures: tests/data/matrix/ (written for these tests, see its SOURCE.txt).  Round trip:
``import matrix`` -> ``schema --validate`` -> ``analyse --locations`` ranks the candidates,
with the scores computed by hand from the cost model.
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner, Result

from netvantage.analysis.geo import locations
from netvantage.analysis.rank import CostModel
from netvantage.cli import EXIT_USAGE, cli
from netvantage.importers.io import ImportFormatError, ImportReport
from netvantage.importers.matrix import (
    MatrixImport,
    MatrixSpec,
    UnresolvedPlacesError,
    import_matrix,
    matrix_id,
    matrix_lines,
    parse_stat,
    stat_of_column,
)
from netvantage.results import PingRecord, decode_record, encode_record, read_jsonl

DATA = Path(__file__).parent / "data" / "matrix"
AT = "2026-11-01T00:00:00Z"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="netvantage", catch_exceptions=False)


def pings(path: Path) -> list[PingRecord]:
    out = []
    for r in read_jsonl(path):
        assert isinstance(r, PingRecord)
        out.append(r)
    return out


def by_pair(records: list[PingRecord]) -> dict[tuple[str | None, str], PingRecord]:
    return {(r.region, r.target): r for r in records}


def place_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


# --------------------------------------------------------------------------- the issue's example


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("ic-matrix") / "m.jsonl"
    result = invoke("import", "matrix", str(DATA / "pings.csv"), "--from", "source", "--to",
                    "destination", "--rtt", "avg", "--at", AT, "-o", str(out))
    return out, result


def test_issue_example_imports_means_as_summaries(example: tuple[Path, Result]) -> None:
    out, result = example
    assert result.exit_code == 0, result.output
    assert "value column 'avg' read as the mean (from its name)" in result.stderr
    assert "imported 4 (4 ping), refused 0" in result.stderr
    records = by_pair(pings(out))
    assert set(records) == {("LUN", "AMS"), ("LUN", "JNB"), ("LHR", "AMS"), ("LHR", "JNB")}
    r = records["LUN", "AMS"]
    assert r.source == "matrix" and r.agent == "matrix:LUN" and r.status == "ok"
    assert r.started_at == datetime(2026, 11, 1, tzinfo=UTC)
    assert r.body.summary is not None
    assert r.body.summary.mean_ms == 190.5
    assert r.body.summary.median_ms is None and r.body.summary.min_ms is None
    assert r.body.summary.samples is None
    # A matrix says nothing of counts: unknown, not 0 % loss.
    assert r.body.sent is None and r.body.received is None and r.body.loss_ratio is None
    assert r.body.rtts_ms == []
    assert r.id == matrix_id("LUN", "AMS", r.started_at)


def test_locations_file_beside_output(example: tuple[Path, Result]) -> None:
    out, _ = example
    loc = out.with_name("m.locations.csv")
    rows = place_rows(loc)
    assert {n: r["role"] for n, r in rows.items()} == {
        "AMS": "dc", "JNB": "dc", "LUN": "region", "LHR": "region"}
    assert rows["JNB"]["country"] == "ZA" and rows["JNB"]["continent"] == "AF"
    assert abs(float(rows["LUN"]["lat"]) - -15.33) < 0.1  # Lusaka's airport
    frame = locations(loc)  # what analyse --locations reads: no problem raised
    assert len(frame) == 4


def test_round_trip_validate_and_rank(example: tuple[Path, Result]) -> None:
    out, _ = example
    checked = invoke("schema", "--validate", str(out))
    assert checked.exit_code == 0, checked.output
    assert "4 valid record(s)" in checked.output
    analysed = invoke("analyse", str(out), "--locations", str(out.with_name("m.locations.csv")),
                      "--format", "json")
    assert analysed.exit_code == 0, analysed.output
    report = json.loads(analysed.stdout)
    # By hand: one figure per (region, dc) is both its p50 and its p95; loss is unknown
    # (not counted) and nothing failed, so cost = (w_p50 + w_p95) x RTT, and the score is
    # the mean over the two regions (equal weights).
    cm = CostModel()
    w = cm.rtt_p50_ms + cm.rtt_p95_ms
    jnb = 0.5 * (w * 21.5 + w * 165.0)  # LUN, LHR -> JNB: 139.875
    ams = 0.5 * (w * 190.5 + w * 8.2)  # 149.025
    scores = {row["target"]: row["score"] for row in report["ranking"]}
    assert scores == pytest.approx({"JNB": jnb, "AMS": ams})
    assert report["winner"] == "JNB"
    assert [row["target"] for row in sorted(report["ranking"], key=lambda r: r["rank"])] == [
        "JNB", "AMS"]


# --------------------------------------------------------------------------- layouts and cells


def test_long_statistic_columns_gaps_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    result = invoke("import", "matrix", str(DATA / "long_stats.csv"), "--at", AT,
                    "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "statistics from the column names: min=min, avg=mean, max=max, mdev=mdev" in (
        result.stderr)
    err = result.stderr
    assert "read 7, imported 3 (3 ping), refused 3" in err
    assert "refused 1: value not a number" in err and "long_stats.csv:6" in err
    assert "refused 1: value not above 0" in err
    assert "refused 1: statistics contradict each other" in err
    assert "note 1: gap cells skipped" in err
    records = by_pair(pings(out))
    assert set(records) == {("LUN", "AMS"), ("LUN", "JNB"), ("LHR", "AMS")}
    s = records["LUN", "AMS"].body.summary
    assert s is not None
    assert (s.min_ms, s.mean_ms, s.max_ms, s.mdev_ms) == (180.2, 190.5, 230.9, 6.1)
    assert records["LUN", "AMS"].body.stats.min_ms == 180.2
    # The fast encoding is exactly what the checked build encodes.
    for line in out.read_bytes().splitlines():
        assert encode_record(decode_record(line)) == line


def test_wide_tsv_detected_and_said(tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    result = invoke("import", "matrix", str(DATA / "wide.tsv"), "--at", AT, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "delimiter tab" in result.stderr
    assert "layout wide" in result.stderr
    assert "cells read as the median (default; give --stat)" in result.stderr
    assert "imported 7" in result.stderr and "note 2: gap cells skipped" in result.stderr
    records = by_pair(pings(out))
    assert len(records) == 7
    assert records["LUN", "LHR"].body.summary is not None
    assert records["LUN", "LHR"].body.summary.median_ms == 177.0
    assert records["JNB", "LHR"].body.stats.median_ms == 150.0
    assert ("LHR", "LHR") not in records and ("JNB", "JNB") not in records
    roles = {n: r["role"] for n, r in place_rows(tmp_path / "w.locations.csv").items()}
    # JNB and LHR are sources and destinations: listed once, as candidates.
    assert roles == {"AMS": "dc", "JNB": "dc", "LHR": "dc", "LUN": "region"}


def test_wide_with_a_percentile(tmp_path: Path) -> None:
    result = import_matrix([DATA / "wide.tsv"], MatrixSpec(layout="wide", stat="P90",
                           at=datetime(2026, 11, 1, tzinfo=UTC)), tmp_path / "p.jsonl")
    assert result.report.kept == 7
    r = by_pair(pings(tmp_path / "p.jsonl"))["LUN", "AMS"]
    assert r.body.summary is not None and r.body.summary.percentiles_ms == {"p90": 190.5}
    assert r.body.summary.median_ms is None


def test_city_and_country_columns_semicolons(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    result = invoke("import", "matrix", str(DATA / "cities.csv"), "--from", "city",
                    "--from-country", "country", "--to", "dc", "--rtt", "p90", "--at", AT,
                    "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "delimiter ';'" in result.stderr
    records = by_pair(pings(out))
    assert set(records) == {("Lusaka", "Amsterdam, NL"), ("Lusaka", "Johannesburg, ZA"),
                            ("São Paulo", "Amsterdam, NL")}
    s = records["São Paulo", "Amsterdam, NL"].body.summary
    assert s is not None and s.percentiles_ms == {"p90": 198.7}
    rows = place_rows(tmp_path / "c.locations.csv")
    assert rows["São Paulo"]["country"] == "BR" and rows["São Paulo"]["role"] == "region"
    assert rows["Amsterdam, NL"]["country"] == "NL" and rows["Amsterdam, NL"]["role"] == "dc"
    assert abs(float(rows["Lusaka"]["lon"]) - 28.45) < 0.2


def test_time_series_in_seconds_with_country_codes(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    result = invoke("import", "matrix", str(DATA / "series.csv"), "--unit", "s", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "time column 'time'" in result.stderr
    assert "refused 1: bad time" in result.stderr and "series.csv:6" in result.stderr
    records = pings(out)
    assert [(r.target, r.started_at, r.body.stats.median_ms) for r in records] == [
        ("NL", datetime(2026, 11, 1, 0, tzinfo=UTC), 190.5),
        ("NL", datetime(2026, 11, 1, 1, tzinfo=UTC), 192.1),
        ("NL", datetime(2026, 11, 1, 2, tzinfo=UTC), 189.9),  # naive: read as UTC
        ("ZA", datetime(2025, 11, 1, tzinfo=UTC), 21.5),  # Unix seconds
    ]
    assert len({r.id for r in records}) == 4  # one record per (from, to, time)
    rows = place_rows(tmp_path / "t.locations.csv")
    assert {rows[n]["country"] for n in ("ZM", "NL", "ZA")} == {"ZM", "NL", "ZA"}


def test_coordinate_columns_and_microseconds(tmp_path: Path) -> None:
    out = tmp_path / "xy.jsonl"
    result = invoke("import", "matrix", str(DATA / "coords.csv"), "--from", "client",
                    "--to", "server", "--rtt", "rtt_us", "--stat", "min", "--unit", "us",
                    "--from-lat", "client_lat", "--from-lon", "client_lon",
                    "--to-lat", "server_lat", "--to-lon", "server_lon", "--at", AT,
                    "-o", str(out))
    assert result.exit_code == 0, result.output
    records = by_pair(pings(out))
    assert records["pi-lusaka-1", "dc-ams"].body.stats.min_ms == 190.5
    assert records["pi-lusaka-1", "dc-jnb"].body.stats.min_ms == 21.5
    rows = place_rows(tmp_path / "xy.locations.csv")
    assert (float(rows["dc-ams"]["lat"]), float(rows["dc-ams"]["lon"])) == (52.37, 4.89)
    assert rows["pi-lusaka-1"]["role"] == "region"


def test_unresolved_places_stop_the_import_with_the_full_list(tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    result = invoke("import", "matrix", str(DATA / "unresolved.csv"), "--rtt", "avg",
                    "-o", str(out))
    assert result.exit_code == EXIT_USAGE
    err = result.stderr
    assert "3 place name(s) could not be resolved" in err
    for name in ("Atlantis (from, ", "XQZ (to, ", "Gotham City (from, "):
        assert err.count(name) == 1, err
    assert "unresolved.csv:3" in err  # where Atlantis was first met
    assert not out.exists() and not (tmp_path / "u.locations.csv").exists()
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_unresolved_places_error_lists_names() -> None:
    result = MatrixImport(report=ImportReport())
    with pytest.raises(UnresolvedPlacesError) as info:
        list(matrix_lines([DATA / "unresolved.csv"], MatrixSpec(rtt_col="avg"), result))
    assert [n.split(" (")[0] for n in info.value.names] == ["Atlantis", "XQZ", "Gotham City"]


def test_parquet_long_with_times_and_nulls(tmp_path: Path) -> None:
    table = pa.table({
        "src": ["LUN", "LUN", "LUN", "LHR"],
        "dst": ["AMS", "AMS", "JNB", "AMS"],
        "ts": [datetime(2026, 11, 1, 0, tzinfo=UTC), datetime(2026, 11, 1, 1, tzinfo=UTC),
               datetime(2026, 11, 1, 0, tzinfo=UTC), datetime(2026, 11, 1, 0, tzinfo=UTC)],
        "p50": [190.5, None, 21.5, -3.0],
    })
    src = tmp_path / "m.parquet"
    pq.write_table(table, src)
    out = tmp_path / "pq.jsonl"
    result = invoke("import", "matrix", str(src), "--from", "src", "--to", "dst", "--time", "ts",
                    "--rtt", "p50", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "note 1: gap cells skipped" in result.stderr
    assert "refused 1: value not above 0" in result.stderr and "m.parquet row 4" in (
        result.stderr)
    records = by_pair(pings(out))
    assert records["LUN", "AMS"].body.stats.median_ms == 190.5
    assert records["LUN", "JNB"].started_at == datetime(2026, 11, 1, tzinfo=UTC)
    assert len(records) == 2


def test_compressed_input_and_same_ids_twice(tmp_path: Path) -> None:
    gz = tmp_path / "pings.csv"  # gzip under a plain name: recognised by its bytes
    gz.write_bytes(gzip.compress((DATA / "pings.csv").read_bytes()))
    spec = MatrixSpec(rtt_col="avg", at=datetime(2026, 11, 1, tzinfo=UTC))
    import_matrix([gz], spec, tmp_path / "a.jsonl")
    import_matrix([DATA / "pings.csv"], spec, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_second_row_for_a_pair_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "dup.csv"
    src.write_text("from,to,min\nLUN,AMS,180\nLUN,AMS,181\n")
    result = import_matrix([src], MatrixSpec(at=datetime(2026, 11, 1, tzinfo=UTC)),
                           tmp_path / "d.jsonl")
    assert result.report.kept == 1
    assert result.report.refused == {"duplicate (from, to, time)": 1}


def test_keeping_nothing_exits_2_with_the_reason(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("from,to,avg\nLUN,AMS,-\nLUN,JNB,0\n")
    out = tmp_path / "bad.jsonl"
    result = invoke("import", "matrix", str(src), "-o", str(out))
    assert result.exit_code == EXIT_USAGE
    assert "kept nothing" in result.stderr and "value not above 0" in result.stderr
    assert not out.exists()


def test_undecidable_layout_says_which_option(tmp_path: Path) -> None:
    src = tmp_path / "x.csv"
    src.write_text("a,b,c\nLUN,AMS,190\n")
    result = invoke("import", "matrix", str(src), "-o", str(tmp_path / "x.jsonl"))
    assert result.exit_code == EXIT_USAGE
    assert "--from and --to" in result.stderr and "--layout wide" in result.stderr
    with pytest.raises(ImportFormatError, match="no column 'avg'"):
        import_matrix([src], MatrixSpec(from_col="a", to_col="b", rtt_col="avg"),
                      tmp_path / "y.jsonl")


def test_spread_is_not_an_rtt(tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text("from,to,mdev\nLUN,AMS,3\n")
    with pytest.raises(ImportFormatError, match="spread"):
        import_matrix([src], MatrixSpec(rtt_col="mdev"), tmp_path / "s.jsonl")


def test_statistic_names() -> None:
    assert parse_stat("avg") == "mean" and parse_stat("P50") == "median"
    assert parse_stat("p99.90") == "p99.9" and parse_stat("p90.0") == "p90"
    with pytest.raises(ValueError, match="unknown statistic"):
        parse_stat("p100")
    assert stat_of_column("rtt_p95_ms") == "p95"
    assert stat_of_column("Avg") == "mean"
    assert stat_of_column("latency") is None
    assert stat_of_column("destination") is None


def test_many_statistics_encode_as_the_checked_build(tmp_path: Path) -> None:
    src = tmp_path / "many.csv"
    src.write_text("from,to,min,median,avg,p99,p90,max,stdev\n"
                   "LUN,AMS,180,190,191.25,229,205.5,230,0\n"
                   "LHR,AMS,7.9,8.1,8.2,-,9.1,9.9,0.4\n")
    import_matrix([src], MatrixSpec(at=datetime(2026, 11, 1, tzinfo=UTC)), tmp_path / "m.jsonl")
    lines = (tmp_path / "m.jsonl").read_bytes().splitlines()
    assert len(lines) == 2
    for line in lines:
        record = decode_record(line)
        assert encode_record(record) == line
    first = decode_record(lines[0])
    assert isinstance(first, PingRecord) and first.body.summary is not None
    assert first.body.summary.percentiles_ms == {"p99": 229.0, "p90": 205.5}
    assert first.body.summary.stdev_ms == 0.0


def test_ids_are_uuid5_and_long_names_refused(tmp_path: Path) -> None:
    import uuid

    from netvantage.importers.matrix import MATRIX_NAMESPACE

    when = datetime(2026, 11, 1, tzinfo=UTC)
    assert matrix_id("São Paulo", "AMS", when) == str(
        uuid.uuid5(MATRIX_NAMESPACE, f"matrix:São Paulo:AMS:{when.isoformat()}"))
    src = tmp_path / "long.csv"
    src.write_text(f"from,to,avg\nLUN,AMS,190\n{'L' * 249},AMS,12\n")
    result = import_matrix([src], MatrixSpec(at=when), tmp_path / "l.jsonl")
    assert result.report.kept == 1 and result.report.refused == {"place name too long": 1}


def test_wide_parquet_compressed_and_csv_from_stdin(tmp_path: Path) -> None:
    import bz2

    table = pa.table({"from": ["LUN", "LHR"], "AMS": [190.5, 8.2], "JNB": [21.5, None]})
    plain = tmp_path / "w.parquet"
    pq.write_table(table, plain)
    packed = tmp_path / "w.parquet.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    when = datetime(2026, 11, 1, tzinfo=UTC)
    result = import_matrix([packed], MatrixSpec(at=when, stat="min"), tmp_path / "w.jsonl")
    assert result.report.kept == 3 and result.gaps[str(packed)] == 1
    assert any("layout wide" in said for said in result.said)
    r = by_pair(pings(tmp_path / "w.jsonl"))["LHR", "AMS"]
    assert r.body.stats.min_ms == 8.2
    out = tmp_path / "stdin.jsonl"
    piped = CliRunner().invoke(cli, ["import", "matrix", "-", "--rtt", "avg", "--at", AT,
                                     "-o", str(out)],
                               input=(DATA / "pings.csv").read_text(), prog_name="netvantage",
                               catch_exceptions=False)
    assert piped.exit_code == 0, piped.output
    assert len(pings(out)) == 4


def test_the_text_says_what_its_rtt_p50_is_over_for_means(example: tuple[Path, Result]) -> None:
    """A matrix of means: the per-region "RTT P50" is the pair's one mean, and says so."""
    out, _ = example
    analysed = invoke("analyse", str(out), "--locations", str(out.with_name("m.locations.csv")))
    assert analysed.exit_code == 0, analysed.output
    table = analysed.stdout.split("Per region")[1].split("Flags (")[0]
    assert "summary records give a mean, not a median" in table
    own = invoke("analyse", str(DATA.parent.parent.parent / "data" / "campaigns"
                              / "lab-sample.jsonl"))
    assert "not a median" not in own.stdout  # samples of our own: medians
