"""The vectorised rank and exact tests give scipy's p-values (degrade.py's history test uses
them instead of one scipy call per split)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from netvantage.analysis.degrade import degradation_flags
from netvantage.analysis.ranktests import (
    binom_sf,
    fisher_greater,
    hypergeom_cdf,
    mwu_greater,
    tied_ranks,
)


def _groups(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) samples: tiny and larger, continuous, rounded (ties), all equal."""
    out = []
    for _ in range(400):
        n1, n2 = (int(v) for v in rng.choice([1, 2, 3, 5, 8, 9, 12, 40, 150], size=2))
        shape = rng.integers(4)
        if shape == 0:  # no ties: exact distribution when a side has ≤ 8 values
            x, y = rng.normal(1.0, 1.0, n1), rng.normal(0.0, 1.0, n2)
        elif shape == 1:  # coarse values: many ties
            x, y = rng.integers(0, 4, n1).astype(float), rng.integers(0, 3, n2).astype(float)
        elif shape == 2:  # every value equal
            x, y = np.full(n1, 7.0), np.full(n2, 7.0)
        else:  # one tie in otherwise distinct values
            x, y = rng.normal(size=n1), rng.normal(size=n2)
            y[0] = x[0]
        out.append((x, y))
    return out


def test_mwu_greater_agrees_with_scipy() -> None:
    rng = np.random.default_rng(20240611)
    samples = _groups(rng)
    values = np.concatenate([np.concatenate([x, y]) for x, y in samples])
    groups = np.repeat(np.arange(len(samples)), [len(x) + len(y) for x, y in samples])
    doubled, tie_term, tied = tied_ranks(groups, values)
    n1 = np.array([len(x) for x, _ in samples])
    n2 = np.array([len(y) for _, y in samples])
    starts = np.r_[0, np.cumsum(n1 + n2)[:-1]]
    r1 = np.array([doubled[s:s + a].sum() / 2 for s, a in zip(starts, n1, strict=True)])
    p, unresolved = mwu_greater(n1, n2, r1 - n1 * (n1 + 1) / 2, tie_term, tied)
    assert not unresolved.any()
    expected = np.array([stats.mannwhitneyu(x, y, alternative="greater").pvalue
                         for x, y in samples])
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-12)
    # Both of scipy's methods were exercised, and the values are in fact the same bits.
    small = ((n1 <= 8) | (n2 <= 8)) & ~tied
    assert small.sum() > 50 and (~small).sum() > 50
    assert np.array_equal(p, expected)


def test_tied_ranks_are_scipys_average_ranks() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 5, 60).astype(float)
    groups = np.sort(rng.integers(0, 4, 60))
    doubled, tie_term, tied = tied_ranks(groups, values)
    for g in range(4):
        mine = values[groups == g]
        assert np.array_equal(doubled[groups == g] / 2, stats.rankdata(mine))
        _, t = np.unique(mine, return_counts=True)
        assert tie_term[g] == int((t ** 3 - t).sum())
        assert tied[g] == bool((t > 1).any())


def test_mwu_exact_beyond_float_counts_is_left_to_scipy() -> None:
    """8 values against 2000 without ties: scipy's count exceeds 2**53 and is rounded."""
    p, unresolved = mwu_greater(np.array([8]), np.array([2000]), np.array([9000.0]),
                                np.array([0]), np.array([False]))
    assert unresolved.tolist() == [True]
    assert np.isnan(p[0])


def test_fisher_greater_agrees_with_scipy() -> None:
    rng = np.random.default_rng(11)
    tables = rng.integers(0, 30, size=(500, 4))
    tables[:40, :2] = 0  # an empty row
    tables[40:80, [0, 2]] = 0  # an empty column
    tables[80:120] = [3, 0, 0, 5]
    tables[120:130] = 0
    p = fisher_greater(*tables.T)
    expected = np.array([stats.fisher_exact(t.reshape(2, 2), alternative="greater").pvalue
                         for t in tables])
    assert np.array_equal(p, expected)


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 9), (8, 8), (5, 60), (8, 100)])
def test_exact_distribution_sums_to_one(m: int, n: int) -> None:
    """P(U ≥ 0) is 1 and P(U ≥ mn) is 1/C(m+n, m): the tails of the exact count."""
    from math import comb

    p, _ = mwu_greater(np.array([m, m]), np.array([n, n]), np.array([0.0, m * n]),
                       np.array([0, 0]), np.array([False, False]))
    assert p[0] == pytest.approx(1.0, abs=1e-12)
    assert p[1] == pytest.approx(1 / comb(m + n, m), rel=1e-12)


def _history_by_loop(m: pd.DataFrame, window: str, alpha: float) -> dict[tuple[str, str, str],
                                                                         tuple[float, Any]]:
    """(region, target, metric) → (Bonferroni p, boundary): one scipy call per boundary."""
    out: dict[tuple[str, str, str], tuple[float, Any]] = {}
    for (region, target), g in m.groupby(["region", "target"], sort=True):
        bins = pd.to_datetime(g["started_at"], utc=True).dt.floor(window).to_numpy()
        edges = np.unique(bins)[3:-2]
        rtt = g["rtt_ms"].to_numpy(dtype=float)
        lost = (g["loss_ratio"].to_numpy() * g["sent"].to_numpy()).round()
        sent = g["sent"].to_numpy(dtype=float)
        best: dict[str, tuple[float, Any]] = {}
        for edge in edges:
            after = bins >= edge
            x, y = rtt[after], rtt[~after]
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            if len(x) >= 5 and len(y) >= 5:
                p = stats.mannwhitneyu(x, y, alternative="greater").pvalue
                if "rtt_ms" not in best or p < best["rtt_ms"][0]:
                    best["rtt_ms"] = (p, edge)
            table = [[lost[after].sum(), sent[after].sum() - lost[after].sum()],
                     [lost[~after].sum(), sent[~after].sum() - lost[~after].sum()]]
            p = stats.fisher_exact(np.array(table, dtype=np.int64), alternative="greater").pvalue
            if "loss_ratio" not in best or p < best["loss_ratio"][0]:
                best["loss_ratio"] = (p, edge)
                ratios = (table[1][0] / sent[~after].sum(), table[0][0] / sent[after].sum())
        for metric, (p, edge) in best.items():
            if metric == "loss_ratio" and ratios[1] < 2 * ratios[0]:
                continue  # degrade.py's guard: loss at least twice what it was
            if min(1.0, p * len(edges)) < alpha:
                out[(str(region), str(target), metric)] = (min(1.0, p * len(edges)),
                                                           pd.Timestamp(edge))
    return out


def test_history_flags_are_those_of_one_scipy_call_per_boundary() -> None:
    """degrade.py's vectorised history test: the same boundaries and p-values as a loop."""
    rng = np.random.default_rng(3)
    rows = []
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    for r in range(6):
        for t in range(3):
            n = int(rng.choice([12, 40, 200]))
            at = t0 + pd.to_timedelta(np.sort(rng.uniform(0, 3600, n)), unit="s")
            step = at >= t0 + pd.Timedelta(minutes=int(rng.integers(15, 45)))
            rtt = 20 + rng.normal(0, 1, n) + (r % 3) * 30 * step
            if r == 4:
                rtt = np.round(rtt)  # ties
            rtt[rng.random(n) < 0.05] = np.nan
            loss = np.where(step & (t == 1), rng.uniform(0.2, 0.6, n), 0.0)
            rows.append(pd.DataFrame({"kind": "ping", "region": f"R{r}", "target": f"T{t}",
                                      "started_at": at, "rtt_ms": rtt, "rtt_min_ms": rtt,
                                      "loss_ratio": loss, "sent": 10}))
    m = pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=1)
    flags = degradation_flags(m, window="5min", alpha=0.5, min_effect_ms=-1e9,
                              min_effect_ratio=-1e9, min_loss=-1.0)
    history = flags[flags["test"] == "history"]
    got = {(r, t, k): (p, pd.Timestamp(s)) for r, t, k, p, s in
           zip(history["region"], history["target"], history["metric"], history["p_value"],
               history["since"], strict=True)}
    expected = _history_by_loop(m, "5min", 0.5)
    assert len(expected) > 10
    assert got == expected


@pytest.mark.parametrize("n", [2, 3, 4, 7, 50])
def test_median_of_others_is_numpys(n: int) -> None:
    """degrade.py's loss-vs-peers reference: the median of the other regions' ratios."""
    from netvantage.analysis.degrade import _median_of_others

    rng = np.random.default_rng(n)
    values = np.round(rng.random(n), 1)  # ties too
    got = _median_of_others(values)
    expected = [np.median(np.delete(values, i)) for i in range(n)]
    assert got.tolist() == expected


def test_binom_sf_is_binomtest_greater() -> None:
    """degrade.py's loss-vs-peers p-values: one binom.sf call, binomtest's own formula."""
    rng = np.random.default_rng(5)
    n = rng.integers(1, 3000, 300)
    k = (n * rng.random(300) ** 3).astype(np.int64)
    p = rng.random(300) ** 4
    expected = [stats.binomtest(int(a), int(b), float(c), alternative="greater").pvalue
                for a, b, c in zip(k, n, p, strict=True)]
    assert np.asarray(stats.binom.sf(k - 1, n, p)).tolist() == expected
    assert binom_sf(k - 1, n, p).tolist() == expected


def test_binom_sf_is_scipys_at_the_edges() -> None:
    """Below, at and past the support, p at 0 and 1, impossible arguments (NaN)."""
    rng = np.random.default_rng(8)
    n = np.concatenate([rng.integers(0, 50, 400), [5, 5, 5, 5, 3, -1, 4, 0]])
    k = np.concatenate([rng.integers(-3, 55, 400), [-1, 0, 4, 5, 2, 1, 2, 0]])
    p = np.concatenate([rng.choice([0.0, 1.0, 0.3, 0.999, 1e-9], 400),
                        [0.5, 0.0, 1.0, 0.5, 1.5, 0.5, -0.1, 0.5]])
    for args in ((k, n, p), (k.astype(float) + 0.5, n, p), (k, n.astype(float) + 0.25, p)):
        got, expected = binom_sf(*args), np.asarray(stats.binom.sf(*args))
        assert np.array_equal(got, expected, equal_nan=True)


def test_hypergeom_cdf_is_scipys_at_the_edges() -> None:
    """Fisher's tables and beyond: below, inside and past the support, bad arguments."""
    rng = np.random.default_rng(9)
    total = rng.integers(1, 60, 600)
    good = (total * rng.random(600)).round().astype(np.int64)
    drawn = (total * rng.random(600)).round().astype(np.int64)
    k = (drawn * rng.random(600)).round().astype(np.int64) + rng.integers(-2, 3, 600)
    total[:30] = 0  # no population
    good[30:60] = total[30:60] + 1  # more good ones than there are
    drawn[60:90] = -1
    got = hypergeom_cdf(k, total, good, drawn)
    expected = np.asarray(stats.hypergeom.cdf(k, total, good, drawn))
    inside = (expected > 0) & (expected < 1)
    assert inside.sum() > 150 and np.isnan(expected).sum() >= 90  # both reached
    assert np.array_equal(got, expected, equal_nan=True)


def test_the_tails_without_scipys_private_kernels_call_scipy_stats(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A scipy without the private kernels: the same figures, through scipy.stats."""
    from netvantage.analysis import ranktests

    rng = np.random.default_rng(11)
    n = rng.integers(1, 80, 200)
    k = rng.integers(-2, 82, 200)
    p = rng.random(200)
    total = rng.integers(1, 60, 200)
    good = (total * rng.random(200)).round().astype(np.int64)
    drawn = (total * rng.random(200)).round().astype(np.int64)
    with_kernels = binom_sf(k, n, p), hypergeom_cdf(k % 30, total, good, drawn)
    monkeypatch.setattr(ranktests, "_binom_sf", None)
    monkeypatch.setattr(ranktests, "_hypergeom_cdf", None)
    without = binom_sf(k, n, p), hypergeom_cdf(k % 30, total, good, drawn)
    for a, b in zip(with_kernels, without, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
