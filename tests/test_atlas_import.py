"""`netvantage import atlas` on small files written for the tests (tests/data/atlas/made/).

The figures asserted are computed by hand from those files (see their SOURCE.txt).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import Any

import pytest

from cells import row
from conftest import run_cli
from netvantage.importers.atlas import convert_result, import_atlas, load_probes
from netvantage.importers.io import ImportFormatError, iter_json, open_text
from netvantage.results import PingRecord, TraceRecord, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MADE = ROOT / "tests" / "data" / "atlas" / "made"
CITY_DB = ROOT / "tests" / "data" / "maxmind" / "GeoIP2-City-Test.mmdb"


def _pings() -> dict[tuple[str, str], PingRecord]:
    res = import_atlas([MADE / "pings.jsonl"], probes=load_probes([MADE / "probes.csv"]))
    out = {}
    for r in res.records:
        assert isinstance(r, PingRecord)
        out[(r.agent, r.target)] = r
    return out


# ----------------------------------------------------------------------------- round trip


def test_round_trip_import_validate_analyse(tmp_path):
    out = tmp_path / "atlas.jsonl"
    places = tmp_path / "atlas.locations.csv"
    proc = run_cli("import", "atlas", str(MADE / "pings.jsonl"), "--probes",
                   str(MADE / "probes_api.json"), "--locations-out", str(places),
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "read 4, imported 4 (4 ping), refused 0" in proc.stderr
    check = run_cli("schema", "--validate", str(out))
    assert check.returncode == 0 and "4 valid record(s)" in check.stdout, check.stderr

    from netvantage.analysis.geo import locations
    from netvantage.analysis.load import load

    m = load(str(out)).measurements.set_index(["agent", "target", "summary"]).sort_index()
    # probe 7001 (GB) -> dc-a: RTTs 10, 12, 14 -> median 12, min 10, no loss
    a = row(m, ("atlas-probe-7001", "dc-a.example", False))
    assert (a["region"], a["rtt_ms"], a["rtt_min_ms"], a["loss_ratio"]) == ("GB", 12.0, 10.0,
                                                                               0.0)
    # probe 7002 (SE) -> dc-a: 20, lost, 30 -> median 25, loss 1/3
    b = row(m, ("atlas-probe-7002", "dc-a.example", False))
    assert (b["rtt_ms"], b["rtt_min_ms"]) == (25.0, 20.0)
    assert b["loss_ratio"] == pytest.approx(1 / 3, abs=1e-6)
    # probe 7001 -> dc-b: lost, (late reply), 40, lost: 1 of 3 answered in time
    c = row(m, ("atlas-probe-7001", "dc-b.example", False))
    assert (c["rtt_ms"], c["received"], c["sent"]) == (40.0, 1, 3)
    # firmware 1 summary: sent 3, rcvd 3, min 19.9, avg 20.1 -> a summary row
    d = row(m, ("atlas-probe-7002", "dc-b.example", True))
    assert (d["sent"], d["received"], d["rtt_min_ms"], d["loss_ratio"]) == (3, 3, 19.9, 0.0)
    assert d["rtt_samples"] == 3
    # one place per region: each country has one probe, at its coordinates
    loc = locations(places).set_index("name")
    assert loc.loc["GB", "lat"] == 51.5142 and loc.loc["SE", "lon"] == 15.6167
    assert set(loc["role"]) == {"region"}


def test_summary_only_ping_is_a_summary_record():
    r = _pings()[("atlas-probe-7002", "dc-b.example")]
    assert r.body.summary is not None and r.body.rtts_ms == []
    s = r.body.summary
    assert (s.samples, s.min_ms, s.mean_ms, s.max_ms) == (3, 19.9, 20.1, 20.3)
    assert (r.body.sent, r.body.received, r.body.loss_ratio) == (3, 3, 0.0)
    assert r.status == "ok" and r.address == "198.51.100.20" and r.region == "SE"


def test_summary_only_ping_without_replies_is_a_timeout_not_figures():
    raw = {"fw": 1, "type": "ping", "msm_id": 1, "prb_id": 2, "timestamp": 1332938930,
           "addr": "192.0.2.1", "name": "x.example", "sent": 3, "rcvd": 0,
           "min": -1, "avg": -1, "max": -1}
    r = convert_result(raw)
    assert isinstance(r, PingRecord) and r.body.summary is not None
    assert r.body.summary.min_ms is None and r.body.loss_ratio == 1.0
    assert r.status == "timeout"


def test_ping_late_reply_is_counted_and_said():
    notes: dict[str, int] = {}
    res = import_atlas([MADE / "pings.jsonl"])
    notes = dict(res.report.notes)
    late = [r for r in res.records if r.agent == "atlas-probe-7001"
            and r.target == "dc-b.example"]
    assert isinstance(late[0], PingRecord) and late[0].body.rtts_ms == [None, 40.0, None]
    assert notes["ping: late replies (answered after the timeout: counted, no RTT)"] == 1


# ----------------------------------------------------------------------------- traceroute


def test_edst_mismatch_is_refused_and_counted():
    res = import_atlas([MADE / "edst.json"])
    (r,) = res.records
    assert isinstance(r, TraceRecord)
    assert not r.body.reached and r.body.stop_reason == "gap"  # not "ended" at 192.5.5.241
    assert all(p.address != "192.5.5.241" for h in r.body.hops for p in h.probes)
    assert [p.address for p in r.body.hops[2].probes] == [None, None, None]
    reason = "traceroute reply for another destination (edst is not dst_addr)"
    assert res.report.refused[reason] == 1
    assert "edst 192.5.5.241" in res.report.summary()


def test_trace_whose_every_reply_is_late_is_reached():
    res = import_atlas([MADE / "late.json"])
    (r,) = res.records
    assert isinstance(r, TraceRecord)
    # hop 2's two late replies answer hop 1's two packets, hop 3's answer hop 2's
    assert [p.address for p in r.body.hops[0].probes] == ["10.0.0.1", "10.0.0.1"]
    assert [p.address for p in r.body.hops[1].probes] == ["203.0.113.90"] * 2
    assert all(p.rtt_ms is None for h in r.body.hops for p in h.probes)
    assert r.body.reached and r.body.dest_ttl == 2 and r.status == "ok"
    assert r.body.hops[1].probes[0].icmp_type == 0  # the destination's echo reply


# ----------------------------------------------------------------------------- refusals


def test_dns_results_exit_non_zero_with_the_reason(tmp_path):
    out = tmp_path / "dns.jsonl"
    proc = run_cli("import", "atlas", str(MADE / "dns.jsonl"), "-o", str(out))
    assert proc.returncode == 2
    assert "kept nothing" in proc.stderr
    assert f"{MADE / 'dns.jsonl'}: every value refused (2 unsupported type 'dns')" in proc.stderr
    assert not out.exists()


def test_unreadable_files_say_why_per_file(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes(b'{"type": "ping", "x": "\xe9"}\n')
    proc = run_cli("import", "atlas", str(empty), str(binary), "-o", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2
    assert f"{empty}: no results in it" in proc.stderr
    assert f"{binary}:1: not UTF-8 text" in proc.stderr


def test_some_kept_exits_zero_and_counts_the_rest(tmp_path):
    out = tmp_path / "o.jsonl"
    proc = run_cli("import", "atlas", str(MADE / "dns.jsonl"), str(MADE / "edst.json"),
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "refused 2: unsupported type 'dns'" in proc.stderr
    assert len(read_jsonl(out)) == 1


# ----------------------------------------------------------------------------- input


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_input_by_magic_bytes_and_stdin(tmp_path, compress):
    packed = tmp_path / "results.json"  # the name does not say it is compressed
    packed.write_bytes(compress((MADE / "pings.jsonl").read_bytes()))
    out = tmp_path / "o.jsonl"
    proc = run_cli("import", "atlas", str(packed), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(out)) == 4
    import subprocess

    from conftest import NETVANTAGE

    piped = subprocess.run([NETVANTAGE, "import", "atlas", "-", "-o", str(out)],
                           input=packed.read_bytes(), capture_output=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert len(read_jsonl(out)) == 4


def test_truncated_gzip_keeps_what_came_before_and_names_the_file(tmp_path):
    lines = (MADE / "pings.jsonl").read_bytes() * 1
    packed = tmp_path / "cut.gz"
    packed.write_bytes(gzip.compress(lines)[:-12])
    res = import_atlas([packed])
    assert res.report.files[str(packed)].error is not None
    assert "corrupt or truncated compressed file" in res.report.summary()


def test_json_array_is_read_incrementally(tmp_path, monkeypatch):
    import netvantage.importers.io as nio

    monkeypatch.setattr(nio, "BLOCK", 64)  # many refills inside one element
    values = [json.loads(line) for line in (MADE / "pings.jsonl").read_text().splitlines()]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(values, indent=2))
    with open_text(path) as text:
        got = list(iter_json(text))
    assert [g.value for g in got] == values
    text_ = json.dumps(values, indent=2)
    # the second element's "{" is on the line before its first key
    assert got[1].line == text_[:text_.index('"fw": 5080', 40)].count("\n")


# ----------------------------------------------------------------------------- probes


@pytest.mark.parametrize("name", ["probes_api.json", "probes.csv", "probes_latlong.jsonl"])
def test_every_probe_metadata_form(name):
    probes = load_probes([MADE / name])
    assert (probes[7001].country, probes[7001].lat, probes[7001].lon) == ("GB", 51.5142, -0.0931)
    assert (probes[7002].country, probes[7002].lat, probes[7002].lon) == ("SE", 58.4167, 15.6167)


def test_probe_archive_dump_compressed_and_geojson(tmp_path):
    dump = tmp_path / "20240101.json.bz2"
    dump.write_bytes(bz2.compress(json.dumps({"meta": {"total_count": 1}, "objects": [
        {"id": 9, "country_code": "za", "latitude": -26.1, "longitude": 28.2}]}).encode()))
    geo = tmp_path / "probes.geojson"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [28.2, -26.1]},
         "properties": {"id": 10, "country_code": "ZA"}}]}))
    probes = load_probes([dump, geo])
    assert (probes[9].country, probes[9].lat) == ("ZA", -26.1)
    assert (probes[10].lat, probes[10].lon) == (-26.1, 28.2)


def test_unreadable_probe_metadata_is_an_error_with_its_line(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("id,country_code,latitude,longitude\n1,GB,51,0\n2,SE,north,15\n")
    with pytest.raises(ImportFormatError, match=r"p\.csv:3: .*coordinates"):
        load_probes([bad])
    nothing = tmp_path / "n.json"
    nothing.write_text('{"count": 0, "results": []}')
    with pytest.raises(ImportFormatError, match="no probe found"):
        load_probes([nothing])
    proc = run_cli("import", "atlas", str(MADE / "pings.jsonl"), "--probes", str(bad),
                   "-o", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "p.csv:3" in proc.stderr


def test_geo_db_places_probes_without_metadata(tmp_path):
    out = tmp_path / "o.jsonl"
    places = tmp_path / "places.csv"
    proc = run_cli("import", "atlas", str(MADE / "pings.jsonl"), "--geo-db", str(CITY_DB),
                   "--region-by", "probe", "--locations-out", str(places), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    regions = {r.agent: r.region for r in read_jsonl(out)}
    assert regions["atlas-probe-7001"] == "atlas-probe-7001"
    rows = {line.split(",")[0]: line.split(",") for line in places.read_text().splitlines()}
    # MaxMind's test database: 81.2.69.160 = London 51.5142/-0.0931, 89.160.20.115 =
    # Linköping 58.4167/15.6167
    assert rows["atlas-probe-7001"][2:5] == ["51.5142", "-0.0931", "GB"]
    assert rows["atlas-probe-7002"][2:5] == ["58.4167", "15.6167", "SE"]
    res = import_atlas([MADE / "pings.jsonl"], geo=_reader())
    assert {r.region for r in res.records} == {"GB", "SE"}


def _reader() -> Any:
    from netvantage.importers.places import open_city_db

    return open_city_db(CITY_DB)
