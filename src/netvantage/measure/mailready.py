"""Will mail flow from this host on day one?  Blocklists, reverse DNS, domain policy, TLS, port 25.

``netvantage measure mailready HOST_OR_IP --domain D --selector S`` gives one
``mailready`` record (:class:`~netvantage.results.MailReadyBody`) with a field
per check, each ``pass`` / ``warn`` / ``fail`` / ``unknown`` with its evidence:

=========  ==================================================================
check      what it looks at
=========  ==================================================================
dnsbl      the address in every IP blocklist zone (IPv4 reversed by octet,
           IPv6 by nibble, RFC 5782 section 2.1 and 2.4); return codes decoded
rhsbl      the domain in every domain blocklist zone (RFC 5782 section 2.3)
rdns       PTR present; forward-confirmed (the PTR name's A/AAAA holds the
           address); not generic-looking (the address's digits or pool words
           in it); the same name as the SMTP banner and EHLO reply
spf        the domain's SPF record evaluated for the address (:mod:`.spf`)
dkim       each selector's key: present, parses, RSA key size (RFC 6376 3.6.1,
           RFC 8301: at least 1024 bits, 2048 recommended)
dmarc      the policy at ``_dmarc.DOMAIN`` (RFC 7489 6.3)
mta_sts    the TXT at ``_mta-sts.DOMAIN`` and the policy file at
           ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (RFC 8461)
tls_rpt    the TXT at ``_smtp._tls.DOMAIN`` (RFC 8460)
mx         an MX of the domain names this host (its address among the MX
           names' addresses)
tls        from the SMTP probe on port 25: certificate names cover the banner
           name and MX names, expiry, chain verified (:mod:`.mail`, :mod:`.certs`)
port25     whether port 25 answered, from the same SMTP probe
=========  ==================================================================

A DNS failure is never read as clean: a blocklist that times out or answers
SERVFAIL is ``unknown`` for that zone, and a check is ``pass`` only when it saw
what it needed.  Codes in 127.255.255.0/24 are refusals (Spamhaus returns
127.255.255.254 to queries through public or open resolvers, .255 to excessive
ones, .252 for a typing error in the zone name; Spamhaus' "DNSBL return codes"
page): ``unknown``, with the reason.  Answers outside 127.0.0.0/8 come from a
resolver that rewrites NXDOMAIN: ``unknown`` too.

Default zones (:data:`DEFAULT_ZONES`) are well-known public ones; a zones file
(``--zones``) replaces them: one zone a line, ``ip ZONE`` or ``domain ZONE``,
``#`` comments.

Bounds: every query has a timeout (``timeout_s``), all of a check's queries share
one budget (``budget_s``), and the SMTP probe has its own deadline.

What is written here and why: dnspython does the DNS (messages, transport);
asn1crypto (already the certificate reader's) parses DKIM keys; the SMTP probe
and certificate reading are this project's own.  The SPF evaluator (:mod:`.spf`)
and the small parsers of DKIM, DMARC, MTA-STS and TLS-RPT tag lists are written
here: checkdmarc (Apache-2.0) parses all of them but does its own DNS through
dnspython's resolver with per-call timeouts and raises on failures, so it could
neither share the budget nor report a timeout as ``unknown``; dkimpy verifies
signatures, which this check never sees (it only needs the published key's
size).  Each parser is a tag=value split (RFC 6376 3.2) with the checks the
RFCs ask for.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ..errors import NetvantageError
from ..results import (
    READY_CHECKS,
    MailReadyBody,
    MailReadyRecord,
    ReadyCheck,
    ReadyStatus,
    SmtpRecord,
    Status,
    ZoneAnswer,
    ms,
    new_id,
    utc_now,
)
from .common import Origin
from .dnsq import Dns, parse_resolver, system_resolvers
from .spf import MAX_LOOKUPS, check_spf

__all__ = ["DEFAULT_ZONES", "MailReadyError", "MailReadyOptions", "Zone", "decode_codes",
           "mailready", "read_zones", "reverse_name"]


class MailReadyError(NetvantageError, ValueError):
    """Bad input to a readiness check (a zones file, a resolver, a domain)."""


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    kind: Literal["ip", "domain"]


#: Well-known public blocklists (IP and domain).  Each operator's terms of use apply:
#: Spamhaus and URIBL refuse queries through large public resolvers (the refusal is
#: read as ``unknown``, never as clean).
DEFAULT_ZONES: tuple[Zone, ...] = (
    Zone("zen.spamhaus.org", "ip"),
    Zone("bl.spamcop.net", "ip"),
    Zone("b.barracudacentral.org", "ip"),
    Zone("psbl.surriel.com", "ip"),
    Zone("bl.mailspike.net", "ip"),
    Zone("dnsbl-1.uceprotect.net", "ip"),
    Zone("dbl.spamhaus.org", "domain"),
    Zone("multi.surbl.org", "domain"),
    Zone("multi.uribl.com", "domain"),
)

# Spamhaus' documented return codes (the "DNSBL return codes" page of spamhaus.org).
_SPAMHAUS_IP = {
    "127.0.0.2": "SBL: Spamhaus Block List (spam source)",
    "127.0.0.3": "SBL CSS: snowshoe spam",
    "127.0.0.4": "XBL: exploited host (CBL)",
    "127.0.0.9": "SBL DROP: hijacked netblock",
    "127.0.0.10": "PBL: end-user range (ISP policy)",
    "127.0.0.11": "PBL: end-user range (Spamhaus)",
}
_SPAMHAUS_DBL = {
    "127.0.1.2": "DBL: spam domain",
    "127.0.1.4": "DBL: phishing domain",
    "127.0.1.5": "DBL: malware domain",
    "127.0.1.6": "DBL: botnet C&C domain",
    "127.0.1.102": "DBL: abused legit spam",
    "127.0.1.103": "DBL: abused spammed redirector",
    "127.0.1.104": "DBL: abused legit phish",
    "127.0.1.105": "DBL: abused legit malware",
    "127.0.1.106": "DBL: abused legit botnet C&C",
}
_REFUSALS = {
    "127.255.255.252": "query refused: typing error in the DNSBL name",
    "127.255.255.254": "query refused: sent through a public or open resolver",
    "127.255.255.255": "query refused: excessive number of queries",
}
_GENERIC_PTR = re.compile(
    r"(dynamic|dyn|dhcp|pool|dsl|adsl|cable|ppp|dial|dialup|client|customer|cust|"
    r"broadband|static|unassigned|host-?\d|ip-?\d)", re.IGNORECASE)


def read_zones(path: Path | str) -> tuple[Zone, ...]:
    """A zones file: ``ip ZONE`` or ``domain ZONE`` per line; ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MailReadyError(f"{path}: cannot read the zones file: {exc}") from None
    zones: list[Zone] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if (len(parts) != 2 or parts[0] not in ("ip", "domain")
                or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?", parts[1])):
            problems.append(f"line {number}: {raw.strip()!r} is not 'ip ZONE' or 'domain ZONE'")
            continue
        zones.append(Zone(parts[1].rstrip(".").lower(), parts[0]))  # type: ignore[arg-type]
    if problems:
        raise MailReadyError(f"{path}: " + "; ".join(problems))
    if not zones:
        raise MailReadyError(f"{path}: no zones (lines 'ip ZONE' or 'domain ZONE')")
    return tuple(zones)


def reverse_name(address: str, zone: str) -> str:
    """The DNSBL query name: IPv4 octets or IPv6 nibbles reversed, then the zone (RFC 5782)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        labels = str(ip).split(".")[::-1]
    else:
        labels = list(ip.exploded.replace(":", ""))[::-1]
    return ".".join([*labels, zone])


def decode_codes(zone: str, codes: Sequence[str]) -> tuple[Literal["listed", "unknown"], str]:
    """Whether a blocklist's A records list the name, and what they mean."""
    meanings: list[str] = []
    refused = False
    listed = False
    for code in codes:
        try:
            ip = ipaddress.ip_address(code)
        except ValueError:
            meanings.append(f"{code}: not an address")
            refused = True
            continue
        if code in _REFUSALS or code.startswith("127.255.255."):
            meanings.append(f"{code}: {_REFUSALS.get(code, 'query refused by the zone')}")
            refused = True
        elif code == "127.0.1.255":
            meanings.append(f"{code}: query refused: IP queries to a domain list")
            refused = True
        elif ip.version != 4 or ip not in ipaddress.ip_network("127.0.0.0/8"):
            meanings.append(f"{code}: outside 127.0.0.0/8 (a resolver rewriting NXDOMAIN?)")
            refused = True
        else:
            listed = True
            known = (_SPAMHAUS_IP.get(code) if zone.endswith("spamhaus.org")
                     and not zone.startswith("dbl.") else _SPAMHAUS_DBL.get(code)
                     if zone.startswith("dbl.") else None)
            meanings.append(f"{code}: {known or 'listed'}")
    return ("listed" if listed and not refused else "unknown"), "; ".join(meanings)


@dataclass(frozen=True, slots=True)
class MailReadyOptions:
    domain: str | None = None
    selectors: tuple[str, ...] = ()
    resolvers: tuple[str, ...] = ()  # empty: the system's (/etc/resolv.conf)
    zones: tuple[Zone, ...] = DEFAULT_ZONES
    timeout_s: float = 2.0  # per DNS query
    budget_s: float = 20.0  # all DNS queries of one check
    smtp: bool = True  # probe port 25 (banner, EHLO, STARTTLS certificate)
    smtp_timeout_s: float = 15.0
    ca_file: Path | None = None
    helo: str | None = None
    https_timeout_s: float = 5.0
    expiry_warn_days: float = 14.0
    mta_sts_port: int = 443  # RFC 8461 says 443; another only for tests

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 60 or not 0 < self.budget_s <= 600:
            raise ValueError("timeout_s must be in (0, 60] and budget_s in (0, 600]")
        if not 0 < self.smtp_timeout_s <= 600 or not 0 < self.https_timeout_s <= 120:
            raise ValueError("smtp_timeout_s must be in (0, 600], https_timeout_s in (0, 120]")
        if not 1 <= self.mta_sts_port <= 65535:
            raise ValueError("mta_sts_port must be 1..65535")
        for r in self.resolvers:
            parse_resolver(r)
        if self.domain is not None and not _is_domain(self.domain):
            raise ValueError(f"--domain {self.domain!r} is not a domain name")
        for s in self.selectors:
            if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", s):
                raise ValueError(f"DKIM selector {s!r}: letters, digits, '-', '_' and dots")


def _is_domain(text: str) -> bool:
    return bool(re.fullmatch(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
                             r"\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?", text))


@dataclass
class _Run:
    dns: Dns
    address: str
    host: str | None
    opts: MailReadyOptions
    smtp: SmtpRecord | None = None
    zones: list[ZoneAnswer] = field(default_factory=list)


def _check(status: ReadyStatus, summary: str, evidence: Iterable[str] = ()) -> ReadyCheck:
    return ReadyCheck(status=status, summary=summary, evidence=list(evidence))


def _skipped(why: str) -> ReadyCheck:
    return _check("unknown", why)


# --------------------------------------------------------------------------- blocklists


async def _zone(run: _Run, zone: Zone, subject: str) -> ZoneAnswer:
    query = (reverse_name(subject, zone.name) if zone.kind == "ip"
             else f"{subject.rstrip('.')}.{zone.name}")
    t0 = time.perf_counter_ns()
    answer = await run.dns.query(query, "A")
    elapsed = ms(time.perf_counter_ns() - t0)
    if answer.outcome in ("nxdomain", "nodata"):
        return ZoneAnswer(zone=zone.name, kind=zone.kind, query=query, result="clean",
                          elapsed_ms=elapsed)
    if answer.failed:
        return ZoneAnswer(zone=zone.name, kind=zone.kind, query=query, result="unknown",
                          meaning=answer.describe(), elapsed_ms=elapsed)
    result, meaning = decode_codes(zone.name, answer.records)
    txt = None
    if result == "listed":
        reason = await run.dns.query(query, "TXT")
        txt = "; ".join(reason.records)[:300] if reason.outcome == "ok" else None
    return ZoneAnswer(zone=zone.name, kind=zone.kind, query=query, result=result,
                      codes=list(answer.records), meaning=meaning, txt=txt, elapsed_ms=elapsed)


def _zones_check(answers: list[ZoneAnswer], what: str) -> ReadyCheck:
    if not answers:
        return _check("unknown", f"no {what} zones to ask")
    listed = [a for a in answers if a.result == "listed"]
    unknown = [a for a in answers if a.result == "unknown"]
    evidence = [f"{a.zone}: listed ({a.meaning})" + (f" \"{a.txt}\"" if a.txt else "")
                for a in listed]
    evidence += [f"{a.zone}: unknown ({a.meaning})" for a in unknown]
    if listed:
        return _check("fail", f"listed in {', '.join(a.zone for a in listed)}", evidence)
    if unknown:
        return _check("unknown", f"{len(unknown)} of {len(answers)} zones did not answer "
                      f"usably; not listed in the other {len(answers) - len(unknown)}",
                      evidence)
    return _check("pass", f"not listed in any of {len(answers)} zones",
                  [f"{a.zone}: not listed" for a in answers])


# --------------------------------------------------------------------------- reverse DNS


def _banner_name(smtp: SmtpRecord | None) -> tuple[str | None, str | None]:
    """(name in the SMTP greeting, name in the EHLO reply)."""
    if smtp is None:
        return None, None
    banner = smtp.body.greeting
    greet = banner.split()[1] if banner and len(banner.split()) > 1 else None
    ehlo = None
    phase = smtp.body.phase("ehlo")
    if phase is not None and phase.reply:
        words = phase.reply.split()
        ehlo = words[1] if len(words) > 1 else None
    return (greet.rstrip(".").lower() if greet else None,
            ehlo.rstrip(".").lower() if ehlo else None)


def _generic(name: str, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        octets = str(ip).split(".")
        digits = re.findall(r"\d+", name)
        # Two or more of the address's octets in the name, e.g. 10-10-255-16.pool.example.
        if sum(1 for o in octets[2:] if o in digits) >= 2 or "-".join(octets) in name:
            return True
    return bool(_GENERIC_PTR.search(name.split(".")[0] if "." in name else name))


async def _rdns(run: _Run) -> tuple[ReadyCheck, str | None]:
    rev = ipaddress.ip_address(run.address).reverse_pointer
    answer = await run.dns.query(rev, "PTR")
    if answer.failed:
        return _check("unknown", "PTR lookup failed", [answer.describe()]), None
    if answer.outcome != "ok" or not answer.records:
        return _check("fail", f"no PTR record for {run.address}",
                      [f"{rev} PTR: {answer.outcome}"]), None
    names = [n.rstrip(".").lower() for n in answer.records]
    evidence = [f"{rev} PTR {n}" for n in names]
    rdtype = "A" if ipaddress.ip_address(run.address).version == 4 else "AAAA"
    confirmed: str | None = None
    unknown = False
    for name in names:
        fwd = await run.dns.query(name, rdtype)
        if fwd.failed:
            unknown = True
        evidence.append(f"{name} {rdtype}: " + (", ".join(fwd.records) if fwd.records
                                                 else fwd.outcome))
        if any(_same_ip(a, run.address) for a in fwd.records):
            confirmed = name
            break
    problems: list[str] = []
    status: ReadyStatus = "pass"
    if confirmed is None:
        if unknown:
            return _check("unknown", "PTR found, forward lookup failed", evidence), names[0]
        status = "fail"
        problems.append(f"PTR {names[0]} is not forward-confirmed (its {rdtype} records do "
                        f"not hold {run.address})")
    name = confirmed or names[0]
    if _generic(name, run.address):
        status = "fail" if status == "fail" else "warn"
        problems.append(f"{name} looks generic (a dynamic or pool name)")
    greet, ehlo = _banner_name(run.smtp)
    for label, other in (("SMTP banner", greet), ("EHLO reply", ehlo)):
        if other is not None and other != name:
            status = "fail" if status == "fail" else "warn"
            problems.append(f"{label} says {other}, PTR says {name}")
        elif other is not None:
            evidence.append(f"{label}: {other} (matches)")
    summary = "; ".join(problems) if problems else f"{name}, forward-confirmed"
    return _check(status, summary, evidence), name


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


# --------------------------------------------------------------------------- domain policy


def _tags(record: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 3.2, also DMARC, MTA-STS, TLS-RPT): tags lower-cased."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part.strip()!r} is not tag=value")
        key = key.strip().lower()
        if key in out:
            raise ValueError(f"tag {key!r} appears twice")
        out[key] = value.strip()
    return out


async def _spf(run: _Run, domain: str) -> ReadyCheck:
    helo = run.host or domain
    result = await check_spf(run.dns, domain, run.address, helo)
    evidence = [f"{domain} TXT \"{result.record}\""] if result.record else []
    evidence.append(f"DNS lookups: {result.lookups} of {MAX_LOOKUPS}")
    evidence += result.trace[-3:]
    if result.why:
        evidence.append(result.why)
    text = f"SPF {result.outcome} for {run.address}"
    if result.outcome == "pass":
        return _check("pass", text, evidence)
    if result.outcome in ("softfail", "neutral"):
        return _check("warn", text + " (not authorised outright)", evidence)
    if result.outcome == "temperror":
        return _check("unknown", text, evidence)
    if result.outcome == "none":
        return _check("fail", f"{domain} publishes no SPF record", evidence)
    return _check("fail", text, evidence)


def _key_bits(p: str, k: str) -> tuple[int | None, str]:
    """(key size in bits, what the key is) of a DKIM ``p=`` value."""
    try:
        der = base64.b64decode(re.sub(r"\s+", "", p), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not base64") from None
    if k == "ed25519":
        if len(der) != 32:
            raise ValueError(f"an Ed25519 key is 32 bytes, not {len(der)}")
        return 256, "Ed25519"
    from asn1crypto import keys

    try:
        info = keys.PublicKeyInfo.load(der)
        if info.algorithm == "rsa":
            return int(info.bit_size), f"RSA {info.bit_size}"
    except (ValueError, TypeError, KeyError):
        pass
    try:  # RFC 6376 says SubjectPublicKeyInfo; some publish a bare RSAPublicKey
        rsa = keys.RSAPublicKey.load(der)
        bits = int(rsa["modulus"].native).bit_length()
        return bits, f"RSA {bits} (bare RSAPublicKey)"
    except (ValueError, TypeError, KeyError):
        raise ValueError("p= holds no RSA public key") from None


async def _dkim_one(run: _Run, domain: str, selector: str) -> tuple[ReadyStatus, str]:
    name = f"{selector}._domainkey.{domain}"
    answer = await run.dns.query(name, "TXT")
    if answer.failed:
        return "unknown", f"{name}: {answer.describe()}"
    if answer.outcome != "ok" or not answer.records:
        return "fail", f"{name}: no key published ({answer.outcome})"
    records = [r for r in answer.records if "p=" in r]
    if not records:
        return "fail", f"{name}: TXT without p=: \"{answer.records[0][:120]}\""
    try:
        t = _tags(records[0])
    except ValueError as exc:
        return "fail", f"{name}: unparsable ({exc})"
    if t.get("v", "DKIM1") != "DKIM1":
        return "fail", f"{name}: v={t['v']} is not DKIM1"
    if not t.get("p"):
        return "fail", f"{name}: key revoked (empty p=)"
    k = t.get("k", "rsa").lower()
    if k not in ("rsa", "ed25519"):
        return "fail", f"{name}: unknown key type k={k}"
    try:
        bits, what = _key_bits(t["p"], k)
    except ValueError as exc:
        return "fail", f"{name}: {exc}"
    if k == "rsa" and bits is not None and bits < 1024:
        return "fail", f"{name}: {what}, below the 1024 bits verifiers require (RFC 8301)"
    if k == "rsa" and bits is not None and bits < 2048:
        return "warn", f"{name}: {what}, below the recommended 2048 bits (RFC 8301)"
    return "pass", f"{name}: {what}"


async def _dkim(run: _Run, domain: str) -> ReadyCheck:
    if not run.opts.selectors:
        return _skipped("no DKIM selector given (--selector)")
    results = await asyncio.gather(*(_dkim_one(run, domain, s) for s in run.opts.selectors))
    status = _worst([s for s, _ in results])
    evidence = [e for _, e in results]
    bad = [run.opts.selectors[i] for i, (s, _) in enumerate(results) if s == "fail"]
    summary = ("no usable key for selector " + ", ".join(bad) if bad
               else f"{len(results)} selector(s) checked")
    return _check(status, summary, evidence)


async def _dmarc(run: _Run, domain: str) -> ReadyCheck:
    name = f"_dmarc.{domain}"
    answer = await run.dns.query(name, "TXT")
    if answer.failed:
        return _check("unknown", "DMARC lookup failed", [answer.describe()])
    records = [r for r in answer.records if r.lower().startswith("v=dmarc1")]
    if not records:
        return _check("warn", f"{domain} publishes no DMARC policy", [f"{name}: {answer.outcome}"])
    evidence = [f"{name} TXT \"{records[0]}\""]
    if len(records) > 1:
        return _check("fail", f"{len(records)} DMARC records (RFC 7489 6.6.3: none applies)",
                      evidence)
    try:
        t = _tags(records[0])
    except ValueError as exc:
        return _check("fail", f"unparsable DMARC record: {exc}", evidence)
    policy = t.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return _check("fail", f"DMARC p={policy or '(missing)'} is not none, quarantine or "
                      "reject", evidence)
    if policy == "none":
        return _check("warn", "DMARC p=none (monitoring only)", evidence)
    return _check("pass", f"DMARC p={policy}" + (f", pct={t['pct']}" if "pct" in t else ""),
                  evidence)


async def _https_get(host: str, path: str, opts: MailReadyOptions,
                     address: str | None) -> tuple[int, str]:
    """One HTTPS GET (certificate verified for ``host``); at most 64 KiB read."""
    ctx = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(address or host, opts.mta_sts_port, ssl=ctx,
                                server_hostname=host),
        opts.https_timeout_s)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: netvantage\r\n"
                     "Connection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(65536), opts.https_timeout_s)
        while len(data) < 65536:
            more = await asyncio.wait_for(reader.read(65536 - len(data)), opts.https_timeout_s)
            if not more:
                break
            data += more
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    m = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", status_line)
    if not m:
        raise ValueError(f"not an HTTP response: {status_line[:60]!r}")
    return int(m.group(1)), body.decode("utf-8", errors="replace")


async def _mta_sts(run: _Run, domain: str, mx_hosts: list[str]) -> ReadyCheck:
    name = f"_mta-sts.{domain}"
    answer = await run.dns.query(name, "TXT")
    if answer.failed:
        return _check("unknown", "MTA-STS lookup failed", [answer.describe()])
    records = [r for r in answer.records if r.startswith("v=STSv1")]
    if not records:
        return _check("warn", f"{domain} publishes no MTA-STS policy (optional; RFC 8461)",
                      [f"{name}: {answer.outcome}"])
    evidence = [f"{name} TXT \"{records[0]}\""]
    if len(records) > 1:
        return _check("fail", "more than one STSv1 record", evidence)
    policy_host = f"mta-sts.{domain}"
    addr = await run.dns.query(policy_host, "A")
    try:
        status, body = await _https_get(policy_host, "/.well-known/mta-sts.txt", run.opts,
                                        addr.records[0] if addr.records else None)
    except (OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
        return _check("fail" if isinstance(exc, ssl.SSLError) else "unknown",
                      f"policy file at https://{policy_host}/.well-known/mta-sts.txt: "
                      f"{type(exc).__name__}: {exc}", evidence)
    if status != 200:
        return _check("fail", f"policy file: HTTP {status}", evidence)
    fields: dict[str, list[str]] = {}
    for line in body.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    evidence.append("policy: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items()))
    mode = (fields.get("mode") or [""])[0]
    if fields.get("version") != ["STSv1"] or mode not in ("enforce", "testing", "none"):
        return _check("fail", "policy file lacks version: STSv1 or a valid mode", evidence)
    patterns = fields.get("mx", [])
    uncovered = [h for h in mx_hosts if not any(_name_matches(p, h) for p in patterns)]
    if mode != "none" and uncovered:
        return _check("fail", f"MX {', '.join(uncovered)} not covered by the policy's mx "
                      "patterns", evidence)
    if mode != "enforce":
        return _check("warn", f"MTA-STS mode {mode}", evidence)
    return _check("pass", "MTA-STS enforce, MX covered", evidence)


async def _tls_rpt(run: _Run, domain: str) -> ReadyCheck:
    name = f"_smtp._tls.{domain}"
    answer = await run.dns.query(name, "TXT")
    if answer.failed:
        return _check("unknown", "TLS-RPT lookup failed", [answer.describe()])
    records = [r for r in answer.records if r.startswith("v=TLSRPTv1")]
    if not records:
        return _check("warn", f"{domain} publishes no TLS-RPT record (optional; RFC 8460)",
                      [f"{name}: {answer.outcome}"])
    evidence = [f"{name} TXT \"{records[0]}\""]
    try:
        t = _tags(records[0])
    except ValueError as exc:
        return _check("fail", f"unparsable TLS-RPT record: {exc}", evidence)
    if not t.get("rua"):
        return _check("fail", "TLS-RPT record without rua=", evidence)
    return _check("pass", f"reports to {t['rua']}", evidence)


def _preference(mx: str) -> tuple[int, str]:
    first, _, rest = mx.partition(" ")
    return (int(first), rest) if first.isdigit() else (65536, mx)


async def _mx(run: _Run, domain: str) -> tuple[ReadyCheck, list[str], list[str]]:
    """(the check, every MX name, the MX names pointing at the address)."""
    answer = await run.dns.query(domain, "MX")
    if answer.failed:
        return _check("unknown", "MX lookup failed", [answer.describe()]), [], []
    if answer.outcome != "ok" or not answer.records:
        return (_check("fail", f"{domain} has no MX records",
                       [f"{domain} MX: {answer.outcome}"]), [], [])
    records = sorted(answer.records, key=_preference)
    hosts = [r.split()[-1].rstrip(".").lower() for r in records]
    evidence = [f"{domain} MX {r}" for r in records]
    rdtype = "A" if ipaddress.ip_address(run.address).version == 4 else "AAAA"
    answers = await asyncio.gather(*(run.dns.query(h, rdtype) for h in hosts))
    pointing = [h for h, a in zip(hosts, answers, strict=True)
                if any(_same_ip(x, run.address) for x in a.records)]
    if pointing:
        return (_check("pass", f"MX {', '.join(pointing)} points at {run.address}",
                       evidence), hosts, pointing)
    if any(a.failed for a in answers):
        return (_check("unknown", "an MX name did not resolve",
                       evidence + [a.describe() for a in answers if a.failed]), hosts, [])
    evidence += [f"{h} {rdtype}: {', '.join(a.records) or a.outcome}"
                 for h, a in zip(hosts, answers, strict=True)]
    return _check("fail", f"no MX of {domain} points at {run.address}", evidence), hosts, []


# --------------------------------------------------------------------------- SMTP: TLS, port 25


def _name_matches(pattern: str, name: str) -> bool:
    """A certificate (or MTA-STS mx) name covers ``name``: exact, or ``*.`` one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in name and name.split(".", 1)[1] == pattern[2:]
    return pattern == name


def _port25(smtp: SmtpRecord | None) -> ReadyCheck:
    if smtp is None:
        return _skipped("SMTP probe not run (--no-smtp)")
    greeting = smtp.body.greeting
    if smtp.body.phase("greeting") is not None and greeting:
        return _check("pass", f"port 25 answers: {greeting[:80]}",
                      [f"connect {p.duration_ms} ms" for p in smtp.body.phases
                       if p.name == "connect"])
    status: ReadyStatus = "fail" if smtp.status in ("refused", "timeout", "unreachable") \
        else "unknown"
    return _check(status, f"port 25: {smtp.status}: {smtp.error or ''}".rstrip(": "),
                  [f"failed phase: {smtp.body.failed_phase}"])


def _tls(smtp: SmtpRecord | None, names: list[str], warn_days: float) -> ReadyCheck:
    if smtp is None:
        return _skipped("SMTP probe not run (--no-smtp)")
    tls = smtp.body.tls
    if tls is None or tls.cert is None:
        if smtp.body.phase("greeting") is None:
            return _check("unknown", "no SMTP session on port 25", [smtp.error or smtp.status])
        if "STARTTLS" not in [c.upper() for c in smtp.body.capabilities]:
            return _check("fail", "STARTTLS not offered on port 25",
                          [f"EHLO: {', '.join(smtp.body.capabilities)[:200]}"])
        return _check("fail", f"no certificate: {smtp.error or 'TLS failed'}",
                      [smtp.error or ""])
    cert = tls.cert
    evidence = [f"subject {cert.subject}", f"SAN {', '.join(cert.san_dns) or '(no DNS names)'}",
                f"issuer {cert.issuer}", f"expires {cert.not_after.isoformat()}"]
    status: ReadyStatus = "pass"
    problems: list[str] = []
    cn = re.findall(r"CN=([^,+]+)", cert.subject)
    cert_names = cert.san_dns or cn
    wanted = [n for n in dict.fromkeys(names) if n]
    uncovered = [n for n in wanted if not any(_name_matches(p, n) for p in cert_names)]
    if uncovered:
        status = "fail"
        problems.append(f"certificate does not cover {', '.join(uncovered)}")
    days = (cert.not_after - datetime.now(UTC)).total_seconds() / 86400
    if days < 0:
        status = "fail"
        problems.append(f"certificate expired {-days:.0f} days ago")
    elif days < warn_days:
        status = "fail" if status == "fail" else "warn"
        problems.append(f"certificate expires in {days:.1f} days")
    if tls.verified is False:
        status = "fail"
        problems.append(f"chain does not verify: {tls.verify_error}")
    evidence.append(f"chain verified against {tls.trust}" if tls.verified
                    else f"verify: {tls.verify_error}")
    summary = "; ".join(problems) if problems else (
        f"{tls.version}, certificate covers {', '.join(wanted) or 'the host'}, "
        f"{days:.0f} days left, chain verified")
    return _check(status, summary, evidence)


async def _smtp_probe(address: str, host: str | None, opts: MailReadyOptions,
                      origin: Origin) -> SmtpRecord:
    from .mail import MailOptions, smtp_probe

    mail_opts = MailOptions(timeout_s=opts.smtp_timeout_s,
                            phase_timeout_s=min(10.0, opts.smtp_timeout_s),
                            ca_file=opts.ca_file, server_name=host or address,
                            helo=opts.helo)
    return await smtp_probe(f"[{address}]:25" if ":" in address else f"{address}:25",
                            mail_opts, origin=origin)


# --------------------------------------------------------------------------- the whole check

_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "unknown": 2, "fail": 3}


def _worst(statuses: Iterable[ReadyStatus]) -> ReadyStatus:
    return max(statuses, key=lambda s: _ORDER[s], default="unknown")


async def _address_of(dns: Dns, host: str) -> tuple[str | None, str]:
    for rdtype in ("A", "AAAA"):
        answer = await dns.query(host, rdtype)
        if answer.records:
            return answer.records[0], ""
        if answer.failed:
            return None, answer.describe()
    return None, f"{host} has no A or AAAA record"


async def mailready(host_or_ip: str, opts: MailReadyOptions = MailReadyOptions(), *,
                    origin: Origin | None = None, name: str | None = None) -> MailReadyRecord:
    """Run every check for ``host_or_ip``; one record, never an exception for the network."""
    origin = origin or Origin.local()
    started_at = utc_now()
    t0 = time.perf_counter_ns()
    resolvers = ([parse_resolver(r) for r in opts.resolvers] if opts.resolvers
                 else system_resolvers())
    dns = Dns(resolvers, timeout_s=opts.timeout_s, budget_s=opts.budget_s)
    host: str | None = None
    address: str | None
    try:
        address = str(ipaddress.ip_address(host_or_ip.strip("[]")))
    except ValueError:
        host = host_or_ip.rstrip(".").lower()
        if not _is_domain(host):
            raise MailReadyError(f"{host_or_ip!r} is neither an IP address nor a host name"
                                 ) from None
        address, why = await _address_of(dns, host)
        if address is None:
            return _unresolved(host_or_ip, host, why, opts, dns, origin, started_at, t0, name)
    run = _Run(dns, address, host, opts)
    smtp_task = (asyncio.ensure_future(_smtp_probe(address, host, opts, origin))
                 if opts.smtp else None)
    domain = opts.domain.rstrip(".").lower() if opts.domain else None

    async def zones() -> None:
        run.zones = list(await asyncio.gather(
            *(_zone(run, z, address) for z in opts.zones if z.kind == "ip"),
            *(_zone(run, z, domain) for z in opts.zones if z.kind == "domain" and domain)))

    no_domain = _skipped("no --domain given")
    zone_task = asyncio.ensure_future(zones())
    if domain:
        spf_t = asyncio.ensure_future(_spf(run, domain))
        dkim_t = asyncio.ensure_future(_dkim(run, domain))
        dmarc_t = asyncio.ensure_future(_dmarc(run, domain))
        rpt_t = asyncio.ensure_future(_tls_rpt(run, domain))
        mx_check, mx_hosts, mx_here = await _mx(run, domain)
        sts_check = await _mta_sts(run, domain, mx_hosts)
        spf_check, dkim_check, dmarc_check, rpt_check = await asyncio.gather(
            spf_t, dkim_t, dmarc_t, rpt_t)
    else:
        mx_hosts, mx_here = [], []
        mx_check = sts_check = spf_check = dkim_check = dmarc_check = rpt_check = no_domain
    if smtp_task is not None:
        run.smtp = await smtp_task
    rdns_check, ptr_name = await _rdns(run)
    await zone_task
    ip_answers = [z for z in run.zones if z.kind == "ip"]
    dom_answers = [z for z in run.zones if z.kind == "domain"]
    greet, _ehlo = _banner_name(run.smtp)
    names = [n for n in (greet, *mx_here) if n]
    checks: dict[str, ReadyCheck] = {
        "dnsbl": _zones_check(ip_answers, "IP blocklist"),
        "rhsbl": (_zones_check(dom_answers, "domain blocklist") if domain else no_domain),
        "rdns": rdns_check, "spf": spf_check, "dkim": dkim_check, "dmarc": dmarc_check,
        "mta_sts": sts_check, "tls_rpt": rpt_check, "mx": mx_check,
        "tls": _tls(run.smtp, names, opts.expiry_warn_days),
        "port25": _port25(run.smtp),
    }
    body = MailReadyBody(
        host=host or ptr_name or greet, domain=domain, selectors=list(opts.selectors),
        resolvers=[f"{a}:{p}" if p != 53 else a for a, p in resolvers],
        budget_s=opts.budget_s, dns_queries=dns.queries,
        verdict=_worst(c.status for c in checks.values()),
        failing=[n for n in READY_CHECKS if checks[n].status == "fail"],
        zones=run.zones, **checks)
    return MailReadyRecord(id=new_id(), agent=origin.agent, region=origin.region,
                           target=name or host_or_ip, address=address, started_at=started_at,
                           duration_ms=ms(time.perf_counter_ns() - t0), status="ok",
                           body=body)


def _unresolved(given: str, host: str, why: str, opts: MailReadyOptions, dns: Dns,
                origin: Origin, started_at: datetime, t0: int,
                name: str | None) -> MailReadyRecord:
    none = _check("unknown", f"{host} did not resolve: {why}")
    body = MailReadyBody(host=host, domain=opts.domain, selectors=list(opts.selectors),
                         resolvers=[a for a, _ in dns.resolvers], budget_s=opts.budget_s,
                         dns_queries=dns.queries, verdict="unknown", failing=[],
                         dnsbl=none, rhsbl=none, rdns=none, spf=none, dkim=none, dmarc=none,
                         mta_sts=none, tls_rpt=none, mx=none, tls=none, port25=none)
    failed: Status = "timeout" if "timeout" in why or "no answer" in why else "error"
    return MailReadyRecord(id=new_id(), agent=origin.agent, region=origin.region,
                           target=name or given, address=None, started_at=started_at,
                           duration_ms=ms(time.perf_counter_ns() - t0),
                           status=failed, error=f"{host} did not resolve: {why}", body=body)

