"""The agent's and the collector's /metrics: every series from real records and requests.

(A real Prometheus scraping both: test_prometheus.py.)
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from conftest import NETVANTAGE, invoke_cli
from exposition import (
    fed_collector,
    lab_records,
    make_agent,
    parse,
    post,
    scrape,
    value,
)
from netvantage.agent.metrics import MetricsListenError, parse_listen, serve_metrics
from netvantage.collector.metrics import CollectorMetrics, MetricsMiddleware
from netvantage.collector.serve import BackgroundCollector
from netvantage.collector.store import Store
from netvantage.results import (
    READY_CHECKS,
    MailReadyBody,
    MailReadyRecord,
    PingBody,
    PingRecord,
    PmtuBody,
    PmtuRecord,
    ReadyCheck,
    encode_record,
    new_id,
)
from waiting import read_line


def exposition(collector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_probe_series_carry_the_figures_of_the_last_result_of_every_kind(tmp_path):
    agent = make_agent(tmp_path)
    records: dict[str, Any] = dict(lab_records())
    samples = parse(exposition(fed_collector(agent, records.values())))
    agent.spool.close()
    for kind, record in records.items():
        test = {"ping": "ping", "tcp": "tcp:25", "trace": "trace", "smtp": "smtp:25",
                "imap": "imap:993"}[kind]
        labels = {"agent": "lun-1", "region": "ZM-LUN", "test": test, "target": "t"}
        assert value(samples, "probe_success", **labels) == 1.0, kind
        assert value(samples, "probe_duration_seconds", **labels) == pytest.approx(
            record.duration_ms / 1000)
        assert value(samples, "probe_last_started_timestamp_seconds", **labels) == \
            pytest.approx(record.started_at.timestamp())
        assert value(samples, "probe_results_total", status="ok", **labels) == 1.0
    ping, tcp, trace = records["ping"], records["tcp"], records["trace"]
    for test, rec in (("ping", ping), ("tcp:25", tcp)):
        stats = rec.body.stats
        assert value(samples, "probe_rtt_seconds", test=test, quantile="0.5") == pytest.approx(
            stats.median_ms / 1000)
        assert value(samples, "probe_rtt_seconds", test=test, quantile="1") == pytest.approx(
            stats.max_ms / 1000)
        assert value(samples, "probe_loss_ratio", test=test) == rec.body.loss_ratio
    dest = trace.body.hops[trace.body.dest_ttl - 1]
    assert value(samples, "probe_trace_hops", test="trace") == trace.body.dest_ttl
    assert value(samples, "probe_loss_ratio", test="trace") == dest.loss_ratio
    assert value(samples, "probe_rtt_seconds", test="trace", quantile="0") == pytest.approx(
        dest.responders[0].stats.min_ms / 1000)
    for kind, test in (("smtp", "smtp:25"), ("imap", "imap:993")):
        body = records[kind].body
        ended = [p for p in body.phases if p.duration_ms is not None]
        assert ended
        for p in ended:
            assert value(samples, "probe_phase_duration_seconds", test=test,
                         phase=p.name) == pytest.approx(p.duration_ms / 1000)
        got = {dict(lv)["phase"] for (n, lv) in samples
               if n == "probe_phase_duration_seconds" and dict(lv)["test"] == test}
        assert got == {p.name for p in ended}
        cert = body.tls.cert
        assert value(samples, "probe_ssl_earliest_cert_expiry", test=test) == \
            cert.not_after.timestamp()
    # A mail record has no RTT series, a ping no phases: absent, not 0.
    assert value(samples, "probe_rtt_seconds", test="smtp:25", quantile="0.5") is None
    assert value(samples, "probe_phase_duration_seconds", test="ping") is None


def test_missing_is_missing_and_the_last_result_wins(tmp_path):
    agent = make_agent(tmp_path)
    job = next(j for j in agent.plan.jobs if j.test.kind == "ping")

    def ping(rtts: list[float | None], status: str) -> PingRecord:
        body = PingBody.from_samples(rtts, ip_version=4, socket="raw", payload_bytes=56,
                                     interval_s=1.0, timeout_s=1.0, dont_fragment=False)
        return PingRecord(id=new_id(), agent="lun-1", target="t", address="192.0.2.1",
                          started_at=datetime.now(UTC), duration_ms=3000.0,
                          status=status,  # type: ignore[arg-type]
                          error=None if status == "ok" else "no reply", body=body)

    collector = fed_collector(agent, [])
    collector.observe(job, ping([5.0, 7.0], "ok"))
    collector.observe(job, ping([None, None, None], "timeout"))
    samples = parse(exposition(collector))
    agent.spool.close()
    assert value(samples, "probe_success", test="ping") == 0.0
    assert value(samples, "probe_loss_ratio", test="ping") == 1.0
    assert value(samples, "probe_rtt_seconds", test="ping", quantile="0.5") is None
    assert value(samples, "probe_rtt_mean_seconds", test="ping") is None
    assert value(samples, "probe_results_total", test="ping", status="ok") == 1.0
    assert value(samples, "probe_results_total", test="ping", status="timeout") == 1.0


def test_pmtu_and_mailready_results_have_their_own_series(tmp_path):
    agent = make_agent(tmp_path)
    ping_job = next(j for j in agent.plan.jobs if j.test.kind == "ping")
    tcp_job = next(j for j in agent.plan.jobs if j.test.kind == "tcp")
    now = datetime.now(UTC)
    pmtu = PmtuRecord(id=new_id(), agent="lun-1", target="t", address="192.0.2.1",
                      started_at=now, duration_ms=900.0, status="ok",
                      body=PmtuBody(protocol="icmp", ip_version=4, local_mtu=1500,
                                    path_mtu=1400, reached=True, black_hole=True))
    checks = {name: ReadyCheck(status="fail" if name in ("spf", "dkim") else "pass",
                               summary=name) for name in READY_CHECKS}
    ready = MailReadyRecord(id=new_id(), agent="lun-1", target="t", address="192.0.2.1",
                            started_at=now, duration_ms=100.0, status="ok",
                            body=MailReadyBody(budget_s=20.0, verdict="fail",
                                               failing=["spf", "dkim"],
                                               **checks))  # type: ignore[arg-type]
    collector = fed_collector(agent, [])
    collector.observe(ping_job, pmtu)  # (the job only names the series)
    collector.observe(tcp_job, ready)
    samples = parse(exposition(collector))
    agent.spool.close()
    assert value(samples, "probe_path_mtu_bytes", test="ping") == 1400
    assert value(samples, "probe_pmtu_black_hole", test="ping") == 1
    assert value(samples, "probe_mailready_failed_checks", test="tcp:25") == 2
    assert value(samples, "probe_path_mtu_bytes", test="tcp:25") is None
    assert value(samples, "probe_rtt_seconds", test="ping", quantile="0.5") is None


def test_health_series_follow_the_spool_and_the_uploader(tmp_path):
    agent = make_agent(tmp_path)
    records = list(lab_records().values())
    for record in records[:3]:
        agent.spool.put(record)
    agent.spool.reject([(records[0].id, "refused for the test")])
    assert agent.uploader is not None
    agent.uploader.stats.failures = 4
    agent.uploader.stats.failing = 2
    agent.uploader.stats.uploaded = 17
    samples = parse(exposition(fed_collector(agent, [])))
    assert samples[("netvantage_agent_spool_depth", frozenset())] == 2
    assert samples[("netvantage_agent_spool_rejected", frozenset())] == 1
    oldest = samples[("netvantage_agent_spool_oldest_unsent_age_seconds", frozenset())]
    assert 0 < oldest < 600
    assert samples[("netvantage_agent_upload_errors_total", frozenset())] == 4
    assert samples[("netvantage_agent_upload_failing", frozenset())] == 2
    assert samples[("netvantage_agent_records_uploaded_total", frozenset())] == 17
    # No upload has worked yet: no last-success time (not 0, which would read as 1970).
    assert value(samples, "netvantage_agent_last_upload_success_timestamp_seconds") is None
    assert value(samples, "netvantage_agent_info", agent="lun-1", region="ZM-LUN") == 1
    agent.spool.close()
    # A closed spool (the agent stopping) drops its series instead of failing the scrape.
    after = parse(exposition(fed_collector(agent, [])))
    assert value(after, "netvantage_agent_spool_depth") is None
    assert value(after, "netvantage_agent_upload_errors_total") == 4


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9469", ("127.0.0.1", 9469)),
    ("[::1]:0", ("::1", 0)),
    (":9469", ("0.0.0.0", 9469)),
    ("localhost:80", ("localhost", 80)),
])
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["9469", "127.0.0.1:", "127.0.0.1:70000", "::1:9469",
                                  "[nothost]:1", "host:port"])
def test_bad_listen_addresses_are_refused_with_the_form_to_use(text):
    with pytest.raises(MetricsListenError, match="metrics-listen"):
        parse_listen(text)


def test_agent_run_refuses_a_bad_metrics_address_before_starting(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('[agent]\nname = "x"\n[[targets]]\nname = "t"\naddresses = '
                    '["127.0.0.1"]\ntests = ["tcp:1"]\n')
    result = invoke_cli("agent", "run", "--plan", str(plan), "--metrics-listen", "nowhere")
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr
    assert not (tmp_path / "x.spool.sqlite").exists()


def test_a_taken_port_is_a_clear_error_and_a_free_one_serves(tmp_path):
    agent = make_agent(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(MetricsListenError, match="cannot listen"):
            serve_metrics(agent, f"127.0.0.1:{port}")
    server = serve_metrics(agent, "127.0.0.1:0")
    try:
        text = scrape(server.url)
    finally:
        server.close()
        agent.spool.close()
    assert "netvantage_agent_spool_depth 0.0" in text
    assert "process_resident_memory_bytes" in text


# --------------------------------------------------------------------------- collector


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BackgroundCollector, Store]]:
    store = Store(tmp_path / "c.db")
    with BackgroundCollector(store) as collector:
        yield collector, store
    store.close()


def test_collector_counts_every_outcome_by_agent(served):
    collector, store = served
    token_a = store.add_agent("a")
    token_b = store.add_agent("b")
    records = list(lab_records().values())

    def batch(agent: str, recs) -> bytes:
        return b"".join(encode_record(msgspec.structs.replace(r, agent=agent)) + b"\n"
                        for r in recs)

    first = batch("a", records[:3])
    assert post(collector.port, token_a, first, **{"X-Netvantage-Backlog": "42"})[0] == 200
    assert post(collector.port, token_a, first)[0] == 200  # all three again: duplicates
    changed = msgspec.structs.replace(records[0], agent="a", duration_ms=1.0)
    assert post(collector.port, token_a, batch("a", [changed]))[0] == 409
    assert post(collector.port, token_b, b"{not json\n[]\n" + batch("b", records[3:]))[0] \
        == 400
    assert post(collector.port, token_b, batch("a", records[3:4]))[0] == 403
    assert post(collector.port, "wrong-token", first)[0] == 401
    assert post(collector.port, token_b, batch("b", records[3:]))[0] == 200
    samples = parse(scrape(collector.url + "/metrics"))
    assert value(samples, "netvantage_collector_records_ingested_total", agent="a") == 3
    assert value(samples, "netvantage_collector_records_ingested_total", agent="b") == 2
    assert value(samples, "netvantage_collector_records_duplicate_total", agent="a") == 3
    assert value(samples, "netvantage_collector_records_conflicting_total", agent="a") == 1
    assert value(samples, "netvantage_collector_records_rejected_total", agent="b",
                 code="400") == 2
    assert value(samples, "netvantage_collector_records_rejected_total", agent="b",
                 code="403") == 1
    assert value(samples, "netvantage_collector_batches_total", agent="", code="401") == 1
    assert value(samples, "netvantage_collector_batches_total", agent="a", code="200") == 2
    assert value(samples, "netvantage_collector_agent_backlog_records", agent="a") == 42
    assert value(samples, "netvantage_collector_agent_backlog_records", agent="b") is None
    assert value(samples, "netvantage_collector_store_records") == store.count() == 5
    size = value(samples, "netvantage_collector_store_bytes")
    assert size is not None and size >= store.path.stat().st_size
    assert value(samples, "netvantage_collector_request_duration_seconds_count",
                 route="/v1/records") == 7
    seen_a = value(samples, "netvantage_collector_agent_last_seen_timestamp_seconds", agent="a")
    seen_b = value(samples, "netvantage_collector_agent_last_seen_timestamp_seconds", agent="b")
    assert seen_a is not None and seen_b is not None and seen_a <= seen_b


def test_a_batch_is_counted_before_its_answer_reaches_the_client(tmp_path):
    """The middleware counts a batch before the last byte of its answer goes out, so a
    client holding its answer finds it counted by its next scrape, whichever worker
    process answers it (counted after the answer, a scrape could race the count)."""
    with Store(tmp_path / "c.db") as store:
        metrics = CollectorMetrics(store)
        answer = msgspec.json.encode({"accepted": 2, "duplicates": 0, "ids": ["x", "y"]})

        async def app(scope, receive, send) -> None:
            scope["state"]["agent"] = "a"  # (what post_records sets through request.state)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": answer[:5], "more_body": True})
            await send({"type": "http.response.body", "body": answer[5:]})

        seen: list[tuple[float | None, float | None]] = []

        async def send(message) -> None:
            if message["type"] == "http.response.body":
                samples = parse(generate_latest(metrics.registry).decode())
                seen.append((
                    value(samples, "netvantage_collector_records_ingested_total", agent="a"),
                    value(samples, "netvantage_collector_request_duration_seconds_count",
                          route="/v1/records")))

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "path": "/v1/records", "method": "POST", "headers": [],
                 "state": {}}
        asyncio.run(MetricsMiddleware(app, metrics)(scope, receive, send))
    # Not yet while the answer is incomplete; counted once, before its end is sent.
    assert seen == [(None, None), (2.0, 1.0)]


def test_a_count_that_fails_never_costs_the_agent_its_answer(tmp_path, caplog):
    with Store(tmp_path / "c.db") as store:
        metrics = CollectorMetrics(store)

        def broken(*args: Any) -> None:
            raise RuntimeError("a bug in the counting")

        metrics.record_batch = broken  # type: ignore[method-assign, assignment]

        async def app(scope, receive, send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b'{"accepted":1}'})

        sent: list[dict[str, Any]] = []

        async def send(message) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "path": "/v1/records", "method": "POST", "headers": [],
                 "state": {"agent": "a"}}
        asyncio.run(MetricsMiddleware(app, metrics)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert "counting a request for /metrics failed" in caplog.text


def test_with_workers_every_scrape_adds_up_every_workers_counts(tmp_path):
    """``collector serve --workers 2``: whichever worker answers /metrics, it counts all."""
    db = tmp_path / "c.db"
    with Store(db) as store:
        token = store.add_agent("a")
    before = set(Path(tempfile.gettempdir()).glob("netvantage-metrics-*"))
    proc = subprocess.Popen([NETVANTAGE, "collector", "serve", "--store", str(db), "--port",
                             "0", "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = read_line(proc.stdout, 60, "the collector's address")
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, line
        port = int(found.group(1))
        record = next(iter(lab_records().values()))

        def upload(n: int) -> int:
            copies = [msgspec.structs.replace(record, agent="a", id=new_id()) for _ in range(3)]
            return post(port, token, b"".join(encode_record(r) + b"\n" for r in copies),
                        **{"X-Netvantage-Backlog": "33"})[0]

        # Many at once, each on its own connection: the kernel hands them to both workers.
        with ThreadPoolExecutor(12) as pool:
            assert list(pool.map(upload, range(36))) == [200] * 36
        sent = 108
        for _ in range(6):
            samples = parse(scrape(f"http://127.0.0.1:{port}/metrics"))
            assert value(samples, "netvantage_collector_records_ingested_total",
                         agent="a") == sent
            assert value(samples, "netvantage_collector_batches_total", agent="a",
                         code="200") == 36
            assert value(samples, "netvantage_collector_agent_backlog_records", agent="a") == 33
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert set(Path(tempfile.gettempdir()).glob("netvantage-metrics-*")) <= before
