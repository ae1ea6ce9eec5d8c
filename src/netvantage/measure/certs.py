"""The server certificate of a mail probe, read into a :class:`CertInfo`.

The parsing is asn1crypto's (pure Python, MIT): it costs an agent about 4 MB
of memory where ``cryptography`` costs about 9, and a probe only needs to read
a certificate, never to sign or verify one (OpenSSL has verified it already,
inside the handshake).

Names are written as RFC 4514 strings: the relative distinguished names in
reverse order, the RFC's short names for the attribute types it lists (CN, L,
ST, O, OU, C, STREET, DC, UID) and the dotted OID for others, with the
escaping of its section 2.4.  A string value under a dotted OID stays
readable (``1.2.840.113549.1.9.1=postmaster@example.net``) rather than
turning into the ``#``-hex form the RFC prescribes for it, as
``cryptography``'s ``Name.rfc4514_string()`` writes it too (the tests compare
the two); only a value that is not a string, or does not decode, is written as
``#`` and the hex of its DER encoding.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from asn1crypto import core, keys, x509

from ..errors import NetvantageError
from ..results import CertInfo

__all__ = ["CertError", "cert_info", "escape_value", "rfc4514"]

# RFC 4514 section 3: the attribute types with an LDAP short name.
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_ESCAPED = frozenset('\\"+,;<>')


class CertError(NetvantageError, ValueError):
    """The DER bytes are not a certificate this module can read."""


def escape_value(value: str) -> str:
    """An attribute value escaped for an RFC 4514 string (section 2.4)."""
    out = []
    for i, ch in enumerate(value):
        if ch in _ESCAPED:
            out.append("\\" + ch)
        elif ch == "\0":
            out.append("\\00")
        elif (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _attribute(pair: x509.NameTypeAndValue) -> str:
    oid = pair["type"].dotted
    name = _SHORT_NAMES.get(oid, oid)
    value = pair["value"]
    try:
        if isinstance(value, core.IA5String):
            # ASCII by its type, yet certificates carry UTF-8 in it (e-mail addresses,
            # domain components): read as UTF-8, as OpenSSL and cryptography do.
            text = bytes(value.contents).decode("utf-8")
        else:
            text = value.native
    except (ValueError, UnicodeDecodeError):
        text = None
    if isinstance(text, str):
        return f"{name}={escape_value(text)}"
    return f"{name}=#{value.dump().hex()}"


def rfc4514(name: x509.Name) -> str:
    """*name* as an RFC 4514 string: last RDN first, multi-valued RDNs joined by ``+``."""
    return ",".join("+".join(_attribute(pair) for pair in rdn)
                    for rdn in reversed(list(name.chosen)))


def _key_text(key: keys.PublicKeyInfo) -> str:
    algorithm = key.algorithm
    if algorithm == "rsa":
        return f"RSA {key.bit_size}"
    if algorithm == "ec":
        kind, curve = key.curve
        return f"EC {curve}" if kind == "named" else "EC (explicit parameters)"
    if algorithm == "dsa":
        return f"DSA {key.bit_size}"
    return {"ed25519": "Ed25519", "ed448": "Ed448"}.get(algorithm, str(algorithm))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def cert_info(der: bytes) -> CertInfo:
    """The fields a mail probe records of the leaf certificate *der*."""
    try:
        cert = x509.Certificate.load(der)
        tbs = cert["tbs_certificate"]
        dns: list[str] = []
        ips: list[str] = []
        san = cert.subject_alt_name_value
        for general_name in san or ():
            if general_name.name == "dns_name":
                dns.append(general_name.native)
            elif general_name.name == "ip_address":
                ips.append(general_name.native)
        validity = tbs["validity"]
        return CertInfo(
            subject=rfc4514(tbs["subject"]), issuer=rfc4514(tbs["issuer"]),
            san_dns=dns, san_ip=ips,
            not_before=_utc(validity["not_before"].native),
            not_after=_utc(validity["not_after"].native),
            serial=format(tbs["serial_number"].native, "x"),
            sha256=hashlib.sha256(der).hexdigest(), key=_key_text(tbs["subject_public_key_info"]),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise CertError(f"unreadable certificate ({len(der)} bytes): {exc}") from None
