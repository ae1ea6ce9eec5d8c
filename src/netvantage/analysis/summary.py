"""One call from a campaign to the answer: metrics, the physical bound, where paths go
wrong, the ranking and the flags.  Pure: frames in, frames out (the caller loads).

This is what ``netvantage analyse``, the report and the notebooks call; each step
is also available on its own in its module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .degrade import degradation_flags
from .frames import Campaign
from .geo import inflation as inflation_table
from .metrics import metrics as metrics_table
from .paths import where_it_starts
from .rank import CostModel, Ranking, Stability, Thresholds, rank, stability

__all__ = ["Analysis", "analyse", "default_window", "equal_weights"]


@dataclass(frozen=True)
class Analysis:
    """Everything a reader needs; every field is a DataFrame or a small value."""

    weights: dict[str, float]
    metrics: pd.DataFrame
    inflation: pd.DataFrame | None
    paths: pd.DataFrame
    ranking: Ranking
    stability: Stability
    flags: pd.DataFrame
    window: pd.Timedelta
    span: tuple[pd.Timestamp, pd.Timestamp] | None
    notes: list[str] = field(default_factory=list)

    @property
    def winner(self) -> str | None:
        table = self.ranking.table
        return None if table.empty else str(table.sort_values("rank").iloc[0]["target"])


def equal_weights(campaign: Campaign) -> dict[str, float]:
    regions = sorted(str(r) for r in campaign.measurements["region"].dropna().unique())
    return {r: 1.0 / len(regions) for r in regions} if regions else {}


def default_window(campaign: Campaign) -> pd.Timedelta:
    """About a tenth of the campaign's length, between one minute and one hour."""
    started = campaign.measurements["started_at"]
    if started.empty:
        return pd.Timedelta("5min")
    span = started.max() - started.min()
    window = pd.Timedelta((span / 10).ceil("1min"))
    return pd.Timedelta(min(max(window, pd.Timedelta("1min")), pd.Timedelta("1h")))


def _path_evidence(campaign: Campaign, locations: pd.DataFrame | None) -> pd.DataFrame:
    hops = campaign.hops
    if hops.empty:
        return pd.DataFrame()
    rows: list[dict[str, Any]] = []
    pairs = hops[["region", "target"]].dropna().drop_duplicates()
    for region, target in pairs.itertuples(index=False):
        found = where_it_starts(hops, str(region), str(target), locations)
        rows.append({"region": str(region), "target": str(target), **found})
    return pd.DataFrame(rows)


def analyse(campaign: Campaign, *, weights: Mapping[str, float] | None = None,
            locations: pd.DataFrame | None = None, cost: CostModel | None = None,
            thresholds: Thresholds | None = None, window: str | pd.Timedelta | None = None,
            n_boot: int = 500, seed: int = 0) -> Analysis:
    """The whole analysis of a campaign (``locations`` enables the physical-bound tests).

    ``cost`` and ``thresholds`` default to :class:`CostModel` and :class:`Thresholds`'
    documented defaults; ``window`` to a tenth of the campaign (see :func:`default_window`).
    """
    cost = cost or CostModel()
    thresholds = thresholds or Thresholds()
    notes: list[str] = []
    w = dict(weights) if weights else equal_weights(campaign)
    if not weights:
        notes.append("no client weights given: every region counts the same")
    m = campaign.measurements
    span = (m["started_at"].min(), m["started_at"].max()) if not m.empty else None
    win = pd.Timedelta(window) if window is not None else default_window(campaign)
    infl = None
    if locations is not None:
        infl = inflation_table(m, locations)
    else:
        notes.append("no locations given: the physical-bound and distance tests are skipped")
    evidence = _path_evidence(campaign, locations)
    ranking = rank(m, w, cost=cost, thresholds=thresholds, n_boot=n_boot, seed=seed)
    stable = stability(m, w, cost=cost, thresholds=thresholds, seed=seed)
    flags = degradation_flags(m, inflation=infl,
                              path_evidence=evidence if not evidence.empty else None,
                              window=win)
    return Analysis(weights=w, metrics=metrics_table(campaign, n_boot=min(n_boot, 500),
                                                     seed=seed),
                    inflation=infl, paths=evidence, ranking=ranking, stability=stable,
                    flags=flags, window=win, span=span, notes=notes)
