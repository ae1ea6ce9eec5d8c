"""How well each detector of the analysis finds what was planted in seeded synthetic data.

Every ``bench/planted_*.py`` module generates data with a planted truth (sub-floor pairs,
detours, transient episodes, multi-pair events, improvements, dead targets, ...) and
returns one row per detector from ``evaluate(seed)``: the detector's name, how many cases
were planted, how many it flagged, how many of those were planted (true positives), and
precision and recall.  This script runs them all and prints one table; it is a
measurement, not a test (the tests assert that the planted cases are found).

    .venv/bin/python bench/detectors.py [--seed 7] [--only NAME]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", help="run only bench/planted_NAME.py")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for path in sorted(HERE.glob("planted_*.py")):
        if args.only and path.stem != f"planted_{args.only}":
            continue
        rows += _load(path).evaluate(args.seed)
    header = ("DETECTOR", "PLANTED", "FLAGGED", "TRUE POS", "PRECISION", "RECALL")
    table = [header] + [(str(r["detector"]), str(r["planted"]), str(r["flagged"]),
                         str(r["true_positives"]),
                         "-" if r["flagged"] == 0 else f"{r['true_positives'] / r['flagged']:.2f}",
                         "-" if r["planted"] == 0 else f"{r['true_positives'] / r['planted']:.2f}")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("no bench/planted_*.py module found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
