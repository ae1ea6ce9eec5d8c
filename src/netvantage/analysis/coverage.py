"""Coverage before ranking, and confidence from what was measured.

**Coverage.**  A pair (region, data centre) is *measured* when at least one of its records
has an RTT (of the pair's latency kinds: ping/tcp, or the traces' destination RTT for a pair
that has no ping/tcp RTT of its own).  A data centre can win only when every weighted region
measured it, unless the user chose a gap policy (:data:`~netvantage.analysis.rank.GAP_POLICIES`:
``exclude`` by default, ``skip``, ``worst``, ``fail``).  :func:`coverage` lists what is missing:
targets that never answered from anywhere, regions with no successful measurement (weighted
regions without a single record included), and every weighted pair without a measurement,
with the reason ("no records", "N records, none answered"), and every weighted pair that
has an RTT but whose cost is unknown all the same (a term other pairs have, such as the
handshake, has no value for it): to the ranking that is a gap too.

**Same city.**  A region and a data centre within :data:`SAME_CITY_KM` of each other are in
the same city.  Such a pair follows a stated policy: by default its own measurement (when it
has none it is a gap like any other, and listed as "same city, not measured"); with
``same_city_floor_ms`` an unmeasured same-city pair is *assumed* to cost that access-network
round trip (and is listed as assumed).  It is never a silent NaN.

**Confidence** (:func:`confidence`) — the rule, applied to the winner *w* and the best other
eligible candidate *r*:

* margin = score(r) − score(w), in ms-equivalents;
* noise = √(se(w)² + se(r)²), where se is the score's standard error: the standard deviation
  of the bootstrap replicates when every weighted pair has at least two records to resample,
  else from the spread inside the single records (1.2533 × sd / √n per pair, weighted; see
  :func:`netvantage.analysis.rank.rank`), else unknown;
* **high** — margin > 2 × noise, and the winner stays first in ≥ 90 % of perturbed client
  mixes and in every leave-one-region-out check, and is best in ≥ 95 % of bootstrap
  resamplings when there are resamplings;
* **moderate** — margin > noise and the winner stays first in ≥ 70 % of perturbed mixes
  (and is best in ≥ 80 % of resamplings when there are resamplings);
* **low** — otherwise, and always when the noise is unknown (one snapshot per pair with no
  spread: the margin cannot be shown to exceed it);
* **none** — there is no winner.

With a single eligible candidate there is no margin; the level then rests on stability
alone and is at most moderate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .rank import Ranking, Stability

__all__ = ["CONFIDENCE_RULE", "SAME_CITY_KM", "Confidence", "Coverage", "confidence",
           "coverage", "same_city_pairs"]

#: Two places this close (great circle, km) are in the same city.
SAME_CITY_KM = 50.0

CONFIDENCE_RULE = (
    "high: margin over the runner-up > 2 × the measurement noise of the two scores, first in "
    "≥ 90 % of perturbed client mixes and in every leave-one-region-out check (and best in "
    "≥ 95 % of bootstrap resamplings when there are any); moderate: margin > noise and "
    "≥ 70 % (≥ 80 %); low otherwise, and whenever the noise is unknown")

#: The ranking's cost terms (breakdown columns), as a reader names them.
_TERM_NAMES = {"cost_rtt_p50_ms": "RTT median", "cost_rtt_p95_ms": "RTT p95",
               "cost_loss_pct": "loss", "cost_handshake_p95_ms": "handshake (smtp/imap)",
               "cost_failure_pct": "success rate"}

_POLICY_TEXT = {
    "exclude": "a data centre can win only if every weighted region measured it successfully",
    "skip": "gaps skipped: a data centre's score is over the weighted regions that measured "
            "it, their weights renormalised",
    "worst": "gaps filled: an unmeasured pair costs the worst cost any data centre has in "
             "that region",
    "fail": "ranking refused while any weighted pair is unmeasured",
}


@dataclass(frozen=True)
class Confidence:
    """How sure the recommendation is, by :data:`CONFIDENCE_RULE`."""

    level: str  # high / moderate / low / none
    reason: str
    margin: float
    noise: float
    runner_up: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "reason": self.reason, "rule": CONFIDENCE_RULE,
                "margin": _json_float(self.margin), "noise": _json_float(self.noise),
                "runner_up": self.runner_up}


@dataclass(frozen=True)
class Coverage:
    """What was measured and what was not; ``Analysis.coverage``."""

    gaps: str
    regions_total: int
    regions_weighted: int
    regions_measured: int
    dead_targets: list[str]
    silent_regions: list[dict[str, Any]]
    unmeasured: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    same_city: list[dict[str, Any]]
    same_city_floor_ms: float | None
    confidence: Confidence
    intervals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def policy(self) -> str:
        return _POLICY_TEXT[self.gaps]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gaps": self.gaps, "policy": self.policy,
            "regions": {"total": self.regions_total, "weighted": self.regions_weighted,
                        "measured": self.regions_measured},
            "dead_targets": self.dead_targets, "silent_regions": self.silent_regions,
            "unmeasured": self.unmeasured, "candidates": self.candidates,
            "same_city": {"policy": self.same_city_policy, "pairs": self.same_city},
            "intervals": self.intervals, "confidence": self.confidence.to_dict(),
        }

    @property
    def same_city_policy(self) -> str:
        if self.same_city_floor_ms is None:
            return ("own measurement (an unmeasured same-city pair is a gap; "
                    "--same-city-floor MS assumes an access-network round trip)")
        return (f"own measurement; when there is none, an assumed access-network round trip "
                f"of {self.same_city_floor_ms:g} ms")

    def text_lines(self) -> list[str]:
        lines = ["Coverage:",
                 f"  policy for gaps ({self.gaps}): {self.policy}",
                 f"  regions: {self.regions_measured} of {self.regions_total} measured "
                 f"something successfully; {self.regions_weighted} weighted"]
        if self.dead_targets:
            lines.append("  never answered (no successful measurement from any region): "
                         + ", ".join(self.dead_targets))
        for s in self.silent_regions:
            lines.append(f"  region without data: {s['region']} ({s['reason']})")
        shown = self.unmeasured[:30]
        if shown:
            lines.append(f"  weighted pairs without a cost ({len(self.unmeasured)}):")
            lines += [f"    {u['region']} -> {u['target']}: {u['reason']}" for u in shown]
            if len(self.unmeasured) > len(shown):
                lines.append(f"    … and {len(self.unmeasured) - len(shown)} more "
                             "(--format json lists them all)")
        else:
            lines.append("  every weighted pair was measured")
        for c in self.candidates:
            if not c["eligible"]:
                lines.append(f"  not eligible: {c['target']} ({c['reason']})")
        if self.same_city:
            lines.append(f"  same-city pairs ({self.same_city_policy}):")
            lines += [f"    {p['region']} -> {p['target']}: {p['status']}"
                      for p in self.same_city]
        for i in self.intervals:
            lines.append(f"  {i['target']}: {i['basis']}")
        sure = self.confidence
        lines.append(f"  confidence: {sure.level} ({sure.reason})")
        return lines


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def same_city_pairs(regions: list[str], targets: list[str],
                    locations: pd.DataFrame | None) -> list[tuple[str, str]]:
    """(region, target) pairs whose places lie within :data:`SAME_CITY_KM` of each other."""
    if locations is None or locations.empty or not {"name", "lat", "lon"} <= set(
            locations.columns):
        return []
    from .geo import great_circle_km

    known = locations.dropna(subset=["lat", "lon"])
    place = {str(n): (float(a), float(b)) for n, a, b in
             zip(known["name"], known["lat"], known["lon"], strict=True)}
    out = []
    for region in regions:
        for target in targets:
            if region in place and target in place:
                (a, b), (c, d) = place[region], place[target]
                if float(great_circle_km(a, b, c, d)) <= SAME_CITY_KM:
                    out.append((region, target))
    return out


def coverage(measurements: pd.DataFrame, weights: Mapping[str, float], ranking: Ranking,
             stability: Stability, *, gaps: str = "exclude",
             same_city: list[tuple[str, str]] | None = None,
             same_city_floor_ms: float | None = None) -> Coverage:
    """What was measured, what was not, and how sure the winner is (module docstring)."""
    bd = ranking.breakdown
    weighted = sorted(r for r, w in weights.items() if w > 0)
    regions = sorted({str(r) for r in measurements["region"].dropna().unique()} | set(weighted))
    targets = sorted(str(t) for t in measurements["target"].dropna().unique())
    # Only the key columns are filtered (not the whole frame: its ids are a million
    # strings), and the kinds compared as they are (no string copy of the column).
    keys = measurements[["region", "target"]]
    answered = keys[(measurements["rtt_ms"].notna()
                     & ~measurements["kind"].isin(["smtp", "imap"])).to_numpy(dtype=bool)]
    measured_pairs = {(str(r), str(t)) for r, t in
                      answered.drop_duplicates().itertuples(index=False)}
    sizes = keys.groupby(["region", "target"], observed=True).size().reset_index()
    counts: dict[tuple[str, str], int] = {
        (str(r), str(t)): int(n) for r, t, n in sizes.itertuples(index=False)}
    dead = [t for t in targets if not any(p[1] == t for p in measured_pairs)]
    silent = []
    for r in regions:
        if any(p[0] == r for p in measured_pairs):
            continue
        n = sum(v for k, v in counts.items() if k[0] == r)
        silent.append({"region": r, "weighted": r in weighted,
                       "reason": "no records" if n == 0 else f"{n} records, none answered"})
    same = set(same_city or [])
    assumed_rows = bd[bd["latency_from"].astype(str).str.startswith("assumed")]
    assumed = {(str(a.region), str(a.target)) for a in assumed_rows.itertuples()}
    unmeasured = []
    for r in weighted:
        for t in targets:
            if (r, t) in measured_pairs or (r, t) in assumed:
                continue
            n = int(counts.get((r, t), 0))
            reason = "no records" if n == 0 else f"{n} records, none answered"
            if (r, t) in same:
                reason += "; same city, not measured"
            unmeasured.append({"region": r, "target": t, "records": n, "reason": reason})
    # A pair with an RTT can still be a gap to the ranking: a cost term measured elsewhere
    # (a handshake, say) that this pair has no value for leaves its cost unknown.
    weighted_set = set(weighted)
    incomplete = bd[bd["cost"].isna() & bd["region"].astype(str).isin(weighted_set)]
    for row in incomplete.itertuples(index=False):
        r, t = str(row.region), str(row.target)
        if (r, t) not in measured_pairs or (r, t) in assumed:
            continue
        missing = [name for column, name in _TERM_NAMES.items()
                   if column in incomplete.columns and pd.isna(getattr(row, column))]
        unmeasured.append({"region": r, "target": t, "records": int(counts.get((r, t), 0)),
                           "reason": ("RTT measured, but no " + " nor ".join(missing)
                                      + " (a term other pairs have): cost unknown")
                           if missing else "RTT measured, but its cost is unknown"})
    unmeasured.sort(key=lambda u: (u["region"], u["target"]))
    candidates = []
    for row in ranking.table.itertuples():
        t = str(row.target)
        gaps_here = [u for u in unmeasured if u["target"] == t]
        gap_regions = [str(u["region"]) for u in gaps_here]
        if t in dead:
            reason = "never answered: no successful measurement from any region"
        elif not bool(row.eligible):
            shown = ", ".join(gap_regions[:10]) + (
                f" and {len(gap_regions) - 10} more" if len(gap_regions) > 10 else "")
            reason = f"no cost from {len(gaps_here)} of {len(weighted)} weighted " \
                     f"region(s): {shown}"
        elif gaps_here:
            reason = f"{len(gaps_here)} gap(s), counted by the '{gaps}' policy"
        else:
            reason = f"measured from all {len(weighted)} weighted region(s)"
        candidates.append({"target": t, "eligible": bool(row.eligible),
                           "measured_regions": len(weighted) - len(gaps_here),
                           "weighted_regions": len(weighted), "reason": reason})
    same_rows = []
    for r, t in sorted(same):
        status = ("assumed access floor" if (r, t) in assumed else
                  "measured" if (r, t) in measured_pairs else "not measured (a gap)")
        same_rows.append({"region": r, "target": t, "status": status})
    intervals = [{"target": str(t), "basis": str(b)} for t, b in
                 zip(ranking.table["target"], ranking.table["ci_basis"], strict=True)
                 if str(b) not in ("bootstrap of the records", "no score")]
    return Coverage(gaps=gaps, regions_total=len(regions), regions_weighted=len(weighted),
                    regions_measured=len(regions) - len(silent), dead_targets=dead,
                    silent_regions=silent, unmeasured=unmeasured, candidates=candidates,
                    same_city=same_rows, same_city_floor_ms=same_city_floor_ms,
                    confidence=confidence(ranking, stability), intervals=intervals)


def confidence(ranking: Ranking, stability: Stability) -> Confidence:
    """The confidence level of the winner by :data:`CONFIDENCE_RULE`."""
    table = ranking.table.sort_values("rank")
    ok = table[table["eligible"].astype(bool) & table["score"].notna()]
    if ok.empty or stability.winner is None:
        return Confidence("none", "no data centre is eligible: there is no winner",
                          math.nan, math.nan, None)
    best = ok.iloc[0]
    loo = stability.leave_one_out
    loo_all = len(loo) == 0 or bool(loo["same"].all())
    share = float(stability.dirichlet_share)
    p_best = float(best["p_best"])
    has_boot = not math.isnan(p_best)
    if len(ok) < 2:
        level = "moderate" if share >= 0.7 and loo_all else "low"
        return Confidence(level, "only one eligible data centre: no margin to measure",
                          math.nan, math.nan, None)
    second = ok.iloc[1]
    margin = float(second["score"]) - float(best["score"])
    noise = float(np.hypot(float(best["score_se"]), float(second["score_se"])))
    runner = str(second["target"])
    if math.isnan(noise):
        return Confidence("low", f"margin {margin:.1f} over {runner}, but the measurement "
                          "noise is unknown (single records without their spread)",
                          margin, noise, runner)
    said = f"margin {margin:.1f} over {runner}, noise {noise:.1f}"
    if (margin > 2 * noise and share >= 0.9 and loo_all
            and (not has_boot or p_best >= 0.95)):
        return Confidence("high", said + " (margin > 2 × noise)", margin, noise, runner)
    if margin > noise and share >= 0.7 and (not has_boot or p_best >= 0.8):
        return Confidence("moderate", said, margin, noise, runner)
    return Confidence("low", said + (" (margin within the noise)" if margin <= noise else
                                     " (the winner depends on the mix or the resampling)"),
                      margin, noise, runner)
