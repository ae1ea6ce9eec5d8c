"""The report's figures, drawn with matplotlib's Agg renderer into PNG bytes.

Each function takes the campaign and its :class:`Analysis` and returns a :class:`Figure`
(or ``None`` when the data hold nothing to draw).  Figures are built with
``matplotlib.figure.Figure`` directly, not pyplot: no global state, no GUI backend, safe in
a server or a test run in parallel.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, ScalarFormatter

from ..analysis.frames import Campaign
from ..analysis.metrics import phase_metrics, windowed
from ..analysis.summary import Analysis
from .content import duration_text
from .worldmap import coastlines

__all__ = ["FIGURES", "Figure", "draw_all", "inflation_figure", "latency_figure", "loss_figure",
           "map_figure", "mix_figure", "phases_figure", "timeseries_figure"]

FloatArray = npt.NDArray[np.float64]

DPI = 110
FLAG_COLOUR = "#c62828"
_DATES: Any = importlib.import_module("matplotlib.dates")  # untyped module
LAND, SEA, COAST = "#e9e6df", "#f4f8fb", "#b9b3a6"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str  # file stem: map, latency, loss, phases, timeseries
    title: str
    caption: str
    png: bytes


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight",
                metadata={"Software": None})  # no version stamp: same data, same bytes
    return buf.getvalue()


def _flagged(result: Analysis) -> set[tuple[str, str]]:
    f = result.flags
    return set(zip(f["region"].astype(str), f["target"].astype(str), strict=True))


def _colours(names: Sequence[str]) -> dict[str, str]:
    cycle = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
             "#bcbd22", "#17becf", "#d62728"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


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
    bd = bd[bd["region"].isin(pos) & bd["target"].isin(pos)]
    if bd.empty:
        return None
    excess = (bd["rtt_p50_ms"] - bd["floor_ms"]).to_numpy(dtype=float)
    finite = excess[np.isfinite(excess)]
    vmax = float(np.nanpercentile(finite, 95)) if finite.size else 1.0
    norm = Normalize(vmin=0.0, vmax=max(vmax, 1.0))
    cmap = mpl.colormaps["RdYlGn_r"]
    flagged = _flagged(result)

    used = {*bd["region"].astype(str), *bd["target"].astype(str)}
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
    for r in bd.sort_values("rtt_p50_ms").itertuples():
        (la1, lo1), (la2, lo2) = pos[str(r.region)], pos[str(r.target)]
        lat, lon = _great_circle(la1, lo1, la2, lo2)
        value = float(cast(Any, r.rtt_p50_ms)) - float(cast(Any, r.floor_ms))
        colour = cmap(norm(value)) if np.isfinite(value) else "#999999"
        if (str(r.region), str(r.target)) in flagged:
            ax.plot(lon, lat, color=FLAG_COLOUR, linewidth=5.0, alpha=0.35, zorder=2,
                    solid_capstyle="round")
            ax.plot(lon, lat, color=colour, linewidth=2.2, linestyle=(0, (4, 2)), zorder=3)
        else:
            ax.plot(lon, lat, color=colour, linewidth=1.8, alpha=0.9, zorder=3)
    for name in sorted(used):
        la, lo = pos[name]
        is_dc = name in set(bd["target"].astype(str))
        ax.scatter([lo], [la], marker="s" if is_dc else "o", s=90 if is_dc else 60,
                   color="#263238" if is_dc else "#ffffff", edgecolor="#263238", linewidth=1.5,
                   zorder=5)
        # Co-located region and data centre (a client office next to the DC): offset labels.
        dy = -3.2 if is_dc else 2.2
        ax.annotate(name, (lo, la), xytext=(lo + 1.2, la + dy), fontsize=9, zorder=6,
                    fontweight="bold" if is_dc else "normal",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.75})
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
    return Figure("map", "Map of regions and data centres",
                  "Each line joins a client region to a data centre along the great circle; "
                  "its colour is the pair's median RTT above the physical floor (1 ms per "
                  "100 km of great-circle distance): green is close to the speed of light in "
                  "fibre, red is far above it. Flagged pairs are dashed on a red band. "
                  "Coastlines: GSHHS (crude), drawn offline.", _png(fig))


# --------------------------------------------------------------------------- distributions


def latency_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Box plots of ping RTT samples per data centre, one panel per region."""
    s = campaign.samples
    s = s[(s["kind"].astype(str) == "ping") & s["rtt_ms"].notna()]
    if s.empty:
        s = campaign.samples[campaign.samples["rtt_ms"].notna()]
        kind = "RTT samples"
    else:
        kind = "ping RTT samples"
    if s.empty:
        return None
    regions = sorted(s["region"].dropna().astype(str).unique())
    targets = sorted(s["target"].dropna().astype(str).unique())
    loss = result.ranking.breakdown.set_index(["region", "target"])["loss_pct"]
    flagged = _flagged(result)
    cols = min(len(regions), 2)
    rows = -(-len(regions) // cols)
    fig = MplFigure(figsize=(10.5, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for i, region in enumerate(regions):
        ax: Axes = axes[i // cols][i % cols]
        data, labels, boxcolours = [], [], []
        for t in targets:
            v = s.loc[(s["region"].astype(str) == region) & (s["target"].astype(str) == t),
                      "rtt_ms"].to_numpy(dtype=float)
            data.append(v if v.size else np.array([np.nan]))
            lp = loss.get((region, t), np.nan)
            labels.append(f"{t}\nloss {lp:.1f} %" if np.isfinite(lp) else t)
            boxcolours.append(FLAG_COLOUR if (region, t) in flagged else "#5c7cfa")
        bp = ax.boxplot(data, orientation="horizontal", whis=(5, 95), widths=0.6, patch_artist=True,
                        flierprops={"marker": ".", "markersize": 2, "alpha": 0.4},
                        medianprops={"color": "black", "linewidth": 1.6})
        ax.set_yticks(range(1, len(labels) + 1), labels)
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
                  "scale). Labels give the loss the ranking uses. Red boxes are flagged pairs.",
                  _png(fig))


def loss_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Grouped bars of packet loss (ping and tcp, as ranked) per region and data centre."""
    bd = result.ranking.breakdown
    if bd.empty or not np.isfinite(bd["loss_pct"].to_numpy(dtype=float)).any():
        return None
    regions = sorted(bd["region"].dropna().astype(str).unique())
    targets = sorted(bd["target"].dropna().astype(str).unique())
    colours = _colours(targets)
    flagged = _flagged(result)
    fig = MplFigure(figsize=(10.5, 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(targets)
    for j, t in enumerate(targets):
        sub = bd[bd["target"].astype(str) == t].set_index("region")
        vals = [float(sub["loss_pct"].get(r, np.nan)) for r in regions]
        x = np.arange(len(regions)) + (j - (len(targets) - 1) / 2) * width
        bars = ax.bar(x, vals, width * 0.92, color=colours[t])
        for bar, r, v in zip(bars, regions, vals, strict=True):
            if (r, t) in flagged:
                bar.set_edgecolor(FLAG_COLOUR)
                bar.set_linewidth(2.0)
                bar.set_hatch("//")
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v),
                            xytext=(0, 2), textcoords="offset points", ha="center",
                            fontsize=7)
    ax.set_xticks(np.arange(len(regions)), regions)
    ax.set_ylabel("packet loss (%)")
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=colours[t], label=t) for t in targets]
    handles.append(Patch(facecolor="white", edgecolor=FLAG_COLOUR, hatch="//",
                         label="flagged pair"))
    ax.legend(handles=handles, title="data centre", fontsize=8, loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(0, max(1.0, float(np.nanmax(bd["loss_pct"].to_numpy(dtype=float))) * 1.15))
    fig.tight_layout()
    return Figure("loss", "Packet loss",
                  "Share of ping echoes and TCP connects lost, per client region and data "
                  "centre, as the ranking counts it. Hatched bars with a red edge are flagged "
                  "pairs.", _png(fig))


def phases_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Stacked median durations of each handshake phase (smtp, imap) per pair."""
    if campaign.phases.empty:
        return None
    pm = phase_metrics(campaign, by=("region", "target", "kind"))
    kinds = [k for k in ("smtp", "imap") if (pm["kind"].astype(str) == k).any()]
    if not kinds:
        return None
    flagged = _flagged(result)
    pairs = pm[["region", "target"]].astype(str).drop_duplicates().sort_values(
        ["region", "target"])
    labels = [f"{r.region} → {r.target}" for r in pairs.itertuples()]
    fig = MplFigure(figsize=(10.5, 0.32 * len(labels) * len(kinds) + 1.6 * len(kinds)))
    axes = fig.subplots(len(kinds), 1, squeeze=False)
    for i, kind in enumerate(kinds):
        ax: Axes = axes[i][0]
        ph = campaign.phases
        order = list(pd.unique(ph.loc[ph["kind"].astype(str) == kind, "phase"].astype(str)))
        tab = mpl.colormaps["tab10"]
        colours = {phase: tab(i % 10) for i, phase in enumerate(order)}
        sub = pm[pm["kind"].astype(str) == kind]
        left = np.zeros(len(labels))
        for phase in order:
            p = sub[sub["phase"].astype(str) == phase].set_index(
                [sub.loc[sub["phase"].astype(str) == phase, "region"].astype(str),
                 sub.loc[sub["phase"].astype(str) == phase, "target"].astype(str)])
            vals = np.array([float(p["duration_p50_ms"].get((r.region, r.target), np.nan))
                             for r in pairs.itertuples()])
            vals = np.nan_to_num(vals, nan=0.0)
            ax.barh(np.arange(len(labels)), vals, left=left, color=colours[phase], label=phase,
                    height=0.7)
            left += vals
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
        for tick, r in zip(ax.get_yticklabels(), pairs.itertuples(), strict=True):
            if (r.region, r.target) in flagged:
                tick.set_color(FLAG_COLOUR)
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_title(f"{kind.upper()} handshake: median time per phase", fontsize=10,
                     loc="left")
        ax.set_xlabel("ms")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="phase",
                  title_fontsize=8)
    fig.tight_layout()
    return Figure("phases", "Handshake phases",
                  "Median duration of each phase of the SMTP and IMAP handshakes (connect, "
                  "greeting, EHLO/CAPABILITY, STARTTLS, TLS handshake, …), stacked, per client "
                  "region and data centre; flagged pairs in red.", _png(fig))


def timeseries_figure(campaign: Campaign, result: Analysis) -> Figure | None:
    """Median RTT and loss per window, one column per data centre, flagged periods shaded."""
    m = campaign.measurements
    kind = "ping" if (m["kind"].astype(str) == "ping").any() else "tcp"
    sub = m[m["kind"].astype(str) == kind]
    if sub.empty:
        return None
    freq = f"{max(1, int(result.window.total_seconds()))}s"
    w = windowed(Campaign(sub, campaign.samples, campaign.hops, campaign.phases), freq,
                 by=("region", "target"), n_boot=0)
    targets = sorted(w["target"].dropna().astype(str).unique())
    regions = sorted(w["region"].dropna().astype(str).unique())
    colours = _colours(regions)
    step = pd.Timedelta(freq)
    fig = MplFigure(figsize=(10.5, 5.2))
    axes = fig.subplots(2, len(targets), squeeze=False, sharex=True, sharey="row")
    end = result.span[1] if result.span is not None else w["window"].max() + step
    flags = result.flags[result.flags["since"].notna()]
    for j, t in enumerate(targets):
        top: Axes = axes[0][j]
        bottom: Axes = axes[1][j]
        for region in regions:
            sel = w[(w["target"].astype(str) == t) & (w["region"].astype(str) == region)]
            if sel.empty:
                continue
            x = (sel["window"] + step / 2).dt.tz_localize(None)
            top.plot(x, sel["rtt_p50_ms"], color=colours[region], marker=".", label=region)
            bottom.plot(x, 100 * sel["loss_ratio"].astype(float), color=colours[region],
                        marker=".")
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
        top.set_title(f"to {t}", fontsize=10, loc="left")
        top.set_yscale("log")
        top.grid(alpha=0.3, which="both")
        bottom.grid(alpha=0.3)
        bottom.xaxis.set_major_formatter(_DATES.DateFormatter("%H:%M"))
        bottom.tick_params(axis="x", labelsize=8, rotation=30)
        bottom.set_xlabel("time (UTC)")
        if j == 0:
            top.set_ylabel(f"{kind} median RTT (ms)")
            bottom.set_ylabel("loss (%)")
    top_loss = float(np.nanmax(100 * w["loss_ratio"].to_numpy(dtype=float), initial=0.0))
    axes[1][0].set_ylim(0, max(1.0, top_loss * 1.15))
    handles = [Line2D([], [], color=colours[r], marker=".", label=r) for r in regions]
    fig.legend(handles=handles, loc="upper center", ncols=len(regions), fontsize=8,
               title="client region", title_fontsize=8, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return Figure("timeseries", "Over time",
                  f"Median {kind} RTT (log scale) and loss per {duration_text(result.window)} "
                  "window, one column per data centre, one line per client region. Shaded "
                  "from the dashed line on: a change flagged by the history test (its "
                  "'since').", _png(fig))


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
    for (src, dst), g in groups:
        x = np.sort(g["inflation"].to_numpy(dtype=float))
        y = np.arange(1, x.size + 1) / x.size
        ax.step(x, y, where="post", marker="." if x.size < 20 else None,
                label=f"{src} → {dst} ({x.size})")
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
    colour = _colours(winners)
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
FIGURES = ("map", "latency", "loss", "phases", "timeseries", "inflation", "mixes")


def draw_all(campaign: Campaign, result: Analysis, places: pd.DataFrame | None,
             ) -> list[Figure]:
    """Every figure the data allow, in report order (:data:`FIGURES`)."""
    drawn = [map_figure(campaign, result, places), latency_figure(campaign, result),
             loss_figure(campaign, result), phases_figure(campaign, result),
             timeseries_figure(campaign, result), inflation_figure(campaign, result),
             mix_figure(campaign, result)]
    return [f for f in drawn if f is not None]
