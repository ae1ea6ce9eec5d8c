"""Planted detours: seeded synthetic traces whose detours and mislocated hops are known.

Probes in African cities (each with its own place, and a region label that is its
country, as an Atlas import writes them) trace African and European data centres:

* direct paths: city to city through believable hops (RTT = 1.6 × the fibre floor
  so far, plus a little noise per hop);
* planted continental detours: an African probe to an African data centre through
  London or Marseille and back (the hops' RTTs are what that route costs);
* planted stretch detours: a probe to Amsterdam through Cape Town first;
* planted mislocated hops on direct paths: a hop the database puts in Europe that
  answers within a few ms of an African probe (it must be dropped, not claimed);
* hops in the probe's own country placed at the country's centre, farther than their
  RTT allows from the probe: never "impossible" (healthy, not dropped).

``evaluate(seed)`` returns one row per detector for ``bench/detectors.py``:
"detoured trace" and "mislocated hop dropped".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

from netvantage.analysis.detours import trace_detours
from netvantage.analysis.frames import HOP_COLUMNS
from netvantage.analysis.geo import great_circle_km, locations, rtt_floor_ms

__all__ = ["CITIES", "Planted", "evaluate", "generate"]

# name: (country, lat, lon, asn)
CITIES: dict[str, tuple[str, float, float, int]] = {
    "Lusaka": ("ZM", -15.33, 28.45, 64601),
    "Johannesburg": ("ZA", -26.14, 28.25, 64700),
    "Cape Town": ("ZA", -33.97, 18.60, 64700),
    "Nairobi": ("KE", -1.32, 36.93, 64750),
    "Lagos": ("NG", 6.58, 3.32, 64710),
    "Kinshasa": ("CD", -4.39, 15.44, 64760),
    "London": ("GB", 51.47, -0.45, 64800),
    "Marseille": ("FR", 43.44, 5.22, 64720),
    "Lisbon": ("PT", 38.78, -9.14, 64710),
    "Amsterdam": ("NL", 52.31, 4.76, 65001),
}
# Probes: (agent, city); the region label is the country, its point the country's centre.
PROBES = (("probe-lun", "Lusaka"), ("probe-cpt", "Cape Town"), ("probe-nbo", "Nairobi"),
          ("probe-los", "Lagos"))
COUNTRY_POINTS = {"ZM": (-13.1, 27.8), "ZA": (-29.0, 25.0), "KE": (0.2, 37.9),
                  "NG": (9.1, 8.7)}
DCS = {"dc-jnb": "Johannesburg", "dc-nbo": "Nairobi", "dc-ams": "Amsterdam"}
# Believable direct routes (intermediate cities) per (probe city, target city).
DIRECT: dict[tuple[str, str], tuple[str, ...]] = {
    ("Lusaka", "Johannesburg"): (), ("Lusaka", "Nairobi"): (),
    ("Cape Town", "Johannesburg"): (), ("Cape Town", "Nairobi"): ("Johannesburg",),
    ("Nairobi", "Johannesburg"): (), ("Nairobi", "Nairobi"): (),
    ("Lagos", "Johannesburg"): ("Kinshasa",), ("Lagos", "Nairobi"): ("Kinshasa",),
    ("Lusaka", "Amsterdam"): ("Nairobi", "Marseille"),
    ("Cape Town", "Amsterdam"): ("Lisbon",), ("Nairobi", "Amsterdam"): ("Marseille",),
    ("Lagos", "Amsterdam"): ("Lisbon",),
}


@dataclass(frozen=True)
class Planted:
    hops: pd.DataFrame
    measurements: pd.DataFrame
    locations: pd.DataFrame
    detoured: frozenset[str]  # trace ids
    mislocated: frozenset[tuple[str, int]]  # (trace id, ttl)


def _row(tid: str, region: str, target: str, ttl: int, address: str, rtt: float,
         city: str, *, dest: bool, at: pd.Timestamp,
         place: tuple[float, float] | None = None) -> dict[str, Any]:
    country, lat, lon, asn = CITIES[city]
    lat, lon = place if place is not None else (lat, lon)
    return {"id": tid, "region": region, "target": target, "started_at": at,
            "protocol": "icmp", "ttl": ttl, "address": address, "replies": 3, "sent": 3,
            "loss_ratio": 0.0, "rtt_min_ms": rtt, "rtt_median_ms": rtt,
            "icmp_type": 0 if dest else 11, "is_destination": dest, "asn": asn,
            "as_org": f"AS {city}", "country": country, "city": city, "lat": lat, "lon": lon}


def generate(seed: int, traces_per_pair: int = 6) -> Planted:
    """Seeded traces with their planted truth (see the module docstring)."""
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    agents: list[dict[str, Any]] = []
    detoured: set[str] = set()
    mislocated: set[tuple[str, int]] = set()
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    n = 0
    for agent, home in PROBES:
        region = CITIES[home][0]
        for target, dc_city in DCS.items():
            for _ in range(traces_per_pair):
                n += 1
                tid = f"t{n:04d}"
                agents.append({"id": tid, "agent": agent, "region": region, "target": target})
                route = list(DIRECT[home, dc_city])
                african_dc = dc_city != "Amsterdam"
                roll = rnd.random()
                kind = "direct"
                if african_dc and home != dc_city and roll < 0.25:
                    kind, route = "continent", [rnd.choice(["London", "Marseille"])]
                elif not african_dc and home in ("Lusaka", "Nairobi") and roll < 0.3:
                    kind, route = "stretch", ["Cape Town", "Lagos", "Lisbon"]
                elif roll > 0.8:
                    kind = "mislocated"
                cities = [home, *route, dc_city]
                at = t0 + pd.Timedelta(minutes=n)
                rtt, here = 0.0, CITIES[home][1:3]
                path: list[tuple[str, float, tuple[float, float] | None]] = []
                for i, city in enumerate(cities):
                    there = CITIES[city][1:3]
                    rtt += 1.6 * rtt_floor_ms(great_circle_km(*here, *there)) + rnd.uniform(
                        0.5, 2.0)
                    here = there
                    # The first hop, in the probe's own country, is put at the country's
                    # centre by "the database": believable for its country, not its place.
                    path.append((city, rtt, COUNTRY_POINTS[region] if i == 0 else None))
                for ttl, (city, hop_rtt, place) in enumerate(path, start=1):
                    dest = ttl == len(path)
                    rows.append(_row(tid, region, target, ttl, f"10.{n % 250}.{ttl}.1",
                                     hop_rtt, city, dest=dest, at=at, place=place))
                if kind == "mislocated":
                    # A hop between the first and the second: Europe by the database,
                    # 3 ms from the probe by its answer.
                    for r in rows[-len(path):]:
                        if r["ttl"] >= 2:
                            r["ttl"] += 1
                    wrong = rnd.choice(["London", "Amsterdam", "Lisbon"])
                    rows.append(_row(tid, region, target, 2, f"10.{n % 250}.99.1",
                                     path[0][1] + 1.0, wrong, dest=False, at=at))
                    mislocated.add((tid, 2))
                if kind in ("continent", "stretch"):
                    detoured.add(tid)
    hops = pd.DataFrame(rows, columns=list(HOP_COLUMNS)).sort_values(
        ["id", "ttl"], kind="mergesort").reset_index(drop=True)
    hops["address"] = hops["address"].astype("string")
    hops["asn"] = hops["asn"].astype("Int64")
    places = [{"name": agent, "role": "region", "lat": CITIES[city][1], "lon": CITIES[city][2],
               "country": CITIES[city][0]} for agent, city in PROBES]
    places += [{"name": cc, "role": "region", "lat": lat, "lon": lon, "country": cc}
               for cc, (lat, lon) in COUNTRY_POINTS.items()]
    places += [{"name": dc, "role": "dc", "lat": CITIES[city][1], "lon": CITIES[city][2],
                "country": CITIES[city][0]} for dc, city in DCS.items()]
    return Planted(hops=hops, measurements=pd.DataFrame(agents),
                   locations=locations(pd.DataFrame(places)), detoured=frozenset(detoured),
                   mislocated=frozenset(mislocated))


def evaluate(seed: int) -> list[dict[str, Any]]:
    """One row per detector: planted, flagged, true positives (for bench/detectors.py)."""
    p = generate(seed)
    out = trace_detours(p.hops, p.locations, p.measurements)
    flagged = set(out.loc[out["detoured"], "id"].astype(str))
    dropped = {(str(tid), int(ttl)) for tid, ttls in zip(out["id"], out["dropped_ttls"],
                                                         strict=True) for ttl in ttls}
    return [
        {"detector": "detoured trace", "planted": len(p.detoured), "flagged": len(flagged),
         "true_positives": len(flagged & p.detoured)},
        {"detector": "mislocated hop dropped", "planted": len(p.mislocated),
         "flagged": len(dropped), "true_positives": len(dropped & p.mislocated)},
    ]


if __name__ == "__main__":
    for seed in (1, 2, 3):
        print(seed, evaluate(seed))
