"""The spool: durable puts, exact acks, rejects kept, and no torn record after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from netvantage.agent.spool import Spool
from netvantage.results import PingBody, PingRecord, new_id
from waiting import read_line


def record(i: int = 0) -> PingRecord:
    body = PingBody.from_samples([1.0 + i, None], ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=1.0, timeout_s=1.0, dont_fragment=False)
    return PingRecord(id=new_id(), agent="a", target=f"t{i % 3}", address="192.0.2.1",
                      started_at=datetime.now(UTC), duration_ms=1.0, status="ok", body=body)


def test_put_batch_ack_reject(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", audit=True)
    records = [record(i) for i in range(10)]
    for r in records:
        spool.put(r)
    spool.put(records[0])  # the same id twice is one row
    assert spool.depth() == 10
    batch = spool.batch(4)
    assert [p.id for p in batch] == [r.id for r in records[:4]]  # oldest first
    assert spool.ack([p.id for p in batch[:3]] + ["not-there"]) == 3
    spool.reject([(batch[3].id, "schema says no")])
    assert spool.depth() == 6 and spool.rejected_count() == 1
    assert {a for a, _, _ in spool.audit_ids()} == {r.id for r in records}
    spool.close()
    again = Spool(tmp_path / "s.sqlite")
    assert again.depth() == 6
    again.close()


WRITER = """
import sys, time
from datetime import UTC, datetime

import pytest
from netvantage.agent.spool import Spool
from netvantage.results import PingBody, PingRecord, new_id
spool = Spool(__import__("pathlib").Path(sys.argv[1]), audit=True)
i = 0
while True:
    body = PingBody.from_samples([1.0 + i % 100], ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=1.0, timeout_s=1.0, dont_fragment=False)
    spool.put(PingRecord(id=new_id(), agent="a", target="t", started_at=datetime.now(UTC),
                         duration_ms=1.0, status="ok", body=body))
    if i == 0:
        print("wrote one", flush=True)  # from here on, every instant is mid-write or between
    i += 1
"""


def test_kill_9_mid_write_leaves_only_whole_records(tmp_path):
    path = tmp_path / "k.sqlite"
    total = 0
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert read_line(proc.stdout, 30, "the writer's first record").strip() == "wrote one"
        time.sleep(0.1 * round_)  # not a wait: where the kill lands differs per round
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        spool = Spool(path, audit=True)  # quick_check passes or this raises
        rows = spool.batch(1_000_000)   # decodes every row; a torn one would be rejected
        assert spool.rejected_count() == 0
        assert len(rows) == spool.depth() == len(spool.audit_ids()) > total
        total = len(rows)
        spool.close()


def test_a_full_disk_is_reported_as_such_and_nothing_is_half_written():
    from netvantage.agent.spool import SpoolWriteError
    from tmpfs import fill, small_tmpfs

    with small_tmpfs(2048) as disk:
        spool = Spool(disk / "s.sqlite", audit=True)
        kept = []
        filler = fill(disk, 64 << 10)
        with pytest.raises(SpoolWriteError) as info:
            for i in range(10_000):
                r = record(i)
                spool.put(r)
                kept.append(r.id)
        # The real cause, not "cannot rollback - no transaction is active".
        message = str(info.value)
        assert "SQLITE_FULL" in message and "disk is full" in message, message
        assert "rollback" not in message.lower(), message
        assert spool.depth() == len(kept) > 0  # the failed put left nothing behind
        filler.unlink()  # room again: the same spool goes on working
        spool.put(record(1))
        assert spool.depth() == len(kept) + 1
        assert spool.ack(kept) == len(kept)
        spool.close()
