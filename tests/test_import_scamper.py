"""scamper warts and sc_warts2json JSON in, records out.

The fixtures in tests/data/scamper/ are real scamper runs on loopback and in network
namespaces (see its SOURCE.txt and make.sh); the figures below are read off their JSON.
A test that converts warts needs sc_warts2json: it skips locally without it and fails
under CI=true (make test installs scamper).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netns import missing
from netvantage.analysis.load import load
from netvantage.cli import EXIT_USAGE, cli
from netvantage.importers.io import ImportReport
from netvantage.importers.scamper import import_scamper
from netvantage.results import PingRecord, TraceRecord, encode_record, read_jsonl

DATA = Path(__file__).parent / "data" / "scamper"
NAMES = ("loopback", "loopback-trace", "paths", "paths-ping")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="netvantage", catch_exceptions=False)


def need_tool() -> None:
    if shutil.which("sc_warts2json") is None:
        missing("needs sc_warts2json (Debian package scamper)")


def by_target(records: list[PingRecord | TraceRecord]) -> dict[str, PingRecord | TraceRecord]:
    return {f"{r.kind}:{r.target}:{r.started_at.isoformat()}": r for r in records}


def test_round_trip_from_json(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    result = invoke("import", "scamper", *(str(DATA / f"{n}.json") for n in NAMES),
                    "--region", "lab", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "imported 7 (3 ping, 4 trace), refused 0" in result.stderr
    assert invoke("schema", "--validate", str(out)).exit_code == 0
    m = load(out).measurements
    ping = m[m["kind"] == "ping"].set_index("target")
    lo = ping.loc["127.0.0.1"]  # 0.028 0.040 0.035 0.022 0.018
    assert (lo["rtt_min_ms"], lo["rtt_ms"], lo["loss_ratio"], lo["sent"]) == (
        0.018, 0.028, 0.0, 5)
    assert lo["agent"] == "vm" and lo["region"] == "lab"  # the cycle's hostname
    srv = ping.loc["10.231.2.2"]  # 0.029 0.039 0.040 0.069: median 0.0395, stored to 1 µs
    assert (srv["rtt_min_ms"], srv["rtt_ms"]) == (0.029, pytest.approx(0.0395, abs=0.0006))
    dropped = ping.loc["10.231.2.3"]
    assert (dropped["status"], dropped["loss_ratio"], dropped["received"]) == ("timeout", 1.0, 0)


def test_trace_hops_rebuilt_from_scamper_counts() -> None:
    report = ImportReport(source="scamper")
    traces = {r.target: r for r in import_scamper([DATA / "paths.json"], report)
              if isinstance(r, TraceRecord)}
    reached = traces["10.231.2.2"]
    assert (reached.status, reached.body.dest_ttl, len(reached.body.hops)) == ("ok", 2, 2)
    assert [h.responders[0].address for h in reached.body.hops] == ["10.231.1.1", "10.231.2.2"]
    assert reached.body.flow == {"icmp_sum": 43651} and reached.body.protocol == "icmp"
    unreach = traces["10.231.3.9"]  # TTL 1: two silent attempts; TTL 2: router's unreachable
    assert (unreach.status, unreach.body.stop_reason) == ("unreachable", "unreachable")
    assert [len(h.probes) for h in unreach.body.hops] == [2, 1]
    assert [h.loss_ratio for h in unreach.body.hops] == [1.0, 0.0]
    assert unreach.body.hops[1].probes[0].icmp_type == 3
    gap = traces["10.231.2.3"]  # answered at TTL 1, then 3 silent TTLs of 2 attempts
    assert (gap.status, gap.body.stop_reason, len(gap.body.hops)) == ("timeout", "gap", 4)
    assert sum(len(h.probes) for h in gap.body.hops) == 7  # scamper's probe_count
    assert [h.loss_ratio for h in gap.body.hops] == [0.0, 1.0, 1.0, 1.0]
    assert not report.notes  # every count agreed with scamper's own


def test_warts_end_to_end_equals_its_json(tmp_path: Path) -> None:
    need_tool()
    warts = [DATA / f"{n}.warts" for n in NAMES]
    packed = tmp_path / "paths.warts.gz"
    packed.write_bytes(gzip.compress((DATA / "paths.warts").read_bytes()))
    from_warts = list(import_scamper(warts, ImportReport(source="scamper")))
    from_json = list(import_scamper([DATA / f"{n}.json" for n in NAMES],
                                    ImportReport(source="scamper")))
    assert len(from_warts) == 7
    assert [encode_record(r) for r in from_warts] == [encode_record(r) for r in from_json]
    report = ImportReport(source="scamper")
    gz = list(import_scamper([packed], report))
    assert [r.id for r in gz] == [r.id for r in from_json if r.target.startswith("10.231.")
                                  and r.kind == "trace"]


def test_truncated_warts_is_refused_with_the_reason(tmp_path: Path) -> None:
    need_tool()
    cut = tmp_path / "cut.warts"
    cut.write_bytes((DATA / "paths.warts").read_bytes()[:200])
    out = tmp_path / "cut.jsonl"
    result = invoke("import", "scamper", str(cut), "-o", str(out))
    assert result.exit_code == EXIT_USAGE
    # The reason is said for the file, on its own line after the summary.
    per_file = [line for line in result.stderr.splitlines() if "cut.warts:" in line]
    assert any("sc_warts2json could not read" in line for line in per_file), result.stderr
    assert not out.exists()


def test_other_types_and_bad_lines_are_counted(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.json"
    mixed.write_text((DATA / "loopback.json").read_text()
                     + '{"type":"tracelb","src":"127.0.0.1","dst":"127.0.0.1"}\n{oops\n')
    report = ImportReport(source="scamper")
    records = list(import_scamper([mixed], report))
    assert len(records) == 1
    assert report.refused == {"unsupported type 'tracelb'": 1, "malformed JSON": 1}


def test_live_scamper_on_loopback(tmp_path: Path) -> None:
    """A fresh scamper run against 127.0.0.1 only (raw sockets: root)."""
    need_tool()
    if shutil.which("scamper") is None:
        missing("needs scamper")
    if os.geteuid() != 0:
        missing("needs root for scamper's raw sockets")
    warts = tmp_path / "live.warts"
    subprocess.run(["scamper", "-O", "warts", "-o", str(warts), "-c", "ping -c 3 -i 0.2",
                    "-i", "127.0.0.1"], check=True, capture_output=True, timeout=30)
    out = tmp_path / "live.jsonl"
    result = invoke("import", "scamper", str(warts), "--agent", "here", "-o", str(out))
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(out)
    assert isinstance(record, PingRecord) and record.agent == "here"
    assert (record.body.sent, record.body.received, record.status) == (3, 3, "ok")
    assert all(r is not None and 0 <= r < 100 for r in record.body.rtts_ms)


def test_repeated_input_is_counted_as_duplicates() -> None:
    from netvantage.importers.io import ImportReport

    files = [DATA / f"{n}.json" for n in NAMES]
    once = ImportReport(source="scamper")
    first = [r.id for r in import_scamper(files, once)]
    twice = ImportReport(source="scamper")
    both = [r.id for r in import_scamper([*files, *files], twice)]
    assert both == first and first
    assert twice.duplicates == len(first) and once.duplicates == 0
