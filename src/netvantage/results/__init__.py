"""The result schema: one envelope for every measurement, a typed body per kind.

A record is one JSON object (one line of JSON Lines)::

    {"kind": "ping", "id": "0193…", "schema": 2, "agent": "lusaka-1",
     "region": "ZM-LUN", "target": "ams.example", "address": "192.0.2.7",
     "started_at": "2026-11-28T19:00:00.123456Z", "duration_ms": 4012.5,
     "status": "ok", "error": null, "source": "netvantage",
     "body": {...}}

Rules every record obeys (checked when a record is built *and* when it is read):

* ``id`` is assigned once, when the measurement starts, and never changes, so
  that an upload that is retried is recognisable as the same record.
* ``schema`` is :data:`SCHEMA_VERSION` (2) when written; a reader accepts every
  version of :data:`SCHEMA_VERSIONS` (schema 1 records: no summaries) and
  refuses a newer one.
* ``started_at`` is UTC wall-clock time (the *when*); every duration is taken
  from a monotonic clock or from kernel timestamps (the *how long*).
* Units live in field names (``_ms``, ``_ratio``, ``_bytes``, ``_s``).
* Missing is missing: a lost packet has ``null`` RTT, never 0; statistics
  are derived from the stored samples and are checked against them.
* A source that gives only statistics (an old Atlas firmware, a latency
  matrix) is stored as a ping or tcp body with a ``summary``
  (:class:`~netvantage.results.structs.RttSummary`): no samples, the counts the
  source gives (``null`` where it does not, so unknown loss is not 0 %), and
  ``stats`` holding the summary's figures so that readers of ``stats`` work.

The package has three rooms, and every name is importable from here
(``from netvantage.results import PingRecord, read_jsonl``):

* :mod:`~netvantage.results.structs` — the record types and the values they
  are built from (statuses, statistics, ids, clocks);
* :mod:`~netvantage.results.jsonl` — records as JSON and JSON Lines, read all
  or nothing;
* :mod:`~netvantage.results.schema` — the JSON Schema text committed as
  ``docs/result.schema.json``.
"""

from __future__ import annotations

from .jsonl import (
    decode_all,
    decode_many,
    decode_record,
    encode_record,
    read_jsonl,
    write_jsonl,
)
from .schema import (
    canonical_schema,
    json_schema,
    json_schema_text,
)
from .structs import (
    KINDS,
    PHASES_IMAP,
    PHASES_SMTP,
    READY_CHECKS,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    STATUSES,
    Annotation,
    AnyRecord,
    CertInfo,
    Diamond,
    Hop,
    IcmpError,
    ImapRecord,
    MailBody,
    MailReadyBody,
    MailReadyRecord,
    MdaLink,
    Multipath,
    Phase,
    PingBody,
    PingRecord,
    PmtuBody,
    PmtuProbe,
    PmtuRecord,
    ReadyCheck,
    ReadyStatus,
    Record,
    Responder,
    RttStats,
    RttSummary,
    SmtpRecord,
    Status,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    TlsInfo,
    TlsStall,
    TraceBody,
    TraceProbe,
    TraceRecord,
    ZoneAnswer,
    ms,
    new_id,
    rtt_stats,
    utc_now,
)

__all__ = [
    "KINDS",
    "PHASES_IMAP",
    "PHASES_SMTP",
    "READY_CHECKS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "STATUSES",
    "Annotation",
    "AnyRecord",
    "CertInfo",
    "Diamond",
    "Hop",
    "IcmpError",
    "ImapRecord",
    "MailBody",
    "MailReadyBody",
    "MailReadyRecord",
    "MdaLink",
    "Multipath",
    "Phase",
    "PingBody",
    "PingRecord",
    "PmtuBody",
    "PmtuProbe",
    "PmtuRecord",
    "ReadyCheck",
    "ReadyStatus",
    "Record",
    "Responder",
    "RttStats",
    "RttSummary",
    "SmtpRecord",
    "Status",
    "TcpAttempt",
    "TcpBody",
    "TcpRecord",
    "TlsInfo",
    "TlsStall",
    "TraceBody",
    "TraceProbe",
    "TraceRecord",
    "ZoneAnswer",
    "canonical_schema",
    "decode_all",
    "decode_many",
    "decode_record",
    "encode_record",
    "json_schema",
    "json_schema_text",
    "ms",
    "new_id",
    "read_jsonl",
    "rtt_stats",
    "utc_now",
    "write_jsonl",
]
