"""The analysis layer: pure functions over tidy DataFrames (see :mod:`.frames`).

The public surface the notebooks and the report use::

    from netvantage import analysis as nva
    campaign = nva.load("data/campaigns/lab-sample.jsonl")
    places = nva.locations("data/locations/lab.csv")
    result = nva.analyse(campaign, weights={"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.1},
                         locations=places)
    result.ranking.table, result.flags
    pair = nva.place_campaign(campaign, locations=places, sites=2)   # where to live
    pair.best.sites, pair.per_region
"""

from __future__ import annotations

from .degrade import degradation_flags
from .frames import Campaign
from .geo import great_circle_km, inflation, locations, rtt_floor_ms
from .load import load
from .metrics import metrics, phase_metrics, windowed
from .paths import path_changes, path_summary, where_it_starts
from .place import Placement, PlacementError, place, place_campaign, place_costs
from .rank import CostMatrix, CostModel, Thresholds, cost_matrix, rank, stability
from .summary import Analysis, analyse, default_window, equal_weights

__all__ = [
    "Analysis",
    "Campaign",
    "CostMatrix",
    "CostModel",
    "Placement",
    "PlacementError",
    "Thresholds",
    "analyse",
    "cost_matrix",
    "default_window",
    "degradation_flags",
    "equal_weights",
    "great_circle_km",
    "inflation",
    "load",
    "locations",
    "metrics",
    "path_changes",
    "path_summary",
    "phase_metrics",
    "place",
    "place_campaign",
    "place_costs",
    "rank",
    "rtt_floor_ms",
    "stability",
    "where_it_starts",
    "windowed",
]
