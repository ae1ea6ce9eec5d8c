"""Report figures and tables at real size: hundreds of regions, multi-year campaigns.

A campaign of 40 client regions and 12 data centres over 30 weeks, one ping a week per
pair (built from the seeded generator of bench/planted_coverage.py), drawn with every
figure: no figure grows with the number of regions, no colour repeats, dates read as
dates, map labels do not overlap, the per-region table keeps to its budget and says so.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from netvantage import analysis as nva
from netvantage.analysis.load import frames_from_records
from netvantage.report import figures as F
from netvantage.report.content import _breakdown_table
from netvantage.results import decode_record
from test_coverage import _bench

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
N_REGIONS, N_TARGETS, WEEKS = 40, 12, 30


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[nva.Campaign, nva.Analysis, pd.DataFrame]:
    planted = _bench()  # bench/planted_coverage.py, loaded as test_coverage loads it
    rng = np.random.default_rng(11)
    regions = [f"R{i:03d}" for i in range(N_REGIONS)]
    targets = [f"dc-{i:02d}" for i in range(N_TARGETS)]
    names = [*regions, *targets]
    places = pd.DataFrame({"name": names,
                           "role": ["region"] * N_REGIONS + ["dc"] * N_TARGETS,
                           "lat": rng.uniform(-40, 60, len(names)),
                           "lon": rng.uniform(-120, 140, len(names))})
    at = {n: (la, lo) for n, la, lo in zip(names, places["lat"], places["lon"], strict=True)}
    # Physically possible RTTs: 1.6 x the fibre floor (1 ms per 100 km) plus access.
    base = {(r, t): 1.6 * nva.great_circle_km(*at[r], *at[t]) / 100.0 + 3.0
            for r in regions for t in targets}
    records = []
    for week in range(WEEKS):
        for r in regions:
            for t in targets:
                rtts = (base[(r, t)] + rng.gamma(2.0, 1.0, size=3)).round(3).tolist()
                records.append(planted._ping(r, t, 7 * 86400.0 * (week - WEEKS), rtts))
    campaign = frames_from_records([decode_record(json.dumps(x).encode()) for x in records])
    weights = {r: float(w) for r, w in zip(regions, rng.uniform(0.1, 1.0, N_REGIONS),
                                           strict=True)}
    located = nva.locations(_csv(places, tmp_path_factory.mktemp("places")))
    result = nva.analyse(campaign, weights=weights, locations=located,
                         n_boot=0)
    return campaign, result, places


def _csv(frame: pd.DataFrame, folder: Path) -> Path:
    out = folder / "places.csv"
    frame.to_csv(out, index=False)
    return out


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_colours_never_repeat() -> None:
    for n in (3, 10, 15, 20, 21, 300):
        names = [f"s{i}" for i in range(n)]
        palette = F.colours(names)
        assert len({tuple(np.round(np.asarray(c, dtype=float), 6)) for c in palette.values()}) \
            == n


def test_shown_regions_flagged_first_then_heaviest(big: Any) -> None:
    _, result, _ = big
    regions = [f"R{i:03d}" for i in range(N_REGIONS)]
    s = F.shown(result, regions, [f"dc-{i:02d}" for i in range(N_TARGETS)])
    assert len(s.regions) == F.MAX_REGIONS and len(s.targets) == F.MAX_TARGETS
    heaviest = sorted(regions, key=lambda r: -result.weights[r])[:F.MAX_REGIONS]
    flagged = set(result.flags["region"].astype(str))
    if not flagged:
        assert set(s.regions) == set(heaviest)
    assert flagged & set(regions) <= set(s.regions) | set(regions[F.MAX_REGIONS:])
    ranked = result.ranking.table.sort_values("rank")["target"].astype(str).tolist()
    if result.flags.empty:
        assert list(s.targets) == ranked[:F.MAX_TARGETS]
    assert f"{F.MAX_REGIONS} of {N_REGIONS} client regions" in s.note()
    assert f"{F.MAX_TARGETS} of {N_TARGETS} data centres" in s.note()


def test_figures_stay_within_the_pixel_budget(big: Any, tmp_path: Path) -> None:
    campaign, result, places = big
    located = nva.locations(_csv(places, tmp_path))
    figures = {f.name: f for f in F.draw_all(campaign, result, located)}
    assert {"map", "latency", "loss", "timeseries"} <= set(figures)
    for f in figures.values():
        width, height = _png_size(f.png)
        # bbox_inches="tight" may add a margin of a few pixels around the budget.
        assert width * height <= F.MAX_PIXELS * 1.1, (f.name, width, height)
    for name in ("latency", "loss", "timeseries"):
        assert "client regions" in figures[name].caption and "per-region table" in \
            figures[name].caption


@pytest.mark.parametrize(("start", "end", "expect"), [
    ("2026-11-28 20:01", "2026-11-28 20:08", "20:04"),  # a lab campaign: minutes
    ("2026-11-28 20:00", "2026-11-29 02:00", "Nov-29"),  # hours across midnight
    ("2024-01-01", "2026-06-30", "2025"),  # weekly over years: years, not "000000"
])
def test_time_axis_reads_as_dates(start: str, end: str, expect: str) -> None:
    fig = MplFigure(figsize=(3.5, 2.5))  # a narrow panel, as in the time line
    ax = fig.add_subplot()
    when = pd.date_range(start, end, periods=30)
    ax.plot(when.to_pydatetime(), np.arange(len(when)))
    F._date_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert len(labels) >= 3, labels
    assert any(expect in text for text in labels), labels
    assert not any(text.strip("0:") == "" for text in labels), labels


def _rgba(fig: MplFigure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def test_stacked_bars_draw_what_barh_draws() -> None:
    # Gaps (NaN: a phase a pair never reached, drawn as 0) and a last layer of 0 on the
    # longest bar (its right end is then a sticky left edge).
    widths = np.array([[3.0, 0.0, 1.5, 7.0], [2.0, np.nan, 0.5, 4.0], [1.0, 2.5, np.nan, 0.0]])
    filled = np.nan_to_num(widths, nan=0.0)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    old, new = MplFigure(figsize=(4, 3), dpi=80), MplFigure(figsize=(4, 3), dpi=80)
    ax_old, ax_new = old.add_subplot(), new.add_subplot()
    left = np.zeros(widths.shape[1])
    for layer, colour in zip(filled, palette, strict=True):
        ax_old.barh(np.arange(widths.shape[1]), layer, left=left, color=colour, height=0.7)
        left += layer
    F._stacked_barh(ax_new, filled, palette, height=0.7)
    for ax in (ax_old, ax_new):
        ax.invert_yaxis()
    # The same limits (barh's go through each patch's transform: an ulp apart).
    assert np.allclose(ax_new.get_xlim(), ax_old.get_xlim(), rtol=1e-12, atol=0)
    assert np.allclose(ax_new.get_ylim(), ax_old.get_ylim(), rtol=1e-12, atol=0)
    assert ax_new.get_xlim()[0] == 0.0  # no margin left of the bars
    assert np.array_equal(_rgba(new), _rgba(old))


@pytest.mark.parametrize("last", [9, 16])
def test_path_changes_draw_what_axvline_draws(last: int) -> None:
    # A change at minute 9 is inside the plotted span; one at minute 16 after it: its line
    # widens the x limits, as an axvline does.
    when = pd.date_range("2026-11-28 20:00", periods=12, freq="min")
    later = when[0] + pd.Timedelta(minutes=last)
    changes = [SimpleNamespace(target="dc-a", region="R1", at=when[4].tz_localize("UTC")),
               SimpleNamespace(target="dc-b", region="R2", at=when[6].tz_localize("UTC")),
               SimpleNamespace(target="dc-a", region="R3", at=later.tz_localize("UTC"))]
    result = cast(Any, SimpleNamespace(changes=SimpleNamespace(paths=changes)))

    def panels() -> tuple[MplFigure, Any, Any]:
        fig = MplFigure(figsize=(4, 3), dpi=80)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for ax in (top, bottom):
            ax.plot(when.to_pydatetime(), np.arange(len(when)))
        return fig, top, bottom

    old, old_top, old_bottom = panels()
    for change in changes[::2]:
        at = pd.Timestamp(change.at).tz_localize(None)
        for ax in (old_top, old_bottom):
            ax.axvline(at, color=F.PATH_COLOUR, linestyle=":", linewidth=1.4, zorder=3)
        old_top.annotate(f"path: {change.region}", (at, 1.0),
                         xycoords=("data", "axes fraction"), xytext=(3, -11),
                         textcoords="offset points", fontsize=7, color=F.PATH_COLOUR)
    new, new_top, new_bottom = panels()
    F._mark_path_changes(new_top, new_bottom, result, "dc-a")
    assert [t.get_text() for t in new_top.texts] == ["path: R1", "path: R3"]
    # axvline's limits go through the axes' transforms and back (an ulp away).
    assert np.allclose(new_top.get_xlim(), old_top.get_xlim(), rtol=1e-12, atol=0)
    if when[-1] < later:
        assert new_top.get_xlim()[1] > float(F._DATES.date2num(later))
    else:
        assert new_top.get_xlim() == old_top.get_xlim()
        assert np.array_equal(_rgba(new), _rgba(old))


def test_labels_never_overlap() -> None:
    rnd = random.Random(5)
    points = [(rnd.uniform(0, 400), rnd.uniform(0, 300)) for _ in range(80)]
    dots = [(rnd.uniform(0, 400), rnd.uniform(0, 300)) for _ in range(200)]
    sizes = [(rnd.uniform(20, 50), 12.0) for _ in points]
    offsets = F.place_labels(points, sizes, avoid=dots, must=5)
    boxes = [(x + o[0], y + o[1], x + o[0] + w, y + o[1] + h)
             for (x, y), (w, h), o in zip(points, sizes, offsets, strict=True) if o is not None]
    assert 20 < len(boxes) < len(points)  # crowded: some placed, some left out
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not F._boxes_overlap(a, b)
        for x, y in points:  # nor over a labelled marker
            assert not F._boxes_overlap(a, (x - 6, y - 6, x + 6, y + 6))
    assert all(o is not None for o in offsets[:5])  # the important ones always get a place


def test_breakdown_keeps_to_its_budget(big: Any) -> None:
    _, result, _ = big
    full = _breakdown_table(result)
    assert len(full.rows) == N_REGIONS * N_TARGETS and not full.note
    small = _breakdown_table(result, max_rows=100)
    assert len(small.rows) < len(full.rows)
    assert f"of {N_REGIONS * N_TARGETS:,} pairs shown" in small.note
    kept = {(row[0], row[1]) for row in small.rows}
    bd = result.ranking.breakdown
    for region, group in bd.groupby(bd["region"].astype(str)):
        best = str(group.sort_values("cost").iloc[0]["target"])
        assert (region, best) in kept
        assert (region, result.winner) in kept
    for r, t in zip(result.flags["region"].astype(str), result.flags["target"].astype(str),
                    strict=True):
        assert (r, t) in kept


def test_lab_sample_report_tables_are_whole() -> None:
    result = nva.analyse(nva.load(SAMPLE), n_boot=0)
    table = _breakdown_table(result)
    assert len(table.rows) == len(result.ranking.breakdown) and not table.note


def test_a_killed_drawing_process_is_not_waited_for(big: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures are drawn by forked processes: one killed while drawing (the kernel,
    short of memory, say) is noticed, and the figures are drawn here instead."""
    import os
    import signal

    campaign, result, places = big
    located = nva.locations(_csv(places, tmp_path))
    parent = os.getpid()
    drawing = F.latency_figure
    drawn_here: list[int] = []

    def dying_in_a_child(*args: Any) -> Any:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        drawn_here.append(os.getpid())
        return drawing(*args)

    monkeypatch.setattr(F, "latency_figure", dying_in_a_child)
    figures = [f.name for f in F.draw_all(campaign, result, located)]
    assert {"map", "latency", "loss", "timeseries"} <= set(figures)
    assert drawn_here == [parent]  # the latency figure, drawn here after the death
