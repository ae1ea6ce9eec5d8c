"""The report's placement section: the best single site, the best pair, the gain per region.

Built from :class:`netvantage.analysis.place.Placement` only (nothing decided here: the pair
is :func:`netvantage.analysis.place.place_campaign`'s for the report's weights and
locations, anycast); rendered by ``templates/_placement.html.j2`` and by
:func:`placement_markdown`; its figure by :func:`placement_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..analysis.place import Placement

__all__ = ["PlacementSection", "placement_figure", "placement_markdown", "placement_section"]

#: At most this many regions get a row of their own in the figure (the heaviest first).
FIGURE_REGIONS = 12


@dataclass(frozen=True, slots=True)
class PlacementSection:
    headline: str
    lines: tuple[str, ...]  # the pair's score, what it gains, stability, alternatives
    columns: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str  # rows left out, if any
    rule: str


def _num(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:,.0f}"


def placement_section(placement: Placement | None, max_rows: int = 40
                      ) -> PlacementSection | None:
    """The section's sentences and per-region table; None without a placement."""
    if placement is None:
        return None
    p = placement
    rule = ("Anycast: each region is served by its cheaper site of the pair. Costs are the "
            "ranking's (ms-equivalents per region and site); a site never measured from a "
            "region never serves it, and pairs meeting every service threshold come first. "
            "The interval is the ranking's bootstrap of the records; stability is the share "
            "of perturbed client mixes (about ±15 %) in which the pair stays best. "
            "The command netvantage place answers for other modes, k sites and budgets.")
    if p.best is None or p.single is None:
        return PlacementSection("No pair of sites can serve every weighted region.",
                                tuple(p.notes), (), (), (), "", rule)
    b, s = p.best, p.single
    better = s.score - b.score
    headline = (f"Best single site: {s.sites[0]} (score {_num(s.score)}). Best pair: "
                f"{b.label()} (score {_num(b.score)}"
                + ("" if math.isnan(b.score_lo) else
                   f", 95 % CI {_num(b.score_lo)}–{_num(b.score_hi)}")
                + f"): {_num(better)} better than one site"
                + (f" ({better / s.score:.0%})." if s.score > 0 else "."))
    lines = []
    top = p.gains(3)
    if len(top):
        lines.append("Regions that gain most from the second site: " + ", ".join(
            f"{r['region']} ({_num(float(r['gain']))}, "
            f"{float(r['gain']) / float(r['single_cost']):.0%} less)"
            for r in top.to_dict(orient="records")) + ".")
    if not b.meets_thresholds:
        lines.append("No pair meets every service threshold in every region; this one is the "
                     "cheapest of those that serve every region.")
    if p.stability_pool == 1:
        lines.append("It is the only pair meeting every service threshold in every region.")
    elif not math.isnan(p.stability):
        lines.append(f"It stays the best pair in {p.stability:.0%} of perturbed client mixes"
                     + ("" if math.isnan(p.p_best) else
                        f" and in {p.p_best:.0%} of bootstrap resamplings") + ".")
    for a in p.alternatives[:3]:
        lines.append(f"Next: {a.label()}, score {_num(a.score)} "
                     f"({a.score - b.score:+,.0f}, {(a.score - b.score) / b.score:+.0%})"
                     + ("" if a.meets_thresholds else ", misses a service threshold") + ".")
    lines.append(f"Search: {p.search.text()}.")
    lines += p.notes
    pr = p.per_region.sort_values(["weight", "gain", "region"],
                                  ascending=[False, False, True])
    rows = tuple((str(r["region"]), f"{float(r['weight']):.0%}", str(r["single_site"]),
                  _num(float(r["single_cost"])), str(r["served_by"]), _num(float(r["cost"])),
                  _num(float(r["gain"])))
                 for r in pr.head(max_rows).to_dict(orient="records"))
    note = (f"{len(pr) - max_rows} more regions (lighter) are in the output of netvantage place "
            "--format json." if len(pr) > max_rows else "")
    return PlacementSection(headline, tuple(lines),
                            ("region", "weight", "one site", "cost", "with the pair", "cost",
                             "gain"),
                            (False, True, False, True, False, True, True), rows, note, rule)


def placement_markdown(section: PlacementSection | None, md: Callable[[object], str],
                       figure: list[str] | None = None) -> list[str]:
    """The section in Markdown (``md`` escapes text; ``figure`` its figure's lines)."""
    if section is None:
        return []
    out = ["## Where should the service live? One site or two", "", md(section.headline), ""]
    out += [f"- {md(line)}" for line in section.lines] + [""]
    if section.rows:
        out += ["| " + " | ".join(md(c) for c in section.columns) + " |",
                "|" + "|".join("---:" if n else "---" for n in section.numeric) + "|"]
        out += ["| " + " | ".join(md(c) for c in row) + " |" for row in section.rows]
        out += [""] + ([md(section.note), ""] if section.note else [])
    out += [*(figure or []), f"*{md(section.rule)}*", ""]
    return out


def placement_figure(placement: Placement | None) -> tuple[str, str, bytes] | None:
    """Per-region cost with the best single site and with the best pair (the heaviest
    :data:`FIGURE_REGIONS` regions): (title, caption, PNG) or None."""
    if placement is None or placement.best is None or len(placement.best.sites) < 2:
        return None
    from matplotlib.figure import Figure as MplFigure

    from .figures import DPI

    pr = placement.per_region.sort_values(["weight", "gain", "region"],
                                          ascending=[False, False, True])
    shown = pr.head(FIGURE_REGIONS).iloc[::-1]
    y = np.arange(len(shown))
    fig = MplFigure(figsize=(8.0, 1.2 + 0.42 * len(shown)))
    ax = fig.add_subplot()
    single = placement.single.sites[0] if placement.single else "one site"
    pair = placement.best.label()
    ax.barh(y + 0.2, shown["single_cost"], height=0.38, color="#9e9e9e",
            label=f"one site: {single}")
    ax.barh(y - 0.2, shown["cost"], height=0.38, color="#1565c0", label=f"the pair: {pair}")
    for yi, (served, cost) in enumerate(zip(shown["served_by"], shown["cost"], strict=True)):
        ax.text(float(cost), yi - 0.2, f" {served}", va="center", fontsize=7)
    ax.set_yticks(y, [f"{r} ({w:.0%})" for r, w in zip(shown["region"], shown["weight"],
                                                        strict=True)], fontsize=8)
    ax.set_xlabel("cost (ms-equivalents of median RTT; lower is better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    more = len(pr) - len(shown)
    caption = (f"Cost per client region served by the best single site ({single}) and by the "
               f"best pair ({pair}, each region at its cheaper site, named beside its bar)"
               + (f"; the {len(shown)} heaviest regions, {more} more in the table." if more
                  else "."))
    return "One site or two: cost per region", caption, buf.getvalue()
