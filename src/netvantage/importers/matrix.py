"""Import latency matrices and series (CSV, TSV, Parquet) as summary ping records.

A provider's inter-region latency table, a city-to-city ping matrix or a time
series of them gives *statistics* (a mean, a median, a p90 …), not the RTTs
behind them.  Each (from, to[, time]) cell becomes one
:class:`~netvantage.results.PingRecord` whose body is a summary
(:meth:`~netvantage.results.PingBody.from_summary`): no samples, ``sent`` and
``received`` unknown (``None``: a matrix does not say how many pings stand
behind a figure, so its loss is unknown, not 0 %), ``summary.samples`` unknown.

Layouts
=======
*long*: one row per (from, to[, time]) with one or more value columns::

    source,destination,avg          source,destination,time,min,avg,max,mdev
    AMS,JNB,171.2                   AMS,JNB,2026-11-01T00:00Z,170.1,171.2,180.4,2.1

*wide*: rows are the sources, columns the destinations, the first column the
source's name (or the column named by ``from_col``)::

    from,AMS,JNB,LHR
    LUN,190.1,21.5,177.0

``layout="auto"`` takes the long layout when a destination column is named
(``to_col``) or found by name (to, destination, dest, dst, target, server),
and the wide layout when there is none and the first data row holds only
numbers and gaps after its first cell; anything else is an error that says
which option to give.  What was detected is said in :attr:`MatrixImport.said`.

Which statistic a value is
==========================
``rtt_col`` names the value column and ``stat`` what it is: ``min``, ``mean``
(``avg``), ``median`` (``p50``), ``max`` or a percentile ``pNN`` (``p90``,
``p99.9``).  Without ``stat`` it is inferred from the column's name when the
name is a statistic (``avg``, ``min``, ``rtt_p90_ms`` …), else it is the
**median**: published inter-region tables (cloud providers' p50 figures) give
medians, and the median is the figure the analysis ranks by.  Without
``rtt_col`` every column whose name is a statistic (min, avg/mean, median,
max, pNN, stdev, mdev) goes into the one summary of its row, so a
``min,avg,max,mdev`` file keeps all four; a table with none of them needs a
column named rtt, rtt_ms, latency, latency_ms, delay, ping or value.  In the wide
layout every cell is the one statistic ``stat``.

``unit`` (``ms``, ``s``, ``us``) scales every figure to milliseconds, rounded
to the microsecond as everywhere in the schema; without it a value column whose
name ends in ``_s`` or ``_us`` is in that unit (said), any other in ms.

Cells
=====
An empty cell, ``-``, ``NA``, ``N/A``, ``NaN``, ``null`` or ``none`` (any case)
is a *gap*: skipped and counted (a wide matrix's diagonal is often one).  A
value that is not a number, not finite, or not above 0 (a standard or mean
deviation may be 0) is *refused* and counted by reason, as are statistics that
contradict each other (a mean above the max), an unreadable time and a second
row for the same (from, to, time).  Refusals never stop the import; a file that
keeps nothing fails with the reasons.

Places
======
Each name is resolved once with :mod:`netvantage.importers.places`:
coordinate columns when given for that side (``from_lat``/``from_lon``,
``to_lat``/``to_lon``; the first row of a name wins), else by ``places``:
``iata`` (3-letter airport codes), ``country`` (ISO 3166 alpha-2), ``city``
(a city with an airport: the name, with its country from the ``from_country``
/ ``to_country`` column or written ``City, CC``), or ``auto`` which picks per
name: a country column or ``City, CC`` → city, 3 letters → IATA, 2 letters →
country.  A name that does not resolve stops the import: every unresolved name
is listed (with its side and first line) in :class:`UnresolvedPlacesError` and
no output is written.

Records and places written
==========================
``region`` is the source's name as written in the file and ``target`` the
destination's; ``agent`` is ``matrix:<source>``; ``source`` is ``"matrix"``;
``started_at`` the row's time (ISO 8601, naive read as UTC, or Unix seconds)
or, without a time column, ``at`` (default: the file's modification time, to
the second); ``duration_ms`` is 0 and ``ip_version`` 4 unless told (a matrix
says neither).  Ids are UUIDv5 of ``matrix:<from>:<to>:<time>``, so importing
the same table again gives the same ids.

:meth:`MatrixImport.location_rows` gives the locations table the analysis reads
(``netvantage analyse --locations``): every destination with role ``dc`` (a
candidate data centre), every source with role ``region``; a place that is both
(a symmetric city matrix) is listed once, as ``dc``, because the table's names
are unique and the analysis finds coordinates by name whatever the role.

Memory: rows are read one at a time (CSV) or one batch at a time (Parquet) and
records written as they are made.  What is kept: one entry per distinct place,
and for the duplicate check the ids of the most recent times, about
:data:`RECENT_KEYS` of them (bounded by the size of the matrix, not by the
length of a series; a repeat of a time forgotten by then is not refused, but it
has the same id as the first and readers keep a record id once).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

import msgspec

from ..files import replaced_whole
from ..results import PingBody, PingRecord, RttStats, RttSummary, encode_record
from .ids import RECENT_KEYS as _RECENT_KEYS
from .ids import RecentKeys, uuid5
from .io import (
    ImportFormatError,
    ImportReport,
    Refused,
    display_name,
    open_binary,
    open_text,
)
from .places import Place, from_city, from_coordinates, from_country, from_iata, write_locations

__all__ = [
    "GAPS",
    "GAP_NOTE",
    "MATRIX_NAMESPACE",
    "MAX_NAME",
    "RECENT_KEYS",
    "MatrixImport",
    "MatrixSpec",
    "UnresolvedPlacesError",
    "import_matrix",
    "locations_path",
    "matrix_id",
    "matrix_lines",
    "parse_stat",
    "stat_of_column",
    "unit_of_column",
]

#: Namespace of the deterministic record ids (UUIDv5) of imported matrix cells.
MATRIX_NAMESPACE = uuid.UUID("0509539a-a2b8-4c6d-b045-2ebed1683ea7")

_SOURCE = "matrix"

#: Cell texts that mean "no measurement" (compared lower-cased, stripped).
GAPS = frozenset({"", "-", "na", "n/a", "nan", "null", "none"})

Layout: TypeAlias = Literal["auto", "long", "wide"]
PlaceKind: TypeAlias = Literal["auto", "iata", "city", "country"]

_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}
_STAT_ALIASES = {
    "min": "min", "minimum": "min", "best": "min",
    "mean": "mean", "avg": "mean", "average": "mean",
    "median": "median", "med": "median",
    "max": "max", "maximum": "max", "worst": "max",
    "stdev": "stdev", "std": "stdev", "stddev": "stdev", "sd": "stdev",
    "mdev": "mdev",
}
_LOCATION_STATS = ("min", "mean", "median", "max")
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")
_VALUE_NAMES = ("rtt", "rtt_ms", "latency", "latency_ms", "delay", "delay_ms", "ping", "value")
_FROM_NAMES = ("from", "source", "src", "origin", "client", "region")
_TO_NAMES = ("to", "destination", "dest", "dst", "target", "server")
_TIME_NAMES = ("time", "timestamp", "datetime", "date", "started_at", "ts")
_DELIMITERS = (",", "\t", ";", "|")
_PARQUET_MAGIC = b"PAR1"
_PARQUET_BATCH = 65_536

#: The longest place name (the record's agent is ``matrix:<name>``, at most 255 characters).
MAX_NAME = 248

#: About how many record ids the duplicate check remembers
#: (:class:`~netvantage.importers.ids.RecentKeys`, one bucket per time): ~10 MB.
RECENT_KEYS = _RECENT_KEYS


# ----------------------------------------------------------------------------- errors


class UnresolvedPlacesError(ImportFormatError):
    """Place names that resolve to no place; ``names`` lists every one (``name (side, where)``)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(
            f"{len(self.names)} place name(s) could not be resolved; give coordinate columns "
            "(--from-lat/--from-lon, --to-lat/--to-lon), a country column, or --places:\n"
            + "\n".join(f"  - {n}" for n in self.names))


# ----------------------------------------------------------------------------- statistics


def parse_stat(text: str) -> str:
    """A statistic's canonical name: min, mean, median, max, stdev, mdev or pNN.

    ``avg``/``average`` are the mean, ``p50`` the median; raises ``ValueError``
    for anything else.
    """
    key = text.strip().lower()
    if key in _STAT_ALIASES:
        return _STAT_ALIASES[key]
    m = _PERCENTILE.fullmatch(key)
    if m and 0 < (percent := float(m.group(1))) < 100:
        return "median" if percent == 50 else f"p{percent:g}"
    raise ValueError(f"unknown statistic {text!r}: give min, mean (avg), median (p50), max, "
                     "stdev, mdev or a percentile such as p90")


def stat_of_column(name: str) -> str | None:
    """The statistic a column's name says it holds (``avg`` → mean, ``rtt_p90_ms`` → p90)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    for prefix in ("rtt_", "latency_", "ping_"):
        key = key.removeprefix(prefix)
    for suffix in ("_ms", "_us", "_s", "_rtt", "_latency"):
        key = key.removesuffix(suffix)
    try:
        return parse_stat(key)
    except ValueError:
        return None


def unit_of_column(name: str) -> str | None:
    """The unit a column's name ends with: ``rtt_ms`` → ms, ``median_s`` → s, ``p90_us`` → us."""
    key = name.strip().lower()
    return next((u for u in ("ms", "us", "s") if key.endswith(f"_{u}")), None)


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class MatrixSpec:
    """How to read a matrix: the options of ``netvantage import matrix``.

    Column names are matched case-insensitively.  See the module docstring for
    what each option does when it is not given.
    """

    layout: Layout = "auto"
    delimiter: str | None = None
    from_col: str | None = None
    to_col: str | None = None
    rtt_col: str | None = None
    stat: str | None = None
    unit: str | None = None
    time_col: str | None = None
    from_lat: str | None = None
    from_lon: str | None = None
    to_lat: str | None = None
    to_lon: str | None = None
    from_country: str | None = None
    to_country: str | None = None
    places: PlaceKind = "auto"
    at: datetime | None = None
    ip_version: Literal[4, 6] = 4

    def __post_init__(self) -> None:
        if self.unit is not None and self.unit not in _UNITS:
            raise ImportFormatError(f"unknown unit {self.unit!r}: give ms, s or us")
        if self.stat is not None:
            try:
                parse_stat(self.stat)
            except ValueError as exc:
                raise ImportFormatError(str(exc)) from None
        for side in ("from", "to"):
            lat, lon = getattr(self, f"{side}_lat"), getattr(self, f"{side}_lon")
            if (lat is None) != (lon is None):
                raise ImportFormatError(f"give both --{side}-lat and --{side}-lon, or neither")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ImportFormatError(f"the delimiter is one character, not {self.delimiter!r}")
        if self.at is not None and self.at.utcoffset() is None:
            raise ImportFormatError("the time given with --at needs a time zone (e.g. Z)")


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Plan:
    """Which column is what in one file, decided from its header (and first row)."""

    layout: Literal["long", "wide"]
    from_i: int
    to_i: int | None  # long
    targets: tuple[tuple[int, str], ...]  # wide: (column, destination name)
    time_i: int | None
    values: tuple[tuple[int, str, str], ...]  # long: (column, statistic, unit)
    wide_stat: str
    from_coords: tuple[int, int] | None
    to_coords: tuple[int, int] | None
    from_country_i: int | None
    to_country_i: int | None
    width: int


def _find(header: Sequence[str], name: str | None, option: str) -> int | None:
    if name is None:
        return None
    lowered = [h.strip().lower() for h in header]
    try:
        return lowered.index(name.strip().lower())
    except ValueError:
        raise ImportFormatError(f"{option}: no column {name!r} (columns: "
                                f"{', '.join(header)})") from None


def _guess(header: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def _is_number_or_gap(value: Any) -> bool:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return True
    text = str(value).strip()
    if text.lower() in GAPS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _plan(header: Sequence[str], first: Sequence[Any] | None, spec: MatrixSpec,
          said: list[str]) -> _Plan:
    """Decide the layout and the columns; ``said`` collects what was inferred."""
    if len(set(h.strip().lower() for h in header)) != len(header):
        raise ImportFormatError(f"a column name appears twice in the header: {list(header)}")
    from_i = _find(header, spec.from_col, "--from")
    to_i = _find(header, spec.to_col, "--to")
    time_i = _find(header, spec.time_col, "--time")
    layout = spec.layout
    if layout != "wide":
        if from_i is None:
            from_i = _guess(header, _FROM_NAMES)
        if to_i is None:
            to_i = _guess(header, _TO_NAMES)
    if layout == "auto":
        if to_i is not None:
            layout = "long"
            said.append(f"layout long (destination column {header[to_i]!r})")
        elif (first is not None and len(header) >= 2
              and all(_is_number_or_gap(v) for i, v in enumerate(first)
                      if i not in (from_i if from_i is not None else 0, time_i))
              and not _is_number_or_gap(first[from_i if from_i is not None else 0])):
            layout = "wide"
            said.append("layout wide (no destination column; the cells after the first "
                        "are numbers)")
        else:
            raise ImportFormatError(
                "cannot tell the layout: name the source and destination columns with "
                "--from and --to (long layout), or give --layout wide "
                f"(columns: {', '.join(header)})")
    if time_i is None:
        time_i = _guess(header, _TIME_NAMES)
        if time_i is not None:
            said.append(f"time column {header[time_i]!r}")
    if layout == "wide":
        return _wide_plan(header, spec, said, from_i, time_i)
    if from_i is None or to_i is None:
        raise ImportFormatError(
            f"no {'source' if from_i is None else 'destination'} column: name it with "
            f"{'--from' if from_i is None else '--to'} (columns: {', '.join(header)})")
    if spec.from_col is None or spec.to_col is None:
        said.append(f"from column {header[from_i]!r}, to column {header[to_i]!r}")
    from_coords = _coords(header, spec.from_lat, spec.from_lon, "--from")
    to_coords = _coords(header, spec.to_lat, spec.to_lon, "--to")
    from_country_i = _find(header, spec.from_country, "--from-country")
    to_country_i = _find(header, spec.to_country, "--to-country")
    return _Plan(layout="long", from_i=from_i, to_i=to_i, targets=(), time_i=time_i,
                 values=_value_columns(header, spec, said), wide_stat="median",
                 from_coords=from_coords, to_coords=to_coords,
                 from_country_i=from_country_i, to_country_i=to_country_i,
                 width=len(header))


def _wide_plan(header: Sequence[str], spec: MatrixSpec, said: list[str], from_i: int | None,
               time_i: int | None) -> _Plan:
    for option, given in (("--to", spec.to_col), ("--rtt", spec.rtt_col),
                          ("--from-lat", spec.from_lat), ("--to-lat", spec.to_lat),
                          ("--from-country", spec.from_country),
                          ("--to-country", spec.to_country)):
        if given is not None:
            raise ImportFormatError(f"{option} applies to the long layout only (in a wide "
                                    "matrix the columns are the destinations)")
    if from_i is None:
        from_i = 0
    targets = tuple((i, h.strip()) for i, h in enumerate(header) if i not in (from_i, time_i))
    if not targets:
        raise ImportFormatError("a wide matrix needs at least one destination column")
    blank = [i for i, name in targets if not name]
    if blank:
        raise ImportFormatError(f"destination column(s) {blank} have no name in the header")
    if spec.stat is not None:
        stat = parse_stat(spec.stat)
    else:
        stat = "median"
        said.append("cells read as the median (default; give --stat)")
    return _Plan(layout="wide", from_i=from_i, to_i=None, targets=targets, time_i=time_i,
                 values=(), wide_stat=stat, from_coords=None, to_coords=None,
                 from_country_i=None, to_country_i=None, width=len(header))


def _coords(header: Sequence[str], lat: str | None, lon: str | None,
            option: str) -> tuple[int, int] | None:
    lat_i = _find(header, lat, f"{option}-lat")
    lon_i = _find(header, lon, f"{option}-lon")
    return None if lat_i is None or lon_i is None else (lat_i, lon_i)


def _value_columns(header: Sequence[str], spec: MatrixSpec,
                   said: list[str]) -> tuple[tuple[int, str, str], ...]:
    """(column, statistic, unit) of every value column of a long table."""
    if spec.rtt_col is not None:
        i = _find(header, spec.rtt_col, "--rtt")
        assert i is not None
        if spec.stat is not None:
            stat = parse_stat(spec.stat)
        else:
            inferred = stat_of_column(header[i])
            if inferred in ("stdev", "mdev"):
                raise ImportFormatError(f"--rtt {header[i]!r} is a spread, not an RTT: "
                                        "name a min, mean, median, max or percentile column")
            stat = inferred or "median"
            said.append(f"value column {header[i]!r} read as the {stat}"
                        + (" (from its name)" if inferred else " (default; give --stat)"))
        if stat in ("stdev", "mdev"):
            raise ImportFormatError(f"--stat {stat} is a spread, not an RTT")
        return ((i, stat, _unit(header[i], spec, said)),)
    found = [(i, s) for i, h in enumerate(header) if (s := stat_of_column(h)) is not None]
    stats = [s for _, s in found]
    if len(set(stats)) != len(stats):
        raise ImportFormatError(f"two columns hold the same statistic "
                                f"({', '.join(header[i] for i, _ in found)}): choose one "
                                "with --rtt")
    if any(s not in ("stdev", "mdev") for s in stats):
        if spec.stat is not None:
            raise ImportFormatError("--stat needs --rtt (the columns' names already say "
                                    f"their statistics: {', '.join(header[i] for i, _ in found)})")
        said.append("statistics from the column names: "
                    + ", ".join(f"{header[i]}={s}" for i, s in found))
        return tuple((i, s, _unit(header[i], spec, said)) for i, s in found)
    i = _guess(header, _VALUE_NAMES)
    if i is None:
        raise ImportFormatError("no value column: name it with --rtt (and its statistic with "
                                f"--stat) (columns: {', '.join(header)})")
    stat = parse_stat(spec.stat) if spec.stat is not None else "median"
    said.append(f"value column {header[i]!r} read as the {stat}"
                + ("" if spec.stat is not None else " (default; give --stat)"))
    return ((i, stat, _unit(header[i], spec, said)),)


def _unit(column: str, spec: MatrixSpec, said: list[str]) -> str:
    """The unit of a value column: ``unit`` when given, else its name's suffix, else ms."""
    if spec.unit is not None:
        return spec.unit
    named = unit_of_column(column)
    if named is not None and named != "ms":
        said.append(f"unit of {column!r}: {named} (from its name; give --unit)")
    return named or "ms"


# ----------------------------------------------------------------------------- reading


def _sniff(sample: str) -> str:
    """The delimiter that splits the first lines into the same number (> 1) of fields."""
    lines = sample.splitlines()[:20]
    best, best_width = ",", 1
    for d in _DELIMITERS:
        widths = {len(row) for row in csv.reader(lines, delimiter=d) if row}
        if len(widths) == 1:
            width = widths.pop()
            if width > best_width:
                best, best_width = d, width
    return best


def _is_parquet(path: Path) -> bool:
    """Whether the file (decompressed) starts with Parquet's magic bytes (stdin: text only)."""
    if str(path) == "-":
        return False
    with open_binary(path) as fh:
        return fh.read(4) == _PARQUET_MAGIC


Row: TypeAlias = tuple[int, Sequence[Any]]  # (line or row number, cells)


def _csv_rows(fh: IO[str], spec: MatrixSpec, said: list[str]) -> tuple[list[str], Iterator[Row]]:
    sample = fh.read(65_536)
    sample += fh.readline()  # complete the last line of the sample
    if spec.delimiter is not None:
        delimiter = spec.delimiter
    else:
        delimiter = _sniff(sample)
        said.append(f"delimiter {delimiter!r}" if delimiter != "\t" else "delimiter tab")
    lines = itertools.chain(sample.splitlines(keepends=True), fh)
    reader = csv.reader(lines, delimiter=delimiter)
    header = next(reader, None)
    while header is not None and not any(c.strip() for c in header):
        header = next(reader, None)
    if header is None:
        raise ImportFormatError("the file is empty: no header line")
    header = [h.lstrip("\ufeff") for h in header]

    def rows() -> Iterator[Row]:
        for cells in reader:
            if cells and (len(cells) > 1 or cells[0].strip()):  # blank lines are no rows
                yield reader.line_num, cells

    return header, rows()


def _parquet_rows(fh: IO[bytes],
                  stack: contextlib.ExitStack) -> tuple[list[str], Iterator[Row]]:
    """The header and rows of a Parquet file, read one batch at a time."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    if not fh.seekable():  # compressed: Parquet's footer needs seeking, so copy it out
        spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - closed by stack
        shutil.copyfileobj(fh, spool)
        spool.seek(0)
        fh = spool
    try:
        pf = pq.ParquetFile(fh)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError …: all mean unreadable
        raise ImportFormatError("not a readable Parquet file", str(exc)) from None
    header = [str(n) for n in pf.schema_arrow.names]

    def rows() -> Iterator[Row]:
        n = 0
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            for cells in zip(*columns, strict=True):
                n += 1
                yield n, cells

    return header, rows()


# ----------------------------------------------------------------------------- cells


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    return "" if value is None else str(value).strip()


def _number(value: Any, stat: str, factor: float) -> float | None:
    """A cell as milliseconds; ``None`` for a gap; raises :class:`Refused`."""
    if value is None or isinstance(value, bool):
        if value is None:
            return None
        raise Refused("value not a number", repr(value))
    try:
        f = float(value)  # str (surrounding blanks allowed), int, float
    except (TypeError, ValueError):
        if str(value).strip().lower() in GAPS:
            return None
        raise Refused("value not a number", repr(value)) from None
    if f > 0 and f != math.inf:
        return round(f * factor, 3)
    if math.isnan(f):
        return None  # "nan", "NaN" or a float NaN (Parquet's missing value)
    if math.isinf(f):
        raise Refused("value not a number", repr(value))
    if f == 0 and stat in ("stdev", "mdev"):
        return 0.0
    raise Refused("value not above 0", repr(value))


def _summary(values: Iterable[tuple[str, float]]) -> RttSummary:
    """The summary of (field, value) pairs: ``min_ms``… or a percentile key ``p90``…"""
    fields: dict[str, Any] = {}
    percentiles: dict[str, float] = {}
    for key, v in values:
        if key[0] == "p":
            percentiles[key] = v
        else:
            fields[key] = v
    try:
        return RttSummary(samples=None, percentiles_ms=percentiles, **fields)
    except ValueError as exc:
        raise Refused("statistics contradict each other", str(exc)) from None


def _in_order(figures: list[tuple[str, float]]) -> bool:
    """Whether the figures are plainly consistent: min <= the rest <= max, percentiles rising.

    A fast sufficient test (no tolerance) of the order :class:`RttSummary`
    checks; a set that fails it is built as a real ``RttSummary``, which refuses
    it (or accepts it within its tolerance).  Spreads (stdev, mdev) are not
    ordered.
    """
    lo, hi = -math.inf, math.inf
    for key, v in figures:
        if key == "min_ms":
            lo = v
        elif key == "max_ms":
            hi = v
    last = lo
    for key, v in figures:
        if key[0] == "p":  # percentiles in the columns' order: they must rise
            if v < last:
                return False
            last = v
        if not lo <= v <= hi and key != "stdev_ms" and key != "mdev_ms":
            return False
    return True


def _field(stat: str) -> str:
    """Where a statistic goes in :class:`RttSummary`: ``mean`` → ``mean_ms``, ``p90`` → ``p90``."""
    return stat if stat.startswith("p") else f"{stat}_ms"


@lru_cache(maxsize=4096)
def _time_text(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    except (OverflowError, OSError):
        raise Refused("bad time", repr(text)) from None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise Refused("bad time", repr(text)) from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _time(value: Any) -> datetime:
    if isinstance(value, str) and value:
        return _time_text(value.strip())
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _time_text(repr(value))
    text = _text(value)
    if not text:
        raise Refused("no time")
    return _time_text(text)


def matrix_id(source: str, target: str, when: datetime) -> str:
    """The record id of the cell (source, target, time): the same on every import.

    A UUIDv5 (RFC 9562) of ``matrix:<source>:<target>:<ISO time>`` in
    :data:`MATRIX_NAMESPACE`.
    """
    return uuid5(MATRIX_NAMESPACE, f"matrix:{source}:{target}:{when.isoformat()}")[0]


# ----------------------------------------------------------------------------- places


@dataclass
class _Places:
    """Every name met, resolved once; the unresolved ones listed with where they were met."""

    kind: PlaceKind
    resolved: dict[str, Place] = field(default_factory=dict)
    roles: dict[str, set[str]] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, side: str, where: str, country: str | None,
            coords: tuple[Any, Any] | None) -> Place | None:
        self.roles.setdefault(name, set()).add(side)
        place = self.resolved.get(name)
        if place is not None or name in self.unresolved:
            return place
        place = self._resolve(name, country, coords)
        if place is None:
            self.unresolved[name] = f"{name} ({side}, {where})"
        else:
            self.resolved[name] = place
        return place

    def _resolve(self, name: str, country: str | None,
                 coords: tuple[Any, Any] | None) -> Place | None:
        if coords is not None:
            try:
                lat, lon = float(coords[0]), float(coords[1])
            except (TypeError, ValueError):
                return None
            if not (math.isfinite(lat) and math.isfinite(lon)):
                return None
            return _attempt(lambda: from_coordinates(lat, lon))
        kind = self.kind
        city, cc = name, country
        if cc is None and "," in name:
            head, _, tail = name.rpartition(",")
            if len(tail.strip()) == 2 and tail.strip().isalpha():
                city, cc = head.strip(), tail.strip()
        if kind == "auto":
            if cc is not None:
                kind = "city"
            elif len(name) == 3 and name.isalpha():
                kind = "iata"
            elif len(name) == 2 and name.isalpha():
                kind = "country"
            else:
                return None
        if kind == "iata":
            return _attempt(lambda: from_iata(name.upper()))
        if kind == "country":
            return _attempt(lambda: from_country(name.upper()))
        if cc is None:
            return None
        return _attempt(lambda: from_city(city, cc.upper()))


def _attempt(resolve: Callable[[], Place | None]) -> Place | None:
    try:
        return resolve()
    except (LookupError, ValueError):
        return None


def locations_path(output: Path) -> Path:
    """Where the locations file goes by default: ``OUT.locations.csv`` beside ``OUT``."""
    stem = output.name.removesuffix(".jsonl").removesuffix(".json")
    return output.with_name(f"{stem}.locations.csv")


# ----------------------------------------------------------------------------- encoding


class _Encoder:
    """Matrix records as JSON, byte for byte what :func:`encode_record` writes, faster.

    Building a :class:`PingRecord` checks every rule of the schema (the summary's
    order, the body's counts, the envelope), which costs more than everything
    else an import does per cell.  For a matrix cell those rules are settled
    before the record exists: the figures are finite and above 0 (checked by
    :func:`_number`), a cell with two or more figures has had its summary built
    and checked as a real :class:`RttSummary`, and the rest of the record is the
    same for every cell.  So the cells are encoded through structs with the
    same fields in the same order and no checks, and the first record of every
    file is also built the checked way and compared byte for byte: if the two
    ever differ (the schema changed), every record of the import is built the
    checked way.
    """

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.fast = True
        self._json = msgspec.json.Encoder()
        self._record_t = _mirror(PingRecord, tag="ping", tag_field="kind")
        self._body_t = _mirror(PingBody)
        self._summary_t = _mirror(RttSummary)
        blank = RttSummary(samples=None, min_ms=1.0)
        body = PingBody.from_summary(blank, sent=None, received=None, **fields)
        sample = PingRecord(id="00000000-0000-5000-8000-000000000000", agent="matrix:x",
                            target="x", started_at=datetime(2000, 1, 1, tzinfo=UTC),
                            duration_ms=0.0, status="ok", source=_SOURCE, body=body)
        self._summary = {f: getattr(blank, f) for f in RttSummary.__struct_encode_fields__}
        self._summary["min_ms"] = None
        self._body = {f: getattr(body, f) for f in PingBody.__struct_encode_fields__}
        self._record = {f: getattr(sample, f) for f in PingRecord.__struct_encode_fields__}

    def checked(self, rid: str, source: str, target: str, when: datetime,
                summary: RttSummary) -> bytes:
        """The record built with every check of the schema, encoded."""
        return encode_record(PingRecord(
            id=rid, agent=f"matrix:{source}", region=source, target=target, started_at=when,
            duration_ms=0.0, status="ok", source=_SOURCE,
            body=PingBody.from_summary(summary, sent=None, received=None, **self.fields)))

    def encode(self, rid: str, source: str, target: str, when: datetime,
               figures: list[tuple[str, float]], verify: bool) -> bytes:
        """One record's JSON (no newline).

        The caller has checked the figures: each with :func:`_number`, two or more
        together with :func:`_summary`.  ``verify``: also build the record the
        checked way and compare.
        """
        if not self.fast or verify:
            summary = _summary(figures)
            if not self.fast:
                return self.checked(rid, source, target, when, summary)
        fig = self._summary.copy()
        percentiles: dict[str, float] = {}
        for key, v in figures:
            if key[0] == "p":
                percentiles[key] = v
            else:
                fig[key] = v
        fig["percentiles_ms"] = percentiles
        body = self._body.copy()
        body["stats"] = RttStats(min_ms=fig["min_ms"], median_ms=fig["median_ms"],
                                 mean_ms=fig["mean_ms"], max_ms=fig["max_ms"], jitter_ms=None)
        body["summary"] = self._summary_t(**fig)
        record = self._record.copy()
        record.update(id=rid, agent=f"matrix:{source}", region=source, target=target,
                      started_at=when, body=self._body_t(**body))
        data = self._json.encode(self._record_t(**record))
        if verify:
            want = self.checked(rid, source, target, when, summary)
            if want != data:
                self.fast = False
                return want
        return data


def _mirror(cls: type[msgspec.Struct], **config: Any) -> type[msgspec.Struct]:
    """A struct with ``cls``'s fields in its encoding order, every one ``Any``, no checks."""
    return msgspec.defstruct(f"_Wire{cls.__name__}",
                             [(name, Any) for name in cls.__struct_encode_fields__], **config)


# ----------------------------------------------------------------------------- import

GAP_NOTE = "gap cells skipped (empty, '-', 'NA' …)"


@dataclass
class MatrixImport:
    """The outcome of :func:`import_matrix`: counts, what was inferred, the places."""

    report: ImportReport
    #: What was inferred per file (layout, columns, statistics, delimiter, time).
    said: list[str] = field(default_factory=list)
    #: Gap cells skipped, per file.
    gaps: Counter[str] = field(default_factory=Counter)
    places: dict[str, Place] = field(default_factory=dict)
    roles: dict[str, set[str]] = field(default_factory=dict)

    def location_places(self) -> list[Place]:
        """One place per name, sorted by name: ``dc`` if it is a destination, else ``region``."""
        return [self.places[name].named(
                    name, "dc" if "to" in self.roles.get(name, ()) else "region")
                for name in sorted(self.places)]


def import_matrix(paths: Sequence[Path], spec: MatrixSpec, output: Path,
                  locations_out: Path | None = None) -> MatrixImport:
    """Read every file, write the records to ``output`` and the places to ``locations_out``.

    ``locations_out`` defaults to :func:`locations_path` of ``output``.  Both
    files are written whole or not at all.  Raises :class:`UnresolvedPlacesError`
    (nothing written) when a name does not resolve, :class:`ImportFormatError`
    when a file cannot be read as a matrix.  Refused and gap cells are counted
    in the result; the caller decides what keeping nothing means (the CLI exits 2).
    """
    result = MatrixImport(report=ImportReport(source=_SOURCE))
    with replaced_whole(output) as tmp, open(tmp, "wb") as out:
        write = out.write
        for line in matrix_lines(paths, spec, result):
            write(line + b"\n")
        out.flush()
        os.fsync(out.fileno())
    if result.places:
        target = locations_out if locations_out is not None else locations_path(output)
        write_locations(result.location_places(), target)
    return result


def matrix_lines(paths: Sequence[Path], spec: MatrixSpec,
                 result: MatrixImport) -> Iterator[bytes]:
    """The JSON of every record of ``paths`` (one per line, no newline), as they are read.

    ``result`` receives the counts, what was inferred and, at the end, the
    places.  After the last line, raises :class:`UnresolvedPlacesError` when a
    name did not resolve (the records yielded so far must then be discarded).
    """
    places = _Places(spec.places)
    seen = RecentKeys(RECENT_KEYS)
    encoder = _Encoder({"ip_version": spec.ip_version, "socket": None, "payload_bytes": 0,
                        "interval_s": 0.0, "timeout_s": 0.0, "dont_fragment": False})
    for path in paths:
        yield from _lines(path, spec, places, result, seen, encoder)
    if places.unresolved:
        raise UnresolvedPlacesError(list(places.unresolved.values()))
    result.places = places.resolved
    result.roles = places.roles


def _lines(path: Path, spec: MatrixSpec, places: _Places, result: MatrixImport,
           seen: RecentKeys, encoder: _Encoder) -> Iterator[bytes]:
    """The JSON Lines of one file's records."""
    name = display_name(path)
    result.report.file(name)
    said: list[str] = []
    at = spec.at
    if at is None and str(path) != "-":
        at = datetime.fromtimestamp(int(path.stat().st_mtime), UTC)
        said_at = f"time {at.isoformat()} (the file's modification time; give --at)"
    else:
        at = at or datetime.now(UTC).replace(microsecond=0)
        said_at = f"time {at.isoformat()}"
    try:
        if _is_parquet(path):
            with open_binary(path) as fb, contextlib.ExitStack() as stack:
                header, rows = _parquet_rows(fb, stack)
                yield from _convert(name, header, rows, spec, said, said_at, at, places,
                                    result, seen, encoder, "row")
        else:
            with open_text(path) as ft:
                header, rows = _csv_rows(ft, spec, said)
                yield from _convert(name, header, rows, spec, said, said_at, at, places,
                                    result, seen, encoder, "line")
    except ImportFormatError as exc:
        if exc.where is None:
            raise ImportFormatError(exc.reason, exc.detail, where=name) from None
        raise
    except csv.Error as exc:
        raise ImportFormatError("not readable as CSV", str(exc), where=name) from None


def _convert(name: str, header: list[str], rows: Iterator[Row], spec: MatrixSpec,
             said: list[str], said_at: str, at: datetime, places: _Places,
             result: MatrixImport, seen: RecentKeys, encoder: _Encoder,
             unit: str) -> Iterator[bytes]:
    first = next(rows, None)
    plan = _plan(header, first[1] if first is not None else None, spec, said)
    if plan.time_i is None:
        said.append(said_at)
    for c in (plan.from_coords, plan.to_coords):
        if c is not None:
            said.append(f"coordinates from {header[c[0]]}/{header[c[1]]}")
    if spec.unit not in (None, "ms"):
        said.append(f"unit {spec.unit}")
    result.said += [f"{name}: {s}" for s in said]
    report = result.report
    tally = report.file(name)
    # Columns as (index, statistic, summary field); wide: one per destination column.
    long_values = [(i, stat, _field(stat), _UNITS[unit]) for i, stat, unit in plan.values]
    wide_factor = _UNITS[spec.unit or "ms"]
    wide_cells = [(target, i, plan.wide_stat, _field(plan.wide_stat))
                  for i, target in plan.targets]
    # Places met before, by side (a dict hit instead of the resolver on every cell).
    known: dict[tuple[str, str], Place] = {}
    stamps: dict[datetime, str] = {}
    read = kept = 0
    try:
        for n, cells in itertools.chain([first] if first is not None else [], rows):
            if len(cells) != plan.width:
                read += 1
                report.refuse("wrong number of fields", _where(name, n, None, unit),
                              f"{len(cells)} for {plan.width} columns", file=name)
                continue
            try:
                when = at if plan.time_i is None else _time(cells[plan.time_i])
            except Refused as exc:
                read += 1
                report.refuse(exc.reason, _where(name, n, None, unit), exc.detail, file=name)
                continue
            stamp = stamps.get(when)
            if stamp is None:
                if len(stamps) > 100_000:
                    stamps.clear()
                stamp = stamps[when] = when.isoformat()
            source = _text(cells[plan.from_i])
            todo: list[tuple[str, list[tuple[int, str, str, float]], str | None]]
            if plan.layout == "long":
                assert plan.to_i is not None
                todo = [(_text(cells[plan.to_i]), long_values, None)]
            else:
                todo = [(target, [(i, stat, key, wide_factor)], target)
                        for target, i, stat, key in wide_cells]
            for target, value_columns, column in todo:
                read += 1
                try:
                    if not source or not target:
                        raise Refused("no place name", "source" if not source
                                       else "destination")
                    figures = [(key, v) for i, stat, key, factor in value_columns
                               if (v := _number(cells[i], stat, factor)) is not None]
                    if not figures:
                        result.gaps[name] += 1
                        report.notes[GAP_NOTE] += 1
                        continue
                    if len(figures) > 1 and not _in_order(figures):
                        _summary(figures)  # refuses, saying which figures contradict
                except Refused as exc:
                    report.refuse(exc.reason, _where(name, n, column, unit), exc.detail,
                                  file=name)
                    continue
                p_from = known.get((source, "from"))
                if p_from is None and (len(source) > MAX_NAME or len(target) > MAX_NAME):
                    report.refuse("place name too long", _where(name, n, column, unit),
                                  f"more than {MAX_NAME} characters", file=name)
                    continue
                if p_from is None:
                    p_from = places.get(
                        source, "from", _where(name, n, column, unit),
                        _cell(cells, plan.from_country_i),
                        None if plan.from_coords is None else
                        (cells[plan.from_coords[0]], cells[plan.from_coords[1]]))
                    if p_from is not None:
                        known[(source, "from")] = p_from
                p_to = known.get((target, "to"))
                if p_to is None:
                    p_to = places.get(
                        target, "to", _where(name, n, column, unit),
                        _cell(cells, plan.to_country_i),
                        None if plan.to_coords is None else
                        (cells[plan.to_coords[0]], cells[plan.to_coords[1]]))
                    if p_to is not None:
                        known[(target, "to")] = p_to
                if p_from is None or p_to is None or places.unresolved:
                    continue  # the import will fail; read on to list every unresolved name
                rid, key = uuid5(MATRIX_NAMESPACE, f"matrix:{source}:{target}:{stamp}")
                if seen.again(stamp, key):
                    report.refuse("duplicate (from, to, time)", _where(name, n, column, unit),
                                  f"{source} -> {target} at {stamp}", file=name)
                    continue
                yield encoder.encode(rid, source, target, when, figures, not kept)
                kept += 1
    finally:
        tally.read += read
        tally.kept += kept
        report.by_kind["ping"] += kept


def _where(name: str, n: int, column: str | None, unit: str) -> str:
    """``FILE:LINE`` (CSV) or ``FILE row N`` (Parquet), and the column of a wide matrix."""
    where = f"{name}:{n}" if unit == "line" else f"{name} {unit} {n}"
    return where if column is None else f"{where} column {column!r}"


def _cell(cells: Sequence[Any], i: int | None) -> str | None:
    if i is None:
        return None
    return _text(cells[i]) or None
