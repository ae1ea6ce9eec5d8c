"""What every importer shares: streamed reading, the import error, refusals and the report.

Reading
=======
:func:`open_text` and :func:`open_binary` open a file, or standard input for
``"-"``, and decompress it while reading when it is gzip, bzip2 or xz.  The
compression is recognised by the file's first bytes (``1f 8b``, ``BZh``,
``fd 37 7a 58 5a 00``), never by its name: a results file downloaded as
``results.json`` that is really gzip reads like any other.  Text is UTF-8 (a
byte-order mark is skipped); a byte that is not UTF-8 raises
:class:`ImportFormatError` naming the file and the line, so a user is never
told only "not UTF-8".  Nothing is read whole: text comes in blocks of
:data:`BLOCK` bytes, so memory does not grow with the file.

:func:`iter_json` yields the JSON values of a text stream one by one, each with
the line where it starts: JSON Lines (one value per line; a line holding an
array gives its elements), one JSON array over the whole file (pretty-printed
or all on one line, as the RIPE Atlas API returns it) or one object.  An array
is decoded from a sliding buffer (the elements of a block at once when they are
on one line, else element by element), so a 500 MB array costs the memory of
a block, not of the file.

Counting
========
:class:`Refusals` counts what an importer refused, by reason and per file,
with the first few examples of each reason (``where`` is ``FILE:LINE`` or
``FILE``).  :class:`ImportReport` adds what each file gave: values read,
records kept, duplicates, a file that could not be read at all, and notes
(things noticed in kept records).  :attr:`ImportReport.kept_nothing` is what
the command line checks: an import that keeps nothing exits 2 and prints
:meth:`ImportReport.why_nothing`, the reason per file.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import re
import sys
from collections import Counter
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple, TextIO, cast

import msgspec

from ..errors import NetvantageError

__all__ = [
    "BLOCK",
    "FileTally",
    "ImportFormatError",
    "ImportReport",
    "JsonValue",
    "Refusals",
    "Refused",
    "compression_of",
    "display_name",
    "iter_json",
    "open_binary",
    "open_text",
]

#: Bytes read (and decompressed) at a time.
BLOCK = 1 << 20

#: The largest JSON value :func:`iter_json` accepts inside an array (a bigger one is an error).
MAX_VALUE_CHARS = 64 << 20

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))


class Refused(NetvantageError):
    """One value of an input (a result, an object, a cell) that cannot be imported.

    ``reason`` is short and stable: it is what :class:`Refusals` counts; ``detail`` says
    what this value was.  Raised and caught inside an importer, one per refused value.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ImportFormatError(NetvantageError, ValueError):
    """Input that cannot be imported.

    ``reason`` is short and stable (importers count refusals by it), ``detail``
    says more about this case, ``where`` is ``FILE:LINE`` (or ``FILE``) when known.
    """

    def __init__(self, reason: str, detail: str | None = None, *,
                 where: str | None = None) -> None:
        text = reason if detail is None else f"{reason}: {detail}"
        super().__init__(text if where is None else f"{where}: {text}")
        self.reason = reason
        self.detail = detail
        self.where = where


def display_name(path: str | Path) -> str:
    """How a file is named in messages (``"-"`` is standard input)."""
    return "<stdin>" if str(path) == "-" else str(path)


def compression_of(head: bytes) -> str | None:
    """``"gzip"``, ``"bzip2"``, ``"xz"`` or ``None`` for the first bytes of a file."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _peek(raw: IO[bytes], n: int) -> tuple[bytes, IO[bytes]]:
    """The first ``n`` bytes of ``raw`` without consuming them (a prefix stream if needed)."""
    peek = getattr(raw, "peek", None)
    if peek is not None:
        head: bytes = peek(n)[:n]
        if len(head) >= n or not head:
            return head, raw
    head = raw.read(n)
    return head, io.BufferedReader(_Prefixed(head, raw))


class _Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``rest``: a stream whose first bytes were already read."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressed(raw: IO[bytes]) -> tuple[IO[bytes], str | None]:
    head, raw = _peek(raw, 6)
    kind = compression_of(head)
    if kind == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), kind
    if kind == "bzip2":
        return cast(IO[bytes], bz2.BZ2File(raw, "rb")), kind
    if kind == "xz":
        return cast(IO[bytes], lzma.LZMAFile(raw, "rb")), kind
    return raw, None


def _compression_error(exc: Exception, name: str, kind: str) -> ImportFormatError:
    return ImportFormatError("corrupt or truncated compressed file", f"{kind}: {exc}",
                             where=name)


@contextmanager
def _open(path: str | Path) -> Iterator[tuple[IO[bytes], str | None]]:
    name = display_name(path)
    if str(path) == "-":
        raw: IO[bytes] = sys.stdin.buffer
        own = False
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ImportFormatError("cannot open file", exc.strerror or str(exc),
                                    where=name) from None
        own = True
    try:
        stream, kind = _decompressed(raw)
        try:
            yield stream, kind
        finally:
            if kind is not None:
                stream.close()
    finally:
        if own:
            raw.close()


@contextmanager
def open_binary(path: str | Path) -> Iterator[BinaryIO]:
    """The bytes of ``path`` (``"-"`` = standard input), decompressed if compressed.

    The stream is read sequentially; it is seekable only when the file is a
    plain (uncompressed) file.  A reader that needs to seek (Parquet) should
    check ``seekable()`` and copy into memory or a temporary file otherwise.
    A corrupt or truncated compressed file raises :class:`ImportFormatError`.
    """
    name = display_name(path)
    with _open(path) as (stream, kind):
        try:
            yield stream  # type: ignore[misc]
        except (EOFError, lzma.LZMAError, OSError) as exc:
            if kind is None:
                raise
            raise _compression_error(exc, name, kind) from None


class _Text(io.TextIOBase):
    """UTF-8 text decoded block by block, counting lines to name where a bad byte is."""

    def __init__(self, stream: IO[bytes], name: str, kind: str | None) -> None:
        self._stream = stream
        self._name = name
        self._kind = kind
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._lines_before = 0  # newlines in text already decoded before this block

    @property
    def name(self) -> str:
        return self._name

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Decode one more block into the buffer; False at the end of the input."""
        if self._eof:
            return False
        try:
            data = self._stream.read(BLOCK)
        except (EOFError, lzma.LZMAError, OSError, ValueError) as exc:
            if self._kind is None:
                raise
            raise _compression_error(exc, self._name, self._kind) from None
        final = not data
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            good = exc.object[: exc.start]
            line = self._lines_before + self._buf.count("\n", 0) + good.count(b"\n") + 1
            raise ImportFormatError(
                "not UTF-8 text", f"byte 0x{exc.object[exc.start]:02x} cannot be decoded "
                f"({'compressed with ' + self._kind if self._kind else 'not compressed'})",
                where=f"{self._name}:{line}") from None
        if final:
            self._eof = True
        if self._pos:
            self._lines_before += self._buf.count("\n", 0, self._pos)
            self._buf = self._buf[self._pos:]
            self._pos = 0
        self._buf += text
        return not final or bool(text)

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            while self._fill():
                pass
            out, self._pos = self._buf[self._pos:], len(self._buf)
            return out
        while len(self._buf) - self._pos < size and self._fill():
            pass
        out = self._buf[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        while True:
            nl = self._buf.find("\n", self._pos)
            if nl >= 0 or not self._fill():
                break
        end = len(self._buf) if nl < 0 else nl + 1
        if size is not None and size >= 0:
            end = min(end, self._pos + size)
        out = self._buf[self._pos:end]
        self._pos = end
        return out

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return self

    def __next__(self) -> str:  # type: ignore[override]
        line = self.readline()
        if not line:
            raise StopIteration
        return line


@contextmanager
def open_text(path: str | Path) -> Iterator[TextIO]:
    """The UTF-8 text of ``path`` (``"-"`` = standard input), decompressed if compressed.

    Raises :class:`ImportFormatError` (with ``FILE:LINE``) at the first byte that
    is not UTF-8, and for a corrupt or truncated compressed file.
    """
    with _open(path) as (stream, kind):
        yield _Text(stream, display_name(path), kind)  # type: ignore[misc]


# ----------------------------------------------------------------------------- JSON


class JsonValue(NamedTuple):
    """One JSON value of a file, or the reason it could not be read.

    ``line`` is where the value starts (1-based); ``value`` is ``None`` with
    ``problem`` set when the text there is not JSON.
    """

    line: int
    value: Any = None
    problem: str | None = None


_decoder = json.JSONDecoder()
_fast_decode = msgspec.json.Decoder().decode
_SPACE = re.compile(r"[ \t\r\n]*")
_SEP = re.compile(r"[ \t\r\n]*,?[ \t\r\n]*")
STRETCH = 1 << 16
_FIRST_KEY = re.compile(r'\{"[^"\\]{1,64}":')


def iter_json(text: TextIO) -> Iterator[JsonValue]:
    """The JSON values of ``text`` one by one (JSON Lines, one array or one object).

    A value that is not JSON is yielded with its ``problem`` and the reading
    goes on with the next line (JSON Lines).  In an array, a malformed element
    ends the array (what follows cannot be told apart reliably): it is yielded
    as one problem, with the line, and the elements before it are kept.
    """
    number = 1
    while True:  # the first character that is not white space decides the layout
        ch = text.read(1)
        if not ch:
            return
        if ch == "\n":
            number += 1
        elif not ch.isspace():
            break
    if ch == "[":
        tail = yield from _iter_array("[", text, number)
        if tail is None:
            return
        first, number = tail
    else:
        first = ch + text.readline()
        if ch == "{" and not _is_json(first):
            # Not JSON Lines: one object (or several) over many lines, pretty-printed.
            yield from _iter_array(first, text, number, array=False)
            return
    yield from _iter_lines(first, text, number)


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _iter_lines(first: str, text: TextIO | _Chain, number: int) -> Iterator[JsonValue]:
    """JSON Lines from ``first`` (line ``number``) on."""
    line = first
    while line:
        body = line.strip()
        if body:
            yield from _values_of_line(body, number)
        number += 1
        line = text.readline()


def _values_of_line(body: str, number: int) -> Iterator[JsonValue]:
    try:
        value = _fast_decode(body)
    except msgspec.DecodeError:
        # msgspec is ~4x faster than the json module but refuses some of what that
        # accepts (NaN, numbers beyond a double, lone surrogates): the json module
        # decides, and gives its message with the column.
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            yield JsonValue(number, problem=f"not JSON: {exc.msg} (column {exc.colno})")
            return
    if isinstance(value, list):
        for item in value:
            yield JsonValue(number, item)
    else:
        yield JsonValue(number, value)


def _iter_array(first: str, text: TextIO, line: int, *,
                array: bool = True) -> Generator[JsonValue, None, tuple[str, int] | None]:
    """Elements of an array that starts in ``first``, reading more of ``text`` as needed.

    With ``array=False``: the JSON values in a row that start in ``first``, till the end.

    Returns the text after the closing bracket and its line number when JSON
    follows (JSON Lines whose lines are arrays), else None.
    """
    buf = first
    pos = buf.index("[") + 1 if array else 0
    eof = False
    # Lines before ``counted`` in ``buf`` are in ``line`` already: counting from the
    # start of the buffer for every element would be quadratic in a one-line file.
    counted = 0
    batch = True  # decode whole stretches of elements at once (see below)

    def line_at(at: int) -> int:
        nonlocal line, counted
        if at >= counted:
            line += buf.count("\n", counted, at)
            counted = at
            return line
        return line - buf.count("\n", at, counted)

    def more() -> bool:
        nonlocal buf, pos, eof, counted, batch
        if eof:
            return False
        chunk = text.read(BLOCK)
        if not chunk:
            eof = True
            return False
        batch = True
        line_at(pos)
        buf = buf[pos:] + chunk
        pos = counted = 0
        return True

    while True:
        pos = _SEP.match(buf, pos).end()  # type: ignore[union-attr]
        if pos >= len(buf):
            if more():
                continue
            if not array:
                return None
            yield JsonValue(line_at(pos),
                            problem="not JSON: the array is not closed (truncated file?)")
            return None
        if array and buf[pos] == "]":
            pos += 1
            while not buf[pos:].strip() and more():
                pass
            if not buf[pos:].strip():
                return None
            after = buf[pos:]
            nl = after.find("\n")
            first_line = after if nl < 0 else after[:nl + 1]
            rest = "" if nl < 0 else after[nl + 1:]
            at = line_at(pos)
            # Whatever follows is read as JSON Lines: hand back this line, and the
            # buffered lines after it through a reader that drains them first.
            if rest:
                yield from _iter_lines(first_line, _Chain(rest, text), at)
                return None
            return first_line, at
        if batch and array:
            # Every whole element up to the last "}," of the buffer at once, when that
            # stretch is on one line (the Atlas API's layout).  The cut is right: a "}"
            # inside a string would leave the stretch inside an unclosed string, which
            # does not decode; anything that does not decode (or that msgspec refuses
            # and the json module accepts) is read element by element below, and the
            # next batch waits for the next block.
            # Where an element ends and the next begins: "}," and the next one's first
            # key, as the element here starts (a "}," alone is also inside elements).
            # Stretches of up to 64 KB: a block's worth of objects at once is slower.
            head = _FIRST_KEY.match(buf, pos)
            stop = buf.rfind("}," + head.group(), pos, pos + STRETCH) if head else -1
            if stop <= pos:
                stop = buf.rfind("},", pos, pos + STRETCH)
            if stop > pos and buf.find("\n", pos, stop) < 0:
                try:
                    values = _fast_decode(f"[{buf[pos:stop + 1]}]")
                except msgspec.DecodeError:
                    batch = False
                else:
                    at = line_at(pos)
                    for element in values:
                        yield JsonValue(at, element)
                    pos = stop + 1
                    continue
        last_error: int | None = None
        while True:
            try:
                value, end = _decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                # Truncated by the block boundary, or malformed?  More text changes the
                # first; the same error at the same place after more text is the second.
                if exc.pos - pos != last_error and more():
                    last_error = exc.pos - pos  # more() moved the buffer: keep it relative
                    continue
                where = line_at(min(exc.pos, len(buf)))
                cut = " - the file ends inside it (truncated?)" if eof and not buf[
                    exc.pos:].strip() else ""
                yield JsonValue(where, problem=f"not JSON: {exc.msg} (in the array){cut}")
                return None
            if end >= len(buf) and not eof and more():
                last_error = None
                continue  # a number or literal cut by the block boundary: decode again
            if end - pos > MAX_VALUE_CHARS:
                yield JsonValue(line_at(pos),
                                problem="an element is larger than 64 MB")
                return None
            break
        yield JsonValue(line_at(pos), value)
        pos = end


class _Chain:
    """``head`` then ``text``, line by line (what :func:`_iter_lines` needs)."""

    def __init__(self, head: str, text: TextIO) -> None:
        self._head = io.StringIO(head)
        self._text = text

    def readline(self) -> str:
        return self._head.readline() or self._text.readline()


# ----------------------------------------------------------------------------- counting


_WHERE = re.compile(r"^(?P<file>.*?)(:\d+)?( .*)?$")


def _file_of(where: str) -> str:
    m = _WHERE.match(where)
    return m.group("file") if m else where


class Refusals:
    """Refusals counted by reason and per file, with the first examples of each reason."""

    def __init__(self, max_examples: int = 3) -> None:
        self.max_examples = max_examples
        self.by_file: dict[str, Counter[str]] = {}
        self.examples: dict[str, list[str]] = {}

    def refuse(self, reason: str, where: str, detail: str | None = None, *,
               file: str | None = None) -> None:
        """Count one refusal; ``where`` is ``FILE:LINE`` (``file`` defaults to its FILE)."""
        name = file if file is not None else _file_of(where)
        self.by_file.setdefault(name, Counter())[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(where + (f" ({detail})" if detail else ""))

    @property
    def by_reason(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.by_file.values():
            total.update(counts)
        return total

    def count(self, file: str | None = None) -> int:
        """Refusals in ``file`` (all files when None)."""
        if file is not None:
            return sum(self.by_file.get(file, Counter()).values())
        return sum(sum(c.values()) for c in self.by_file.values())

    def __len__(self) -> int:
        return self.count()

    def summary(self) -> str:
        """One line per reason, most frequent first, with the first examples."""
        lines = []
        for reason, n in self.by_reason.most_common():
            lines.append(f"refused {n}: {reason} (e.g. {'; '.join(self.examples[reason])})")
        return "\n".join(lines)


@dataclass
class FileTally:
    """What one input file gave."""

    name: str
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    #: Why the file could not be read (at all, or from some line on); None if it could.
    error: str | None = None


@dataclass
class ImportReport:
    """What an import read, kept and refused (by reason, per file), and what it noticed."""

    source: str = "import"
    files: dict[str, FileTally] = field(default_factory=dict)
    refusals: Refusals = field(default_factory=Refusals)
    notes: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)

    def file(self, name: str) -> FileTally:
        """The tally of file ``name`` (created on first use; files keep their order)."""
        tally = self.files.get(name)
        if tally is None:
            tally = self.files[name] = FileTally(name)
        return tally

    def refuse(self, reason: str, where: str, detail: str | None = None, *,
               file: str | None = None) -> None:
        self.refusals.refuse(reason, where, detail, file=file)
        self.file(file if file is not None else _file_of(where))

    def keep(self, file: str, kind: str | None = None) -> None:
        self.file(file).kept += 1
        if kind is not None:
            self.by_kind[kind] += 1

    def fail(self, file: str, error: ImportFormatError | str) -> None:
        """The file (or its rest) cannot be read: counted as one refusal with the reason."""
        tally = self.file(file)
        tally.error = str(error)
        if isinstance(error, ImportFormatError):
            self.refusals.refuse(error.reason, error.where or file, error.detail, file=file)
        else:
            self.refusals.refuse(str(error), file, file=file)

    # totals -------------------------------------------------------------------------
    @property
    def read(self) -> int:
        return sum(t.read for t in self.files.values())

    @property
    def kept(self) -> int:
        return sum(t.kept for t in self.files.values())

    imported = kept

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.files.values())

    @property
    def refused(self) -> Counter[str]:
        """Refusals by reason over all files."""
        return self.refusals.by_reason

    @property
    def refused_total(self) -> int:
        return self.refusals.count()

    @property
    def kept_nothing(self) -> bool:
        return self.kept == 0

    def why_nothing(self) -> list[str]:
        """For every file that gave no record: ``FILE: why`` (what the CLI prints)."""
        out = []
        for tally in self.files.values():
            if tally.kept:
                continue
            refused = self.refusals.by_file.get(tally.name, Counter())
            if tally.error is not None and not tally.read:
                out.append(tally.error if tally.error.startswith(tally.name)
                           else f"{tally.name}: {tally.error}")
                continue
            if refused:
                reasons = ", ".join(f"{n} {r}" for r, n in refused.most_common())
                why = f"every value refused ({reasons})"
            elif tally.duplicates:
                why = f"only duplicates of results already imported ({tally.duplicates})"
            else:
                why = "no results in it (empty file?)"
            out.append(f"{tally.name}: {why}")
        return out

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items()))
        lines = [f"read {self.read}, imported {self.kept}"
                 + (f" ({kinds})" if kinds else "")
                 + f", refused {self.refused_total}"
                 + (f", skipped {self.duplicates} duplicate(s)" if self.duplicates else "")]
        for reason, n in self.refused.most_common():
            lines.append(f"  refused {n}: {reason} "
                         f"(e.g. {'; '.join(self.refusals.examples.get(reason, ['?']))})")
        for note, n in sorted(self.notes.items()):
            lines.append(f"  note {n}: {note}")
        return "\n".join(lines)
