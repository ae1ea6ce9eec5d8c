"""What the Prometheus metrics cost: the collector's middleware per batch, the agent per result.

Three figures, CPU time (``time.process_time``) in this process, so that other
work on the machine slows them less than wall time (the load average is
printed beside them):

* collector: a ``POST /v1/records`` answer of ``--batch`` ids (500) passed
  through :class:`~netvantage.collector.metrics.MetricsMiddleware` versus the
  same app without it: µs per request and per record (issue 18's ingest budget
  is 10 µs of collector CPU per record);
* agent: :meth:`AgentCollector.observe` per result (a ping record with 5 RTTs);
* agent: one scrape (the exposition text) of a plan at the plan limit,
  2,000 measurements with a result each, its size, and the memory the
  collector's state holds (``tracemalloc``).

    .venv/bin/python bench/metrics_overhead.py [--batch 500] [--jobs 2000]

Not a test: prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import tomllib
import tracemalloc
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from netvantage.agent.metrics import AgentCollector
from netvantage.agent.plan import parse_plan
from netvantage.agent.run import Agent
from netvantage.collector.metrics import CollectorMetrics, MetricsMiddleware
from netvantage.results import PingBody, PingRecord, new_id

Message = MutableMapping[str, Any]


class _NoStore:
    def count(self) -> int:
        return 0


def middleware_cost(batch: int, rounds: int) -> float:
    """Extra CPU seconds per request that the middleware adds."""
    ids = [new_id() for _ in range(batch)]
    body = json.dumps({"accepted": batch, "duplicates": 0, "ids": ids}).encode()

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["agent"] = "agent-1"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        return None

    wrapped = MetricsMiddleware(app, CollectorMetrics(_NoStore()))
    scope = {"type": "http", "path": "/v1/records", "method": "POST",
             "headers": [(b"x-netvantage-backlog", b"12"), (b"content-type", b"x")]}

    async def per_call(fn: Any) -> float:
        t0 = time.process_time()
        for _ in range(rounds):
            await fn(dict(scope), receive, send)
        return (time.process_time() - t0) / rounds

    async def both() -> float:
        best = float("inf")
        for _ in range(3):  # the least disturbed of three
            best = min(best, await per_call(wrapped) - await per_call(app))
        return best

    return asyncio.run(both())


def agent_costs(jobs: int, work: Path) -> tuple[float, float, int, int]:
    """(CPU s per observe, CPU s per scrape, exposition bytes, state bytes)."""
    addresses = ", ".join(f'"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"'
                          for i in range(jobs))
    text = f"""
[agent]
name = "bench"
region = "ZZ-BEN"
spool = "bench.spool.sqlite"
[[targets]]
name = "t"
addresses = [{addresses}]
tests = ["ping"]
"""
    agent = Agent(parse_plan(tomllib.loads(text), text, base=work))
    body = PingBody.from_samples([20.1, 20.4, None, 21.0, 20.2], ip_version=4, socket="raw",
                                 payload_bytes=56, interval_s=1.0, timeout_s=2.0,
                                 dont_fragment=False)
    records = [PingRecord(id=new_id(), agent="bench", region="ZZ-BEN", target="t",
                          address=job.address, started_at=datetime.now(UTC),
                          duration_ms=4012.0, status="ok", body=body)
               for job in agent.plan.jobs]
    collector = AgentCollector(agent)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    for job, record in zip(agent.plan.jobs, records, strict=True):
        collector.observe(job, record)
    observe = (time.process_time() - t0) / len(records)
    state = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    t0 = time.process_time()
    for _ in range(5):
        exposition = generate_latest(registry)
    scrape = (time.process_time() - t0) / 5
    agent.spool.close()
    return observe, scrape, len(exposition), state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=500, help="records per batch")
    parser.add_argument("--rounds", type=int, default=20_000, help="requests timed")
    parser.add_argument("--jobs", type=int, default=2000, help="measurements of the plan")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs "
          "(shared machine; CPU time, not wall time)")
    per_request = middleware_cost(args.batch, args.rounds)
    print(f"collector middleware: {per_request * 1e6:.1f} us CPU per request of {args.batch} "
          f"records = {per_request * 1e6 / args.batch:.3f} us per record")
    with tempfile.TemporaryDirectory(prefix="nvt-metrics-") as work:
        observe, scrape, size, state = agent_costs(args.jobs, Path(work))
    print(f"agent: observe {observe * 1e6:.1f} us CPU per result; state for {args.jobs} "
          f"measurements {state / 1024:.0f} KiB ({state / args.jobs:.0f} B each); one scrape "
          f"{scrape * 1e3:.1f} ms CPU, {size / 1024:.0f} KiB of text")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
