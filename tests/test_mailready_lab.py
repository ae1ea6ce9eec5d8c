"""measure mailready in the lab, against real Knot, rbldnsd and Unbound and the real Postfix:
every planted readiness problem is found, the clean candidate is clean, a blocklist that never
answers is unknown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import NETVANTAGE
from netvantage.lab.dns import UNANSWERED_ZONE, selector
from netvantage.results import MailReadyRecord, decode_record

pytestmark = pytest.mark.lab


def mailready(lab, region: str, *args: str) -> MailReadyRecord:
    proc = subprocess.run(["ip", "netns", "exec", lab.ns(region), NETVANTAGE, "measure",
                           "mailready", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    record = decode_record(proc.stdout.strip().encode())
    assert isinstance(record, MailReadyRecord)
    return record


@pytest.fixture(scope="module")
def checks(lab):
    """One check per data centre from Lusaka (through that region's own Unbound)."""
    topo = lab.topology
    ca = lab.read_state()["ca"]
    out = {}
    for dc in topo.of_role("dc"):
        out[dc.name] = (dc, mailready(lab, "lun", dc.v4, "--domain", "mail.example",
                                      "--selector", selector(topo, dc.name), "--ca", ca))
    return out


def test_every_planted_problem_is_found_and_the_clean_candidate_is_clean(checks):
    planted = {dc.mail_plant: r for dc, r in checks.values()}
    assert set(planted) >= {"listed", "ptr", "dkim", None}
    listed = planted["listed"].body
    assert "dnsbl" in listed.failing
    assert any(z.result == "listed" and z.zone == "zen.spamhaus.org" and "127.0.0.2" in z.codes
               for z in listed.zones)
    assert "zen.spamhaus.org" in listed.dnsbl.summary
    ptr = planted["ptr"].body
    assert ptr.rdns.status == "fail" and "not forward-confirmed" in ptr.rdns.summary
    assert "generic" in ptr.rdns.summary
    dkim = planted["dkim"].body
    assert dkim.dkim.status == "fail" and "no key published" in dkim.dkim.evidence[0]
    for plant, r in planted.items():
        expected = {"listed": ["dnsbl"], "ptr": ["rdns"], "dkim": ["dkim"], None: []}[plant]
        assert r.body.failing == expected, (plant, r.body.failing)
        # what every candidate shares: the domain's policy, TLS and port 25
        for name in ("spf", "dmarc", "mta_sts", "tls_rpt", "mx", "tls", "port25"):
            assert r.body.check(name).status == "pass", (plant, name, r.body.check(name))
    assert planted[None].body.verdict == "pass"
    assert "enforce" in planted[None].body.mta_sts.summary


def test_a_blocklist_that_never_answers_is_unknown_not_clean(lab, tmp_path: Path):
    zones = tmp_path / "zones.txt"
    zones.write_text(f"ip {UNANSWERED_ZONE}\n")
    dc = lab.topology.nodes["dc-ams"]
    r = mailready(lab, "jnb", dc.v4, "--zones", str(zones), "--no-smtp", "--timeout", "1",
                  "--budget", "5")
    assert r.body.dnsbl.status == "unknown"
    (answer,) = r.body.zones
    assert answer.result == "unknown" and "timeout" in (answer.meaning or "")
    assert r.body.failing == []


def test_ipv6_listing_and_reverse_dns_by_nibbles(lab):
    topo = lab.topology
    listed = next(dc for dc in topo.of_role("dc") if dc.mail_plant == "listed")
    r = mailready(lab, "lon", listed.v6, "--no-smtp")
    assert r.body.dnsbl.status == "fail"
    (hit,) = [z for z in r.body.zones if z.result == "listed"]
    assert hit.query.endswith(".zen.spamhaus.org") and len(hit.query.split(".")) == 32 + 3
    assert r.body.rdns.status == "pass" and r.body.host == f"mail.{listed.name}.lab"
