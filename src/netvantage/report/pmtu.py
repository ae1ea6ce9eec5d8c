"""The report's path-MTU section: which pairs carry full-size packets, and where a
PMTU black hole (RFC 2923) drops them.

Built from :class:`netvantage.analysis.pmtu.PathMtu` only (nothing decided here);
rendered by ``templates/_pmtu.html.j2`` and :func:`pmtu_markdown`.  Pairs that carry the
full local MTU are counted, not listed: the rows are the ones someone has to act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..analysis.pmtu import VERDICTS, PathMtu

__all__ = ["PmtuSection", "pmtu_markdown", "pmtu_section"]

#: Rows on the page (the rest: ``netvantage analyse --format json``).
PMTU_ROWS = 200


@dataclass(frozen=True, slots=True)
class PmtuSection:
    headline: str
    rows: tuple[tuple[str, str, str, str, str, str], ...]  # region, dc, verdict, MTU, where, why
    more: int = 0


def pmtu_section(found: PathMtu | None) -> PmtuSection | None:
    """The section; None when the campaign holds no pmtu records."""
    if found is None:
        return None
    t = found.table
    counts = t["verdict"].value_counts()
    worst = t[t["verdict"] != "full"]
    holes = int(counts.get("black hole", 0))
    headline = (f"{len(t)} pair(s) measured: "
                + ", ".join(f"{int(counts[v])} {v!s}" for v in VERDICTS if v in counts)
                + ". "
                + (f"{holes} black hole(s): large packets vanish without an ICMP message, so "
                   "connections open and then stall on the first full-size segment (a TLS "
                   "certificate, a message body)." if holes else
                   "No black hole: every reduced path announces its MTU."))
    rows = tuple((str(r.region), str(r.target), str(r.verdict),
                  "–" if r.path_mtu is None or str(r.path_mtu) == "<NA>" else
                  f"{r.path_mtu!s} of {r.local_mtu!s}", str(r.where) or "–", str(r.evidence))
                 for r in worst.head(PMTU_ROWS).itertuples())
    return PmtuSection(headline, rows, max(0, len(worst) - PMTU_ROWS))


def pmtu_markdown(section: PmtuSection | None, md: Callable[[object], str]) -> list[str]:
    """The section in Markdown (``md`` escapes text)."""
    if section is None:
        return []
    out = ["## Path MTU", "", md(section.headline), ""]
    if section.rows:
        out += ["| region | data centre | verdict | path MTU | stops at | evidence |",
                "|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(md(x) for x in row) + " |" for row in section.rows]
        out.append("")
    if section.more:
        out += [f"… and {section.more} more pairs (`netvantage analyse --format json`).", ""]
    return out
