"""Globalping measurements (the API's GET /v1/measurements/{id} objects) in, records out.

Round trip: ``import globalping`` -> ``schema --validate`` -> the analysis loader, with the
figures of tests/data/globalping/ computed by hand (see its SOURCE.txt).
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from netvantage.analysis.geo import locations
from netvantage.analysis.load import load
from netvantage.cli import EXIT_USAGE, cli
from netvantage.importers.globalping import convert_measurement, import_globalping
from netvantage.importers.io import ImportReport
from netvantage.results import PingRecord, TraceRecord, read_jsonl

DATA = Path(__file__).parent / "data" / "globalping"
FILES = [DATA / n for n in ("ping.json", "traceroute.json", "mtr.json", "dns.json")]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="netvantage", catch_exceptions=False)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Result]:
    tmp = tmp_path_factory.mktemp("gp")
    out, loc = tmp / "gp.jsonl", tmp / "gp.locations.csv"
    result = invoke("import", "globalping", *map(str, FILES), "--locations-out", str(loc),
                    "-o", str(out))
    return out, loc, result


def test_import_counts_every_refusal_by_reason(imported: tuple[Path, Path, Result]) -> None:
    out, _, result = imported
    assert result.exit_code == 0, result.output
    assert "imported 6 (3 ping, 3 trace), refused 3" in result.stderr
    for reason in ("refused 1: result failed (not finished)",
                   "refused 1: result in-progress (not finished)",
                   "refused 1: unsupported type 'dns'"):
        assert reason in result.stderr
    assert len(read_jsonl(out)) == 6


def test_schema_validates_the_output(imported: tuple[Path, Path, Result]) -> None:
    out, _, _ = imported
    checked = invoke("schema", "--validate", str(out))
    assert checked.exit_code == 0, checked.output


def test_ping_figures_by_hand(imported: tuple[Path, Path, Result]) -> None:
    out, _, _ = imported
    m = load(out).measurements
    ping = m[m["kind"] == "ping"].set_index("region")
    jnb = ping.loc["Johannesburg, ZA"]  # 182.4, 180.1, 185.9: all three answered
    assert (jnb["rtt_min_ms"], jnb["rtt_ms"], jnb["loss_ratio"]) == (180.1, 182.4, 0.0)
    fra = ping.loc["Frankfurt, DE"]  # 4.2, 3.9 of 3 sent
    assert (fra["rtt_min_ms"], fra["rtt_ms"]) == (3.9, pytest.approx(4.05))
    assert fra["loss_ratio"] == pytest.approx(1 / 3, abs=1e-6)
    nbo = ping.loc["Nairobi, KE"]  # stats only: 3 of 4, min 150.2, avg 155.0
    assert bool(nbo["summary"]) and nbo["rtt_stat"] == "mean"
    assert (nbo["rtt_min_ms"], nbo["rtt_ms"], nbo["loss_ratio"]) == (150.2, 155.0, 0.25)
    assert nbo["rtt_samples"] == 3
    assert set(ping["agent"]) == {"globalping-ZA-Johannesburg-AS37611",
                                  "globalping-DE-Frankfurt-AS64500",
                                  "globalping-KE-Nairobi-AS64501"}


def test_trace_and_mtr_figures_by_hand(imported: tuple[Path, Path, Result]) -> None:
    out, _, _ = imported
    traces = {r.agent + ":" + str(r.body.probes_per_hop): r for r in read_jsonl(out)
              if isinstance(r, TraceRecord)}
    jnb = traces["globalping-ZA-Johannesburg-AS37611:2"]
    assert len(jnb.body.hops) == 4 and jnb.body.dest_ttl == 4 and jnb.status == "ok"
    assert [h.loss_ratio for h in jnb.body.hops] == [0.0, 1.0, 0.5, 0.0]
    assert jnb.body.hops[3].responders[0].stats.median_ms == 180.2
    fra = traces["globalping-DE-Frankfurt-AS64500:2"]
    assert (fra.status, fra.body.stop_reason, fra.body.reached) == (
        "unreachable", "unreachable", False)
    mtr = traces["globalping-KE-Nairobi-AS64501:3"]
    hops = mtr.body.hops
    assert len(hops) == 5 and mtr.body.dest_ttl == 5  # the 6th hop repeats the destination
    assert [h.loss_ratio for h in hops] == [0.0, pytest.approx(1 / 3, abs=1e-6), 1.0, 0.0, 0.0]
    # hop 4: stats only: three answers with unknown RTTs, the source's figures kept
    edge = hops[3]
    assert [p.rtt_ms for p in edge.probes] == [None, None, None]
    assert edge.responders[0].replies == 3
    assert (edge.responders[0].stats.min_ms, edge.responders[0].stats.mean_ms,
            edge.responders[0].stats.median_ms) == (148.0, 150.0, None)
    assert hops[1].responders[0].annotation is not None
    assert hops[1].responders[0].annotation.asn == 64501
    m = load(out).measurements
    row = m[(m["kind"] == "trace") & (m["region"] == "Nairobi, KE")].iloc[0]
    assert row["rtt_ms"] == 160.0 and row["rtt_min_ms"] == 159.0


def test_locations_file_is_what_analyse_reads(imported: tuple[Path, Path, Result]) -> None:
    _, loc, _ = imported
    frame = locations(loc)
    assert set(frame["name"]) == {"Johannesburg, ZA", "Frankfurt, DE", "Nairobi, KE"}
    jnb = frame.set_index("name").loc["Johannesburg, ZA"]
    assert (jnb["lat"], jnb["lon"], jnb["country"], jnb["role"]) == (-26.2, 28.04, "ZA",
                                                                     "region")


def test_nothing_kept_exits_2_with_the_reason_per_file(tmp_path: Path) -> None:
    out = tmp_path / "dns.jsonl"
    result = invoke("import", "globalping", str(DATA / "dns.json"), "-o", str(out))
    assert result.exit_code == EXIT_USAGE
    assert "dns.json: every value refused (1 unsupported type 'dns')" in result.stderr
    assert not out.exists()


def test_compressed_and_repeated_input_gives_the_same_ids(tmp_path: Path) -> None:
    packed = tmp_path / "ping.json.download"  # gzip recognised by its bytes, not its name
    packed.write_bytes(gzip.compress((DATA / "ping.json").read_bytes()))
    report = ImportReport(source="globalping")
    plain = [r.id for r in import_globalping([DATA / "ping.json"], report)]
    again = ImportReport(source="globalping")
    got = [r.id for r in import_globalping([packed, DATA / "ping.json"], again)]
    assert got == plain and len(plain) == 3
    assert again.duplicates == 3


def test_json_lines_of_measurements_and_bad_lines(tmp_path: Path) -> None:
    lines = tmp_path / "many.jsonl"
    one = json.loads((DATA / "traceroute.json").read_text())
    lines.write_text(json.dumps(one) + "\n{not json\n" + (DATA / "mtr.json").read_text())
    report = ImportReport(source="globalping")
    records = list(import_globalping([lines], report))
    assert len(records) == 3
    assert report.refused["malformed JSON"] == 1
    assert report.refusals.examples["malformed JSON"][0].startswith(f"{lines}:2")


def test_ping_losses_are_never_zero_rtts() -> None:
    measurement = json.loads((DATA / "ping.json").read_text())
    records = [r for _, r in convert_measurement(measurement) if isinstance(r, PingRecord)]
    fra = next(r for r in records if r.region == "Frankfurt, DE")
    assert fra.body.rtts_ms == [4.2, 3.9, None] and fra.body.received == 2
    nbo = next(r for r in records if r.region == "Nairobi, KE")
    assert nbo.body.rtts_ms == [] and nbo.body.summary is not None
    assert (nbo.body.sent, nbo.body.received) == (4, 3)
    assert nbo.body.stats.median_ms is None  # not given, not guessed


def test_tcp_ping_becomes_tcp_connects() -> None:
    measurement = json.loads((DATA / "ping.json").read_text())
    measurement["measurementOptions"] = {"protocol": "TCP", "port": 443, "packets": 3}
    records = [r for _, r in convert_measurement(measurement) if not isinstance(r, Exception)]
    fra = next(r for r in records if r.region == "Frankfurt, DE")
    assert fra.kind == "tcp"
    frame = pd.DataFrame([{"ok": a.status == "ok", "ms": a.connect_ms}
                          for a in fra.body.attempts])  # type: ignore[union-attr]
    assert list(frame["ok"]) == [True, True, False]
    assert math.isnan(frame["ms"].iloc[2])
