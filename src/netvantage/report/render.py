"""Render :class:`ReportContent` and the figures as one HTML page or as Markdown.

HTML: a Jinja2 template (``templates/report.html.j2``) with autoescaping on, CSS inline,
figures as ``data:image/png;base64`` URIs — the page fetches nothing.  Markdown: plain
string building, figures referenced by relative path when they were written to a folder.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from .content import ReportContent, Table
from .coverage import coverage_markdown
from .detours import detour_markdown
from .figures import Figure
from .mixes import mix_markdown
from .physics import physics_markdown
from .placement import placement_markdown
from .pmtu import pmtu_markdown
from .readiness import readiness_markdown

__all__ = ["render_html", "render_markdown"]


def _png_size(png: bytes) -> tuple[int, int]:
    # PNG: 8-byte signature, then the IHDR chunk (length, type, width, height, …).
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _environment() -> Environment:
    return Environment(loader=PackageLoader("netvantage.report", "templates"),
                       autoescape=True, undefined=StrictUndefined, trim_blocks=False,
                       lstrip_blocks=False, keep_trailing_newline=True)


def render_html(content: ReportContent, figures: Sequence[Figure]) -> str:
    figs: dict[str, dict[str, Any]] = {}
    for f in figures:
        width, height = _png_size(f.png)
        figs[f.name] = {"name": f.name, "title": f.title, "caption": f.caption,
                        "data": base64.b64encode(f.png).decode("ascii"),
                        # Drawn at 110 dpi; shown at their natural size up to the column's.
                        "width": width, "height": height}
    return _environment().get_template("report.html.j2").render(c=content, figs=figs)


# --------------------------------------------------------------------------- markdown


def _md(text: object) -> str:
    """Text safe in a Markdown paragraph or table cell."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*_`[]<>#":
        out = out.replace(ch, "\\" + ch)
    return out


def _md_table(t: Table) -> list[str]:
    head = "| " + " | ".join(_md(c) for c in t.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in t.numeric) + "|"
    rows = []
    for i, row in enumerate(t.rows):
        cells = [_md(c) for c in row]
        if t.mark(i) == "winner":
            cells = [f"**{c}**" if c else c for c in cells]
        rows.append("| " + " | ".join(cells) + " |")
    return [*([_md(t.note), ""] if t.note else []), head, rule, *rows, ""]


def render_markdown(content: ReportContent, figures: Sequence[Figure],
                    figure_paths: Mapping[str, str] | None = None) -> str:
    """The same content as :func:`render_html`; ``figure_paths``: name → relative path."""
    paths = dict(figure_paths or {})
    byname = {f.name: f for f in figures}
    r = content.recommendation
    out: list[str] = [f"# {_md(content.title)}", "",
                      f"Generated {_md(content.generated)} by netvantage {_md(content.version)}.",
                      "", *coverage_markdown(content.coverage, _md),
                      "## Question and recommendation", "",
                      f"**Question:** {_md(r.question)}", ""]
    if r.winner:
        out += [f"**Recommendation: {_md(r.winner)}** {_md(r.answer)} "
                f"Confidence: **{_md(r.confidence)}**.", ""]
        out += [f"- {_md(line)}" for line in r.evidence] + [""]
        if r.would_change:
            out += ["**What would change the answer:**", ""]
            out += [f"- {_md(line)}" for line in r.would_change] + [""]
        out += [f"Confidence levels: {_md(r.confidence_rule)}.", ""]
    else:
        out += [f"**No recommendation:** {_md(r.answer)}", ""]

    if content.changes is not None:  # events first, then the pairs
        ch = content.changes
        out += ["## Events and episodes", ""]
        for e in ch["events"]:
            out += [f"**{_md(e['headline'])}**", ""] + [f"- {_md(x)}" for x in e["lines"]] + [""]
        for title, key in (("Episodes by pair", "episodes"), ("Improvements", "improvements")):
            empty = ("none: no pair has two records at different times, so there is no "
                     "series to follow" if ch["window"] == "none" else "none")
            out += [f"**{title}:**", ""] + [f"- {_md(x)}" for x in ch[key] or [empty]] + [""]
        if ch["comparison"]:
            out += ["**Two snapshots, pair by pair:**", ""]
            out += [f"- {_md(x)}" for x in ch["comparison"]["rows"]] + [""]
    out += ["## Flagged regions", ""]
    if content.flag_groups:
        for g in content.flag_groups:
            out += [f"**{_md(g.headline)}**", ""]
            out += [f"- {_md(line)}" for line in g.lines] + [""]
    else:
        out += [_md(content.calm or "No region is flagged."), ""]

    out += ["## Ranking", "", *([_md(content.ranking_note), ""] if content.ranking_note
                                else []), *_md_table(content.ranking)]
    out += ["## Per-region breakdown", "", *_md_table(content.breakdown)]
    out += readiness_markdown(content.readiness, _md)
    out += pmtu_markdown(content.pmtu, _md)

    def figure(name: str) -> list[str]:
        f = byname.get(name)
        if f is None:
            return ["*Not drawn: the data hold nothing for this figure.*", ""]
        lines = [f"![{_md(f.title)}]({paths[name]})", ""] if name in paths else []
        note = "" if name in paths else " (write the figures with `--figures DIR` to see it)"
        return [*lines, f"*{_md(f.caption)}*{note}", ""]

    out += placement_markdown(content.placement, _md, figure("placement"))
    out += ["## Map", "", *figure("map")]
    out += ["## Latency distributions", "", *figure("latency")]
    out += ["## Loss and handshake phases", "", *figure("loss"), *figure("phases")]
    out += ["## Over time", "", *figure("timeseries")]

    out += detour_markdown(content.detours, _md)
    out += mix_markdown(content.mixes, _md, figure("mixes"))
    out += physics_markdown(content.physics, _md, figure("inflation"))
    out += ["## Flag details", ""]
    if not content.flagged:
        out += ["No flags.", ""]
    for p in content.flagged:
        out += [f"### {_md(p.region)} → {_md(p.target)}", "", *_md_table(p.flags)]
        if p.where:
            out += ["**Where on the path:**", ""]
            out += [f"- {_md(w)}" for w in p.where] + [""]
        if p.hops is not None:
            out += ["**Typical hops:**", "", *_md_table(p.hops)]

    out += ["## How the data were gathered", ""]
    out += [f"- **{_md(k)}:** {_md(v)}" for k, v in content.gathering] + [""]
    if content.notes:
        out += ["### Notes", ""] + [f"- {_md(n)}" for n in content.notes] + [""]
    return "\n".join(out)
