"""The report's detours section: what :mod:`netvantage.analysis.detours` found, worded.

Plain data for both renderers: the partial ``templates/_detours.html.j2`` and
:func:`detour_markdown` read the same :class:`DetourSection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..analysis.detours import DETOUR_EXTRA_KM_MIN, DETOUR_STRETCH_MIN, Detours

__all__ = ["DetourSection", "detour_markdown", "detour_section"]


@dataclass(frozen=True, slots=True)
class DetourSection:
    """A headline, one sentence per detoured pair (its hop named), a per-region table."""

    headline: str
    pairs: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    rule: str
    notes: tuple[str, ...]


def _x(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.1f}×"


def detour_section(detours: Detours | None) -> DetourSection | None:
    """The section's data, or None when the analysis has no detour result."""
    if detours is None:
        return None
    t = detours.traces
    dropped = int(t["dropped_hops"].sum()) if len(t) else 0
    headline = (f"{detours.detoured} of {len(t)} traces take a detour; {dropped} mislocated "
                "hop(s) were dropped from the claims" if len(t) else "No traces in the data.")
    pairs = tuple(f"{p.region} → {p.target}: {p.evidence}"
                  for p in detours.by_pair.itertuples() if int(str(p.detoured)) > 0)
    columns = ("Region", "Traces", "Detoured", "Share", "Left the continent", "Countries crossed",
               "Inflation detoured", "Inflation direct", "Hops dropped")
    rows = tuple((str(r.region), str(r.traces), str(r.detoured), f"{float(str(r.share)):.0%}",
                  str(r.exits), str(r.countries) or "–", _x(r.inflation_detoured),
                  _x(r.inflation_direct), str(r.dropped_hops))
                 for r in detours.by_region.itertuples()) if len(t) else ()
    rule = (f"A trace is detoured when it leaves its source and destination's continent and "
            f"comes back, or when hops whose places pass the light-speed test (from the "
            f"probe's own place when known) prove a path at least {DETOUR_STRETCH_MIN:g}× the "
            f"direct distance and {DETOUR_EXTRA_KM_MIN:,.0f} km longer. Hops answering faster "
            "than light allows from the probe are dropped (never in the probe's own country). "
            "Inflation: destination RTT over the fibre floor of the probe–target distance "
            "(median per kind).")
    return DetourSection(headline=headline, pairs=pairs, columns=columns, rows=rows,
                         numeric=(False, True, True, True, True, False, True, True, True),
                         rule=rule, notes=tuple(detours.notes))


def detour_markdown(section: DetourSection | None, md: Any) -> list[str]:
    """The section in Markdown; ``md`` escapes a cell or a sentence."""
    if section is None:
        return []
    out = ["## Detours", "", md(section.headline), ""]
    out += [f"- {md(p)}" for p in section.pairs] + ([""] if section.pairs else [])
    if section.rows:
        out += ["| " + " | ".join(md(c) for c in section.columns) + " |",
                "|" + "|".join("---:" if n else "---" for n in section.numeric) + "|"]
        out += ["| " + " | ".join(md(c) for c in row) + " |" for row in section.rows] + [""]
    out += [f"*{md(section.rule)}*", ""]
    out += [f"- {md(n)}" for n in section.notes] + ([""] if section.notes else [])
    return out
