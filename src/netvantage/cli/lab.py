"""``netvantage lab up|down|status|exec|link``: the emulated internet."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from ._common import CONTEXT, EXIT_FAILED, EXIT_USAGE, die

if TYPE_CHECKING:
    from ..lab.core import Lab

__all__ = ["lab"]


def _lab(prefix: str) -> Lab:
    from ..lab.core import Lab

    return Lab(prefix)  # a bad prefix is a LabError: exit 2 (see cli.Root)


_prefix_option = click.option(
    "--prefix", default="nvl", show_default=True,
    help="Namespace prefix of this lab (namespaces are PREFIX-NODE).")


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage lab up
  sudo netvantage lab exec lun -- ping -c 3 10.10.255.15
  sudo netvantage lab link r-los r-lis --loss 0.2 --delay 90
  sudo netvantage lab down""")
def lab() -> None:
    """The emulated internet: client regions, routers and data centres in namespaces."""


@lab.command("up", context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage lab up
  sudo netvantage lab up data/lab/default.toml --no-mail""")
@click.argument("topology", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--mail/--no-mail", default=True, show_default=True,
              help="Start Postfix and Dovecot in every data centre.")
@click.option("--dns/--no-dns", default=True, show_default=True,
              help="Start Knot, rbldnsd and an Unbound resolver per client region.")
@_prefix_option
def lab_up(topology: str | None, mail: bool, dns: bool, prefix: str) -> None:
    """Build the lab from a topology file (default: the bundled africa-amsterdam story)."""
    from ..lab.core import Lab
    from ..lab.topology import load_topology

    topo = load_topology(topology)
    state = Lab(prefix, topo).up(mail=mail, dns=dns,
                                 progress=lambda m: click.echo(f"  {m}", err=True))
    click.echo(f"lab {prefix!r} up in {state['up_seconds']:.2f} s: {len(topo.nodes)} nodes, "
               f"{len(topo.links)} links (delay: {state['delay_method']})")
    for line in topo.node_lines():
        click.echo(f"  {line}")
    if state.get("ca"):
        click.echo(f"lab CA certificate: {state['ca']}")
    if state.get("dns"):
        d = state["dns"]
        click.echo(f"lab DNS: authoritative and blocklists at {d['address']} ({d['hub']}); "
                   f"each client region resolves through its own Unbound; mail domain "
                   f"{d['domain']}, DKIM selectors "
                   + ", ".join(f"{k}={v}" for k, v in d["selectors"].items()))
    if state.get("geo"):
        click.echo(f"lab geo databases: --asn-db {state['geo']['asn']} "
                   f"--city-db {state['geo']['city']}")


@lab.command("down", context_settings=CONTEXT, epilog="""\b
Example:
  sudo netvantage lab down""")
@_prefix_option
def lab_down(prefix: str) -> None:
    """Remove every namespace, process and file of the lab (also a half-built one)."""
    done = _lab(prefix).down()
    for line in done:
        click.echo(f"  {line}")
    click.echo(f"lab {prefix!r} is down" if done else f"lab {prefix!r} was not up")


@lab.command("status", context_settings=CONTEXT, epilog="""\b
Example:
  sudo netvantage lab status""")
@_prefix_option
def lab_status(prefix: str) -> None:
    """Say whether the lab is up, and list its nodes and addresses; exit 1 if it is not up."""
    lab_ = _lab(prefix)
    st = lab_.status()
    if not st.namespaces and not st.state:
        click.echo(f"lab {prefix!r} is down")
        sys.exit(EXIT_FAILED)
    click.echo("\n".join(st.describe(lab_.topology if st.state.get("topology") else None)))
    if not st.up:
        sys.exit(EXIT_FAILED)


@lab.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True},
             epilog="""\b
Examples:
  sudo netvantage lab exec lun -- traceroute -n 10.10.255.15
  sudo netvantage lab exec jnb -- netvantage measure ping 10.10.255.16""")
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_prefix_option
def lab_exec(node: str, command: tuple[str, ...], prefix: str) -> None:
    """Run COMMAND inside NODE's namespace; exits with its exit code."""
    sys.exit(_lab(prefix).exec(node, command))


@lab.command("link", context_settings=CONTEXT, epilog="""\b
Examples:
  sudo netvantage lab link r-los r-lis --loss 0.10
  sudo netvantage lab link r-lon r-ams --delay 25 --jitter 5""")
@click.argument("a")
@click.argument("b")
@click.option("--delay", "delay_ms", type=click.FloatRange(0, 10_000),
              help="One-way delay in ms.")
@click.option("--jitter", "jitter_ms", type=click.FloatRange(0, 10_000), help="Jitter in ms.")
@click.option("--loss", type=click.FloatRange(0, 1), help="Loss ratio each way (0..1).")
@_prefix_option
def lab_link(a: str, b: str, delay_ms: float | None, jitter_ms: float | None,
             loss: float | None, prefix: str) -> None:
    """Change a link's delay, jitter or loss while the lab runs."""
    if delay_ms is None and jitter_ms is None and loss is None:
        die("give at least one of --delay, --jitter, --loss", EXIT_USAGE)
    link = _lab(prefix).set_link(a, b, delay_ms=delay_ms, jitter_ms=jitter_ms, loss=loss)
    click.echo(f"link {link.a}-{link.b} changed")
