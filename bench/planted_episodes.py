"""Planted truth for the episode, event and improvement detectors (analysis.episodes/events).

A seeded weekly series over two and a half years for 30 (region, data centre) pairs (six
regions × five data centres), RTT with 1.2 % noise and the odd one-week spike (+30 %):

- six *transient episodes* on six pairs: +10 % for 4 to 10 weeks, then back to the baseline;
- one *multi-pair event*: four regions' pairs to the same data centre rise +12 % the same
  week for six weeks;
- three *improvements*: a pair's RTT falls 15 % for good;
- the other pairs are healthy (noise and spikes only).

``evaluate(seed)`` runs :func:`netvantage.analysis.episodes.find_changes` on it and returns one
row per detector — "episode", "event", "improvement (not flagged as degradation)" — with
planted, flagged and true positives (see bench/detectors.py).  An episode counts as found
when one is flagged on its pair starting within two weeks of the planted start; an
improvement pair with an episode is a false episode.

    .venv/bin/python bench/planted_episodes.py [--seed 7 | --seeds 1-30]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

WEEKS = 130
START = pd.Timestamp("2022-01-03", tz="UTC")  # a Monday
REGIONS = ("AF-1", "AF-2", "EU-1", "EU-2", "NA-1", "SA-1")
TARGETS = ("dc-a", "dc-b", "dc-c", "dc-d", "dc-e")
EVENT_TARGET = "dc-e"
NOISE = 0.012
SPIKE_P = 0.03
TOLERANCE = pd.Timedelta(weeks=2)


@dataclass
class Truth:
    """What was planted: pair → (start, end) of its episode, the event, the improvements."""

    episodes: dict[tuple[str, str], tuple[pd.Timestamp, pd.Timestamp]] = field(
        default_factory=dict)
    event_pairs: tuple[tuple[str, str], ...] = ()
    event_start: pd.Timestamp | None = None
    improvements: dict[tuple[str, str], pd.Timestamp] = field(default_factory=dict)
    healthy: tuple[tuple[str, str], ...] = ()


def week(i: int) -> pd.Timestamp:
    return START + pd.Timedelta(weeks=i)


def generate(seed: int) -> tuple[pd.DataFrame, Truth]:
    """The measurements frame (kind ping, one record a week per pair) and the planted truth."""
    rng = np.random.default_rng(seed)
    pairs = [(r, t) for r in REGIONS for t in TARGETS]
    event = [(r, EVENT_TARGET) for r in rng.choice(REGIONS, size=4, replace=False)]
    rest = [p for p in pairs if p not in event]
    order = rng.permutation(len(rest))
    transient = [rest[i] for i in order[:6]]
    improving = [rest[i] for i in order[6:9]]
    truth = Truth(event_pairs=tuple(sorted(event)),
                  healthy=tuple(sorted(rest[i] for i in order[9:])))
    # Starts at distinct slots six weeks apart, so no two planted rises start together.
    slots = rng.permutation(np.arange(12, WEEKS - 24, 6))
    event_week = int(slots[0])
    truth.event_start = week(event_week)
    rise = np.zeros((len(pairs), WEEKS))
    index = {p: i for i, p in enumerate(pairs)}
    for p in event:
        rise[index[p], event_week:event_week + 6] = 0.12
    for k, p in enumerate(transient):
        first, length = int(slots[k + 1]), int(rng.integers(4, 11))
        rise[index[p], first:first + length] = 0.10
        truth.episodes[p] = (week(first), week(first + length))
    for k, p in enumerate(improving):
        at = int(slots[k + 7])
        rise[index[p], at:] = -0.15
        truth.improvements[p] = week(at)
    rows: list[dict[str, Any]] = []
    for p, i in index.items():
        base = float(rng.uniform(20.0, 250.0))
        noise = rng.normal(0.0, NOISE, WEEKS)
        spikes = np.where(rng.random(WEEKS) < SPIKE_P, 0.30, 0.0)
        present = rng.random(WEEKS) > 0.02  # the odd missing week
        hours = rng.uniform(0.0, 6.0, WEEKS)
        for w in range(WEEKS):
            if not present[w]:
                continue
            rtt = base * (1.0 + rise[i, w]) * (1.0 + noise[w] + spikes[w])
            rows.append({"kind": "ping", "region": p[0], "target": p[1],
                         "started_at": week(w) + pd.Timedelta(hours=float(hours[w])),
                         "rtt_ms": rtt, "rtt_min_ms": rtt * 0.97, "loss_ratio": 0.0})
    frame = pd.DataFrame(rows)
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return frame, truth


def evaluate(seed: int) -> list[dict[str, Any]]:
    """One row per detector: planted, flagged, true positives (see bench/detectors.py)."""
    from netvantage.analysis.episodes import find_changes

    frame, truth = generate(seed)
    changes = find_changes(frame)
    planted_rises = dict(truth.episodes)
    assert truth.event_start is not None
    for p in truth.event_pairs:
        planted_rises[p] = (truth.event_start, truth.event_start + pd.Timedelta(weeks=6))
    found = [e for e in changes.episodes if (e.region, e.target) in planted_rises
             and abs(e.start - planted_rises[(e.region, e.target)][0]) <= TOLERANCE]
    found_rises = len(found)
    window = changes.window or pd.Timedelta(weeks=1)
    # Start error of each episode found, in windows (+: flagged late), rounded to 0.01.
    start_errors = [round((e.start - planted_rises[(e.region, e.target)][0]) / window, 2)
                    for e in found]
    events_ok = sum(1 for ev in changes.events
                    if len(set(ev.pairs) & set(truth.event_pairs)) >= 3
                    and abs(ev.start - truth.event_start) <= TOLERANCE)
    improvements_ok = sum(
        1 for i in changes.improvements if (i.region, i.target) in truth.improvements
        and abs(i.at - truth.improvements[(i.region, i.target)]) <= TOLERANCE
        and not any((e.region, e.target) == (i.region, i.target) for e in changes.episodes))
    return [
        {"detector": "episode", "planted": len(planted_rises),
         "flagged": len(changes.episodes), "true_positives": found_rises,
         "start_errors_windows": start_errors},
        {"detector": "event", "planted": 1, "flagged": len(changes.events),
         "true_positives": events_ok},
        {"detector": "improvement (not flagged as degradation)",
         "planted": len(truth.improvements), "flagged": len(changes.improvements),
         "true_positives": improvements_ok},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seeds", help="FIRST-LAST: totals over a range of seeds instead")
    args = parser.parse_args()
    if not args.seeds:
        for row in evaluate(args.seed):
            print(row)
        return 0
    first, last = (int(x) for x in args.seeds.split("-"))
    totals: dict[str, list[int]] = {}
    worst: dict[str, tuple[float, int]] = {}
    errors: list[float] = []
    for seed in range(first, last + 1):
        for row in evaluate(seed):
            name = str(row["detector"])
            t = totals.setdefault(name, [0, 0, 0])
            t[0] += row["planted"]
            t[1] += row["flagged"]
            t[2] += row["true_positives"]
            score = min(row["true_positives"] / row["flagged"] if row["flagged"] else 1.0,
                        row["true_positives"] / row["planted"] if row["planted"] else 1.0)
            worst[name] = min(worst.get(name, (2.0, seed)), (score, seed))
            errors += row.get("start_errors_windows", [])
    for name, (planted, flagged, tp) in totals.items():
        print(f"{name}: planted {planted}, flagged {flagged}, true positives {tp}, precision "
              f"{tp / flagged if flagged else float('nan'):.3f}, recall {tp / planted:.3f}; "
              f"worst seed {worst[name][1]} (min of precision and recall {worst[name][0]:.2f})")
    if errors:
        e = np.asarray(errors)
        print(f"episode start error (windows, + late) over {len(e)} found: mean {e.mean():+.2f}, "
              f"mean |error| {np.abs(e).mean():.2f}, max |error| {np.abs(e).max():.2f}, "
              f"within half a window {np.mean(np.abs(e) <= 0.5):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
