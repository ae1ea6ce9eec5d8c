"""The streamed loader and the progress switch.

The loader decodes and turns records into columns a chunk at a time; these tests make
the chunks tiny so that every boundary (categories first seen in a later chunk, a
duplicate in another chunk, a bad line after good chunks) is crossed on small data.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from conftest import invoke_cli
from netvantage.analysis import progress
from netvantage.analysis.load import FRAME_NAMES, LoadError, check_campaign, load
from netvantage.errors import SchemaError
from netvantage.results import (
    Hop,
    PingRecord,
    TraceProbe,
    TraceRecord,
    read_jsonl,
    rtt_stats,
    write_jsonl,
)
from waiting import wait_until

loader = importlib.import_module("netvantage.analysis.load")
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
KEYS = {"measurements": ("kind", "agent", "region", "target", "status"),
        "samples": ("kind", "region", "target"), "hops": ("region", "target"),
        "phases": ("kind", "region", "target", "phase")}


@pytest.fixture(scope="module")
def whole() -> object:
    """The bundled campaign loaded in one chunk (it has 1,932 records)."""
    return load(SAMPLE)


def test_chunks_change_nothing(whole: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded 7 records at a time, every frame equals the one-chunk load, dtypes and
    categories (in their order) included."""
    monkeypatch.setattr(loader, "CHUNK_RECORDS", 7)
    small = load(SAMPLE)
    for name in FRAME_NAMES:
        pd.testing.assert_frame_equal(getattr(small, name), getattr(whole, name),
                                      check_exact=True, obj=name)


def test_key_columns_are_categorical(whole: object) -> None:
    for name, keys in KEYS.items():
        frame = getattr(whole, name)
        assert len(frame), name
        for key in keys:
            assert isinstance(frame[key].dtype, pd.CategoricalDtype), (name, key)
    # A child frame's categories are its own values, as if built alone.
    hops = whole.hops  # type: ignore[attr-defined]
    assert set(hops["region"].cat.categories) == set(hops["region"].dropna())


def test_a_bad_line_after_good_chunks_loads_nothing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "CHUNK_RECORDS", 5)
    lines = SAMPLE.read_bytes().splitlines(keepends=True)[:40]
    lines[33] = b'{"kind": "ping", "id": "broken"\n'
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    with pytest.raises(SchemaError) as caught:
        load(bad)
    assert "1 bad line(s), nothing loaded" in str(caught.value)
    assert any(p.startswith("line 34:") for p in caught.value.problems)


def test_duplicates_in_other_chunks_and_files(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same (agent, id) in a later chunk and in a second file is one record; another
    agent's record with a taken id is renamed AGENT:ID in every frame."""
    monkeypatch.setattr(loader, "CHUNK_RECORDS", 3)
    records = read_jsonl(SAMPLE)
    pings = [r for r in records if isinstance(r, PingRecord)][:6]
    traces = [r for r in records if r.kind == "trace"][:2]
    import msgspec

    other = msgspec.structs.replace(traces[0], agent="other-agent", id=pings[0].id)
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    write_jsonl([*pings, *traces, pings[1], other], first)
    write_jsonl([pings[2], traces[1]], second)
    camp = load([first, second])
    m = camp.measurements
    renamed = f"other-agent:{pings[0].id}"
    assert m["id"].tolist() == [*(p.id for p in pings), *(t.id for t in traces), renamed]
    assert m["id"].is_unique
    want_samples = sum(len(p.body.rtts_ms) for p in pings)
    assert len(camp.samples) == want_samples
    assert set(camp.hops["id"]) == {traces[0].id, traces[1].id, renamed}
    own = camp.hops[camp.hops["id"] == renamed]
    assert len(own) == len(camp.hops[camp.hops["id"] == traces[0].id])
    assert set(own["region"].astype(str)) == {other.region}


def test_progress_is_silent_unless_asked(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr is not a terminal here: nothing by default nor when quiet; with bars forced
    on, a step longer than the delay (0 here) is drawn with its name and count."""
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    try:
        for bars, quiet in ((None, False), (False, False), (True, True)):
            progress.configure(bars, quiet=quiet)
            with progress.step("counting", unit=" things") as bar:
                bar.update(3)
            progress.note("a note")
            err = capsys.readouterr().err
            assert ("counting" in err) is False, (bars, quiet, err)
            assert ("a note" in err) is (not quiet), (bars, quiet, err)
        progress.configure(True)
        assert list(progress.track(range(4), "tracking", unit=" items")) == [0, 1, 2, 3]
        err = capsys.readouterr().err
        assert "tracking" in err and "4/4" in err, err
    finally:
        progress.configure()


def test_no_progress_thread_runs_inside_forkable(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's timer is the only thread a bar adds; forkable() stops it (so a process may
    fork) and starts it again, and the bar goes on being drawn afterwards."""
    import threading

    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr(progress, "_REFRESH_S", 0.01)
    before = threading.active_count()

    def redrawn() -> bool:
        return "outer" in capsys.readouterr().err

    try:
        progress.configure(True)
        with progress.step("outer", unit=" things"):
            assert threading.active_count() == before + 1  # the timer, no tqdm monitor
            wait_until(redrawn, 10, "the timer's first redraw")
            with progress.forkable():
                # No thread of the bar's is left to redraw it (or to hold a lock).
                assert threading.active_count() == before
            assert threading.active_count() == before + 1
            capsys.readouterr()
            wait_until(redrawn, 10, "a redraw by the restarted timer")  # nothing updated
        assert threading.active_count() == before
    finally:
        progress.configure()


def test_quiet_cli_writes_nothing_on_stderr(tmp_path: Path) -> None:
    out = invoke_cli("analyse", str(SAMPLE), "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.strip()
    page = tmp_path / "report.md"
    rep = invoke_cli("report", str(SAMPLE), "--format", "md", "-o", str(page), "--quiet")
    assert rep.returncode == 0, rep.stderr
    assert rep.stderr == "" and page.exists()


def test_checks_by_slices_find_what_one_check_finds(whole: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Long frames are checked a slice of rows at a time, uniqueness over the whole: the
    problems (rows and counts) are those of one check of the whole frame."""
    import dataclasses

    camp: Any = whole
    m, s, p = camp.measurements.copy(), camp.samples.copy(), camp.phases.copy()
    m.loc[5, "id"] = m.loc[1500, "id"]  # two slices apart
    m.loc[1900, "rtt_ms"] = -1.0
    s.loc[4000, ["id", "seq"]] = s.loc[3999, ["id", "seq"]].to_numpy()
    s.loc[10, "rtt_ms"] = -5.0
    p.loc[100, "phase"] = p.loc[101, "phase"]
    bad = dataclasses.replace(camp, measurements=m, samples=s, phases=p)

    def problems(rows: int) -> list[str]:
        monkeypatch.setattr(loader, "CHECK_ROWS", rows)
        with pytest.raises(SchemaError) as caught:
            check_campaign(bad)
        return sorted(caught.value.problems)

    whole_check = problems(10**9)
    assert any("field_uniqueness failed for 2" in x for x in whole_check), whole_check
    assert any("(id, seq) unique" in x and "(row 4000)" in x for x in whole_check)
    assert problems(300) == whole_check
    monkeypatch.setattr(loader, "CHECK_ROWS", 300)
    check_campaign(camp)  # the good frames pass by slices too


def test_a_pool_of_processes_changes_nothing(whole: object,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A file decoded by worker processes in ranges of about 20 kB (some 20 records each)
    gives the frames of the load in one process, categories in their order included."""
    monkeypatch.setattr(loader, "POOL_BYTES", 0)
    monkeypatch.setattr(loader, "CHUNK_BYTES", 20_000)
    assert loader._workers(SAMPLE) == len(os.sched_getaffinity(0))
    pooled = load(SAMPLE)
    for name in FRAME_NAMES:
        pd.testing.assert_frame_equal(getattr(pooled, name), getattr(whole, name),
                                      check_exact=True, obj=name)


def test_a_pool_reports_bad_lines_by_their_number(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad lines in several ranges, a blank line and a torn last line: one error, every
    line numbered as in the file, nothing loaded."""
    monkeypatch.setattr(loader, "POOL_BYTES", 0)
    monkeypatch.setattr(loader, "CHUNK_BYTES", 5_000)
    lines = SAMPLE.read_bytes().splitlines(keepends=True)[:60]
    lines[3] = b"\n"
    lines[33] = b'{"kind": "ping", "id": "broken"\n'
    lines[51] = b"not json\n"
    lines[-1] = lines[-1][:40]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    with pytest.raises(SchemaError) as caught:
        load(bad)
    assert "3 bad line(s), nothing loaded" in str(caught.value)
    where = [p.split(":")[0] for p in caught.value.problems]
    assert where == ["line 34", "line 52", "line 60"]
    assert "unterminated last line" in caught.value.problems[-1]


def test_a_killed_decoding_process_stops_the_load_with_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed while it decodes (the kernel, short of memory, say): the load
    stops with an error naming the file, rather than waiting forever for its range."""
    import multiprocessing
    import signal
    import time

    monkeypatch.setattr(loader, "_workers", lambda path: 2)  # a pool even on one CPU
    monkeypatch.setattr(loader, "CHUNK_BYTES", 20_000)
    parent = os.getpid()
    decoding = loader._block_records

    def dying_in_a_worker(block: memoryview, newlines: Any) -> Any:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return decoding(block, newlines)

    monkeypatch.setattr(loader, "_block_records", dying_in_a_worker)
    started = time.monotonic()
    with pytest.raises(LoadError, match=r"ended without an answer.*nothing loaded"):
        load(SAMPLE)
    assert time.monotonic() - started < 60
    assert multiprocessing.active_children() == []


def _children(camp: Any) -> dict[str, dict[str, pd.Series]]:
    """The children's columns as the builder holds them before taking the record's: their
    record number (``_rec``) and their own key columns."""
    rec = pd.Index(camp.measurements["id"])
    return {name: {"_rec": pd.Series(rec.get_indexer(frame["id"])),
                   **{c: frame[c] for c in ("seq", "phase") if c in frame}}
            for name, frame in (("samples", camp.samples), ("phases", camp.phases))}


def test_keys_proved_on_record_numbers(whole: object) -> None:
    """The builder proves the uniqueness checks on integers when it can, and says it
    cannot when a (record, seq) or (record, phase) repeats or samples come out of order."""
    builder = loader._Builder()
    builder.add(read_jsonl(SAMPLE))
    builder.campaign(dedup=True)
    assert builder.keys_unique
    children = _children(whole)
    assert loader._keys_unique(children)
    phases = children["phases"]
    phases["phase"] = phases["phase"].copy()
    phases["phase"].iloc[1] = phases["phase"].iloc[0]
    assert phases["_rec"].iloc[0] == phases["_rec"].iloc[1]
    assert not loader._keys_unique(children)
    children = _children(whole)
    children["samples"]["seq"] = children["samples"]["seq"].iloc[::-1].reset_index(drop=True)
    assert not loader._keys_unique(children)


def test_a_shared_id_is_not_proved(tmp_path: Path) -> None:
    """Two agents' records with one id: the deduplication renames one, and the frames go
    to the string checks (the integer proof needs ids unique as read)."""
    import msgspec

    records = read_jsonl(SAMPLE)[:30]
    other = msgspec.structs.replace(records[0], agent="other-agent")
    builder = loader._Builder()
    builder.add([*records, other])
    camp = builder.campaign(dedup=True)
    assert not builder.keys_unique
    assert camp.measurements["id"].is_unique


def test_checks_without_the_proved_keys_find_the_same(whole: object) -> None:
    """The check the loader runs when the keys are proved reports the problems of the
    whole check, row by row, for every frame."""
    import dataclasses

    camp: Any = whole
    m, s, h = camp.measurements.copy(), camp.samples.copy(), camp.hops.copy()
    m.loc[1900, "rtt_ms"] = -1.0
    s.loc[10, "rtt_ms"] = -5.0
    h.loc[3, "ttl"] = 0
    bad = dataclasses.replace(camp, measurements=m, samples=s, hops=h)
    with pytest.raises(SchemaError) as full:
        check_campaign(bad)
    with pytest.raises(SchemaError) as keyed:
        loader._check_loaded(bad, keyed=True)
    assert any(x.startswith("hops.ttl: in_range(1, 255) failed for 1 value(s): 0 (row 3)")
               for x in full.value.problems), full.value.problems
    assert any(x.startswith("samples.rtt_ms") and "(row 10)" in x for x in full.value.problems)
    assert keyed.value.problems == full.value.problems
    empty = dataclasses.replace(camp, phases=camp.phases.iloc[:0])
    assert loader._check_loaded(empty, keyed=True) is empty


def test_blocks_and_lines_load_alike(whole: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges decoded a block of a few kB at a time, in a pool and in this process, give
    the frames of the one-block load."""
    monkeypatch.setattr(loader, "BLOCK_BYTES", 3_000)
    monkeypatch.setattr(loader, "CHUNK_BYTES", 50_000)
    here = load(SAMPLE)
    monkeypatch.setattr(loader, "POOL_BYTES", 0)
    pooled = load(SAMPLE)
    for name in FRAME_NAMES:
        for other in (here, pooled):
            pd.testing.assert_frame_equal(getattr(other, name), getattr(whole, name),
                                          check_exact=True, obj=name)


def test_lines_a_block_refuses_load_line_by_line(whole: object, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """CRLF line ends, a blank line, spaces around a record, no newline at the end: the
    block decoder leaves them to the line-by-line one, which loads the same frames."""
    monkeypatch.setattr(loader, "BLOCK_BYTES", 3_000)
    lines = SAMPLE.read_bytes().splitlines()

    def decoded(block: bytes) -> Any:
        newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
        return loader._block_records(memoryview(block), newlines)

    assert decoded(b"\n".join(lines[:5]) + b"\n") is not None
    assert decoded(b"\n".join(lines[:5])) is not None
    for block in (b"\r\n".join(lines[:5]) + b"\r\n", b"\n".join(lines[:5]) + b"\n\n",
                  b" " + b"\n".join(lines[:5])):
        assert decoded(block) is None, block[:40]
    messy = list(lines)
    messy[10] = b"  " + messy[10] + b" \t"
    messy.insert(20, b"")
    body = b"\r\n".join(messy[:100]) + b"\r\n" + b"\n".join(messy[100:])  # no final newline
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(body)
    camp = load(odd)
    for name in FRAME_NAMES:
        pd.testing.assert_frame_equal(getattr(camp, name), getattr(whole, name),
                                      check_exact=True, obj=name)


@pytest.mark.parametrize("pooled", [False, True])
def test_what_only_a_stream_decoder_would_take_is_bad(tmp_path: Path, pooled: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two records on one line, or one record over two lines, would decode as a stream of
    JSON values: they are bad lines, numbered as in the file, inside a block as at its
    start."""
    monkeypatch.setattr(loader, "BLOCK_BYTES", 2_000)
    monkeypatch.setattr(loader, "CHUNK_BYTES", 20_000)
    if pooled:
        monkeypatch.setattr(loader, "POOL_BYTES", 0)
    lines = SAMPLE.read_bytes().splitlines()[:80]
    two_on_one = lines[12] + lines[13]
    head, tail = lines[40].split(b',"id":', 1)
    split = [head + b",", b'"id":' + tail]
    file = tmp_path / "stream.jsonl"
    file.write_bytes(b"\n".join([*lines[:12], two_on_one, *lines[14:40], *split,
                                 *lines[41:]]) + b"\n")
    with pytest.raises(SchemaError) as caught:
        load(file)
    assert "3 bad line(s), nothing loaded" in str(caught.value)
    assert [p.split(":")[0] for p in caught.value.problems] == ["line 13", "line 40",
                                                                "line 41"]


def _stdev(values: list[float]) -> float:
    """The standard deviation as it was computed a record at a time (two passes, fsum)."""
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum([(x - mean) ** 2 for x in values]) / (len(values) - 1))


def test_figures_over_columns_are_those_of_the_records(whole: Any) -> None:
    """rtt_sd_ms and handshake_ms, computed over the chunk's arrays, are to the last bit
    the per-record arithmetic: fsum's standard deviation, the phases summed in order."""
    records = {r.id: r for r in read_jsonl(SAMPLE)}
    m = whole.measurements.set_index("id")
    checked = {"sd": 0, "handshake": 0}
    for rid, row in m.iterrows():
        body: Any = records[str(rid)].body
        if row["kind"] in ("ping", "tcp"):
            rtts = (body.rtts_ms if row["kind"] == "ping"
                    else [a.connect_ms for a in body.attempts])
            got = [x for x in rtts if x is not None]
            if len(got) >= 2:
                assert row["rtt_sd_ms"] == _stdev(got), rid
                checked["sd"] += 1
            else:
                assert math.isnan(row["rtt_sd_ms"]), rid
        elif row["kind"] in ("smtp", "imap") and not math.isnan(row["handshake_ms"]):
            durations: list[float] = [p.duration_ms for p in body.phases]
            assert row["handshake_ms"] == float(sum(durations)), rid
            checked["handshake"] += 1
    assert checked["sd"] > 100 and checked["handshake"] > 100, checked


def test_standard_deviations_to_the_last_bit() -> None:
    """Random RTTs of many magnitudes, some lost (NaN), 0 to 40 per record: each record's
    figure is the fsum arithmetic's, bit for bit; NaN under two RTTs."""
    rng = np.random.default_rng(20)
    counts = rng.integers(0, 40, 3_000)
    rtt = np.round(rng.lognormal(3, 2, int(counts.sum())), rng.integers(0, 7))
    rtt[rng.random(len(rtt)) < 0.1] = np.nan
    rec = np.repeat(np.arange(len(counts)), counts)
    out = np.full(len(counts), np.nan)
    loader._standard_deviations(rec, rtt, out)
    for i in range(len(counts)):
        got = [x for x in rtt[rec == i].tolist() if not math.isnan(x)]
        if len(got) >= 2:
            assert out[i] == _stdev(got), (i, got)
        else:
            assert math.isnan(out[i]), i


def _destination_figures(r: TraceRecord) -> tuple[Any, ...]:
    """A trace's figures as the per-record arithmetic gives them: rtt_stats over the RTTs
    of the destination TTL's probes answered by the record's address (all the answered
    ones if none came from it); NaN and None where it never reached it."""
    b = r.body
    if not b.reached or b.dest_ttl is None or b.dest_ttl > len(b.hops):
        return (math.nan,) * 7 + (None,)
    probes = b.hops[b.dest_ttl - 1].probes
    answered = [p for p in probes if p.address is not None]
    chosen = [p.rtt_ms for p in ([p for p in answered if p.address == r.address]
                                 or answered)]
    stats = rtt_stats(chosen)
    samples = sum(x is not None for x in chosen)
    nan = math.nan
    return (nan if stats.median_ms is None else stats.median_ms,
            nan if stats.min_ms is None else stats.min_ms,
            1 - len(chosen) / len(probes) if probes else nan,
            nan if stats.jitter_ms is None else stats.jitter_ms,
            len(probes), len(chosen), samples, "median" if samples else None)


def test_trace_figures_over_columns_are_those_of_the_records() -> None:
    """Traces whose destination TTL has 0 to 6 probes, answered by the destination, by
    another address or by nobody, with or without an RTT, of many magnitudes: each
    trace's figures are rtt_stats' over its destination's answers, bit for bit (the
    loader computes one or two RTTs over columns, more by rtt_stats)."""
    rng = np.random.default_rng(7)
    base = next(r for r in read_jsonl(SAMPLE)
                if isinstance(r, TraceRecord) and r.body.reached and r.address)
    dest = base.body.dest_ttl
    assert dest is not None and base.address is not None
    records = []
    for i in range(600):
        probes = []
        for _ in range(int(rng.integers(0, 7))):
            who = rng.choice(["dest", "dest", "other", "none"])
            if who == "none":
                probes.append(TraceProbe())
                continue
            rtt = (None if rng.random() < 0.1
                   else float(np.round(rng.lognormal(2, 2), rng.integers(0, 8))) or 0.001)
            probes.append(TraceProbe(address=base.address if who == "dest" else "192.0.2.99",
                                     rtt_ms=rtt, icmp_type=0))
        hops = [*base.body.hops[:dest - 1], Hop.from_probes(dest, probes)]
        reached = bool(rng.random() < 0.9)
        body = msgspec.structs.replace(base.body, hops=hops, reached=reached,
                                       dest_ttl=dest if reached else None,
                                       stop_reason="reached" if reached else "gap")
        records.append(msgspec.structs.replace(base, id=f"trace-figures-{i:04d}", body=body))
    m = loader.frames_from_records(records).measurements
    columns = ["rtt_ms", "rtt_min_ms", "loss_ratio", "jitter_ms", "sent", "received",
               "rtt_samples"]
    lengths = set()
    for r, row in zip(records, m[[*columns, "rtt_stat"]].itertuples(index=False),
                      strict=True):
        want = [float(x) for x in _destination_figures(r)[:-1]]
        got = [math.nan if pd.isna(x) else float(x) for x in row[:-1]]
        assert all((math.isnan(a) and math.isnan(b)) or a == b
                   for a, b in zip(got, want, strict=True)), (r.id, got, want)
        assert (None if pd.isna(row[-1]) else row[-1]) == _destination_figures(r)[-1], r.id
        lengths.add(-1 if math.isnan(want[6]) else int(want[6]))
    assert {-1, 0, 1, 2, 3, 4} <= lengths  # every path: unreached, none, one, two, more


def test_numpy_asks_for_no_huge_pages_while_frames_are_built() -> None:
    """Off inside the loader's block (the kernel's huge-page faults cost more there), as
    it was afterwards."""
    setter = importlib.import_module("numpy._core.multiarray")._set_madvise_hugepage
    before = setter(True)
    try:
        with loader.small_pages():
            assert setter(False) is False  # (returns the setting it replaces)
        assert setter(True) is True
        setter(False)
        with loader.small_pages():
            pass
        assert setter(False) is False
    finally:
        setter(before)
