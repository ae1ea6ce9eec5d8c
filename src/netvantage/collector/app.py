"""The ingest API: a Starlette app over a :class:`~netvantage.collector.store.RecordStore`.

``POST /v1/records``
    ``Authorization: Bearer TOKEN``, ``Content-Type: application/x-ndjson``,
    body: JSON Lines, one record per line.  200 answers
    ``{"accepted": N, "duplicates": M, "ids": [every id of the batch]}``;
    duplicates (the same record already stored: same agent, same id, same
    content) are acknowledged and not stored twice.  Ids are unique per agent:
    another agent's record with the same id is a different record.

    Optional request headers report the agent's health (recorded per agent,
    listed by ``netvantage collector agents``; a value that is not a finite
    number >= 0 is ignored, never a reason to refuse a batch):
    ``X-Netvantage-Backlog`` (records in its spool, this batch included),
    ``X-Netvantage-Oldest-Unsent`` (seconds the oldest of them has waited),
    ``X-Netvantage-Sent-At`` (the agent's clock, Unix seconds: the collector
    keeps the difference from its own clock as the agent's clock skew).

``GET /v1/health``
    ``{"ok": true}``, no token needed.

``GET /metrics``
    Prometheus metrics, no token needed (see :mod:`.metrics`).

Every refusal is ``{"error": "...", "problems": [{"line", "id", "reason"}]}``
and stores nothing of the batch.  The checks run in this order, and the
first that fails decides the status:

====  ==================================================================
401   no ``Authorization: Bearer`` token, or a token no agent holds
415   a content type other than ``application/x-ndjson``
413   a body over the limit (by ``Content-Length`` or as streamed)
400   a line that is not JSON (every such line listed)
422   a line that is JSON but not a valid record (every such line listed)
403   a valid record naming another agent than the token's (line listed)
409   a record whose (agent, id) is stored (or repeated in the batch) with
      other content: a *conflict*, every such id listed; the agent keeps
      those records (in its spool's ``rejected`` table) and says so
====  ==================================================================

The work per request is bounded: a batch whose fast all-good decoding fails
is read line by line only until :data:`MAX_PROBLEMS` bad lines are found;
the answer then says where reading stopped, lists those lines, and nothing of
the batch is stored.  No per-line object is built past that bound, and a
line is never decoded into generic Python objects (only checked as JSON), so
a 16 MiB body of garbage costs no more memory than the body itself.  A line
nested deeper than the decoder's recursion guard is "not JSON" (400).

Lines are numbered from 1; blank lines are skipped but counted.  Parsing and
validation run in one worker thread, the store write in another (a pipeline:
the next batch is decoded while this one is committed), so that the event
loop never waits on them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import SchemaError
from ..results import AnyRecord, decode_many, decode_record
from ..results.bulk import decode_block
from ..results.jsonl import NESTED_TOO_DEEP
from .store import AgentReport, RecordStore

__all__ = [
    "BLOCK_MIN_BYTES",
    "CONTENT_TYPE",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_PROBLEMS",
    "Problem",
    "Rejection",
    "check_batch",
    "create_app",
]

CONTENT_TYPE = "application/x-ndjson"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Bad lines after which a batch is no longer read (and the most an answer lists):
#: a 16 MiB body of two-byte lines would otherwise cost a problem object per line
#: (gigabytes) for an answer nobody reads past the first few.
MAX_PROBLEMS = 100
#: A body from this size on is decoded by :func:`netvantage.results.bulk.decode_block`,
#: its ping and tcp records' checks made over its columns; a smaller one record by
#: record.  The block decoder's numpy calls cost about 100 µs a batch whatever its size:
#: per record of the bench's ping and tcp mix (643 bytes each), 13.2 µs against 3.0 for
#: 10 records, 4.0 against 3.0 for 60, 3.1 against 3.0 for 120, 2.6 against 3.0 for 250
#: and 2.6 against 3.4 for 1,000.  (Counting the lines would cost 0.15 µs a record.)
BLOCK_MIN_BYTES = 96 * 1024
#: A problem's reason is cut to this many characters.
MAX_REASON_CHARS = 300

log = logging.getLogger("netvantage.collector")

# Checks that a line is JSON without building Python objects for its contents.
_syntax_decoder = msgspec.json.Decoder(msgspec.Raw)


class _IdOnly(msgspec.Struct):
    id: str | None = None


_id_decoder = msgspec.json.Decoder(_IdOnly)
_agent_of = operator.attrgetter("agent")
_id_of = operator.attrgetter("id")
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Problem:
    line: int | None
    id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a batch was refused: the HTTP status, one sentence, every problem found."""

    status: int
    error: str
    problems: list[Problem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        shown = self.problems[:MAX_PROBLEMS]
        body = {"error": self.error,
                "problems": [{"line": p.line, "id": p.id, "reason": p.reason} for p in shown]}
        return Response(_json.encode(body), status_code=self.status,
                        media_type="application/json", headers=self.headers)


def _classify(line: bytes) -> tuple[bool, str | None, str | None]:
    """(is JSON, its string ``id`` if any, why not JSON) for a line that failed the schema."""
    try:
        _syntax_decoder.decode(line)
    except msgspec.DecodeError as bad:
        return False, None, f"malformed JSON: {bad}"
    except RecursionError:
        return False, None, NESTED_TOO_DEEP
    try:
        return True, _id_decoder.decode(line).id, None
    except (msgspec.DecodeError, RecursionError):
        return True, None, None


def _numbered_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The lines of ``body`` numbered from 1, one at a time (never a list of them all)."""
    start, number, end_of_body = 0, 0, len(body)
    while start <= end_of_body:
        end = body.find(b"\n", start)
        if end < 0:
            end = end_of_body
        number += 1
        yield number, body[start:end]
        start = end + 1


def _cut(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 1] + "…"


def check_batch(body: bytes, agent: str) -> list[AnyRecord] | Rejection:
    """Decode and validate a JSON Lines batch sent with ``agent``'s token.

    Returns every record (ping and tcp ones usually as :mod:`netvantage.results.bulk`'s
    lean structs: the same fields and values, encoded to the same text, without the
    schema classes' methods), or the :class:`Rejection` listing the bad lines (at most
    :data:`MAX_PROBLEMS`: reading stops there).
    """
    try:
        # Fast path: one call for the whole batch (the usual case, all good).  A large
        # batch's ping and tcp records as results.bulk's lean structs (the same fields,
        # encoded alike), their checks made over the batch's columns (BLOCK_MIN_BYTES).
        records = decode_block(body) if len(body) >= BLOCK_MIN_BYTES else decode_many(body)
    except (msgspec.DecodeError, RecursionError, ArithmeticError, ValueError, SchemaError):
        # (Finding a record's "kind" skips the fields before it, and skipping a
        # value nested past the decoder's guard raises RecursionError.  A blank line
        # in the body also comes here: the block decoder takes one value per line.)
        return _explain_batch(body, agent)
    if set(map(_agent_of, records)) - {agent}:  # (a C loop: this runs for every record)
        return _explain_batch(body, agent)
    return records


def _explain_batch(body: bytes, agent: str) -> list[AnyRecord] | Rejection:
    """The slow path: line by line, collecting problems with their line numbers.

    Stops after :data:`MAX_PROBLEMS` problems; once a line is bad no record
    is kept (the batch will be refused whole), so memory stays bounded.
    """
    malformed: list[Problem] = []
    invalid: list[Problem] = []
    foreign: list[Problem] = []
    records: list[AnyRecord] = []
    bad = 0
    stopped_at: int | None = None
    for number, raw in _numbered_lines(body):
        line = raw.strip()
        if not line:
            continue
        try:
            record = decode_record(line)
        except SchemaError as exc:
            is_json, rid, why = _classify(line)
            if is_json:
                invalid.append(Problem(number, rid, _cut(str(exc))))
            else:
                malformed.append(Problem(number, None, _cut(why or str(exc))))
        else:
            if record.agent != agent:
                foreign.append(Problem(
                    number, record.id,
                    _cut(f"record names agent {record.agent!r} but the token belongs to "
                         f"{agent!r}")))
            elif not bad:
                records.append(record)
                continue
            else:
                continue
        if not bad:
            records.clear()  # the batch is refused: keep nothing of it
        bad += 1
        if bad >= MAX_PROBLEMS:
            stopped_at = number
            break
    if not bad:
        return records
    every = sorted([*malformed, *invalid, *foreign], key=lambda p: p.line or 0)
    if stopped_at is None:
        found = f"{bad} bad line(s) in all"
    else:
        found = (f"reading stopped at line {stopped_at} after {MAX_PROBLEMS} bad lines; "
                 "the rest was not checked")
    nothing = "nothing of this batch was stored"
    if malformed:
        return Rejection(400, f"{len(malformed)} line(s) are not JSON ({found}); {nothing}",
                         every)
    if invalid:
        return Rejection(422, f"{len(invalid)} line(s) do not fit the result schema ({found}); "
                              f"{nothing}", every)
    return Rejection(403, f"{len(foreign)} record(s) name another agent than the token's "
                          f"({agent!r}); an agent writes only in its own name ({found}); "
                          f"{nothing}", every)


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def _read_body(request: Request, limit: int) -> bytes | Rejection:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            return Rejection(400, f"Content-Length {declared!r} is not a number")
        if length > limit:
            await _drain(request, length if length <= 2 * limit else 0)
            return _too_large(limit, f"Content-Length is {length} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _drain(request, 2 * limit - size)
            return _too_large(limit, f"the body passed {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(request: Request, budget: int) -> None:
    """Read and drop up to ``budget`` more bytes of a refused body.

    A client that is still sending when the server closes gets a reset and
    may never read the 413; reading a bounded amount more (the body up to
    twice the limit) lets a well-behaved client see why.  Past that the
    connection is simply closed.
    """
    if budget <= 0:
        return
    async for chunk in request.stream():
        budget -= len(chunk)
        if budget < 0:
            return


def _too_large(limit: int, what: str) -> Rejection:
    return Rejection(413, f"{what}; the limit is {limit} bytes ({limit / 2**20:g} MiB): "
                          "send smaller batches; nothing of this batch was stored",
                     headers={"Connection": "close"})


def _header_number(request: Request, name: str) -> float | None:
    """A finite number >= 0 from a request header, or ``None``."""
    try:
        value = float(request.headers.get(name, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def agent_report(request: Request, agent: str, arrived: float) -> AgentReport:
    """What the request's ``X-Netvantage-*`` headers say about its agent (see above)."""
    backlog = _header_number(request, "x-netvantage-backlog")
    sent_at = _header_number(request, "x-netvantage-sent-at")
    return AgentReport(agent, backlog=None if backlog is None else int(backlog),
                       oldest_unsent_s=_header_number(request, "x-netvantage-oldest-unsent"),
                       clock_skew_s=None if sent_at is None else round(sent_at - arrived, 3))


def record_lines(body: bytes, records: int) -> list[str] | None:
    """The lines of a body that :func:`check_batch` decoded whole, as text: one per record.

    ``decode_lines`` skips the lines that are only JSON whitespace; a batch that
    decoded holds no other blank line (one of another space character would
    not have decoded), so the lines left are the records', in order.  ``None``
    (the store then encodes the records) if the count does not match or the
    body is not UTF-8.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()  # (the body's final newline)
    if len(lines) == records:
        # As many lines as records, each record from a line of its own: no line was
        # blank (the usual batch; no line need be looked at again).
        return lines
    lines = [line for line in lines if line and not line.isspace()]
    return lines if len(lines) == records else None


class _Decoded:
    """A batch between its two threads: decoded by one, stored by the other.

    The store thread takes the records out (:meth:`take`) so that they are
    freed there, as soon as the answer is built, and not later by the event
    loop when the request's coroutine ends (some 15,000 objects a batch).
    """

    __slots__ = ("_parts",)

    def __init__(self, records: list[AnyRecord], lines: list[str] | None) -> None:
        self._parts: tuple[list[AnyRecord], list[str] | None] | None = (records, lines)

    def take(self) -> tuple[list[AnyRecord], list[str] | None]:
        parts, self._parts = self._parts, None
        assert parts is not None, "a batch is stored once"
        return parts


def _decode(body: bytes, agent: str) -> _Decoded | Response:
    """The decoding thread's step: the batch checked, or the answer refusing it."""
    checked = check_batch(body, agent)
    if isinstance(checked, Rejection):
        log.warning("batch from %s refused (%d): %s", agent, checked.status, checked.error)
        return checked.response()
    return _Decoded(checked, record_lines(body, len(checked)))


def _store(store: RecordStore, decoded: _Decoded, agent: str, report: AgentReport) -> Response:
    """The store thread's step: the batch written and committed, then its answer."""
    checked, lines = decoded.take()
    result = store.add_records(checked, report, texts=lines)
    del lines
    if result.conflicts:
        shown = result.conflicts[:MAX_PROBLEMS]
        refusal = Rejection(
            409, f"{len(result.conflicts)} record(s) reuse an id this agent already sent with "
                 "other content (a conflict: the stored record is kept as it is); keep these "
                 "records and find out why their content changed; nothing of this batch was "
                 "stored",
            [Problem(None, rid, "conflict: this agent already sent a different record with "
                                "this id") for rid in shown])
        log.warning("batch from %s refused (409): %d conflict(s), e.g. %s", agent,
                    len(result.conflicts), shown[0])
        return refusal.response()
    log.info("batch from %s: %d accepted, %d duplicate(s)", agent, len(result.accepted),
             len(result.duplicates))
    answer = {"accepted": len(result.accepted), "duplicates": len(result.duplicates),
              "ids": list(map(_id_of, checked))}
    return Response(_json.encode(answer), media_type="application/json")


def create_app(store: RecordStore, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               close_store: bool = False,
               metrics: bool = True) -> Starlette:
    """The collector's ASGI app, writing to ``store``.

    ``metrics``: serve ``GET /metrics`` and count every request (:mod:`.metrics`).

    The caller owns (and closes) the store, unless ``close_store``: then the
    app closes it at lifespan shutdown (for servers that build the app, such
    as uvicorn's worker processes).
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    # A pipeline of two threads: one decodes and validates batches (pure Python,
    # under the GIL), the other writes and commits them (one writer per store;
    # SQLite releases the GIL while it inserts and while COMMIT waits for the
    # fsync), so the next batch is decoded while this one is written.  More
    # threads overlap no more work and cost CPU in GIL hand-overs and caches
    # evicted by each other (docs/collector-ingest.md, third round).
    decoding = anyio.CapacityLimiter(1)
    storing = anyio.CapacityLimiter(1)

    async def post_records(request: Request) -> Response:
        arrived = time.time()
        token = _bearer(request)
        if token is None:
            return Rejection(401, "no bearer token: send 'Authorization: Bearer TOKEN' (create "
                                  "one with 'netvantage collector add-agent NAME')",
                             headers={"WWW-Authenticate": "Bearer"}).response()
        agent = await run_in_threadpool(store.agent_for_token, token)
        if agent is None:
            return Rejection(401, "unknown token: no agent holds it (was it rotated?)",
                             headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
                             ).response()
        request.state.agent = agent  # for the metrics middleware's counts by agent
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != CONTENT_TYPE:
            return Rejection(415, f"content type {media or 'none'!r} is not {CONTENT_TYPE!r} "
                                  "(JSON Lines, one record per line)").response()
        try:
            body = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            log.warning("batch from %s: the client went away mid-body; nothing stored", agent)
            return Response(status_code=400)  # nobody is left to read it
        if isinstance(body, Rejection):
            log.warning("batch from %s refused (413): %s", agent, body.error)
            return body.response()
        report = agent_report(request, agent, arrived)
        decoded = await anyio.to_thread.run_sync(_decode, body, agent, limiter=decoding)
        del body  # (the records hold no reference to it)
        if isinstance(decoded, Response):
            return decoded
        return await anyio.to_thread.run_sync(_store, store, decoded, agent, report,
                                              limiter=storing)

    async def health(request: Request) -> Response:
        return Response(b'{"ok":true}', media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown paths and methods answer in the same JSON shape as refusals.
        assert isinstance(exc, HTTPException)
        return Rejection(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})
                         ).response()

    routes = [
        Route("/v1/records", post_records, methods=["POST"]),
        Route("/v1/health", health, methods=["GET"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_store:
                store.close()

    # -- Prometheus (collector/metrics.py): one route and one middleware, nothing else.
    middleware: list[Middleware] = []
    if metrics:
        from .metrics import CollectorMetrics, MetricsMiddleware

        counts = CollectorMetrics(store)
        routes.append(Route("/metrics", counts.endpoint, methods=["GET"]))
        middleware.append(Middleware(MetricsMiddleware, metrics=counts))

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                     lifespan=lifespan, middleware=middleware)
