"""Hop annotation: MaxMind's test databases, the lab's own databases, records and the CLI.

The expected values come from MaxMind's source data for the test databases
(GeoLite2-ASN-Test.json, GeoIP2-City-Test.json; see tests/data/maxmind/SOURCE.txt).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import geoip2.database
import msgspec
import pytest

from netvantage import annotate as annotate_mod
from netvantage.annotate import GeoDatabaseError, GeoDatabases, annotate_records, reverse_dns
from netvantage.errors import NetvantageError
from netvantage.lab.geodb import write_lab_databases
from netvantage.lab.topology import load_topology
from netvantage.results import (
    Annotation,
    AnyRecord,
    Hop,
    PingBody,
    PingRecord,
    Responder,
    TraceBody,
    TraceProbe,
    TraceRecord,
    decode_record,
    encode_record,
    new_id,
    read_jsonl,
    write_jsonl,
)

DATA = Path(__file__).resolve().parent / "data" / "maxmind"
ASN_DB = DATA / "GeoLite2-ASN-Test.mmdb"
CITY_DB = DATA / "GeoIP2-City-Test.mmdb"
BROKEN_DB = DATA / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))

BREDBAND2 = "89.160.20.115"  # AS29518 and Linköping, SE
LONDON = "81.2.69.160"  # London, GB (not in the ASN test database)
TELSTRA = "1.128.0.1"  # AS1221 (not in the City test database)
HURRICANE = "2600:7000::1"  # AS6939, IPv6
UNKNOWN = "192.0.2.1"  # TEST-NET-1: in no database


@pytest.fixture
def dbs():
    with GeoDatabases(asn_db=ASN_DB, city_db=CITY_DB) as d:
        yield d


# --------------------------------------------------------------------------- lookups


def test_asn_and_city_of_one_address(dbs):
    note = dbs.lookup(BREDBAND2)
    assert note is not None
    assert (note.asn, note.as_org) == (29518, "Bredband2 AB")
    assert (note.country, note.city) == ("SE", "Linköping")
    assert note.lat == pytest.approx(58.4167)
    assert note.lon == pytest.approx(15.6167)
    assert note.rdns is None


def test_each_database_fills_only_its_own_fields(dbs):
    london = dbs.lookup(LONDON)
    assert (london.asn, london.as_org) == (None, None)
    assert (london.country, london.city) == ("GB", "London")
    assert (london.lat, london.lon) == pytest.approx((51.5142, -0.0931))
    telstra = dbs.lookup(TELSTRA)
    assert (telstra.asn, telstra.as_org) == (1221, "Telstra Pty Ltd")
    assert (telstra.country, telstra.city, telstra.lat, telstra.lon) == (None,) * 4
    hurricane = dbs.lookup(HURRICANE)
    assert (hurricane.asn, hurricane.as_org) == (6939, "Hurricane Electric, Inc.")


def test_an_address_in_no_database_gets_empty_fields_not_an_error(dbs):
    for address in (UNKNOWN, "10.1.2.3", "2001:db8::1", "::1"):
        note = dbs.lookup(address)
        assert note is not None
        assert msgspec.structs.replace(note, source=None) == Annotation()
        assert note.source == dbs.source


def test_a_string_that_is_no_address_gets_none(dbs):
    assert dbs.lookup("not-an-address") is None
    assert dbs.lookup("") is None


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(dbs):
    assert dbs.lookup(f"::ffff:{BREDBAND2}") == dbs.lookup(BREDBAND2)


def test_source_names_files_and_build_dates(dbs):
    built = []
    for path in (ASN_DB, CITY_DB):
        with geoip2.database.Reader(str(path)) as reader:
            epoch = reader.metadata().build_epoch
        built.append(datetime.fromtimestamp(epoch, UTC).date().isoformat())
    assert dbs.source == (f"GeoLite2-ASN-Test.mmdb (built {built[0]}); "
                          f"GeoIP2-City-Test.mmdb (built {built[1]})")
    assert dbs.lookup(BREDBAND2).source == dbs.source
    assert (dbs.asn_db, dbs.city_db) == (ASN_DB, CITY_DB)


def test_either_database_is_optional():
    with GeoDatabases(city_db=CITY_DB) as city_only:
        note = city_only.lookup(BREDBAND2)
        assert note is not None and note.source is not None
        assert (note.asn, note.city) == (None, "Linköping")
        assert note.source.startswith("GeoIP2-City-Test.mmdb (built ")
    with GeoDatabases(asn_db=ASN_DB) as asn_only:
        note = asn_only.lookup(BREDBAND2)
        assert note is not None
        assert (note.asn, note.city) == (29518, None)
    with GeoDatabases() as none:
        assert none.lookup(BREDBAND2) == Annotation()
        assert none.source is None


def test_lookups_are_cached_lru(monkeypatch):
    with GeoDatabases(asn_db=ASN_DB, cache_size=2) as dbs:
        calls = []
        real = annotate_mod._Database.fill

        def counting(self, address, fields):
            calls.append(address)
            real(self, address, fields)

        monkeypatch.setattr(annotate_mod._Database, "fill", counting)
        for address in (BREDBAND2, BREDBAND2, TELSTRA, BREDBAND2):
            dbs.lookup(address)
        assert calls == [BREDBAND2, TELSTRA]
        dbs.lookup(HURRICANE)  # evicts TELSTRA, the least recently used
        dbs.lookup(BREDBAND2)
        dbs.lookup(TELSTRA)
        assert calls == [BREDBAND2, TELSTRA, HURRICANE, TELSTRA]
        assert dbs.cache_info() == (2, 0)


# --------------------------------------------------------------------------- errors


def test_missing_database_names_the_file(tmp_path):
    missing = tmp_path / "GeoLite2-ASN.mmdb"
    with pytest.raises(GeoDatabaseError, match=r"GeoLite2-ASN\.mmdb: no such ASN database"):
        GeoDatabases(asn_db=missing)


def test_a_file_that_is_no_database_names_the_file(tmp_path):
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"this is not a MaxMind DB\n" * 10)
    with pytest.raises(GeoDatabaseError, match=r"junk\.mmdb: not a valid MaxMind DB file"):
        GeoDatabases(city_db=junk)
    with pytest.raises(GeoDatabaseError, match="not a file"):
        GeoDatabases(city_db=tmp_path)


def test_broken_database_names_the_file():
    with GeoDatabases(city_db=BROKEN_DB) as dbs, pytest.raises(GeoDatabaseError) as info:
        dbs.lookup(LONDON)
    assert str(BROKEN_DB) in str(info.value)
    assert "corrupt" in str(info.value)
    assert isinstance(info.value, NetvantageError)


def test_a_database_of_the_wrong_kind_is_refused():
    with pytest.raises(GeoDatabaseError, match=r"GeoIP2-City-Test\.mmdb: is a 'GeoIP2-City'"):
        GeoDatabases(asn_db=CITY_DB)
    with pytest.raises(GeoDatabaseError, match=r"GeoLite2-ASN-Test\.mmdb: .* not a City one"):
        GeoDatabases(city_db=ASN_DB)


# --------------------------------------------------------------------------- reverse DNS


def test_reverse_dns_is_off_by_default_and_on_when_asked(dbs, monkeypatch):
    asked = []

    def fake(address):
        asked.append(address)
        return (f"host-{address.replace('.', '-')}.example", [], [address])

    monkeypatch.setattr("socket.gethostbyaddr", fake)
    assert dbs.lookup(BREDBAND2).rdns is None
    assert asked == []
    note = dbs.lookup(BREDBAND2, rdns=True)
    assert note.rdns == "host-89-160-20-115.example"
    assert note.asn == 29518
    assert note.source.endswith("; reverse DNS")
    dbs.lookup(BREDBAND2, rdns=True)
    assert asked == [BREDBAND2]  # cached


def test_reverse_dns_never_waits_past_its_timeout(monkeypatch):
    release = threading.Event()

    def slow(address):
        if address.endswith(".9"):
            release.wait(30)  # a resolver that never answers (until the test ends)
        if address.endswith(".8"):
            raise OSError("no PTR")
        return (f"n{address}", [], [address])

    monkeypatch.setattr("socket.gethostbyaddr", slow)
    addresses = [f"192.0.2.{i}" for i in range(1, 10)]
    t0 = time.monotonic()
    try:
        names = reverse_dns(addresses, timeout_s=0.3, workers=4)
    finally:
        release.set()
    # The one wall-clock bound here is the feature itself: a resolver that never
    # answers costs its timeout (0.3 s), not the test's 30 s nor a hang.
    assert time.monotonic() - t0 < 3
    assert names["192.0.2.9"] is None
    assert names["192.0.2.8"] is None
    assert names["192.0.2.1"] == "n192.0.2.1"
    assert set(names) == set(addresses)


# --------------------------------------------------------------------------- records


def _trace(hops: list[Hop], target: str = "example.net") -> TraceRecord:
    return TraceRecord(
        id=new_id(), agent="test", target=target, address=BREDBAND2,
        started_at=datetime(2026, 11, 28, 19, 0, tzinfo=UTC), duration_ms=1000.0,
        status="ok",
        body=TraceBody(protocol="icmp", ip_version=4, method="raw", probes_per_hop=3,
                       max_ttl=30, reached=True, dest_ttl=len(hops), stop_reason="reached",
                       hops=hops),
    )


def _hops(annotations: dict[str, Annotation] | None = None) -> list[Hop]:
    return [
        Hop.from_probes(1, [TraceProbe(address="10.0.0.1", rtt_ms=1.0),
                            TraceProbe(address="10.0.0.1", rtt_ms=1.2), TraceProbe()],
                        annotations=annotations),
        Hop.from_probes(2, [TraceProbe(), TraceProbe(), TraceProbe()]),
        Hop.from_probes(3, [TraceProbe(address=LONDON, rtt_ms=20.0),
                            TraceProbe(address=TELSTRA, rtt_ms=25.0),
                            TraceProbe(address=LONDON, rtt_ms=21.0)],
                        annotations=annotations),
        Hop.from_probes(4, [TraceProbe(address=BREDBAND2, rtt_ms=30.0, icmp_type=0)] * 3,
                        annotations=annotations),
    ]


def _ping() -> PingRecord:
    return PingRecord(
        id=new_id(), agent="test", target="example.net", address=BREDBAND2,
        started_at=datetime(2026, 11, 28, 19, 0, tzinfo=UTC), duration_ms=10.0,
        status="ok",
        body=PingBody.from_samples([1.0, None], ip_version=4, socket="raw", payload_bytes=56,
                                   interval_s=1.0, timeout_s=2.0, dont_fragment=False),
    )


def _responders(record: AnyRecord) -> list[Responder]:
    assert isinstance(record, TraceRecord), record
    return [r for hop in record.body.hops for r in hop.responders]


def _annotations(record: AnyRecord) -> list[tuple[str, Annotation]]:
    """Every responder's address and annotation: an annotated trace has one for each."""
    out = []
    for r in _responders(record):
        assert r.annotation is not None, r
        out.append((r.address, r.annotation))
    return out


def test_annotate_records_annotates_every_responder_and_round_trips(dbs):
    ping = _ping()
    trace = _trace(_hops())
    out = annotate_records([ping, trace], dbs)
    assert out[0] is ping  # other kinds unchanged
    annotated = out[1]
    assert isinstance(annotated, TraceRecord)
    assert annotated.id == trace.id
    by_address = dict(_annotations(annotated))
    assert set(by_address) == {"10.0.0.1", LONDON, TELSTRA, BREDBAND2}
    assert all(note.source == dbs.source for note in by_address.values())
    assert by_address[BREDBAND2].asn == 29518
    assert by_address[BREDBAND2].city == "Linköping"
    assert by_address[LONDON].city == "London"
    assert by_address[TELSTRA].as_org == "Telstra Pty Ltd"
    assert by_address["10.0.0.1"].asn is None
    # Everything but the annotations is as it was.
    assert [h.probes for h in annotated.body.hops] == [h.probes for h in trace.body.hops]
    assert ([(r.address, r.replies, r.stats) for r in _responders(annotated)] ==
            [(r.address, r.replies, r.stats) for r in _responders(trace)])
    assert decode_record(encode_record(annotated)) == annotated
    assert trace.body.hops[3].responders[0].annotation is None  # the input is untouched


def test_reannotation_replaces_the_old_annotation(dbs):
    stale = Annotation(asn=1, as_org="Old Org", city="Nowhere", rdns="old.example",
                       source="GeoLite2-ASN.mmdb (built 2019-01-01)")
    trace = _trace(_hops({a: stale for a in ("10.0.0.1", LONDON, TELSTRA, BREDBAND2)}))
    assert all(r.annotation == stale for r in _responders(trace))
    (again,) = annotate_records([trace], dbs)
    fresh = dict(_annotations(again))
    assert fresh[BREDBAND2] == dbs.lookup(BREDBAND2)
    assert fresh["10.0.0.1"] == Annotation(source=dbs.source)
    assert all(note != stale and note.rdns is None for note in fresh.values())


def test_annotated_records_survive_a_jsonl_file(dbs, tmp_path):
    records = annotate_records([_trace(_hops()), _ping()], dbs)
    path = tmp_path / "annotated.jsonl"
    write_jsonl(records, path)
    assert read_jsonl(path) == records


# --------------------------------------------------------------------------- the lab's databases


def test_lab_databases_describe_the_default_topology(tmp_path):
    topo = load_topology()
    asn_path, city_path = write_lab_databases(topo, tmp_path / "geo")
    assert asn_path.name == "netvantage-lab-ASN.mmdb" and asn_path.is_file()
    assert city_path.name == "netvantage-lab-City.mmdb" and city_path.is_file()

    # Plain geoip2 reads them like MaxMind's own.
    cpt = topo.nodes["r-cpt"]
    with geoip2.database.Reader(str(asn_path)) as reader:
        asn = reader.asn(cpt.v4)
        assert (asn.autonomous_system_number, asn.autonomous_system_organization) == (
            64700, "Southern Transit")
    with geoip2.database.Reader(str(city_path)) as reader:
        city = reader.city(cpt.v6)
        assert (city.city.name, city.country.iso_code) == ("Cape Town", "ZA")
        assert (city.location.latitude, city.location.longitude) == (cpt.lat, cpt.lon)

    with GeoDatabases(asn_db=asn_path, city_db=city_path) as dbs:
        for node in topo.nodes.values():
            for address in (node.v4, node.v6):
                note = dbs.lookup(address)
                assert note is not None, address
                assert (note.asn, note.as_org, note.city, note.country, note.lat, note.lon) == (
                    node.asn, node.org, node.city, node.country, node.lat, node.lon), address
        # A link subnet belongs to side b: both ends of r-los - r-lis answer as r-lis.
        link = topo.link("r-los", "r-lis")
        owner = topo.nodes[link.b]
        for address in (link.a_v4, link.b_v4, link.a_v6, link.b_v6):
            note = dbs.lookup(address)
            assert note is not None, address
            assert (note.asn, note.as_org, note.city, note.lat, note.lon) == (
                owner.asn, owner.org, owner.city, owner.lat, owner.lon), address
        access = topo.link("lun", "r-lun")  # the client's end too
        client_end = dbs.lookup(access.a_v4)
        assert client_end is not None and client_end.as_org == topo.nodes["r-lun"].org
        # Outside the lab: nothing.
        assert dbs.lookup("8.8.8.8") == Annotation(source=dbs.source)
        assert dbs.source is not None and "netvantage-lab-ASN.mmdb (built " in dbs.source


def test_lab_databases_annotate_a_lab_trace(tmp_path):
    topo = load_topology()
    asn_path, city_path = write_lab_databases(topo, tmp_path)
    path = topo.path("lun", "dc-ams")[1:]
    hops = [Hop.from_probes(ttl, [TraceProbe(address=topo.nodes[n].v4, rtt_ms=float(ttl))])
            for ttl, n in enumerate(path, start=1)]
    with GeoDatabases(asn_db=asn_path, city_db=city_path) as dbs:
        (record,) = annotate_records([_trace(hops, target=topo.nodes["dc-ams"].v4)], dbs)
    cities = [note.city for _, note in _annotations(record)]
    assert cities == [topo.nodes[n].city for n in path]
    assert "Lagos" in cities  # the west-coast detour of the story


# --------------------------------------------------------------------------- CLI


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([NETVANTAGE, "annotate", *args], input=stdin, capture_output=True,
                          timeout=60, check=False)


def test_cli_annotates_a_file(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl([_trace(_hops()), _ping()], src)
    proc = _run(str(src), "--asn-db", str(ASN_DB), "--city-db", str(CITY_DB), "-o", str(dst))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert b"annotated 1 trace(s) of 2 record(s)" in proc.stderr
    trace, ping = read_jsonl(dst)
    assert isinstance(trace, TraceRecord) and isinstance(ping, PingRecord)
    notes = dict(_annotations(trace))
    assert notes[BREDBAND2].asn == 29518
    london = notes[LONDON]
    assert london.city == "London"
    assert london.source is not None and "GeoLite2-ASN-Test.mmdb" in london.source


def test_cli_writes_stdout_and_reads_stdin(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl([_trace(_hops())], src)
    proc = _run("-", "--asn-db", str(ASN_DB), stdin=src.read_bytes())
    assert proc.returncode == 0, proc.stderr
    (record,) = [decode_record(line) for line in proc.stdout.splitlines()]
    assert {note.asn for _, note in _annotations(record)} == {None, 1221, 29518}


def test_cli_errors_exit_2_naming_the_file(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl([_trace(_hops())], src)
    proc = _run(str(src), "--city-db", str(BROKEN_DB))
    assert proc.returncode == 2
    assert str(BROKEN_DB).encode() in proc.stderr
    proc = _run(str(src), "--asn-db", str(tmp_path / "missing.mmdb"))
    assert proc.returncode == 2
    assert b"missing.mmdb: no such ASN database file" in proc.stderr
    proc = _run(str(src))
    assert proc.returncode == 2
    assert b"--asn-db" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{not json}\n")
    proc = _run(str(bad), "--asn-db", str(ASN_DB))
    assert proc.returncode == 2
    assert b"bad.jsonl" in proc.stderr
