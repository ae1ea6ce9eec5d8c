"""Record the sample campaign under data/campaigns/ by really running agents in the lab.

    sudo .venv/bin/python scripts/record_campaign.py [--minutes 8] [--interval 15]

Emulated network: the default topology (data/lab/default.toml).  Half-way, the
London-Amsterdam link degrades (delay 3 -> 30 ms each way, 5 % loss each way):
a regional degradation that the analysis must flag, with its start time.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from netvantage.campaign import Degradation, run_lab_campaign

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/netvantage-campaign"))
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "campaigns")
    args = parser.parse_args()
    duration = args.minutes * 60
    degradation = Degradation("r-lon", "r-ams", delay_ms=30.0, loss=0.05, at_s=duration / 2)
    if args.work.exists():
        shutil.rmtree(args.work)
    result = run_lab_campaign(args.work, duration_s=duration, interval_s=args.interval,
                              degradation=degradation, say=print)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "lab-sample.jsonl"
    shutil.copy(result.jsonl, target)
    meta = {
        "recorded": result.started.isoformat(),
        "duration_s": duration,
        "interval_s": args.interval,
        "topology": "data/lab/default.toml",
        "agents": result.agents,
        "degradation": {"link": [degradation.a, degradation.b], "delay_ms": degradation.delay_ms,
                        "loss": degradation.loss,
                        "at": result.degraded_at.isoformat() if result.degraded_at else None},
        "counts": result.counts,
    }
    (args.out / "lab-sample.meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
