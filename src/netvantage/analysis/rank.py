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
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from .fastagg import group_quantiles, replicate_quantiles

__all__ = ["GAP_POLICIES", "MEDIAN_SE_FACTOR", "CostMatrix", "CostModel", "PairCosts",
           "Ranking", "Stability", "Thresholds", "bias_corrected", "cost_matrix",
           "pair_latency_kinds", "rank", "stability"]

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
    """Per (region, target, kind): the record-level arrays the metrics are made of.

    Built from one sort of the records by their key codes (Categorical codes as they are,
    other keys factorized once): ``rtt`` … ``ok`` are views into the sorted arrays, one
    per stratum; ``kinds`` lists each (region, target)'s kinds; the ``*_code`` arrays and
    the ``*_names`` lists keep the sorted records flat for the vectorised point estimates.
    """

    rtt: dict[tuple[str, str, str], FloatArray]
    loss: dict[tuple[str, str, str], FloatArray]
    handshake: dict[tuple[str, str, str], FloatArray]
    ok: dict[tuple[str, str, str], FloatArray]
    kinds: dict[tuple[str, str], tuple[str, ...]]
    region_code: npt.NDArray[np.int64]
    target_code: npt.NDArray[np.int64]
    kind_code: npt.NDArray[np.int64]
    region_names: list[str]
    target_names: list[str]
    kind_names: list[str]
    rtt_all: FloatArray
    loss_all: FloatArray
    handshake_all: FloatArray
    ok_all: FloatArray


def _key_codes(column: pd.Series) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Integer codes (−1 = missing) and the names (str) they stand for."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return (np.asarray(column.cat.codes.to_numpy(), dtype=np.int64),
                [str(c) for c in column.cat.categories])
    codes, uniques = pd.factorize(column, sort=False, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [str(u) for u in uniques]


def _strata(measurements: pd.DataFrame) -> _Strata:
    missing = {"kind", "region", "target", "ok", "rtt_ms", "loss_ratio", "handshake_ms"} - set(
        measurements.columns
    )
    if missing:
        raise ValueError(f"measurements lack the columns {sorted(missing)}")
    rc, rnames = _key_codes(measurements["region"])
    tc, tnames = _key_codes(measurements["target"])
    kc, knames = _key_codes(measurements["kind"])
    nt, nk = max(len(tnames), 1), max(len(knames), 1)
    valid = np.flatnonzero((rc >= 0) & (tc >= 0) & (kc >= 0))
    combined = (rc[valid] * nt + tc[valid]) * nk + kc[valid]
    by_key = np.argsort(combined, kind="stable")
    order = valid[by_key]
    combined = combined[by_key]

    def column(name: str) -> FloatArray:
        return measurements[name].to_numpy(dtype=np.float64, na_value=np.nan)[order]

    rtt_all, loss_all, hs_all = column("rtt_ms"), column("loss_ratio"), column("handshake_ms")
    ok_all = np.asarray(measurements["ok"].astype("boolean").fillna(False).to_numpy(
        dtype=bool), dtype=np.float64)[order]
    cuts = np.flatnonzero(np.diff(combined)) + 1
    starts = np.concatenate([[0], cuts]).astype(np.int64) if len(combined) else cuts
    ends = np.concatenate([cuts, [len(combined)]]).astype(np.int64) if len(combined) else cuts
    rtt: dict[tuple[str, str, str], FloatArray] = {}
    loss: dict[tuple[str, str, str], FloatArray] = {}
    handshake: dict[tuple[str, str, str], FloatArray] = {}
    ok: dict[tuple[str, str, str], FloatArray] = {}
    kinds: dict[tuple[str, str], list[str]] = {}
    for s, e, code in zip(starts.tolist(), ends.tolist(), combined[starts].tolist(),
                          strict=True):
        pair_code, k = divmod(code, nk)
        r, t = divmod(pair_code, nt)
        key = (rnames[r], tnames[t], knames[k])
        rtt[key], loss[key] = rtt_all[s:e], loss_all[s:e]
        handshake[key], ok[key] = hs_all[s:e], ok_all[s:e]
        kinds.setdefault((key[0], key[1]), []).append(key[2])
    return _Strata(rtt, loss, handshake, ok,
                   {pair: tuple(sorted(ks)) for pair, ks in kinds.items()},
                   rc[order], tc[order], kc[order], rnames, tnames, knames,
                   rtt_all, loss_all, hs_all, ok_all)


def _group_mean(group: npt.NDArray[np.int64], values: FloatArray, n: int) -> FloatArray:
    """Mean of the non-NaN values per group code (NaN for a group without one)."""
    keep = ~np.isnan(values)
    total = np.bincount(group[keep], weights=values[keep], minlength=n)
    count = np.bincount(group[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan),
                          dtype=np.float64)


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


@dataclass(frozen=True, slots=True)
class _Point:
    """Point metrics of every (region, target) at once: each a regions × targets array."""

    metrics: dict[str, FloatArray]
    latency: npt.NDArray[np.bool_]  # the pair's latency terms use cost.latency_kinds
    rtt_records: npt.NDArray[np.int64]


def _point_metrics(strata: _Strata, regions: list[str], targets: list[str],
                   cost: CostModel, thresholds: Thresholds) -> _Point:
    """The metrics of every pair in one vectorised pass over the sorted records.

    The same rules as a pair at a time: latency terms from ``cost.latency_kinds`` when the
    pair has an RTT of those kinds, else from ``cost.fallback_kinds`` when it has one of
    those (:func:`pair_latency_kinds`); failures over the kinds a client's service uses
    (the latency kinds, the kinds the pair's latency comes from, the handshake kinds).
    """
    n_r, n_t = len(regions), len(targets)
    n = n_r * n_t
    r_index = {r: i for i, r in enumerate(regions)}
    t_index = {t: j for j, t in enumerate(targets)}
    r_of = np.array([r_index.get(r, -1) for r in strata.region_names] or [-1], dtype=np.int64)
    t_of = np.array([t_index.get(t, -1) for t in strata.target_names] or [-1], dtype=np.int64)
    ri, ti = r_of[strata.region_code], t_of[strata.target_code]
    keep = (ri >= 0) & (ti >= 0)
    pair = (ri * n_t + ti)[keep]
    kind = strata.kind_code[keep]
    rtt, loss = strata.rtt_all[keep], strata.loss_all[keep]
    hs, ok = strata.handshake_all[keep], strata.ok_all[keep]

    def of_kinds(kinds: tuple[str, ...]) -> npt.NDArray[np.bool_]:
        flags = np.array([k in kinds for k in strata.kind_names] or [False], dtype=bool)
        return np.asarray(flags[kind], dtype=bool)

    is_lat, is_fb, is_hs = (of_kinds(cost.latency_kinds), of_kinds(cost.fallback_kinds),
                            of_kinds(cost.handshake_kinds))
    finite = ~np.isnan(rtt)
    has_lat = np.bincount(pair[is_lat & finite], minlength=n) > 0
    has_fb = np.bincount(pair[is_fb & finite], minlength=n) > 0
    latency = has_lat | ~has_fb
    chosen = np.where(latency[pair], is_lat, is_fb)
    served = is_lat | chosen | is_hs
    rtt_q = group_quantiles(pair[chosen], rtt[chosen], n, (0.50, 0.95))
    with np.errstate(invalid="ignore", divide="ignore"):
        records = np.bincount(pair[served], minlength=n).astype(np.float64)
        ok_sum = np.bincount(pair[served], weights=ok[served], minlength=n)
        failure = np.where(records > 0, 100.0 * (1.0 - ok_sum / np.maximum(records, 1)),
                           np.nan)
    out = {
        "rtt_p50_ms": rtt_q[:, 0],
        "rtt_p95_ms": rtt_q[:, 1],
        "loss_pct": 100.0 * _group_mean(pair[chosen], loss[chosen], n),
        "handshake_p95_ms": group_quantiles(pair[is_hs], hs[is_hs], n, (0.95,))[:, 0],
        "failure_pct": failure,
        "records": records,
    }
    for k in thresholds.handshake_kinds:
        these = of_kinds((k,))
        out[f"handshake_p95_ms:{k}"] = group_quantiles(pair[these], hs[these], n, (0.95,))[:, 0]
    rtt_records = np.bincount(pair[chosen & finite], minlength=n).astype(np.int64)
    return _Point({k: v.reshape(n_r, n_t) for k, v in out.items()}, latency.reshape(n_r, n_t),
                  rtt_records.reshape(n_r, n_t))


def _drawn(parts: list[tuple[FloatArray, npt.NDArray[np.int64]]], n_boot: int
           ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """The finite values of a pair's strata, sorted, and how many times each replicate drew
    each of them (replicates × values): a bootstrap draw as counts.  ``parts`` are the
    strata's values and their draw counts (replicates × records, :func:`_draw_counts`)."""
    if not parts:
        return np.empty(0), np.zeros((n_boot, 0), dtype=np.int64)
    values = np.concatenate([v for v, _ in parts])
    finite = np.flatnonzero(~np.isnan(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    counts = parts[0][1] if len(parts) == 1 else np.concatenate([c for _, c in parts], axis=1)
    # C order, as a fresh bincount gives: the BLAS product of _replicate_mean sums in the
    # same order (indexing columns returns Fortran order, which sums differently).
    return values[order], np.take(counts, order, axis=1)


def _draw_counts(rng: np.random.Generator, n: int, n_boot: int) -> npt.NDArray[np.int64]:
    """``n_boot`` draws of ``n`` records with replacement (uniform indices, one call to the
    pair's stream) as counts per record (replicates × records): one count matrix per
    stratum serves every metric of the pair."""
    drawn = rng.integers(0, n, size=(n_boot, n))
    drawn += (np.arange(n_boot) * n)[:, np.newaxis]  # in place: no second B × n array
    return np.bincount(drawn.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def _replicate_mean(values: FloatArray, weights: npt.NDArray[np.int64]) -> FloatArray:
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = weights.astype(np.float64) @ values if len(values) else np.zeros(len(total))
        return np.asarray(np.where(total > 0, sums / np.maximum(total, 1), np.nan),
                          dtype=np.float64)


def _replicate_metrics(strata: _Strata, region: str, target: str, latency_kinds: tuple[str, ...],
                       cost: CostModel, draws: Mapping[str, npt.NDArray[np.int64]],
                       n_boot: int) -> dict[str, FloatArray]:
    """The cost terms' metrics of one pair in each bootstrap replicate (arrays of n_boot).

    ``draws`` maps a kind to its draw counts (replicates × records of that kind); each
    metric is computed from the drawn records as the point estimate is from all of them.
    """

    def parts(table: dict[tuple[str, str, str], FloatArray], kinds: tuple[str, ...]
              ) -> list[tuple[FloatArray, npt.NDArray[np.int64]]]:
        return [(table[(region, target, k)], draws[k]) for k in kinds
                if (region, target, k) in table]

    kinds_here = _served(strata, region, target, latency_kinds, cost)
    values, weights = _drawn(parts(strata.rtt, latency_kinds), n_boot)
    rtt_q = replicate_quantiles(values, weights, (0.50, 0.95))
    loss_values, loss_weights = _drawn(parts(strata.loss, latency_kinds), n_boot)
    hs_values, hs_weights = _drawn(parts(strata.handshake, cost.handshake_kinds), n_boot)
    return {
        "rtt_p50_ms": rtt_q[:, 0],
        "rtt_p95_ms": rtt_q[:, 1],
        "loss_pct": 100.0 * _replicate_mean(loss_values, loss_weights),
        "handshake_p95_ms": replicate_quantiles(hs_values, hs_weights, (0.95,))[:, 0],
        "failure_pct": 100.0 * (1.0 - _replicate_share(parts(strata.ok, kinds_here), n_boot)),
    }


def _served(strata: _Strata, region: str, target: str, latency_kinds: tuple[str, ...],
            cost: CostModel) -> tuple[str, ...]:
    """The pair's kinds a client's service uses (its failures count): the latency kinds,
    the kinds its latency comes from, the handshake kinds."""
    served = (*cost.latency_kinds, *latency_kinds, *cost.handshake_kinds)
    return tuple(k for k in strata.kinds.get((region, target), ()) if k in served)


def _replicate_share(parts: list[tuple[FloatArray, npt.NDArray[np.int64]]], n_boot: int
                     ) -> FloatArray:
    """:func:`_replicate_mean` of 0/1 values (records' ``ok``) and their draw counts,
    without sorting them: every sum is of whole numbers below 2**53, exact in any order,
    so the figures are those of the product of :func:`_drawn`'s sorted columns."""
    if not parts:
        return np.full(n_boot, np.nan)
    misses = np.zeros(n_boot, dtype=np.int64)
    total = np.zeros(n_boot, dtype=np.int64)
    for values, counts in parts:
        # Most records succeed: the few failed ones' columns are summed, not the rest.
        failed = np.flatnonzero(values != 1.0)
        if len(failed):
            misses += counts[:, failed].sum(axis=1)
        total += counts.shape[1]  # each replicate draws as many records as there are
    hits = total - misses
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(total > 0, hits.astype(np.float64) / np.maximum(total, 1),
                                   np.nan), dtype=np.float64)


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
    point: _Point  # every pair's point metrics (regions × targets)
    strata: _Strata  # the records per (region, target, kind), for the bootstrap


def _cost_table(measurements: pd.DataFrame, regions: list[str], cost: CostModel,
                thresholds: Thresholds, weights: Mapping[str, float],
                assumed: Mapping[tuple[str, str], float] | None = None,
                strata: _Strata | None = None) -> _Costed:
    """The point costs of ``regions`` × every target (``strata``: the records' strata when
    already built from ``measurements``)."""
    if strata is None:
        strata = _strata(measurements)
    targets = sorted({pair[1] for pair in strata.kinds})
    assumed = assumed or {}
    point = _point_metrics(strata, regions, targets, cost, thresholds)
    used = {term: bool(np.isfinite(point.metrics[term]).any()) for term in _TERMS}
    n_r, n_t = len(regions), len(targets)
    rtt_records = point.rtt_records.copy()
    metrics = {k: v.copy() for k, v in point.metrics.items()}
    # The stated same-city policy: an access-network floor stands for a pair's RTT when
    # the pair has no RTT of its own.
    is_assumed = np.zeros((n_r, n_t), dtype=bool)
    floor = np.full((n_r, n_t), np.nan)
    r_index = {r: i for i, r in enumerate(regions)}
    t_index = {t: j for j, t in enumerate(targets)}
    for (r, t), stated_ms in assumed.items():
        i, j = r_index.get(r), t_index.get(t)
        if i is not None and j is not None and rtt_records[i, j] == 0:
            is_assumed[i, j] = True
            floor[i, j] = float(stated_ms)
    for k in ("rtt_p50_ms", "rtt_p95_ms"):
        metrics[k] = np.where(is_assumed, floor, metrics[k])
    for k in ("loss_pct", "failure_pct"):
        metrics[k] = np.where(is_assumed, 0.0, metrics[k])
    terms = {}
    for term in _TERMS:
        measured = (getattr(cost, term) * point.metrics[term] if used[term]
                    else np.zeros((n_r, n_t)))
        stated = (getattr(cost, term) * floor if term in ("rtt_p50_ms", "rtt_p95_ms")
                  else np.zeros((n_r, n_t)))
        terms[term] = np.where(is_assumed, stated, measured)
    total = np.zeros((n_r, n_t))
    for term in _TERMS:
        total = total + terms[term]
    records = metrics["records"]
    # A pair without a single RTT was not measured successfully: a gap, never a cost made
    # of its failures alone.
    matrix = np.where(is_assumed | ((records > 0) & (rtt_records > 0)), total, np.nan)
    # Which thresholds fail, in words: only for the pairs some test could fail.
    failing_targets: dict[str, list[str]] = {}
    for failing, why in thresholds.failing_targets:
        failing_targets.setdefault(failing, []).append(why)
    with np.errstate(invalid="ignore"):
        maybe = records <= 0
        if thresholds.handshake_p95_ms is not None:
            for kind in thresholds.handshake_kinds:
                p95 = metrics.get(f"handshake_p95_ms:{kind}", np.full((n_r, n_t), np.nan))
                maybe |= np.isnan(p95) | (p95 > thresholds.handshake_p95_ms)
        if thresholds.loss_pct is not None:
            maybe |= metrics["loss_pct"] > thresholds.loss_pct
        if thresholds.success_pct is not None:
            maybe |= ~(100.0 - metrics["failure_pct"] >= thresholds.success_pct)
    maybe &= ~is_assumed
    maybe |= np.isin(np.asarray(targets, dtype=object), list(failing_targets))[np.newaxis, :]
    fails_text = np.full((n_r, n_t), "", dtype=object)
    meets = np.ones((n_r, n_t), dtype=bool)
    names = list(metrics)
    for i, j in zip(*np.nonzero(maybe), strict=True):
        fails: list[str] = []
        if not is_assumed[i, j]:
            m = {k: float(metrics[k][i, j]) for k in names}
            fails = _fails(m, thresholds) if m["records"] > 0 else ["no records"]
        fails = fails + failing_targets.get(targets[j], [])
        meets[i, j] = not fails
        fails_text[i, j] = "; ".join(fails)
    latency_text = np.where(point.latency, "+".join(cost.latency_kinds),
                            "+".join(cost.fallback_kinds)).astype(object)
    for i, j in zip(*np.nonzero(is_assumed), strict=True):
        latency_text[i, j] = f"assumed {floor[i, j]:g} ms (same city, not measured)"
    weight = np.repeat(np.array([weights[r] for r in regions], dtype=np.float64), n_t)
    columns: dict[str, Any] = {
        "region": [r for r in regions for _ in targets],
        "target": [t for _ in regions for t in targets],
        "weight": weight,
        "records": records.ravel().astype(np.int64),
        "rtt_records": rtt_records.ravel().astype(np.int64),
        "latency_from": latency_text.ravel().tolist(),
        **{term: metrics[term].ravel() for term in _TERMS},
        **{f"cost_{term}": terms[term].ravel() for term in _TERMS},
        "cost": matrix.ravel(), "weighted_cost": weight * matrix.ravel(),
        "meets_thresholds": meets.ravel(), "fails": fails_text.ravel().tolist(),
    }
    breakdown = pd.DataFrame(columns)
    return _Costed(breakdown, regions, targets, matrix, meets, is_assumed, rtt_records,
                   point, strata)


class PairCosts:
    """The per-pair cost tables of one ``measurements`` frame under one cost model,
    thresholds and assumed same-city RTTs, each built once and handed to every function
    that needs it (``pair_costs=``: :func:`rank`, :func:`stability`, :func:`cost_matrix`,
    :func:`netvantage.analysis.mix.mixes`).

    ``analyse`` ranks the same records for the same regions three times (the ranking, its
    stability, the given mix) and for every region once more (the mixes' lines): the sort
    of the records into strata (:func:`_strata`) is made once, and the cost table of a
    set of regions and weights once per set.  The functions compute exactly what they do
    without it (the same code on the same inputs); they refuse a ``PairCosts`` built from
    other records or another model, which would give other figures.  The tables are
    read-only: nothing here or in the callers writes into them.
    """

    def __init__(self, measurements: pd.DataFrame, *, cost: CostModel = CostModel(),
                 thresholds: Thresholds = Thresholds(),
                 assumed: Mapping[tuple[str, str], float] | None = None) -> None:
        self.measurements = measurements
        self.cost = cost
        self.thresholds = thresholds
        self.assumed = dict(assumed or {})
        self._strata: _Strata | None = None
        self._tables: dict[tuple[tuple[str, ...], tuple[float, ...]], _Costed] = {}
        self._spreads: tuple[_Spreads | None] | None = None

    def spreads(self) -> _Spreads | None:
        """:func:`_record_spreads` of the measurements, computed on the first call."""
        if self._spreads is None:
            self._spreads = (_record_spreads(self.measurements),)
        return self._spreads[0]

    def table(self, measurements: pd.DataFrame, regions: list[str], cost: CostModel,
              thresholds: Thresholds, weights: Mapping[str, float],
              assumed: Mapping[tuple[str, str], float] | None) -> _Costed:
        """:func:`_cost_table` of these arguments, built on the first call with them."""
        if (measurements is not self.measurements or cost != self.cost
                or thresholds != self.thresholds or dict(assumed or {}) != self.assumed):
            raise ValueError("pair_costs were built from other measurements, cost model, "
                             "thresholds or assumed RTTs than those given")
        key = (tuple(regions), tuple(float(weights[r]) for r in regions))
        if key not in self._tables:
            if self._strata is None:
                self._strata = _strata(measurements)
            self._tables[key] = _cost_table(measurements, regions, cost, thresholds, weights,
                                            assumed, self._strata)
        return self._tables[key]


def _costed(measurements: pd.DataFrame, regions: list[str], cost: CostModel,
            thresholds: Thresholds, weights: Mapping[str, float],
            assumed: Mapping[tuple[str, str], float] | None,
            pair_costs: PairCosts | None) -> _Costed:
    """The cost table, from ``pair_costs`` when given (built there once), else built here."""
    if pair_costs is None:
        return _cost_table(measurements, regions, cost, thresholds, weights, assumed)
    return pair_costs.table(measurements, regions, cost, thresholds, weights, assumed)


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
    pair_costs: PairCosts | None = None,
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
    ``pair_costs`` (built from the same arguments) spares rebuilding the cost table.
    """
    _check_gaps(gaps)
    w = _normalise(weights)
    regions = sorted(w)
    costed = _costed(measurements, regions, cost, thresholds, w, assumed, pair_costs)
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
    # Nothing resampled: every interval and p_best would be NaN; no replicate is drawn.
    if n_boot > 0 and costed.targets and resampled.any():
        act_regions = [r for r, a in zip(regions, active, strict=True) if a]
        boot = _bootstrap_scores(measurements, act_regions, wvec[active], costed, active,
                                 cost, thresholds, n_boot, seed, gaps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boot, bias = bias_corrected(boot, scores, resampled)
            basis = [f"{b}, bias-corrected: the replicates averaged {bias[j]:+.1f} from the "
                     "score (upper quantiles of few records), the interval re-centred"
                     if not np.isnan(bias[j]) else b for j, b in enumerate(basis)]
            lo = np.where(resampled, np.nanpercentile(boot, 2.5, axis=0), np.nan)
            hi = np.where(resampled, np.nanpercentile(boot, 97.5, axis=0), np.nan)
            se = np.where(resampled, np.nanstd(boot, axis=0, ddof=1), np.nan)
        if resampled[eligible & ~np.isnan(scores)].all():
            filled = np.where(np.isnan(boot) | ~eligible, np.inf, boot)
            best = np.argmin(filled, axis=1)
            p_best = np.bincount(best, minlength=n_targets) / n_boot
            p_best[np.isnan(scores) | ~eligible] = np.nan
    if np.isnan(se).any():  # the records' own spreads only where the bootstrap gave none
        spreads = pair_costs.spreads() if pair_costs is not None else None
        se = np.where(np.isnan(se), _spread_se(measurements, costed, active, wvec, cost,
                                               spreads), se)

    order = _order(scores, meets, eligible)
    bd = costed.breakdown
    weighted: dict[str, pd.DataFrame] = {
        str(t): g for t, g in bd[bd["weight"] > 0].groupby("target", sort=False)}
    empty = bd.iloc[:0]
    rows = []
    for position, j in enumerate(order, start=1):
        t = costed.targets[j]
        sub = weighted.get(t, empty)
        fails = [f"{region}: {fail}" for region, fail, pair_cost in
                 zip(sub["region"].tolist(), sub["fails"].tolist(), sub["cost"].tolist(),
                     strict=True)
                 if fail and not (gaps in ("skip", "worst") and np.isnan(pair_cost))]
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
               wvec: FloatArray, cost: CostModel, spreads: _Spreads | None = None
               ) -> FloatArray:
    """Noise of each score from the spread *inside* single records (no records to resample).

    A pair with one RTT record whose spread (``rtt_sd_ms``) and sample count
    (``rtt_samples``) are known has a median standard error of 1.2533 × sd / √n; the RTT
    terms weigh it by ``rtt_p50_ms + rtt_p95_ms``.  A score's noise is the root of the
    weighted squares over its pairs; NaN when any pair's spread is unknown.
    """
    out = np.full(len(costed.targets), np.nan)
    per = _record_spreads(measurements) if spreads is None else spreads
    if per is None:
        return out
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


_Spreads = dict[tuple[str, str], tuple[int, float, float]]


def _record_spreads(measurements: pd.DataFrame) -> _Spreads | None:
    """Per (region, target): its RTT records, and the spread and sample count of its first
    one (:func:`_spread_se`); None when the records carry no spreads."""
    if "rtt_sd_ms" not in measurements.columns or "rtt_samples" not in measurements.columns:
        return None
    m = measurements.loc[measurements["rtt_ms"].notna(), ["region", "target", "rtt_sd_ms",
                                                           "rtt_samples"]]
    m = m[m["region"].notna() & m["target"].notna()]
    # Per pair: its RTT records, and the spread and sample count of its first one.
    first = m[~m.duplicated(["region", "target"])]
    sizes = m.groupby(["region", "target"], observed=True, sort=False).size()
    size_of = {(str(r), str(t)): int(n) for r, t, n in zip(
        sizes.index.get_level_values(0), sizes.index.get_level_values(1), sizes.to_numpy(),
        strict=True)}
    per: dict[tuple[str, str], tuple[int, float, float]] = {
        (str(r), str(t)): (size_of[(str(r), str(t))], float(sd),
                           np.nan if pd.isna(n) else float(n))
        for r, t, sd, n in zip(first["region"], first["target"],
                               first["rtt_sd_ms"].to_numpy(dtype=np.float64, na_value=np.nan),
                               first["rtt_samples"].astype("Float64"), strict=True)}
    return per


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
    resampled per stratum; ``regions`` are those of ``costed`` where ``active``.

    Each pair draws its records from its own random stream (:func:`_pair_rng`: every kind
    of the pair, in sorted order, ``n_boot`` × its records); the replicates' metrics come
    from the draws as counts (:func:`_drawn`), their quantiles by order statistics
    (:func:`netvantage.analysis.fastagg.replicate_quantiles`): no per-replicate loop and no
    sort per replicate.  Only pairs whose cost counts are drawn: a gap at the point estimate
    stays a gap in every replicate, an assumed cost stays the same.
    """
    strata = costed.strata
    targets = costed.targets
    rows = np.flatnonzero(active)
    # A term is used when measured somewhere among the weighted regions (its point
    # estimate finite for some pair): the replicates, drawn from the same records, agree.
    used = {term: bool(np.isfinite(costed.point.metrics[term][rows]).any()) for term in _TERMS}
    costs = np.full((n_boot, len(regions), len(targets)), np.nan)
    for i, r in enumerate(regions):
        for j, t in enumerate(targets):
            point = costed.cost[rows[i], j]
            if np.isnan(point):
                continue  # a gap at the point estimate stays a gap in every replicate
            if costed.assumed[rows[i], j]:
                costs[:, i, j] = point
                continue
            rng = _pair_rng(seed, r, t)
            kinds = strata.kinds.get((r, t), ())
            latency_kinds = (cost.latency_kinds if costed.point.latency[rows[i], j]
                             else cost.fallback_kinds)
            # The kinds are drawn in sorted order from the pair's stream; those after the
            # last kind a metric uses (the traces, mostly) are not drawn: what is drawn
            # before them is the same.
            used_kinds = _served(strata, r, t, latency_kinds, cost)
            last = max((kinds.index(k) for k in used_kinds), default=-1)
            draws = {kind: _draw_counts(rng, len(strata.ok[(r, t, kind)]), n_boot)
                     for kind in kinds[:last + 1]}
            terms = _costs(_replicate_metrics(strata, r, t, latency_kinds, cost, draws, n_boot),
                           cost, used)
            total = np.zeros(n_boot)
            for term in _TERMS:
                # A replicate that drew no finite value of a term measured elsewhere keeps
                # the term NaN: that replicate says nothing about this target.
                total = total + np.broadcast_to(terms[term], (n_boot,))
            costs[:, i, j] = total
    return costs


def bias_corrected(boot: FloatArray, scores: FloatArray, resampled: npt.NDArray[np.bool_]
                   ) -> tuple[FloatArray, FloatArray]:
    """The replicates (replicates × candidates), each candidate's shifted by its bootstrap
    bias when some candidate's score lies outside its own 95 % percentile interval; and the
    biases removed (NaN: none).  ``resampled``: the candidates whose replicates count.
    The ranking's targets and placement's sets of sites (:mod:`.place`) alike.

    A 95th percentile of a handful of records (a pair's handshakes, say) is close to their
    maximum, and a resample leaves the maximum out about a third of the time: its replicates
    fall below the point estimate.  Summed over a hundred weighted regions the shortfall
    adds up while the spread averages out, and every replicate of a campaign of 100k
    synthetic records lay below its score (by about 4 standard deviations; the interval
    missed the score it was for, and p(best) followed the targets' different biases, not
    their scores).  The correction is the bootstrap's own estimate of bias (the replicates'
    mean minus the score; Efron and Tibshirani, *An Introduction to the Bootstrap*, 1993,
    ch. 10) taken out of every target's replicates alike, so that the interval and p(best)
    speak of the spread around the scores that are ranked.  With enough records per pair
    the score sits inside its interval and nothing changes.
    """
    lo = np.nanpercentile(boot, 2.5, axis=0)
    hi = np.nanpercentile(boot, 97.5, axis=0)
    outside = resampled & ~np.isnan(scores) & ((scores < lo) | (scores > hi))
    if not outside.any():
        return boot, np.full(len(scores), np.nan)
    bias = np.where(resampled & ~np.isnan(scores), np.nanmean(boot, axis=0) - scores, np.nan)
    return boot - np.where(np.isnan(bias), 0.0, bias), bias


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
    pair_costs: PairCosts | None = None,
) -> Stability:
    """How robust the winner is to the weights: Dirichlet perturbation and leave-one-region-out.

    Perturbed weights are drawn from Dirichlet(concentration × w) over the regions with a
    positive weight; their mean is w and each share's standard deviation is
    √(w(1−w)/(concentration+1)): with the default 50, a 0.45 share moves by about ±0.07,
    i.e. "the mix is known to some ±15 %".  Costs are the point estimates (this is about
    the weights, not the sampling noise: see ``p_best`` in :func:`rank` for that).

    With no eligible candidate (see :func:`rank`) ``winner`` is None and the shares are NaN:
    nothing stays first.  ``pair_costs``: as for :func:`rank`.
    """
    if concentration <= 0:
        raise ValueError(f"concentration must be > 0, not {concentration}")
    _check_gaps(gaps)
    w = _normalise(weights)
    regions = sorted(w)
    costed = _costed(measurements, regions, cost, thresholds, w, assumed, pair_costs)
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
    pair_costs: PairCosts | None = None,
) -> CostMatrix:
    """The per-(region, target) costs and their bootstrap replicates, as :func:`rank` computes
    them for ``regions`` (in that order): ``rank(m, w).table["score"]`` is ``w @ cost`` for
    the eligible targets, and its replicates ``w @ replicates`` — the same records, the same
    seeded draws.  This is the narrow interface placement (:mod:`.place`) relies on."""
    regions = [str(r) for r in regions]
    costed = _costed(measurements, regions, cost, thresholds, dict.fromkeys(regions, 1.0),
                     assumed, pair_costs)
    replicates = None
    if n_boot > 0 and costed.targets and regions:
        replicates = _bootstrap_costs(measurements, regions, costed,
                                      np.ones(len(regions), dtype=bool), cost, thresholds,
                                      n_boot, seed)
    return CostMatrix(costed.regions, costed.targets, costed.cost, costed.meets,
                      costed.assumed, costed.rtt_records, replicates, costed.breakdown)
