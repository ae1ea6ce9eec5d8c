"""The report pipeline: campaign → :func:`analyse` → content and figures → HTML or Markdown.

The report decides nothing itself: the recommendation, the ranking and the flags are those of
:func:`netvantage.analysis.analyse` for the same campaign, weights and locations, so the page
and ``netvantage analyse`` always agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..analysis.episodes import snapshots
from ..analysis.frames import Campaign
from ..analysis.geo import locations as read_locations
from ..analysis.load import load
from ..analysis.place import Placement, place_campaign
from ..analysis.readiness import DEFAULT_FAIL_ON
from ..analysis.summary import Analysis, analyse
from .content import ReportContent, collect_content
from .figures import FIGURES, Figure, draw_all
from .placement import placement_figure
from .render import render_html, render_markdown

__all__ = ["Report", "build_report", "make_report"]

Progress = Callable[[str], None]
Source = str | os.PathLike[str]


@dataclass(frozen=True)
class Report:
    """A built report: what it says, its figures, and the analysis it says it from."""

    content: ReportContent
    figures: tuple[Figure, ...]
    analysis: Analysis

    def html(self) -> str:
        return render_html(self.content, self.figures)

    def markdown(self, figure_paths: Mapping[str, str] | None = None) -> str:
        return render_markdown(self.content, self.figures, figure_paths)

    def write_figures(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write every figure as ``DIR/NAME.png``; returns name → path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for f in self.figures:
            path = folder / f"{f.name}.png"
            path.write_bytes(f.png)
            written[f.name] = path
        return written

    def write(self, output: str | os.PathLike[str], *, fmt: str = "html",
              figures_dir: str | os.PathLike[str] | None = None) -> list[Path]:
        """Write the page (and the figures when ``figures_dir`` is given); returns the files."""
        out = Path(output)
        files: list[Path] = []
        rel: dict[str, str] = {}
        if figures_dir is not None:
            for name, path in self.write_figures(figures_dir).items():
                files.append(path)
                rel[name] = Path(os.path.relpath(path.resolve(),
                                                 out.resolve().parent)).as_posix()
        if fmt == "html":
            text = self.html()
        elif fmt == "md":
            text = self.markdown(rel)
        else:
            raise ValueError(f"unknown report format {fmt!r} (html or md)")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return [out, *files]


def make_report(campaign: Campaign, *, weights: Mapping[str, float] | None = None,
                locations: pd.DataFrame | None = None, title: str | None = None,
                window: str | pd.Timedelta | None = None, sources: Sequence[str] = (),
                progress: Progress | None = None, now: pd.Timestamp | None = None,
                keep_impossible: bool = False,
                mixes: Mapping[str, Mapping[str, float]] | None = None,
                gaps: str = "exclude", same_city_floor_ms: float | None = None,
                compare: Campaign | None = None,
                compare_at: str | pd.Timestamp | None = None,
                episode_min_rise: float = 0.08, episode_min_windows: int = 3,
                readiness_fail_on: tuple[str, ...] = DEFAULT_FAIL_ON) -> Report:
    """Analyse ``campaign`` (as :func:`analyse` does, with the same options and defaults),
    draw the figures, word the findings.

    With ``compare`` (an earlier snapshot) or ``compare_at`` (a time to split at), the page
    is of the later snapshot, compared pair by pair with the earlier one.
    """
    say: Progress = progress or (lambda _message: None)
    say("analysing…")
    ready = campaign.readiness  # snapshots keep the four measurement frames only
    campaign, earlier = snapshots(campaign, compare, compare_at)
    if ready is not None and campaign.readiness is None:
        campaign = replace(campaign, readiness=ready)
    result = analyse(campaign, keep_impossible=keep_impossible, weights=weights,
                     locations=locations, window=window, mixes=mixes, gaps=gaps,
                     same_city_floor_ms=same_city_floor_ms, compare=earlier,
                     episode_min_rise=episode_min_rise,
                     episode_min_windows=episode_min_windows,
                     readiness_fail_on=readiness_fail_on)
    here: dict[str, Any] = {}

    def meanwhile() -> None:
        # This process's part, done while other processes draw the figures.
        placement = _placement(campaign, result, locations, keep_impossible,
                               same_city_floor_ms, readiness_fail_on, say)
        here["placement"] = placement_figure(placement)
        here["content"] = collect_content(
            campaign, result,
            title=title or "Where should the service live? A netvantage report",
            version=__version__, generated=now or pd.Timestamp.now(tz="UTC"),
            sources=sources, placement=placement)

    say(f"drawing {len(FIGURES)} figures…")
    figures = tuple(draw_all(campaign, result, locations, meanwhile=meanwhile))
    if here["placement"] is not None:
        figures += (Figure("placement", *here["placement"]),)
    return Report(here["content"], figures, result)


def _placement(campaign: Campaign, result: Analysis, locations: pd.DataFrame | None,
               keep_impossible: bool, same_city_floor_ms: float | None,
               readiness_fail_on: tuple[str, ...], say: Progress) -> Placement | None:
    """The best single site and pair for the report's weights (anycast; the ranking's
    costs, coverage and thresholds), or None when there are fewer than two sites or no
    weighted region."""
    sites = campaign.measurements["target"].dropna().nunique()
    if sites < 2 or not result.weights:
        return None
    say("placing: the best pair…")
    # Mail readiness fails candidates here as in the ranking (place_campaign applies it).
    return place_campaign(campaign, weights=result.weights, locations=locations,
                          keep_impossible=keep_impossible,
                          same_city_floor_ms=same_city_floor_ms, sites=2, alternatives=3,
                          readiness_fail_on=readiness_fail_on)


def build_report(data: Source | Sequence[Source] | Campaign, output: str | os.PathLike[str], *,
                 locations: str | os.PathLike[str] | pd.DataFrame | None = None,
                 weights: Mapping[str, float] | None = None, title: str | None = None,
                 window: str | pd.Timedelta | None = None, fmt: str = "html",
                 figures: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None) -> Report:
    """From files to a written report: load ``data``, :func:`make_report`, write ``output``.

    ``data``: what :func:`netvantage.analysis.load` reads (JSON Lines, a store, a Parquet
    dataset, or several) or a :class:`Campaign`; ``locations``: a CSV path or a frame;
    ``fmt``: "html" or "md"; ``figures``: a folder to write the PNGs into as well.
    """
    if fmt not in ("html", "md"):
        raise ValueError(f"unknown report format {fmt!r} (html or md)")
    say: Progress = progress or (lambda _message: None)
    if isinstance(data, Campaign):
        campaign, sources = data, []
    else:
        say("loading…")
        paths = [Path(data)] if isinstance(data, str | os.PathLike) else [Path(p) for p in data]
        campaign = load(paths[0] if len(paths) == 1 else paths)
        sources = [p.name for p in paths]
    places = (read_locations(locations) if locations is not None
              and not isinstance(locations, pd.DataFrame) else locations)
    report = make_report(campaign, weights=weights, locations=places, title=title,
                         window=window, sources=sources, progress=say)
    say(f"writing {output}…")
    report.write(output, fmt=fmt, figures_dir=figures)
    return report
