"""measure mailready against hand-written DNS answers served by a tiny server on loopback."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import keys

from dnsfake import GARBAGE, REFUSED, SERVFAIL, SILENT, TRUNCATE, FakeDns
from netvantage.measure.dnsq import Dns
from netvantage.measure.mailready import (
    MailReadyError,
    MailReadyOptions,
    Zone,
    decode_codes,
    mailready,
    read_zones,
    reverse_name,
)
from netvantage.measure.spf import check_spf
from netvantage.results import MailReadyRecord, decode_record, encode_record, new_id

ADDR = "192.0.2.10"
OTHER = "192.0.2.99"


def dkim_key(bits: int) -> str:
    modulus = (1 << (bits - 1)) | 1
    info = keys.PublicKeyInfo.wrap(keys.RSAPublicKey({"modulus": modulus,
                                                      "public_exponent": 65537}), "rsa")
    return base64.b64encode(info.dump()).decode()


def txt(text: str) -> str:
    """A TXT rdata in zone-file syntax, split in 255-byte strings."""
    chunks = [text[i:i + 200] for i in range(0, len(text), 200)] or [""]
    return " ".join('"' + c.replace('"', '\\"') + '"' for c in chunks)


ZONES = (Zone("bl.test", "ip"), Zone("clean.test", "ip"), Zone("dbl.test", "domain"))

RECORDS = {
    # blocklists
    ("10.2.0.192.bl.test", "A"): ["127.0.0.2"],
    ("10.2.0.192.bl.test", "TXT"): [txt("listed: seen spamming on 2026-12-01")],
    ("bl.test", "SOA"): ["ns.test. hostmaster.test. 1 3600 600 86400 60"],
    ("clean.test", "SOA"): ["ns.test. hostmaster.test. 1 3600 600 86400 60"],
    ("dbl.test", "SOA"): ["ns.test. hostmaster.test. 1 3600 600 86400 60"],
    ("10.2.0.192.refuse.test", "A"): ["127.255.255.254"],
    ("10.2.0.192.slow.test", "*"): SILENT,
    ("10.2.0.192.broken.test", "*"): SERVFAIL,
    ("10.2.0.192.hijack.test", "A"): ["198.51.100.7"],
    # the domain
    ("mail.test", "MX"): ["10 mx.mail.test."],
    ("mx.mail.test", "A"): [ADDR],
    ("mail.test", "TXT"): [txt("v=spf1 mx -all"), txt("google-site-verification=abc")],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["mx.mail.test."],
    ("s1._domainkey.mail.test", "TXT"): [txt(f"v=DKIM1; k=rsa; p={dkim_key(2048)}")],
    ("small._domainkey.mail.test", "TXT"): [txt(f"v=DKIM1; p={dkim_key(1024)}")],
    ("revoked._domainkey.mail.test", "TXT"): [txt("v=DKIM1; p=")],
    ("junk._domainkey.mail.test", "TXT"): [txt("v=DKIM1; p=!!notbase64!!")],
    ("_dmarc.mail.test", "TXT"): [txt("v=DMARC1; p=reject; rua=mailto:d@mail.test")],
    ("_smtp._tls.mail.test", "TXT"): [txt("v=TLSRPTv1; rua=mailto:tls@mail.test")],
    # a host whose PTR is generic and not forward-confirmed
    ("99.2.0.192.in-addr.arpa", "PTR"): ["host-192-0-2-99.pool.isp.test."],
    # SPF edge cases
    ("loop.test", "TXT"): [txt("v=spf1 include:loop2.test -all")],
    ("loop2.test", "TXT"): [txt("v=spf1 include:loop.test -all")],
    ("many.test", "TXT"): [txt("v=spf1 " + " ".join(f"include:i{n}.test" for n in range(11))
                               + " -all")],
    **{(f"i{n}.test", "TXT"): [txt("v=spf1 ?all")] for n in range(11)},
    ("soft.test", "TXT"): [txt("v=spf1 ip4:198.51.100.0/24 ~all")],
    ("cidr.test", "TXT"): [txt("v=spf1 ip4:192.0.2.0/24 -all")],
    ("redir.test", "TXT"): [txt("v=spf1 redirect=cidr.test")],
    ("two.test", "TXT"): [txt("v=spf1 -all"), txt("v=spf1 +all")],
    ("macro.test", "TXT"): [txt("v=spf1 exists:%{ir}.allow.macro.test -all")],
    ("10.2.0.192.allow.macro.test", "A"): ["127.0.0.2"],
    # bad answers
    ("a.cname.test", "CNAME"): ["b.cname.test."],
    ("b.cname.test", "CNAME"): ["a.cname.test."],
    ("big.test", "*"): TRUNCATE,
    ("garbage.test", "*"): GARBAGE,
    ("refused.test", "*"): REFUSED,
}


@pytest.fixture(scope="module")
def server():
    with FakeDns(RECORDS) as fake:
        yield fake


def opts(server: FakeDns, **kw: object) -> MailReadyOptions:
    base: dict[str, object] = {"domain": "mail.test", "selectors": ("s1",),
                               "resolvers": (server.address,), "zones": ZONES,
                               "smtp": False, "timeout_s": 0.5, "budget_s": 5.0}
    base.update(kw)
    return MailReadyOptions(**base)  # type: ignore[arg-type]


def check(server: FakeDns, host: str = ADDR, **kw: object) -> MailReadyRecord:
    return asyncio.run(mailready(host, opts(server, **kw)))


def test_listed_address_fails_with_the_zone_and_code_named(server):
    r = check(server)
    assert r.body.dnsbl.status == "fail"
    assert "bl.test" in r.body.dnsbl.summary
    assert any("bl.test" in e and "127.0.0.2" in e and "spamming" in e
               for e in r.body.dnsbl.evidence)
    listed = [z for z in r.body.zones if z.result == "listed"]
    assert [z.zone for z in listed] == ["bl.test"]
    assert "dnsbl" in r.body.failing and r.body.verdict == "fail"
    # the rest of this host is in order
    for name in ("rhsbl", "rdns", "spf", "dkim", "dmarc", "tls_rpt", "mx"):
        assert r.body.check(name).status == "pass", (name, r.body.check(name))
    assert r.body.mta_sts.status == "warn"
    assert decode_record(encode_record(r)) == r


def test_clean_zones_pass_and_ipv6_is_reversed_by_nibble(server):
    r = check(server, zones=(Zone("clean.test", "ip"),))
    assert r.body.dnsbl.status == "pass"
    name = reverse_name("2001:db8::1", "bl.test")
    assert name == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.test"
    assert reverse_name("192.0.2.10", "z.test") == "10.2.0.192.z.test"


@pytest.mark.parametrize("zone,word", [("refuse.test", "open resolver"),
                                       ("slow.test", "timeout"),
                                       ("broken.test", "servfail"),
                                       ("hijack.test", "NXDOMAIN")])
def test_a_zone_that_refuses_times_out_or_fails_is_unknown_never_clean(server, zone, word):
    t0 = time.monotonic()
    r = check(server, zones=(Zone(zone, "ip"),))
    # Bounded by the check's budget (5 s), whatever the zone does; the margin is for a
    # loaded machine, the bound is against a hang.
    assert time.monotonic() - t0 < 5.0 + 5.0
    assert r.body.dnsbl.status == "unknown"
    assert r.body.zones[0].result == "unknown"
    assert word.lower() in (r.body.zones[0].meaning or "").lower()


def test_decode_codes():
    assert decode_codes("zen.spamhaus.org", ["127.0.0.4"])[0] == "listed"
    assert "XBL" in decode_codes("zen.spamhaus.org", ["127.0.0.4"])[1]
    assert "phishing" in decode_codes("dbl.spamhaus.org", ["127.0.1.4"])[1]
    assert decode_codes("zen.spamhaus.org", ["127.255.255.255"])[0] == "unknown"
    assert decode_codes("x.test", ["127.0.0.2", "127.255.255.254"])[0] == "unknown"


def test_ptr_not_forward_confirmed_and_generic_fails(server):
    r = check(server, OTHER)
    assert r.body.rdns.status == "fail"
    assert "not forward-confirmed" in r.body.rdns.summary
    assert "generic" in r.body.rdns.summary
    assert r.body.spf.status == "fail" and "fail" in r.body.spf.summary
    assert r.body.mx.status == "fail"


def test_dkim_keys(server):
    r = check(server, selectors=("s1", "small", "revoked", "junk", "absent"))
    ev = r.body.dkim.evidence
    assert "RSA 2048" in ev[0]
    assert "1024" in ev[1] and "recommended" in ev[1]
    assert "revoked" in ev[2]
    assert "base64" in ev[3]
    assert "no key published" in ev[4]
    assert r.body.dkim.status == "fail"
    assert "absent" in r.body.dkim.summary
    assert check(server, selectors=("small",)).body.dkim.status == "warn"


def spf(server: FakeDns, domain: str, address: str = ADDR):
    async def go():
        return await check_spf(Dns([("127.0.0.1", server.port)], 0.5, 5.0), domain, address)
    return asyncio.run(go())


def test_spf_evaluation(server):
    assert spf(server, "mail.test").outcome == "pass"
    assert spf(server, "mail.test", OTHER).outcome == "fail"
    assert spf(server, "soft.test").outcome == "softfail"
    assert spf(server, "cidr.test").outcome == "pass"
    assert spf(server, "redir.test").outcome == "pass"
    assert spf(server, "macro.test").outcome == "pass"
    assert spf(server, "macro.test", OTHER).outcome == "fail"
    assert spf(server, "two.test").outcome == "permerror"
    assert spf(server, "nothing.test").outcome == "none"


def test_spf_with_eleven_lookups_or_a_loop_is_a_permerror(server):
    many = spf(server, "many.test")
    assert many.outcome == "permerror" and "10 DNS lookups" in many.why
    assert many.lookups == 11
    loop = spf(server, "loop.test")
    assert loop.outcome == "permerror" and "loop" in loop.why
    r = check(server, domain="many.test")
    assert r.body.spf.status == "fail"


def test_bad_answers_are_values_not_exceptions(server):
    async def go():
        d = Dns([("127.0.0.1", server.port)], 0.5, 5.0)
        return [await d.query(n, "A") for n in ("a.cname.test", "big.test", "garbage.test",
                                                "refused.test")]
    loop, big, garbage, refused = asyncio.run(go())
    assert loop.outcome == "loop"
    assert big.outcome == "nodata"  # truncated over UDP, answered (empty) over TCP
    assert garbage.outcome == "garbage"
    assert refused.outcome == "refused"


def test_a_resolver_that_never_answers_costs_the_budget_and_nothing_more(tmp_path):
    with FakeDns({}) as dead:
        dead.records = {}
        dead._special = lambda name: SILENT  # type: ignore[method-assign]
        t0 = time.monotonic()
        r = asyncio.run(mailready(ADDR, MailReadyOptions(
            domain="mail.test", selectors=("s1",), resolvers=(dead.address,),
            zones=ZONES, smtp=False, timeout_s=0.3, budget_s=1.5)))
        spent = time.monotonic() - t0
    assert spent < 1.5 + 5.0  # the budget, and a margin for a loaded machine: no hang
    assert r.body.verdict == "unknown"
    for name in ("dnsbl", "rhsbl", "rdns", "spf", "dkim", "dmarc", "mx"):
        assert r.body.check(name).status == "unknown", name
    assert r.body.failing == []


def test_a_host_name_that_does_not_resolve(server):
    r = check(server, "nowhere.test")
    assert r.status == "error" and r.address is None
    assert r.body.verdict == "unknown"


def test_zones_file(tmp_path: Path):
    good = tmp_path / "z.txt"
    good.write_text("# lab\nip bl.test\ndomain dbl.test  # names\n")
    assert read_zones(good) == (Zone("bl.test", "ip"), Zone("dbl.test", "domain"))
    bad = tmp_path / "bad.txt"
    bad.write_text("ip\nhost bl.test\n")
    with pytest.raises(MailReadyError, match=r"line 1.*line 2"):
        read_zones(bad)


def test_cli_prints_one_json_record(server, tmp_path):
    from conftest import invoke_cli

    zones = tmp_path / "zones.txt"
    zones.write_text("ip bl.test\ndomain dbl.test\n")
    result = invoke_cli("measure", "mailready", ADDR, "--domain", "mail.test", "--selector", "s1",
                        "--resolver", server.address, "--zones", str(zones), "--no-smtp",
                        "--timeout", "0.5")
    assert result.returncode == 0, result.stderr
    record = decode_record(result.stdout.strip().encode())
    assert isinstance(record, MailReadyRecord)
    assert record.body.dnsbl.status == "fail"
    table = invoke_cli("measure", "mailready", ADDR, "--resolver", server.address,
                       "--zones", str(zones), "--no-smtp", "--table", "--fail-on-error")
    assert table.returncode == 1
    assert "dnsbl    fail" in table.stdout


POLICIES = {
    "sts.test": "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
    "uncovered.test": "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n",
    "testing.test": "version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n",
}
STS_DOMAINS = (*POLICIES, "missing.test")


@pytest.fixture(scope="module")
def sts(tmp_path_factory):
    """A real HTTPS server on loopback serving MTA-STS policies by Host, with a lab CA
    certificate, and the DNS records that point at it."""
    import http.server
    import ssl
    import threading

    from netvantage.lab.pki import LabCA

    root = tmp_path_factory.mktemp("sts")
    ca = LabCA.create(root / "ca")
    issued = ca.issue("mta-sts", dns_names=[f"mta-sts.{d}" for d in STS_DOMAINS],
                      directory=root / "leaf")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it
            domain = (self.headers.get("Host") or "").removeprefix("mta-sts.")
            body = POLICIES.get(domain)
            if body is None or self.path != "/.well-known/mta-sts.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(issued.chain, issued.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    records: dict[tuple[str, str], list[str] | str] = {}
    for d in STS_DOMAINS:
        records[(d, "MX")] = ["10 mx.sts.test."]
        records[(f"_mta-sts.{d}", "TXT")] = [txt("v=STSv1; id=20261205")]
        records[(f"mta-sts.{d}", "A")] = ["127.0.0.1"]
    records[("mx.sts.test", "A")] = [ADDR]
    with FakeDns(records) as fake:
        yield fake, httpd.server_address[1], ca.cert_path
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("domain, status, words", [
    ("sts.test", "pass", "enforce"),
    ("uncovered.test", "fail", "not covered"),
    ("testing.test", "warn", "testing"),
    ("missing.test", "fail", "HTTP 404"),
])
def test_mta_sts_policy_fetched_over_https(sts, domain, status, words):
    fake, port, ca = sts
    r = asyncio.run(mailready(ADDR, MailReadyOptions(
        domain=domain, resolvers=(fake.address,), zones=(), smtp=False, timeout_s=0.5,
        budget_s=5.0, ca_file=ca, mta_sts_port=port)))
    assert r.body.mta_sts.status == status, r.body.mta_sts
    assert words in r.body.mta_sts.summary
    assert r.body.mx.status == "pass"


def test_mta_sts_certificate_not_trusted_fails(sts):
    fake, port, _ = sts
    r = asyncio.run(mailready(ADDR, MailReadyOptions(
        domain="sts.test", resolvers=(fake.address,), zones=(), smtp=False, timeout_s=0.5,
        budget_s=5.0, mta_sts_port=port)))  # the system's trust store: the lab CA is not in it
    assert r.body.mta_sts.status == "fail" and "SSL" in r.body.mta_sts.summary


def smtp_record(*, status: str = "ok", names: tuple[str, ...] = ("mx.mail.test",),
                days_left: float = 90, verified: bool = True,
                starttls: bool = True) -> Any:
    from netvantage.results import CertInfo, MailBody, Phase, SmtpRecord, TlsInfo

    now = datetime.now(UTC)
    cert = CertInfo(subject=f"CN={names[0]}", issuer="CN=Test CA", san_dns=list(names),
                    not_before=now - timedelta(days=10),
                    not_after=now + timedelta(days=days_left), serial="1", sha256="00",
                    key="EC secp256r1")
    ok = status == "ok"
    phases = ([Phase(name="connect", ok=True, duration_ms=1.0),
               Phase(name="greeting", ok=True, duration_ms=1.0, reply="220 mx.mail.test ESMTP"),
               Phase(name="ehlo", ok=True, duration_ms=1.0, reply="250 mx.mail.test")]
              if ok else [Phase(name="connect", ok=False, duration_ms=None, error="refused")])
    body = MailBody(port=25, ip_version=4, mode="starttls", timeout_s=15.0, phases=phases,
                    failed_phase=None if ok else "connect",
                    greeting="220 mx.mail.test ESMTP" if ok else None,
                    capabilities=["PIPELINING", *(["STARTTLS"] if starttls else [])],
                    tls=TlsInfo(version="TLSv1.3", verified=verified, cert=cert,
                                verify_error=None if verified else "unknown CA (verify code 20)")
                    if ok and starttls else None)
    return SmtpRecord(id=new_id(), agent="t", target=ADDR, address=ADDR,
                      started_at=now, duration_ms=3.0, status=status,  # type: ignore[arg-type]
                      error=None if ok else "ECONNREFUSED", body=body)


@pytest.mark.parametrize("kw, status, words", [
    ({}, "pass", "chain verified"),
    ({"names": ("other.test",)}, "fail", "does not cover mx.mail.test"),
    ({"names": ("*.mail.test",)}, "pass", "covers"),
    ({"days_left": -2}, "fail", "expired"),
    ({"days_left": 5}, "warn", "expires in"),
    ({"verified": False}, "fail", "chain does not verify"),
    ({"starttls": False}, "fail", "STARTTLS not offered"),
])
def test_tls_names_expiry_and_chain(kw, status, words):
    from netvantage.measure.mailready import _tls

    check = _tls(smtp_record(**kw), ["mx.mail.test"], 14.0)
    assert check.status == status and words in check.summary, check


def test_port25_from_the_smtp_probe():
    from netvantage.measure.mailready import _port25

    assert _port25(smtp_record()).status == "pass"
    refused = _port25(smtp_record(status="refused"))
    assert refused.status == "fail" and "refused" in refused.summary
    assert _port25(None).status == "unknown"
