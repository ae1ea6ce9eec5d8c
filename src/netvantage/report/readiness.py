"""The report's mail-readiness section: "Will mail flow on day one?", a row per candidate.

Built from :class:`netvantage.analysis.readiness.Readiness` only (nothing decided here: which
checks fail a candidate is the analysis' ``fail_on``); rendered by
``templates/_readiness.html.j2`` and by :func:`readiness_markdown`.  Each cell is one check:
its status, its one-line summary and its evidence (the zone that lists the address and its
code, the record text found, the certificate's names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..analysis.readiness import Readiness
from ..results import READY_CHECKS

__all__ = ["ReadinessCell", "ReadinessSection", "readiness_markdown", "readiness_section"]

_MAX_EVIDENCE = 4


@dataclass(frozen=True, slots=True)
class ReadinessCell:
    status: str  # pass / warn / fail / unknown / "" (not checked)
    summary: str
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadinessSection:
    headline: str
    checks: tuple[str, ...]
    rows: tuple[tuple[str, str, tuple[ReadinessCell, ...]], ...]  # candidate, verdict, cells
    rule: str


def readiness_section(ready: Readiness | None) -> ReadinessSection | None:
    """The section; None when the campaign holds no mailready records."""
    if ready is None:
        return None
    t = ready.table
    rows = []
    for target in ready.targets:
        sub = t[t["target"] == target].set_index("check")
        cells = []
        for check in READY_CHECKS:
            if check not in sub.index:
                cells.append(ReadinessCell("", "not checked", ()))
                continue
            row = sub.loc[check]
            evidence = [e for e in str(row["evidence"]).split("\n") if e]
            if row["split"]:
                evidence.insert(0, f"regions disagree: {row['split']}")
            if len(evidence) > _MAX_EVIDENCE:
                evidence = [*evidence[:_MAX_EVIDENCE], f"… {len(evidence) - _MAX_EVIDENCE} more"]
            cells.append(ReadinessCell(str(row["status"]), str(row["summary"]),
                                       tuple(e[:240] for e in evidence)))
        failing = ready.failing.get(target)
        verdict = ("FAILS: " + ", ".join(r.split(":")[1].split(" fails")[0].strip()
                                         for r in failing)) if failing else (
            "ready" if all(c.status in ("pass", "warn", "") for c in cells)
            else "not failed, with checks to look at")
        rows.append((target, verdict, tuple(cells)))
    failing_names = sorted(ready.failing)
    headline = (f"{len(rows)} candidate(s) checked; "
                + (f"{', '.join(failing_names)} fail{'s' if len(failing_names) == 1 else ''} "
                   "the readiness threshold, a service threshold like the others: such a "
                   "candidate ranks after every candidate that meets them all."
                   if failing_names else "none fails the readiness threshold."))
    rule = (f"A candidate fails when one of these checks fails: "
            f"{', '.join(ready.fail_on) or 'none (threshold off)'} "
            "(analyse --readiness-fail-on). Each check's status is the worst of the latest "
            "record from every region; unknown (a DNS timeout, SERVFAIL, a refused query) "
            "never counts as pass and never fails a candidate.")
    return ReadinessSection(headline, READY_CHECKS, tuple(rows), rule)


def readiness_markdown(section: ReadinessSection | None,
                       md: Callable[[object], str]) -> list[str]:
    """The section in Markdown (``md`` escapes text)."""
    if section is None:
        return []
    out = ["## Will mail flow on day one?", "", md(section.headline), "",
           "| candidate | verdict | " + " | ".join(md(c) for c in section.checks) + " |",
           "|---|---|" + "---|" * len(section.checks)]
    for target, verdict, cells in section.rows:
        texts = ["<br>".join([f"**{md(c.status or '–')}** {md(c.summary)}",
                              *(md(e) for e in c.evidence)]) for c in cells]
        out.append(f"| {md(target)} | {md(verdict)} | " + " | ".join(texts) + " |")
    out += ["", f"*{md(section.rule)}*", ""]
    return out
