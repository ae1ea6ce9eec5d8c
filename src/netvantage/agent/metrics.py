"""The agent's ``/metrics`` for Prometheus (``agent run --metrics-listen HOST:PORT``).

Imported only when that option is given, so an agent without it never loads
prometheus_client (about 2.5 MB of resident memory).

Series per measurement (labels ``test`` as the plan writes it, ``target``,
``address``, plus ``agent`` and ``region`` so that rules can group by region
without relabelling), named after blackbox_exporter's where the meaning is the
same, all from the *last* result of that measurement:

=====================================  ==============================================
``probe_success``                      1 if the last result's status was ``ok``
``probe_duration_seconds``             how long the measurement took
``probe_rtt_seconds{quantile}``        RTT min (0), median (0.5) and max (1) of the
                                       last result's samples (ping, tcp: connect time,
                                       trace: the destination's replies)
``probe_rtt_mean_seconds``             their mean; ``probe_rtt_jitter_seconds`` the mean
                                       difference of consecutive RTTs (RFC 3550, 6.4.1)
``probe_loss_ratio``                   lost share of the last result's probes
``probe_phase_duration_seconds{phase}``  SMTP/IMAP: each dialogue phase that ended
``probe_ssl_earliest_cert_expiry``     SMTP/IMAP: the server certificate's notAfter
``probe_trace_hops``                   trace: the destination's TTL (hops seen if not reached)
``probe_path_mtu_bytes``               pmtu: the path MTU found (absent if the search did not end)
``probe_pmtu_black_hole``              pmtu: 1 if a smaller MTU was learned without an ICMP
                                       "fragmentation needed" (RFC 2923)
``probe_mailready_failed_checks``      mailready: how many checks failed
``probe_last_started_timestamp_seconds``  when the last result started (Unix time)
``probe_results_total{status}``        results so far, by status (a counter)
=====================================  ==============================================

A figure the last result does not have (no reply: no RTT; a phase that never
ended) is absent, never 0, as in the records themselves.

Agent health (``netvantage_agent_*``): ``spool_depth`` (records waiting to be
uploaded), ``spool_oldest_unsent_age_seconds`` (0 when nothing waits),
``spool_rejected`` (records the collector refused, kept in the spool),
``held_in_memory`` and ``spool_paused`` (spool writes failing),
``upload_errors_total``, ``upload_failing`` (failed attempts since the last
upload that worked), ``last_upload_success_timestamp_seconds`` (absent until
one worked), ``records_uploaded_total``, ``skipped_total{reason}``,
``lost_total``, ``info{agent,region,version}``; plus prometheus_client's
``process_*`` series (resident memory, CPU, open files).

Everything is read when Prometheus scrapes (a custom collector): a result
costs one small tuple per measurement, not a set of client-library metric
objects, and the spool is asked for its depth only at scrape time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ..errors import NetvantageError
from ..results import (
    AnyRecord,
    ImapRecord,
    MailReadyRecord,
    PingRecord,
    PmtuRecord,
    SmtpRecord,
    TcpRecord,
    TraceRecord,
)

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .plan import Job
    from .run import Agent

__all__ = ["AgentCollector", "MetricsListenError", "MetricsServer", "parse_listen",
           "serve_metrics"]

_JOB_LABELS = ("agent", "region", "test", "target", "address")


class MetricsListenError(NetvantageError, ValueError):
    """``--metrics-listen`` is not HOST:PORT, or nothing can listen there."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every IPv4 interface) → (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise MetricsListenError(f"--metrics-listen {text!r}: give HOST:PORT, [IPV6]:PORT or "
                                 ":PORT (e.g. 127.0.0.1:9469), the port 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise MetricsListenError(f"--metrics-listen {text!r}: {host!r} in brackets is not "
                                     "an IPv6 address") from None
    elif ":" in host:
        raise MetricsListenError(f"--metrics-listen {text!r}: write an IPv6 address in "
                                 "brackets, e.g. [::1]:9469")
    return host or "0.0.0.0", int(port_text)


@dataclass(frozen=True, slots=True)
class _Last:
    """What the series need of one measurement's last result (seconds, not ms)."""

    success: bool
    duration_s: float
    started_ts: float
    rtt: tuple[float | None, float | None, float | None] | None  # min, median, max
    mean_s: float | None
    jitter_s: float | None
    loss: float | None
    phases: tuple[tuple[str, float], ...]
    hops: int | None
    cert_expiry_ts: float | None
    path_mtu: int | None = None
    black_hole: bool | None = None
    ready_failed: int | None = None


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def summarise(record: AnyRecord) -> _Last:
    """The figures of ``record`` that the per-measurement series show."""
    rtt: tuple[float | None, float | None, float | None] | None = None
    mean = jitter = loss = cert = None
    phases: tuple[tuple[str, float], ...] = ()
    hops = None
    if isinstance(record, PingRecord | TcpRecord):
        stats = record.body.stats
        rtt = (_s(stats.min_ms), _s(stats.median_ms), _s(stats.max_ms))
        mean, jitter, loss = _s(stats.mean_ms), _s(stats.jitter_ms), record.body.loss_ratio
    elif isinstance(record, TraceRecord):
        body = record.body
        hops = body.dest_ttl if body.dest_ttl is not None else len(body.hops)
        if body.dest_ttl is not None and body.dest_ttl <= len(body.hops):
            hop = body.hops[body.dest_ttl - 1]
            loss = hop.loss_ratio
            responder = next((r for r in hop.responders if r.address == record.address),
                             hop.responders[0] if hop.responders else None)
            if responder is not None:
                st = responder.stats
                rtt = (_s(st.min_ms), _s(st.median_ms), _s(st.max_ms))
                mean, jitter = _s(st.mean_ms), _s(st.jitter_ms)
    elif isinstance(record, SmtpRecord | ImapRecord):
        phases = tuple((p.name, p.duration_ms / 1000.0) for p in record.body.phases
                       if p.duration_ms is not None)
        tls = record.body.tls
        if tls is not None and tls.cert is not None:
            cert = tls.cert.not_after.timestamp()
    path_mtu = black_hole = ready_failed = None
    if isinstance(record, PmtuRecord):
        path_mtu, black_hole = record.body.path_mtu, record.body.black_hole
    elif isinstance(record, MailReadyRecord):
        ready_failed = len(record.body.failing)
    if rtt is not None and all(v is None for v in rtt):
        rtt = None
    return _Last(success=record.status == "ok", duration_s=record.duration_ms / 1000.0,
                 started_ts=record.started_at.timestamp(), rtt=rtt, mean_s=mean,
                 jitter_s=jitter, loss=loss, phases=phases, hops=hops, cert_expiry_ts=cert,
                 path_mtu=path_mtu, black_hole=black_hole, ready_failed=ready_failed)


class AgentCollector(Collector):
    """The series of one :class:`~netvantage.agent.run.Agent`, built at each scrape."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._region = agent.plan.region or ""
        # (test, target, address) -> last result's figures / results by status.
        self._last: dict[tuple[str, str, str], _Last] = {}
        self._counts: dict[tuple[str, str, str], Counter[str]] = {}

    def observe(self, job: Job, record: AnyRecord) -> None:
        """Called by the agent for every result (on its event loop)."""
        key = (job.test.label, job.target.name, record.address or job.address)
        self._last[key] = summarise(record)
        self._counts.setdefault(key, Counter())[record.status] += 1

    def collect(self) -> Iterator[Metric]:
        yield from self._probe_series()
        yield from self._health_series()

    def _probe_series(self) -> Iterator[Metric]:
        names = _JOB_LABELS
        success = GaugeMetricFamily("probe_success", "1 if the last result was ok, else 0",
                                    labels=names)
        duration = GaugeMetricFamily("probe_duration_seconds",
                                     "How long the last measurement took", labels=names)
        rtt = GaugeMetricFamily("probe_rtt_seconds", "RTT of the last result: min (quantile "
                                "0), median (0.5), max (1)", labels=(*names, "quantile"))
        mean = GaugeMetricFamily("probe_rtt_mean_seconds", "Mean RTT of the last result",
                                 labels=names)
        jitter = GaugeMetricFamily("probe_rtt_jitter_seconds", "Mean difference of "
                                   "consecutive RTTs in the last result", labels=names)
        loss = GaugeMetricFamily("probe_loss_ratio", "Share of the last result's probes "
                                 "that got no answer", labels=names)
        phase = GaugeMetricFamily("probe_phase_duration_seconds", "SMTP/IMAP: duration of "
                                  "each dialogue phase of the last result",
                                  labels=(*names, "phase"))
        cert = GaugeMetricFamily("probe_ssl_earliest_cert_expiry", "SMTP/IMAP: notAfter of "
                                 "the server certificate (Unix time)", labels=names)
        hops = GaugeMetricFamily("probe_trace_hops", "Trace: TTL of the destination (hops "
                                 "seen when it was not reached)", labels=names)
        started = GaugeMetricFamily("probe_last_started_timestamp_seconds", "When the last "
                                    "result started (Unix time)", labels=names)
        mtu = GaugeMetricFamily("probe_path_mtu_bytes", "Pmtu: the path MTU found",
                                labels=names)
        hole = GaugeMetricFamily("probe_pmtu_black_hole", "Pmtu: 1 if a smaller MTU was "
                                 "learned without a fragmentation-needed message", labels=names)
        ready = GaugeMetricFamily("probe_mailready_failed_checks", "Mailready: checks that "
                                  "failed", labels=names)
        results = CounterMetricFamily("probe_results", "Results since the agent started, by "
                                      "status", labels=(*names, "status"))
        agent = self.agent.plan.agent
        for (test, target, address), last in list(self._last.items()):
            lv = [agent, self._region, test, target, address]
            success.add_metric(lv, 1.0 if last.success else 0.0)
            duration.add_metric(lv, last.duration_s)
            started.add_metric(lv, last.started_ts)
            if last.rtt is not None:
                for q, value in zip(("0", "0.5", "1"), last.rtt, strict=True):
                    if value is not None:
                        rtt.add_metric([*lv, q], value)
            if last.mean_s is not None:
                mean.add_metric(lv, last.mean_s)
            if last.jitter_s is not None:
                jitter.add_metric(lv, last.jitter_s)
            if last.loss is not None:
                loss.add_metric(lv, last.loss)
            for name, seconds in last.phases:
                phase.add_metric([*lv, name], seconds)
            if last.cert_expiry_ts is not None:
                cert.add_metric(lv, last.cert_expiry_ts)
            if last.hops is not None:
                hops.add_metric(lv, float(last.hops))
            if last.path_mtu is not None:
                mtu.add_metric(lv, float(last.path_mtu))
            if last.black_hole is not None:
                hole.add_metric(lv, 1.0 if last.black_hole else 0.0)
            if last.ready_failed is not None:
                ready.add_metric(lv, float(last.ready_failed))
            for status, n in list(self._counts.get((test, target, address), {}).items()):
                results.add_metric([*lv, status], float(n))
        yield from (success, duration, rtt, mean, jitter, loss, phase, cert, hops, mtu, hole,
                    ready, started, results)

    def _health_series(self) -> Iterator[Metric]:
        from .. import __version__

        a = self.agent
        info = GaugeMetricFamily("netvantage_agent_info", "The agent's name, region and "
                                 "netvantage version (always 1)",
                                 labels=("agent", "region", "version"))
        info.add_metric([a.plan.agent, self._region, __version__], 1.0)
        yield info
        # The spool may be closed (the agent is stopping): then its series are absent.
        with contextlib.suppress(sqlite3.Error):
            depth, oldest, rejected = (a.spool.depth(), a.spool.oldest_age_s(),
                                       a.spool.rejected_count())
            yield GaugeMetricFamily("netvantage_agent_spool_depth",
                                    "Records in the spool waiting to be uploaded", value=depth)
            yield GaugeMetricFamily("netvantage_agent_spool_oldest_unsent_age_seconds",
                                    "Age of the oldest record waiting (0: none waits)",
                                    value=oldest or 0.0)
            yield GaugeMetricFamily("netvantage_agent_spool_rejected", "Records the "
                                    "collector refused, kept in the spool's rejected table",
                                    value=rejected)
        yield GaugeMetricFamily("netvantage_agent_held_in_memory", "Results not yet in the "
                                "spool because its writes fail", value=len(a._held))
        yield GaugeMetricFamily("netvantage_agent_spool_paused", "1 while spool writes fail "
                                "and measuring is paused", value=0 if a.spool_error is None
                                else 1)
        s = a.stats
        yield CounterMetricFamily("netvantage_agent_lost", "Results that never reached the "
                                  "spool", value=s.lost)
        skipped = CounterMetricFamily("netvantage_agent_skipped", "Rounds not measured",
                                      labels=("reason",))
        skipped.add_metric(["busy"], s.skipped_busy)
        skipped.add_metric(["spool"], s.skipped_spool)
        yield skipped
        up = a.uploader.stats if a.uploader is not None else None
        if up is None:
            return
        yield CounterMetricFamily("netvantage_agent_upload_errors", "Upload attempts that "
                                  "failed (network, 5xx, unreadable answers)",
                                  value=up.failures)
        yield GaugeMetricFamily("netvantage_agent_upload_failing", "Failed upload attempts "
                                "since the last one that worked (0: uploads work)",
                                value=up.failing)
        yield CounterMetricFamily("netvantage_agent_records_uploaded", "Records the "
                                  "collector acknowledged", value=up.uploaded)
        if up.last_ok is not None:
            yield GaugeMetricFamily("netvantage_agent_last_upload_success_timestamp_seconds",
                                    "When an upload last worked (Unix time)", value=up.last_ok)


class MetricsServer:
    """The HTTP server of ``/metrics`` in a daemon thread; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = str(server.server_address[0]), int(server.server_address[1])
        self.url = f"http://{f'[{host}]' if ':' in str(host) else host}:{port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(agent: Agent, listen: str) -> MetricsServer:
    """Serve ``agent``'s series on ``listen`` (HOST:PORT) and hook it to the agent's results."""
    host, port = parse_listen(listen)
    collector = AgentCollector(agent)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise MetricsListenError(f"--metrics-listen {listen}: cannot listen there: "
                                 f"{exc.strerror or exc}") from None
    agent.observers.append(collector.observe)
    return MetricsServer(server, thread)
