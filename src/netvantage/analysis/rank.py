"""Rank data centres for a mix of client regions: a weighted cost, its uncertainty, thresholds.

Pure functions over the ``measurements`` frame (see :mod:`netvantage.analysis.frames`).

The cost of serving region *r* from data centre *d* is a sum of terms, each a metric of the
records from *r* to *d* times a weight (:class:`CostModel`).  The weights put every term in
**milliseconds of median round trip**: 1 % of loss is "worth" 10 ms, and so on, so that a
cost reads as an equivalent latency.  A data centre's score is

    score_d = Σ_r w_r × cost_{r,d}        (w normalised to sum to 1)

and lower is better.  Its confidence interval comes from a stratified bootstrap: the records of
every (region, target, kind) are resampled with replacement, the metrics, costs and score
recomputed, and the 2.5 and 97.5 percentiles kept.  ``p_best`` is the share of bootstrap
replicates in which the data centre has the lowest score.

:class:`Thresholds` are service levels a candidate must meet **in every region** with weight;
they are checked on the point estimates.  A candidate failing any of them ranks after every
candidate that meets them all, whatever its score.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["GAP_POLICIES", "MEDIAN_SE_FACTOR", "CostMatrix", "CostModel", "Ranking",
           "Stability", "Thresholds", "cost_matrix", "pair_latency_kinds", "rank", "stability"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CostModel:
    """Weights of the cost terms, in milliseconds-of-RTT per unit of each metric.

    Defaults, and why:

    * ``rtt_p50_ms`` = 1.0 per ms of median RTT (ping and tcp connect): the unit of the cost.
    * ``rtt_p95_ms`` = 0.5 per ms of 95th-percentile RTT: the tail matters, but counts half
      since the median is already in.
    * ``loss_pct`` = 10.0 per % of packets lost: TCP throughput falls roughly with
      RTT × √loss, so at the RTTs of the WAN 1 % of loss hurts about as much as tens of ms.
    * ``handshake_p95_ms`` = 0.2 per ms of 95th-percentile SMTP/IMAP handshake: a handshake
      is some five round trips (connect, EHLO, STARTTLS, TLS, EHLO), mostly latency that the
      RTT terms already count; 0.2 counts about one more round trip plus server slowness.
    * ``failure_pct`` = 20.0 per % of failed records (of the latency and handshake kinds;
      traces do not count): a failure is worse than a lost packet, since the client sees an
      error.

    Latency terms come from ``latency_kinds``.  A pair (region, target) with no RTT of
    those kinds *of its own* takes them from ``fallback_kinds`` (the traces' destination
    RTT) instead: the choice is made per pair, from that pair's records only, so that
    adding or removing other pairs never changes this pair's figures.  The breakdown's
    ``latency_from`` column says which kinds each pair used.
    """

    rtt_p50_ms: float = 1.0
    rtt_p95_ms: float = 0.5
    loss_pct: float = 10.0
    handshake_p95_ms: float = 0.2
    failure_pct: float = 20.0
    latency_kinds: tuple[str, ...] = ("ping", "tcp")
    handshake_kinds: tuple[str, ...] = ("smtp", "imap")
    fallback_kinds: tuple[str, ...] = ("trace",)

    def __post_init__(self) -> None:
        for name in _TERMS:
            if getattr(self, name) < 0:
                raise ValueError(f"CostModel.{name} must be ≥ 0, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Service levels a data centre must meet from every region with a positive weight.

    ``None`` switches a threshold off.  Defaults: p95 handshake ≤ 1000 ms for each kind in
    ``handshake_kinds`` (SMTP: a client waiting more than a second per connection notices),
    loss ≤ 1 % (ping and tcp), and ≥ 99 % of records successful (the kinds of the cost
    model: ping, tcp, smtp, imap).
    """

    handshake_p95_ms: float | None = 1000.0
    handshake_kinds: tuple[str, ...] = ("smtp",)
    loss_pct: float | None = 1.0
    success_pct: float | None = 99.0
    #: (target, reason) pairs decided outside the measurements (mail readiness, see
    #: :mod:`netvantage.analysis.readiness`): every pair of such a target fails, with the reason.
    failing_targets: tuple[tuple[str, str], ...] = ()


_TERMS = ("rtt_p50_ms", "rtt_p95_ms", "loss_pct", "handshake_p95_ms", "failure_pct")


class Ranking(NamedTuple):
    """The result of :func:`rank`.

    ``table`` — one row per target, best first: target, score, score_lo, score_hi, score_se
    (the score's noise: the bootstrap replicates' standard deviation, or from the spread
    inside single records), ci_basis (what the interval rests on, or why there is none),
    p_best, rank, eligible (measured from every weighted region, or as the gap policy
    allows), meets_thresholds, fails (text: which threshold, where), regions (measured
    successfully), missing (weighted regions without a successful measurement: gaps).

    ``breakdown`` — one row per (region, target): weight, records, rtt_records (records with
    an RTT), latency_from (the kinds its latency terms use), the metrics (rtt_p50_ms,
    rtt_p95_ms, loss_pct, handshake_p95_ms, failure_pct), the cost of each term
    (cost_rtt_p50_ms, …), cost, weighted_cost (weight × cost), meets_thresholds, fails.
    """

    table: pd.DataFrame
    breakdown: pd.DataFrame


class Stability(NamedTuple):
    """The result of :func:`stability`.

    ``winner`` — the best target with the given weights.  ``dirichlet_share`` — the share of
    perturbed weightings under which it stays best.  ``wins`` — per target, the share of
    perturbed weightings it wins.  ``leave_one_out`` — per region left out (the others
    renormalised): the winner then, and whether it is the same.  ``leave_one_out_share`` —
    the share of those in which the winner stays.
    """

    winner: str | None
    dirichlet_share: float
    wins: pd.DataFrame
    leave_one_out: pd.DataFrame
    leave_one_out_share: float


# ---------------------------------------------------------------------------------------
# Metrics per (region, target), for the point estimate and for bootstrap replicates alike.


@dataclass(frozen=True, slots=True)
class _Strata:
    """Per (region, target, kind): the record-level arrays the metrics are made of."""

    rtt: dict[tuple[str, str, str], FloatArray]
    loss: dict[tuple[str, str, str], FloatArray]
    handshake: dict[tuple[str, str, str], FloatArray]
    ok: dict[tuple[str, str, str], FloatArray]


def _strata(measurements: pd.DataFrame) -> _Strata:
    missing = {"kind", "region", "target", "ok", "rtt_ms", "loss_ratio", "handshake_ms"} - set(
        measurements.columns
    )
    if missing:
        raise ValueError(f"measurements lack the columns {sorted(missing)}")
    rtt: dict[tuple[str, str, str], FloatArray] = {}
    loss: dict[tuple[str, str, str], FloatArray] = {}
    handshake: dict[tuple[str, str, str], FloatArray] = {}
    ok: dict[tuple[str, str, str], FloatArray] = {}
    frame = measurements[["region", "target", "kind", "ok", "rtt_ms", "loss_ratio",
                          "handshake_ms"]]
    for key, group in frame.groupby(["region", "target", "kind"], observed=True, sort=True):
        k = (str(key[0]), str(key[1]), str(key[2]))
        rtt[k] = group["rtt_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
        loss[k] = group["loss_ratio"].to_numpy(dtype=np.float64, na_value=np.nan)
        handshake[k] = group["handshake_ms"].to_numpy(dtype=np.float64, na_value=np.nan)
        ok[k] = np.asarray(group["ok"].astype("boolean").fillna(False), dtype=np.float64)
    return _Strata(rtt, loss, handshake, ok)


def _nanquantile(values: FloatArray, q: float) -> FloatArray:
    """Quantile along the last axis, NaN where a row has no finite value (no warning)."""
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanquantile(values, q, axis=-1), dtype=np.float64)


def _nanmean(values: FloatArray) -> FloatArray:
    if values.shape[-1] == 0:
        return np.full(values.shape[:-1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanmean(values, axis=-1), dtype=np.float64)


def pair_latency_kinds(strata: _Strata, region: str, target: str,
                       cost: CostModel) -> tuple[str, ...]:
    """The kinds the pair's latency terms come from: ``cost.latency_kinds`` if the pair has
    an RTT of those kinds, else ``cost.fallback_kinds`` (decided from this pair alone)."""
    for kind in cost.latency_kinds:
        values = strata.rtt.get((region, target, kind))
        if values is not None and np.isfinite(values).any():
            return cost.latency_kinds
    for kind in cost.fallback_kinds:
        values = strata.rtt.get((region, target, kind))
        if values is not None and np.isfinite(values).any():
            return cost.fallback_kinds
    return cost.latency_kinds


def _pair_metrics(
    strata: _Strata,
    region: str,
    target: str,
    cost: CostModel,
    thresholds: Thresholds,
    draws: Mapping[str, npt.NDArray[np.intp]] | None,
) -> dict[str, FloatArray]:
    """Metrics of one (region, target); each an array over replicates (length 1 if no draws).

    ``draws`` maps a kind to an index matrix (replicates × records of that kind).
    """

    def take(table: dict[tuple[str, str, str], FloatArray], kinds: tuple[str, ...]) -> FloatArray:
        parts = []
        for kind in kinds:
            values = table.get((region, target, kind))
            if values is None:
                continue
            parts.append(values[draws[kind]] if draws is not None else values[np.newaxis, :])
        if not parts:
            return np.empty((1 if draws is None else _n_rep(draws), 0))
        return np.concatenate(parts, axis=-1)

    # Failures count over the kinds a client's service uses; a trace that does not reach
    # the destination (ICMP filtered on the way) is not a failed service, unless the pair
    # has nothing but traces to stand for its latency.
    latency_kinds = pair_latency_kinds(strata, region, target, cost)
    served = (*cost.latency_kinds, *latency_kinds, *cost.handshake_kinds)
    kinds_here = tuple(sorted({k[2] for k in strata.ok
                               if k[0] == region and k[1] == target and k[2] in served}))
    latency = take(strata.rtt, latency_kinds)
    out = {
        "rtt_p50_ms": _nanquantile(latency, 0.50),
        "rtt_p95_ms": _nanquantile(latency, 0.95),
        "loss_pct": 100.0 * _nanmean(take(strata.loss, latency_kinds)),
        "handshake_p95_ms": _nanquantile(take(strata.handshake, cost.handshake_kinds), 0.95),
        "failure_pct": 100.0 * (1.0 - _nanmean(take(strata.ok, kinds_here))),
        "records": np.full(latency.shape[0], float(take(strata.ok, kinds_here).shape[-1])),
    }
    for kind in thresholds.handshake_kinds:
        out[f"handshake_p95_ms:{kind}"] = _nanquantile(take(strata.handshake, (kind,)), 0.95)
    return out


def _n_rep(draws: Mapping[str, npt.NDArray[np.intp]]) -> int:
    return next(iter(draws.values())).shape[0] if draws else 1


def _costs(metrics: Mapping[str, FloatArray], cost: CostModel,
           used: Mapping[str, bool]) -> dict[str, FloatArray]:
    """Cost per term; a term measured nowhere in the campaign costs 0 (it cannot separate)."""
    out: dict[str, FloatArray] = {}
    for term in _TERMS:
        value = metrics[term]
        out[term] = (getattr(cost, term) * value if used[term]
                     else np.zeros_like(value))
    return out


def _fails(metrics: Mapping[str, float], thresholds: Thresholds) -> list[str]:
    fails = []
    if thresholds.handshake_p95_ms is not None:
        for kind in thresholds.handshake_kinds:
            value = metrics.get(f"handshake_p95_ms:{kind}", np.nan)
            if np.isnan(value):
                fails.append(f"{kind} handshake p95 not measured")
            elif value > thresholds.handshake_p95_ms:
                fails.append(f"{kind} handshake p95 {value:.0f} ms > "
                             f"{thresholds.handshake_p95_ms:g} ms")
    if thresholds.loss_pct is not None and metrics["loss_pct"] > thresholds.loss_pct:
        fails.append(f"loss {metrics['loss_pct']:.1f} % > {thresholds.loss_pct:g} %")
    if thresholds.success_pct is not None:
        success = 100.0 - metrics["failure_pct"]
        if not success >= thresholds.success_pct:  # NaN (no records) fails too
            fails.append(f"success {success:.1f} % < {thresholds.success_pct:g} %")
    return fails


def _normalise(weights: Mapping[str, float]) -> dict[str, float]:
    bad = {r: w for r, w in weights.items() if not (w >= 0 and np.isfinite(w))}
    if bad:
        raise ValueError(f"weights must be finite and ≥ 0; got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("weights must have a positive sum: give each client region's share")
    return {str(r): float(w) / total for r, w in weights.items()}


@dataclass(frozen=True, slots=True)
class _Costed:
    """Point-estimate breakdown plus the cost matrix (regions × targets) for re-weighting."""

    breakdown: pd.DataFrame
    regions: list[str]
    targets: list[str]
    cost: FloatArray  # regions × targets, NaN where the pair has no successful measurement
    meets: npt.NDArray[np.bool_]  # regions × targets
    assumed: npt.NDArray[np.bool_]  # regions × targets: cost from an assumed RTT (no records)
    rtt_records: npt.NDArray[np.int64]  # regions × targets: records with an RTT


def _cost_table(measurements: pd.DataFrame, regions: list[str], cost: CostModel,
                thresholds: Thresholds, weights: Mapping[str, float],
                assumed: Mapping[tuple[str, str], float] | None = None) -> _Costed:
    strata = _strata(measurements)
    targets = sorted({k[1] for k in strata.ok})
    assumed = assumed or {}
    metrics = {(r, t): {k: float(v[0]) for k, v in
                        _pair_metrics(strata, r, t, cost, thresholds, None).items()}
               for r in regions for t in targets}
    used = {term: any(np.isfinite(m[term]) for m in metrics.values()) for term in _TERMS}
    rows = []
    matrix = np.full((len(regions), len(targets)), np.nan)
    meets = np.zeros((len(regions), len(targets)), dtype=bool)
    is_assumed = np.zeros((len(regions), len(targets)), dtype=bool)
    rtt_records = np.zeros((len(regions), len(targets)), dtype=np.int64)
    for i, r in enumerate(regions):
        for j, t in enumerate(targets):
            m = metrics[(r, t)]
            kinds = pair_latency_kinds(strata, r, t, cost)
            rtt_records[i, j] = sum(int(np.isfinite(strata.rtt[(r, t, k)]).sum())
                                    for k in kinds if (r, t, k) in strata.rtt)
            latency_from = "+".join(kinds)
            if rtt_records[i, j] == 0 and (r, t) in assumed:
                # The stated same-city policy: an access-network floor stands for the RTT.
                floor = float(assumed[(r, t)])
                m = {**m, "rtt_p50_ms": floor, "rtt_p95_ms": floor, "loss_pct": 0.0,
                     "failure_pct": 0.0}
                terms = {term: np.array([getattr(cost, term) * m[term]])
                         if term in ("rtt_p50_ms", "rtt_p95_ms") else np.zeros(1)
                         for term in _TERMS}
                total = float(sum(float(v[0]) for v in terms.values()))
                fails: list[str] = []
                matrix[i, j] = total
                is_assumed[i, j] = True
                latency_from = f"assumed {floor:g} ms (same city, not measured)"
            else:
                terms = _costs({k: np.array([v]) for k, v in m.items()}, cost, used)
                total = float(sum(float(v[0]) for v in terms.values()))
                fails = _fails(m, thresholds) if m["records"] > 0 else ["no records"]
                # A pair without a single RTT was not measured successfully: a gap, never a
                # cost made of its failures alone.
                matrix[i, j] = total if m["records"] > 0 and rtt_records[i, j] > 0 else np.nan
            fails = fails + [why for failing, why in thresholds.failing_targets if failing == t]
            meets[i, j] = not fails
            rows.append({
                "region": r, "target": t, "weight": weights[r], "records": int(m["records"]),
                "rtt_records": int(rtt_records[i, j]), "latency_from": latency_from,
                **{term: m[term] for term in _TERMS},
                **{f"cost_{term}": float(terms[term][0]) for term in _TERMS},
                "cost": matrix[i, j], "weighted_cost": weights[r] * matrix[i, j],
                "meets_thresholds": not fails, "fails": "; ".join(fails),
            })
    breakdown = pd.DataFrame(rows, columns=[
        "region", "target", "weight", "records", "rtt_records", "latency_from", *_TERMS,
        *(f"cost_{t}" for t in _TERMS), "cost", "weighted_cost", "meets_thresholds", "fails"])
    return _Costed(breakdown, regions, targets, matrix, meets, is_assumed, rtt_records)


#: What a candidate's gaps (weighted regions that never measured it successfully) do:
#: ``exclude`` — the candidate is not eligible to win (the default: coverage first);
#: ``skip`` — its score is over the regions that measured it, their weights renormalised;
#: ``worst`` — a gap costs the worst cost any candidate has in that region;
#: ``fail`` — ranking refuses to run while any weighted gap exists.
GAP_POLICIES = ("exclude", "skip", "worst", "fail")


def _check_gaps(gaps: str) -> None:
    if gaps not in GAP_POLICIES:
        raise ValueError(f"gaps must be one of {', '.join(GAP_POLICIES)}, not {gaps!r}")


def _scores(cost: FloatArray, wvec: FloatArray, gaps: str) -> FloatArray:
    """Scores (…, targets) of a cost array (…, regions, targets) under a gap policy.

    ``wvec`` holds the weights of the regions of ``cost``' second-to-last axis.
    """
    w = wvec[:, np.newaxis]
    gap = np.isnan(cost)
    with np.errstate(invalid="ignore", divide="ignore"):
        if gaps == "skip":
            covered = np.where(gap, 0.0, w)
            total = covered.sum(axis=-2)
            out = np.where(gap, 0.0, cost * w).sum(axis=-2) / total
            return np.asarray(np.where(total > 0, out, np.nan), dtype=np.float64)
        if gaps == "worst":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                worst = np.nanmax(cost, axis=-1, keepdims=True)
            cost = np.where(gap, worst, cost)
            gap = np.isnan(cost)
        out = np.where(gap, 0.0, cost * w).sum(axis=-2)
        return np.asarray(np.where(gap.any(axis=-2), np.nan, out), dtype=np.float64)


def _eligible(costed: _Costed, active: npt.NDArray[np.bool_], gaps: str
              ) -> npt.NDArray[np.bool_]:
    """Which candidates may win: measured from every weighted region (``exclude``), or from
    at least one of them under an explicit gap policy (``skip``, ``worst``)."""
    measured = ~np.isnan(costed.cost[active])
    if gaps in ("exclude", "fail"):
        return np.asarray(measured.all(axis=0) & (measured.shape[0] > 0), dtype=bool)
    return np.asarray(measured.any(axis=0), dtype=bool)


def _order(scores: FloatArray, meets: npt.NDArray[np.bool_],
           eligible: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.intp]:
    """Indices best first: eligible candidates, those meeting every threshold, then by score,
    NaN last."""
    key_score = np.where(np.isnan(scores), np.inf, scores)
    if eligible is None:
        eligible = np.ones(len(scores), dtype=bool)
    return np.lexsort((key_score, ~meets, ~(eligible & ~np.isnan(scores))))


def _meets(costed: _Costed, active: npt.NDArray[np.bool_], gaps: str
           ) -> npt.NDArray[np.bool_]:
    meets = costed.meets[active]
    if gaps in ("skip", "worst"):
        # A gap is judged by the gap policy, not as a failed threshold.
        meets = meets | np.isnan(costed.cost[active])
    return np.asarray(meets.all(axis=0), dtype=bool)


def rank(
    measurements: pd.DataFrame,
    weights: Mapping[str, float],
    *,
    cost: CostModel = CostModel(),  # frozen: a shared default is safe
    thresholds: Thresholds = Thresholds(),
    n_boot: int = 500,
    seed: int = 0,
    gaps: str = "exclude",
    assumed: Mapping[tuple[str, str], float] | None = None,
) -> Ranking:
    """Rank every target in ``measurements`` for clients spread as ``weights`` (region → share).

    Regions with weight 0 or absent from ``weights`` do not count (their rows are still in the
    breakdown when they have weight 0).  ``n_boot`` = 500 bootstrap replicates give the 95 %
    interval's ends to within about a percentile; ``n_boot=0`` skips the bootstrap.

    Coverage first: a candidate is ``eligible`` to win only when every weighted region
    measured it successfully (at least one RTT), unless ``gaps`` names another policy (see
    :data:`GAP_POLICIES`).  Ineligible candidates rank after every eligible one; with no
    eligible candidate there is no winner.  ``assumed`` maps (region, target) pairs without
    records of their own to an RTT in ms standing for them (the same-city access floor).

    The interval needs records to resample: a candidate with a weighted pair of fewer than
    two RTT records has none (NaN, ``ci_basis`` says why), and ``p_best`` is then NaN for
    every candidate (the replicates cannot compare them).  The random stream of each pair
    is seeded from ``seed`` and the pair, so other pairs never move a pair's replicates.
    """
    _check_gaps(gaps)
    w = _normalise(weights)
    regions = sorted(w)
    costed = _cost_table(measurements, regions, cost, thresholds, w, assumed)
    wvec = np.array([w[r] for r in regions])
    active = wvec > 0
    if gaps == "fail":
        gap_pairs = [f"{regions[i]} -> {t}" for j, t in enumerate(costed.targets)
                     for i in np.flatnonzero(active) if np.isnan(costed.cost[i, j])]
        if gap_pairs:
            raise ValueError(f"--gaps fail: {len(gap_pairs)} weighted pair(s) without a "
                             f"successful measurement: {', '.join(gap_pairs)}")
    scores = _scores(costed.cost[active], wvec[active], gaps)
    meets = _meets(costed, active, gaps)
    eligible = _eligible(costed, active, gaps)
    scores = np.where(eligible | (gaps == "exclude"), scores, np.nan)

    n_targets = len(costed.targets)
    lo = np.full(n_targets, np.nan)
    hi = np.full(n_targets, np.nan)
    se = np.full(n_targets, np.nan)
    p_best = np.full(n_targets, np.nan)
    measured = ~np.isnan(costed.cost[active]) & ~costed.assumed[active]
    few = (costed.rtt_records[active] < 2) & measured
    resampled = ~few.any(axis=0) & ~np.isnan(scores)
    basis = ["bootstrap of the records" if resampled[j] else
             "no score" if np.isnan(scores[j]) else
             "fewer than two records in some pair: no bootstrap interval"
             for j in range(n_targets)]
    if n_boot > 0 and costed.targets:
        act_regions = [r for r, a in zip(regions, active, strict=True) if a]
        boot = _bootstrap_scores(measurements, act_regions, wvec[active], costed, active,
                                 cost, thresholds, n_boot, seed, gaps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.where(resampled, np.nanpercentile(boot, 2.5, axis=0), np.nan)
            hi = np.where(resampled, np.nanpercentile(boot, 97.5, axis=0), np.nan)
            se = np.where(resampled, np.nanstd(boot, axis=0, ddof=1), np.nan)
        if resampled[eligible & ~np.isnan(scores)].all():
            filled = np.where(np.isnan(boot) | ~eligible, np.inf, boot)
            best = np.argmin(filled, axis=1)
            p_best = np.bincount(best, minlength=n_targets) / n_boot
            p_best[np.isnan(scores) | ~eligible] = np.nan
    se = np.where(np.isnan(se), _spread_se(measurements, costed, active, wvec, cost), se)

    order = _order(scores, meets, eligible)
    bd = costed.breakdown
    rows = []
    for position, j in enumerate(order, start=1):
        t = costed.targets[j]
        sub = bd[(bd["target"] == t) & (bd["weight"] > 0)]
        fails = [f"{row.region}: {row.fails}" for row in sub.itertuples()
                 if row.fails and not (gaps in ("skip", "worst") and pd.isna(row.cost))]
        gap_regions = list(sub.loc[sub["cost"].isna(), "region"])
        rows.append({
            "target": t, "score": scores[j], "score_lo": lo[j], "score_hi": hi[j],
            "score_se": se[j], "ci_basis": basis[j],
            "p_best": p_best[j], "rank": position, "eligible": bool(eligible[j]),
            "meets_thresholds": bool(meets[j]),
            "fails": "; ".join(fails), "regions": int(sub["cost"].notna().sum()),
            "missing": ", ".join(gap_regions),
        })
    table = pd.DataFrame(rows, columns=["target", "score", "score_lo", "score_hi", "score_se",
                                        "ci_basis", "p_best", "rank", "eligible",
                                        "meets_thresholds", "fails", "regions", "missing"])
    return Ranking(table, bd)


#: Standard error of a median, in units of σ/√n, for normally spread samples (√(π/2)).
MEDIAN_SE_FACTOR = 1.2533


def _spread_se(measurements: pd.DataFrame, costed: _Costed, active: npt.NDArray[np.bool_],
               wvec: FloatArray, cost: CostModel) -> FloatArray:
    """Noise of each score from the spread *inside* single records (no records to resample).

    A pair with one RTT record whose spread (``rtt_sd_ms``) and sample count
    (``rtt_samples``) are known has a median standard error of 1.2533 × sd / √n; the RTT
    terms weigh it by ``rtt_p50_ms + rtt_p95_ms``.  A score's noise is the root of the
    weighted squares over its pairs; NaN when any pair's spread is unknown.
    """
    out = np.full(len(costed.targets), np.nan)
    if "rtt_sd_ms" not in measurements.columns or "rtt_samples" not in measurements.columns:
        return out
    m = measurements[measurements["rtt_ms"].notna()]
    per: dict[tuple[str, str], tuple[int, float, float]] = {}
    for (r, t), group in m.groupby(["region", "target"], observed=True):
        samples = group["rtt_samples"].astype("Float64").iloc[0]
        per[(str(r), str(t))] = (len(group), float(group["rtt_sd_ms"].iloc[0]),
                                 np.nan if pd.isna(samples) else float(samples))
    for j, t in enumerate(costed.targets):
        total = 0.0
        for i in np.flatnonzero(active):
            if np.isnan(costed.cost[i, j]) or costed.assumed[i, j]:
                continue
            n, sd, n_samples = per.get((costed.regions[i], t), (0, np.nan, np.nan))
            if n != 1 or not np.isfinite(sd) or not n_samples >= 2:
                total = np.nan
                break
            pair_se = ((cost.rtt_p50_ms + cost.rtt_p95_ms) * MEDIAN_SE_FACTOR * sd
                       / np.sqrt(n_samples))
            total += float((wvec[i] * pair_se) ** 2)
        out[j] = np.sqrt(total) if np.isfinite(total) else np.nan
    return out


def _pair_rng(seed: int, region: str, target: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{region}\x1f{target}".encode())])


def _bootstrap_scores(measurements: pd.DataFrame, regions: list[str], wvec: FloatArray,
                      costed: _Costed, active: npt.NDArray[np.bool_], cost: CostModel,
                      thresholds: Thresholds, n_boot: int, seed: int, gaps: str) -> FloatArray:
    """Scores of ``n_boot`` replicates (replicates × targets), records resampled per stratum."""
    return _scores(_bootstrap_costs(measurements, regions, costed, active, cost, thresholds,
                                    n_boot, seed), wvec, gaps)


def _bootstrap_costs(measurements: pd.DataFrame, regions: list[str], costed: _Costed,
                     active: npt.NDArray[np.bool_], cost: CostModel, thresholds: Thresholds,
                     n_boot: int, seed: int) -> FloatArray:
    """Costs of ``n_boot`` replicates (replicates × ``regions`` × targets), records
    resampled per stratum; ``regions`` are those of ``costed`` where ``active``."""
    strata = _strata(measurements)
    targets = costed.targets
    per_pair: dict[tuple[str, str], dict[str, FloatArray]] = {}
    for r in regions:
        for t in targets:
            rng = _pair_rng(seed, r, t)
            kinds = sorted({k[2] for k in strata.ok if k[0] == r and k[1] == t})
            draws = {kind: rng.integers(0, len(strata.ok[(r, t, kind)]),
                                        size=(n_boot, len(strata.ok[(r, t, kind)])))
                     for kind in kinds}
            per_pair[(r, t)] = _pair_metrics(strata, r, t, cost, thresholds,
                                             draws if draws else None)
    # A term is used when measured somewhere at the point estimate; decided the same way here.
    used = {term: any(np.isfinite(m[term]).any() for m in per_pair.values()) for term in _TERMS}
    rows = np.flatnonzero(active)
    costs = np.full((n_boot, len(regions), len(targets)), np.nan)
    for i, r in enumerate(regions):
        for j, t in enumerate(targets):
            point = costed.cost[rows[i], j]
            if np.isnan(point):
                continue  # a gap at the point estimate stays a gap in every replicate
            if costed.assumed[rows[i], j]:
                costs[:, i, j] = point
                continue
            terms = _costs(per_pair[(r, t)], cost, used)
            total = np.zeros(n_boot)
            for term in _TERMS:
                # A replicate that drew no finite value of a term measured elsewhere keeps
                # the term NaN: that replicate says nothing about this target.
                total = total + np.broadcast_to(terms[term], (n_boot,))
            costs[:, i, j] = total
    return costs


def _winner(costed: _Costed, wvec: FloatArray, gaps: str = "exclude") -> str | None:
    """The first candidate, or None when no candidate is eligible with a score."""
    active = wvec > 0
    scores = _scores(costed.cost[active], wvec[active], gaps)
    eligible = _eligible(costed, active, gaps) & ~np.isnan(scores)
    if not eligible.any():
        return None
    return costed.targets[int(_order(scores, _meets(costed, active, gaps), eligible)[0])]


def stability(
    measurements: pd.DataFrame,
    weights: Mapping[str, float],
    *,
    cost: CostModel = CostModel(),
    thresholds: Thresholds = Thresholds(),
    n_draws: int = 1000,
    concentration: float = 50.0,
    seed: int = 0,
    gaps: str = "exclude",
    assumed: Mapping[tuple[str, str], float] | None = None,
) -> Stability:
    """How robust the winner is to the weights: Dirichlet perturbation and leave-one-region-out.

    Perturbed weights are drawn from Dirichlet(concentration × w) over the regions with a
    positive weight; their mean is w and each share's standard deviation is
    √(w(1−w)/(concentration+1)): with the default 50, a 0.45 share moves by about ±0.07,
    i.e. "the mix is known to some ±15 %".  Costs are the point estimates (this is about
    the weights, not the sampling noise: see ``p_best`` in :func:`rank` for that).

    With no eligible candidate (see :func:`rank`) ``winner`` is None and the shares are NaN:
    nothing stays first.
    """
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, not {concentration}")
    _check_gaps(gaps)
    w = _normalise(weights)
    regions = sorted(w)
    costed = _cost_table(measurements, regions, cost, thresholds, w, assumed)
    if not costed.targets:
        raise ValueError("measurements hold no target to rank")
    wvec = np.array([w[r] for r in regions])
    winner = _winner(costed, wvec, gaps)
    if winner is None:
        return Stability(winner=None, dirichlet_share=float("nan"),
                         wins=pd.DataFrame({"target": costed.targets,
                                            "share": [float("nan")] * len(costed.targets)}),
                         leave_one_out=pd.DataFrame(columns=["left_out", "winner", "same"]),
                         leave_one_out_share=float("nan"))

    active = np.flatnonzero(wvec > 0)
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(concentration * wvec[active], size=n_draws)
    counts = dict.fromkeys(costed.targets, 0)
    for draw in draws:
        perturbed = np.zeros_like(wvec)
        perturbed[active] = draw
        other = _winner(costed, perturbed, gaps)
        if other is not None:
            counts[other] += 1
    wins = pd.DataFrame({"target": list(counts),
                         "share": [c / n_draws for c in counts.values()]})
    wins = wins.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)

    loo_rows = []
    for i in active:
        if len(active) < 2:
            break
        left = wvec.copy()
        left[i] = 0.0
        left = left / left.sum()
        other = _winner(costed, left, gaps)
        loo_rows.append({"left_out": regions[i], "winner": other, "same": other == winner})
    loo = pd.DataFrame(loo_rows, columns=["left_out", "winner", "same"])
    return Stability(
        winner=winner,
        dirichlet_share=counts[winner] / n_draws if n_draws else float("nan"),
        wins=wins,
        leave_one_out=loo,
        leave_one_out_share=float(loo["same"].mean()) if len(loo) else float("nan"),
    )


class CostMatrix(NamedTuple):
    """The costs :func:`rank` scores, as a matrix: what :mod:`.place` builds on.

    ``cost`` — regions × targets, the point cost of each pair (ms-equivalents), NaN where
    the pair has no successful measurement (a gap: never a cost made of failures alone).
    ``meets`` — regions × targets, the pair meets every :class:`Thresholds` service level.
    ``assumed`` — the pair's cost stands on an assumed same-city RTT (no records).
    ``rtt_records`` — records with an RTT behind each pair.
    ``replicates`` — bootstrap replicates × regions × targets (the very replicates whose
    weighted sums are :func:`rank`'s bootstrap scores; NaN where a replicate drew nothing
    of a term, and at every gap), or None when ``n_boot`` is 0.
    ``breakdown`` — :func:`rank`'s breakdown of the same pairs (weight 1 for every region).
    """

    regions: list[str]
    targets: list[str]
    cost: FloatArray
    meets: npt.NDArray[np.bool_]
    assumed: npt.NDArray[np.bool_]
    rtt_records: npt.NDArray[np.int64]
    replicates: FloatArray | None
    breakdown: pd.DataFrame


def cost_matrix(
    measurements: pd.DataFrame,
    regions: list[str],
    *,
    cost: CostModel = CostModel(),
    thresholds: Thresholds = Thresholds(),
    n_boot: int = 500,
    seed: int = 0,
    assumed: Mapping[tuple[str, str], float] | None = None,
) -> CostMatrix:
    """The per-(region, target) costs and their bootstrap replicates, as :func:`rank` computes
    them for ``regions`` (in that order): ``rank(m, w).table["score"]`` is ``w @ cost`` for
    the eligible targets, and its replicates ``w @ replicates`` — the same records, the same
    seeded draws.  This is the narrow interface placement (:mod:`.place`) relies on."""
    regions = [str(r) for r in regions]
    costed = _cost_table(measurements, regions, cost, thresholds, dict.fromkeys(regions, 1.0),
                         assumed)
    replicates = None
    if n_boot > 0 and costed.targets and regions:
        replicates = _bootstrap_costs(measurements, regions, costed,
                                      np.ones(len(regions), dtype=bool), cost, thresholds,
                                      n_boot, seed)
    return CostMatrix(costed.regions, costed.targets, costed.cost, costed.meets,
                      costed.assumed, costed.rtt_records, replicates, costed.breakdown)
