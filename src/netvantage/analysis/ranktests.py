"""Many one-sided Mann–Whitney U and Fisher exact tests at once, with scipy's p-values.

degrade.py's history test tries tens of thousands of (pair, boundary) splits on a campaign of
a million records; one ``scipy.stats.mannwhitneyu`` or ``fisher_exact`` call per split costs
far more in argument handling than in arithmetic (about 0.6 ms against microseconds).  These
functions take the statistics of every split as arrays and compute the p-values that scipy
(1.17, ``method="auto"``, ``use_continuity=True``) gives for the same samples, bit for bit:

* **Mann–Whitney U, alternative "greater"** (x stochastically greater than y).  As scipy's
  ``method="auto"`` does: the exact null distribution of U when either sample has at most 8
  values and the pooled sample has no ties, else the normal approximation with the tie
  correction and the continuity correction of ½ (scipy's documentation of
  ``mannwhitneyu``).  The exact distribution is counted as integers (the coefficients of
  the Gaussian binomial ``[m+n choose m]_q``, whose coefficient of q^u is the number of
  arrangements with U = u) and turned into probabilities with the same floating-point
  steps as scipy (``special.binom`` for the total, a running sum for the tail).  scipy
  counts with Löffler's recursion in floating point ("Über eine Partition der nat. Zahlen
  und ihr Anwendung beim U-Test", 1983), exact while its sums stay below 2**53; beyond that
  its counts are rounded and :func:`mwu_greater` leaves the split to the caller
  (``unresolved``) rather than give a p-value that differs in the last digits.
* **Fisher's exact test, alternative "greater"** on ``[[a, b], [c, d]]``: 1 when a row or
  a column is empty, else the hypergeometric CDF of b (``scipy.stats.fisher_exact``'s own
  formula), one vectorised ``hypergeom.cdf`` call for all tables.

The binomial and hypergeometric tails (:func:`binom_sf`, :func:`hypergeom_cdf`) are
``scipy.stats``' ``binom.sf`` and ``hypergeom.cdf`` without importing ``scipy.stats``:
that import costs 0.5-0.8 s (it builds every distribution and its docstring), more than
all the tests of a million records, and the distributions' methods do no more than call
the Boost kernels of ``scipy.special._ufuncs`` where the argument is inside the support
and write 0, 1 or NaN elsewhere.  These do the same in the same order.  Those kernels
are private: a scipy without them makes these call ``scipy.stats`` itself.

tests/test_ranktests.py checks all of them against scipy on seeded random samples with
ties, tiny and equal-valued groups, and edge cases of the tails.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

# Private kernels: with a scipy that has them not, these functions call scipy.stats.
_binom_sf: Any = getattr(getattr(special, "_ufuncs", None), "_binom_sf", None)
_hypergeom_cdf: Any = getattr(getattr(special, "_ufuncs", None), "_hypergeom_cdf", None)

__all__ = ["binom_sf", "fisher_greater", "hypergeom_cdf", "mwu_greater", "tied_ranks"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Sums of integers in float64 are exact below this.
_EXACT = 2.0 ** 53
# scipy's method="auto" counts U exactly when a sample has at most this many values.
_SMALL = 8


def tied_ranks(groups: IntArray, values: FloatArray
               ) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
    """Twice the average (tie-corrected) rank of each value within its group, the sum of
    t³ − t over each group's runs of t equal values, and whether the group has a tie.

    ``groups`` are codes 0 … G−1 (G = ``groups.max() + 1``); the ranks come back in the
    order of ``values``.  Twice the rank is an integer (ties share the mean of their ranks,
    a multiple of ½), so the sums made of it are exact.
    """
    n = len(values)
    size = int(groups.max()) + 1 if n else 0
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    new_group = np.r_[True, g[1:] != g[:-1]] if n else np.empty(0, dtype=bool)
    new_run = new_group | np.r_[True, v[1:] != v[:-1]] if n else new_group
    position = np.arange(n, dtype=np.int64)
    group_start = np.maximum.accumulate(np.where(new_group, position, 0)) if n else position
    run_starts = np.flatnonzero(new_run)
    run_stops = np.append(run_starts[1:], n)
    run_of = np.cumsum(new_run) - 1
    first = run_starts[run_of] - group_start  # 0-based ranks within the group
    last = run_stops[run_of] - 1 - group_start
    doubled = np.empty(n, dtype=np.int64)
    doubled[order] = first + last + 2
    t = (run_stops - run_starts).astype(np.int64)
    run_group = g[run_starts]
    tie_term = np.bincount(run_group, weights=(t ** 3 - t).astype(np.float64),
                           minlength=size).astype(np.int64)
    tied = np.bincount(run_group, weights=(t > 1).astype(np.float64), minlength=size) > 0
    return doubled, tie_term, tied


def mwu_greater(n1: IntArray, n2: IntArray, u1: FloatArray, tie_term: IntArray,
                tied: npt.NDArray[np.bool_]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """p-values of ``mannwhitneyu(x, y, alternative="greater")`` from each test's sizes
    (``n1`` = len(x), ``n2`` = len(y), both ≥ 1), U of x, the pooled sample's Σ(t³ − t) and
    whether it has ties; and where scipy's exact count is not exact (p is NaN there).
    """
    n1 = np.asarray(n1, dtype=np.int64)
    n2 = np.asarray(n2, dtype=np.int64)
    u1 = np.asarray(u1, dtype=np.float64)
    p = np.full(len(n1), np.nan)
    unresolved = np.zeros(len(n1), dtype=bool)
    exact = ((n1 <= _SMALL) | (n2 <= _SMALL)) & ~np.asarray(tied, dtype=bool)
    big = ~exact
    if big.any():
        a, b = n1[big], n2[big]
        n = a + b
        # scipy's operations in scipy's order: the last bits depend on it.
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.sqrt(a * b / 12 * ((n + 1) - tie_term[big].astype(np.float64)
                                      / (n * (n - 1)).astype(np.float64)))
            z = ((u1[big] - a * b / 2) - 0.5) / s
        p[big] = special.ndtr(-z)
    for i in np.flatnonzero(exact).tolist():
        m, k = int(min(n1[i], n2[i])), int(max(n1[i], n2[i]))
        table = _exact_table(m, k)
        if table is None:
            unresolved[i] = True
            continue
        pmf, cdf = table
        u = int(u1[i])
        complement = m * k - u
        p[i] = (1.0 - cdf[u]) + pmf[u] if u < complement else cdf[complement]
    return np.clip(p, 0.0, 1.0), unresolved


@lru_cache(maxsize=1024)
def _exact_table(m: int, n: int) -> tuple[FloatArray, FloatArray] | None:
    """P(U = u) and P(U ≤ u) for u ≤ m·n/2 under the null, samples of m ≤ n values; None
    when scipy's own count would not be exact (its sums exceed 2**53)."""
    if math.comb(m + n, m) >= 2 ** 62:
        return None
    half = m * n // 2
    counts = np.zeros(half + 1, dtype=np.int64)
    counts[0] = 1
    for i in range(1, m + 1):
        # × 1/(1 − q^i): a running sum with stride i; × (1 − q^(n+i)): a shifted difference.
        for r in range(i):
            np.cumsum(counts[r::i], out=counts[r::i])
        if n + i <= half:
            counts[n + i:] -= counts[:half + 1 - n - i].copy()
    # scipy's recursion u·f(u) = Σ_{i<u} f(i)·σ(u − i), σ(v) = Σ_{d|v, d≤m} d − Σ_{d|v,
    # n<d≤n+m} d, is exact when every partial sum is, i.e. when max|σ| × Σ f < 2**53.
    sigma = np.zeros(half + 1, dtype=np.int64)
    for d in range(1, m + 1):
        sigma[d::d] += d
    for d in range(n + 1, n + m + 1):
        sigma[d::d] -= d
    if int(np.abs(sigma).max()) * int(counts[:half].sum()) >= _EXACT:
        return None
    pmf = counts.astype(np.float64) / special.binom(m + n, m)
    return pmf, np.cumsum(pmf)


def fisher_greater(a: IntArray, b: IntArray, c: IntArray, d: IntArray) -> FloatArray:
    """p-values of ``fisher_exact([[a, b], [c, d]], alternative="greater")``."""
    a, b, c, d = (np.asarray(x, dtype=np.int64) for x in (a, b, c, d))
    p = np.ones(len(a))
    ok = (a + b > 0) & (c + d > 0) & (a + c > 0) & (b + d > 0)
    if ok.any():
        a, b, c, d = a[ok], b[ok], c[ok], d[ok]
        p[ok] = np.minimum(hypergeom_cdf(b, a + b + c + d, a + b, b + d), 1.0)
    return p


def _whole(x: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Where ``x`` is a whole number (scipy's ``_isintegral``)."""
    return np.asarray(np.equal(x, np.round(x)), dtype=np.bool_)


def binom_sf(k: npt.ArrayLike, n: npt.ArrayLike, p: npt.ArrayLike) -> FloatArray:
    """``scipy.stats.binom.sf(k, n, p)``: P(X > k) for X ~ Binomial(n, p), elementwise.

    1 below the support (k < 0), 0 from n on, NaN where n is not a whole number ≥ 0 or
    p is outside [0, 1]; inside, the Boost kernel scipy calls on ``floor(k)``, clipped to
    [0, 1] as scipy clips it.
    """
    if _binom_sf is None:
        from scipy import stats

        return np.asarray(stats.binom.sf(*(np.asarray(x, dtype=np.float64) for x in (k, n, p))),
                          dtype=np.float64)
    k, n, p = np.broadcast_arrays(np.asarray(k), np.asarray(n), np.asarray(p))
    valid = (n >= 0) & _whole(n) & (p >= 0) & (p <= 1)
    out = np.zeros(k.shape, dtype=np.float64)
    out[~valid | np.isnan(k)] = np.nan
    out[((k < 0) | np.isneginf(k)) & valid] = 1.0
    inside = valid & (k >= 0) & (k < n) & np.isfinite(k)
    if inside.any():
        out[inside] = np.clip(_binom_sf(np.floor(k[inside]), n[inside], p[inside]),
                              0, 1)
    return out


def hypergeom_cdf(k: npt.ArrayLike, total: npt.ArrayLike, good: npt.ArrayLike,
                  drawn: npt.ArrayLike) -> FloatArray:
    """``scipy.stats.hypergeom.cdf(k, total, good, drawn)``: P(X ≤ k) for the number X of
    good ones among ``drawn`` taken from ``total`` of which ``good`` are good.

    0 below the support (max(0, drawn − (total − good)) … min(good, drawn)), 1 from its
    top on, NaN for impossible arguments; inside, scipy's Boost kernel clipped to [0, 1].
    """
    if _hypergeom_cdf is None:
        from scipy import stats

        return np.asarray(stats.hypergeom.cdf(*(np.asarray(x, dtype=np.float64)
                                                 for x in (k, total, good, drawn))),
                          dtype=np.float64)
    k, total, good, drawn = np.broadcast_arrays(np.asarray(k), np.asarray(total),
                                                np.asarray(good), np.asarray(drawn))
    valid = ((total > 0) & (good >= 0) & (drawn >= 0) & (good <= total) & (drawn <= total)
             & _whole(total) & _whole(good) & _whole(drawn))
    low = np.maximum(drawn - (total - good), 0)
    high = np.minimum(good, drawn)
    out = np.zeros(k.shape, dtype=np.float64)
    out[k >= high] = 1.0
    out[np.isneginf(k)] = 0.0
    out[~valid | np.isnan(k)] = np.nan
    inside = valid & (k >= low) & (k < high) & np.isfinite(k)
    if inside.any():
        out[inside] = np.clip(_hypergeom_cdf(k[inside], good[inside], drawn[inside],
                                                     total[inside]), 0, 1)
    return out
