"""The report's section on the physical checks: impossible measurements and inflation.

Built from :class:`netvantage.analysis.physics.Physics` (``Analysis.physics``) as display
strings; the HTML partial ``templates/_physics.html.j2`` and :func:`physics_markdown`
render it; the figure is :func:`netvantage.report.figures.inflation_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..analysis.geo import FIBRE_FAST_KM_PER_MS, FIBRE_KM_PER_MS, MIN_FLOOR_MS
from ..analysis.physics import VACUUM, Physics

__all__ = ["PhysicsSection", "physics_markdown", "physics_section"]


@dataclass(frozen=True, slots=True)
class PhysicsSection:
    headline: str  # how many impossible pairs, and what was done with them
    columns: tuple[str, ...]  # the impossible pairs' table
    rows: tuple[tuple[str, ...], ...]
    inflation: str  # the median, over how many pairs
    continent_columns: tuple[str, ...]
    continent_rows: tuple[tuple[str, ...], ...]
    rule: str


def _n(value: Any, digits: int = 1) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else f"{x:,.{digits}f}"


def physics_section(physics: Physics | None) -> PhysicsSection | None:
    """The section's strings (None without locations: nothing was checked)."""
    if physics is None:
        return None
    bad = physics.impossible
    checked = int((physics.pairs["status"] != "unlocated").sum())
    vac = int((bad["status"] == VACUUM).sum())
    if not checked:
        headline = ("Nothing to check: no pair has both a minimum RTT and the places of both "
                    "ends (summary records that give no minimum cannot be tested), so "
                    "impossible measurements could not be looked for.")
    elif bad.empty:
        headline = (f"No impossible measurement: every one of the {checked} located pairs is "
                    "slower than light in fibre.")
    else:
        headline = (f"{len(bad)} of {checked} located pairs are impossible measurements "
                    f"(minimum RTT below light in fibre; {vac} below light in vacuum): "
                    + ("kept in the ranking as asked (--keep-impossible)."
                       if physics.keep_impossible else
                       "their records are left out of the ranking (--keep-impossible keeps "
                       "them)."))
    explained = int(physics.pairs["explained_by_probe"].sum())
    if explained:
        headline += (f" {explained} more pair(s) are below the bound from the region point but "
                     "not from their probes' own coordinates: not impossible.")
    rows = tuple((str(r.region), str(r.target), str(r.status), _n(r.rtt_min_ms),
                  _n(r.fibre_bound_ms), _n(r.vacuum_bound_ms), _n(r.distance_km, 0),
                  str(r.source), str(r.cause), str(r.why))
                 for r in bad.sort_values(["region", "target"]).itertuples())
    med = physics.median_inflation
    inflation = (f"Median inflation (minimum RTT over the fibre floor): "
                 f"{_n(med, 2)} over {len(physics.usable)} pairs; impossible pairs and pairs "
                 f"whose floor is under {MIN_FLOOR_MS:g} ms are left out."
                 if len(physics.usable) else
                 "No inflation figure: no possible pair has a minimum RTT and a fibre floor "
                 f"of at least {MIN_FLOOR_MS:g} ms to divide it by.")
    cont = tuple((f"{r.region_continent} → {r.target_continent}", str(int(cast(Any, r.n))),
                  _n(r.median, 2), f"{_n(r.p25, 2)}–{_n(r.p75, 2)}")
                 for r in physics.continents.itertuples())
    rule = (f"Impossible: minimum RTT below 2 × distance / {FIBRE_FAST_KM_PER_MS:.1f} km/ms "
            "(light in G.652 fibre, group index 1.468) or below 2 × distance / 299.8 km/ms "
            f"(vacuum), the distance less {physics.slack_km:g} km and 0.5 % for where the "
            "coordinates point; measured from the probe's own coordinates when the locations "
            f"name it, else from the region point. Inflation: minimum RTT over 2 × distance / "
            f"{FIBRE_KM_PER_MS:g} km/ms (1 ms per 100 km).")
    return PhysicsSection(
        headline, ("region", "data centre", "status", "min RTT (ms)", "fibre bound (ms)",
                   "vacuum bound (ms)", "distance (km)", "from", "likely cause", "why"),
        rows, inflation, ("continents (region → data centre)", "pairs", "median", "p25–p75"),
        cont, rule)


def physics_markdown(section: PhysicsSection | None, md: Callable[[object], str],
                     figure: Sequence[str] = ()) -> list[str]:
    """The section in Markdown (``md`` escapes a cell; ``figure``: the figure's lines)."""
    if section is None:
        return []
    out = ["## Physical checks", "", md(section.headline), ""]

    def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
        return ["| " + " | ".join(md(c) for c in columns) + " |",
                "|" + "|".join("---" for _ in columns) + "|",
                *("| " + " | ".join(md(c) for c in row) + " |" for row in rows), ""]

    if section.rows:
        out += table(section.columns, section.rows)
    out += [md(section.inflation), ""]
    if section.continent_rows:
        out += table(section.continent_columns, section.continent_rows)
    out += [*figure, f"*{md(section.rule)}*", ""]
    return out
