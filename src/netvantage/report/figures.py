"""The report's figures, drawn with matplotlib's Agg renderer into PNG bytes.

Each function takes the campaign and its :class:`Analysis` and returns a :class:`Figure`
(or ``None`` when the data hold nothing to draw).  Figures are built with
``matplotlib.figure.Figure`` directly, not pyplot: no global state, no GUI backend, safe in
a server or a test run in parallel.

Figures that scale: real campaigns have hundreds of client regions and data centres, and
a city matrix tens of thousands of pairs.  A figure never draws one panel, bar group or
line per region of the data: it draws the regions a reader must see (:func:`shown`: the
flagged ones, then the heaviest by weight, at most :data:`MAX_REGIONS`) and the candidates
that matter (the best-ranked and the flagged, at most :data:`MAX_TARGETS`), and its
caption says how many more are in the per-region table.  Series colours come from a
colour map sized to the number of series (never a cycle that repeats), time axes use
matplotlib's concise date formatter (minutes to years), map labels are placed so that they
do not overlap, and every figure fits a pixel budget (:data:`MAX_PIXELS`), so that the
page's size is bounded whatever the campaign.
"""

from __future__ import annotations

import colorsys
import importlib
import io
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, cast

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, ScalarFormatter

from ..analysis import progress
from ..analysis.frames import Campaign
from ..analysis.metrics import phase_metrics, windowed
from ..analysis.summary import Analysis
from .content import distinct_text, duration_text
from .worldmap import coastlines

__all__ = ["FIGURES", "MAX_REGIONS", "MAX_TARGETS", "Figure", "Shown", "colours", "draw_all",
           "inflation_figure", "latency_figure", "loss_figure", "map_figure", "mix_figure",
           "phases_figure", "shown", "timeseries_figure"]

FloatArray = npt.NDArray[np.float64]

DPI = 110
FLAG_COLOUR = "#c62828"
_DATES: Any = importlib.import_module("matplotlib.dates")  # untyped module
LAND, SEA, COAST = "#e9e6df", "#f4f8fb", "#b9b3a6"

#: At most this many client regions get a panel, a bar group or a line of their own.
MAX_REGIONS = 12
#: At most this many data centres are drawn per panel (the best-ranked and the flagged).
MAX_TARGETS = 8
#: Beyond this many pairs the map draws only the shown regions' lines and the lines to
#: the best-ranked candidates (a line per pair of a 250 x 250 matrix is a brown smear).
MAX_MAP_LINES = 1500
#: A figure's pixel budget (width x height at :data:`DPI`): a taller figure is drawn at a
#: lower resolution rather than made longer.
MAX_PIXELS = 1200 * 1800


@dataclass(frozen=True, slots=True)
class Figure:
    name: str  # file stem: map, latency, loss, phases, timeseries
    title: str
    caption: str
    png: bytes


def _png(fig: MplFigure) -> bytes:
    width, height = fig.get_size_inches()
    dpi = min(float(DPI), float(np.sqrt(MAX_PIXELS / max(width * height, 1e-9))))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight",
                metadata={"Software": None})  # no version stamp: same data, same bytes
    return buf.getvalue()


def _flagged(result: Analysis) -> set[tuple[str, str]]:
    f = result.flags
    return set(zip(f["region"].astype(str), f["target"].astype(str), strict=True))


def colours(names: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per name, for any number of names: matplotlib's qualitative maps
    while they last (tab10, then tab20); beyond that hues spaced by the golden angle at
    three lightness levels, which never returns the same colour twice (a sampled colour
    map would: its lookup table has 256 entries)."""
    n = len(names)
    if n <= 10:
        palette: list[Any] = [mpl.colormaps["tab10"](i) for i in range(n)]
    elif n <= 20:
        palette = [mpl.colormaps["tab20"](i) for i in range(n)]
    else:
        palette = [(*colorsys.hls_to_rgb((i * 0.6180339887) % 1.0, (0.35, 0.5, 0.65)[i % 3],
                                         0.7), 1.0) for i in range(n)]
    return dict(zip(names, palette, strict=True))


@dataclass(frozen=True, slots=True)
class Shown:
    """The regions and data centres a figure draws, and how many it leaves to the table."""

    regions: tuple[str, ...]
    targets: tuple[str, ...]
    all_regions: int
    all_targets: int

    def note(self) -> str:
        """The caption's sentence on what was left out ('' when nothing was)."""
        parts = []
        if self.all_regions > len(self.regions):
            parts.append(f"{len(self.regions)} of {self.all_regions} client regions (the "
                         "flagged ones, then the heaviest by weight)")
        if self.all_targets > len(self.targets):
            parts.append(f"{len(self.targets)} of {self.all_targets} data centres (the "
                         "best-ranked and the flagged)")
        if not parts:
            return ""
        return (" Shown: " + " and ".join(parts) + "; every pair is in the per-region "
                "table.")


def shown(result: Analysis, regions: Iterable[str], targets: Iterable[str], *,
          max_regions: int = MAX_REGIONS, max_targets: int = MAX_TARGETS) -> Shown:
    """Which of ``regions`` and ``targets`` a figure draws.

    Regions: those with a flag first (they are the evidence), then by weight (the client
    mix), then by name; at most ``max_regions``.  Targets: the flagged ones and the
    best-ranked by the ranking, in rank order, at most ``max_targets``.
    """
    regions = sorted(set(regions))
    targets = sorted(set(targets))
    flagged = _flagged(result)
    flagged_regions = {r for r, _ in flagged}
    weights = result.weights
    by_region = sorted(regions, key=lambda r: (r not in flagged_regions,
                                               -float(weights.get(r, 0.0)), r))
    table = result.ranking.table
    order = {str(t): float(k) for t, k in zip(table["target"].astype(str),
                                              table["rank"].to_numpy(dtype=float),
                                              strict=True)}
    flagged_targets = {t for _, t in flagged}
    by_target = sorted(targets, key=lambda t: (t not in flagged_targets,
                                               order.get(t, np.inf), t))
    keep_t = by_target[:max_targets]
    # Drawn in rank order (the reader's order), not in selection order.
    keep_t.sort(key=lambda t: (order.get(t, np.inf), t))
    keep_r = sorted(by_region[:max_regions])
    return Shown(tuple(keep_r), tuple(keep_t), len(regions), len(targets))


def _date_axis(ax: Axes) -> None:
    """Concise date ticks (minutes for an hour, months and years for a long campaign).

    At most seven ticks, at least two: the locator picks the finest interval that stays
    within seven; its minute and second steps get a 2 (matplotlib's go 1, 5, 10, ...), so
    a seven-minute campaign gets ticks every two minutes instead of one tick at :05."""
    locator = _DATES.AutoDateLocator(minticks=3, maxticks=7)
    for freq in (_DATES.MINUTELY, _DATES.SECONDLY):
        locator.intervald[freq] = [1, 2, 5, 10, 15, 20, 30]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(_DATES.ConciseDateFormatter(locator))


def _boxes_overlap(a: tuple[float, float, float, float],
                   b: tuple[float, float, float, float]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def place_labels(points: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                 *, avoid: Sequence[tuple[float, float]] = (), marker: float = 6.0,
                 small: float = 2.5, must: int = 0) -> list[tuple[float, float] | None]:
    """Offsets (in points, from each anchor) for labels that neither overlap each other nor
    the markers; ``None`` where no candidate position is free (the label is left out).

    ``points`` are the anchors in display points, ``sizes`` each label's (width, height)
    in points; ``marker`` is the half-size of the anchors' markers, ``small`` that of the
    unlabelled markers in ``avoid``.  A greedy placement, tried in the given order (put the
    important labels first): right, left, above, below, then the four diagonals, then the
    same eight at twice the distance; the first position whose box is free wins.  The first
    ``must`` labels, when nothing is free, may cover the small markers (never a label).
    """
    big = [(x - marker, y - marker, x + marker, y + marker) for x, y in points]
    dots = [(x - small, y - small, x + small, y + small) for x, y in avoid]
    labels: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float] | None] = []
    gap = marker + 2.0
    for i, ((x, y), (w, h)) in enumerate(zip(points, sizes, strict=True)):
        chosen: tuple[float, float] | None = None
        for blockers in ([*big, *dots, *labels], [*big, *labels]) if i < must else (
                [*big, *dots, *labels],):
            for scale in (1.0, 2.2):
                g = gap * scale
                for dx, dy in ((g, -h / 2), (-g - w, -h / 2), (-w / 2, g), (-w / 2, -g - h),
                               (g, g), (-g - w, g), (g, -g - h), (-g - w, -g - h)):
                    box = (x + dx, y + dy, x + dx + w, y + dy + h)
                    if not any(_boxes_overlap(box, t) for t in blockers):
                        chosen = (dx, dy)
                        labels.append(box)
                        break
                if chosen is not None:
                    break
            if chosen is not None:
                break
        out.append(chosen)
    return out


# --------------------------------------------------------------------------- map


def _great_circle(lat1: float, lon1: float, lat2: float, lon2: float,
                  n: int = 64) -> tuple[FloatArray, FloatArray]:
    """Points along the great circle (spherical linear interpolation of unit vectors)."""
    p1, l1, p2, l2 = np.radians([lat1, lon1, lat2, lon2])
    a = np.array([np.cos(p1) * np.cos(l1), np.cos(p1) * np.sin(l1), np.sin(p1)])
    b = np.array([np.cos(p2) * np.cos(l2), np.cos(p2) * np.sin(l2), np.sin(p2)])
    omega = float(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))
    t = np.linspace(0.0, 1.0, n)
    if omega < 1e-9:
        pts = np.outer(1 - t, a) + np.outer(t, b)
    else:
        pts = (np.outer(np.sin((1 - t) * omega), a) + np.outer(np.sin(t * omega), b)) \
            / np.sin(omega)
    lat = np.degrees(np.arcsin(np.clip(pts[:, 2], -1.0, 1.0)))
    lon = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    # Break the line where it crosses the antimeridian instead of drawing across the map.
    jumps = np.flatnonzero(np.abs(np.diff(lon)) > 180) + 1
    return np.insert(lat, jumps, np.nan), np.insert(lon, jumps, np.nan)


def map_figure(campaign: Campaign, result: Analysis,
               places: pd.DataFrame | None) -> Figure | None:
    """Regions and data centres, each pair's line coloured by its median RTT over the floor."""
    if places is None or result.inflation is None or result.ranking.breakdown.empty:
        return None
    pos = {name: (lat, lon) for name, lat, lon in zip(
        places["name"].astype(str), places["lat"].to_numpy(dtype=float),
        places["lon"].to_numpy(dtype=float), strict=True)
        if np.isfinite(lat) and np.isfinite(lon)}
    bd = result.ranking.breakdown.merge(result.inflation[["region", "target", "floor_ms"]],
                                        on=["region", "target"], how="left")
    bd = bd.assign(region=bd["region"].astype(str), target=bd["target"].astype(str))
    bd = bd[bd["region"].isin(pos) & bd["target"].isin(pos)]
    if bd.empty:
        return None
    chosen = shown(result, bd["region"], bd["target"], max_targets=3)
    flagged = _flagged(result)
    all_pairs = len(bd)
    if all_pairs > MAX_MAP_LINES:
        keys = list(zip(bd["region"], bd["target"], strict=True))
        keep = (bd["region"].isin(chosen.regions) | bd["target"].isin(chosen.targets)
                | pd.Series([k in flagged for k in keys], index=bd.index))
        bd = bd[keep]
    excess = (bd["rtt_p50_ms"] - bd["floor_ms"]).to_numpy(dtype=float)
    finite = excess[np.isfinite(excess)]
    vmax = float(np.nanpercentile(finite, 95)) if finite.size else 1.0
    norm = Normalize(vmin=0.0, vmax=max(vmax, 1.0))
    cmap = mpl.colormaps["RdYlGn_r"]

    dcs = set(bd["target"])
    used = {*bd["region"], *dcs}
    lats = np.array([pos[n][0] for n in used])
    lons = np.array([pos[n][1] for n in used])
    pad_lon = max(15.0, 0.15 * float(np.ptp(lons)))
    pad_lat = max(10.0, 0.15 * float(np.ptp(lats)))
    x0, x1 = max(-180.0, lons.min() - pad_lon), min(180.0, lons.max() + pad_lon)
    y0, y1 = max(-75.0, lats.min() - pad_lat), min(85.0, lats.max() + pad_lat)

    fig = MplFigure(figsize=(10.5, 6.2))
    ax = fig.add_subplot()
    ax.set_facecolor(SEA)
    for poly in coastlines():
        if poly[:, 0].max() < x0 - 30 or poly[:, 0].min() > x1 + 30:
            continue
        ax.fill(poly[:, 0], poly[:, 1], facecolor=LAND, edgecolor=COAST, linewidth=0.5,
                zorder=1)
    # One collection per style (thousands of lines in one draw call), worst drawn last.
    bd = bd.assign(excess=excess).sort_values("excess", na_position="first")
    many = len(bd) > 200
    plain: list[npt.NDArray[np.float64]] = []
    plain_colours: list[Any] = []
    marked: list[npt.NDArray[np.float64]] = []
    marked_colours: list[Any] = []
    for region, target, value in zip(bd["region"], bd["target"],
                                     bd["excess"].to_numpy(dtype=float), strict=True):
        (la1, lo1), (la2, lo2) = pos[region], pos[target]
        lat, lon = _great_circle(la1, lo1, la2, lo2, n=24 if many else 64)
        line = np.column_stack([lon, lat])
        colour = cmap(norm(value)) if np.isfinite(value) else "#999999"
        if (region, target) in flagged:
            marked.append(line)
            marked_colours.append(colour)
        else:
            plain.append(line)
            plain_colours.append(colour)
    if plain:
        ax.add_collection(LineCollection(plain, colors=plain_colours,
                                         linewidths=0.6 if many else 1.8,
                                         alpha=0.6 if many else 0.9, zorder=3))
    if marked:
        ax.add_collection(LineCollection(marked, colors=FLAG_COLOUR, linewidths=5.0,
                                         alpha=0.35, zorder=2, capstyle="round"))
        ax.add_collection(LineCollection(marked, colors=marked_colours, linewidths=2.2,
                                         linestyles=(0, (4, 2)), zorder=3))
    # Labels: the shown candidates first (every candidate when they are few), then the
    # shown regions; every other place is a small marker without a label.
    dc_labels = (list(chosen.targets) if len(dcs) > 3 * MAX_TARGETS
                 else [*chosen.targets, *sorted(dcs - set(chosen.targets))])
    labelled = [*dc_labels, *(r for r in chosen.regions if r not in dc_labels)]
    quiet = sorted(used - set(labelled))
    for names, marker in (([n for n in quiet if n not in dcs], "o"),
                          ([n for n in quiet if n in dcs], "s")):
        if names:
            ax.scatter([pos[n][1] for n in names], [pos[n][0] for n in names], marker=marker,
                       s=12, color="#ffffff" if marker == "o" else "#263238",
                       edgecolor="#263238", linewidth=0.8, zorder=4)
    for name in labelled:
        la, lo = pos[name]
        is_dc = name in dcs
        ax.scatter([lo], [la], marker="s" if is_dc else "o", s=90 if is_dc else 60,
                   color="#263238" if is_dc else "#ffffff", edgecolor="#263238", linewidth=1.5,
                   zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect(1.0 / np.cos(np.radians((y0 + y1) / 2)) if abs(y0 + y1) < 150 else "auto")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, shrink=0.8, label="median RTT above the fibre floor (ms)")
    ax.legend(handles=[
        Line2D([], [], marker="o", linestyle="", markerfacecolor="white",
               markeredgecolor="#263238", label="client region"),
        Line2D([], [], marker="s", linestyle="", color="#263238", label="data centre"),
        Line2D([], [], color=FLAG_COLOUR, linewidth=4, alpha=0.5, label="flagged pair"),
    ], loc="lower left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    ax.apply_aspect()  # the final geometry: labels are placed after the layout
    # Labels placed in display points so that none covers another or a marker.
    to_points = 72.0 / fig.dpi
    anchors = [tuple(v * to_points for v in ax.transData.transform((pos[n][1], pos[n][0])))
               for n in labelled]
    others = [tuple(v * to_points for v in ax.transData.transform((pos[n][1], pos[n][0])))
              for n in quiet]
    fontsize = 9.0
    sizes = [(0.62 * fontsize * len(n) + 4.0, 1.35 * fontsize) for n in labelled]
    offsets = place_labels([(a[0], a[1]) for a in anchors], sizes,
                           avoid=[(o[0], o[1]) for o in others], must=len(dc_labels))
    unlabelled = 0
    for name, offset in zip(labelled, offsets, strict=True):
        if offset is None:
            unlabelled += 1
            continue
        la, lo = pos[name]
        ax.annotate(name, (lo, la), xytext=offset, textcoords="offset points", fontsize=fontsize,
                    ha="left", va="bottom", zorder=6,
                    fontweight="bold" if name in dcs else "normal",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.75})
    left_out = ""
    if len(bd) < all_pairs:
        left_out = (f" Of {all_pairs:,} pairs, the {len(bd):,} drawn are those of the shown "
                    "regions, of the three best-ranked data centres and the flagged ones.")
    if quiet or unlabelled:
        left_out += (f" {len(quiet) + unlabelled} places are unlabelled (small dots, or no "
                     "room for a label without covering another).")
    return Figure("map", "Map of regions and data centres",
                  "Each line joins a client region to a data centre along the great circle; "
                  "its colour is the pair's median RTT above the physical floor (1 ms per "
                  "100 km of great-circle distance): green is close to the speed of light in "
                  "fibre, red is far above it. Flagged pairs are dashed on a red band. "
                  "Coastlines: GSHHS (crude), drawn offline." + left_out, _png(fig))


# --------------------------------------------------------------------------- distributions


def latency_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Box plots of ping RTT samples per data centre, one panel per shown region."""
    s = campaign.samples
    kind_col = s["kind"]
    is_ping = (kind_col == "ping").to_numpy(dtype=bool)
    received = s["rtt_ms"].notna().to_numpy(dtype=bool)
    if (is_ping & received).any():
        s, kind = s[is_ping & received], "ping RTT samples"
    else:
        s, kind = s[received], "RTT samples"
    if s.empty:
        return None
    chosen = shown(result, distinct_text(s["region"]), distinct_text(s["target"]))
    s = s[s["region"].isin(chosen.regions) & s["target"].isin(chosen.targets)]
    # One pass over the samples: each shown pair's RTTs by group, not a filter per pair
    # (grouped by the columns' own values, named as text after: not a text per row).
    groups = {(str(r), str(t)): g.to_numpy(dtype=float) for (r, t), g in
              s.groupby(["region", "target"], sort=False, observed=True)["rtt_ms"]}
    regions = list(chosen.regions)
    targets = list(chosen.targets)
    loss = result.ranking.breakdown.set_index(["region", "target"])["loss_pct"]
    flagged = _flagged(result)
    cols = min(len(regions), 2)
    rows = -(-len(regions) // cols)
    panel_height = max(1.6, 0.42 * len(targets) + 0.9)
    fig = MplFigure(figsize=(10.5, panel_height * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for i, region in enumerate(regions):
        ax: Axes = axes[i // cols][i % cols]
        data, labels, boxcolours = [], [], []
        for t in targets:
            v = groups.get((region, t), np.empty(0))
            data.append(v if v.size else np.array([np.nan]))
            lp = loss.get((region, t), np.nan)
            labels.append(f"{t}\nloss {lp:.1f} %" if np.isfinite(lp) else t)
            boxcolours.append(FLAG_COLOUR if (region, t) in flagged else "#5c7cfa")
        bp = ax.boxplot(data, orientation="horizontal", whis=(5, 95), widths=0.6, patch_artist=True,
                        flierprops={"marker": ".", "markersize": 2, "alpha": 0.4},
                        medianprops={"color": "black", "linewidth": 1.6})
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8 if len(targets) > 4 else 10)
        for patch, colour in zip(bp["boxes"], boxcolours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.55)
        ax.set_title(f"from {region}", fontsize=10, loc="left")
        ax.set_xlabel("RTT (ms)")
        ax.tick_params(axis="x", labelbottom=True)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(axis="x", which="both", alpha=0.25)
    for j in range(len(regions), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout()
    return Figure("latency", "Latency distributions",
                  f"Distribution of {kind} from each client region to each data centre "
                  "(box: quartiles and median; whiskers: 5th–95th percentile; dots beyond; log "
                  "scale). Labels give the loss the ranking uses. Red boxes are flagged pairs."
                  + chosen.note(), _png(fig))


def loss_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Grouped bars of packet loss (ping and tcp, as ranked) per shown region and data centre."""
    bd = result.ranking.breakdown
    if bd.empty or not np.isfinite(bd["loss_pct"].to_numpy(dtype=float)).any():
        return None
    chosen = shown(result, bd["region"].dropna().astype(str), bd["target"].dropna().astype(str))
    regions, targets = list(chosen.regions), list(chosen.targets)
    loss = {(str(r), str(t)): float(v) for r, t, v in zip(
        bd["region"], bd["target"], bd["loss_pct"].to_numpy(dtype=float), strict=True)}
    palette = colours(targets)
    flagged = _flagged(result)
    fig = MplFigure(figsize=(10.5, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(targets)
    crowded = len(regions) * len(targets) > 40
    for j, t in enumerate(targets):
        vals = [loss.get((r, t), np.nan) for r in regions]
        x = np.arange(len(regions)) + (j - (len(targets) - 1) / 2) * width
        bars = ax.bar(x, vals, width * 0.92, color=palette[t])
        for bar, r, v in zip(bars, regions, vals, strict=True):
            if (r, t) in flagged:
                bar.set_edgecolor(FLAG_COLOUR)
                bar.set_linewidth(2.0)
                bar.set_hatch("//")
            if np.isfinite(v) and not crowded:
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v),
                            xytext=(0, 2), textcoords="offset points", ha="center",
                            fontsize=7)
    ax.set_xticks(np.arange(len(regions)), regions, fontsize=8 if len(regions) > 6 else 10,
                  rotation=30 if len(regions) > 6 else 0)
    ax.set_ylabel("packet loss (%)")
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=palette[t], label=t) for t in targets]
    handles.append(Patch(facecolor="white", edgecolor=FLAG_COLOUR, hatch="//",
                         label="flagged pair"))
    ax.legend(handles=handles, title="data centre", fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    drawn = [v for r in regions for t in targets if np.isfinite(v := loss.get((r, t), np.nan))]
    ax.set_ylim(0, max(1.0, max(drawn, default=0.0) * 1.15))
    fig.tight_layout()
    return Figure("loss", "Packet loss",
                  "Share of ping echoes and TCP connects lost, per client region and data "
                  "centre, as the ranking counts it. Hatched bars with a red edge are flagged "
                  "pairs." + chosen.note(), _png(fig))


def phases_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Stacked median durations of each handshake phase (smtp, imap) per shown pair."""
    if campaign.phases.empty:
        return None
    pm = phase_metrics(campaign, by=("region", "target", "kind"))
    pm = pm.assign(region=pm["region"].astype(str), target=pm["target"].astype(str),
                   kind=pm["kind"].astype(str), phase=pm["phase"].astype(str))
    kinds = [k for k in ("smtp", "imap") if (pm["kind"] == k).any()]
    if not kinds:
        return None
    chosen = shown(result, pm["region"], pm["target"])
    pm = pm[pm["region"].isin(chosen.regions) & pm["target"].isin(chosen.targets)]
    flagged = _flagged(result)
    pairs = pm[["region", "target"]].drop_duplicates().sort_values(["region", "target"])
    keys = list(zip(pairs["region"], pairs["target"], strict=True))
    labels = [f"{r} → {t}" for r, t in keys]
    height = min(0.32 * len(labels) * len(kinds) + 1.6 * len(kinds), 24.0)
    fig = MplFigure(figsize=(10.5, height))
    axes = fig.subplots(len(kinds), 1, squeeze=False)
    ph = campaign.phases
    for i, kind in enumerate(kinds):
        ax: Axes = axes[i][0]
        order = list(pd.unique(ph.loc[ph["kind"] == kind, "phase"].astype(str)))
        palette = colours(order)
        sub = pm[pm["kind"] == kind]
        durations = {(r, t, ph_): float(v) for r, t, ph_, v in zip(
            sub["region"], sub["target"], sub["phase"],
            sub["duration_p50_ms"].to_numpy(dtype=float), strict=True)}
        widths = np.array([[durations.get((r, t, phase), np.nan) for r, t in keys]
                           for phase in order]).reshape(len(order), len(keys))
        _stacked_barh(ax, np.nan_to_num(widths, nan=0.0), [palette[p] for p in order],
                      height=0.7)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
        for tick, key in zip(ax.get_yticklabels(), keys, strict=True):
            if key in flagged:
                tick.set_color(FLAG_COLOUR)
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_title(f"{kind.upper()} handshake: median time per phase", fontsize=10,
                     loc="left")
        ax.set_xlabel("ms")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(handles=[Patch(facecolor=palette[p], label=p) for p in order], fontsize=8,
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), title="phase", title_fontsize=8)
    fig.tight_layout()
    return Figure("phases", "Handshake phases",
                  "Median duration of each phase of the SMTP and IMAP handshakes (connect, "
                  "greeting, EHLO/CAPABILITY, STARTTLS, TLS handshake, …), stacked, per client "
                  "region and data centre; flagged pairs in red." + chosen.note(), _png(fig))


def _stacked_barh(ax: Axes, widths: FloatArray, colours: Sequence[Any], *,
                  height: float) -> PolyCollection:
    """Horizontal bars stacked left to right: ``widths[i, j]`` is layer ``i`` (drawn in
    ``colours[i]``) of the bar at y = ``j``; what ``barh`` draws layer by layer, as one
    artist (a figure of 96 pairs and six phases per kind made 1,152 patches, whose data
    limits and drawing were a third of the figure's time).

    The same rectangles in the same order (each layer's bars, one layer after the other),
    without edges, with the same data limits and the bars' left ends as sticky edges (no
    margin left of 0): the same pixels as ``barh``'s."""
    layers, bars = widths.shape
    y = np.arange(bars, dtype=float)
    lefts = np.vstack([np.zeros((1, bars)), np.cumsum(widths, axis=0)[:-1]])
    x0, x1 = lefts.ravel(), (lefts + widths).ravel()
    y0, y1 = np.tile(y - height / 2, layers), np.tile(y + height / 2, layers)
    verts = np.stack([np.column_stack(c) for c in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))],
                     axis=1)
    bars_artist = PolyCollection(list(verts), closed=True, linewidths=0.0, edgecolors="none",
                                 facecolors=[c for c in colours for _ in range(bars)])
    bars_artist.sticky_edges.x.extend(np.unique(x0).tolist())
    ax.add_collection(bars_artist)
    return bars_artist


def timeseries_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Median RTT and loss per window, one column per shown data centre, one line per shown
    region, flagged periods shaded."""
    m = campaign.measurements
    kind = "ping" if (m["kind"] == "ping").any() else "tcp"
    sub = m[(m["kind"] == kind).to_numpy(dtype=bool)]
    if sub.empty:
        return None
    chosen = shown(result, distinct_text(sub["region"]), distinct_text(sub["target"]),
                   max_targets=4)
    sub = sub[sub["region"].isin(chosen.regions) & sub["target"].isin(chosen.targets)]
    freq = f"{max(1, int(result.window.total_seconds()))}s"
    w = windowed(Campaign(sub, campaign.samples, campaign.hops, campaign.phases), freq,
                 by=("region", "target"), n_boot=0)
    w = w.assign(region=w["region"].astype(str), target=w["target"].astype(str))
    targets = [t for t in chosen.targets if (w["target"] == t).any()]
    regions = [r for r in chosen.regions if (w["region"] == r).any()]
    if not targets:
        return None
    palette = colours(regions)
    step = pd.Timedelta(freq)
    fig = MplFigure(figsize=(10.5, 5.2))
    axes = fig.subplots(2, len(targets), squeeze=False, sharex=True, sharey="row")
    end = result.span[1] if result.span is not None else w["window"].max() + step
    flags = result.flags[result.flags["since"].notna()]
    series = dict(iter(w.groupby(["target", "region"], sort=False)))
    for j, t in enumerate(targets):
        top: Axes = axes[0][j]
        bottom: Axes = axes[1][j]
        for region in regions:
            sel = series.get((t, region))
            if sel is None or sel.empty:
                continue
            x = (sel["window"] + step / 2).dt.tz_localize(None)
            dots = "." if len(sel) <= 200 else None
            top.plot(x, sel["rtt_p50_ms"], color=palette[region], marker=dots, label=region,
                     linewidth=1.0)
            bottom.plot(x, 100 * sel["loss_ratio"].astype(float), color=palette[region],
                        marker=dots, linewidth=1.0)
        mine = flags[flags["target"].astype(str) == t]
        for since, group in mine.groupby("since", sort=True):
            # Timestamps go through matplotlib's date units (its stubs only say float).
            start: Any = pd.Timestamp(cast(Any, since)).tz_localize(None)
            stop: Any = pd.Timestamp(end).tz_localize(None)
            for ax in (top, bottom):
                ax.axvspan(start, stop, color=FLAG_COLOUR, alpha=0.07, zorder=0)
                ax.axvline(start, color=FLAG_COLOUR, linestyle="--", linewidth=1)
            who = ", ".join(sorted(group["region"].dropna().astype(str).unique()))
            bottom.annotate(f"flagged: {who}", (start, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -11), textcoords="offset points", fontsize=7,
                            color=FLAG_COLOUR)
        _mark_path_changes(top, bottom, result, t)
        top.set_title(f"to {t}", fontsize=10, loc="left")
        top.set_yscale("log")
        top.grid(alpha=0.3, which="both")
        bottom.grid(alpha=0.3)
        bottom.tick_params(axis="x", labelsize=8)
        if j == 0:
            top.set_ylabel(f"{kind} median RTT (ms)")
            bottom.set_ylabel("loss (%)")
    # The panels share one x axis (one ticker): set it once.
    _date_axis(axes[1][0])
    fig.supxlabel("time (UTC)", fontsize=10)
    top_loss = float(np.nanmax(100 * w["loss_ratio"].to_numpy(dtype=float), initial=0.0))
    axes[1][0].set_ylim(0, max(1.0, top_loss * 1.15))
    handles = [Line2D([], [], color=palette[r], marker=".", label=r) for r in regions]
    fig.legend(handles=handles, loc="upper center", ncols=min(len(regions), 6), fontsize=8,
               title="client region", title_fontsize=8,
               bbox_to_anchor=(0.5, 1.0 + 0.04 * (1 + -(-len(regions) // 6))))
    fig.tight_layout()
    return Figure("timeseries", "Over time",
                  f"Median {kind} RTT (log scale) and loss per {duration_text(result.window)} "
                  "window, one column per data centre, one line per client region. Shaded "
                  "from the dashed line on: a change flagged by the history test (its "
                  "'since')." + _path_change_caption(result) + chosen.note(), _png(fig))


PATH_COLOUR = "#6a1b9a"


def _mark_path_changes(top: Axes, bottom: Axes, result: Analysis, target: str) -> None:
    """A dotted line and a "path" label where an agent's path to ``target`` changed."""
    changes = [c for c in (result.changes.paths if result.changes is not None else ())
               if c.target == target]
    if not changes:
        return
    stamps: list[Any] = [pd.Timestamp(c.at).tz_localize(None) for c in changes]
    for ax in (top, bottom):
        # One artist per panel, not an axvline per change (94 changes made 188 lines):
        # vertical lines over the whole height (axes coordinates), their times as the
        # date axis' numbers; like axvline's, they count in the x data limits.
        xs = [float(_DATES.date2num(at)) for at in stamps]
        ax.add_collection(LineCollection([[(x, 0.0), (x, 1.0)] for x in xs],
                                         transform=ax.get_xaxis_transform(),
                                         colors=PATH_COLOUR, linestyles=":", linewidths=1.4,
                                         zorder=3), autolim=False)
        ax.update_datalim([(x, 0.0) for x in xs], updatey=False)
    for change, at in zip(changes, stamps, strict=True):
        top.annotate(f"path: {change.region}", (at, 1.0), xycoords=("data", "axes fraction"),
                     xytext=(3, -11), textcoords="offset points", fontsize=7,
                     color=PATH_COLOUR)


def _path_change_caption(result: Analysis) -> str:
    n = len(result.changes.paths) if result.changes is not None else 0
    return (f" Dotted purple lines: {n} path change(s) (an agent's traces took other hops "
            "from then on; see Path changes)." if n else "")


def inflation_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """ECDF of inflation (minimum RTT over the fibre floor), one line per continent pair."""
    ph = result.physics
    if ph is None:
        return None
    u = ph.usable.dropna(subset=["region_continent", "target_continent"])
    if u.empty:
        return None
    fig = MplFigure(figsize=(10.5, 4.2))
    ax = fig.add_subplot()
    groups = sorted(u.groupby(["region_continent", "target_continent"], sort=True),
                    key=lambda kv: -len(kv[1]))[:10]
    palette = colours([f"{src} → {dst}" for (src, dst), _ in groups])
    for (src, dst), g in groups:
        x = np.sort(g["inflation"].to_numpy(dtype=float))
        y = np.arange(1, x.size + 1) / x.size
        ax.step(x, y, where="post", marker="." if x.size < 20 else None,
                color=palette[f"{src} → {dst}"], label=f"{src} → {dst} ({x.size})")
    ax.axvline(1.0, color=FLAG_COLOUR, linestyle="--", linewidth=1)
    ax.annotate("fibre floor", (1.0, 0.02), xytext=(3, 0), textcoords="offset points",
                fontsize=8, color=FLAG_COLOUR)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("inflation: minimum RTT / fibre floor (log scale)")
    ax.set_ylabel("share of pairs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="region → data centre (pairs)", fontsize=8, title_fontsize=8,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return Figure("inflation", "Inflation per continent pair",
                  "Empirical distribution of inflation — each pair's minimum RTT divided by "
                  "the fibre floor (1 ms per 100 km of great-circle distance) — one line per "
                  "continent pair (client region → data centre; up to ten, the largest). "
                  "Impossible pairs and pairs whose floor is under 10 ms are left out.",
                  _png(fig))


# --------------------------------------------------------------------------- client mixes


def mix_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Which site wins along the line from the given mix to each named mix (or, without
    named mixes, towards each single region): one bar per line, coloured by the winner."""
    mixes = result.mixes
    if mixes is None:
        return None
    stretches = [s for s in mixes.lines if s.segments]
    named = bool(stretches)
    if not named:
        stretches = sorted((s for s in mixes.towards if s.segments),
                           key=lambda s: (s.flip_at is None, s.flip_at or 0.0))[:8]
    if not stretches:
        return None
    winners = sorted({seg.winner for s in stretches for seg in s.segments})
    colour = colours(winners)
    fig = MplFigure(figsize=(8.0, 1.0 + 0.55 * len(stretches)))
    ax = fig.add_subplot()
    for y, s in enumerate(stretches):
        for seg in s.segments:
            ax.barh(y, seg.end - seg.start, left=seg.start, height=0.6,
                    color=colour[seg.winner], edgecolor="white")
        if s.flip_at is not None:
            ax.plot([s.flip_at, s.flip_at], [y - 0.38, y + 0.38], color="black", lw=1.2)
            ax.text(s.flip_at, y - 0.34, f"{s.flip_at:.1%}", ha="left", va="bottom",
                    fontsize=7)
    ax.set_yticks(range(len(stretches)),
                  [s.to.removeprefix("region:") if named else
                   f"all in {s.to.removeprefix('region:')}" for s in stretches], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the way from the given mix (0) to the other mix (1)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(handles=[Patch(color=colour[w], label=w) for w in winners], fontsize=7,
              title="winner", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    what = "each named mix" if named else "each single client region"
    return Figure("mixes", "Which mix picks which site",
                  f"The winner along the straight line from the given client mix to {what}; "
                  "a black mark and its percentage show where the winner flips (exact: "
                  "scores are linear in the weights).", _png(fig))


#: The figures in report order (names are also the PNG files' stems).
FIGURES = ("map", "latency", "loss", "phases", "timeseries", "inflation", "mixes",
           "placement")  # placement: drawn by report.placement (report.build adds it)


#: What the figure workers draw from: set just before they are forked (copy-on-write), so
#: the campaign's frames are never pickled; only each figure's PNG comes back.
_DRAWING: tuple[Campaign, Analysis, pd.DataFrame | None] | None = None


def _draw(index: int) -> Figure | None:
    assert _DRAWING is not None
    campaign, result, places = _DRAWING
    if index == 0:
        return map_figure(campaign, result, places)
    return (latency_figure, loss_figure, phases_figure, timeseries_figure, inflation_figure,
            mix_figure)[index - 1](campaign, result)


def draw_all(campaign: Campaign, result: Analysis, places: pd.DataFrame | None, *,
             meanwhile: Callable[[], object] | None = None) -> list[Figure]:
    """Every figure the data allow, in report order (:data:`FIGURES`).

    The figures are independent and most of their time is matplotlib's own (layout, text,
    rasterising: about 4.8 s for a 10k-record campaign's five, whatever the data's size),
    so they are drawn by one forked process per CPU, when this process runs no other
    thread (fork copies only the calling thread: a lock another one held, a progress
    bar's, would stay locked in the child); otherwise here, one after the other.

    ``meanwhile``: this process's own work (the report's placement and words), called
    once while the figures are drawn in the other processes, and before them when they
    are drawn here.  The drawing processes are forked before it runs.
    """
    global _DRAWING
    indices = range(7)
    workers = min(progress.fork_cpus(), len(indices))
    _DRAWING = (campaign, result, places)
    try:
        drawn = None
        if workers >= 2:
            try:
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(
                        "fork")) as pool:
                    pending = pool.map(_draw, indices)  # (submitted, and forked, now)
                    if meanwhile is not None:
                        work, meanwhile = meanwhile, None
                        work()
                    drawn = list(pending)
            except BrokenProcessPool:
                # A drawing process died without answering (killed): not waited for
                # forever, the figures are drawn here instead.
                drawn = None
        if meanwhile is not None:
            meanwhile()
        if drawn is None:
            drawn = [_draw(i) for i in indices]
    finally:
        _DRAWING = None
    return [f for f in drawn if f is not None]
