"""A bounded DNS stub client: every query has a timeout, every check a total budget.

dnspython builds and parses the messages and moves them (``dns.asyncquery`` over
UDP, TCP when the answer is truncated).  What is written here, and why:
dnspython's resolver raises a different exception for each failure and takes a
lifetime per call; a readiness check needs every failure as a *value* it can put
in a record (``timeout``, ``servfail``, ``refused``, ``garbage``, a CNAME loop …)
and one budget shared by all its queries, so that a resolver that answers
nothing or answers garbage costs at most the budget and never raises.  The
CNAME chain in an answer is followed here, with a hop limit and a loop check,
because a recursive resolver hands the chain over as it found it.

:class:`Dns` keeps the count of queries sent and caches answers for the run
(SPF evaluation asks for the same names more than once).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver

__all__ = ["Answer", "Dns", "Outcome", "parse_resolver", "system_resolvers"]

Outcome = Literal["ok", "nxdomain", "nodata", "servfail", "refused", "timeout", "garbage",
                  "loop", "error", "budget"]
#: Outcomes that say nothing about the name: the check that met them is ``unknown``.
FAILED: frozenset[str] = frozenset({"servfail", "refused", "timeout", "garbage", "loop",
                                    "error", "budget"})
_MAX_CNAME_HOPS = 8


@dataclass(frozen=True, slots=True)
class Answer:
    """What one question got: an outcome, the records' texts (after any CNAME chain)."""

    name: str
    rdtype: str
    outcome: Outcome
    records: tuple[str, ...] = ()
    detail: str = ""
    elapsed_ms: float | None = None

    @property
    def failed(self) -> bool:
        """True when the answer says nothing about the name (timeout, SERVFAIL, …)."""
        return self.outcome in FAILED

    def describe(self) -> str:
        """``NAME TYPE: outcome (detail)`` for evidence."""
        text = f"{self.name} {self.rdtype}: {self.outcome}"
        return f"{text} ({self.detail})" if self.detail else text


def parse_resolver(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` → (address, port)."""
    import ipaddress

    text = text.strip()
    port = 53
    host = text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"resolver {text!r} is not an IP address (IP, IP:PORT or "
                         "[IPv6]:PORT)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"resolver {text!r}: port out of range")
    return host, port


def system_resolvers() -> list[tuple[str, int]]:
    """The resolvers of /etc/resolv.conf (inside ``ip netns exec``: the namespace's own)."""
    try:
        resolver = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError):
        return []
    port = int(resolver.port)
    return [(str(ns), port) for ns in resolver.nameservers]


@dataclass
class Dns:
    """Queries ``resolvers`` in turn; each query at most ``timeout_s``, all within ``budget_s``."""

    resolvers: list[tuple[str, int]]
    timeout_s: float = 2.0
    budget_s: float = 20.0
    queries: int = 0
    _deadline: float = 0.0
    _cache: dict[tuple[str, str], Answer] = field(default_factory=dict)
    _inflight: dict[tuple[str, str], asyncio.Future[Answer]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 60 or not 0 < self.budget_s <= 600:
            raise ValueError("timeout_s must be in (0, 60] and budget_s in (0, 600]")
        self._deadline = time.monotonic() + self.budget_s

    def left_s(self) -> float:
        return self._deadline - time.monotonic()

    async def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype)
        if key in self._cache:
            return self._cache[key]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._resolve(key[0], rdtype)
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._inflight[key]
        future.set_result(answer)
        self._cache[key] = answer
        return answer

    async def _resolve(self, name: str, rdtype: str) -> Answer:
        t0 = time.perf_counter()
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, ValueError) as exc:
            return Answer(name, rdtype, "error", detail=f"not a DNS name: {exc}")
        if not self.resolvers:
            return Answer(name, rdtype, "error", detail="no resolver configured")
        last: Answer | None = None
        for where, port in self.resolvers:
            response, failure = await self._exchange(qname, rdtype, where, port)
            if response is None:
                last = Answer(name, rdtype, failure[0], detail=failure[1],
                              elapsed_ms=_ms(t0))
                if failure[0] == "budget":
                    return last
                continue  # the next resolver may answer
            answer = _read(name, qname, rdtype, response, where)
            answer = Answer(answer.name, answer.rdtype, answer.outcome, answer.records,
                            answer.detail, _ms(t0))
            if answer.outcome in ("servfail", "refused") and (where, port) != self.resolvers[-1]:
                last = answer
                continue
            return answer
        assert last is not None
        return last

    async def _exchange(self, qname: dns.name.Name, rdtype: str, where: str, port: int
                        ) -> tuple[dns.message.Message | None, tuple[Outcome, str]]:
        timeout = min(self.timeout_s, self.left_s())
        if timeout <= 0.01:
            return None, ("budget", f"the check's DNS budget of {self.budget_s:g} s is spent")
        query = dns.message.make_query(qname, rdtype, want_dnssec=False)
        query.flags |= dns.flags.RD
        self.queries += 1
        try:
            response = await asyncio.wait_for(
                dns.asyncquery.udp(query, where, timeout=timeout, port=port,
                                   ignore_unexpected=True, raise_on_truncation=True),
                timeout + 0.05)
            return response, ("ok", "")
        except dns.message.Truncated:
            return await self._tcp(query, where, port)
        except (TimeoutError, dns.exception.Timeout):
            return None, ("timeout", f"no answer from {where} within {timeout:.1f} s")
        except (dns.exception.FormError, dns.exception.SyntaxError,
                dns.message.UnknownHeaderField, ValueError, UnicodeError, IndexError) as exc:
            return None, ("garbage", f"unparsable answer from {where}: {type(exc).__name__}")
        except dns.exception.DNSException as exc:
            return None, ("garbage", f"bad answer from {where}: {type(exc).__name__}: {exc}")
        except OSError as exc:
            return None, ("error", f"{where}: {exc.strerror or exc}")

    async def _tcp(self, query: dns.message.Message, where: str, port: int
                   ) -> tuple[dns.message.Message | None, tuple[Outcome, str]]:
        timeout = min(self.timeout_s, self.left_s())
        if timeout <= 0.01:
            return None, ("budget", f"the check's DNS budget of {self.budget_s:g} s is spent")
        self.queries += 1
        try:
            response = await asyncio.wait_for(
                dns.asyncquery.tcp(query, where, timeout=timeout, port=port), timeout + 0.05)
            return response, ("ok", "")
        except (TimeoutError, dns.exception.Timeout):
            return None, ("timeout", f"truncated over UDP, and no TCP answer from {where} "
                                     f"within {timeout:.1f} s")
        except dns.exception.DNSException as exc:
            return None, ("garbage", f"truncated over UDP, bad TCP answer from {where}: "
                                     f"{type(exc).__name__}")
        except (ValueError, UnicodeError, IndexError) as exc:
            return None, ("garbage", f"truncated over UDP, unparsable TCP answer from {where}: "
                                     f"{type(exc).__name__}")
        except OSError as exc:
            return None, ("error", f"truncated over UDP; TCP to {where}: "
                                   f"{exc.strerror or exc}")


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


def _read(name: str, qname: dns.name.Name, rdtype: str, response: dns.message.Message,
          where: str) -> Answer:
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return Answer(name, rdtype, "nxdomain")
    if rcode == dns.rcode.SERVFAIL:
        return Answer(name, rdtype, "servfail", detail=f"SERVFAIL from {where}")
    if rcode == dns.rcode.REFUSED:
        return Answer(name, rdtype, "refused", detail=f"REFUSED by {where}")
    if rcode != dns.rcode.NOERROR:
        return Answer(name, rdtype, "error", detail=f"{dns.rcode.to_text(rcode)} from {where}")
    wanted = dns.rdatatype.from_text(rdtype)
    current = qname
    seen = {current}
    for _ in range(_MAX_CNAME_HOPS + 1):
        rrset = response.get_rrset(response.answer, current, dns.rdataclass.IN, wanted)
        if rrset is not None:
            return Answer(name, rdtype, "ok", tuple(_text(rd) for rd in rrset))
        cname = response.get_rrset(response.answer, current, dns.rdataclass.IN,
                                   dns.rdatatype.CNAME)
        if cname is None:
            return Answer(name, rdtype, "nodata")
        target = cname[0].target
        if target in seen:
            return Answer(name, rdtype, "loop", detail=f"CNAME loop at {target}")
        seen.add(target)
        current = target
    return Answer(name, rdtype, "loop", detail=f"more than {_MAX_CNAME_HOPS} CNAMEs")


def _text(rd: object) -> str:
    """A record's value as text: TXT strings joined (RFC 7208 3.3), names without the dot."""
    strings = getattr(rd, "strings", None)
    if strings is not None:
        return b"".join(strings).decode("utf-8", errors="replace")
    exchange = getattr(rd, "exchange", None)
    if exchange is not None:
        return f"{getattr(rd, 'preference', 0)} {exchange.to_text(omit_final_dot=True)}"
    target = getattr(rd, "target", None)
    if target is not None:
        return str(target.to_text(omit_final_dot=True))
    return str(rd.to_text())  # type: ignore[attr-defined]
