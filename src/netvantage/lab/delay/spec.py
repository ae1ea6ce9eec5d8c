"""Link specifications: what the delay element is asked to create, and the spec file.

A spec file is JSON, ``{"version": 1, "links": [...]}``, one object per
:class:`LinkSpec`; :func:`write_spec` writes it and :func:`read_spec` checks it
with errors that name the file, the link and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ...errors import NetvantageError

__all__ = ["IFNAMSIZ", "MAX_DELAY_MS", "MAX_MTU", "MIN_MTU", "LinkSpec", "SpecError",
           "check_ms", "read_spec", "write_spec"]

# Bounds that keep a typo from becoming an outage of the lab machine.
MAX_DELAY_MS = 60_000.0
MIN_MTU, MAX_MTU = 68, 65_535
IFNAMSIZ = 16  # interface names are at most 15 bytes plus the NUL


class SpecError(NetvantageError, ValueError):
    """A link specification (or spec file) is invalid; the message says where."""


def _check_ifname(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{what} must be a non-empty string")
    if len(value.encode()) >= IFNAMSIZ:
        raise SpecError(f"{what} {value!r} is longer than {IFNAMSIZ - 1} bytes")
    if value in (".", "..") or any(c in value for c in "/:%") or any(c.isspace() for c in value):
        raise SpecError(f"{what} {value!r} is not a valid interface name")


def _check_netns(what: str, value: object) -> None:
    # A name under /run/netns/: a single path component.
    if not isinstance(value, str) or not value:
        raise SpecError(f"{what} must be a non-empty string")
    if value in (".", "..") or "/" in value or "\0" in value:
        raise SpecError(f"{what} {value!r} is not a namespace name")


def check_ms(what: str, value: object) -> float:
    """``value`` as milliseconds of delay or jitter, or :class:`SpecError`."""
    # bool is an int in Python and JSON true must not become a 1 ms delay.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{what} must be a number of milliseconds")
    if not math.isfinite(value) or not 0 <= value <= MAX_DELAY_MS:
        raise SpecError(f"{what} must be between 0 and {MAX_DELAY_MS:g} ms, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One delayed link: a TUN device in each of two namespaces."""

    name: str  # unique link name, <= 15 chars, used by the control socket
    a_netns: str  # namespace name as in `ip netns list` (file under /run/netns/)
    a_dev: str  # TUN device name to create in a_netns
    b_netns: str
    b_dev: str
    delay_ms: float  # one-way delay, applied in each direction
    jitter_ms: float = 0.0  # each packet's delay is delay ± uniform jitter, clamped >= 0
    mtu: int = 1500

    def __post_init__(self) -> None:
        _check_ifname("link name", self.name)
        _check_netns("a_netns", self.a_netns)
        _check_netns("b_netns", self.b_netns)
        _check_ifname("a_dev", self.a_dev)
        _check_ifname("b_dev", self.b_dev)
        if (self.a_netns, self.a_dev) == (self.b_netns, self.b_dev):
            raise SpecError("a and b are the same device in the same namespace")
        check_ms("delay_ms", self.delay_ms)
        check_ms("jitter_ms", self.jitter_ms)
        if isinstance(self.mtu, bool) or not isinstance(self.mtu, int):
            raise SpecError("mtu must be an integer")
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise SpecError(f"mtu must be {MIN_MTU}..{MAX_MTU}, not {self.mtu}")


_FIELDS = tuple(f.name for f in fields(LinkSpec))
_REQUIRED = ("name", "a_netns", "a_dev", "b_netns", "b_dev", "delay_ms")


def _check_links(links: Sequence[LinkSpec]) -> None:
    if not links:
        raise SpecError("no links")
    names: set[str] = set()
    devices: dict[tuple[str, str], str] = {}
    for link in links:
        if link.name in names:
            raise SpecError(f"link name {link.name!r} is used twice")
        names.add(link.name)
        for key in ((link.a_netns, link.a_dev), (link.b_netns, link.b_dev)):
            if key in devices:
                raise SpecError(f"link {link.name}: device {key[1]} in netns {key[0]} "
                                f"is already used by link {devices[key]}")
            devices[key] = link.name


def write_spec(links: Sequence[LinkSpec], path: Path) -> None:
    """Write ``links`` as the JSON spec file that ``--spec`` reads."""
    _check_links(links)
    doc = {"version": 1, "links": [asdict(link) for link in links]}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def read_spec(path: Path) -> list[LinkSpec]:
    """Read and check a spec file; :class:`SpecError` names the file, link and field."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("links"), list):
        raise SpecError(f'{path}: expected an object {{"version": 1, "links": [...]}}')
    if doc.get("version", 1) != 1:
        raise SpecError(f"{path}: unsupported version {doc.get('version')!r}")
    unknown = set(doc) - {"version", "links"}
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    links: list[LinkSpec] = []
    for i, item in enumerate(doc["links"]):
        where = f"{path}: link #{i + 1}"
        if not isinstance(item, dict):
            raise SpecError(f"{where}: expected an object")
        if isinstance(item.get("name"), str):
            where += f" ({item['name']})"
        missing = [k for k in _REQUIRED if k not in item]
        extra = sorted(set(item) - set(_FIELDS))
        if missing:
            raise SpecError(f"{where}: missing {', '.join(missing)}")
        if extra:
            raise SpecError(f"{where}: unknown field(s) {', '.join(extra)}")
        try:
            links.append(LinkSpec(**item))
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
    try:
        _check_links(links)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return links
