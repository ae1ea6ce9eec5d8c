"""The ``netvantage`` command: a thin shell that parses arguments and calls the library.

One module per command group (``measure``, ``lab``, ``agent``, ``collector`` with
``export``, ``analysis`` with ``analyse``, ``report`` and ``partition``, ``imports`` with
``import``, ``place``, ``records`` with ``annotate`` and ``schema``, ``demo``); ``_common``
holds what they share.
Text meant for people is formatted by the library module that owns the data
(``measure.text``, ``Analysis.to_text``, ``LabStatus.describe``, ``Plan.describe``).

Start-up stays light: importing this package loads click and the exception tree
only; each command imports asyncio, the schema, a probe or pandas when it runs.

Exit codes (stable, for scripts):

* 0 – the command ran; every measurement produced a record (whatever its status)
* 1 – ``--fail-on-error`` was given and at least one record's status is not ``ok``
* 2 – bad usage or bad input (a malformed target, an invalid file)
* 3 – missing privilege (no ICMP socket could be opened)
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .. import __version__
from ._common import CONTEXT, EXIT_FAILED, EXIT_OK, EXIT_PRIVILEGE, EXIT_USAGE, Root
from .agent import agent
from .analysis import analyse_cmd, partition_cmd, report_cmd
from .collector import collector, export_cmd
from .demo import demo_cmd
from .imports import import_
from .lab import lab
from .measure import measure
from .place import place_cmd
from .records import annotate_cmd, schema_cmd

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_PRIVILEGE", "EXIT_USAGE", "cli", "main"]


@click.group(cls=Root, context_settings=CONTEXT, epilog="""\b
Example:
  netvantage measure ping 127.0.0.1 --count 5
\b
Exit codes: 0 ran, 1 a record is not ok (with --fail-on-error),
2 bad usage or input, 3 missing privilege.""")
@click.version_option(__version__, "-V", "--version", prog_name="netvantage")
def cli() -> None:
    """Network path diagnostics and data-centre comparison, from the clients' side."""


for _command in (measure, lab, agent, collector, export_cmd, import_, analyse_cmd, report_cmd,
                 partition_cmd, place_cmd, annotate_cmd, schema_cmd, demo_cmd):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point (``netvantage = "netvantage.cli:main"``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="netvantage")
