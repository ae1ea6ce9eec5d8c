"""Placement: the best site, the best pair, k sites under a budget, and what each region gains.

The ranking (:mod:`.rank`) answers "which one data centre".  This module answers "which
*set* of sites": a primary and a relay, two MX hosts with priorities, or k points of
presence within a budget.  It works on the very costs the ranking scores — the matrix
regions × sites of :func:`netvantage.analysis.rank.cost_matrix` (ms-equivalents of median
RTT, gaps as NaN) and its bootstrap replicates — so a set of one site scores exactly what
the ranking gives that site.

**Modes** (the cost of region *r* under a set *S*; the set's score is Σ_r w_r cost_r):

* ``anycast`` — each region is served by its best site of *S*: ``min_{s∈S} c[r,s]``.
* ``failover`` — the sites are tried in a fixed priority order (as MX priorities, RFC 5321
  §5.1), the same for every region, best single score first.  Each site is down with the
  probability ``failure_prob`` (independently), so the i-th site serves with probability
  ``f^(i-1) (1-f)``, and with probability ``f^k`` every site is down: the region then
  counts as 100 % failed records (``100 × CostModel.failure_pct`` ms-equivalents, the
  cost model's own price of a failure).  With k = 2: ``(1-f) c_p + f (1-f) c_q + f² × 2000``.
  Every site of the set must serve every weighted region.
* ``relay`` — one site of *S* is the primary; a region reaches it directly or through a
  relay *q* of *S*: ``min(c[r,p], min_q c[r,q] + leg[q,p])``; the primary is the best
  one of the set.  ``leg[q,p]`` is the relay's cost to the primary: measured when the
  campaign holds records whose region is site *q* (an agent at the site) to target *p*
  (or *p* to *q*), else **estimated** from the fibre floor of the distance
  (:func:`netvantage.analysis.geo.rtt_floor_ms`) times the campaign's typical
  inflation (:func:`netvantage.analysis.geo.inflation`), counted as
  ``(CostModel.rtt_p50_ms + CostModel.rtt_p95_ms) × RTT``; the answer says which legs
  were estimated.  Without a measurement or both places, a leg is unknown and that relay
  cannot carry traffic to that primary.

**Coverage, as the ranking.**  A pair without a successful measurement is never used: a
site that never answered a region cannot serve it.  A set that leaves a weighted region
without a site that can serve it is not eligible (the ranking's ``exclude`` rule).
**Service thresholds** (:class:`.rank.Thresholds`) come first, as in the ranking: a pair
missing one does not serve its region when some eligible set of the asked size can serve
every region with pairs that meet them all; only when none can are those pairs used, and
the answer says the thresholds are not met.  One site (k = 1) is therefore the ranking's
winner.

**Search.**  With few enough sets (:data:`EXACT_LIMIT`: 100,000, or 500,000 for relay) every
set is scored, vectorised over chunks of sets.  Otherwise: greedy (add the site that lowers the
score most), then interchange (swap one site for another while the score falls; Teitz and
Bart 1968), then a depth-first branch and bound over the sites in order of their single
score, with a node limit.  Its lower bounds: every region at its cheapest site among those
chosen and those still to come (valid in every mode, since legs cost ≥ 0), and for
anycast also the score of the chosen sites less the sum of the largest single-site gains
still to come (the gains of adding sites to an anycast set are submodular); for relay, the
best primary among those chosen or still possible with each region at its cheapest way to
it through the chosen and still possible sites; for failover,
the chosen and best remaining single scores in priority order.  When the node limit stops
it, the **optimality gap** is (best found − least bound of the unexplored nodes) / best
found; 0 when the search ran to the end.  Written here because no well-kept Python library
solves this small p-median-with-modes problem on a matrix with gaps and reports its gap
(PuLP or OR-Tools would need a MILP per mode and a solver binary).

**Per chosen set**: the weighted score with its 95 % interval (the ranking's bootstrap
replicates: the same records, the same seeded draws; none when a used pair has fewer than
two records, as in the ranking; re-centred on the score, as the ranking's, when the
replicates lie to one side of it: :func:`netvantage.analysis.rank.bias_corrected`), the cost
per region with the best single site and with
the set, the regions that gain most, the best alternatives and how much worse they are,
``p_best`` (share of replicates in which the set beats every alternative kept), and the
**stability to the client mix**: the share of perturbed mixes (Dirichlet draws around
the given weights, concentration 50: about ±15 %, as :func:`netvantage.analysis.rank.stability`)
in which it stays the best of the ``pool`` best sets.

``--cost SITE=EUR`` prices a site (a glob matches several; later keys win) and
``--budget EUR`` bounds the price of a set: the set may then hold from one to k sites.
``--must-include SITE`` forces a site into every set.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import NetvantageError
from ..text import columns
from .rank import CostMatrix, CostModel, Thresholds, bias_corrected, cost_matrix
from .readiness import DEFAULT_FAIL_ON

__all__ = ["EXACT_LIMIT", "MODES", "Choice", "Placement", "PlacementError", "Search",
           "parse_prices", "place", "place_campaign", "place_costs", "relay_legs"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

#: The placement modes (module docstring).
MODES = ("anycast", "failover", "relay")
_COST, _THRESHOLDS = CostModel(), Thresholds()  # frozen: shared defaults are safe
#: Up to this many possible sets, ``method="auto"`` scores every set (per mode: a relay
#: set's score costs k² routes per region, its bound is weaker; bench/placement.py).
EXACT_LIMIT = {"anycast": 100_000, "failover": 100_000, "relay": 500_000}
_CHUNK_CELLS = 4_000_000  # cells of one vectorised evaluation (sets × regions × sites in a set)


class PlacementError(NetvantageError, ValueError):
    """A placement that cannot be asked or has no answer (unknown site, infeasible budget)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Choice:
    """One set of sites and what it costs.

    ``sites``: failover in priority order, relay with the primary first, anycast by name.
    ``per_region``: region, weight, served_by (the site, "q -> p" through a relay, or the
    primary in failover), cost.
    """

    sites: tuple[str, ...]
    score: float
    score_lo: float
    score_hi: float
    price: float | None
    meets_thresholds: bool
    per_region: pd.DataFrame

    def label(self) -> str:
        return " + ".join(self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {"sites": list(self.sites), "score": _json(self.score),
                "score_lo": _json(self.score_lo), "score_hi": _json(self.score_hi),
                "price": _json(self.price) if self.price is not None else None,
                "meets_thresholds": self.meets_thresholds,
                "per_region": _records(self.per_region)}


@dataclass(frozen=True)
class Search:
    """How the set was found: ``method`` "exhaustive" or "greedy + branch and bound";
    ``evaluated`` sets scored (or nodes explored); ``gap`` the proven optimality gap
    (0: optimal), ``bound`` the least lower bound left."""

    method: str
    candidates: int
    sets: int
    evaluated: int
    gap: float
    bound: float
    greedy_score: float

    def text(self) -> str:
        if self.method == "exhaustive":
            return f"exhaustive: all {self.sets:,} sets scored (optimal)"
        proven = ("optimal (the search ran to the end)" if self.gap <= 0 else
                  f"optimality gap {self.gap:.2%} (node limit reached; the best may be "
                  "up to that much better)")
        return (f"greedy + interchange + branch and bound over {self.candidates} sites "
                f"({self.sets:,} possible sets, {self.evaluated:,} nodes): {proven}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "candidates": self.candidates, "sets": self.sets,
                "evaluated": self.evaluated, "gap": _json(self.gap),
                "bound": _json(self.bound), "greedy_score": _json(self.greedy_score)}


@dataclass(frozen=True)
class Placement:
    """The answer of :func:`place`: the best set, the best single site, alternatives, gains."""

    mode: str
    k: int
    weights: dict[str, float]
    best: Choice | None
    single: Choice | None
    alternatives: list[Choice]
    per_region: pd.DataFrame  # region, weight, single_site, single_cost, served_by, cost, gain
    search: Search
    ci_basis: str
    p_best: float
    stability: float
    stability_pool: int
    legs: pd.DataFrame | None  # relay: from, to, cost, rtt_ms, basis
    failure_prob: float | None
    budget: float | None
    notes: list[str] = field(default_factory=list)

    def gains(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` regions that gain most from the set over the best single site."""
        pr = self.per_region
        return pr[pr["gain"] > 0].sort_values(["gain", "region"],
                                              ascending=[False, True]).head(n)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "sites": self.k, "weights": self.weights,
                "best": self.best.to_dict() if self.best else None,
                "single": self.single.to_dict() if self.single else None,
                "alternatives": [a.to_dict() for a in self.alternatives],
                "per_region": _records(self.per_region), "search": self.search.to_dict(),
                "ci_basis": self.ci_basis, "p_best": _json(self.p_best),
                "stability": _json(self.stability), "stability_pool": self.stability_pool,
                "legs": _records(self.legs) if self.legs is not None else None,
                "failure_prob": self.failure_prob, "budget": self.budget,
                "notes": self.notes}

    def text_lines(self) -> list[str]:
        how = {"anycast": "each region served by its best site of the set",
               "failover": f"priority order, each site down with probability "
                           f"{self.failure_prob or 0.0:g}",
               "relay": "one primary; a region reaches it directly or through a relay"}
        lines = [f"Where should the service live? {self.k} site(s), {self.mode} "
                 f"({how[self.mode]})",
                 "  weights: " + ", ".join(f"{r} {w:.2f}" for r, w in self.weights.items())]
        if self.budget is not None:
            lines.append(f"  budget: {self.budget:g} EUR (sets of 1 to {self.k} sites)")
        lines.append(f"  search: {self.search.text()}")
        if self.best is None:
            lines.append("  no set of sites can serve every weighted region (see the notes)")
            lines += [f"note: {n}" for n in self.notes]
            return lines
        b = self.best
        ci = ("no interval" if math.isnan(b.score_lo) else
              f"95% CI {b.score_lo:.0f}-{b.score_hi:.0f}")
        lines += ["", f"best set: {b.label()}  score {b.score:.0f} ({ci}"
                  + (f"; p(best) {self.p_best:.0%}" if not math.isnan(self.p_best) else "")
                  + ")" + ("" if b.price is None else f"  price {b.price:g} EUR")
                  + ("" if b.meets_thresholds else "  [misses a service threshold]")]
        if self.single is not None:
            s = self.single
            diff = s.score - b.score
            lines.append(f"best single site: {s.label()}  score {s.score:.0f}"
                         + ("" if len(b.sites) == 1 else
                            f"  -> the set is {diff:.0f} better ({diff / s.score:.0%})"))
        if self.stability_pool == 1:
            lines.append("stability: the only eligible set (meeting every threshold) of its "
                         "size: it stays best whatever the mix")
        elif not math.isnan(self.stability):
            lines.append(f"stability: stays best in {self.stability:.0%} of perturbed client "
                         f"mixes (among the {self.stability_pool} best sets)")
        lines.append(f"interval: {self.ci_basis}")
        lines += ["", "Per region (cost in ms-equivalents; lower is better):"]
        rows: list[tuple[str, ...]] = [
            ("REGION", "WEIGHT", "ONE SITE", "COST", "WITH THE SET", "COST", "GAIN")]
        for r in self.per_region.to_dict(orient="records"):
            rows.append((str(r["region"]), f"{float(r['weight']):.2f}", str(r["single_site"]),
                         _whole(r["single_cost"]), str(r["served_by"]), _whole(r["cost"]),
                         _whole(r["gain"])))
        lines += ["  " + line for line in columns(rows)]
        top = self.gains(3)
        if len(top) and len(b.sites) > 1:
            lines.append("  gain most: " + ", ".join(
                f"{r['region']} ({float(r['gain']):.0f}, "
                f"{float(r['gain']) / float(r['single_cost']):.0%})"
                for r in top.to_dict(orient="records")))
        if self.alternatives:
            lines += ["", "Alternatives:"]
            rows = [("SET", "SCORE", "WORSE BY", "THRESHOLDS")]
            for a in self.alternatives:
                rows.append((a.label(), _whole(a.score),
                             f"{a.score - b.score:+.0f} ({(a.score - b.score) / b.score:+.1%})",
                             "met" if a.meets_thresholds else "not met"))
            lines += ["  " + line for line in columns(rows)]
        if self.legs is not None and len(self.legs):
            lines += ["", "Relay legs (relay -> primary):"]
            rows = [("FROM", "TO", "RTT", "COST", "BASIS")]
            for leg in self.legs.to_dict(orient="records"):
                rows.append((str(leg["source"]), str(leg["dest"]), _whole(leg["rtt_ms"]),
                             _whole(leg["cost"]), str(leg["basis"])))
            lines += ["  " + line for line in columns(rows)]
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def to_text(self) -> str:
        return "\n".join(self.text_lines())


def _json(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _whole(x: Any) -> str:
    return "-" if x is None or pd.isna(x) or not math.isfinite(float(x)) else f"{float(x):.0f}"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({str(k): (_json(v) if isinstance(v, float) else v) for k, v in row.items()})
    return out


# --------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class _Problem:
    """Everything the search needs, as arrays; unavailable pairs cost +inf."""

    regions: list[str]
    sites: list[str]
    w: FloatArray  # regions (positive, sum 1)
    cost: FloatArray  # regions × sites, inf = cannot serve
    mode: str
    legs: FloatArray  # sites × sites: relay q -> primary p, inf unknown, 0 on the diagonal
    fail: float
    outage: float
    price: FloatArray | None
    budget: float | None
    must: tuple[int, ...]
    k: int

    def sizes(self) -> range:
        low = max(1, len(self.must))
        return range(low if self.budget is not None else self.k, self.k + 1)


def _set_costs(p: _Problem, c: FloatArray, sets: IntArray) -> tuple[FloatArray, IntArray]:
    """Per-region point costs (n sets × regions) of ``sets`` (n × m site indices) under the
    cost matrix ``c`` (regions × sites), and per set the order its sites are used in
    (failover: priority; relay: the primary first).  A region no site of a set can serve
    costs +inf."""
    n, m = sets.shape
    sub = np.moveaxis(c[:, sets], 0, -1)  # n × m × regions
    order = np.broadcast_to(np.arange(m), (n, m)).copy()
    if p.mode == "anycast" or (p.mode == "relay" and m == 1):
        return np.asarray(sub.min(axis=1)), order
    if p.mode == "failover":
        single = _single_scores(p)
        order = np.argsort(single[sets], axis=1, kind="stable")
        ordered = np.take_along_axis(sub, order[:, :, np.newaxis], axis=1)
        with np.errstate(invalid="ignore"):
            total = (np.einsum("nmr,m->nr", ordered, _failover_probs(p.fail, m))
                     + p.fail ** m * p.outage)
        return np.asarray(np.where(np.isinf(ordered).any(axis=1), np.inf, total)), order
    # relay: for each primary a of the set, every region's best of direct and via relays
    legs = p.legs[sets[:, :, np.newaxis], sets[:, np.newaxis, :]]  # n × q × a
    per_primary = (sub[:, :, np.newaxis, :] + legs[..., np.newaxis]).min(axis=1)  # n × a × r
    with np.errstate(invalid="ignore"):
        scores = np.where(np.isinf(per_primary).any(axis=-1), np.inf, per_primary @ p.w)
    best = np.argmin(scores, axis=1)
    order = np.argsort(np.arange(m)[np.newaxis, :] != best[:, np.newaxis], axis=1,
                       kind="stable")
    return np.asarray(per_primary[np.arange(n), best]), order


def _single_scores(p: _Problem) -> FloatArray:
    """Each site's score alone (inf where it cannot serve some region)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(np.where(np.isinf(p.cost).any(axis=0), np.inf,
                                   p.w @ np.where(np.isinf(p.cost), 0.0, p.cost)))


def _failover_probs(f: float, m: int) -> FloatArray:
    return np.array([f ** i * (1 - f) for i in range(m)])


def _fixed_costs(p: _Problem, c: FloatArray, ordered: Sequence[int]) -> FloatArray:
    """Per-region costs (…, regions) of one set whose order is fixed (failover priority,
    relay primary first), for point or replicate costs alike."""
    idx = list(ordered)
    sub = c[..., :, idx]  # (…, regions, m)
    if p.mode == "anycast":
        return np.asarray(sub.min(axis=-1))
    if p.mode == "failover":
        probs = _failover_probs(p.fail, len(idx))
        with np.errstate(invalid="ignore"):
            total = sub @ probs + p.fail ** len(idx) * p.outage
        return np.asarray(np.where(np.isinf(sub).any(axis=-1), np.inf, total))
    legs = p.legs[idx, idx[0]]  # each site of the set -> the primary (0 for the primary)
    return np.asarray((sub + legs).min(axis=-1))


def _scores(p: _Problem, per_region: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore"):
        total = per_region @ p.w
    return np.asarray(np.where(np.isinf(per_region).any(axis=-1), np.inf, total))


# --------------------------------------------------------------------------- search


def _n_sets(p: _Problem) -> int:
    free = len(p.sites) - len(p.must)
    return sum(math.comb(free, m - len(p.must)) for m in p.sizes())


def _combos(p: _Problem, size: int) -> Iterator[IntArray]:
    """Chunks of every set of ``size`` sites holding the forced ones (n × size)."""
    free = [j for j in range(len(p.sites)) if j not in p.must]
    extra = size - len(p.must)
    chunk = max(1, _CHUNK_CELLS // max(1, len(p.regions) * size * size))
    it = itertools.combinations(free, extra)
    while True:
        block = list(itertools.islice(it, chunk))
        if not block:
            return
        arr = np.array(block, dtype=np.intp).reshape(len(block), extra)
        if p.must:
            arr = np.hstack([np.broadcast_to(np.array(p.must, dtype=np.intp),
                                              (len(block), len(p.must))), arr])
        yield arr


def _affordable(p: _Problem, sets: IntArray) -> npt.NDArray[np.bool_]:
    if p.price is None or p.budget is None:
        return np.ones(len(sets), dtype=bool)
    return np.asarray(p.price[sets].sum(axis=1) <= p.budget + 1e-9, dtype=bool)


class _Top:
    """The ``n`` best (score, set in use order) seen, no set twice."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.heap: list[tuple[float, tuple[int, ...]]] = []
        self.seen: set[frozenset[int]] = set()

    def push(self, score: float, ordered: tuple[int, ...]) -> None:
        key = frozenset(ordered)
        if not math.isfinite(score) or key in self.seen:
            return
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, (-score, ordered))
            self.seen.add(key)
        elif -self.heap[0][0] > score:
            _, old = heapq.heapreplace(self.heap, (-score, ordered))
            self.seen.discard(frozenset(old))
            self.seen.add(key)

    def worst(self) -> float:
        return -self.heap[0][0] if len(self.heap) >= self.n else math.inf

    def best(self) -> list[tuple[float, tuple[int, ...]]]:
        return sorted(((-s, o) for s, o in self.heap), key=lambda x: (x[0], x[1]))


def _push_chunk(p: _Problem, top: _Top, sets: IntArray) -> None:
    sets = sets[_affordable(p, sets)]
    if not len(sets):
        return
    per, order = _set_costs(p, p.cost, sets)
    scores = _scores(p, per)
    keep = np.flatnonzero(scores <= top.worst())
    for i in keep[np.argsort(scores[keep], kind="stable")][:top.n]:
        top.push(float(scores[i]), tuple(int(sets[i, j]) for j in order[i]))


def _exhaustive(p: _Problem, pool: int) -> tuple[_Top, Search]:
    top = _Top(pool)
    n = 0
    for size in p.sizes():
        for sets in _combos(p, size):
            n += len(sets)
            _push_chunk(p, top, sets)
    best = top.best()
    score = best[0][0] if best else math.inf
    return top, Search("exhaustive", len(p.sites), n, n, 0.0, score, math.nan)


def _score_of(p: _Problem, sites: Sequence[int]) -> tuple[float, tuple[int, ...]]:
    per, order = _set_costs(p, p.cost, np.array([list(sites)], dtype=np.intp))
    return float(_scores(p, per)[0]), tuple(int(sites[j]) for j in order[0])


def _greedy(p: _Problem, top: _Top) -> tuple[list[int], float]:
    """Greedy additions, then interchange; every set scored goes to ``top``."""
    chosen = list(p.must)
    n = len(p.sites)
    while len(chosen) < p.k:
        rest = [j for j in range(n) if j not in chosen]
        if not rest:
            break
        sets = np.array([[*chosen, j] for j in rest], dtype=np.intp)
        sets = sets[_affordable(p, sets)]
        if not len(sets):
            break
        per, order = _set_costs(p, p.cost, sets)
        scores = _scores(p, per)
        if chosen and not np.isfinite(scores).any():
            # No single addition covers every region yet: add the one covering most.
            covered = np.isfinite(per).sum(axis=1)
            i = int(np.argmax(covered))
        else:
            i = int(np.argmin(scores))
        for row, o, s in zip(sets, order, scores, strict=True):
            top.push(float(s), tuple(int(row[j]) for j in o))
        chosen = [int(x) for x in sets[i]]
    score, _ = _score_of(p, chosen) if chosen else (math.inf, ())
    free = [j for j in chosen if j not in p.must]
    improved = True
    while improved and free:
        improved = False
        swaps = [(a, b) for a in free for b in range(n) if b not in chosen]
        if not swaps:
            break
        sets = np.array([[b if x == a else x for x in chosen] for a, b in swaps], dtype=np.intp)
        ok = _affordable(p, sets)
        sets = sets[ok]
        if not len(sets):
            break
        per, order = _set_costs(p, p.cost, sets)
        scores = _scores(p, per)
        for row, o, s in zip(sets, order, scores, strict=True):
            top.push(float(s), tuple(int(row[j]) for j in o))
        i = int(np.argmin(scores))
        if scores[i] < score - 1e-9:
            chosen = [int(x) for x in sets[i]]
            score = float(scores[i])
            free = [j for j in chosen if j not in p.must]
            improved = True
    return chosen, score


def _branch_and_bound(p: _Problem, pool: int, node_limit: int) -> tuple[_Top, Search]:
    """Greedy + interchange for an incumbent, then depth-first branch and bound."""
    top = _Top(pool)
    _, greedy_score = _greedy(p, top)
    single = _single_scores(p)
    free = [j for j in range(len(p.sites)) if j not in p.must]
    order = sorted(free, key=lambda j: (float(single[j]), j))
    cols = p.cost[:, order]  # regions × free sites in search order
    # suffix[i]: each region's cheapest site among order[i:]
    suffix = np.full((len(order) + 1, len(p.regions)), np.inf)
    for i in range(len(order) - 1, -1, -1):
        suffix[i] = np.minimum(suffix[i + 1], cols[:, i])
    sizes = list(p.sizes())
    prices = p.price[order] if p.price is not None else None
    must_price = float(p.price[list(p.must)].sum()) if p.price is not None and p.must else 0.0
    relay = p.mode == "relay"
    n_sites, n_regions = len(p.sites), len(p.regions)
    if relay:
        # via[q, a, r]: region r reaching primary a through site q (q = a: directly);
        # rsuffix[i][a]: each region's cheapest way to primary a through order[i:].
        via = p.cost.T[:, np.newaxis, :] + p.legs[:, :, np.newaxis]
        rsuffix = np.full((len(order) + 1, n_sites, n_regions), np.inf)
        future = np.zeros((len(order) + 1, n_sites), dtype=bool)
        for i in range(len(order) - 1, -1, -1):
            rsuffix[i] = np.minimum(rsuffix[i + 1], via[order[i]])
            future[i] = future[i + 1]
            future[i, order[i]] = True

    def relay_bound(chosen: list[int], start: int, rcover: FloatArray) -> float:
        """Relay: the best primary among those chosen or still possible, each region at its
        cheapest way to it through the chosen and still possible sites."""
        room = p.k - len(chosen)
        reach = np.minimum(rcover, rsuffix[start]) if room > 0 else rcover
        allowed = future[start].copy() if room > 0 else np.zeros(n_sites, dtype=bool)
        allowed[chosen] = True
        with np.errstate(invalid="ignore"):
            per = reach[allowed] @ p.w
        return float(np.min(per)) if len(per) else math.inf

    def bound(chosen: list[int], start: int, cover: FloatArray, spent: float,
              rcover: FloatArray | None = None) -> float:
        """A lower bound of every set that adds sites of order[start:] to ``chosen``."""
        room = p.k - len(chosen)
        reach = np.minimum(cover, suffix[start]) if room > 0 else cover
        if np.isinf(reach).any():
            return math.inf
        base = float(reach @ p.w)
        if relay and rcover is not None:
            return max(base, relay_bound(chosen, start, rcover))
        if p.mode == "anycast":
            if room > 0 and np.isfinite(cover).all():
                rest = cols[:, start:]
                if prices is not None and p.budget is not None:
                    rest = rest[:, prices[start:] <= p.budget - spent + 1e-9]
                gains = np.sort(p.w @ np.maximum(cover[:, np.newaxis] - rest, 0.0))[::-1]
                base = max(base, float(cover @ p.w) - float(gains[:room].sum()))
            return base
        # failover: every site serves every region; Σ p_i c_i ≥ (1 - f^m) min_i c_i
        if any(np.isinf(single[j]) for j in chosen):
            return math.inf
        ms = [m for m in sizes if m >= len(chosen)]
        lb = min((1 - p.fail ** m) * base + p.fail ** m * p.outage for m in ms)
        if p.budget is None:
            have = sorted([float(single[j]) for j in chosen]
                          + [float(single[order[i]])
                             for i in range(start, min(start + room, len(order)))])
            if len(have) < p.k:
                return math.inf
            lb = max(lb, float(np.dot(_failover_probs(p.fail, p.k), have))
                     + p.fail ** p.k * p.outage)
        return lb

    cover0 = (p.cost[:, list(p.must)].min(axis=1) if p.must
              else np.full(len(p.regions), np.inf))
    rcover0 = None
    if relay:
        rcover0 = (via[list(p.must)].min(axis=0) if p.must
                   else np.full((n_sites, n_regions), np.inf))
    stack: list[tuple[float, list[int], int, FloatArray, float, FloatArray | None]] = [
        (bound(list(p.must), 0, cover0, must_price, rcover0), list(p.must), 0, cover0,
         must_price, rcover0)]
    nodes = 0

    def incumbent() -> float:
        return min((-s for s, _ in top.heap), default=math.inf)

    while stack and nodes < node_limit:
        lb, chosen, start, cover, spent, rcover = stack.pop()
        if lb >= incumbent() - 1e-9:
            continue
        nodes += 1
        if len(chosen) in sizes:
            top.push(*_score_of(p, chosen))
        if len(chosen) >= p.k:
            continue
        best = incumbent()
        children = []
        for i in range(start, len(order)):
            spend = spent + (float(prices[i]) if prices is not None else 0.0)
            if p.budget is not None and spend > p.budget + 1e-9:
                continue
            nxt = [*chosen, order[i]]
            ncover = np.minimum(cover, cols[:, i])
            nrcover = np.minimum(rcover, via[order[i]]) if rcover is not None else None
            lb_child = bound(nxt, i + 1, ncover, spend, nrcover)
            if lb_child < best - 1e-9:
                children.append((lb_child, nxt, i + 1, ncover, spend, nrcover))
        children.sort(key=lambda c: -c[0])  # depth first, the most promising on top
        stack.extend(children)
    best_score = incumbent()
    left = min((s[0] for s in stack), default=math.inf)
    lower = min(best_score, left)
    gap = (0.0 if not math.isfinite(best_score) or lower >= best_score
           else (best_score - lower) / best_score)
    return top, Search("greedy + branch and bound", len(p.sites), _n_sets(p), nodes, gap,
                       lower, greedy_score)


# --------------------------------------------------------------------------- entry points


def place_costs(
    cost: pd.DataFrame,
    weights: Mapping[str, float],
    *,
    sites: int = 2,
    mode: str = "anycast",
    meets: pd.DataFrame | None = None,
    replicates: FloatArray | None = None,
    rtt_records: pd.DataFrame | None = None,
    legs: pd.DataFrame | None = None,
    prices: Mapping[str, float] | None = None,
    budget: float | None = None,
    must_include: Sequence[str] = (),
    failure_prob: float = 0.01,
    outage_cost: float = 100.0 * _COST.failure_pct,
    alternatives: int = 5,
    pool: int = 200,
    n_draws: int = 500,
    concentration: float = 50.0,
    seed: int = 0,
    method: str = "auto",
    exact_limit: int | None = None,
    node_limit: int = 200_000,
) -> Placement:
    """The best set of ``sites`` sites for a cost table (index: regions, columns: sites;
    NaN: the pair cannot serve), by the rules of the module docstring.

    ``meets`` (same shape, bool): the pair meets every service threshold (default: all).
    ``replicates`` (replicates × regions × sites, in the table's order) give the interval
    and ``p_best``; ``rtt_records`` (same shape) the "two records per pair" rule.
    ``legs`` (sites × sites, the relay's cost to the primary; NaN unknown) for ``relay``,
    with an optional frame of the same shape in ``legs.attrs["basis"]``.
    ``method``: "auto" (exhaustive up to ``exact_limit`` sets, by default
    :data:`EXACT_LIMIT` of the mode), "exhaustive" or
    "heuristic" (greedy + branch and bound with ``node_limit`` nodes).
    """
    if mode not in MODES:
        raise PlacementError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not 0.0 <= failure_prob <= 0.5:
        raise PlacementError(f"failure probability must be in [0, 0.5], not {failure_prob:g}"
                             " (a site down more than half the time is no primary)")
    if method not in ("auto", "exhaustive", "heuristic"):
        raise PlacementError(f"method must be auto, exhaustive or heuristic, not {method!r}")
    names = [str(s) for s in cost.columns]
    if sites < 1:
        raise PlacementError(f"--sites must be ≥ 1, not {sites}")
    if sites > len(names):
        raise PlacementError(f"--sites {sites}: the data hold only {len(names)} candidate "
                             f"site(s): {', '.join(names)}")
    unknown = [s for s in must_include if s not in names]
    if unknown:
        raise PlacementError(f"--must-include: {', '.join(unknown)} is no candidate site of "
                             f"the data (sites: {', '.join(names)})")
    must = tuple(dict.fromkeys(names.index(s) for s in must_include))
    if len(must) > sites:
        raise PlacementError(f"--must-include names {len(must)} sites but --sites is {sites}")
    w_all = {str(r): float(v) for r, v in weights.items() if float(v) > 0}
    if not w_all:
        raise PlacementError("a client mix needs a positive weight somewhere")
    total = sum(w_all.values())
    regions = [str(r) for r in cost.index if str(r) in w_all]
    missing = sorted(set(w_all) - set(regions))
    notes: list[str] = []
    if missing:
        raise PlacementError(f"weighted region(s) without any record: {', '.join(missing)}")
    ri = [list(map(str, cost.index)).index(r) for r in regions]
    w = np.array([w_all[r] / total for r in regions])
    raw = cost.to_numpy(dtype=np.float64)[ri]
    ok_pairs = np.isfinite(raw)
    meet = (meets.to_numpy(dtype=bool)[ri] if meets is not None
            else np.ones_like(ok_pairs))
    price_vec = None
    if prices is not None:
        price_vec = np.array([float(prices.get(s, math.nan)) for s in names])
    if budget is not None:
        if price_vec is None or np.isnan(price_vec).any():
            unpriced = [s for s, x in zip(names, price_vec if price_vec is not None
                                          else [math.nan] * len(names), strict=True)
                        if math.isnan(x)]
            raise PlacementError(f"--budget needs a price for every candidate site: give "
                                 f"--cost for {', '.join(unpriced)} (a glob such as "
                                 "'dc-*=100' prices several)")
        must_price = float(price_vec[list(must)].sum())
        cheapest = float(np.sort(price_vec)[0])
        if must_price > budget + 1e-9 or cheapest > budget + 1e-9:
            raise PlacementError(
                f"--budget {budget:g} EUR is infeasible: "
                + (f"the forced sites alone cost {must_price:g} EUR" if must_price > budget
                   else f"the cheapest site costs {cheapest:g} EUR"))
    leg_mat = np.zeros((len(names), len(names)))
    if mode == "relay":
        if legs is not None:
            leg_mat = legs.reindex(index=names, columns=names).to_numpy(dtype=np.float64)
            leg_mat = np.where(np.isnan(leg_mat), np.inf, leg_mat)
            np.fill_diagonal(leg_mat, 0.0)
        else:
            leg_mat = np.full((len(names), len(names)), np.inf)
            np.fill_diagonal(leg_mat, 0.0)
            notes.append("no relay legs (no site-to-site measurements and no locations): a "
                         "relay cannot carry traffic, every region goes to the primary")

    def problem(usable: npt.NDArray[np.bool_], k: int, mst: tuple[int, ...]) -> _Problem:
        return _Problem(regions, names, w, np.where(usable, raw, np.inf), mode, leg_mat,
                        failure_prob, outage_cost, price_vec, budget if k == sites else None,
                        mst, k)

    limit = exact_limit if exact_limit is not None else EXACT_LIMIT[mode]

    def solve(pr: _Problem) -> tuple[_Top, Search]:
        n = _n_sets(pr)
        if method == "exhaustive" or (method == "auto" and n <= limit):
            return _exhaustive(pr, pool)
        return _branch_and_bound(pr, pool, node_limit)

    # Thresholds first, as the ranking: pairs missing one serve only if nothing else can.
    strict = problem(ok_pairs & meet, sites, must)
    top, search = solve(strict)
    met = bool(top.heap)
    if not met:
        top, search = solve(problem(ok_pairs, sites, must))
        if top.heap and meets is not None:
            notes.append("no eligible set of sites meets every service threshold in every "
                         "region: pairs missing a threshold serve (the best set is marked)")
    elif meets is not None and not meet[ok_pairs].all():
        loose_top, _ = solve(problem(ok_pairs, sites, must))
        for s, o in loose_top.best()[:alternatives]:
            if frozenset(o) not in top.seen:
                top.seen.add(frozenset(o))
                top.heap.append((-s, o))  # shown after the sets that meet thresholds
    used = problem(ok_pairs & meet, sites, must) if met else problem(ok_pairs, sites, must)
    # The best single site, by the same rules (the ranking's winner).
    s_strict = problem(ok_pairs & meet, 1, ())
    s_top, _ = _exhaustive(s_strict, 1)
    single_met = bool(s_top.heap)
    if not single_met:
        s_strict = problem(ok_pairs, 1, ())
        s_top, _ = _exhaustive(s_strict, 1)

    rrec = rtt_records.to_numpy()[ri] if rtt_records is not None else None
    reps = None
    if replicates is not None:
        reps = replicates[:, ri, :]
    weights_out = {r: float(x) for r, x in zip(regions, w, strict=True)}
    legs_frame = _legs_frame(legs, names) if mode == "relay" else None
    if not top.heap:
        orphans = [r for r, row in zip(regions, ok_pairs, strict=True) if not row.any()]
        notes.append("no set of the asked size can serve every weighted region (coverage: a "
                     "site that never answered a region cannot serve it)"
                     + (f"; no site at all answered {', '.join(orphans)}" if orphans else ""))
        empty = pd.DataFrame(columns=["region", "weight", "single_site", "single_cost",
                                      "served_by", "cost", "gain"])
        return Placement(mode, sites, weights_out, None, None, [], empty, search,
                         "no set", math.nan, math.nan, 0, legs_frame,
                         failure_prob if mode == "failover" else None, budget, notes)

    ranked = _ordered(top, met, used)
    met_of = {frozenset(o): m for _, o, m in ranked}
    best_order = ranked[0][1]

    def choice(order: tuple[int, ...], pr: _Problem, thresholds_met: bool) -> Choice:
        per = _fixed_costs(pr, pr.cost, order)
        score = float(per @ w)
        lo = hi = math.nan
        if reps is not None:
            rep = np.where(np.isfinite(pr.cost)[np.newaxis], reps, np.inf)
            boot = _fixed_costs(pr, rep, order)
            with np.errstate(invalid="ignore"):
                bs = np.where(np.isinf(boot).any(axis=-1), np.nan, boot @ w)
            if _resampled(pr, order, rrec) and np.isfinite(bs).any():
                # Re-centred on the score when it lies outside its own interval, as the
                # ranking's (upper quantiles of few records bias the replicates low).
                centred, _ = bias_corrected(bs[:, np.newaxis], np.array([score]),
                                            np.ones(1, dtype=bool))
                lo, hi = (float(x) for x in np.nanpercentile(centred[:, 0], [2.5, 97.5]))
        served = [_served_by(pr, order, i) for i in range(len(regions))]
        frame = pd.DataFrame({"region": regions, "weight": w, "served_by": served,
                              "cost": per})
        price = (float(price_vec[list(order)].sum()) if price_vec is not None else None)
        return Choice(tuple(names[j] for j in order), score, lo, hi, price, thresholds_met,
                      frame)

    best = choice(best_order, used, met_of[frozenset(best_order)])
    alts = [choice(o, used if m == met else problem(ok_pairs, sites, must), m)
            for _, o, m in ranked[1:alternatives + 1]]
    single = choice(s_top.best()[0][1], s_strict, single_met)
    per_region = pd.DataFrame({
        "region": regions, "weight": w,
        "single_site": single.sites[0], "single_cost": single.per_region["cost"].to_numpy(),
        "served_by": best.per_region["served_by"].to_numpy(),
        "cost": best.per_region["cost"].to_numpy()})
    per_region["gain"] = per_region["single_cost"] - per_region["cost"]
    basis, p_best = _interval(used, ranked, reps, rrec, best)
    if (per_region["gain"] < -1e-9).any():
        notes.append("a negative gain: the set sends that region to a site meeting every "
                     "service threshold instead of the single site's pair that misses one")
    share, pool_n = _mix_stability(used, ranked, n_draws, concentration, seed)
    if mode == "relay" and legs_frame is not None and (legs_frame["basis"] != "measured").any():
        notes.append("relay legs without site-to-site measurements are ESTIMATED: fibre floor "
                     "of the distance × the campaign's typical inflation (see Relay legs)")
    return Placement(mode, sites, weights_out, best, single, alts, per_region, search,
                     basis, p_best, share, pool_n, legs_frame,
                     failure_prob if mode == "failover" else None, budget, notes)


def _ordered(top: _Top, met: bool, pr: _Problem
             ) -> list[tuple[float, tuple[int, ...], bool]]:
    """Sets best first: those of the phase used (sorted), then any appended loose ones."""
    inside = sorted(((-s, o) for s, o in top.heap if _in_phase(pr, o)),
                    key=lambda x: (x[0], x[1]))
    outside = sorted(((-s, o) for s, o in top.heap if not _in_phase(pr, o)),
                     key=lambda x: (x[0], x[1]))
    return [(s, o, met) for s, o in inside] + [(s, o, False) for s, o in outside]


def _in_phase(pr: _Problem, order: tuple[int, ...]) -> bool:
    per = _fixed_costs(pr, pr.cost, order)
    return bool(np.isfinite(per).all())


def _served_by(pr: _Problem, order: tuple[int, ...], i: int) -> str:
    names = pr.sites
    row = pr.cost[i, list(order)]
    if pr.mode == "anycast":
        return names[order[int(np.argmin(row))]]
    if pr.mode == "failover" or len(order) == 1:
        return names[order[0]]
    via = row + pr.legs[list(order), order[0]]
    j = int(np.argmin(via))
    return names[order[0]] if j == 0 else f"{names[order[j]]} -> {names[order[0]]}"


def _resampled(pr: _Problem, order: tuple[int, ...], rrec: npt.NDArray[Any] | None) -> bool:
    if rrec is None:
        return True
    used = np.isfinite(pr.cost[:, list(order)])
    return bool((rrec[:, list(order)][used] >= 2).all())


def _interval(pr: _Problem, ranked: list[tuple[float, tuple[int, ...], bool]],
              reps: FloatArray | None, rrec: npt.NDArray[Any] | None,
              best: Choice) -> tuple[str, float]:
    if reps is None:
        return "no bootstrap (n_boot = 0)", math.nan
    if math.isnan(best.score_lo):
        return ("fewer than two records in some pair of the set: no bootstrap interval "
                "(as the ranking)"), math.nan
    rep = np.where(np.isfinite(pr.cost)[np.newaxis], reps, np.inf)
    sets = [o for _, o, m in ranked if _in_phase(pr, o)][:50]
    with np.errstate(invalid="ignore"):
        boots = []
        for o in sets:
            per = _fixed_costs(pr, rep, o)
            boots.append(np.where(np.isinf(per).any(axis=-1), np.nan, per @ pr.w))
    scores = np.array([float(_fixed_costs(pr, pr.cost, o) @ pr.w) for o in sets])
    counted = np.array([_resampled(pr, o, rrec) for o in sets], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a set without any replicate
        # The ranking's correction, so that p(best) speaks of the scores that are ordered.
        table, bias = bias_corrected(np.array(boots).T, scores, counted)  # replicates × sets
    filled = np.where(np.isnan(table), np.inf, table)
    p_best = (float((np.argmin(filled, axis=1) == 0).mean()) if len(sets) > 1 else 1.0)
    corrected = (", bias-corrected as the ranking's (the replicates re-centred on the "
                 "scores)" if not np.isnan(bias).all() else "")
    return ("bootstrap of the records (the ranking's replicates)" + corrected
            + f"; p(best) among the {len(sets)} best sets"), p_best


def _mix_stability(pr: _Problem, ranked: list[tuple[float, tuple[int, ...], bool]],
                   n_draws: int, concentration: float, seed: int) -> tuple[float, int]:
    sets = [o for _, o, m in ranked if _in_phase(pr, o)]
    if n_draws <= 0 or not sets:
        return math.nan, 0
    if len(sets) == 1:
        return 1.0, 1
    per = np.array([_fixed_costs(pr, pr.cost, o) for o in sets])  # sets × regions
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(concentration * pr.w, size=n_draws) if len(pr.w) > 1 else \
        np.ones((n_draws, 1))
    scores = draws @ per.T  # draws × sets
    return float((np.argmin(scores, axis=1) == 0).mean()), len(sets)


def _legs_frame(legs: pd.DataFrame | None, names: list[str]) -> pd.DataFrame:
    rows = []
    basis = legs.attrs.get("basis") if legs is not None else None
    rtt = legs.attrs.get("rtt_ms") if legs is not None else None
    for a in names:
        for b in names:
            if a == b or legs is None:
                continue
            value = (float(cast(Any, legs.at[a, b])) if a in legs.index and b in legs.columns
                     else math.nan)
            rows.append({"source": a, "dest": b, "cost": value,
                         "rtt_ms": float(rtt.at[a, b]) if rtt is not None else math.nan,
                         "basis": str(basis.at[a, b]) if basis is not None else "given"})
    return pd.DataFrame(rows, columns=["source", "dest", "cost", "rtt_ms", "basis"])


# --------------------------------------------------------------------------- from records


def relay_legs(matrix: CostMatrix, sites: Sequence[str], locations: pd.DataFrame | None,
               typical_inflation: float, cost: CostModel = _COST) -> pd.DataFrame:
    """Sites × sites: the cost of the leg relay → primary.  Measured where the cost matrix
    has the site as a region (an agent at the site) and the other as a target (either
    way round), else estimated from the fibre floor × ``typical_inflation``; NaN unknown.
    ``attrs["basis"]`` says which, ``attrs["rtt_ms"]`` the estimated RTTs."""
    from .geo import great_circle_km, rtt_floor_ms

    names = list(sites)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    basis = pd.DataFrame("unknown", index=names, columns=names)
    rtt = pd.DataFrame(np.nan, index=names, columns=names)
    rows = {r: i for i, r in enumerate(matrix.regions)}
    cols = {t: j for j, t in enumerate(matrix.targets)}
    place: dict[str, tuple[float, float]] = {}
    if locations is not None and not locations.empty:
        known = locations.dropna(subset=["lat", "lon"])
        for name, lat, lon in zip(known["name"], known["lat"], known["lon"], strict=True):
            place[str(name)] = (float(lat), float(lon))
    for a in names:
        for b in names:
            if a == b:
                out.at[a, b] = 0.0
                basis.at[a, b] = "same site"
                continue
            measured = [matrix.cost[rows[x], cols[y]] for x, y in ((a, b), (b, a))
                        if x in rows and y in cols and np.isfinite(matrix.cost[rows[x], cols[y]])]
            if measured:
                out.at[a, b] = float(measured[0])
                basis.at[a, b] = "measured"
            elif a in place and b in place and math.isfinite(typical_inflation):
                km = float(great_circle_km(*place[a], *place[b]))
                est = float(rtt_floor_ms(km)) * typical_inflation
                rtt.at[a, b] = est
                out.at[a, b] = (cost.rtt_p50_ms + cost.rtt_p95_ms) * est
                basis.at[a, b] = (f"estimated: {km:.0f} km, fibre floor × typical inflation "
                                  f"{typical_inflation:.2f}")
    out.attrs["basis"] = basis
    out.attrs["rtt_ms"] = rtt
    return out


def place(
    measurements: pd.DataFrame,
    weights: Mapping[str, float],
    *,
    sites: int = 2,
    mode: str = "anycast",
    locations: pd.DataFrame | None = None,
    prices: Mapping[str, float] | None = None,
    budget: float | None = None,
    must_include: Sequence[str] = (),
    failure_prob: float = 0.01,
    cost: CostModel = _COST,
    thresholds: Thresholds = _THRESHOLDS,
    n_boot: int = 500,
    seed: int = 0,
    assumed: Mapping[tuple[str, str], float] | None = None,
    **search: Any,
) -> Placement:
    """The best set of sites for clients spread as ``weights`` (region → share), from the
    ranking's own costs (:func:`netvantage.analysis.rank.cost_matrix`): see the module
    docstring.  ``locations`` place the sites for estimated relay legs; ``search`` goes to
    :func:`place_costs` (alternatives, pool, n_draws, method, exact_limit, node_limit)."""
    regions = sorted(str(r) for r, v in weights.items() if float(v) > 0)
    targets = sorted(str(t) for t in measurements["target"].dropna().unique())
    legs_from = sorted(str(r) for r in measurements["region"].dropna().unique()
                       if str(r) in targets and str(r) not in regions)
    matrix = cost_matrix(measurements, regions + legs_from, cost=cost,
                         thresholds=thresholds, n_boot=n_boot, seed=seed, assumed=assumed)
    n = len(regions)
    frame = pd.DataFrame(matrix.cost[:n], index=regions, columns=matrix.targets)
    meets = pd.DataFrame(matrix.meets[:n], index=regions, columns=matrix.targets)
    records = pd.DataFrame(matrix.rtt_records[:n], index=regions, columns=matrix.targets)
    reps = matrix.replicates[:, :n, :] if matrix.replicates is not None else None
    legs = None
    if mode == "relay":
        typical = math.nan
        if locations is not None:
            from .geo import inflation

            infl = inflation(measurements, locations)
            if len(infl) and "typical_inflation" in infl.columns:
                typical = float(infl["typical_inflation"].iloc[0])
        legs = relay_legs(matrix, matrix.targets, locations, typical, cost)
    return place_costs(frame, weights, sites=sites, mode=mode, meets=meets, replicates=reps,
                       rtt_records=records, legs=legs, prices=prices, budget=budget,
                       must_include=must_include, failure_prob=failure_prob,
                       outage_cost=100.0 * cost.failure_pct, seed=seed, **search)


def place_campaign(campaign: Any, *, weights: Mapping[str, float] | None = None,
                   locations: pd.DataFrame | None = None, keep_impossible: bool = False,
                   same_city_floor_ms: float | None = None,
                   readiness_fail_on: Sequence[str] = DEFAULT_FAIL_ON,
                   **options: Any) -> Placement:
    """:func:`place` for a loaded campaign, with the inputs ``analyse`` gives the ranking:
    weights by group (default: every region equal, as :func:`.summary.equal_weights`),
    impossible pairs left out (with ``locations``), the handshake threshold dropped when
    no SMTP was measured, the same-city floor when asked, and a candidate whose mail
    readiness fails one of ``readiness_fail_on`` failing the thresholds (as in the ranking:
    :mod:`.readiness`)."""
    from .coverage import same_city_pairs
    from .mix import client_regions, resolve_weights
    from .readiness import readiness, with_readiness
    from .summary import equal_weights

    m = campaign.measurements
    notes: list[str] = []
    if m.empty or m["region"].isna().all():
        raise PlacementError("no records with a client region to place sites for: give the "
                             "records a region (see `netvantage analyse`)")
    targets = sorted(str(t) for t in m["target"].dropna().unique())
    if weights:
        w, _ = resolve_weights(weights, client_regions(m), locations)
    else:
        w = {r: v for r, v in equal_weights(campaign).items() if r not in targets}
        notes.append("no client weights given: every region counts the same")
    if "thresholds" not in options:
        measured = set(m["kind"].astype(str).unique())
        if not measured & set(Thresholds().handshake_kinds):
            options["thresholds"] = Thresholds(handshake_p95_ms=None)
            notes.append("no SMTP measurements: the handshake threshold is not applied")
    ready = readiness(getattr(campaign, "readiness", None), readiness_fail_on)
    if ready is not None and ready.failing:
        options["thresholds"] = with_readiness(options.get("thresholds") or Thresholds(), ready)
        notes.append("mail readiness fails " + ", ".join(sorted(ready.failing))
                     + " (as in the ranking; --readiness-fail-on none to ignore)")
    ranked = m
    if locations is not None:
        from .physics import check

        physics = check(m, locations, keep_impossible=keep_impossible)
        ranked = physics.ranked(m)
        if len(ranked) < len(m):
            notes.append(f"{len(m) - len(ranked)} record(s) of impossible pairs (faster than "
                         "light in fibre) are left out, as in the ranking")
    assumed = None
    if same_city_floor_ms is not None:
        same = same_city_pairs(sorted(w), targets, locations)
        assumed = {p: same_city_floor_ms for p in same}
    result = place(ranked, w, locations=locations, assumed=assumed, **options)
    return replace(result, notes=[*notes, *result.notes])


def parse_prices(text: Sequence[str], sites: Sequence[str]) -> dict[str, float]:
    """``--cost SITE=EUR[,SITE=EUR…]`` (repeatable; SITE may be a glob, later keys win) as
    site → price; :class:`PlacementError` for a malformed price or a key matching no site."""
    out: dict[str, float] = {}
    for chunk in text:
        for part in chunk.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            try:
                price = float(value)
            except ValueError:
                price = math.nan
            if not sep or not key or not (math.isfinite(price) and price >= 0):
                raise PlacementError(f"--cost: {part!r} is not SITE=EUR (a price ≥ 0)")
            matched = [s for s in sites if fnmatch.fnmatchcase(s, key)]
            if not matched:
                raise PlacementError(f"--cost: {key!r} is no candidate site of the data "
                                     f"(sites: {', '.join(sites)})")
            for s in matched:
                out[s] = price
    return out
