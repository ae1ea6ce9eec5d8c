"""The collector's ``GET /metrics`` for Prometheus.

Series (``agent`` is the agent the request's token belongs to; a request
without a valid token counts under no agent label):

==================================================  ===========================================
``netvantage_collector_records_ingested_total``     records newly stored, by agent
``netvantage_collector_records_duplicate_total``    records acknowledged that were already stored
``netvantage_collector_records_conflicting_total``  records refused with 409 (same agent and id,
                                                    other content; at most 100 counted per batch)
``netvantage_collector_records_rejected_total``     lines a refused batch named as bad, by agent
                                                    and ``code`` (400, 403, 422; at most 100
                                                    per batch, as the answer lists; a 413 or
                                                    415 names no line: see batches_total)
``netvantage_collector_batches_total``              ``POST /v1/records`` answers by agent and code
``netvantage_collector_request_duration_seconds``   request latency (histogram) by ``route``
``netvantage_collector_agent_last_seen_timestamp_seconds``  an agent's last authenticated request
``netvantage_collector_agent_backlog_records``      the spool depth an agent reported with its
                                                    last upload (``X-Netvantage-Backlog``)
``netvantage_collector_agent_oldest_unsent_age_seconds``  likewise ``X-Netvantage-Oldest-Unsent``
``netvantage_collector_store_records``              records in the store (counted at most once a
                                                    minute: a count reads a whole index)
``netvantage_collector_store_bytes``                the store's files on disk (SQLite: the
                                                    database and its write-ahead log)
==================================================  ===========================================

How it is hooked: an ASGI middleware times every request and reads the answer
of ``POST /v1/records`` — its status and, for a 200, the ``accepted`` and
``duplicates`` counts, for a refusal the ``problems`` it lists — which is the
documented protocol (see :mod:`.app`), so the ingest path itself carries no
metrics code; the only thing it tells the middleware is the agent the token
belongs to (``request.state.agent``).

With ``collector serve --workers N`` the workers are separate processes and a
scrape reaches one of them: :func:`shared_metrics_dir` (entered by the
serving parent before the workers start) makes the client library keep every
worker's counts in files of one directory (its multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``), and ``/metrics`` adds them up; the per-agent
gauges take the latest (backlog) or highest (last seen) value of any worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Protocol

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CollectorMetrics", "MetricsMiddleware", "shared_metrics_dir"]

log = logging.getLogger("netvantage.collector")

#: The client library's switch to its multiprocess mode (read when it is first imported).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """A fresh directory for the workers' counts, named in the environment they inherit.

    A directory the environment already names (the operator's choice) is used
    as it is and kept; otherwise a temporary one is made and removed afterwards.
    """
    given = os.environ.get(MULTIPROCESS_ENV)
    if given:
        yield Path(given)
        return
    where = Path(tempfile.mkdtemp(prefix="netvantage-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(where)
    try:
        yield where
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(where, ignore_errors=True)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes timed under their own name; anything else is ``other``.
ROUTES = frozenset({"/v1/records", "/v1/health", "/metrics"})
#: Latency buckets: a health check takes about a millisecond, a 16 MiB batch seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The store is counted again at most this often.
COUNT_EVERY_S = 60.0
#: Answers larger than this are not read for counts (a 200 lists every id of its batch:
#: 16 MiB of two-line records would be ~400k ids, about 16 MiB of answer).
MAX_ANSWER_BYTES = 32 << 20


class _Answer(msgspec.Struct):
    accepted: int = 0
    duplicates: int = 0
    problems: list[msgspec.Raw] = []


_answer = msgspec.json.Decoder(_Answer)


class _Counted(Protocol):
    def count(self) -> int: ...


class _StoreSize(Collector):
    """``store_records`` (cached, at most once a minute) and ``store_bytes`` at each scrape."""

    def __init__(self, store: _Counted) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._counted: tuple[float, int] | None = None

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        with self._lock:
            now = time.monotonic()
            if self._counted is None or now - self._counted[0] >= COUNT_EVERY_S:
                try:
                    self._counted = (now, self.store.count())
                except Exception:  # a closed or unreachable store: no figure, no failed scrape
                    self._counted = None
            if self._counted is not None:
                out.append(GaugeMetricFamily("netvantage_collector_store_records",
                                             "Records in the store (counted at most once a "
                                             "minute)", value=self._counted[1]))
        path = getattr(self.store, "path", None)
        if isinstance(path, Path):
            size = 0
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    size += os.stat(f"{path}{suffix}").st_size
            out.append(GaugeMetricFamily("netvantage_collector_store_bytes", "Size of the "
                                         "store's files on disk", value=size))
        return out


class CollectorMetrics:
    """The collector's registry and the series its middleware updates."""

    def __init__(self, store: _Counted) -> None:
        # The client's ``*_created`` series (a counter's start time) would double the
        # series per agent for nothing a rule or dashboard here reads (process-wide).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.ingested = Counter("netvantage_collector_records_ingested", "Records newly "
                                "stored", ["agent"], registry=r)
        self.duplicates = Counter("netvantage_collector_records_duplicate", "Records "
                                  "acknowledged that were already stored", ["agent"],
                                  registry=r)
        self.conflicts = Counter("netvantage_collector_records_conflicting", "Records "
                                 "refused as conflicts (409): same agent and id, other "
                                 "content", ["agent"], registry=r)
        self.rejected = Counter("netvantage_collector_records_rejected", "Lines a refused "
                                "batch named as bad (at most 100 per batch)",
                                ["agent", "code"], registry=r)
        self.batches = Counter("netvantage_collector_batches", "Answers to POST /v1/records",
                               ["agent", "code"], registry=r)
        self.latency = Histogram("netvantage_collector_request_duration_seconds",
                                 "Time from a request's start to the end of its answer",
                                 ["route"], buckets=BUCKETS, registry=r)
        self.last_seen = Gauge("netvantage_collector_agent_last_seen_timestamp_seconds",
                               "An agent's last authenticated request (Unix time)", ["agent"],
                               registry=r, multiprocess_mode="max")
        self.backlog = Gauge("netvantage_collector_agent_backlog_records", "Spool depth the "
                             "agent reported with its last upload", ["agent"], registry=r,
                             multiprocess_mode="mostrecent")
        self.oldest = Gauge("netvantage_collector_agent_oldest_unsent_age_seconds", "Age of "
                            "the oldest record the agent reported waiting in its spool",
                            ["agent"], registry=r, multiprocess_mode="mostrecent")
        self._store_size = _StoreSize(store)
        r.register(self._store_size)

    def record_batch(self, agent: str, status: int, answer: bytes,
                     headers: dict[str, str]) -> None:
        """Count one answer of ``POST /v1/records`` (``agent`` "" without a valid token)."""
        self.batches.labels(agent, str(status)).inc()
        if agent:
            self.last_seen.labels(agent).set(time.time())
            for header, gauge in (("x-netvantage-backlog", self.backlog),
                                  ("x-netvantage-oldest-unsent", self.oldest)):
                value = _number(headers.get(header))
                if value is not None:
                    gauge.labels(agent).set(value)
        if not answer or len(answer) > MAX_ANSWER_BYTES:
            return
        try:
            parsed = _answer.decode(answer)
        except msgspec.DecodeError:
            return
        if status == 200:
            self.ingested.labels(agent).inc(max(0, parsed.accepted))
            self.duplicates.labels(agent).inc(max(0, parsed.duplicates))
        elif status == 409:
            self.conflicts.labels(agent).inc(len(parsed.problems))
        elif 400 <= status < 500 and parsed.problems:
            self.rejected.labels(agent, str(status)).inc(len(parsed.problems))

    def exposition(self) -> bytes:
        """The text of ``/metrics``: this process's series, or every worker's."""
        if not os.environ.get(MULTIPROCESS_ENV):
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._store_size)
        return generate_latest(registry)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics`` (the store is counted in a worker thread)."""
        body = await run_in_threadpool(self.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < 1e15 else None


class MetricsMiddleware:
    """Times every request; hands each ``POST /v1/records`` answer to :class:`CollectorMetrics`."""

    def __init__(self, app: ASGIApp, metrics: CollectorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        ingest = path == "/v1/records" and scope.get("method") == "POST"
        status = 0
        chunks: list[bytes] = []
        size = 0
        counted = False

        def count() -> None:
            # Once per request, before its answer's last byte is handed to the
            # client: a client that has its answer finds it counted (by any worker
            # its next scrape reaches), never a moment later.
            nonlocal counted
            if counted:
                return
            counted = True
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            if ingest and status:
                state = scope.get("state") or {}
                agent = state.get("agent") if isinstance(state, dict) else None
                headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                           for k, v in scope.get("headers", [])
                           if k.lower().startswith(b"x-netvantage-")}
                self.metrics.record_batch(agent if isinstance(agent, str) else "", status,
                                          b"".join(chunks) if size <= MAX_ANSWER_BYTES
                                          else b"", headers)

        async def sending(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                if ingest:
                    body = message.get("body", b"")
                    size += len(body)
                    if size <= MAX_ANSWER_BYTES:
                        chunks.append(body)
                if not message.get("more_body", False):
                    try:
                        count()
                    except Exception:  # a count gone wrong never costs an agent its answer
                        log.exception("counting a request for /metrics failed")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            count()  # (an answer never finished: an error, a client gone)
