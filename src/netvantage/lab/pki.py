"""A small certificate authority for the lab's data centres.

Why a CA and not self-signed server certificates
------------------------------------------------
A client that verifies a self-signed certificate against *that certificate*
proves little: every server needs its own trust anchor, and a probe cannot
tell "right server" from "any server with a certificate".  With one lab CA,
each probe gets one ``--ca`` file (:attr:`LabCA.cert_path`) and verifies every
data centre the way a real client verifies a real server: chain to a trusted
root, then the name or IP address in ``subjectAltName``.

Choices
-------
* **EC P-256** keys: small, fast to generate (a few milliseconds, so a lab can
  issue fresh certificates on every ``lab up``) and accepted by OpenSSL,
  Postfix and Dovecot alike.
* **Extensions as a public CA would set them**, so that OpenSSL's strict
  verification (``-verify_return_error``, ``-x509_strict``) has nothing to
  complain about: the CA has ``basicConstraints CA:TRUE`` (critical) and may
  only sign certificates and CRLs; a leaf is ``CA:FALSE``, may only be used
  for ``serverAuth``, and names its hosts in ``subjectAltName``.  Key
  identifiers link leaf to issuer.
* **Validity starts** :data:`BACKDATE` **in the past**: namespaces share the
  host's clock, but a probe on another machine (or a VM whose clock lags)
  would otherwise reject a certificate issued a moment ago as "not yet valid".
* Private keys are written ``0600`` and created that way (no window in which
  another user could read them).

This is a *lab* CA: its key sits unencrypted next to its certificate.  Never
use it for anything reachable from a real network.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BACKDATE", "Issued", "LabCA"]

#: How far in the past a certificate's validity starts (clock-skew tolerance).
BACKDATE = dt.timedelta(minutes=5)
#: The CA lives longer than any leaf it signs, so leaves never outlive their issuer.
CA_DAYS = 3650

_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Issued:
    """Where a leaf certificate was written.

    ``chain`` is the leaf followed by the CA certificate, which is what a
    server should present (Postfix ``smtpd_tls_chain_files``, Dovecot
    ``ssl_cert``) so that clients holding only the root can verify it.
    """

    cert: Path
    key: Path
    chain: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode under O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LabCA:
    """A CA certificate and key in one directory (``ca.pem``, ``ca.key``)."""

    __slots__ = ("_cert", "_key", "directory")

    def __init__(self, directory: Path, cert: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self._cert = cert
        self._key = key

    @property
    def cert_path(self) -> Path:
        """The CA certificate (PEM): what a client passes as ``--ca`` / ``-CAfile``."""
        return self.directory / _CA_CERT

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @classmethod
    def create(cls, directory: Path, name: str = "netvantage lab CA") -> LabCA:
        """Make a new CA in ``directory`` (created if missing; existing files are replaced)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netvantage lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    key_cert_sign=True, crl_sign=True, encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        # Key first: a CA certificate without its key would be useless on reload.
        _write_private(directory / _CA_KEY, _key_pem(key))
        (directory / _CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: Path) -> LabCA:
        """Open a CA that :meth:`create` wrote earlier."""
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / _CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / _CA_KEY).read_bytes(),
                                                 password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / _CA_KEY}: not an EC private key")
        if cert.public_key() != key.public_key():
            raise ValueError(f"{directory}: ca.pem and ca.key do not belong together")
        return cls(directory, cert, key)

    def issue(self, name: str, *, dns_names: Sequence[str] = (), ips: Sequence[str] = (),
              days: int = 30, directory: Path | None = None,
              not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None) -> Issued:
        """Issue a server certificate for ``name``.

        ``name`` becomes the subject CN and the file stem (``NAME.pem``,
        ``NAME.key``, ``NAME-chain.pem`` in ``directory``, by default the
        CA's own).  Clients verify names and addresses against
        ``subjectAltName`` only (RFC 6125), so every name a client will use –
        DNS names *and* IP addresses – must be listed; with neither given,
        ``name`` itself is used as the DNS name.

        ``not_before`` / ``not_after`` (timezone-aware) override the validity
        period that ``days`` and :data:`BACKDATE` would give: tests use them to
        make a certificate that has expired or is not yet valid.
        """
        if not _SAFE_NAME.match(name):
            raise ValueError(f"certificate name {name!r}: use letters, digits, '.', '_', '-'")
        if not 1 <= days <= CA_DAYS:
            raise ValueError(f"days must be 1..{CA_DAYS}")
        addresses = [ipaddress.ip_address(ip) for ip in ips]  # ValueError on a bad one
        dns = list(dns_names) or ([] if addresses else [name])
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(a) for a in addresses]

        out = Path(directory) if directory is not None else self.directory
        out.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        valid_from = now - BACKDATE if not_before is None else not_before
        valid_to = (min(now + dt.timedelta(days=days), self._cert.not_valid_after_utc)
                    if not_after is None else not_after)
        if valid_from.tzinfo is None or valid_to.tzinfo is None:
            raise ValueError("not_before and not_after must be timezone-aware")
        if valid_from >= valid_to:
            raise ValueError("not_before must come before not_after")
        issuer_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "netvantage lab"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from)
            .not_valid_after(valid_to)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # keyEncipherment means nothing for an EC key but some old
                # clients look for it; it is harmless for ECDHE suites.
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False,
                    key_encipherment=True, data_encipherment=False, key_agreement=False,
                    key_cert_sign=False, crl_sign=False, encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    issuer_ski.value),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        ca_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        issued = Issued(cert=out / f"{name}.pem", key=out / f"{name}.key",
                        chain=out / f"{name}-chain.pem")
        _write_private(issued.key, _key_pem(key))
        issued.cert.write_bytes(cert_pem)
        issued.chain.write_bytes(cert_pem + ca_pem)
        return issued
