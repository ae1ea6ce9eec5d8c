"""Throw-away network namespaces for tests: real packets, nothing outside this machine.

Every namespace a test makes is named with :data:`PREFIX`; :func:`remove_stale`
deletes leftovers of *our* prefix only (a crashed earlier run), never anything else.
The namespaces have only their own prefixes (10.231.0.0/16, fd00:231::/32) and no
link to the root namespace, so no packet can leave them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import NoReturn

import pytest

# Every name a test run makes (namespaces, lab prefixes, state folders) starts with TAG, so
# that two runs on one machine (two developers' checkouts) never touch each other's.
TAG = os.environ.get("NVT_TEST_TAG", "nvt")
if not TAG.isalnum() or len(TAG) > 6:
    raise RuntimeError(f"NVT_TEST_TAG={TAG!r}: letters and digits, at most 6")
PREFIX = f"{TAG}-f"


def missing(reason: str, what: str = "the lab tests and every test that needs a tool") -> NoReturn:
    """A test cannot run here: skip locally, but fail under ``CI=true`` (CI never skips)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run {what} (make test installs them)")
    pytest.skip(reason)


def require_root_netns() -> None:
    """Skip without root and ``ip``, except under ``CI=true``, where that is a failure."""
    missing_what = None
    if os.geteuid() != 0:
        missing_what = "needs root for network namespaces"
    elif shutil.which("ip") is None:
        missing_what = "needs iproute2 (`ip`)"
    if missing_what:
        missing(missing_what)


def sh(*args: str, check: bool = True,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, input=input,
                          timeout=30)


def ns_exec(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args)


def existing() -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_stale() -> None:
    for name in existing():
        if name.startswith(PREFIX + "-"):
            sh("ip", "netns", "del", name, check=False)


class Namespaces:
    """A small set of namespaces created together and removed together."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = [f"{PREFIX}-{n}" for n in names]
        self.by_short = dict(zip(names, self.names, strict=True))

    def __getitem__(self, short: str) -> str:
        return self.by_short[short]

    def create(self) -> None:
        for ns in self.names:
            sh("ip", "netns", "add", ns)
            ns_exec(ns, "ip", "link", "set", "lo", "up")
            for key in ("net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
                        "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
                ns_exec(ns, "sysctl", "-qw", key)

    def link(self, a: str, a_addrs: Sequence[str], b: str, b_addrs: Sequence[str]) -> None:
        """A veth pair between namespaces ``a`` and ``b`` with the given CIDR addresses."""
        na, nb = self[a], self[b]
        ia, ib = f"to-{b}"[:15], f"to-{a}"[:15]
        sh("ip", "link", "add", ia, "netns", na, "type", "veth", "peer", "name", ib, "netns", nb)
        for ns, dev, addrs in ((na, ia, a_addrs), (nb, ib, b_addrs)):
            ns_exec(ns, "ip", "link", "set", dev, "up")
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                ns_exec(ns, "ip", "addr", "add", addr, "dev", dev, *extra)

    def destroy(self) -> None:
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)
