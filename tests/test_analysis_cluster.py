"""``analyse --dask``: a real local cluster of worker processes, each with a memory limit
smaller than the dataset, gives the per-pair table and the ranking of the single-machine
path on the same region-partitioned dataset.

The dataset is the bundled campaign plus SMTP records whose greetings are long random
text (as a real server's banner can be, if not this long): the Parquet files are larger
than a worker's limit, while the frames stay small enough for the single-machine
comparison to be quick.  A worker holds a chunk of records at a time, never its
partition.
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest

from conftest import invoke_cli
from netvantage.analysis.cluster import analyse_on_cluster, partitions, write_partitioned
from netvantage.analysis.load import load
from netvantage.analysis.metrics import metrics
from netvantage.analysis.summary import analyse
from netvantage.results import SmtpRecord, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
WORKER_LIMIT = 450 * 2**20
GREETING_BYTES = 48_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cluster")
    records = read_jsonl(SAMPLE)
    smtp = [r for r in records if isinstance(r, SmtpRecord) and r.status == "ok"]
    padded: list[Any] = []
    n = 0
    while n * GREETING_BYTES < 1.5 * WORKER_LIMIT:  # text past the limit, after compression
        r = smtp[n % len(smtp)]
        banner = "220 " + base64.b64encode(os.urandom(GREETING_BYTES * 3 // 4)).decode()
        padded.append(msgspec.structs.replace(
            r, id=f"pad-{n:08d}", body=msgspec.structs.replace(r.body, greeting=banner)))
        n += 1
    source = base / "campaign.jsonl"
    write_jsonl([*records, *padded], source)
    out = base / "by-region"
    counts = write_partitioned(source, out)
    assert sum(counts.values()) == len(records) + len(padded)
    source.unlink()
    return out


def test_the_dataset_is_larger_than_a_worker(dataset: Path) -> None:
    files = list(dataset.rglob("*.parquet"))
    assert sum(f.stat().st_size for f in files) > WORKER_LIMIT
    parts = partitions(dataset)
    assert [p.name for p in parts] == sorted(f"region={r}" for r in
                                             ("CA-YYZ", "GB-LHR", "ZA-JNB", "ZM-LUN"))


def test_cluster_equals_one_machine(dataset: Path, tmp_path: Path) -> None:
    import dask

    # The workers' scratch space (and Dask's lock files) inside pytest's folder, removed
    # with it, not in the system's temporary directory.
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        on_cluster = analyse_on_cluster(dataset, "local", workers=2,
                                        memory=str(WORKER_LIMIT))
    campaign = load(dataset)
    single = analyse(campaign)
    pd.testing.assert_frame_equal(on_cluster.pairs, metrics(campaign, n_boot=500, seed=0),
                                  check_exact=True)
    pd.testing.assert_frame_equal(on_cluster.pairs, single.metrics, check_exact=True)
    pd.testing.assert_frame_equal(on_cluster.ranking.table, single.ranking.table,
                                  check_exact=True)
    pd.testing.assert_frame_equal(on_cluster.ranking.breakdown, single.ranking.breakdown,
                                  check_exact=True)
    assert on_cluster.weights == single.weights
    assert on_cluster.winner == single.winner
    peaks = next(n for n in on_cluster.notes if n.startswith("worker peak RSS"))
    assert all(float(x) < WORKER_LIMIT / 2**20
               for x in peaks.split(":")[1].split(",")), peaks


def test_cli_refuses_a_dataset_not_partitioned_by_region(tmp_path: Path) -> None:
    out = invoke_cli("analyse", "--dask", "local", str(SAMPLE))
    assert out.returncode == 2
    assert "netvantage partition" in out.stderr


def test_a_local_cluster_scratch_space_is_removed_afterwards() -> None:
    """Without a configured temporary-directory, Dask's workers would leave their
    dask-scratch-space folder in the system's temporary directory: a local cluster gets
    a folder of its own, removed when the analysis ends; a configured one is kept."""
    import dask

    from netvantage.analysis.cluster import _scratch

    with dask.config.set({"temporary-directory": None}):
        with _scratch("local"):
            folder = Path(dask.config.get("temporary-directory"))
            assert folder.is_dir() and folder.name.startswith("netvantage-dask-")
            (folder / "dask-scratch-space").mkdir()
        assert not folder.exists()
        with _scratch("tcp://127.0.0.1:8786"):
            assert dask.config.get("temporary-directory", None) is None


def test_partitions_categories_are_united_as_one_load_would_have_them() -> None:
    """Each partition's codes land on the united categories: a fixed order first (the
    loader's tuple rule), the rest sorted; missing values stay missing."""
    from netvantage.analysis.cluster import concat_frames

    a = pd.DataFrame({"kind": pd.Categorical(["tcp", "ping"]),
                      "region": pd.Categorical(["ZM-LUN", None]), "rtt_ms": [1.0, 2.0]})
    b = pd.DataFrame({"kind": pd.Categorical(["smtp", "ping", "ping"]),
                      "region": pd.Categorical(["AO-LAD", "ZA-JNB", "AO-LAD"]),
                      "rtt_ms": [3.0, 4.0, 5.0]})
    out = concat_frames([a, b], {"kind": ("ping", "tcp"), "region": "cat"})
    assert list(out.columns) == ["kind", "region", "rtt_ms"]
    assert list(out["kind"].cat.categories) == ["ping", "tcp", "smtp"]
    assert list(out["region"].cat.categories) == ["AO-LAD", "ZA-JNB", "ZM-LUN"]
    assert out["kind"].astype(object).tolist() == ["tcp", "ping", "smtp", "ping", "ping"]
    assert out["region"].iloc[0] == "ZM-LUN" and pd.isna(out["region"].iloc[1])
    assert out["region"].astype(object).tolist()[2:] == ["AO-LAD", "ZA-JNB", "AO-LAD"]
    assert out["rtt_ms"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_seen_keys_answer_as_a_set_of_tuples_would() -> None:
    """The partition's bounded key set: chunk by chunk, the same first meetings as a set of
    (agent, id) tuples, over keys repeated within and across chunks, ids shared by
    agents, and an agent name ending where another begins."""
    import random
    from types import SimpleNamespace

    import numpy as np

    from netvantage.analysis.cluster import SeenKeys, _digest

    rng = random.Random(7)
    agents = ["a", "ab", "b", "a1", "1"]
    records = [SimpleNamespace(agent=rng.choice(agents), id=f"{rng.randrange(3000):08d}")
               for _ in range(20_000)]
    # "a" + "1xxxxxxx" and "a1" + "xxxxxxx…": the same text if the parts were only joined
    records += [SimpleNamespace(agent="a", id="10000000"), SimpleNamespace(agent="a1",
                                                                           id="0000000")]
    seen, reference = SeenKeys(), set()
    got: list[bool] = []
    expected: list[bool] = []
    for at in range(0, len(records), 333):
        chunk = records[at:at + 333]
        got += seen.first_met(np.array([_digest(r.agent, r.id) for r in chunk],
                                       dtype="S16")).tolist()
        for r in chunk:
            expected.append((r.agent, r.id) not in reference)
            reference.add((r.agent, r.id))
    assert got == expected
    assert len(seen) == len(reference)
    assert got[-1] is True  # ("a1", "0000000") is new, whatever ("a", "10000000") was
    assert len(seen.first_met(np.empty(0, dtype="S16"))) == 0


def test_partition_keeps_each_record_once_the_first_met(tmp_path: Path) -> None:
    """A record given twice (two copies of a file) is written once; the same id from
    another agent is another record."""
    records = read_jsonl(SAMPLE)[:200]
    other = [msgspec.structs.replace(r, agent=r.agent + "-b") for r in records[:50]]
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    write_jsonl(records, first)
    write_jsonl([*records[::-1], *other], second)
    counts = write_partitioned([first, second], tmp_path / "out")
    assert sum(counts.values()) == len(records) + len(other)
    back = load(tmp_path / "out").measurements
    assert len(back) == len(records) + len(other)
    # (the loader names an id met from two agents "AGENT:ID": see analysis.load)
    assert Counter(back["agent"].astype(str)) == Counter(r.agent for r in [*records, *other])


def test_partition_by_workers_writes_what_one_process_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked workers decoding ranges of lines (small ones here, so that there are many)
    write the same rows, in the same order, as the records read in this process; a
    record repeated in a later range is kept once."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from netvantage.analysis import cluster

    records = read_jsonl(SAMPLE)
    source = tmp_path / "campaign.jsonl"
    write_jsonl([*records, *records[:300]], source)
    one = write_partitioned(source, tmp_path / "one", workers=1)
    monkeypatch.setattr(cluster, "RANGE_BYTES", 64 * 2**10)
    assert len(load_module().line_ranges(source, cluster.RANGE_BYTES)) > 10
    two = write_partitioned(source, tmp_path / "two", workers=2, flush_rows=500)
    assert one == two and sum(one.values()) == len(records)
    for part in partitions(tmp_path / "one"):
        a = pq.read_table(part).sort_by("started_at").to_pandas()
        b = pq.read_table(tmp_path / "two" / part.name).sort_by("started_at").to_pandas()
        pd.testing.assert_frame_equal(a, b)


def test_partition_by_workers_refuses_a_bad_line_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netvantage.analysis import cluster
    from netvantage.errors import SchemaError

    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    lines[700] = b'{"kind": "ping", "id": "broken"}\n'
    source = tmp_path / "campaign.jsonl"
    source.write_bytes(b"".join(lines))
    monkeypatch.setattr(cluster, "RANGE_BYTES", 64 * 2**10)
    with pytest.raises(SchemaError) as caught:
        write_partitioned(source, tmp_path / "out", workers=2)
    assert "1 bad line(s), nothing written" in str(caught.value)
    assert caught.value.problems[0].startswith("line 701: ")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def load_module() -> Any:
    import importlib

    return importlib.import_module("netvantage.analysis.load")


_THREADS_AT_FORK: list[int] = []


def _count_threads_at_fork() -> None:
    import threading

    if _THREADS_AT_FORK and _THREADS_AT_FORK[0] == -1:  # recording (this test only)
        _THREADS_AT_FORK.append(threading.active_count())


def test_partition_forks_its_workers_with_no_other_thread_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a progress bar drawn (its timer is a thread), the workers are forked while
    this process runs alone: fork copies only the calling thread, and a lock another
    one held would stay locked in the workers."""
    from netvantage.analysis import cluster, progress

    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr(cluster, "RANGE_BYTES", 64 * 2**10)
    source = tmp_path / "campaign.jsonl"
    write_jsonl(read_jsonl(SAMPLE), source)
    import threading

    os.register_at_fork(before=_count_threads_at_fork)
    before = threading.active_count()  # other tests' threads (Dask's) may still run
    _THREADS_AT_FORK[:] = [-1]
    try:
        progress.configure(True)
        write_partitioned(source, tmp_path / "out", workers=2)
    finally:
        progress.configure()
        recorded, _THREADS_AT_FORK[:] = _THREADS_AT_FORK[1:], []
    assert len(recorded) >= 2  # both workers forked here
    assert recorded == [before] * len(recorded), (before, recorded)  # the bar's timer: +1
