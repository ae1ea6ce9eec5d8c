"""The report's client-mix section: winners under named mixes and where the winner flips.

Built from :class:`netvantage.analysis.mix.Mixes` only (nothing decided here); rendered by
``templates/_mixes.html.j2`` and by :func:`mix_markdown`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..analysis.mix import Mix, Mixes

__all__ = ["MixSection", "mix_markdown", "mix_section"]


@dataclass(frozen=True, slots=True)
class MixSection:
    headline: str
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[str, ...], ...]
    groups: tuple[str, ...]  # what each group of each mix matched
    flips: tuple[str, ...]  # the smallest change, the nearest flips towards one region
    rule: str


def _num(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:,.0f}"


def _weights(m: Mix) -> str:
    top = sorted(m.weights.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{r} {w:.0%}" for r, w in top[:6])
    return text + (f" and {len(top) - 6} more" if len(top) > 6 else "")


def mix_section(mixes: Mixes | None) -> MixSection | None:
    """The section's sentences and table; None when the analysis has no mix answer."""
    if mixes is None:
        return None
    lines = {s.to: s for s in mixes.lines}
    rows = []
    for m in (mixes.given, *mixes.named):
        s = lines.get(m.name)
        flip = ("–" if s is None else "never" if s.flip_at is None
                else f"{s.flip_at:.1%} of the way → {s.flip_to}")
        rows.append((m.name, _weights(m), m.winner or "none", _num(m.score),
                     m.runner_up or "–", _num(m.margin), flip))
    winners = sorted({m.winner for m in (mixes.given, *mixes.named) if m.winner})
    picks = (f"every mix picks {winners[0]}" if len(winners) == 1
             else f"the winners differ: {', '.join(winners)}")
    headline = (f"{len(mixes.named)} named mix(es) besides the given one; {picks}."
                if mixes.named else "No named mix (--mix) besides the given one, which picks "
                f"{mixes.given.winner or 'no winner'}.")
    groups = tuple(f"{m.name}: {g.text()}" for m in (mixes.given, *mixes.named)
                   for g in m.groups if g.kind != "region")
    flips: list[str] = []
    if mixes.nearest is not None:
        flips.append(f"Smallest change of the given mix that flips the winner: "
                     f"{mixes.nearest.text()}.")
    for s in mixes.nearest_regions():
        region = s.to.removeprefix("region:")
        flips.append(f"Towards {region}: {s.flip_to} wins once {region} has "
                      f"{s.weights_at_flip.get(region, 0.0):.1%} of the clients (now "
                      f"{mixes.given.weights.get(region, 0.0):.1%}).")
    flips += mixes.notes
    rule = ("Scores are linear in the weights, so flip points are exact: along the straight "
            "line from the given mix to another, each score is a straight line and the "
            "winner changes where two cross. The smallest change is the least share of "
            "clients moved between regions that makes a runner-up tie with the winner.")
    return MixSection(headline, ("mix", "weights", "winner", "score", "runner-up", "margin",
                                 "flips at"),
                      (False, False, False, True, False, True, False), tuple(rows), groups,
                      tuple(flips), rule)


def mix_markdown(section: MixSection | None, md: Callable[[object], str],
                 figure: list[str] | None = None) -> list[str]:
    """The section in Markdown (``md`` escapes text; ``figure`` its figure's lines)."""
    if section is None:
        return []
    out = ["## Client mixes", "", md(section.headline), "",
           "| " + " | ".join(md(c) for c in section.columns) + " |",
           "|" + "|".join("---:" if n else "---" for n in section.numeric) + "|"]
    out += ["| " + " | ".join(md(c) for c in row) + " |" for row in section.rows]
    out.append("")
    out += [f"- {md(g)}" for g in section.groups] + ([""] if section.groups else [])
    out += [f"- {md(f)}" for f in section.flips] + ([""] if section.flips else [])
    out += [*(figure or []), f"*{md(section.rule)}*", ""]
    return out
