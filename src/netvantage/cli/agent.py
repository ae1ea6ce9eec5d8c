"""``netvantage agent run``: the probe agent."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import CONTEXT, EXIT_FAILED, die

__all__ = ["agent"]


@click.group(context_settings=CONTEXT, epilog="""\b
Example:
  netvantage agent run --plan probes/example-plan.toml""")
def agent() -> None:
    """The probe agent: measures its plan on a schedule and uploads to a collector."""


@agent.command("run", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage agent run --plan /etc/netvantage/plan.toml
  netvantage agent run --plan plan.toml --duration 300 --status-interval 30
  netvantage agent run --plan plan.toml --metrics-listen 127.0.0.1:9469
\b
Every result is written to the spool (SQLite) before it is uploaded; it leaves
the spool only when the collector acknowledges it. SIGTERM stops cleanly.
\b
If spool writes fail (a full disk), measuring pauses with the error in the
status line; past the plan's [agent] spool_error_limit_s (default 300 s) the
agent stops and exits 1.""")
@click.option("--plan", "plan_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--duration", type=click.FloatRange(0.1), help="Stop after this many seconds.")
@click.option("--status-interval", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds between status lines on stderr.")
@click.option("--audit", is_flag=True,
              help="Keep every spooled id in the spool's audit table (for tests).")
@click.option("--check", is_flag=True, help="Only check the plan and list its measurements.")
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (probe_success, "
                   "RTT, loss, phase times per measurement; spool and upload health). "
                   "[::1]:PORT for IPv6, :PORT for every IPv4 interface, port 0: any free "
                   "port (the address is logged). See docs/monitoring.md.")
def agent_run(plan_path: Path, duration: float | None, status_interval: float, audit: bool,
              check: bool, metrics_listen: str | None) -> None:
    """Run the measurement plan until stopped (or for --duration seconds)."""
    import asyncio

    from ..agent.plan import load_plan
    from ..agent.run import Agent
    from ..agent.spool import SpoolWriteError

    plan = load_plan(plan_path)  # a PlanError exits 2 with every problem (see cli.Root)
    if check:
        click.echo("\n".join(plan.describe()))
        return

    if metrics_listen is not None:
        from ..agent.metrics import parse_listen

        parse_listen(metrics_listen)  # a wrong address exits 2 before anything starts

    async def main() -> None:
        runner = Agent(plan, audit=audit, status_interval_s=status_interval)
        server = None
        if metrics_listen is not None:  # prometheus_client is loaded only then
            from ..agent.metrics import serve_metrics

            try:
                server = serve_metrics(runner, metrics_listen)
            except BaseException:
                runner.spool.close()
                raise
            runner.say(f"metrics on {server.url}")
        try:
            await runner.run(duration_s=duration)
        finally:
            if server is not None:
                server.close()

    try:
        asyncio.run(main())
    except SpoolWriteError as exc:  # the spool kept failing: not a usage error
        die(str(exc), EXIT_FAILED)
