"""What every command module shares: exit codes, the error exit, options, the output step.

Importing this loads click and nothing of netvantage's own beyond the exception
tree (``errors``, which imports nothing): asyncio, the record schema and the
probes are imported by the function that needs them, when a command runs, so
that ``netvantage --help`` (and every command that needs none of them) starts fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..errors import NetvantageError, PrivilegeError

if TYPE_CHECKING:
    from ..measure.common import Origin
    from ..measure.target import Target
    from ..results import AnyRecord

__all__ = [
    "CONTEXT",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PRIVILEGE",
    "EXIT_USAGE",
    "Root",
    "common_options",
    "die",
    "echo_json",
    "emit",
    "load_campaign_and_places",
    "origin",
    "parse_mixes",
    "parse_weights",
    "readiness_checks",
    "run",
    "store_option",
    "targets",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PRIVILEGE = 0, 1, 2, 3

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def die(message: str, code: int) -> NoReturn:
    """Say what went wrong on stderr (``netvantage: error: ...``) and exit with ``code``."""
    click.echo(f"netvantage: error: {message}", err=True)
    sys.exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a measurement coroutine (a refused socket privilege exits 3: see ``Root``)."""
    import asyncio

    return asyncio.run(coro)


class Root(click.Group):
    """The root group: it turns every error netvantage raises on purpose into an exit code.

    A :class:`~netvantage.errors.NetvantageError` carries a message that says what to
    do, so the user sees that message (``netvantage: error: ...``), not a traceback:
    exit 3 for a missing privilege, 2 for every other (bad input or configuration).
    Commands catch only what else they expect (``OSError``, ``ValueError``).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NetvantageError as exc:
            die(str(exc), EXIT_PRIVILEGE if isinstance(exc, PrivilegeError) else EXIT_USAGE)
        except MemoryError:
            # Raised here or in a worker process of the loader; by now the frames that
            # held the data are gone, so there is memory enough to say what to do.
            command = ctx.invoked_subcommand or ""
            cluster = (" or run the same analysis on a Dask cluster, whose workers each hold "
                       "one partition ('netvantage analyse DATA --dask local')"
                       if command in ("analyse", "report") else "")
            die("out of memory: this input does not fit in the memory this process may use; "
                "give it less at a time (one kind, as 'netvantage export --kind' writes it, or a "
                "shorter period)" + cluster, EXIT_USAGE)


def targets(texts: Sequence[str], *, require_port: bool) -> list[Target]:
    """Parse every target; if any is bad, exit 2 listing all the problems at once."""
    from ..errors import TargetError
    from ..measure.target import parse_target

    out: list[Target] = []
    problems: list[str] = []
    for text in texts:
        try:
            out.append(parse_target(text, require_port=require_port))
        except TargetError as exc:
            problems.append(str(exc))
    if problems:
        die("bad target(s):\n  " + "\n  ".join(problems), EXIT_USAGE)
    return out


def origin(agent: str | None, region: str | None) -> Origin:
    """Who measured: ``--agent`` (default: this host's name) and ``--region``."""
    from ..measure.common import Origin

    local = Origin.local(region)
    return Origin(agent=agent or local.agent, region=region)


def emit(records: Sequence[AnyRecord], output: Path | None, table: bool,
         fail_on_error: bool) -> None:
    """The output step of every ``measure`` command: file, table or JSON Lines on stdout."""
    from ..results import encode_record, write_jsonl

    if output is not None:
        write_jsonl(records, output)
    if table:
        from ..measure.text import records_table

        click.echo(records_table(records))
    elif output is None:
        out = sys.stdout.buffer
        for record in records:
            out.write(encode_record(record) + b"\n")
        out.flush()
    if fail_on_error and any(r.status != "ok" for r in records):
        sys.exit(EXIT_FAILED)


def common_options(f: F) -> F:
    """The options every ``measure`` command takes (output, origin, concurrency, family)."""
    options = [
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write JSON Lines to FILE (replaced whole) instead of stdout."),
        click.option("--table", is_flag=True, help="Print a readable table instead of JSON."),
        click.option("--fail-on-error", is_flag=True,
                     help="Exit 1 if any record's status is not ok."),
        click.option("--agent", default=None, help="Agent name in the records [host name]."),
        click.option("--region", default=None, help="Region label in the records."),
        click.option("-c", "--concurrency", type=click.IntRange(1, 4096), default=8,
                     show_default=True, help="Targets measured at once."),
        click.option("-4", "family", flag_value=4, help="IPv4 only."),
        click.option("-6", "family", flag_value=6, help="IPv6 only."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


store_option = click.option(
    "--store", "store_path", required=True, metavar="FILE|URL",
    help="The collector's store: a SQLite file (created if missing) or a PostgreSQL "
         "database, postgresql://[USER[:PASSWORD]@][HOST][:PORT]/DBNAME[?host=SOCKET_DIR] "
         "(its tables are created).")


def parse_weights(text: str | None, option: str = "--weights") -> dict[str, float] | None:
    """``--weights GROUP=W,...`` as a dict; None when not given; exit 2 when malformed.

    GROUP is a region name, a continent or country code or a region glob (resolved against
    the data by :func:`netvantage.analysis.mix.resolve_weights`); W a number ≥ 0.
    """
    if not text:
        return None
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            die(f"{option}: {part!r} is not REGION=NUMBER (or GROUP=NUMBER: a continent, "
                "country or region glob such as AF, ZA or ZA-*)", EXIT_USAGE)
        if not name or not weight >= 0 or weight == float("inf"):
            die(f"{option}: {part!r}: give a name and a finite number ≥ 0", EXIT_USAGE)
        if name in weights:
            die(f"{option}: {name!r} is given twice", EXIT_USAGE)
        weights[name] = weight
    return weights


def parse_mixes(texts: Sequence[str]) -> dict[str, dict[str, float]]:
    """``--mix NAME=GROUP=W,...`` (repeatable) as name → weights; exit 2 when malformed.

    The name is everything before the first ``=`` (letters, digits, ``_ . -``); the rest is
    read as ``--weights`` is.  ``--mix africa=AF=1 --mix even=*=1``.
    """
    import re

    out: dict[str, dict[str, float]] = {}
    for text in texts:
        name, sep, rest = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or "=" not in rest.split(
                ",")[0]:
            die(f"--mix: {text!r} is not NAME=GROUP=W,... (e.g. africa=AF=1 or "
                "split=EU=0.5,AF=0.5)", EXIT_USAGE)
        if name in out or name == "given":
            die(f"--mix: the name {name!r} is "
                f"{'reserved for --weights' if name == 'given' else 'given twice'}", EXIT_USAGE)
        out[name] = parse_weights(rest, f"--mix {name}") or {}
    return out


def load_campaign_and_places(data: Sequence[str], locations_path: Path | None) -> Any:
    """The campaign in DATA and the places in ``--locations``; exit 2 if either is bad."""
    from ..analysis.geo import locations as read_locations
    from ..analysis.load import load

    try:
        campaign = load(list(data) if len(data) > 1 else data[0])
        places = read_locations(locations_path) if locations_path else None
    except OSError as exc:
        die(str(exc), EXIT_USAGE)
    return campaign, places


#: How many pieces of JSON text (a value, a key, a bracket) :func:`echo_json` writes at
#: a time: some tens of kB.
JSON_WRITE_PIECES = 4096


def echo_json(value: Any) -> None:
    """``click.echo(json.dumps(value, indent=2, default=str))``, written as it is encoded.

    ``dumps`` joins the encoder's pieces from one list: for an analysis of 1M records a
    few million strings, far more memory than the text.  Here the same encoder's pieces
    (``JSONEncoder.iterencode``, so the same text to the byte) are written
    :data:`JSON_WRITE_PIECES` at a time as they come.
    """
    import json

    pieces: list[str] = []
    for piece in json.JSONEncoder(indent=2, default=str).iterencode(value):
        pieces.append(piece)
        if len(pieces) >= JSON_WRITE_PIECES:
            click.echo("".join(pieces), nl=False)
            pieces.clear()
    click.echo("".join(pieces))


def readiness_checks(text: str) -> tuple[str, ...]:
    """``--readiness-fail-on``: check names, or 'none'."""
    from ..results import READY_CHECKS

    if text.strip().lower() in ("none", ""):
        return ()
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [n for n in names if n not in READY_CHECKS]
    if bad:
        die(f"--readiness-fail-on: unknown check(s) {', '.join(bad)} (checks: "
            f"{', '.join(READY_CHECKS)}, or none)", EXIT_USAGE)
    return names
