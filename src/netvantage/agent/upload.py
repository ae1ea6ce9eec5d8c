"""Upload the spool to the collector: batches, retries with backoff, exact acknowledgement.

The protocol (``POST {url}/v1/records``, JSON Lines, bearer token) is the
collector's; see :mod:`netvantage.collector.app`.  The rules here:

* a record leaves the spool only when the collector has named its id in a 200
  answer (stored now or already stored: ids make a retried upload harmless);
* a network error, a timeout or a 5xx answer changes nothing: the batch is
  sent again after a backoff (exponential with jitter, capped);
* a 4xx answer that names bad records (400, 403, 422) moves just those to the
  spool's ``rejected`` table with the collector's reason, and the rest is sent
  again; so does a 409 (a conflict: this agent already sent another record
  with the same id), whose records are kept there, never deleted; a 413
  halves the batch; a 401 means the token is wrong: nothing is dropped, the
  agent says so and retries slowly;
* an answer the uploader cannot read (not JSON, wrong types, truncated, a
  200 that acknowledges none of the batch) is a failed upload like a network
  error: logged, retried after a backoff, nothing dropped.  No answer and no
  error in a step ends the upload task: it logs and goes on.

Each request also says how the agent is doing, in headers the collector keeps
per agent (``netvantage collector agents``): ``X-Netvantage-Backlog`` (records
in the spool, this batch included), ``X-Netvantage-Oldest-Unsent`` (seconds
the oldest has waited) and ``X-Netvantage-Sent-At`` (this clock, Unix seconds,
from which the collector finds the clock skew).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spool import Pending, Spool

__all__ = ["UploadStats", "Uploader"]

MAX_BACKOFF_S = 60.0
MAX_ANSWER_BYTES = 4 << 20  # an answer names at most a batch of ids; more is not read


@dataclass
class UploadStats:
    uploaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    failures: int = 0
    failing: int = 0  # failures since the last upload that worked (0: working now)
    last_ok: float | None = None
    last_error: str | None = None
    batches: int = 0
    problems: list[str] = field(default_factory=list)


class Uploader:
    def __init__(self, url: str, token: str, spool: Spool, *, batch_size: int = 500,
                 interval_s: float = 5.0, timeout_s: float = 10.0,
                 ca_file: Path | None = None,
                 say: Callable[[str], None] | None = None) -> None:
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
        self.say = say or (lambda message: None)
        self._backoff = 0.0

    def _backlog_headers(self) -> dict[str, str]:
        """The spool's depth and oldest age (blocking: run in a thread)."""
        oldest = self.spool.oldest_age_s()
        headers = {"X-Netvantage-Backlog": str(self.spool.depth())}
        if oldest is not None:
            headers["X-Netvantage-Oldest-Unsent"] = f"{oldest:.1f}"
        return headers

    def _post(self, body: bytes, extra: dict[str, str] | None = None) -> tuple[int, Any]:
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
                **(extra or {}),
                "X-Netvantage-Sent-At": f"{time.time():.3f}",
            })
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER_BYTES)
            try:
                payload = json.loads(raw) if raw else {}
            except (ValueError, RecursionError):
                payload = {"error": "not JSON: " + raw[:120].decode("utf-8", "replace")}
            return response.status, payload
        finally:
            conn.close()

    async def upload_once(self) -> bool:
        """Send one batch if there is one; True if the spool may hold more right now."""
        batch = await asyncio.to_thread(self.spool.batch, self.batch_size)
        if not batch:
            return False
        body = b"".join(p.data + b"\n" for p in batch)
        try:
            backlog = await asyncio.to_thread(self._backlog_headers)
            status, payload = await asyncio.to_thread(self._post, body, backlog)
        except (OSError, http.client.HTTPException, TimeoutError) as exc:
            self._fail(f"collector unreachable: {exc}")
            return False
        self.stats.batches += 1
        if not isinstance(payload, dict):
            payload = {"error": f"an answer that is not a JSON object: {_short(payload)}"}
        if status == 200:
            ids = payload.get("ids")
            sent = {p.id for p in batch}
            acked = [i for i in ids if isinstance(i, str) and i in sent] \
                if isinstance(ids, list) else []
            if not acked:
                # A 200 that acknowledges nothing we sent is not a success: retrying
                # at once would spin, and the records must stay in the spool.
                self._fail("collector answered 200 without acknowledging the batch "
                           f"(ids: {_short(ids)}; {_short(payload.get('error', ''))})")
                return False
            await asyncio.to_thread(self.spool.ack, acked)
            self.stats.uploaded += len(acked)
            duplicates = payload.get("duplicates")
            if isinstance(duplicates, int) and not isinstance(duplicates, bool):
                self.stats.duplicates += max(0, duplicates)
            self._ok()
            return len(batch) == self.batch_size
        reason = _short(payload.get("error", f"HTTP {status}"))
        if status == 413:
            self.batch_size = max(1, self.batch_size // 2)
            if len(batch) == 1:
                await asyncio.to_thread(self.spool.reject, [(batch[0].id, reason)])
                self.stats.rejected += 1
            return True
        if status in (400, 403, 409, 422):
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
        problems = payload.get("problems")
        for problem in problems if isinstance(problems, list) else []:
            if not isinstance(problem, dict):
                continue
            reason = _short(problem.get("reason", "refused"))
            rid = problem.get("id")
            line = problem.get("line")
            if not isinstance(rid, str) and type(line) is int and 1 <= line <= len(batch):
                rid = batch[line - 1].id
            if isinstance(rid, str) and any(p.id == rid for p in batch):
                out.append((rid, reason))
        return out

    def _fail(self, message: str, floor: float = 0.0) -> None:
        if message != self.stats.last_error or not self.stats.failing:
            self.say(f"upload failed: {message} (retrying; nothing is dropped)")
        self.stats.failures += 1
        self.stats.failing += 1
        self.stats.last_error = message
        self._backoff = min(MAX_BACKOFF_S, max(floor, self._backoff * 2 or 1.0))

    def _ok(self) -> None:
        if self.stats.failing:
            self.say(f"uploads work again (after {self.stats.failing} failed attempt(s))")
        self.stats.failing = 0
        self.stats.last_ok = time.time()
        self._backoff = 0.0

    async def _step(self) -> bool:
        """One upload; whatever goes wrong is logged and backed off, never raised."""
        try:
            return await self.upload_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a spool error: the task must survive it
            self._fail(f"upload step failed: {exc!r}")
            return False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            more = await self._step()
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
            more = await self._step()
            if not more or self.stats.failures != failures:
                return


def _short(value: Any, limit: int = 200) -> str:
    """A bounded, printable rendering of something the collector sent."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return text + ("…" if len(text) >= limit else "")
