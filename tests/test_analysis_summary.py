"""The whole analysis on the recorded lab campaign, and the `analyse` command."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import invoke_cli
from netvantage import analysis as nva

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
AFRICA = {"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.05, "CA-YYZ": 0.05}
EUROPE = {"GB-LHR": 0.8, "CA-YYZ": 0.1, "ZM-LUN": 0.05, "ZA-JNB": 0.05}


@pytest.fixture(scope="module")
def campaign():
    return nva.load(SAMPLE)


@pytest.fixture(scope="module")
def result(campaign):
    return nva.analyse(campaign, weights=AFRICA, locations=nva.locations(LOCATIONS), n_boot=200)


def test_johannesburg_first_for_an_african_client_mix(result):
    assert result.winner == "dc-jnb"
    assert result.stability.winner == "dc-jnb"


def test_amsterdam_first_for_a_european_mix_before_the_degradation(campaign):
    meta = json.loads(SAMPLE.with_suffix("").with_suffix(".meta.json").read_text())
    degraded = pd.Timestamp(meta["degradation"]["at"])
    before = nva.Campaign(*(frame[frame["started_at"] < degraded] for frame in (
        campaign.measurements, campaign.samples, campaign.hops, campaign.phases)))
    result = nva.analyse(before, weights=EUROPE, locations=nva.locations(LOCATIONS), n_boot=100)
    assert result.winner == "dc-ams"


def test_african_regions_flagged_towards_amsterdam_with_the_hop(result):
    flags = result.flags
    african = flags[flags["region"].isin(["ZM-LUN", "ZA-JNB"])]
    assert set(african["target"]) == {"dc-ams"}
    assert set(african["region"]) == {"ZM-LUN", "ZA-JNB"}
    for where in african["where"]:
        assert "Lisbon" in where and "AS64710" in where
    healthy = flags[~flags["target"].isin(["dc-ams"])]
    assert healthy.empty, healthy[["region", "target", "test"]]


def test_mid_campaign_degradation_flagged_with_its_start(result):
    meta = json.loads(SAMPLE.with_suffix("").with_suffix(".meta.json").read_text())
    degraded = pd.Timestamp(meta["degradation"]["at"])
    history = result.flags[(result.flags["test"] == "history")
                           & (result.flags["region"] == "GB-LHR")]
    assert not history.empty
    for since in history["since"]:
        assert abs(since - degraded) <= 2 * result.window, (since, degraded)


def test_analyse_command_prints_ranking_table_and_flags():
    proc = invoke_cli("analyse", str(SAMPLE), "--locations", str(LOCATIONS), "--weights",
                   ",".join(f"{k}={v}" for k, v in AFRICA.items()), timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.index("RANK") < out.index("dc-jnb") < out.index("dc-yyz")
    assert "Per region" in out and "ZM-LUN -> dc-ams:" in out and "Lisbon" in out
    as_json = invoke_cli("analyse", str(SAMPLE), "--format", "json", timeout=180)
    data = json.loads(as_json.stdout)
    assert data["winner"] and data["ranking"] and "flags" in data


def test_analyse_refuses_a_broken_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "ping"}\n')
    proc = invoke_cli("analyse", str(bad))
    assert proc.returncode == 2 and "line 1" in proc.stderr


def test_imported_atlas_results_are_analysed(tmp_path):
    atlas = ROOT / "tests" / "data" / "atlas"
    out = tmp_path / "atlas.jsonl"
    imported = invoke_cli("import", "atlas", str(atlas / "tmp_ping.json"),
                       *(str(p) for p in sorted(atlas.glob("trace_*.json"))),
                       "--probes", str(atlas / "probes.json"),
                       "--targets", str(atlas / "datacenters.csv"), "-o", str(out),
                       timeout=120)
    assert imported.returncode == 0, imported.stderr
    campaign = nva.load(out)
    assert set(campaign.measurements["source"].astype(str)) == {"atlas"}
    result = nva.analyse(campaign, n_boot=100)
    assert any("traces' destination RTT" in note for note in result.notes)
    # This small subset has no region that measured every data centre: the analysis says
    # so; weights on the African probes that traced Cape Town give that data centre a score.
    assert set(result.ranking.table["target"]) == set(campaign.measurements["target"])
    assert any("never measured successfully" in note for note in result.notes)
    assert result.coverage is not None and result.coverage.unmeasured
    african = {"AO": 0.5, "NA": 0.5}
    covered = nva.analyse(campaign, weights=african, n_boot=100)
    scored = covered.ranking.table.dropna(subset=["score"])
    assert "af-south-1.ec2.cloudharmony.net" in set(scored["target"])
    proc = invoke_cli("analyse", str(out), timeout=180)
    assert proc.returncode == 0 and "RANK" in proc.stdout, proc.stderr
    # Atlas probes without metadata have no region: the report copes with the gaps.
    html = tmp_path / "atlas.html"
    report = invoke_cli("report", str(out), "--weights", "AO=0.5,NA=0.5", "-o", str(html),
                     timeout=300)
    assert report.returncode == 0, report.stderr
    assert "af-south-1.ec2.cloudharmony.net" in html.read_text()


def test_an_empty_file_is_refused_with_the_reason(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(nva.summary.NothingToAnalyse, match="no records to analyse"):
        nva.analyse(nva.load(empty), n_boot=10)
    for command in (("analyse", str(empty)),
                    ("report", str(empty), "-o", str(tmp_path / "r.html"))):
        proc = invoke_cli(*command, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "no records to analyse" in proc.stderr and "Traceback" not in proc.stderr


def test_records_without_any_region_are_refused_saying_how_to_give_them_one(tmp_path):
    atlas = ROOT / "tests" / "data" / "atlas"
    out = tmp_path / "no-region.jsonl"
    # Atlas results imported without the probes' metadata: no record has a region.
    imported = invoke_cli("import", "atlas", str(atlas / "tmp_ping.json"),
                          "--targets", str(atlas / "datacenters.csv"), "-o", str(out),
                          timeout=120)
    assert imported.returncode == 0, imported.stderr
    campaign = nva.load(out)
    assert campaign.measurements["region"].isna().all()
    with pytest.raises(nva.summary.NothingToAnalyse, match="names its client region"):
        nva.analyse(campaign, n_boot=10)
    for command in (("analyse", str(out)),
                    ("report", str(out), "-o", str(tmp_path / "r.html"))):
        proc = invoke_cli(*command, timeout=180)
        assert proc.returncode == 2, proc.stderr
        assert "names its client region" in proc.stderr and "--probes" in proc.stderr
        assert "Traceback" not in proc.stderr and "share" not in proc.stderr


def test_many_failing_regions_are_summed_up_by_threshold() -> None:
    from netvantage.analysis.summary import condense_fails

    regions = {f"XA-{i:03d}" for i in range(5)} | {"ZA-JNB"}
    few = "ZA-JNB: loss 2.0 % > 1 %; smtp handshake p95 1500 ms > 1000 ms"
    assert condense_fails(few, regions) == few  # one region: shown as it is
    parts = [f"XA-{i:03d}: smtp handshake p95 {2000 + i} ms > 1000 ms"
             + ("; loss 1.5 % > 1 %" if i % 2 == 0 else "") for i in range(5)]
    parts.append("ZA-JNB: success 37.3 % < 99 %; no records")
    assert condense_fails("; ".join(parts), regions) == (
        "in 6 regions: smtp handshake p95 > 1000 ms (5); loss > 1 % (3); "
        "success < 99 % (1); no records (1)")


def test_many_weights_are_described_not_listed() -> None:
    from netvantage.analysis.summary import weights_line

    assert weights_line({"GB-LHR": 0.5, "ZA-JNB": 0.5}) == "GB-LHR 0.50, ZA-JNB 0.50"
    equal = {f"R-{i:03d}": 1 / 140 for i in range(140)}
    assert weights_line(equal) == "140 regions, equally (0.0071 each)"
    skewed = {f"R-{i:03d}": (i + 1) / 210 for i in range(20)}  # sums to 1
    line = weights_line(skewed)
    assert line.startswith("R-019 0.095, R-018 0.090")
    assert line.endswith("and 8 more regions (0.171 in all)")


def test_the_terminal_text_keeps_a_budget_and_says_what_it_left_out(tmp_path: Path) -> None:
    """300 regions x 12 data centres: the per-region table keeps every region's best and
    the recommended data centre, long sections are cut with a count; --full has it all."""
    import subprocess
    import sys

    from netvantage.analysis.load import load
    from netvantage.analysis.summary import TEXT_BREAKDOWN_ROWS, analyse

    maker = Path(__file__).resolve().parent.parent / "bench" / "make_synthetic.py"
    data = tmp_path / "campaign.jsonl"
    subprocess.run([sys.executable, str(maker), str(data), "--records", "20000",
                    "--regions", "60"], check=True, capture_output=True, timeout=120)
    result = analyse(load(data), n_boot=50)
    short, full = result.to_text(), result.to_text(full=True)
    rows = len(result.ranking.breakdown)
    assert rows > TEXT_BREAKDOWN_ROWS
    assert "pairs shown: for every region its best data centre and the recommended one" \
        in short
    assert "pairs shown" not in full
    assert len(short.splitlines()) < len(full.splitlines())
    regions = set(result.ranking.breakdown["region"].astype(str))
    table = short.split("Per region")[1].split("Flags (")[0]
    assert all(f"\n{r} " in table for r in regions)  # every region keeps a row
    assert result.winner is not None and result.winner in table


def test_metrics_computed_aside_in_a_forked_child_are_those_of_one_process(
        campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Big campaigns compute the metrics table in a forked child beside the rest: the very
    same frame, to the bit, as one process computing it."""
    import os

    from netvantage.analysis import summary
    from netvantage.analysis.metrics import metrics as computing

    serial = summary.analyse(campaign, weights=AFRICA, n_boot=200, seed=3)
    where = tmp_path / "pids"

    def noting_the_process(*args, **kwargs):
        with open(where, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return computing(*args, **kwargs)

    monkeypatch.setattr(summary, "metrics_table", noting_the_process)
    monkeypatch.setattr(summary, "CONCURRENT_RECORDS", 1)
    monkeypatch.setattr(summary, "_may_fork", lambda: True)
    aside = summary.analyse(campaign, weights=AFRICA, n_boot=200, seed=3)
    pids = where.read_text().split()
    assert len(pids) == 1 and int(pids[0]) != os.getpid()  # computed in a child
    pd.testing.assert_frame_equal(aside.metrics, serial.metrics, check_exact=True)
    for column in serial.metrics.select_dtypes("number").columns:
        assert (aside.metrics[column].to_numpy().tobytes()
                == serial.metrics[column].to_numpy().tobytes()), column
    assert aside.ranking.table.equals(serial.ranking.table)
    assert summary._ASIDE is None  # no reference to the campaign kept

    # Small campaigns, or where no child may be forked: computed here.
    where.unlink()
    monkeypatch.setattr(summary, "_may_fork", lambda: False)
    here = summary.analyse(campaign, weights=AFRICA, n_boot=200, seed=3)
    assert where.read_text().split() == [str(os.getpid())]
    pd.testing.assert_frame_equal(here.metrics, serial.metrics, check_exact=True)


def test_the_analysis_and_its_metrics_child_ask_numpy_for_no_huge_pages(
        campaign, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off for the whole analysis, in this process and in the forked metrics child (the
    kernel's huge-page faults cost more than they save here), and as it was afterwards."""
    import importlib
    import os

    from netvantage.analysis import summary
    from netvantage.analysis.metrics import metrics as computing

    setter = importlib.import_module("numpy._core.multiarray")._set_madvise_hugepage
    where = tmp_path / "settings"

    def noting(step: str) -> None:
        was = setter(False)  # (returns the setting it replaces)
        setter(was)
        with open(where, "a") as fh:
            fh.write(f"{step} {os.getpid()} {was}\n")

    def metrics_noting(*args, **kwargs):
        noting("metrics")
        return computing(*args, **kwargs)

    analysing = summary._analysis

    def analysis_noting(*args, **kwargs):
        noting("analysis")
        return analysing(*args, **kwargs)

    monkeypatch.setattr(summary, "metrics_table", metrics_noting)
    monkeypatch.setattr(summary, "_analysis", analysis_noting)
    monkeypatch.setattr(summary, "CONCURRENT_RECORDS", 1)
    monkeypatch.setattr(summary, "_may_fork", lambda: True)
    before = setter(True)
    try:
        summary.analyse(campaign, weights=AFRICA, n_boot=50)
        after = setter(before)
    finally:
        setter(before)
    seen = {step: (int(pid), was) for step, pid, was in
            (line.split() for line in where.read_text().splitlines())}
    assert seen["analysis"] == (os.getpid(), "False")
    assert seen["metrics"][0] != os.getpid() and seen["metrics"][1] == "False"
    assert after is True


#: Run in a fresh interpreter: threads other tests leave behind in this one (a Dask
#: client's) would rightly forbid the fork.
_UNDER_A_BAR = """
import os, sys
from netvantage import analysis as nva
from netvantage.analysis import progress, summary
from netvantage.analysis.metrics import metrics as computing

pids = []
def noting_the_process(*args, **kwargs):
    with open(sys.argv[2], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return computing(*args, **kwargs)

summary.metrics_table = noting_the_process
summary.CONCURRENT_RECORDS = 1
progress.DELAY_S = 0.0
progress.configure(True)
campaign = nva.load(sys.argv[1])
with progress.step("analysing"):
    result = summary.analyse(campaign, weights={"ZM-LUN": 0.5, "ZA-JNB": 0.5}, n_boot=50)
assert not result.metrics.empty
print(os.getpid())
"""


def test_a_running_progress_bar_does_not_keep_the_metrics_from_their_child(
        tmp_path: Path) -> None:
    """The CLI runs analyse() inside a drawn "analysing" step, whose timer thread would
    forbid the fork: it is paused while the child is forked, so the metrics are still
    computed beside the rest (on a machine with more than one CPU)."""
    import os
    import subprocess
    import sys

    where = tmp_path / "pids"
    run = subprocess.run([sys.executable, "-c", _UNDER_A_BAR, str(SAMPLE), str(where)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "analysing" in run.stderr  # the bar was drawn
    parent = int(run.stdout.split()[-1])
    pids = [int(p) for p in where.read_text().split()]
    several = len(os.sched_getaffinity(0)) > 1
    assert len(pids) == 1 and (pids[0] != parent) is several


def test_a_failure_in_the_metrics_child_reaches_the_caller(
        campaign, monkeypatch: pytest.MonkeyPatch) -> None:
    from netvantage.analysis import summary

    def failing(*args, **kwargs):
        raise RuntimeError("planted failure in the metrics")

    monkeypatch.setattr(summary, "metrics_table", failing)
    monkeypatch.setattr(summary, "CONCURRENT_RECORDS", 1)
    monkeypatch.setattr(summary, "_may_fork", lambda: True)
    with pytest.raises(RuntimeError, match="planted failure"):
        summary.analyse(campaign, weights=AFRICA, n_boot=50)


def test_a_killed_metrics_child_is_not_waited_for_forever(
        campaign, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The child is the biggest process of a big analysis, the one the kernel kills
    when memory runs out: its death is noticed, said, and the metrics computed here."""
    import os
    import signal

    from netvantage.analysis import summary
    from netvantage.analysis.metrics import metrics as computing

    parent = os.getpid()

    def dying_in_the_child(*args, **kwargs):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return computing(*args, **kwargs)

    serial = summary.analyse(campaign, weights=AFRICA, n_boot=100, seed=3)
    monkeypatch.setattr(summary, "metrics_table", dying_in_the_child)
    monkeypatch.setattr(summary, "CONCURRENT_RECORDS", 1)
    monkeypatch.setattr(summary, "_may_fork", lambda: True)
    result = summary.analyse(campaign, weights=AFRICA, n_boot=100, seed=3)
    pd.testing.assert_frame_equal(result.metrics, serial.metrics, check_exact=True)
    assert "metrics child process ended without an answer" in capsys.readouterr().err


def test_a_failure_beside_the_metrics_child_ends_it(
        campaign, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rest of the analysis failing while the child computes: the child is ended,
    not waited for, and no process is left behind."""
    import multiprocessing
    import os
    import time

    from netvantage.analysis import summary

    parent = os.getpid()

    def slow_in_the_child(*args, **kwargs):
        if os.getpid() != parent:
            # The sleep is the thing under test: a child still computing, which must be
            # ended when the rest fails (the test's 60 s bound fails if it is waited for).
            time.sleep(120)
        raise AssertionError("not reached")

    def failing(*args, **kwargs):
        raise RuntimeError("planted failure beside the child")

    monkeypatch.setattr(summary, "metrics_table", slow_in_the_child)
    monkeypatch.setattr(summary, "rank", failing)
    monkeypatch.setattr(summary, "CONCURRENT_RECORDS", 1)
    monkeypatch.setattr(summary, "_may_fork", lambda: True)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="planted failure beside"):
        summary.analyse(campaign, weights=AFRICA, n_boot=50)
    assert time.monotonic() - started < 60
    assert multiprocessing.active_children() == []


def test_no_child_is_forked_while_another_thread_runs() -> None:
    """fork copies only the calling thread: with another one running (a progress bar's
    timer, say) the metrics are computed in this process."""
    import threading

    from netvantage.analysis import summary

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not summary._may_fork()
    finally:
        stop.set()
        other.join()
