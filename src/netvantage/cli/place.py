"""``netvantage place``: the best site, the best pair, k sites under a budget."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    CONTEXT,
    echo_json,
    load_campaign_and_places,
    parse_weights,
    readiness_checks,
)

__all__ = ["place_cmd"]


@click.command("place", context_settings=CONTEXT, epilog="""\b
Examples:
  netvantage place data/campaigns/lab-sample.jsonl --locations data/locations/lab.csv --sites 2
  netvantage place results.db --weights AF=0.7,EU=0.3 --sites 2 --mode failover
  netvantage place results.db --locations places.csv --sites 2 --mode relay
  netvantage place results.db --sites 3 --cost 'dc-*=100' --cost dc-ams=250 --budget 400 \\
      --must-include dc-jnb
\b
DATA: JSON Lines file(s), the collector's store, or an exported Parquet dataset.
Costs are the ranking's (`netvantage analyse`): per (region, site), in ms-equivalents.""")
@click.argument("data", nargs=-1, required=True)
@click.option("--locations", "locations_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="CSV of regions and data centres: the physical-bound "
              "test (as the ranking) and the distances of estimated relay legs.")
@click.option("--weights", help="Client weights, GROUP=W,... (as `analyse`) [every region "
              "equal].")
@click.option("--sites", "k", type=click.IntRange(min=1), default=2, show_default=True,
              help="How many sites (with --budget: at most this many).")
@click.option("--mode", type=click.Choice(["anycast", "failover", "relay"]), default="anycast",
              show_default=True, help="anycast: each region served by its best site; "
              "failover: priority order (as MX hosts), the next site serves when one is down; "
              "relay: one primary, reached directly or through a relay site.")
@click.option("--failure-prob", type=float, default=0.01, show_default=True,
              help="failover: the probability that a site is down when a client connects.")
@click.option("--cost", "costs", multiple=True, metavar="SITE=EUR,...",
              help="Price of a site (repeatable; SITE may be a glob such as 'dc-*'; later "
              "keys win).")
@click.option("--budget", type=float, metavar="EUR", help="Most the chosen sites may cost "
              "together (every candidate then needs a --cost).")
@click.option("--must-include", "must", multiple=True, metavar="SITE",
              help="A site every set must hold (repeatable).")
@click.option("--alternatives", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many runner-up sets to list.")
@click.option("--keep-impossible", is_flag=True, help="Keep pairs faster than light in fibre "
              "(as `analyse`) [left out].")
@click.option("--same-city-floor", "same_city_floor", type=float, metavar="MS",
              help="RTT assumed for an unmeasured same-city pair (as `analyse`).")
@click.option("--readiness-fail-on", "readiness_fail_on", default="dnsbl,dkim",
              show_default=True, metavar="CHECK,...",
              help="Mail-readiness checks (mailready records) whose failure fails a candidate, "
              "as in `analyse`; 'none' switches it off.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def place_cmd(data: tuple[str, ...], locations_path: Path | None, weights: str | None, k: int,
              mode: str, failure_prob: float, costs: tuple[str, ...], budget: float | None,
              must: tuple[str, ...], alternatives: int, keep_impossible: bool,
              same_city_floor: float | None, readiness_fail_on: str, fmt: str) -> None:
    """Choose where the service lives: the best set of K sites, its score with an interval,
    what each client region gains over the best single site, and the alternatives."""
    parsed = parse_weights(weights)  # a typo fails before the data are loaded
    fail_on = readiness_checks(readiness_fail_on)
    from ..analysis.place import parse_prices, place_campaign

    campaign, places = load_campaign_and_places(data, locations_path)
    sites = sorted(str(t) for t in campaign.measurements["target"].dropna().unique())
    prices = parse_prices(costs, sites) if costs else None
    result = place_campaign(campaign, weights=parsed, locations=places,
                            keep_impossible=keep_impossible,
                            same_city_floor_ms=same_city_floor, sites=k, mode=mode,
                            prices=prices, budget=budget, must_include=must,
                            failure_prob=failure_prob, alternatives=alternatives,
                            readiness_fail_on=fail_on)
    if fmt == "json":
        echo_json(result.to_dict())
    else:
        click.echo(result.to_text())
