"""The mail probes' certificate reader (asn1crypto) against cryptography's reading
of the same certificates: names as RFC 4514 strings, SANs, validity, serial,
key and fingerprint."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from netvantage.errors import NetvantageError
from netvantage.measure.certs import CertError, cert_info, escape_value

_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _make(subject: x509.Name, key=None, sans=None, serial: int = 0x1234ABCD,
          not_before: datetime | None = None) -> bytes:
    key = key or _EC_KEY
    start = not_before or datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netvantage tests")])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(start).not_valid_after(start + timedelta(days=90)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(key, algorithm)
    return cert.public_bytes(serialization.Encoding.DER)


def test_every_field_of_a_mail_server_certificate():
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "ZA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
                         x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.net")])
    sans = [x509.DNSName("mail.example.net"), x509.DNSName("smtp.example.net"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.25")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::25"))]
    der = _make(subject, sans=sans)
    info = cert_info(der)
    assert info.subject == "CN=mail.example.net,O=Example\\, Inc.,C=ZA"
    assert info.issuer == "O=netvantage tests,CN=test CA"
    assert info.san_dns == ["mail.example.net", "smtp.example.net"]
    assert info.san_ip == ["192.0.2.25", "2001:db8::25"]
    assert info.not_before == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert info.not_after == datetime(2026, 4, 2, 3, 4, 5, tzinfo=UTC)
    assert info.serial == "1234abcd"
    assert info.sha256 == hashlib.sha256(der).hexdigest()
    assert info.key == "EC secp256r1"


@pytest.mark.parametrize("key, text", [
    (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA 2048"),
    (ec.generate_private_key(ec.SECP384R1()), "EC secp384r1"),
    (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
])
def test_key_types(key, text):
    der = _make(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k")]), key=key)
    assert cert_info(der).key == text


def test_no_san_and_a_date_before_2050():
    # UTCTime before 2050, GeneralizedTime after (RFC 5280 4.1.2.5): both read as UTC.
    der = _make(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]),
                not_before=datetime(2049, 12, 1, tzinfo=UTC))
    info = cert_info(der)
    assert info.san_dns == [] and info.san_ip == []
    assert info.not_before.year == 2049 and info.not_after.year == 2050
    assert info.not_after.tzinfo is not None


# Values with every character RFC 4514 escapes, leading/trailing blanks and '#'.
_UTF8 = st.text(alphabet=st.sampled_from(list('ab Z9#"+,;<>\\=é€')), min_size=1, max_size=12)
_IA5 = st.text(alphabet=st.sampled_from(list('ab Z9#"+,;<>\\=')), min_size=1, max_size=12)
# UTF8String attributes, then the IA5String ones (e-mail address, domain component).
_ATTRS = st.one_of(
    st.tuples(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                               NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME,
                               NameOID.STATE_OR_PROVINCE_NAME, NameOID.STREET_ADDRESS,
                               NameOID.USER_ID, NameOID.SURNAME]), _UTF8),
    st.tuples(st.sampled_from([NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT]), _IA5),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_ATTRS, min_size=1, max_size=2), min_size=1, max_size=4))
def test_names_read_as_cryptography_writes_them(rdns):
    name = x509.Name([x509.RelativeDistinguishedName(
        [x509.NameAttribute(oid, value) for oid, value in dict(rdn).items()]) for rdn in rdns])
    der = _make(name)
    # As read back from the DER (a multi-valued RDN is a SET: DER sorts it).
    assert cert_info(der).subject == x509.load_der_x509_certificate(der).subject.rfc4514_string()


def test_utf8_in_ia5_strings_and_undecodable_values():
    # cryptography writes UTF-8 into an IA5String if asked, and certificates do carry it.
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "é@x"),
                      x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "é")])
    assert cert_info(_make(name)).subject == "DC=é,1.2.840.113549.1.9.1=é@x"
    # Bytes that are not UTF-8 in a UTF8String: the value is written as '#' + its DER in hex.
    good = _make(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xy")]))
    bad = good.replace(b"\x0c\x02xy", b"\x0c\x02\xff\xfe")
    assert bad != good
    assert cert_info(bad).subject == "CN=#0c02fffe"


def test_escaping_rules_of_rfc_4514():
    assert escape_value("#x") == "\\#x" and escape_value("x#") == "x#"
    assert escape_value(" a b ") == "\\ a b\\ "
    assert escape_value('a"b+c,d;e<f>g\\h') == 'a\\"b\\+c\\,d\\;e\\<f\\>g\\\\h'
    assert escape_value("a\0b") == "a\\00b"


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x05", b"not a certificate"])
def test_unreadable_bytes_are_a_clear_error(der):
    with pytest.raises(CertError, match="unreadable certificate") as caught:
        cert_info(der)
    # One exception tree, and still the ValueError the mail probe's callers knew.
    assert isinstance(caught.value, NetvantageError) and isinstance(caught.value, ValueError)
