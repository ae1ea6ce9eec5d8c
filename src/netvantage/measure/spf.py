"""SPF (RFC 7208): find the record, evaluate it for one address, count DNS lookups.

Written here rather than taken from a library: pyspf evaluates, but makes its own
DNS queries with its own timeouts (no shared budget, no way to report a timeout
as a value rather than an exception), and checkdmarc parses and counts lookups
but does not evaluate a record for an address.  A readiness check needs both,
bounded by the one DNS budget of :class:`~netvantage.measure.dnsq.Dns`.

What is implemented: the mechanisms ``all``, ``include``, ``a``, ``mx``, ``ptr``,
``ip4``, ``ip6``, ``exists`` with CIDR lengths, the ``redirect`` modifier, the
qualifiers, the limit of 10 DNS-querying terms (section 4.6.4; ``include``,
``a``, ``mx``, ``ptr``, ``exists``, ``redirect``), at most 10 names per ``mx``
and ``ptr`` lookup, the limit of 2 void lookups (4.6.4), loops (an include
chain that returns to a domain it is evaluating: ``permerror``), and the macros
of section 7 that a sender-independent check can expand (``%{i}``, ``%{d}``,
``%{v}``, ``%{h}``, ``%{o}``, with digits and ``r``); the sender's local part
(``%{l}``) is ``postmaster`` as for a null sender (section 2.4).

Results are RFC 7208's: ``pass``, ``fail``, ``softfail``, ``neutral``, ``none``,
``permerror``, ``temperror``; ``trace`` says which term decided it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from .dnsq import Answer, Dns

__all__ = ["MAX_LOOKUPS", "SpfResult", "check_spf"]

SpfOutcome = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
MAX_LOOKUPS = 10
MAX_VOID = 2
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"}
_MACRO = re.compile(r"%\{([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-")


class _Error(Exception):
    def __init__(self, outcome: SpfOutcome, why: str) -> None:
        super().__init__(why)
        self.outcome = outcome
        self.why = why


@dataclass
class SpfResult:
    outcome: SpfOutcome
    record: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    trace: list[str] = field(default_factory=list)
    why: str = ""


@dataclass
class _State:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    lookups: int = 0
    void: int = 0
    trace: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)


async def check_spf(dns: Dns, domain: str, address: str, helo: str | None = None) -> SpfResult:
    """Evaluate ``domain``'s SPF record for a message from ``address``."""
    state = _State(ipaddress.ip_address(address), helo or domain)
    try:
        record = await _record(dns, domain)
        if record is None:
            return SpfResult("none", None, why=f"{domain} publishes no SPF record")
        outcome = await _evaluate(dns, domain, record, state)
        return SpfResult(outcome, record, state.lookups, state.void, state.trace)
    except _Error as exc:
        first = await _first_record(dns, domain)
        return SpfResult(exc.outcome, first, state.lookups, state.void, state.trace, exc.why)


async def _first_record(dns: Dns, domain: str) -> str | None:
    try:
        return await _record(dns, domain)
    except _Error:
        return None


async def _record(dns: Dns, domain: str) -> str | None:
    answer = await dns.query(domain, "TXT")
    if answer.failed:
        raise _Error("temperror", answer.describe())
    records = [r for r in answer.records
               if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if len(records) > 1:
        raise _Error("permerror", f"{domain} publishes {len(records)} SPF records (4.5)")
    return records[0] if records else None


def _count(state: _State, term: str) -> None:
    state.lookups += 1
    if state.lookups > MAX_LOOKUPS:
        raise _Error("permerror", f"more than {MAX_LOOKUPS} DNS lookups (at {term!r}; "
                                  "RFC 7208 4.6.4)")


def _void(state: _State, answer: Answer) -> None:
    if answer.outcome in ("nxdomain", "nodata"):
        state.void += 1
        if state.void > MAX_VOID:
            raise _Error("permerror", f"more than {MAX_VOID} void lookups (RFC 7208 4.6.4)")


async def _evaluate(dns: Dns, domain: str, record: str, state: _State) -> SpfOutcome:
    if domain.lower() in state.stack:
        raise _Error("permerror", f"loop: {' -> '.join([*state.stack, domain])}")
    state.stack.append(domain.lower())
    try:
        terms = record.split()[1:]
        redirect: str | None = None
        for term in terms:
            if "=" in term and term.split("=", 1)[0].lstrip("+-~?").lower() not in _MECHANISMS:
                key, _, value = term.partition("=")
                if key.lower() == "redirect":
                    if redirect is not None:
                        raise _Error("permerror", "two redirect modifiers")
                    redirect = value
                elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9\-_.]*", key):
                    raise _Error("permerror", f"bad term {term!r} in {domain}")
                continue
            qualifier = _QUALIFIERS.get(term[0])
            body = term[1:] if qualifier else term
            result: SpfOutcome = qualifier or "pass"  # type: ignore[assignment]
            if await _matches(dns, domain, body, state):
                state.trace.append(f"{domain}: {term} matched")
                return result
        if redirect is not None:
            _count(state, "redirect=" + redirect)
            target = _expand(redirect, domain, state)
            sub = await _record(dns, target)
            if sub is None:
                raise _Error("permerror", f"redirect to {target}, which has no SPF record")
            return await _evaluate(dns, target, sub, state)
        state.trace.append(f"{domain}: no term matched")
        return "neutral"
    finally:
        state.stack.pop()


def _split(body: str, name: str) -> tuple[str | None, int | None, int | None]:
    """``name[:domain][/cidr4][//cidr6]`` → (domain, cidr4, cidr6)."""
    rest = body[len(name):]
    cidr4 = cidr6 = None
    m = re.search(r"(?:/(\d+))?(?://(\d+))?$", rest)
    if m and (m.group(1) or m.group(2)):
        cidr4 = int(m.group(1)) if m.group(1) else None
        cidr6 = int(m.group(2)) if m.group(2) else None
        rest = rest[:m.start()]
    if (cidr4 is not None and cidr4 > 32) or (cidr6 is not None and cidr6 > 128):
        raise _Error("permerror", f"bad CIDR length in {body!r}")
    if rest.startswith(":"):
        return rest[1:] or None, cidr4, cidr6
    if rest:
        raise _Error("permerror", f"bad mechanism {body!r}")
    return None, cidr4, cidr6


def _in(state: _State, text: str, cidr4: int | None, cidr6: int | None) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.version != state.address.version:
        return False
    length = (cidr4 if ip.version == 4 else cidr6)
    if length is None:
        return ip == state.address
    return state.address in ipaddress.ip_network(f"{ip}/{length}", strict=False)


async def _addresses(dns: Dns, name: str, state: _State) -> list[str]:
    rdtype = "A" if state.address.version == 4 else "AAAA"
    answer = await dns.query(name, rdtype)
    if answer.failed:
        raise _Error("temperror", answer.describe())
    _void(state, answer)
    return list(answer.records)


async def _matches(dns: Dns, domain: str, body: str, state: _State) -> bool:
    lower = body.lower()
    name = re.split(r"[:/]", lower, maxsplit=1)[0]
    if name not in _MECHANISMS:
        raise _Error("permerror", f"unknown mechanism {body!r} in {domain}")
    if name == "all":
        if body != "all" and lower != "all":
            raise _Error("permerror", f"bad mechanism {body!r}")
        return True
    if name in ("ip4", "ip6"):
        value = body[4:]
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise _Error("permerror", f"bad {name} value {value!r} in {domain}") from None
        if (name == "ip4") != (network.version == 4):
            raise _Error("permerror", f"{body!r}: wrong address family")
        return network.version == state.address.version and state.address in network
    if name == "include":
        _count(state, body)
        target = _expand(body[len("include:"):], domain, state)
        sub = await _record(dns, target)
        if sub is None:
            raise _Error("permerror", f"include:{target}, which has no SPF record")
        result = await _evaluate(dns, target, sub, state)
        if result == "pass":
            return True
        if result in ("temperror", "permerror"):
            raise _Error(result, f"include:{target} gave {result}")
        return False
    if name == "exists":
        _count(state, body)
        target = _expand(body[len("exists:"):], domain, state)
        answer = await dns.query(target, "A")
        if answer.failed:
            raise _Error("temperror", answer.describe())
        _void(state, answer)
        return answer.outcome == "ok"
    target_text, cidr4, cidr6 = _split(body, name)
    target = _expand(target_text, domain, state) if target_text else domain
    _count(state, body)
    if name == "a":
        return any(_in(state, a, cidr4, cidr6) for a in await _addresses(dns, target, state))
    if name == "mx":
        answer = await dns.query(target, "MX")
        if answer.failed:
            raise _Error("temperror", answer.describe())
        _void(state, answer)
        hosts = [r.split()[-1] for r in answer.records]
        if len(hosts) > 10:
            raise _Error("permerror", f"{target} has more than 10 MX names (4.6.4)")
        for host in hosts:
            if any(_in(state, a, cidr4, cidr6) for a in await _addresses(dns, host, state)):
                return True
        return False
    # ptr (discouraged by the RFC, still evaluated)
    rev = ipaddress.ip_address(state.address).reverse_pointer
    answer = await dns.query(rev, "PTR")
    if answer.failed:
        return False  # 5.5: a failed PTR lookup is no match, not an error
    for host in answer.records[:10]:
        under = host.lower() == target.lower() or host.lower().endswith("." + target.lower())
        if under and str(state.address) in await _addresses(dns, host, state):
            return True
    return False


def _expand(spec: str, domain: str, state: _State) -> str:
    """Macro expansion (RFC 7208 section 7) for what a check without a sender knows."""
    if "%" not in spec:
        return spec
    ip = state.address
    i_value = str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))
    values = {"i": i_value, "d": domain, "s": f"postmaster@{domain}", "l": "postmaster",
              "o": domain, "h": state.helo, "v": "in-addr" if ip.version == 4 else "ip6",
              "p": "unknown"}

    def one(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "%%":
            return "%"
        if whole == "%_":
            return " "
        if whole == "%-":
            return "%20"
        letter, digits, reverse, delims = m.groups()
        value = values.get(letter.lower())
        if value is None:
            raise _Error("permerror", f"unknown macro {whole!r}")
        parts = re.split("[" + re.escape(delims or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise _Error("permerror", f"bad macro {whole!r}")
            parts = parts[-int(digits):]
        return ".".join(parts)

    rest = _MACRO.sub(one, spec)
    if "%" in rest:
        raise _Error("permerror", f"bad macro in {spec!r}")
    return rest
