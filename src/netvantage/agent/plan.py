"""The measurement plan: what an agent measures, how often, and where it uploads.

A plan is a TOML file (see ``probes/example-plan.toml``).  Loading it checks
everything at once and refuses a wrong plan with every problem listed, each
with its key and, where the file has it, its line.  An agent measures only
the targets its plan names: there is no other way to give it one.

``[agent] spool_error_limit_s`` (default 300 s) is how long writes to the spool
may keep failing (a full disk) before the agent stops and exits 1; meanwhile it
measures nothing and says why in its status line (see :mod:`.run`).
``[defaults.KIND]`` tables are checked like the probe's own options: unknown
keys, wrong types and values the probe refuses are all listed.

Test names: ``ping``, ``tcp:PORT``, ``trace`` / ``trace:udp`` /
``trace:tcp:PORT``, ``smtp[:PORT]`` (25, 587 STARTTLS; 465 implicit TLS),
``imap[:PORT]`` (143 STARTTLS; 993 implicit TLS), ``mailready`` (blocklists, reverse DNS,
SPF/DKIM/DMARC, TLS and port 25 of the address; the target's ``mail_domain`` and
``dkim_selectors`` name the domain and selectors, ``zones_file`` a blocklist zones file).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import NetvantageError

__all__ = ["Credentials", "Job", "Plan", "PlanError", "TargetPlan", "TestSpec", "load_plan"]

Kind = Literal["ping", "tcp", "trace", "smtp", "imap", "pmtu", "mailready"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_DEFAULT_PORT = {"smtp": 25, "imap": 143}
# Floors that keep an agent from becoming a flooding tool, whatever the plan says.
MIN_INTERVAL_S = 5.0
MAX_CONCURRENCY = 64
MAX_JOBS = 2_000
# How long spool writes may keep failing (a full disk) before the agent gives up and exits 1.
SPOOL_ERROR_LIMIT_S = 300.0


class PlanError(NetvantageError):
    """A plan is wrong; ``problems`` lists every problem ("line N: key: what")."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s) in the plan:\n"
                         + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class TestSpec:
    kind: Kind
    port: int | None = None
    protocol: Literal["icmp", "udp", "tcp"] | None = None  # trace and pmtu only

    @property
    def label(self) -> str:
        parts: list[str] = [self.kind]
        if self.protocol and self.protocol != "icmp":
            parts.append(self.protocol)
        if self.port is not None:
            parts.append(str(self.port))
        return ":".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class TargetPlan:
    name: str
    addresses: tuple[str, ...]
    tests: tuple[TestSpec, ...]
    interval_s: float
    location: str | None = None
    lat: float | None = None
    lon: float | None = None
    server_name: str | None = None
    ca_file: Path | None = None
    credentials: Credentials | None = None
    mail_domain: str | None = None  # mailready: the domain whose policy is read
    dkim_selectors: tuple[str, ...] = ()  # mailready: DKIM selectors
    zones_file: Path | None = None  # mailready: blocklist zones (default: public ones)


@dataclass(frozen=True, slots=True)
class Job:
    """One (target, address, test) measured every ``interval_s``."""

    target: TargetPlan
    address: str
    test: TestSpec

    @property
    def key(self) -> str:
        return f"{self.target.name}/{self.address}/{self.test.label}"


@dataclass(frozen=True)
class Plan:
    agent: str
    region: str | None
    spool: Path
    collector_url: str | None
    token: str | None
    collector_ca: Path | None
    batch_size: int
    upload_interval_s: float
    upload_timeout_s: float
    interval_s: float
    jitter_s: float
    start_spread_s: float
    concurrency: int
    max_starts_per_s: float
    options: dict[str, dict[str, Any]]
    targets: tuple[TargetPlan, ...]
    source: str = "<memory>"
    jobs: tuple[Job, ...] = field(default=())
    spool_error_limit_s: float = SPOOL_ERROR_LIMIT_S

    def __post_init__(self) -> None:
        jobs = tuple(Job(t, a, s) for t in self.targets for a in t.addresses for s in t.tests)
        object.__setattr__(self, "jobs", jobs)

    def describe(self) -> list[str]:
        """Who measures, and every measurement with its interval (``agent run --check``)."""
        return [f"plan {self.source}: agent {self.agent} ({self.region or 'no region'}), "
                f"{len(self.jobs)} measurement(s):",
                *(f"  {job.key} every {job.target.interval_s:g} s" for job in self.jobs)]


def parse_test(text: str) -> TestSpec:
    """``ping``, ``tcp:25``, ``trace``, ``trace:tcp:25``, ``smtp:465``, ``imap``, ``pmtu`` …"""
    parts = text.strip().lower().split(":")
    kind, rest = parts[0], parts[1:]

    def port(value: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise ValueError(f"{text!r}: port {value!r} is not 1-65535")
        return int(value)

    if kind == "ping" and not rest:
        return TestSpec("ping")
    if kind == "mailready" and not rest:
        return TestSpec("mailready")
    if kind == "tcp" and len(rest) == 1:
        return TestSpec("tcp", port(rest[0]))
    if kind in ("smtp", "imap") and len(rest) <= 1:
        return TestSpec(kind, port(rest[0]) if rest else _DEFAULT_PORT[kind])  # type: ignore[arg-type]
    if kind in ("trace", "pmtu") and len(rest) <= 2:
        protocol = rest[0] if rest else "icmp"
        if protocol not in ("icmp", "udp", "tcp"):
            raise ValueError(f"{text!r}: {kind} protocol must be icmp, udp or tcp")
        if protocol == "tcp" and len(rest) != 2:
            raise ValueError(f"{text!r}: a TCP {kind} needs a port ({kind}:tcp:25)")
        return TestSpec(kind, port(rest[1]) if len(rest) == 2 else None,  # type: ignore[arg-type]
                        protocol)  # type: ignore[arg-type]
    raise ValueError(f"{text!r}: unknown test (ping, tcp:PORT, trace[:udp|:tcp:PORT], "
                     "smtp[:PORT], imap[:PORT], pmtu[:udp|:tcp:PORT], mailready)")


def _locate(text: str, path: tuple[str | int, ...]) -> int | None:
    """The line of ``path`` (e.g. ("targets", 2, "tests")) in the TOML text, if it can tell."""
    lines = text.splitlines()
    section, index, key = None, 0, None
    if path and isinstance(path[0], str):
        section = path[0]
    if len(path) > 1 and isinstance(path[1], int):
        index = path[1]
        key = path[2] if len(path) > 2 and isinstance(path[2], str) else None
    elif len(path) > 1 and isinstance(path[1], str):
        key = path[1]
    if section is None:
        return None
    header = None
    seen = -1
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped in (f"[[{section}]]", f"[{section}]"):
            seen += 1
            if seen == index:
                header = number
                break
    if header is None:
        return None
    if key is None:
        return header
    for number in range(header + 1, len(lines) + 1):
        stripped = lines[number - 1].strip()
        if stripped.startswith("["):
            break
        if re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return header


class _Checker:
    def __init__(self, text: str) -> None:
        self.text = text
        self.problems: list[str] = []

    def bad(self, path: tuple[str | int, ...], message: str) -> None:
        where = ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")
        line = _locate(self.text, path)
        self.problems.append(f"{'line ' + str(line) + ': ' if line else ''}{where}: {message}")

    def number(self, table: dict[str, Any], path: tuple[str | int, ...], key: str,
               default: float, low: float, high: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high):
            self.bad((*path, key), f"must be a number in {low:g}..{high:g}, not {value!r}")
            return default
        return float(value)

    def string(self, table: dict[str, Any], path: tuple[str | int, ...], key: str,
               required: bool = False) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.bad((*path, key), "is required")
            return None
        if not isinstance(value, str) or not value:
            self.bad((*path, key), f"must be a non-empty string, not {value!r}")
            return None
        return value

    def unknown(self, table: dict[str, Any], path: tuple[str | int, ...],
                allowed: set[str]) -> None:
        for key in sorted(set(table) - allowed):
            self.bad((*path, key), f"unknown key (known: {', '.join(sorted(allowed))})")


# Options a plan may not set in [defaults]: each target or test sets them itself.
_PER_TARGET = {"trace": {"protocol", "port"}, "pmtu": {"protocol", "port", "pcap"},
               "smtp": {"ca_file", "server_name", "username", "password"},
               "imap": {"ca_file", "server_name", "username", "password"},
               "mailready": {"domain", "selectors", "zones", "resolvers", "ca_file"}}


def _option_classes() -> dict[str, type[Any]]:
    from ..measure.mail import MailOptions
    from ..measure.mailready import MailReadyOptions
    from ..measure.ping.options import PingOptions
    from ..measure.pmtu import PmtuOptions
    from ..measure.tcp import TcpOptions
    from ..measure.trace.options import TraceOptions

    return {"ping": PingOptions, "tcp": TcpOptions, "trace": TraceOptions,
            "smtp": MailOptions, "imap": MailOptions, "pmtu": PmtuOptions,
            "mailready": MailReadyOptions}


def _fits(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit the type ``hint`` of an option (None: it fits)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        reasons = [_fits(value, a) for a in args if a is not type(None)]
        return None if any(r is None for r in reasons) else next(
            (r for r in reasons if r), f"{value!r} is not allowed")
    if typing.get_origin(hint) is typing.Literal:
        return None if value in args else \
            f"must be one of {', '.join(repr(a) for a in args)}, not {value!r}"
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            f"must be a whole number, not {value!r}"
    if hint is float:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else \
            f"must be a number, not {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"must be a string, not {value!r}"
    return f"cannot be set in a plan ({value!r})"


def _check_defaults(c: _Checker, defaults: Any) -> dict[str, dict[str, Any]]:
    """``[defaults.KIND]``: every key known, every value of its type, every table a valid
    set of options as the probe itself checks it (count, timeouts, ceilings ...)."""
    if not isinstance(defaults, dict):
        c.bad(("defaults",), "must be a table of [defaults.ping], [defaults.tcp] ...")
        return {}
    classes = _option_classes()
    c.unknown(defaults, ("defaults",), set(classes))
    options: dict[str, dict[str, Any]] = {}
    for kind, table in defaults.items():
        if kind not in classes:
            continue
        path: tuple[str | int, ...] = (f"defaults.{kind}",)
        if not isinstance(table, dict):
            c.bad(path, f"must be a table of {kind} options, not {table!r}")
            continue
        cls = classes[kind]
        hints = typing.get_type_hints(cls)
        allowed = {f.name for f in dataclasses.fields(cls)} - _PER_TARGET.get(kind, set())
        c.unknown(table, path, allowed)
        good: dict[str, Any] = {}
        for key in sorted(set(table) & allowed):
            why = _fits(table[key], hints[key])
            if why:
                c.bad((*path, key), why)
            else:
                good[key] = table[key]
        try:  # the probe's own checks, over the options that are well typed
            cls(**good)
        except (ValueError, TypeError) as exc:
            c.bad(path, str(exc))
        options[kind] = dict(table)
    return options


def load_plan(path: Path | str) -> Plan:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlanError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PlanError(str(path), [f"line {line}: not UTF-8 (byte {exc.object[exc.start]:#04x} "
                                    f"at offset {exc.start}); save the plan as UTF-8"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_plan(raw, text, str(path), base=path.parent)


def parse_plan(raw: dict[str, Any], text: str = "", source: str = "<memory>",
               base: Path | None = None) -> Plan:
    c = _Checker(text)
    base = base or Path.cwd()
    c.unknown(raw, (), {"agent", "collector", "schedule", "defaults", "targets"})
    agent = raw.get("agent", {})
    c.unknown(agent, ("agent",), {"name", "region", "spool", "spool_error_limit_s"})
    name = c.string(agent, ("agent",), "name", required=True) or "agent"
    if not _NAME.match(name):
        c.bad(("agent", "name"), "letters, digits and . _ : - only (at most 64)")
    region = c.string(agent, ("agent",), "region")
    spool_text = c.string(agent, ("agent",), "spool")
    spool = (base / spool_text) if spool_text else base / f"{name}.spool.sqlite"
    spool_limit = c.number(agent, ("agent",), "spool_error_limit_s", SPOOL_ERROR_LIMIT_S, 1,
                           86_400)

    col = raw.get("collector", {})
    c.unknown(col, ("collector",), {"url", "token", "token_file", "ca_file", "batch_size",
                                     "upload_interval_s", "timeout_s"})
    url = c.string(col, ("collector",), "url")
    if url is not None and not re.match(r"^https?://[^/\s]+", url):
        c.bad(("collector", "url"), "must be an http:// or https:// URL")
    token = c.string(col, ("collector",), "token")
    token_file = c.string(col, ("collector",), "token_file")
    if token_file is not None:
        try:
            token = (base / token_file).read_text().strip()
        except OSError as exc:
            c.bad(("collector", "token_file"), f"cannot read {token_file}: {exc.strerror}")
    if url is not None and not token and token_file is None:
        c.bad(("collector",), "a collector url needs token or token_file")
    ca_text = c.string(col, ("collector",), "ca_file")
    batch = int(c.number(col, ("collector",), "batch_size", 500, 1, 50_000))
    upload_interval = c.number(col, ("collector",), "upload_interval_s", 5.0, 0.1, 3600)
    upload_timeout = c.number(col, ("collector",), "timeout_s", 10.0, 0.5, 300)

    sched = raw.get("schedule", {})
    c.unknown(sched, ("schedule",), {"interval_s", "jitter_s", "start_spread_s", "concurrency",
                                     "max_starts_per_s"})
    interval = c.number(sched, ("schedule",), "interval_s", 60.0, MIN_INTERVAL_S, 86_400)
    jitter = c.number(sched, ("schedule",), "jitter_s", 0.0, 0, 3600)
    spread = c.number(sched, ("schedule",), "start_spread_s", interval, 0, 86_400)
    concurrency = int(c.number(sched, ("schedule",), "concurrency", 4, 1, MAX_CONCURRENCY))
    starts = c.number(sched, ("schedule",), "max_starts_per_s", 5.0, 0.1, 100)
    if jitter * 2 >= interval:
        c.bad(("schedule", "jitter_s"), "must be less than half of interval_s")

    options = _check_defaults(c, raw.get("defaults", {}))

    targets: list[TargetPlan] = []
    raw_targets = raw.get("targets", [])
    if not isinstance(raw_targets, list) or not raw_targets:
        c.bad(("targets",), "at least one [[targets]] table is needed")
        raw_targets = []
    names: set[str] = set()
    for i, t in enumerate(raw_targets):
        p: tuple[str | int, ...] = ("targets", i)
        if not isinstance(t, dict):
            c.bad(p, "must be a table")
            continue
        c.unknown(t, p, {"name", "addresses", "tests", "interval_s", "location", "lat", "lon",
                         "server_name", "ca_file", "credentials", "mail_domain",
                         "dkim_selectors", "zones_file"})
        tname = c.string(t, p, "name", required=True) or f"target-{i}"
        if tname in names:
            c.bad((*p, "name"), f"a second target named {tname!r}")
        names.add(tname)
        addresses = t.get("addresses")
        good_addresses: list[str] = []
        if not isinstance(addresses, list) or not addresses:
            c.bad((*p, "addresses"), "must be a non-empty list of IP addresses or host names")
        else:
            for a in addresses:
                if not isinstance(a, str):
                    c.bad((*p, "addresses"), f"{a!r} is not a string")
                    continue
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    if not re.match(r"^[A-Za-z0-9.-]{1,253}$", a):
                        c.bad((*p, "addresses"), f"{a!r} is neither an IP address nor a name")
                        continue
                good_addresses.append(a)
        tests: list[TestSpec] = []
        raw_tests = t.get("tests")
        if not isinstance(raw_tests, list) or not raw_tests:
            c.bad((*p, "tests"), "must be a non-empty list such as [\"ping\", \"smtp:25\"]")
        else:
            for spec in raw_tests:
                try:
                    tests.append(parse_test(str(spec)))
                except ValueError as exc:
                    c.bad((*p, "tests"), str(exc))
        t_interval = c.number(t, p, "interval_s", interval, MIN_INTERVAL_S, 86_400)
        lat = t.get("lat")
        lon = t.get("lon")
        if (lat is None) != (lon is None):
            c.bad(p, "give both lat and lon, or neither")
        for key, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, int | float) or abs(value) > limit):
                c.bad((*p, key), f"must be a number in -{limit}..{limit}")
        ca = c.string(t, p, "ca_file")
        ca_path = base / ca if ca else None
        if ca_path is not None and not ca_path.is_file():
            c.bad((*p, "ca_file"), f"{ca_path} does not exist")
        mail_domain = c.string(t, p, "mail_domain")
        selectors = t.get("dkim_selectors", [])
        if not isinstance(selectors, list) or not all(isinstance(x, str) and x
                                                      for x in selectors):
            c.bad((*p, "dkim_selectors"), "must be a list of DKIM selectors (strings)")
            selectors = []
        zones_text = c.string(t, p, "zones_file")
        zones_path = base / zones_text if zones_text else None
        if zones_path is not None:
            from ..measure.mailready import MailReadyError, read_zones

            try:
                read_zones(zones_path)
            except MailReadyError as exc:
                c.bad((*p, "zones_file"), str(exc))
        creds = None
        raw_creds = t.get("credentials")
        if raw_creds is not None:
            if not isinstance(raw_creds, dict):
                c.bad((*p, "credentials"), "must be a table {user, password_env}")
            else:
                user = raw_creds.get("user")
                env = raw_creds.get("password_env")
                if not isinstance(user, str) or not isinstance(env, str):
                    c.bad((*p, "credentials"), "needs user and password_env (the name of an "
                          "environment variable: passwords never live in the plan)")
                elif env not in os.environ:
                    c.bad((*p, "credentials"), f"environment variable {env} is not set")
                else:
                    creds = Credentials(user, os.environ[env])
        targets.append(TargetPlan(
            name=tname, addresses=tuple(good_addresses), tests=tuple(tests),
            interval_s=t_interval, location=c.string(t, p, "location"),
            lat=float(lat) if isinstance(lat, int | float) else None,
            lon=float(lon) if isinstance(lon, int | float) else None,
            server_name=c.string(t, p, "server_name"), ca_file=ca_path, credentials=creds,
            mail_domain=mail_domain, dkim_selectors=tuple(selectors), zones_file=zones_path))
    jobs = sum(len(t.addresses) * len(t.tests) for t in targets)
    if jobs > MAX_JOBS:
        c.bad(("targets",), f"{jobs} measurements per cycle; at most {MAX_JOBS}")
    if c.problems:
        raise PlanError(source, c.problems)
    return Plan(
        agent=name, region=region, spool=spool, collector_url=url.rstrip("/") if url else None,
        token=token, collector_ca=(base / ca_text) if ca_text else None, batch_size=batch,
        upload_interval_s=upload_interval, upload_timeout_s=upload_timeout, interval_s=interval,
        jitter_s=jitter, start_spread_s=spread, concurrency=concurrency,
        max_starts_per_s=starts, options=options, targets=tuple(targets), source=source,
        spool_error_limit_s=spool_limit,
    )
