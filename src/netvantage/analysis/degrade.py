"""Flag degraded (region, data centre) paths, each flag with its evidence.

Pure functions over the ``measurements`` frame (see :mod:`netvantage.analysis.frames`).
Three tests, each run per (region, target, kind) for the kinds that carry an RTT and a loss
ratio (ping and tcp by default):

``peers``
    The region is worse than the other regions measuring the same data centre, after allowing
    for distance.  Distance is allowed for by one campaign-wide line fitted robustly
    (Theil–Sen) through every pair's median RTT against its physical floor,
    ``expected = a + b × floor_ms`` (``b`` is the typical inflation, ``a`` the fixed overhead
    of last miles and equipment, which a plain ratio would blow up on short paths).  A pair's
    *residual* is its RTT minus that line; the region's median residual is compared with the
    median of the other regions' residuals to the same data centre.  Significance: a
    one-sided Mann–Whitney U of the region's per-record residuals against its peers'.  Loss:
    an exact one-sided binomial test of the region's lost packets against the peers' median
    loss ratio.

``bound``
    The pair's minimum RTT is far above what the campaign's typical inflation gives for its
    distance (the same line, fitted through minimum RTTs: a detour).  Significance: a sign
    test on the per-record minimum RTTs against the line.

``history``
    The pair is worse than its own recent past: the records are cut into ``window``-long
    windows; at each boundary leaving at least ``min_windows`` windows on each side the
    records before and after are compared (Mann–Whitney U for RTT, Fisher's exact test on lost
    and received packets for loss), the p-value multiplied by the number of boundaries
    tried (Bonferroni) and the best boundary kept.  ``since`` is the start of the first window
    after it.

A flag needs all of: an adjusted p-value below ``alpha``; an effect of at least
``min_effect_ms`` *and* ``min_effect_ratio`` of the reference RTT (loss: ``min_loss`` in
absolute terms and twice the reference); for peers and bound also a robust z-score (effect
over 1.4826 × the campaign-wide MAD of residuals, at least ``min_scale_ms``) of at least
``z_min``.  The p-values of peers and bound are multiplied by the number of pairs tested
(Bonferroni).  The effect guards are what keep a healthy campaign quiet: with hundreds of
records a few milliseconds of real difference is "significant" but is not a degradation.

Peers and bound need the physical floor of each pair: pass ``inflation`` (the frame of
:func:`netvantage.analysis.geo.inflation`: region, target, floor_ms or distance_km, …).
Without it only the loss-vs-peers and the history tests run.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .codes import str_codes
from .fastagg import key_strings
from .ranktests import binom_sf, fisher_greater, mwu_greater, tied_ranks

__all__ = ["FLAG_COLUMNS", "degradation_flags"]

FLAG_COLUMNS = ("region", "target", "kind", "metric", "test", "value", "reference", "effect",
                "evidence", "since", "p_value", "where")

FloatArray = npt.NDArray[np.float64]

# Columns of a path-evidence frame (paths.where_it_starts) worth quoting, in this order.
_WHERE_COLUMNS = ("ttl", "address", "asn", "as_org", "city", "country", "metric", "jump_ms",
                  "share", "how_often")


def degradation_flags(
    measurements: pd.DataFrame,
    *,
    inflation: pd.DataFrame | None = None,
    path_evidence: pd.DataFrame | Mapping[tuple[str, str], str] | None = None,
    window: str | pd.Timedelta = "5min",
    alpha: float = 0.001,
    kinds: tuple[str, ...] = ("ping", "tcp"),
    min_effect_ms: float = 10.0,
    min_effect_ratio: float = 0.25,
    min_loss: float = 0.01,
    z_min: float = 3.0,
    min_scale_ms: float = 5.0,
    min_windows: int = 3,
    min_records: int = 5,
) -> pd.DataFrame:
    """One row per flag (columns :data:`FLAG_COLUMNS`), empty when all is well.

    ``value`` and ``reference`` are the pair's figure and what it is compared with (ms for
    RTT, a ratio for loss), ``effect`` their difference, ``evidence`` the same in words,
    ``since`` the start of a change (history only), ``p_value`` the adjusted p-value, and
    ``where`` the place on the path where latency or loss first jumps, from
    ``path_evidence`` when given: a frame with region and target columns (such as a list of
    :func:`netvantage.analysis.paths.where_it_starts` results, whose ``jump_evidence`` and
    ``loss_evidence`` sentences are quoted; other frames have their hop columns listed), or
    a mapping (region, target) → text.

    Defaults: ``alpha`` = 0.001 and the effect guards (10 ms and 25 % of the reference; 1
    percentage point of loss) make false flags rare on a healthy campaign; ``window`` = 5 min
    suits a campaign of hours — choose about a tenth of the campaign's length, with
    ``min_windows`` = 3 windows on each side of a change.
    """
    missing = {"kind", "region", "target", "started_at", "rtt_ms", "rtt_min_ms",
               "loss_ratio"} - set(measurements.columns)
    if missing:
        raise ValueError(f"measurements lack the columns {sorted(missing)}")
    opts = _Options(alpha, min_effect_ms, min_effect_ratio, min_loss, z_min, min_scale_ms,
                    min_windows, min_records)
    # No astype(str) of the whole kind column (0.2 s for a million-row categorical): isin
    # reads a categorical's categories; the kept rows' kinds as strings for the group-by.
    # Only the columns the tests read are filtered and split (not the records' ids).
    used = [c for c in ("kind", "region", "target", "started_at", "rtt_ms", "rtt_min_ms",
                        "loss_ratio", "sent") if c in measurements.columns]
    # Records that name no client region are no region's: left out of every test (as the
    # analysis's notes say), never a peer called "nan" nor credited to another region.
    keep = (measurements["kind"].isin(list(kinds)).to_numpy(dtype=bool)
            & measurements["region"].notna().to_numpy(dtype=bool))
    flags: list[dict[str, Any]] = []
    floors = _floors(inflation) if inflation is not None else None
    for kind, rows in _kind_rows(measurements["kind"], keep):
        # One kind's rows and columns at a time (the rows a group-by by kind would give):
        # not a copy of every kept record and a second one sorted by kind at once.
        frame = measurements[used].iloc[rows]
        pairs = _pairs(_with_counts(frame), pd.Timedelta(window))
        if floors is not None:
            flags += _peers_rtt(pairs, str(kind), floors, opts)
            flags += _bound(pairs, str(kind), floors, opts)
        flags += _peers_loss(pairs, str(kind), opts)
        flags += _history(pairs, str(kind), opts)
    out = pd.DataFrame(flags, columns=list(FLAG_COLUMNS))
    out["since"] = pd.to_datetime(out["since"], utc=True)
    evidence = _evidence_index(path_evidence)
    out["where"] = [_where(evidence, r, t) for r, t in
                    zip(out["region"], out["target"], strict=True)]
    out["where"] = out["where"].astype("string")
    return out.sort_values(["region", "target", "kind", "test", "metric"],
                           kind="stable").reset_index(drop=True)


class _Options:
    __slots__ = ("alpha", "min_effect_ms", "min_effect_ratio", "min_loss", "min_records",
                 "min_scale_ms", "min_windows", "z_min")

    def __init__(self, alpha: float, min_effect_ms: float, min_effect_ratio: float,
                 min_loss: float, z_min: float, min_scale_ms: float, min_windows: int,
                 min_records: int) -> None:
        self.alpha = alpha
        self.min_effect_ms = min_effect_ms
        self.min_effect_ratio = min_effect_ratio
        self.min_loss = min_loss
        self.z_min = z_min
        self.min_scale_ms = min_scale_ms
        self.min_windows = min_windows
        self.min_records = min_records

    def big_rtt(self, effect: float, reference: float) -> bool:
        return bool(effect >= self.min_effect_ms
                    and effect >= self.min_effect_ratio * max(reference, 0.0))

    def big_loss(self, value: float, reference: float) -> bool:
        return bool(value - reference >= self.min_loss and value >= 2.0 * reference)


# ---------------------------------------------------------------------------------------
# Inputs


def _floors(inflation: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(region, target) → round-trip floor in ms (1 ms per 100 km when only distance is given)."""
    if "floor_ms" in inflation.columns:
        floor = inflation["floor_ms"].astype("float64")
    elif "distance_km" in inflation.columns:
        floor = inflation["distance_km"].astype("float64") / 100.0
    else:
        raise ValueError("inflation needs a floor_ms or a distance_km column")
    return {(str(r), str(t)): float(f)
            for r, t, f in zip(inflation["region"], inflation["target"], floor, strict=True)
            if np.isfinite(f)}


def _with_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Add lost and trials: from sent and loss_ratio, one trial per record without ``sent``."""
    loss = frame["loss_ratio"].astype("float64")
    if "sent" in frame.columns:
        trials = pd.to_numeric(frame["sent"], errors="coerce").astype("float64").fillna(1.0)
    else:
        trials = pd.Series(1.0, index=frame.index)
    trials = trials.where(loss.notna(), 0.0).clip(lower=0.0)
    lost = (loss.fillna(0.0) * trials).round()
    frame = frame.assign(_lost=lost, _trials=trials,
                         _rtt=frame["rtt_ms"].astype("float64"),
                         _rtt_min=frame["rtt_min_ms"].astype("float64").fillna(
                             frame["rtt_ms"].astype("float64")))
    return frame


def _fit_line(floor: FloatArray, rtt: FloatArray) -> tuple[float, float]:
    """Robust ``rtt ≈ a + b × floor`` (Theil–Sen); b = 1 and a = median excess if degenerate."""
    ok = np.isfinite(floor) & np.isfinite(rtt)
    floor, rtt = floor[ok], rtt[ok]
    if len(np.unique(floor)) >= 3:
        from scipy import stats  # here: its import costs more than most analyses (ranktests)

        slope, intercept, _, _ = stats.theilslopes(rtt, floor)
        if np.isfinite(slope) and slope > 0:
            return float(intercept), float(slope)
    if len(rtt) == 0:
        return 0.0, 1.0
    return float(np.median(rtt - floor)), 1.0


def _mad_scale(residuals: FloatArray, minimum: float) -> float:
    residuals = residuals[np.isfinite(residuals)]
    if len(residuals) == 0:
        return minimum
    mad = float(np.median(np.abs(residuals - np.median(residuals))))
    return max(1.4826 * mad, minimum)


@dataclass(frozen=True, slots=True)
class _Pair:
    """One (region, target)'s records of one kind, in their frame order, as arrays."""

    rtt: FloatArray
    rtt_min: FloatArray
    lost: FloatArray
    trials: FloatArray
    bins: npt.NDArray[np.int64]  # the window each record starts in (ns since the epoch)


def _kind_rows(kind: pd.Series, keep: npt.NDArray[np.bool_]
               ) -> list[tuple[str, npt.NDArray[np.intp]]]:
    """The positions of ``keep``'s rows by their kind as a string (``astype(str)``), kinds
    in sorted order and each kind's rows in frame order: the groups of a group-by of the
    kept rows by :func:`key_strings` of their kind."""
    names = key_strings(kind)
    kept = np.flatnonzero(keep)
    return [(str(k), kept[names[kept] == k]) for k in sorted(set(names[kept].tolist()))]


def _pairs(frame: pd.DataFrame, window: pd.Timedelta) -> dict[tuple[str, str], _Pair]:
    """(region, target) → its records, sorted by region then target (as strings).

    One stable sort by the pairs' codes and one slice per pair: no frame per pair, whatever
    the number of pairs (a city-to-city matrix has tens of thousands of them).
    """
    if frame.empty:
        return {}
    # The pair's code from the region's and the target's sorted codes: the order of the
    # (region, target) strings, without a MultiIndex of a million tuples (0.4 s at 1M).
    regions, region_names = str_codes(frame["region"])
    targets, target_names = str_codes(frame["target"])
    code = regions.astype(np.int64) * len(target_names) + targets
    order = np.argsort(code, kind="stable")
    code = code[order]
    bounds = np.flatnonzero(np.r_[True, code[1:] != code[:-1], True]).tolist()
    started = pd.to_datetime(frame["started_at"], utc=True)
    bins = started.dt.floor(window).to_numpy(dtype="datetime64[ns]").astype(np.int64)[order]
    rtt = frame["_rtt"].to_numpy(dtype=np.float64)[order]
    rtt_min = frame["_rtt_min"].to_numpy(dtype=np.float64)[order]
    lost = frame["_lost"].to_numpy(dtype=np.float64)[order]
    trials = frame["_trials"].to_numpy(dtype=np.float64)[order]
    out: dict[tuple[str, str], _Pair] = {}
    for a, b in itertools.pairwise(bounds):
        r, t = divmod(int(code[a]), len(target_names))
        out[(str(region_names[r]), str(target_names[t]))] = _Pair(
            rtt[a:b], rtt_min[a:b], lost[a:b], trials[a:b], bins[a:b])
    return out


def _by_target(keys: list[tuple[str, str]]) -> dict[str, npt.NDArray[np.intp]]:
    """target → the positions in ``keys`` of its pairs."""
    out: dict[str, list[int]] = {}
    for i, (_, target) in enumerate(keys):
        out.setdefault(target, []).append(i)
    return {t: np.asarray(ix, dtype=np.intp) for t, ix in out.items()}


def _flag(region: str, target: str, kind: str, metric: str, test: str, value: float,
          reference: float, evidence: str, p: float, since: Any = None) -> dict[str, Any]:
    return {"region": region, "target": target, "kind": kind, "metric": metric, "test": test,
            "value": value, "reference": reference, "effect": value - reference,
            "evidence": evidence, "since": since, "p_value": p, "where": None}


def _one_sided_mwu(worse: FloatArray, better: FloatArray) -> float:
    worse = worse[np.isfinite(worse)]
    better = better[np.isfinite(better)]
    if len(worse) == 0 or len(better) == 0:
        return 1.0
    from scipy import stats  # here: its import costs more than most analyses (ranktests)

    return float(stats.mannwhitneyu(worse, better, alternative="greater").pvalue)


# ---------------------------------------------------------------------------------------
# The tests


def _peers_rtt(every: Mapping[tuple[str, str], _Pair], kind: str,
               floors: Mapping[tuple[str, str], float], opts: _Options) -> list[dict[str, Any]]:
    pairs = {k: g for k, g in every.items()
             if k in floors and int(np.isfinite(g.rtt).sum()) >= opts.min_records}
    if len(pairs) < 2:
        return []
    keys = list(pairs)
    floor = np.array([floors[k] for k in keys])
    median = np.array([float(np.nanmedian(pairs[k].rtt)) for k in keys])
    of_target = _by_target(keys)
    a, b = _fit_line(floor, median)
    resid = median - (a + b * floor)
    scale = _mad_scale(resid, opts.min_scale_ms)
    candidates = []
    for i, (region, target) in enumerate(keys):
        peers = [j for j in of_target[target].tolist() if j != i]
        if not peers:
            continue
        reference = float(np.median(resid[peers]))
        effect = float(resid[i] - reference)
        expected = a + b * floor[i] + reference  # the RTT this region would have, like its peers
        if not (opts.big_rtt(effect, expected) and effect / scale >= opts.z_min):
            continue
        own = pairs[keys[i]].rtt - (a + b * floor[i])
        theirs = np.concatenate([pairs[keys[j]].rtt - (a + b * floor[j]) for j in peers])
        p = _one_sided_mwu(own, theirs)
        peer_rtts = ", ".join(f"{keys[j][0]} {median[j]:.0f} ms" for j in peers)
        evidence = (f"median RTT {median[i]:.0f} ms where peers' excess over distance predicts "
                    f"{expected:.0f} ms (+{effect:.0f} ms, z={effect / scale:.1f}); peers: "
                    f"{peer_rtts}; floor {floor[i]:.0f} ms")
        candidates.append(_flag(region, target, kind, "rtt_ms", "peers", float(median[i]),
                                float(expected), evidence, p))
    return _bonferroni(candidates, len(keys), opts.alpha)


def _bound(every: Mapping[tuple[str, str], _Pair], kind: str,
           floors: Mapping[tuple[str, str], float], opts: _Options) -> list[dict[str, Any]]:
    pairs = {k: g for k, g in every.items()
             if k in floors and int(np.isfinite(g.rtt_min).sum()) >= opts.min_records}
    if len(pairs) < 3:
        return []
    keys = list(pairs)
    floor = np.array([floors[k] for k in keys])
    minimum = np.array([float(np.nanmin(pairs[k].rtt_min)) for k in keys])
    a, b = _fit_line(floor, minimum)
    expected = a + b * floor
    resid = minimum - expected
    scale = _mad_scale(resid, opts.min_scale_ms)
    candidates = []
    from scipy import stats  # here: its import costs more than most analyses (ranktests)

    for i, (region, target) in enumerate(keys):
        effect = float(resid[i])
        if not (opts.big_rtt(effect, float(expected[i])) and effect / scale >= opts.z_min):
            continue
        values = pairs[keys[i]].rtt_min
        values = values[np.isfinite(values)]
        above = int((values > expected[i]).sum())
        p = float(stats.binomtest(above, len(values), 0.5, alternative="greater").pvalue)
        inflation = minimum[i] / floor[i] if floor[i] > 0 else math.inf
        evidence = (f"minimum RTT {minimum[i]:.0f} ms over a {floor[i]:.0f} ms floor "
                    f"(inflation {inflation:.1f}) where the campaign's typical inflation "
                    f"({b:.2f} × floor + {a:.0f} ms) gives {expected[i]:.0f} ms "
                    f"(+{effect:.0f} ms, z={effect / scale:.1f}): a detour")
        candidates.append(_flag(region, target, kind, "rtt_min_ms", "bound", float(minimum[i]),
                                float(expected[i]), evidence, p))
    return _bonferroni(candidates, len(keys), opts.alpha)


def _peers_loss(every: Mapping[tuple[str, str], _Pair], kind: str,
                opts: _Options) -> list[dict[str, Any]]:
    """Per pair, its loss against the median of the other regions' to the same target.

    Each target's loss ratios are sorted once; the median without one of them is read from
    that order (the middle one or two of the others), so a target measured from hundreds of
    regions costs one sort, not one median of hundreds per region.  The binomial p-values
    of the candidates come from one ``binom.sf`` call (:func:`.ranktests.binom_sf`: what
    ``binomtest(alternative="greater")`` computes), and the evidence, which names every
    peer, is written only for the flags that survive Bonferroni's correction.
    """
    pairs = {k: g for k, g in every.items() if float(g.trials.sum()) > 0}
    keys = list(pairs)
    if not keys:
        return []
    lost = np.array([float(g.lost.sum()) for g in pairs.values()])
    trials = np.array([float(g.trials.sum()) for g in pairs.values()])
    ratio = lost / trials
    reference = np.full(len(keys), np.nan)
    peer_trials = np.zeros(len(keys))
    of_target = _by_target(keys)
    for members in of_target.values():
        if len(members) < 2:
            continue
        reference[members] = _median_of_others(ratio[members])
        # The peers' packets: whole numbers, so the total less one's own is their exact sum.
        peer_trials[members] = trials[members].sum() - trials[members]
    candidates = [i for i in range(len(keys)) if not np.isnan(reference[i])
                  and opts.big_loss(float(ratio[i]), float(reference[i]))]
    if not candidates:
        return []
    ix = np.asarray(candidates, dtype=np.intp)
    # A rate never seen among the peers is taken as half a packet in all they sent.
    p0 = np.minimum(np.maximum(reference[ix], 0.5 / peer_trials[ix]), 1.0)
    k = np.array([int(lost[i]) for i in candidates], dtype=np.int64)
    n = np.array([int(trials[i]) for i in candidates], dtype=np.int64)
    p_values = np.asarray(binom_sf(k - 1, n, p0), dtype=np.float64)
    flags = []
    for i, p in zip(candidates, p_values.tolist(), strict=True):
        if min(1.0, p * len(keys)) >= opts.alpha:
            continue  # not flagged after Bonferroni's correction: no evidence to write
        key = keys[i]
        peers = [j for j in of_target[key[1]].tolist() if j != i]
        evidence = (f"loss {100 * ratio[i]:.1f} % vs {100 * reference[i]:.1f} % from peers "
                    f"({', '.join(f'{keys[j][0]} {100 * ratio[j]:.1f} %' for j in peers)}; "
                    f"{int(lost[i])} of {int(trials[i])} lost)")
        flags.append(_flag(key[0], key[1], kind, "loss_ratio", "peers", float(ratio[i]),
                           float(reference[i]), evidence, p))
    return _bonferroni(flags, len(keys), opts.alpha)


def _median_of_others(values: FloatArray) -> FloatArray:
    """For each value, ``np.median`` of all the others (at least two values)."""
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    position = np.empty(len(values), dtype=np.int64)
    position[order] = np.arange(len(values))
    m = len(values) - 1  # how many others

    def others(k: int) -> FloatArray:
        """The k-th smallest of the others of each value."""
        return np.asarray(ranked[np.where(k < position, k, k + 1)])

    if m % 2:
        return others(m // 2)
    return np.asarray((others(m // 2 - 1) + others(m // 2)) / 2)


def _history(pairs: Mapping[tuple[str, str], _Pair], kind: str,
             opts: _Options) -> list[dict[str, Any]]:
    """Every pair's every boundary at once: one sort and running sums, no call per split.

    For a pair, the pooled sample of the RTT test is the same at every boundary (all its
    finite RTTs), so its ranks and ties are computed once; a boundary only decides which
    ranks are after it, a running sum over the pair's windows.  The lost and sent packets
    on each side are running sums too.  The p-values are those of one
    ``mannwhitneyu(after, before, alternative="greater")`` and one
    ``fisher_exact([[lost after, received after], [lost before, received before]],
    alternative="greater")`` per boundary (:mod:`.ranktests`, equal to scipy's), and the
    first boundary with the least p-value is kept, as a loop over the boundaries would.
    """
    keys = list(pairs)
    if not keys:
        return []
    groups = list(pairs.values())
    sizes = np.array([len(g.bins) for g in groups], dtype=np.int64)
    pair = np.repeat(np.arange(len(groups)), sizes)
    bins = np.concatenate([g.bins for g in groups])
    rtt = np.concatenate([g.rtt for g in groups])
    lost = np.concatenate([g.lost for g in groups])
    trials = np.concatenate([g.trials for g in groups])
    # The windows of each pair (its distinct bins), in time order: one row each.
    order = np.lexsort((bins, pair))
    p_sorted, b_sorted = pair[order], bins[order]
    new_row = np.r_[True, (p_sorted[1:] != p_sorted[:-1]) | (b_sorted[1:] != b_sorted[:-1])]
    row_sorted = np.cumsum(new_row) - 1
    row = np.empty(len(bins), dtype=np.int64)
    row[order] = row_sorted
    row_pair = p_sorted[new_row]
    row_edge = b_sorted[new_row]
    n_rows = len(row_pair)
    windows = np.bincount(row_pair, minlength=len(groups))
    first_row = np.r_[0, np.cumsum(windows)[:-1]]
    # Per window: finite RTTs, twice their rank sum in the pair's pooled sample, packets.
    finite = np.isfinite(rtt)
    doubled, tie_term, tied = _pooled_ranks(pair[finite], rtt[finite], len(groups))
    count = _running(np.bincount(row[finite], minlength=n_rows))
    rank2 = _running(np.bincount(row[finite], weights=doubled.astype(np.float64),
                                 minlength=n_rows).astype(np.int64))
    lost_sum = _running(np.bincount(row, weights=lost, minlength=n_rows))
    trials_sum = _running(np.bincount(row, weights=trials, minlength=n_rows))
    # The boundaries: windows min_windows … n − min_windows of pairs with 2 × min_windows.
    mw = opts.min_windows
    tried = np.where(windows >= 2 * mw, np.minimum(windows, windows - mw + 1) - mw, 0)
    split_pair = np.repeat(np.arange(len(groups)), tried)
    split_row = (first_row[split_pair] + mw
                 + np.arange(int(tried.sum())) - np.repeat(np.cumsum(tried) - tried, tried))
    start, stop = first_row[split_pair], first_row[split_pair] + windows[split_pair]

    def before(c: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.asarray(c[split_row] - c[start])

    def after(c: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.asarray(c[stop] - c[split_row])

    n_before, n_after = before(count), after(count)
    testable = (n_before >= opts.min_records) & (n_after >= opts.min_records)
    p_rtt = np.full(len(split_row), np.nan)
    sp = split_pair[testable]
    n1, n2 = n_after[testable], n_before[testable]
    some = (n1 > 0) & (n2 > 0)
    u1 = after(rank2)[testable] / 2 - n1 * (n1 + 1) / 2
    p_sub = np.ones(len(sp))
    p_some, unresolved = mwu_greater(n1[some], n2[some], u1[some], tie_term[sp[some]],
                                     tied[sp[some]])
    for i in np.flatnonzero(unresolved).tolist():  # scipy's exact count, beyond 2**53
        j = int(np.flatnonzero(testable)[np.flatnonzero(some)[i]])
        group, edge = groups[int(split_pair[j])], int(row_edge[split_row[j]])
        p_some[i] = _one_sided_mwu(group.rtt[group.bins >= edge], group.rtt[group.bins < edge])
    p_sub[some] = p_some
    p_rtt[testable] = p_sub
    lb, tb = before(lost_sum), before(trials_sum)
    la, ta = after(lost_sum), after(trials_sum)
    loss_ok = (tb > 0) & (ta > 0)
    p_loss = np.full(len(split_row), np.nan)
    p_loss[loss_ok] = fisher_greater(
        la[loss_ok].astype(np.int64), (ta - la)[loss_ok].astype(np.int64),
        lb[loss_ok].astype(np.int64), (tb - lb)[loss_ok].astype(np.int64))
    best_rtt = _first_least(split_pair, p_rtt, testable, len(groups))
    best_loss = _first_least(split_pair, p_loss, loss_ok, len(groups))
    flags = []
    for g in np.flatnonzero(tried > 0).tolist():
        region, target = keys[g]
        group = groups[g]
        n = int(tried[g])
        if best_rtt[g] >= 0:
            j = int(best_rtt[g])
            p = min(1.0, float(p_rtt[j]) * n)
            if p < opts.alpha:
                edge_ns = int(row_edge[split_row[j]])
                later = group.bins >= edge_ns
                prior = float(np.nanmedian(group.rtt[~later]))
                now = float(np.nanmedian(group.rtt[later]))
                if opts.big_rtt(now - prior, prior):
                    since = pd.Timestamp(edge_ns, unit="ns", tz="UTC")
                    evidence = (f"median RTT {now:.0f} ms since {since:%Y-%m-%d %H:%M:%S} "
                                f"vs {prior:.0f} ms before (+{now - prior:.0f} ms)")
                    flags.append(_flag(region, target, kind, "rtt_ms", "history", now,
                                       prior, evidence, p, since))
        if best_loss[g] >= 0:
            j = int(best_loss[g])
            p = min(1.0, float(p_loss[j]) * n)
            prior, now = float(lb[j] / tb[j]), float(la[j] / ta[j])
            if p < opts.alpha and opts.big_loss(now, prior):
                since = pd.Timestamp(int(row_edge[split_row[j]]), unit="ns", tz="UTC")
                evidence = (f"loss {100 * now:.1f} % since {since:%Y-%m-%d %H:%M:%S} "
                            f"vs {100 * prior:.1f} % before")
                flags.append(_flag(region, target, kind, "loss_ratio", "history", now,
                                   prior, evidence, p, since))
    return flags


def _pooled_ranks(pair: npt.NDArray[np.int64], values: FloatArray, size: int
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                             npt.NDArray[np.bool_]]:
    """:func:`.ranktests.tied_ranks` with ``size`` groups even when the last have no value."""
    if len(values) == 0:
        return (np.empty(0, dtype=np.int64), np.zeros(size, dtype=np.int64),
                np.zeros(size, dtype=bool))
    doubled, tie_term, tied = tied_ranks(pair, values)
    pad = size - len(tie_term)
    return (doubled, np.r_[tie_term, np.zeros(pad, dtype=np.int64)],
            np.r_[tied, np.zeros(pad, dtype=bool)])


def _running(per_row: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """0 then the running sums: ``c[j] − c[i]`` is the sum of rows i … j − 1."""
    return np.concatenate([np.zeros(1, dtype=per_row.dtype), np.cumsum(per_row)])


def _first_least(split_pair: npt.NDArray[np.int64], p: FloatArray,
                 tested: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.int64]:
    """Per pair, the split a loop keeping ``p < best`` ends with (−1: none tested).

    The first tested split, replaced by each later one with a smaller p-value: the first
    of the least, unless the first is NaN (nothing is smaller than NaN).
    """
    best = np.full(size, -1, dtype=np.int64)
    idx = np.flatnonzero(tested)
    if len(idx) == 0:
        return best
    key = np.where(np.isnan(p[idx]), np.inf, p[idx])
    # Sorted by pair, then p, then position: the first of each pair is its least p-value.
    order = np.lexsort((idx, key, split_pair[idx]))
    ordered = split_pair[idx][order]
    head = np.r_[True, ordered[1:] != ordered[:-1]]
    best[ordered[head]] = idx[order][head]
    first = np.full(size, -1, dtype=np.int64)
    first_of = np.r_[True, split_pair[idx][1:] != split_pair[idx][:-1]]
    first[split_pair[idx][first_of]] = idx[first_of]
    nan_first = (first >= 0) & np.isnan(p[np.maximum(first, 0)])
    best[nan_first] = first[nan_first]
    return best


def _bonferroni(candidates: list[dict[str, Any]], m: int, alpha: float) -> list[dict[str, Any]]:
    kept = []
    for flag in candidates:
        flag["p_value"] = min(1.0, flag["p_value"] * m)
        if flag["p_value"] < alpha:
            kept.append(flag)
    return kept


def _evidence_index(evidence: pd.DataFrame | Mapping[tuple[str, str], str] | None
                    ) -> Mapping[tuple[str, str], str | None] | None:
    """The path evidence as (region, target) → the text quoted in ``where`` (None: none)."""
    if evidence is None or not isinstance(evidence, pd.DataFrame):
        return evidence
    out: dict[tuple[str, str], str | None] = {}
    columns = set(evidence.columns)
    for row in evidence.to_dict("records"):
        key = (str(row["region"]), str(row["target"]))
        if key in out:
            continue  # the first row of a pair is the one quoted
        # paths.where_it_starts writes its findings as sentences: quote those when present.
        sentences = [str(row[c]) for c in ("jump_evidence", "loss_evidence")
                     if c in columns and not _isna(row[c]) and str(row[c])]
        if sentences:
            out[key] = "; ".join(sentences)
            continue
        parts = [f"{c} {row[c]}" for c in _WHERE_COLUMNS if c in columns and not _isna(row[c])]
        out[key] = ", ".join(parts) if parts else None
    return out


def _where(evidence: Mapping[tuple[str, str], str | None] | None, region: str,
           target: str) -> str | None:
    if evidence is None:
        return None
    text = evidence.get((region, target))
    return None if text is None else str(text)


def _isna(value: Any) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pd.isna(value)
    return bool(result) if isinstance(result, bool | np.bool_) else False
