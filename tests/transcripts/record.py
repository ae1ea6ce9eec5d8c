#!/usr/bin/env python3
"""Re-record the mail-server transcripts in this folder (needs root, postfix, dovecot).

The recording is done by ``tests/test_mail_lab.py::test_transcripts`` itself, so
that the bytes come from exactly the servers and the client code the tests use;
this script only runs that test with ``NETVANTAGE_RECORD_TRANSCRIPTS=1``::

    sudo .venv/bin/python tests/transcripts/record.py

Afterwards, update the dates and versions in README.md and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "NETVANTAGE_RECORD_TRANSCRIPTS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"{TESTS / 'test_mail_lab.py'}::test_transcripts"]
    return subprocess.run(cmd, env=env, cwd=TESTS.parent, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
