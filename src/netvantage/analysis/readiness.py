"""Mail readiness per candidate: the ``mailready`` records read as a service threshold.

Pure functions over the ``readiness`` frame (:data:`~netvantage.analysis.frames.
READINESS_COLUMNS`).  For every target the latest record of each region counts; a check's
status for the target is the worst of those (fail > unknown > warn > pass), since a
blocklist listing or a missing key seen from one region is seen by every receiver.

**Threshold.**  A candidate whose check in ``fail_on`` (default :data:`DEFAULT_FAIL_ON`:
``dnsbl`` — its address is listed — and ``dkim`` — a selector's key is absent or unusable)
has status ``fail`` fails the ranking's service levels: :func:`failing_targets` gives the
(target, reason) pairs that go into :attr:`netvantage.analysis.rank.Thresholds.
failing_targets`, so it ranks after every candidate that meets them, whatever its latency.
The other checks are shown, not enforced, unless named in ``fail_on`` (e.g. ``rdns``,
``spf``: ``netvantage analyse --readiness-fail-on dnsbl,dkim,rdns``); an empty
``fail_on`` switches the threshold off.  ``unknown`` never fails a candidate (nor passes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from ..results import READY_CHECKS, MailReadyRecord
from .rank import Thresholds

__all__ = ["DEFAULT_FAIL_ON", "Readiness", "failing_targets", "readiness", "readiness_frame",
           "with_readiness"]

#: Checks whose failure fails a candidate by default.
DEFAULT_FAIL_ON: tuple[str, ...] = ("dnsbl", "dkim")
_ORDER = {"pass": 0, "warn": 1, "unknown": 2, "fail": 3}


def readiness_frame(records: Sequence[MailReadyRecord]) -> pd.DataFrame:
    """One row per (record, check)."""
    rows = []
    for r in records:
        for name in READY_CHECKS:
            c = r.body.check(name)
            rows.append({"id": r.id, "region": r.region, "target": r.target,
                         "address": r.address, "started_at": r.started_at, "check": name,
                         "status": c.status, "summary": c.summary,
                         "evidence": "\n".join(c.evidence)})
    frame = pd.DataFrame(rows, columns=["id", "region", "target", "address", "started_at",
                                        "check", "status", "summary", "evidence"])
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return frame


@dataclass(frozen=True)
class Readiness:
    """``table``: one row per (target, check) — status (worst over regions), summary and
    evidence of a record showing it, regions (how many regions' latest records), split
    (e.g. "fail in lun; pass in 3" when regions disagree).  ``failing``: target → reasons
    under ``fail_on``."""

    table: pd.DataFrame
    failing: dict[str, list[str]]
    fail_on: tuple[str, ...]

    @property
    def targets(self) -> list[str]:
        return sorted(self.table["target"].unique()) if not self.table.empty else []

    def text_lines(self) -> list[str]:
        """For ``netvantage analyse``: one line per candidate, its failed and unknown checks."""
        lines = [f"Mail readiness (a failed {' or '.join(self.fail_on) or '(none)'} check "
                 "fails the candidate):"]
        for target in self.targets:
            sub = self.table[self.table["target"] == target]
            bad = [f"{check} {status}: {summary}" for check, status, summary
                   in zip(sub["check"].astype(str), sub["status"].astype(str),
                          sub["summary"].astype(str), strict=True)
                   if status in ("fail", "unknown")]
            head = "FAILS" if target in self.failing else "ok"
            lines.append(f"  {target}: {head}" + (f" — {'; '.join(bad)}" if bad else
                                                  ", every check passes or warns"))
        return lines

    def to_dict(self) -> dict[str, object]:
        return {"fail_on": list(self.fail_on), "failing": self.failing,
                "checks": [{k: (None if pd.isna(v) else v) for k, v in row.items()}
                           for row in self.table.to_dict(orient="records")]}


def readiness(frame: pd.DataFrame | None,
              fail_on: Sequence[str] = DEFAULT_FAIL_ON) -> Readiness | None:
    """Each target's readiness, or None without readiness records."""
    unknown = [c for c in fail_on if c not in READY_CHECKS]
    if unknown:
        raise ValueError(f"unknown readiness check(s) {', '.join(unknown)} "
                         f"(checks: {', '.join(READY_CHECKS)})")
    if frame is None or frame.empty:
        return None
    f = frame.copy()
    f["region"] = f["region"].astype("object").fillna("(no region)")
    latest = (f.sort_values("started_at").groupby(["target", "region"], observed=True)["id"]
              .last())
    f = f[f["id"].isin(set(latest))]
    rows = []
    for (target, check), group in f.groupby(["target", "check"], observed=True, sort=True):
        order = [_ORDER[str(x)] for x in group["status"]]
        worst = group.iloc[order.index(max(order))]
        counts = group["status"].value_counts()
        split = ""
        if len(counts) > 1:
            split = "; ".join(f"{s} in " + (", ".join(sorted(group.loc[group["status"] == s,
                                                                         "region"]))
                                             if n <= 2 else f"{n} regions")
                              for s, n in counts.items())
        rows.append({"target": str(target), "check": str(check), "status": worst["status"],
                     "summary": worst["summary"], "evidence": worst["evidence"],
                     "regions": len(group), "split": split})
    table = pd.DataFrame(rows, columns=["target", "check", "status", "summary", "evidence",
                                        "regions", "split"])
    failing: dict[str, list[str]] = {}
    for row in table.itertuples():
        if row.check in fail_on and row.status == "fail":
            failing.setdefault(str(row.target), []).append(
                f"mail readiness: {row.check} fails ({row.summary})")
    return Readiness(table=table, failing=failing, fail_on=tuple(fail_on))


def failing_targets(ready: Readiness | None) -> tuple[tuple[str, str], ...]:
    """The (target, reason) pairs for :attr:`Thresholds.failing_targets`."""
    if ready is None:
        return ()
    return tuple((t, why) for t, reasons in sorted(ready.failing.items()) for why in reasons)


def with_readiness(thresholds: Thresholds, ready: Readiness | None) -> Thresholds:
    """``thresholds`` with the candidates that fail mail readiness added to its
    ``failing_targets`` (after those already there); ``thresholds`` itself when none fails.

    The one place where readiness becomes a service level, for ``analyse``, placement and
    the cluster's ranking alike.
    """
    failing = failing_targets(ready)
    if not failing:
        return thresholds
    return replace(thresholds, failing_targets=(*thresholds.failing_targets, *failing))
