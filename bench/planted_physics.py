"""Planted truth for the physical checks: a city-to-city matrix with impossible pairs.

40 real cities (coordinates from ``airportsdata``): 8 host the data centres, 32 are
client regions.  Every healthy pair's minimum RTT is the 200 km/ms floor times an
inflation drawn from 1.5-3, plus 1-5 ms of access network.  Planted:

* two regions whose *declared* point is wrong (R-LHR declared in Sydney, R-ORD
  declared in Mexico City) while their RTTs come from where they are;
* one data centre whose geolocation is wrong (dc-sin, in Singapore, declared at Dubai);
* one anycast target (dc-any, declared in Washington, answering from six places).

Truth is computed by the generator from the true and the declared places: a pair is
planted "impossible (fibre)" when its RTT is under 0.9 × the lenient fibre bound of the
declared places (and "impossible (vacuum)" likewise); pairs within 10 % of a bound, and
pairs with both ends planted, are left out of the matrix so that the truth is clear.

    .venv/bin/python bench/detectors.py --only physics
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from netvantage.analysis.geo import (
    FIBRE_FAST_KM_PER_MS,
    VACUUM_KM_PER_MS,
    _airports,
    great_circle_km,
    locations,
    rtt_floor_ms,
)
from netvantage.analysis.physics import FIBRE, VACUUM, bound_ms, check

TARGETS = ("AMS", "FRA", "IAD", "SIN", "NRT", "GRU", "JNB", "SYD")
REGIONS = ("LHR", "CDG", "MAD", "FCO", "WAW", "ARN", "IST", "CAI", "LOS", "NBO", "ADD", "CPT",
           "DXB", "BOM", "DEL", "BKK", "HKG", "PEK", "ICN", "MNL", "CGK", "PER", "AKL", "JFK",
           "ORD", "LAX", "YYZ", "MEX", "BOG", "LIM", "SCL", "EZE")
BAD_REGIONS = {"R-LHR": "SYD", "R-ORD": "MEX"}  # region -> airport of its wrong point
BAD_TARGETS = {"dc-sin": "DXB"}
ANYCAST = "dc-any"
ANYCAST_DECLARED = "IAD"
ANYCAST_SITES = ("AMS", "IAD", "SIN", "GRU", "JNB", "SYD")


@dataclass(frozen=True)
class Planted:
    measurements: pd.DataFrame
    locations: pd.DataFrame
    fibre: frozenset[tuple[str, str]]  # pairs planted below the fibre bound
    vacuum: frozenset[tuple[str, str]]
    anycast: frozenset[str]
    region_cause: frozenset[tuple[str, str]]  # impossible because of the region's point
    target_cause: frozenset[tuple[str, str]]


def _pos(iata: str) -> tuple[float, float]:
    a = _airports()[iata]
    return float(a["lat"]), float(a["lon"])


def make(seed: int) -> Planted:
    """The seeded matrix with its planted truth."""
    rng = np.random.default_rng(seed)
    true: dict[str, list[tuple[float, float]]] = {}
    declared: dict[str, tuple[float, float]] = {}
    rows: list[dict[str, Any]] = []
    for code in REGIONS:
        name = f"R-{code}"
        true[name] = [_pos(code)]
        declared[name] = _pos(BAD_REGIONS.get(name, code))
    for code in TARGETS:
        name = f"dc-{code.lower()}"
        true[name] = [_pos(code)]
        declared[name] = _pos(BAD_TARGETS.get(name, code))
    true[ANYCAST] = [_pos(c) for c in ANYCAST_SITES]
    declared[ANYCAST] = _pos(ANYCAST_DECLARED)
    for name, (lat, lon) in declared.items():
        rows.append({"name": name, "role": "region" if name.startswith("R-") else "dc",
                     "lat": lat, "lon": lon, "country": None, "continent": None, "iata": None})
    # Continents from the airports the places are declared at (what a user would write).
    for row in rows:
        code = (BAD_REGIONS.get(row["name"]) or BAD_TARGETS.get(row["name"])
                or (ANYCAST_DECLARED if row["name"] == ANYCAST else row["name"].split("-")[1]))
        row["country"] = _airports()[code.upper()]["country"]
    places = locations(pd.DataFrame(rows))

    regions = [f"R-{c}" for c in REGIONS]
    targets = [f"dc-{c.lower()}" for c in TARGETS] + [ANYCAST]
    fibre: set[tuple[str, str]] = set()
    vacuum: set[tuple[str, str]] = set()
    region_cause: set[tuple[str, str]] = set()
    target_cause: set[tuple[str, str]] = set()
    records: list[dict[str, Any]] = []
    for r in regions:
        for t in targets:
            (la, lo), = true[r]
            km_true = min(great_circle_km(la, lo, tl, tn) for tl, tn in true[t])
            base = rtt_floor_ms(km_true) * rng.uniform(1.5, 3.0) + rng.uniform(1.0, 5.0)
            km_decl = great_circle_km(*declared[r], *declared[t])
            bad_end = (r in BAD_REGIONS) + (t in BAD_TARGETS or t == ANYCAST)
            f_bound = bound_ms(km_decl, FIBRE_FAST_KM_PER_MS)
            v_bound = bound_ms(km_decl, VACUUM_KM_PER_MS)
            if bad_end:
                if bad_end == 2 or any(0.9 * b <= base <= 1.1 * b for b in (f_bound, v_bound)):
                    continue  # ambiguous: left out of the matrix
                if base < f_bound:
                    fibre.add((r, t))
                    if r in BAD_REGIONS:
                        region_cause.add((r, t))
                    elif t in BAD_TARGETS:
                        target_cause.add((r, t))
                if base < v_bound:
                    vacuum.add((r, t))
            for k in range(3):
                rtt = base + float(rng.exponential(2.0)) * (k > 0)
                records.append({"kind": "ping", "agent": f"probe-{r}", "region": r,
                                "target": t, "rtt_min_ms": rtt, "rtt_ms": rtt + 1.0})
    m = pd.DataFrame(records)
    for c in ("kind", "agent", "region", "target"):
        m[c] = m[c].astype("category")
    return Planted(m, places, frozenset(fibre), frozenset(vacuum), frozenset({ANYCAST}),
                   frozenset(region_cause), frozenset(target_cause))


def _row(detector: str, planted: set[Any] | frozenset[Any],
         flagged: set[Any]) -> dict[str, Any]:
    return {"detector": detector, "planted": len(planted), "flagged": len(flagged),
            "true_positives": len(set(planted) & flagged)}


def evaluate(seed: int) -> list[dict[str, Any]]:
    """One row per detector of :mod:`netvantage.analysis.physics` on :func:`make`'s matrix."""
    p = make(seed)
    result = check(p.measurements, p.locations)
    pairs = result.pairs
    key = list(zip(pairs["region"], pairs["target"], strict=True))

    def where(mask: Any) -> set[tuple[str, str]]:
        return {k for k, hit in zip(key, mask, strict=True) if hit}

    status = pairs["status"]
    return [
        _row("impossible (fibre)", p.fibre, where(status.isin([FIBRE, VACUUM]))),
        _row("impossible (vacuum)", p.vacuum, where(status == VACUUM)),
        _row("anycast suspected", p.anycast, set(result.anycast)),
        _row("cause: region's location", p.region_cause,
             where(pairs["cause"] == "location of the region")),
        _row("cause: target's location", p.target_cause,
             where(pairs["cause"] == "location of the target")),
    ]


if __name__ == "__main__":
    for row in evaluate(int(sys.argv[1]) if len(sys.argv) > 1 else 7):
        print(row)
