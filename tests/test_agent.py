"""The agent's scheduler on its own: cadence, concurrency, and a crashing probe that
does not take the others down.  (Real probes and a real collector: test_agent_lab.py.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from netvantage.agent.plan import parse_plan
from netvantage.agent.run import Agent
from netvantage.agent.spool import Spool
from netvantage.results import PingBody, PingRecord, new_id
from waiting import wait_until_async

PLAN = """
[agent]
name = "unit"
spool = "unit.spool.sqlite"
[schedule]
interval_s = 5
start_spread_s = 0
concurrency = 2
max_starts_per_s = 100
[[targets]]
name = "a"
addresses = ["192.0.2.1", "192.0.2.2"]
tests = ["ping", "tcp:25"]
"""


def test_crashing_probe_is_reported_and_the_rest_goes_on(tmp_path):
    import tomllib

    plan = parse_plan(tomllib.loads(PLAN), PLAN, base=tmp_path)
    running = 0
    peak = 0
    calls: Counter[str] = Counter()

    async def fake_measure(job, plan_, origin):
        nonlocal running, peak
        calls[job.key] += 1
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.05)  # a measurement takes a while: overlaps are possible
            if job.test.kind == "tcp" and job.address.endswith(".2"):
                raise RuntimeError("boom")
            body = PingBody.from_samples([1.0], ip_version=4, socket="raw", payload_bytes=56,
                                         interval_s=1.0, timeout_s=1.0, dont_fragment=False)
            return PingRecord(id=new_id(), agent=origin.agent, target=job.target.name,
                              address=job.address, started_at=datetime.now(UTC),
                              duration_ms=50.0, status="ok", body=body)
        finally:
            running -= 1

    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    agent = Agent(plan, audit=True, out=Out(), measure=fake_measure)  # type: ignore[arg-type]
    jobs = len(plan.jobs)

    async def two_rounds():
        # Stop when every job has run twice (at 0 s and 5 s) and each run has ended:
        # the third round is due at 10 s, far from the stop.
        task = asyncio.create_task(agent.run(drain_s=2.0))
        await wait_until_async(
            lambda: task.done() or agent.stats.measured + agent.stats.statuses["crashed"]
            >= 2 * jobs, 30, "two rounds of every job")
        agent.stop.set()
        return await task

    stats = asyncio.run(two_rounds())
    assert set(calls) == {job.key for job in plan.jobs}
    assert all(n == 2 for n in calls.values()), calls
    assert peak <= 2  # the plan's concurrency
    assert stats.statuses["crashed"] == 2 and stats.measured == 6
    assert any("crashed (a bug" in line for line in lines)
    spool = Spool(tmp_path / "unit.spool.sqlite")
    assert spool.depth() == 6
    spool.close()
