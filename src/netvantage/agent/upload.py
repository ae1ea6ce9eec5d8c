"""Upload the spool to the collector: batches, retries with backoff, exact acknowledgement.

The protocol (``POST {url}/v1/records``, JSON Lines, bearer token) is the
collector's; see :mod:`netvantage.collector.app`.  The rules here:

* a record leaves the spool only when the collector has named its id in a 200
  answer (stored now or already stored: ids make a retried upload harmless);
* a network error, a timeout or a 5xx answer changes nothing: the batch is
  sent again after a backoff (exponential with jitter, capped);
* a 4xx answer that names bad records (400, 403, 422) moves just those to the
  spool's ``rejected`` table with the collector's reason, and the rest is sent
  again; a 413 halves the batch; a 401 means the token is wrong: nothing is
  dropped, the agent says so and retries slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spool import Pending, Spool

__all__ = ["UploadStats", "Uploader"]

MAX_BACKOFF_S = 60.0


@dataclass
class UploadStats:
    uploaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    failures: int = 0
    last_ok: float | None = None
    last_error: str | None = None
    batches: int = 0
    problems: list[str] = field(default_factory=list)


class Uploader:
    def __init__(self, url: str, token: str, spool: Spool, *, batch_size: int = 500,
                 interval_s: float = 5.0, timeout_s: float = 10.0,
                 ca_file: Path | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path.rstrip("/") or "") + "/v1/records"
        self.token = token
        self.spool = spool
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None) \
            if self.https else None
        self.stats = UploadStats()
        self._backoff = 0.0

    def _post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """One request, blocking (run in a thread); raises OSError on network trouble."""
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.request("POST", self.path, body=body, headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/x-ndjson",
            })
            response = conn.getresponse()
            raw = response.read(4 << 20)
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = {"error": raw[:200].decode("utf-8", "replace")}
            return response.status, payload if isinstance(payload, dict) else {}
        finally:
            conn.close()

    async def upload_once(self) -> bool:
        """Send one batch if there is one; True if the spool may hold more right now."""
        batch = await asyncio.to_thread(self.spool.batch, self.batch_size)
        if not batch:
            return False
        body = b"".join(p.data + b"\n" for p in batch)
        try:
            status, payload = await asyncio.to_thread(self._post, body)
        except (OSError, http.client.HTTPException, TimeoutError) as exc:
            self._fail(f"collector unreachable: {exc}")
            return False
        self.stats.batches += 1
        if status == 200:
            ids = [i for i in payload.get("ids", []) if isinstance(i, str)]
            sent = {p.id for p in batch}
            acked = [i for i in ids if i in sent]
            await asyncio.to_thread(self.spool.ack, acked)
            self.stats.uploaded += len(acked)
            self.stats.duplicates += int(payload.get("duplicates", 0) or 0)
            self.stats.last_ok = time.time()
            self._backoff = 0.0
            return len(batch) == self.batch_size
        reason = str(payload.get("error", f"HTTP {status}"))
        if status == 413:
            self.batch_size = max(1, self.batch_size // 2)
            if len(batch) == 1:
                await asyncio.to_thread(self.spool.reject, [(batch[0].id, reason)])
                self.stats.rejected += 1
            return True
        if status in (400, 403, 422):
            bad = self._bad_ids(batch, payload)
            if bad:
                await asyncio.to_thread(self.spool.reject, bad)
                self.stats.rejected += len(bad)
                self.stats.problems += [f"{rid}: {why}" for rid, why in bad][:20]
                return True
        if status == 401:
            self._fail(f"the collector refused the token (401: {reason}); fix the plan's "
                       "token — nothing is dropped meanwhile", floor=MAX_BACKOFF_S / 2)
            return False
        self._fail(f"collector answered {status}: {reason}")
        return False

    @staticmethod
    def _bad_ids(batch: list[Pending], payload: dict[str, Any]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for problem in payload.get("problems", []) or []:
            if not isinstance(problem, dict):
                continue
            reason = str(problem.get("reason", "refused"))
            rid = problem.get("id")
            line = problem.get("line")
            if not isinstance(rid, str) and isinstance(line, int) and 1 <= line <= len(batch):
                rid = batch[line - 1].id
            if isinstance(rid, str) and any(p.id == rid for p in batch):
                out.append((rid, reason))
        return out

    def _fail(self, message: str, floor: float = 0.0) -> None:
        self.stats.failures += 1
        self.stats.last_error = message
        self._backoff = min(MAX_BACKOFF_S, max(floor, self._backoff * 2 or 1.0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            more = await self.upload_once()
            if more:
                continue
            delay = self._backoff * random.uniform(0.5, 1.0) if self._backoff else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def drain(self, deadline_s: float) -> None:
        """On shutdown: keep sending while it works, for at most ``deadline_s``."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            failures = self.stats.failures
            more = await self.upload_once()
            if not more or self.stats.failures != failures:
                return
