"""Ping records written straight to JSON, every rule of the schema checked once.

An importer turns millions of foreign results into records.  Built the usual
way, each record checks itself twice or more: :meth:`PingBody.from_samples`
derives the counts and statistics, ``__post_init__`` derives them again to
compare, and a decode of the encoded record (the only place where msgspec
checks ranges, lengths and patterns) runs every ``__post_init__`` a third
time.  That costs more than everything else an import does.

:class:`PingLines` writes the same bytes as :func:`encode_record` would for the
record the checked constructors build, checking each rule once:

* **Derived fields hold by construction.**  ``sent``, ``received``,
  ``loss_ratio`` and ``stats`` are computed by the very functions the checks
  compare against (:func:`rtt_stats`, the loss rule), from the samples as
  :meth:`PingBody.from_samples` rounds them; a summary body's ``stats`` comes
  from :meth:`RttSummary.stats` of a summary that checked itself when built.
* **Given fields are checked here**, once: the envelope's constraints
  (:func:`check_envelope`: id pattern and length, names 1–255 characters, UTC
  time, known status, no error text on an ``ok`` record, duration ≥ 0) and the
  body's (each RTT finite and ≥ 0, counts ≥ 0, IP version, socket).
* **Drift is caught.**  The first record of every :class:`PingLines` is also
  built through the checked constructors, encoded, decoded and compared byte
  for byte; if the two ever differ (the schema changed and this module was
  not updated), that record and every later one are built the checked way.
  ``tests/test_results_wire.py`` compares the two ways over many records.

Records are encoded from dicts whose keys follow the structs' encoding order
(``kind`` first, as msgspec writes a tagged struct), taken from the struct
definitions, not written out here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from ..errors import SchemaError
from .jsonl import decode_record, encode_record
from .structs import (
    _MS_DECIMALS,
    SCHEMA_VERSION,
    STATUSES,
    PingBody,
    PingRecord,
    RttSummary,
    _loss,
    rtt_stats,
)

__all__ = ["PingLines", "check_envelope"]

_ID = re.compile(r"[0-9A-Za-z._:-]{8,64}")
_STATUSES = frozenset(STATUSES)
_SOCKETS = frozenset({"raw", "dgram", None})


def _name(field: str, value: str | None, optional: bool) -> None:
    if value is None:
        if not optional:
            raise ValueError(f"{field} is missing")
        return
    if not 1 <= len(value) <= 255:
        raise ValueError(f"{field} has {len(value)} characters: 1 to 255 allowed")


def check_envelope(id: str, agent: str, region: str | None, target: str,
                   started_at: datetime, duration_ms: float, status: str,
                   error: str | None, source: str) -> None:
    """The envelope rules of :class:`~netvantage.results.Record` (raises ``ValueError``)."""
    if _ID.fullmatch(id) is None:
        raise ValueError(f"id {id!r} is not 8 to 64 of [0-9A-Za-z._:-]")
    _name("agent", agent, False)
    _name("region", region, True)
    _name("target", target, False)
    _name("source", source, False)
    offset = started_at.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        raise ValueError("started_at must be in UTC")
    if not (math.isfinite(duration_ms) and duration_ms >= 0):
        raise ValueError(f"duration_ms is {duration_ms!r}: a finite number >= 0")
    if status not in _STATUSES:
        raise ValueError(f"status {status!r} is not one of {list(STATUSES)}")
    if status == "ok" and error is not None:
        raise ValueError("an ok record carries no error text")


def _count(field: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 0):
        raise ValueError(f"body.{field} is {value!r}: a count >= 0")


def _check_body(fields: dict[str, Any]) -> None:
    """The rules of the body fields a caller gives (those present in ``fields``)."""
    if "ip_version" in fields and fields["ip_version"] not in (4, 6):
        raise ValueError(f"body.ip_version is {fields['ip_version']!r}: 4 or 6")
    if "socket" in fields and fields["socket"] not in _SOCKETS:
        raise ValueError(f"body.socket is {fields['socket']!r}")
    for name in ("payload_bytes", "duplicates"):
        if name in fields and not (type(fields[name]) is int and fields[name] >= 0):
            raise ValueError(f"body.{name} is {fields[name]!r}: a count >= 0")
    if "dont_fragment" in fields and type(fields["dont_fragment"]) is not bool:
        raise ValueError(f"body.dont_fragment is {fields['dont_fragment']!r}: true or false")
    for name in ("interval_s", "timeout_s"):
        v = fields.get(name, 0.0)
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"body.{name} is {v!r}: a finite number >= 0")


class PingLines:
    """Ping records as JSON (no newline), byte for byte :func:`encode_record` of the
    record the checked constructors build, each rule checked once (module docstring).

    ``body`` holds the body fields that are the same for every record of an
    import (``ip_version``, ``socket``, ``payload_bytes``, ``interval_s``,
    ``timeout_s``, ``dont_fragment``); any of them may be given again per record.
    A rule broken raises ``ValueError`` (as the constructors do).
    """

    def __init__(self, **body: Any) -> None:
        _check_body(body)
        #: False once a record written the fast way differed from the checked way.
        self.fast = True
        self._verify = True
        self._encoder = msgspec.json.Encoder()
        self._record: dict[str, Any] = {
            "kind": "ping", **dict.fromkeys(PingRecord.__struct_encode_fields__),
            "schema": SCHEMA_VERSION}
        self._body: dict[str, Any] = dict.fromkeys(PingBody.__struct_encode_fields__)
        self._body.update(duplicates=0, icmp_errors=[], rx_clock=None, summary=None, **body)
        self._fixed = body

    def samples(self, rtts_ms: Sequence[float | None], *, id: str, agent: str,
                region: str | None, target: str, address: str | None, started_at: datetime,
                duration_ms: float, status: str, error: str | None, source: str,
                **body: Any) -> bytes:
        """A body of samples (``None`` = no reply), as :meth:`PingBody.from_samples`."""
        envelope = (id, agent, region, target, address, started_at, duration_ms, status,
                    error, source)
        if not self.fast:
            return self._checked(envelope, PingBody.from_samples(rtts_ms, **self._fixed,
                                                                 **body))
        samples = [None if r is None else round(r, _MS_DECIMALS) for r in rtts_ms]
        for r in samples:
            if r is not None and not (r >= 0 and math.isfinite(r)):
                raise ValueError(f"an RTT is {r!r}: a finite number >= 0")
        sent = len(samples)
        received = sent - samples.count(None)
        fields = self._body.copy()
        if body:
            fields.update(body)
            _check_body(fields)
        fields.update(sent=sent, received=received, rtts_ms=samples, stats=rtt_stats(samples),
                      loss_ratio=_loss(sent, received))
        data = self._encode(envelope, fields)
        if self._verify:
            return self._compare(data, envelope, lambda: PingBody.from_samples(
                rtts_ms, **self._fixed, **body))
        return data

    def summary(self, summary: RttSummary, *, sent: int | None, received: int | None,
                id: str, agent: str, region: str | None, target: str, address: str | None,
                started_at: datetime, duration_ms: float, status: str, error: str | None,
                source: str, **body: Any) -> bytes:
        """A summary body, as :meth:`PingBody.from_summary` (``summary`` checked itself
        when it was built)."""
        envelope = (id, agent, region, target, address, started_at, duration_ms, status,
                    error, source)
        if not self.fast:
            return self._checked(envelope, PingBody.from_summary(
                summary, sent=sent, received=received, **self._fixed, **body))
        _count("sent", sent)
        _count("received", received)
        if sent is not None and received is not None and received > sent:
            raise ValueError(f"body.received ({received}) is more than sent ({sent})")
        if (summary.samples is not None and received is not None
                and summary.samples > received):
            raise ValueError(f"body.summary.samples ({summary.samples}) is more than "
                             f"received ({received})")
        if received == 0 and summary.figures():
            raise ValueError("body: received is 0 but the summary gives RTT figures")
        fields = self._body.copy()
        if body:
            fields.update(body)
            _check_body(fields)
        fields.update(sent=sent, received=received, rtts_ms=[], stats=summary.stats(),
                      loss_ratio=_loss(sent, received), summary=summary)
        data = self._encode(envelope, fields)
        if self._verify:
            return self._compare(data, envelope, lambda: PingBody.from_summary(
                summary, sent=sent, received=received, **self._fixed, **body))
        return data

    # ------------------------------------------------------------------ the two ways

    def _encode(self, envelope: tuple[Any, ...], body: dict[str, Any]) -> bytes:
        (rid, agent, region, target, address, started_at, duration_ms, status, error,
         source) = envelope
        check_envelope(rid, agent, region, target, started_at, duration_ms, status, error,
                       source)
        record = self._record.copy()
        record.update(id=rid, agent=agent, region=region, target=target, address=address,
                      started_at=started_at, duration_ms=duration_ms, status=status,
                      error=error, source=source, body=body)
        return self._encoder.encode(record)

    def _checked(self, envelope: tuple[Any, ...], body: PingBody) -> bytes:
        """The record built and checked by the constructors and by a decode."""
        (rid, agent, region, target, address, started_at, duration_ms, status, error,
         source) = envelope
        data = encode_record(PingRecord(
            id=rid, agent=agent, region=region, target=target, address=address,
            started_at=started_at, duration_ms=duration_ms, status=status,
            error=error, source=source, body=body))
        try:
            decode_record(data)
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        return data

    def _compare(self, fast: bytes, envelope: tuple[Any, ...],
                 build: Callable[[], PingBody]) -> bytes:
        """The first record: also built the checked way; the fast way is kept only if
        it wrote the same bytes."""
        data = self._checked(envelope, build())
        self._verify = False
        self.fast = fast == data
        return data
