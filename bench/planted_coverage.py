"""Planted truth for coverage: targets that never answer, regions without data, holes.

A seeded campaign of ping records (regions × data centres) in which some data centres never
answer (every ping times out), some regions have nothing but timeouts (an agent behind a
dead uplink), and some (region, data centre) pairs have no records at all.  The analysis
must list the dead targets, the silent regions and the unmeasured pairs, and its winner
must be a data centre measured from every weighted region.

    .venv/bin/python bench/detectors.py --only coverage

The same generator serves tests/test_coverage.py (imported from here) and
:func:`with_dead_target` adds a never-answering candidate to recorded JSON Lines.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Planted", "dead_ping", "evaluate", "make_campaign", "with_dead_target"]

_NS = uuid.UUID("6f1d2c4e-58a7-4bd3-9a55-0c8f1a2b3c4d")
T0 = np.datetime64("2026-01-05T00:00:00", "ms")


def _id(*parts: object) -> str:
    return str(uuid.uuid5(_NS, "/".join(map(str, parts))))


def _when(seconds: float) -> str:
    return str(np.datetime64(T0 + np.timedelta64(int(seconds * 1000), "ms"))) + "Z"


def _ping(region: str, target: str, at: float, rtts: list[float | None]) -> dict[str, Any]:
    import msgspec

    from netvantage.results.structs import rtt_stats

    got = [r for r in rtts if r is not None]
    ok = bool(got)
    stats = msgspec.to_builtins(rtt_stats(rtts))
    return {"kind": "ping", "id": _id(region, target, at), "schema": 1,
            "agent": f"{region.lower()}-1", "region": region, "target": target,
            "address": "192.0.2.1", "started_at": _when(at), "duration_ms": 1000.0,
            "status": "ok" if ok else "timeout", "error": None if ok else "no reply",
            "source": "netvantage",
            "body": {"ip_version": 4, "socket": "raw", "payload_bytes": 56,
                     "interval_s": 0.1, "timeout_s": 2.0, "dont_fragment": False,
                     "sent": len(rtts), "received": len(got), "duplicates": 0,
                     "rtts_ms": rtts, "stats": stats,
                     "loss_ratio": 1 - len(got) / len(rtts), "icmp_errors": [],
                     "rx_clock": "kernel"}}


def dead_ping(region: str, target: str, at: float, address: str = "192.0.2.99"
              ) -> dict[str, Any]:
    """A ping of ``target`` from ``region`` that got no reply (10 echoes lost)."""
    record = _ping(region, target, at, [None] * 10)
    record["address"] = address
    return record


def with_dead_target(lines: Iterable[str], target: str = "dc-dead",
                     address: str = "192.0.2.99") -> list[str]:
    """JSON Lines plus, for each ping record of the first target seen, one ping of
    ``target`` from the same region at the same time that got no reply."""
    out = list(lines)
    first: str | None = None
    added = []
    for line in out:
        if '"kind":"ping"' not in line.replace(" ", ""):
            continue
        rec = json.loads(line)
        first = first or rec["target"]
        if rec["target"] != first:
            continue
        dead = dead_ping(rec["region"], target, 0.0, address)
        dead.update(id=_id(rec["id"], target), agent=rec["agent"],
                    started_at=rec["started_at"])
        added.append(json.dumps(dead))
    return out + added


@dataclass
class Planted:
    records: list[dict[str, Any]]
    regions: list[str]  # every region with records
    live_regions: list[str]  # regions with at least one answer (weighted)
    targets: list[str]
    dead_targets: set[str] = field(default_factory=set)
    silent_regions: set[str] = field(default_factory=set)
    holes: set[tuple[str, str]] = field(default_factory=set)  # live pairs without records
    covered: set[str] = field(default_factory=set)  # answered from every live region


def make_campaign(seed: int, *, n_regions: int = 10, n_targets: int = 6, n_dead: int = 1,
                  n_silent: int = 1, n_holes: int = 3, repeats: int = 4) -> Planted:
    """A seeded campaign with planted dead targets, silent regions and holes.

    Holes fall on at most ``n_targets - n_dead - 1`` targets, so that at least one live
    target is measured from every live region (a correct analysis has a winner).
    """
    rng = np.random.default_rng(seed)
    regions = [f"R{i:02d}" for i in range(n_regions)]
    targets = [f"dc-{i:02d}" for i in range(n_targets)]
    dead = set(rng.choice(targets, size=n_dead, replace=False).tolist())
    silent = set(rng.choice(regions, size=n_silent, replace=False).tolist())
    live = [r for r in regions if r not in silent]
    alive = [t for t in targets if t not in dead]
    holey = rng.choice(alive, size=min(len(alive) - 1, n_holes), replace=False).tolist()
    holes: set[tuple[str, str]] = set()
    while len(holes) < n_holes:
        holes.add((str(rng.choice(live)), str(rng.choice(holey))))
    base = {(r, t): float(rng.uniform(5, 250)) for r in regions for t in targets}
    records = []
    for k in range(repeats):
        for r in regions:
            for t in targets:
                if (r, t) in holes:
                    continue
                at = 60.0 * k + rng.uniform(0, 30)
                if t in dead or r in silent:
                    records.append(dead_ping(r, t, at))
                    continue
                rtts = (base[(r, t)] + rng.gamma(2.0, 1.0, size=10)).round(3).tolist()
                records.append(_ping(r, t, at, rtts))
    covered = {t for t in alive if not any(h[1] == t for h in holes)}
    return Planted(records, regions, live, targets, dead, silent, holes, covered)


def _campaign(records: list[dict[str, Any]]) -> Any:
    from netvantage.analysis.load import frames_from_records
    from netvantage.results import decode_record

    return frames_from_records([decode_record(json.dumps(r).encode()) for r in records])


def evaluate(seed: int) -> list[dict[str, Any]]:
    """One row per detector over five seeded campaigns (see the module docstring)."""
    from netvantage.analysis.summary import analyse

    rows = {name: {"detector": name, "planted": 0, "flagged": 0, "true_positives": 0}
            for name in ("dead target listed", "region without data listed",
                         "unmeasured pair listed", "winner is covered")}
    for k in range(5):
        p = make_campaign(seed * 100 + k)
        result = analyse(_campaign(p.records), weights=dict.fromkeys(p.live_regions, 1.0),
                         n_boot=0)
        cov = result.coverage
        assert cov is not None
        listed_dead = set(cov.dead_targets)
        _count(rows["dead target listed"], p.dead_targets, listed_dead)
        _count(rows["region without data listed"], p.silent_regions,
               {s["region"] for s in cov.silent_regions})
        pairs = {(u["region"], u["target"]) for u in cov.unmeasured
                 if u["target"] not in listed_dead}
        _count(rows["unmeasured pair listed"], p.holes, pairs)
        winner = result.winner
        _count(rows["winner is covered"], {"covered"},
               {"covered" if winner in p.covered else f"uncovered {winner}"})
    return list(rows.values())


def _count(row: dict[str, Any], planted: set[Any], flagged: set[Any]) -> None:
    row["planted"] += len(planted)
    row["flagged"] += len(flagged)
    row["true_positives"] += len(planted & flagged)
