"""The report's coverage section, at the top: what was measured and what was not.

Built from ``Analysis.coverage`` (:mod:`netvantage.analysis.coverage`); nothing is decided
here, only worded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..analysis.coverage import Coverage

__all__ = ["CoverageSection", "coverage_markdown", "coverage_section"]


@dataclass(frozen=True, slots=True)
class CoverageSection:
    headline: str
    policy: str
    dead: tuple[str, ...]
    silent: tuple[str, ...]
    unmeasured: tuple[tuple[str, str, str], ...]  # region, data centre, reason
    ineligible: tuple[str, ...]
    same_city: tuple[str, ...]
    intervals: tuple[str, ...]
    confidence: str
    unmeasured_more: int = 0  # gap rows past UNMEASURED_ROWS, not on the page


#: Rows of the gap table on the page (a sparse matrix has thousands of gaps).
UNMEASURED_ROWS = 200


def coverage_section(cov: Coverage | None) -> CoverageSection | None:
    if cov is None:
        return None
    gaps = len(cov.unmeasured)
    headline = (f"{cov.regions_measured} of {cov.regions_total} regions measured something "
                f"successfully; {cov.regions_weighted} weighted; "
                + (f"{gaps} weighted pair(s) without a cost (never measured, or a term "
                   "missing)." if gaps else
                   "every weighted pair was measured."))
    return CoverageSection(
        headline=headline, policy=f"{cov.gaps}: {cov.policy}",
        dead=tuple(cov.dead_targets),
        silent=tuple(f"{s['region']} ({s['reason']})" for s in cov.silent_regions),
        unmeasured=tuple((str(u["region"]), str(u["target"]), str(u["reason"]))
                         for u in cov.unmeasured[:UNMEASURED_ROWS]),
        unmeasured_more=max(0, gaps - UNMEASURED_ROWS),
        ineligible=tuple(f"{c['target']}: {c['reason']}" for c in cov.candidates
                         if not c["eligible"]),
        same_city=tuple(f"{p['region']} → {p['target']}: {p['status']}"
                        for p in cov.same_city),
        intervals=tuple(f"{i['target']}: {i['basis']}" for i in cov.intervals),
        confidence=f"{cov.confidence.level} ({cov.confidence.reason})")


def coverage_markdown(section: CoverageSection | None, md: Callable[[object], str]
                      ) -> list[str]:
    if section is None:
        return []
    out = ["## Coverage", "", md(section.headline), "", f"Gap policy: {md(section.policy)}", ""]
    if section.dead:
        out += [f"- Never answered: {md(', '.join(section.dead))}"]
    out += [f"- Region without data: {md(s)}" for s in section.silent]
    out += [f"- Not eligible: {md(s)}" for s in section.ineligible]
    out += [f"- Same city: {md(s)}" for s in section.same_city]
    out += [f"- Interval: {md(s)}" for s in section.intervals]
    if section.unmeasured:
        out += ["", "| region | data centre | why |", "|---|---|---|"]
        out += [f"| {md(r)} | {md(t)} | {md(why)} |" for r, t, why in section.unmeasured]
        if section.unmeasured_more:
            out += ["", f"… and {section.unmeasured_more} more pairs "
                    "(`netvantage analyse --format json` lists them all)."]
    out += ["", f"Confidence: {md(section.confidence)}", ""]
    return out
