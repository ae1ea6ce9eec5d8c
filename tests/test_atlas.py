"""RIPE Atlas import: real results (tests/data/atlas, see SOURCE.txt) and hand-written corners."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import invoke_cli
from netvantage.importers.atlas import (
    AtlasFormatError,
    atlas_id,
    convert_result,
    import_atlas,
    load_probes,
    load_targets,
    raw_path,
    write_import,
)
from netvantage.results import PingRecord, TraceRecord, read_jsonl

DATA = Path(__file__).parent / "data" / "atlas"
PING = DATA / "tmp_ping.json"
TRACES = sorted(DATA.glob("trace_*.json"))
MUMBAI = "ap-south-1.ec2.cloudharmony.net"


def native(path: Path) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def probes():
    return load_probes([DATA / "probes.json"])


@pytest.fixture(scope="module")
def targets():
    return load_targets(DATA / "datacenters.csv")


@pytest.fixture(scope="module")
def imported(probes, targets):
    return import_atlas([PING, *TRACES], probes=probes, targets=targets)


# ----------------------------------------------------------------------------- real files


def test_real_files_import_completely(imported):
    rep = imported.report
    n_traces = sum(len(native(p)) for p in TRACES)
    assert rep.read == 473 + n_traces
    assert rep.imported == rep.read and rep.refused_total == 0 and rep.duplicates == 0
    assert rep.by_kind == {"ping": 473, "trace": n_traces}
    assert len({r.id for r in imported.records}) == rep.imported
    assert all(r.source == "atlas" for r in imported.records)
    # nothing disagreed with Atlas's own counts and extremes
    assert not [n for n in rep.notes if "differs" in n or "fewer" in n or "more" in n]


def test_real_pings_match_atlas_fields(imported, probes):
    pings = {r.id: r for r in imported.records if isinstance(r, PingRecord)}
    for raw in native(PING):
        r = pings[atlas_id("ping", raw["msm_id"], raw["prb_id"], raw["timestamp"])]
        assert r.agent == f"atlas-probe-{raw['prb_id']}"
        assert r.target == MUMBAI and r.address == "52.66.78.70"
        assert r.started_at == datetime.fromtimestamp(raw["timestamp"], UTC)
        assert r.region == (probes[raw["prb_id"]].country if raw["prb_id"] in probes else None)
        b = r.body
        assert (b.sent, b.received, b.duplicates) == (raw["sent"], raw["rcvd"], raw["dup"])
        assert b.ip_version == 4 and b.payload_bytes == raw["size"]
        assert b.rtts_ms == [None if "rtt" not in e else round(e["rtt"], 3)
                             for e in raw["result"]]
        if raw["rcvd"]:
            assert r.status == "ok"
            assert b.stats.min_ms == pytest.approx(raw["min"], abs=1e-3)
            assert b.stats.max_ms == pytest.approx(raw["max"], abs=1e-3)
            assert b.stats.mean_ms == pytest.approx(raw["avg"], abs=2e-3)
        else:
            assert r.status == "timeout" and b.stats.min_ms is None and raw["min"] == -1


def test_real_ping_partial_loss(imported):
    r = next(r for r in imported.records if isinstance(r, PingRecord)
             and r.agent == "atlas-probe-33013" and r.body.rtts_ms[0] is None
             and r.body.received == 2)
    assert r.body.rtts_ms == [None, 172.821, 276.497]
    assert r.body.loss_ratio == pytest.approx(1 / 3, abs=1e-6)


def test_probe_metadata_region_and_coordinates(imported, probes):
    p = probes[27411]
    assert p.country and p.lat is not None and p.lon is not None
    rows = {place.name: place for place in imported.probe_locations()}
    assert (rows["atlas-probe-27411"].lat, rows["atlas-probe-27411"].lon) == (p.lat, p.lon)
    assert {r.region for r in imported.records if r.agent == "atlas-probe-27411"} == {p.country}


def test_real_traces_match_native(imported):
    traces = {r.id: r for r in imported.records if isinstance(r, TraceRecord)}
    compared = 0
    for path in TRACES:
        for raw in native(path):
            r = traces[atlas_id("trace", raw["msm_id"], raw["prb_id"], raw["timestamp"])]
            b = r.body
            assert b.protocol == "icmp" and b.ip_version == 4
            assert b.flow == {"paris_id": raw["paris_id"]}
            assert r.duration_ms == (raw["endtime"] - raw["timestamp"]) * 1000
            assert len(b.hops) == len(raw["result"])  # the TTL-255 round is the last row
            # Late replies count too: each gives its address to the packet it answers.
            replies = sum(1 for h in raw["result"] for x in h["result"]
                          if "from" in x and not x.get("dup"))
            assert sum(len(h.probes) - sum(p.address is None for p in h.probes)
                       for h in b.hops) == replies
            reached = any(x.get("from") == raw["dst_addr"]
                          for h in raw["result"] for x in h["result"])
            assert b.reached == reached and (r.status == "ok") == reached
            if reached:
                assert b.dest_ttl == len(b.hops)  # in these files the destination is last
                assert b.hops[-1].probes[0].icmp_type == 0  # echo reply
                dest = [x["rtt"] for x in raw["result"][-1]["result"]
                        if x.get("from") == raw["dst_addr"] and "rtt" in x and not x.get("dup")]
                assert b.hops[-1].responders[0].stats.min_ms == min(dest)
                assert statistics.fmean(
                    p.rtt_ms for p in b.hops[-1].probes if p.rtt_ms is not None
                ) == pytest.approx(statistics.fmean(dest), abs=2e-3)
            compared += 1
    assert compared == 24


def test_real_trace_duplicates_late_and_ttl255(imported):
    traces = [r for r in imported.records if isinstance(r, TraceRecord)]
    dup = next(r for r in traces if r.agent == "atlas-probe-1004736")
    hop5 = dup.body.hops[4]
    assert len(hop5.probes) == 3 and hop5.responders[0].replies == 3  # 3 dups not counted
    assert [p.rtt_ms for p in hop5.probes] == [5.629, 5.531, 5.59]
    late = next(r for r in traces if r.agent == "atlas-probe-53411"
                and r.target == "sa-east-1.ec2.cloudharmony.net")
    # At TTL 24, {"late": 46, "from": "41.78.188.210"} answers the 46th packet before it:
    # 23 hops x 3 packets = 69 sent, 69 - 46 = packet 23 (0-based) = TTL 8's third, a "*".
    hop24 = late.body.hops[23]
    assert len(hop24.probes) == 3 and hop24.loss_ratio == 1.0
    hop8 = late.body.hops[7]
    assert [p.address for p in hop8.probes] == [None, None, "41.78.188.210"]
    assert hop8.probes[2].rtt_ms is None and hop8.probes[2].icmp_type == 11
    jump = next(r for r in traces if r.agent == "atlas-probe-54617"
                and r.target == "af-south-1.ec2.cloudharmony.net")
    assert jump.body.max_ttl == 255 and jump.body.reached
    assert jump.body.dest_ttl == len(jump.body.hops) == 13
    note = "traceroute: final TTL-255 round stored as the hop after the last probed TTL"
    assert imported.report.notes[note] > 0
    assert imported.report.notes["traceroute: duplicate replies (skipped)"] == 3
    kept = "traceroute: late replies kept (address given to the packet they answer, no RTT)"
    assert imported.report.notes[kept] == 1


# ----------------------------------------------------------------------------- corners

BASE = {"fw": 5080, "msm_id": 1001, "prb_id": 6001, "timestamp": 1700000000, "from": "192.0.2.9",
        "src_addr": "192.0.2.9", "af": 4, "size": 48}


def ping(result: Any, **over: Any) -> dict[str, Any]:
    return {**BASE, "type": "ping", "proto": "ICMP", "dst_addr": "198.51.100.7",
            "dst_name": "dc.example", "result": result, **over}


def trace(hops: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    return {**BASE, "type": "traceroute", "proto": "ICMP", "paris_id": 3,
            "dst_addr": "198.51.100.7", "dst_name": "dc.example", "endtime": 1700000004,
            "result": hops, **over}


def reply(addr: str, rtt: float, **extra: Any) -> dict[str, Any]:
    return {"from": addr, "rtt": rtt, "ttl": 60, "size": 28, **extra}


STAR = {"x": "*"}


def test_ping_lost_error_dup_late():
    raw = ping([{"rtt": 10.0}, {"rtt": 10.5, "dup": 1}, STAR, {"late": 1},
                {"error": "sendto failed: Network is unreachable"}, {"rtt": "12.25"}],
               sent=4, rcvd=2, dup=1, min=10.0, max=12.25, avg=11.125)
    r = convert_result(raw)
    assert isinstance(r, PingRecord)
    assert r.body.rtts_ms == [10.0, None, None, 12.25]
    assert (r.body.sent, r.body.received, r.body.duplicates) == (4, 2, 1)
    assert r.status == "ok" and r.error is None and r.target == "dc.example"


def test_ping_only_errors_keeps_the_error():
    r = convert_result(ping([{"error": "no route"}, {"error": "no route"}], sent=2, rcvd=0))
    assert r.status == "error" and r.error is not None and "no route" in r.error
    assert r.body.rtts_ms == [None, None]  # type: ignore[union-attr]


def test_ping_string_result_old_firmware_and_ipv6():
    raw = ping('[{"rtt": 1.5}, {"x": "*"}, {"rtt": 2.5}]', af=6, fw=4400,
               dst_addr="2001:db8::7", sent=3, rcvd=2)
    r = convert_result(raw)
    assert isinstance(r, PingRecord)
    assert r.body.ip_version == 6 and r.body.rtts_ms == [1.5, None, 2.5]
    assert r.address == "2001:db8::7"


def test_traceroute_err_codes_map_to_unreachable():
    hops = [{"hop": 1, "result": [reply("192.0.2.1", 1.0)] * 3},
            {"hop": 2, "result": [reply("203.0.113.1", 5.0, err="N"),
                                  reply("203.0.113.1", 5.1, err="A"), reply("203.0.113.1", 5.2,
                                                                            err=9)]}]
    r = convert_result(trace(hops))
    assert isinstance(r, TraceRecord)
    assert r.status == "unreachable" and r.body.stop_reason == "unreachable"
    assert not r.body.reached
    assert [(p.icmp_type, p.icmp_code) for p in r.body.hops[1].probes] == [(3, 0), (3, 13),
                                                                           (3, 9)]
    assert r.body.hops[0].probes[0].icmp_type == 11  # time exceeded
    hops6 = [{"hop": 1, "result": [reply("2001:db8:1::1", 1.0, err="H"),
                                   reply("2001:db8:1::1", 1.0, err="A"),
                                   reply("2001:db8:1::1", 1.0, err="p")]}]
    r6 = convert_result(trace(hops6, af=6, dst_addr="2001:db8::7"))
    assert [(p.icmp_type, p.icmp_code) for p in r6.body.hops[0].probes] == [  # type: ignore
        (1, 3), (1, 1), (1, 4)]
    with pytest.raises(AtlasFormatError, match="unknown traceroute err code"):
        convert_result(trace([{"hop": 1, "result": [reply("192.0.2.1", 1.0, err="Q")]}]))


def test_udp_ipv6_traceroute_with_stars_and_icmpext():
    ext = {"version": 2, "rfc4884": 0,
           "obj": [{"class": 1, "type": 1, "mpls": [{"label": 1, "exp": 0, "s": 1, "ttl": 1}]}]}
    hops = [{"hop": 1, "result": [reply("2001:db8:1::1", 0.5), STAR, reply("2001:db8:1::1", 0.6)]},
            {"hop": 2, "result": [STAR, STAR, STAR]},
            {"hop": 3, "result": [reply("2001:db8:2::1", 9.0, icmpext=ext)] * 3},
            {"hop": 4, "result": [reply("2001:DB8::7", 20.0, err="p"), STAR,
                                  reply("2001:db8::7", 21.0, err="p")]}]
    r = convert_result(trace(hops, af=6, proto="UDP", dst_addr="2001:db8::7", paris_id=16))
    assert isinstance(r, TraceRecord)
    b = r.body
    assert b.protocol == "udp" and b.ip_version == 6 and b.flow == {"paris_id": 16}
    assert b.reached and b.dest_ttl == 4 and r.status == "ok"
    assert b.hops[1].loss_ratio == 1.0 and b.hops[1].responders == []
    assert b.hops[0].probes[1].address is None and b.hops[0].loss_ratio == pytest.approx(1 / 3,
                                                                                       abs=1e-6)
    assert (b.hops[2].probes[0].icmp_type, b.hops[2].probes[0].icmp_code) == (3, 0)
    assert (b.hops[3].probes[0].icmp_type, b.hops[3].probes[0].icmp_code) == (1, 4)
    assert r.duration_ms == 4000.0


def test_tcp_traceroute_flags_from_destination():
    hops = [{"hop": 1, "result": [reply("192.0.2.1", 1.0)]},
            {"hop": 2, "result": [reply("198.51.100.7", 30.0, flags="SA")]}]
    r = convert_result(trace(hops, proto="TCP", dst_port=443))
    assert isinstance(r, TraceRecord)
    p = r.body.hops[1].probes[0]
    assert r.body.protocol == "tcp" and r.body.port == 443 and r.body.reached
    assert p.tcp_flags == "SA" and p.icmp_type is None


def test_traceroute_hop_level_error_and_late_dup():
    hops = [{"hop": 1, "result": [reply("192.0.2.1", 1.0), reply("192.0.2.1", 1.1, dup=True),
                                  {"late": 2, "from": "192.0.2.1", "ttl": 60, "size": 28},
                                  STAR]},
            {"hop": 2, "error": "sendto failed: Network is unreachable"}]
    r = convert_result(trace(hops))
    assert isinstance(r, TraceRecord)
    assert len(r.body.hops[0].probes) == 2 and r.body.hops[0].responders[0].replies == 1
    assert r.body.hops[1].probes == [] and r.body.hops[1].loss_ratio is None
    assert r.status == "error" and r.error is not None and "Network is unreachable" in r.error
    assert r.body.probes_per_hop == 2


def test_trace_ttl255_round_without_answer_is_a_gap():
    hops = [{"hop": t, "result": [STAR] * 3} for t in range(1, 6)]
    hops.append({"hop": 255, "result": [STAR] * 3})
    r = convert_result(trace(hops))
    assert isinstance(r, TraceRecord)
    assert len(r.body.hops) == 6 and r.body.stop_reason == "gap" and r.status == "timeout"


def test_malformed_unknown_and_truncated_are_counted_not_fatal(tmp_path):
    lines = [json.dumps(ping([{"rtt": 1.0}])),
             json.dumps({**BASE, "type": "dns", "result": {"abuf": "AAAA"}}),
             json.dumps(ping([{"rtt": -3}], timestamp=1700000001)),
             json.dumps({"type": "ping", "msm_id": 1}),
             "[1, 2",
             json.dumps(trace([{"hop": 1, "result": [reply("198.51.100.7", 4.0)]}]))[:60]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    res = import_atlas([path])
    rep = res.report
    assert (rep.read, rep.imported, rep.refused_total) == (6, 1, 5)
    assert rep.refused["unsupported type 'dns'"] == 1
    assert rep.refused["malformed JSON"] == 2
    assert rep.refused["bad rtt value"] == 1
    assert rep.refused["missing or bad field 'prb_id'"] == 1
    assert "dns" in rep.summary() and "malformed JSON" in rep.summary()


def test_truncated_json_array_keeps_complete_elements(tmp_path):
    text = json.dumps([ping([{"rtt": 1.0}]), ping([{"rtt": 2.0}], timestamp=1700000100)],
                      indent=2)
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) - 40])
    rep = import_atlas([path]).report
    assert (rep.imported, rep.refused["malformed JSON"]) == (1, 1)


def test_single_object_file_and_targets_toml(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(ping([{"rtt": 1.0}])))
    (tmp_path / "dcs.toml").write_text(
        '[[target]]\nname = "ams-dc"\naddress = "198.51.100.7"\nlocation = "Amsterdam"\n')
    targets = load_targets(tmp_path / "dcs.toml")
    res = import_atlas([tmp_path / "one.json"], targets=targets)
    assert [r.target for r in res.records] == ["ams-dc"]


def test_ids_are_deterministic_and_duplicates_skipped(probes, targets, tmp_path):
    a = import_atlas([PING, TRACES[0]], probes=probes, targets=targets)
    b = import_atlas([PING, TRACES[0]], probes=probes, targets=targets)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert [r.id for r in a.records] != []
    twice = import_atlas([PING, PING])
    assert twice.report.imported == 473 and twice.report.duplicates == 473


def test_keep_raw_side_file(tmp_path):
    out = tmp_path / "atlas.jsonl"
    res = import_atlas([TRACES[0]], keep_raw=True)
    n, side = write_import(res, out)
    assert side == raw_path(out) == tmp_path / "atlas.raw.jsonl"
    rows = [json.loads(line) for line in side.read_text().splitlines()]
    assert len(rows) == n == len(native(TRACES[0]))
    assert [row["id"] for row in rows] == [r.id for r in read_jsonl(out)]
    assert rows[0]["raw"] == native(TRACES[0])[0]


# ----------------------------------------------------------------------------- CLI


def test_cli_import_atlas_end_to_end(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**BASE, "type": "dns"}) + "\n{broken\n")
    out = tmp_path / "atlas.jsonl"
    proc = invoke_cli("import", "atlas", str(PING), *map(str, TRACES), str(bad),
                   "--probes", str(DATA / "probes.json"),
                   "--targets", str(DATA / "datacenters.csv"), "--keep-raw", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    n_traces = sum(len(native(p)) for p in TRACES)
    total = 473 + n_traces
    assert f"read {total + 2}, imported {total}" in proc.stderr
    assert "refused 2" in proc.stderr and "unsupported type 'dns'" in proc.stderr
    assert (tmp_path / "atlas.raw.jsonl").exists()
    records = read_jsonl(out)
    assert len(records) == total
    assert {r.source for r in records} == {"atlas"}
    check = invoke_cli("schema", "--validate", str(out))
    assert check.returncode == 0, check.stderr
    assert f"{total} valid record(s)" in check.stdout
    again = tmp_path / "again.jsonl"
    assert invoke_cli("import", "atlas", str(PING), *map(str, TRACES), "-o",
                   str(again)).returncode == 0
    assert [r.id for r in read_jsonl(again)] == [r.id for r in records]


def test_trace_that_runs_out_of_hops_is_max_ttl():
    hops = [{"hop": t, "result": [reply(f"192.0.2.{t}", float(t))] * 3} for t in range(1, 30)]
    hops += [{"hop": t, "result": [STAR] * 3} for t in range(30, 33)]
    r = convert_result(trace(hops))
    assert isinstance(r, TraceRecord)
    assert (len(r.body.hops), r.body.stop_reason, r.status) == (32, "max_ttl", "timeout")
