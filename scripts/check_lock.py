"""Compare the packages installed in this interpreter with requirements.lock.

    python scripts/check_lock.py            fail (exit 1) if a locked package that applies
                                            here is installed at another version
    python scripts/check_lock.py --drift    only print which installed packages differ from
                                            the lock (make test-latest: what moved)

The lock is uv's requirements format: ``name==version`` optionally followed by
``; marker`` (PEP 508), comments after ``#``.  Packages the lock lists but this
install does not need (other extras, other platforms) are not reported.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;]+)"
                 r"\s*(?:;\s*(?P<marker>.+))?$")


def locked(path: Path) -> dict[str, str]:
    """Name -> version for every pin of the lock whose marker holds here."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = PIN.match(line)
        if match is None:
            raise SystemExit(f"{path}:{number}: not a 'name==version' pin: {raw!r}")
        marker = match["marker"]
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()
            if d.metadata["Name"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", type=Path,
                        default=Path(__file__).resolve().parents[1] / "requirements.lock")
    parser.add_argument("--drift", action="store_true",
                        help="report differences and exit 0")
    args = parser.parse_args()
    pins, have = locked(args.lock), installed()
    differ = sorted((name, pins[name], have[name]) for name in pins.keys() & have.keys()
                    if pins[name] != have[name])
    if args.drift:
        print(f"{len(differ)} of {len(pins.keys() & have.keys())} installed locked packages "
              "differ from requirements.lock")
        for name, want, got in differ:
            print(f"  {name}: lock {want}, installed {got}")
        return 0
    if differ:
        for name, want, got in differ:
            print(f"{name}: requirements.lock says {want}, installed {got}", file=sys.stderr)
        print("the install does not match the lock: rebuild the venv (make clean test)",
              file=sys.stderr)
        return 1
    print(f"install matches requirements.lock ({len(pins.keys() & have.keys())} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
