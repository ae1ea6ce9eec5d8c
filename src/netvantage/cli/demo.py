"""``netvantage demo``: the whole pipeline on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import CONTEXT

__all__ = ["demo_cmd"]


@click.command("demo", context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage demo                 # lab + agents + collector + report, ~4 minutes
  netvantage demo                      # without root: the report of the bundled campaign
  netvantage demo --quick              # loopback ping and TCP only
\b
As root it brings the lab up, measures from every client region for --minutes with a
degradation switched on half-way, writes OUT/report.html and tears the lab down.""")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("out"), show_default=True, help="Where the demo writes its files.")
@click.option("--minutes", type=click.FloatRange(1, 60), default=3.0, show_default=True,
              help="Length of the lab campaign.")
@click.option("--quick", is_flag=True, help="Only measure loopback (ICMP and TCP).")
def demo_cmd(out_dir: Path, minutes: float, quick: bool) -> None:
    """The whole pipeline on this machine, ending with the report a person reads."""
    if quick:
        from ..demo import run_quick_demo
        from ..measure.text import records_table

        records, output, notes = run_quick_demo(out_dir)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        click.echo(records_table(records))
        click.echo(f"\n{len(records)} records written to {output}")
        return
    from ..demo import run_demo

    result = run_demo(out_dir, minutes=minutes, say=lambda m: click.echo(f"demo: {m}",
                                                                          err=True))
    click.echo(f"report: {result.report.resolve()}")
    click.echo(f"data:   {result.data.resolve()}"
               + ("" if result.live else " (bundled sample: run as root for a live campaign)"))
