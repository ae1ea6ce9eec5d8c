"""`netvantage measure ping` as a user types it: without --concurrency every target is active
at once and only the global pace spaces the requests (fping -i); --concurrency still bounds."""

from __future__ import annotations

import json

import pandas as pd

from conftest import run_cli
from netns import require_root_netns

TARGETS = [f"127.0.0.{i}" for i in range(1, 25)]  # loopback: every address answers
INTERVAL_S = 0.5


def starts(*extra: str) -> pd.Series:
    done = run_cli("measure", "ping", *TARGETS, "-n", "2", "-i", str(INTERVAL_S), "-W", "1",
                   *extra, timeout=60)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["body"]["received"] for r in records] == [2] * len(TARGETS)
    return pd.to_datetime(pd.Series([r["started_at"] for r in records]))


def test_a_plain_sweep_starts_every_target_before_any_second_request():
    require_root_netns()  # raw ICMP, or datagram sockets where ping_group_range allows
    spread = starts()
    # 24 targets at the 1 ms pace: all first requests leave within ~24 ms, long before
    # any target's second request (0.5 s later).
    assert spread.max() - spread.min() < pd.Timedelta(seconds=INTERVAL_S)


def test_concurrency_still_bounds_the_active_targets():
    require_root_netns()
    spread = starts("--concurrency", "8")
    # The ninth target starts only once one of the first eight has finished (its second
    # request answered, INTERVAL_S after its first).
    assert spread.max() - spread.min() >= pd.Timedelta(seconds=INTERVAL_S)
