"""Records as JSON: one record, a JSON Lines file, or any rows of JSON, all or nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

from ..errors import SchemaError
from ..files import replaced_whole
from .structs import KINDS, SCHEMA_VERSION, AnyRecord, Record

__all__ = ["decode_all", "decode_many", "decode_record", "encode_record", "read_jsonl",
           "write_jsonl"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyRecord)


class _Head(msgspec.Struct):
    """Just enough of a line to explain why the full decode failed."""

    schema: Any = None
    kind: Any = None


_head_decoder = msgspec.json.Decoder(_Head)


def encode_record(record: Record) -> bytes:
    """One record as compact JSON (no newline)."""
    return _encoder.encode(record)


def decode_record(data: bytes | str) -> AnyRecord:
    """Parse and validate one record; raises :class:`SchemaError` saying why not."""
    try:
        record: AnyRecord = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SchemaError(_explain(data, exc)) from None
    except RecursionError:
        raise SchemaError(NESTED_TOO_DEEP) from None
    except (ArithmeticError, ValueError) as exc:
        # A check in a struct's __post_init__ that failed other than with a
        # ValueError msgspec translates (e.g. an overflow): still bad data.
        raise SchemaError(f"a value is out of range: {exc}") from None
    return record


def decode_many(data: bytes | memoryview) -> list[AnyRecord]:
    """Every record of ``data`` (JSON values with whitespace between them) decoded and
    validated by one call (msgspec's ``decode_lines``): cheaper than a call per record.

    A bad value raises whatever the decoder or a struct's check raised; it does not say
    which value, and values need not be one per line: for JSON Lines, decode one line at
    a time with :func:`decode_record` to find and explain a bad one.
    """
    records: list[AnyRecord] = _decoder.decode_lines(data)
    return records


#: Why a line nested deeper than the decoder's recursion guard is refused (a record
#: is at most seven levels deep; the guard stops at roughly a thousand).
NESTED_TOO_DEEP = "nested too deeply (arrays or objects inside each other past the decoder's limit)"


def _explain(data: bytes | str, exc: msgspec.DecodeError) -> str:
    try:
        head = _head_decoder.decode(data)
    except msgspec.DecodeError:
        return f"not a JSON object: {exc}"
    except RecursionError:
        return NESTED_TOO_DEEP
    newer = (isinstance(head.schema, int) and not isinstance(head.schema, bool)
             and head.schema > SCHEMA_VERSION)
    if newer:
        return (
            f"schema {head.schema} is newer than this netvantage reads "
            f"(schema {SCHEMA_VERSION}); upgrade netvantage to read it"
        )
    if head.kind is not None and head.kind not in KINDS:
        return f"unknown kind {head.kind!r} (known: {', '.join(KINDS)})"
    return str(exc)


def write_jsonl(records: Iterable[Record], out: IO[bytes] | str | Path) -> int:
    """Write records as JSON Lines; returns how many were written.

    With a path the file is written whole or not at all (temporary file, fsync,
    rename), so a reader never sees half of it.
    """
    if isinstance(out, str | Path):
        with replaced_whole(Path(out)) as tmp, open(tmp, "wb") as fh:
            n = write_jsonl(records, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return n
    n = 0
    for record in records:
        out.write(_encoder.encode(record) + b"\n")
        n += 1
    return n


def _lines(source: IO[bytes] | str | Path) -> Iterator[tuple[int, bytes]]:
    if isinstance(source, str | Path):
        with open(source, "rb") as fh:
            yield from _lines(fh)
        return
    yield from enumerate(source, start=1)


def read_jsonl(source: IO[bytes] | str | Path, *, max_problems: int = 20) -> list[AnyRecord]:
    """Read a whole JSON Lines file, all or nothing.

    Every line is checked; if any fails (malformed JSON, a torn last line, a
    newer schema, a value out of range) nothing is returned and a
    :class:`SchemaError` lists the first ``max_problems`` problems, each with
    its line number.  Blank lines are allowed.
    """
    name = str(source) if isinstance(source, str | Path) else getattr(source, "name", "<stream>")

    def rows() -> Iterator[tuple[str, bytes]]:
        for number, raw in _lines(source):
            line = raw.strip()
            if not line:
                continue
            # A writer that died mid-line leaves an unterminated tail.
            torn = "" if raw.endswith(b"\n") else ": unterminated last line (torn write?)"
            yield f"line {number}{torn}", line

    return decode_all(name, rows(), unit="line", max_problems=max_problems)


def decode_all(name: str, rows: Iterable[tuple[str, bytes | str]], *, unit: str = "record",
               max_problems: int = 20) -> list[AnyRecord]:
    """Decode every (where, JSON) row, all or nothing.

    If any row fails, nothing is returned and a :class:`SchemaError` names ``name``,
    counts the bad rows and lists the first ``max_problems`` as "where: why".
    """
    records: list[AnyRecord] = []
    problems: list[str] = []
    bad = 0
    for where, text in rows:
        try:
            records.append(decode_record(text))
        except SchemaError as exc:
            bad += 1
            if len(problems) < max_problems:
                problems.append(f"{where}: {exc}")
    if bad:
        more = f" (showing {len(problems)})" if bad > len(problems) else ""
        raise SchemaError(f"{name}: {bad} bad {unit}(s), nothing loaded{more}", problems)
    return records
