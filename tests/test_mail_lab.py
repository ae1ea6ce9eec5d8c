"""Real Postfix and Dovecot in network namespaces, checked with real clients and real TLS.

Topology (10.233.0.0/16 only, namespaces ``TAG-m-*``, no link to the root
namespace)::

    dc1 10.233.1.2 ── client 10.233.1.1 / 10.233.2.1 ── dc2 10.233.2.2 (+ .3)

Each data centre runs :class:`netvantage.lab.mail.MailServer` with a
certificate from one :class:`netvantage.lab.pki.LabCA`; the client verifies
every server against that CA with ``openssl s_client`` and with Python's
``ssl`` module.  Only envelope commands are ever sent, never DATA.

The servers are whatever Postfix, Dovecot and OpenSSL the machine has: the
tests judge their answers by meaning (reply codes, response kinds, capability
names as sets, OpenSSL's exit status and verify codes, the TLS version's
shape), never by the exact bytes or wording of one version.

Set ``NETVANTAGE_RECORD_TRANSCRIPTS=1`` (or run ``tests/transcripts/record.py``)
to rewrite the recorded transcripts; otherwise the test checks that fresh
answers still mean what the recorded ones say.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from netns import TAG, Namespaces, existing, missing, require_root_netns, sh
from netvantage.lab.mail import (
    CREDENTIALS_FILE,
    PIDS_FILE,
    MailLabError,
    MailPorts,
    MailServer,
    missing_binaries,
    stop_all,
    stop_recorded,
)
from netvantage.lab.pki import LabCA

PREFIX = f"{TAG}-m"
# Fixed, so that a crashed earlier run's daemons can be found and stopped.
STATE_ROOT = Path(f"/tmp/{TAG}-m-state")
TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
SMTP_TRANSCRIPT = TRANSCRIPTS / "postfix-3.7-smtp25.txt"
IMAP_TRANSCRIPT = TRANSCRIPTS / "dovecot-2.3-imap143.txt"
RECORD = os.environ.get("NETVANTAGE_RECORD_TRANSCRIPTS") == "1"

DC1, DC2, DC2_EXTRA = "10.233.1.2", "10.233.2.2", "10.233.2.3"
HOST1, HOST2 = "mx.dc1.netvantage.test", "mx.dc2.netvantage.test"
EHLO_NAME = "client.netvantage.test"
TIMEOUT_S = 10.0

T = TypeVar("T")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def require_mail_binaries() -> None:
    """Skip without postfix/dovecot/openssl, except under ``CI=true`` (a failure there)."""
    absent = missing_binaries() + (["openssl"] if shutil.which("openssl") is None else [])
    if absent:
        missing(f"needs the Debian packages {', '.join(absent)}", "the mail lab tests")


class MailNamespaces(Namespaces):
    """The shared helper's namespaces, under this file's own prefix ``TAG-m``."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.names = [f"{PREFIX}-{n}" for n in names]
        self.by_short = dict(zip(names, self.names, strict=True))


def remove_stale() -> None:
    """Stop daemons and remove namespaces a crashed earlier run of *this file* left."""
    if STATE_ROOT.is_dir():
        for state in STATE_ROOT.iterdir():
            if (state / PIDS_FILE).exists():
                stop_recorded(state)
        shutil.rmtree(STATE_ROOT, ignore_errors=True)
    for name in existing():
        if name.startswith(PREFIX + "-"):
            sh("ip", "netns", "del", name, check=False)


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has entered network namespace ``ns``.

    ``setns()`` changes only the calling thread, so plain Python sockets made
    in ``fn`` live in ``ns`` while the rest of pytest stays where it was.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"in-{ns}")
    thread.start()
    thread.join(3 * TIMEOUT_S)
    if thread.is_alive():
        raise TimeoutError(f"no answer inside {ns}")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class Wire:
    """A socket that keeps every byte the server sent, exactly as it arrived."""

    def __init__(self, address: str, port: int) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (address, port), timeout=TIMEOUT_S)
        self.received = bytearray()
        self._buf = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self) -> bytes:
        while b"\r\n" not in self._buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"closed after {bytes(self.received)!r}")
            self.received += data
            self._buf += data
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def smtp_reply(self) -> bytes:
        """One SMTP reply, all its lines (``250-…`` continues, ``250 …`` ends)."""
        out = b""
        while True:
            line = self.line()
            out += line
            if re.match(rb"^\d{3}( |\r\n)", line):
                return out

    def imap_until(self, tag: str) -> bytes:
        out = b""
        while True:
            line = self.line()
            out += line
            if line.startswith(tag.encode() + b" "):
                return out

    def starttls(self, ca: Path, address: str) -> None:
        assert not self._buf, "bytes after the STARTTLS reply: injection?"
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.sock = ctx.wrap_socket(self.sock, server_hostname=address)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# Answers are judged by what they mean (RFC 5321 reply codes, RFC 3501
# response kinds, capability names), not by one server version's bytes.

_SMTP_LINE = re.compile(r"^(\d{3})(?:([- ])(.*))?$")


def smtp_replies(raw: bytes) -> list[tuple[int, list[str]]]:
    """The complete SMTP replies in ``raw``: (code, text of each line)."""
    replies: list[tuple[int, list[str]]] = []
    code, texts = None, []
    assert raw.endswith(b"\r\n"), raw
    for line in raw.decode("utf-8", "replace").split("\r\n")[:-1]:
        match = _SMTP_LINE.match(line)
        assert match, f"not an SMTP reply line: {line!r}"
        assert code in (None, int(match.group(1))), f"code changed within a reply: {raw!r}"
        code = int(match.group(1))
        texts.append(match.group(3) or "")
        if match.group(2) != "-":
            replies.append((code, texts))
            code, texts = None, []
    assert code is None, f"incomplete reply: {raw!r}"
    return replies


def smtp_reply(raw: bytes) -> tuple[int, list[str]]:
    (reply,) = smtp_replies(raw)
    return reply


def ehlo_keywords(lines: list[str]) -> set[str]:
    """EHLO keywords (RFC 5321: the first word of every line after the greeting line)."""
    return {line.split()[0].upper() for line in lines[1:] if line.strip()}


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply's text, if any."""
    match = re.match(r"([245]\.\d{1,3}\.\d{1,3}) ", text)
    return match.group(1) if match else None


def imap_responses(raw: bytes) -> list[tuple[str, str, str]]:
    """(tag, word, rest) for every response line: tag ``*`` for untagged ones, word
    the status (OK/NO/BAD/BYE/PREAUTH) or data keyword, upper-cased."""
    out = []
    for line in raw.decode("utf-8", "replace").split("\r\n")[:-1]:
        tag, word, rest = [*line.split(" ", 2), "", ""][:3]
        out.append((tag, word.upper(), rest))
    return out


def imap_capabilities(responses: list[tuple[str, str, str]]) -> set[str]:
    """The capability names of the one untagged CAPABILITY response."""
    (caps,) = [rest for tag, word, rest in responses if (tag, word) == ("*", "CAPABILITY")]
    return {c.upper() for c in caps.split()}


def tagged(responses: list[tuple[str, str, str]], tag: str) -> str:
    """The status word (OK, NO or BAD) of the response tagged ``tag``."""
    (word,) = [w for t, w, _ in responses if t == tag]
    return word


def tls_session(address: str, port: int, ca: Path,
                server_hostname: str | None = None) -> tuple[str, str, int]:
    """A TLS handshake with Python's ``ssl``, verifying against ``ca`` and the expected
    name (``address`` by default): implicit TLS on 465/993, STARTTLS on the others.
    Returns (version, cipher name, secret bits); raises what ``ssl`` raises."""
    wire = Wire(address, port)
    try:
        if port in (25, 587):
            wire.smtp_reply()
            wire.send(f"EHLO {EHLO_NAME}")
            wire.smtp_reply()
            wire.send("STARTTLS")
            assert smtp_reply(wire.smtp_reply())[0] == 220
        elif port == 143:
            wire.line()
            wire.send("s1 STARTTLS")
            assert tagged(imap_responses(wire.imap_until("s1")), "s1") == "OK"
        wire.starttls(ca, server_hostname or address)
        assert isinstance(wire.sock, ssl.SSLSocket)
        version, cipher = wire.sock.version(), wire.sock.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0], cipher[2]
    finally:
        wire.close()


def s_client(ns: str, address: str, port: int, ca: Path, *extra: str,
             verify_ip: str | None = None) -> tuple[int, str]:
    """``openssl s_client`` from ``ns`` with strict verification; (exit code, output)."""
    cmd = ["ip", "netns", "exec", ns, "openssl", "s_client", "-brief",
           "-connect", f"{address}:{port}", "-CAfile", str(ca),
           "-verify_return_error", "-verify_ip", verify_ip or address, *extra]
    proc = sh(*cmd, check=False, input="")
    return proc.returncode, proc.stdout + proc.stderr


def proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) for every live process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            continue
        table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def tree(roots: list[int]) -> set[int]:
    table = proc_table()
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [p for p, (ppid, _) in table.items() if ppid == pid]
    return found


def users_of(state_dir: Path) -> list[str]:
    """Live processes whose command line names ``state_dir`` or that hold a file in it."""
    hits = []
    for pid, (_, cmdline) in proc_table().items():
        if str(state_dir) in cmdline:
            hits.append(f"{pid}: {cmdline}")
            continue
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(str(state_dir) + "/"):
                        hits.append(f"{pid}: holds {os.readlink(fd)}")
                        break
    return hits


# --------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------

class Lab:
    def __init__(self, ns: MailNamespaces, ca: LabCA, dc1: MailServer,
                 dc2: MailServer) -> None:
        self.ns, self.ca, self.dc1, self.dc2 = ns, ca, dc1, dc2

    @property
    def client(self) -> str:
        return self.ns["client"]

    def server(self, short: str, address: str, hostname: str, state: str) -> MailServer:
        tls = self.ca.issue(state, dns_names=[hostname], ips=[address],
                            directory=STATE_ROOT / "certs")
        return MailServer(name=state, state_dir=STATE_ROOT / state, hostname=hostname,
                          addresses=[address], tls=tls, netns=self.ns[short])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root_netns()
    require_mail_binaries()
    remove_stale()
    ns = MailNamespaces(["client", "dc1", "dc2"])
    servers: list[MailServer] = []
    try:
        STATE_ROOT.mkdir(mode=0o755)
        STATE_ROOT.chmod(0o755)  # daemons drop privileges: they must reach their files
        ns.create()
        ns.link("client", ["10.233.1.1/24"], "dc1", [f"{DC1}/24"])
        ns.link("client", ["10.233.2.1/24"], "dc2", [f"{DC2}/24", f"{DC2_EXTRA}/24"])
        ca = LabCA.create(STATE_ROOT / "ca")
        the_lab = Lab(ns, ca, None, None)  # type: ignore[arg-type]
        dc1 = the_lab.server("dc1", DC1, HOST1, "dc1")
        dc2 = the_lab.server("dc2", DC2, HOST2, "dc2")
        the_lab.dc1, the_lab.dc2 = dc1, dc2
        for server in (dc1, dc2):
            servers.append(server)
            server.start()
        yield the_lab
    finally:
        stop_all(servers)
        ns.destroy()
        shutil.rmtree(STATE_ROOT, ignore_errors=True)


# --------------------------------------------------------------------------
# 0. No root needed: the CA, and the CI guard
# --------------------------------------------------------------------------

def test_lab_ca_issues_strict_server_certificates(tmp_path: Path) -> None:
    ca = LabCA.create(tmp_path / "ca", name="test CA")
    again = LabCA.load(tmp_path / "ca")
    assert again.cert_path == ca.cert_path
    issued = again.issue("dc9", dns_names=["mx.dc9.test"], ips=["10.233.9.2", "fd00:233::2"],
                         days=3, directory=tmp_path / "leaf")
    for key in (tmp_path / "ca" / "ca.key", issued.key):
        assert key.stat().st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates(issued.chain.read_bytes())
    leaf, root = chain
    assert root == x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    assert leaf == x509.load_pem_x509_certificate(issued.cert.read_bytes())
    now = datetime.now(UTC)
    assert leaf.not_valid_before_utc < now - timedelta(minutes=1)  # clock-skew margin
    assert timedelta(days=2) < leaf.not_valid_after_utc - now <= timedelta(days=3)

    root_bc = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca
    root_ku = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert root_ku.key_cert_sign and root_ku.crl_sign and not root_ku.digital_signature
    leaf_bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf_bc.critical and not leaf_bc.value.ca
    leaf_ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_ku.digital_signature and not leaf_ku.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.dc9.test"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == [
        "10.233.9.2", "fd00:233::2"]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    # OpenSSL's own verification of the chain: never silently left out (CI fails).
    if shutil.which("openssl") is None:
        missing("needs openssl to verify the issued chain", "the mail lab tests")
    for check in (["-verify_ip", "10.233.9.2"], ["-verify_hostname", "mx.dc9.test"]):
        proc = sh("openssl", "verify", "-x509_strict", "-purpose", "sslserver",
                  "-CAfile", str(ca.cert_path), *check, str(issued.cert), check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = sh("openssl", "verify", "-CAfile", str(ca.cert_path), "-verify_ip",
              "10.233.9.3", str(issued.cert), check=False)
    assert proc.returncode != 0


def test_missing_mail_binaries_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "missing_binaries", lambda: ["postfix"])
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the mail lab tests"):
        require_mail_binaries()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_mail_binaries()


# --------------------------------------------------------------------------
# 1. TLS that verifies, banners and capabilities
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("port", "extra"), [
    (25, ("-starttls", "smtp")),
    (587, ("-starttls", "smtp")),
    (465, ()),
    (143, ("-starttls", "imap")),
    (993, ()),
])
@pytest.mark.lab
def test_openssl_verifies_every_tls_port(lab: Lab, port: int, extra: tuple[str, ...]) -> None:
    # With -verify_return_error a certificate that does not verify ends the
    # handshake with an error: exit status 0 means it verified.
    rc, out = s_client(lab.client, DC1, port, lab.ca.cert_path, *extra)
    assert rc == 0, out
    # Python's ssl agrees, and says what was agreed (checked by shape: which
    # TLS 1.2+ version and cipher depends on the OpenSSL of the day).
    version, cipher, bits = in_netns(
        lab.client, lambda: tls_session(DC1, port, lab.ca.cert_path))
    assert re.fullmatch(r"TLSv1\.[23]", version), version
    assert re.fullmatch(r"[A-Z0-9_-]+", cipher) and bits >= 128, (cipher, bits)
    assert in_netns(lab.client, lambda: tls_session(DC1, port, lab.ca.cert_path,
                                                    server_hostname=HOST1))[0] == version


@pytest.mark.lab
def test_openssl_rejects_a_wrong_name(lab: Lab) -> None:
    """The verification above is real: the same server, another expected name, fails."""
    rc, out = s_client(lab.client, DC1, 465, lab.ca.cert_path, verify_ip="10.233.1.99")
    assert rc != 0, out
    # Which check failed, by OpenSSL's verify code (X509_V_ERR_*), not its wording.
    for name, code in (("10.233.1.99", 64),  # IP_ADDRESS_MISMATCH
                       ("mx.elsewhere.netvantage.test", 62)):  # HOSTNAME_MISMATCH
        def session(n: str = name) -> tuple[str, str, int]:
            return tls_session(DC1, 465, lab.ca.cert_path, server_hostname=n)

        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            in_netns(lab.client, session)
        assert refused.value.verify_code == code, (name, refused.value)


@pytest.mark.lab
def test_smtp_banner_and_ehlo(lab: Lab) -> None:
    def talk() -> dict[int, tuple[bytes, bytes]]:
        seen = {}
        for port in (25, 587):
            wire = Wire(DC1, port)
            try:
                banner = wire.smtp_reply()
                wire.send(f"EHLO {EHLO_NAME}")
                seen[port] = (banner, wire.smtp_reply())
                wire.send("QUIT")
                wire.smtp_reply()
            finally:
                wire.close()
        return seen

    for port, (banner, ehlo) in in_netns(lab.client, talk).items():
        code, text = smtp_reply(banner)
        # RFC 5321: "220 <domain> ...": the name the lab gave this server.
        assert code == 220 and text[0].split()[0] == HOST1, (port, banner)
        code, lines = smtp_reply(ehlo)
        assert code == 250 and lines[0].split()[0] == HOST1, (port, ehlo)
        keywords = ehlo_keywords(lines)
        assert "STARTTLS" in keywords, (port, ehlo)
        assert "AUTH" not in keywords  # nothing to log in to: this Postfix never relays


@pytest.mark.lab
def test_imap_capability_before_and_after_tls(lab: Lab) -> None:
    creds = json.loads((lab.dc1.state_dir / CREDENTIALS_FILE).read_text())

    def talk() -> list[bytes]:
        wire = Wire(DC1, 143)
        try:
            greeting = wire.line()
            wire.send("a1 CAPABILITY")
            before = wire.imap_until("a1")
            wire.send("a2 LOGIN probe whatever")  # must be refused in plaintext
            refused = wire.imap_until("a2")
            wire.send("a3 STARTTLS")
            starttls = wire.imap_until("a3")
            wire.starttls(lab.ca.cert_path, DC1)
            wire.send("a4 CAPABILITY")
            after = wire.imap_until("a4")
            wire.send(f"a5 LOGIN {creds['user']} {creds['password']}")
            login = wire.imap_until("a5")
            wire.send("a6 LOGOUT")
            wire.imap_until("a6")
            return [greeting, before, refused, starttls, after, login]
        finally:
            wire.close()

    greeting, before, refused, starttls, after, login = map(
        imap_responses, in_netns(lab.client, talk))
    assert [(tag, word) for tag, word, _ in greeting] == [("*", "OK")], greeting
    caps = imap_capabilities(before)
    assert {"IMAP4REV1", "STARTTLS", "LOGINDISABLED"} <= caps, before
    assert tagged(before, "a1") == "OK"
    assert tagged(refused, "a2") == "NO", refused  # no LOGIN in plaintext
    assert tagged(starttls, "a3") == "OK"
    caps_tls = imap_capabilities(after)
    assert "IMAP4REV1" in caps_tls and not {"LOGINDISABLED", "STARTTLS"} & caps_tls, after
    assert tagged(after, "a4") == "OK"
    assert tagged(login, "a5") == "OK", login  # the test user works (for optional LOGIN probes)


# --------------------------------------------------------------------------
# 2. Submission demands TLS; nothing relays
# --------------------------------------------------------------------------

@pytest.mark.lab
def test_submission_refuses_mail_before_starttls(lab: Lab) -> None:
    def talk() -> bytes:
        wire = Wire(DC1, 587)
        try:
            wire.smtp_reply()
            wire.send(f"EHLO {EHLO_NAME}")
            wire.smtp_reply()
            wire.send("MAIL FROM:<probe@client.netvantage.test>")
            reply = wire.smtp_reply()
            wire.send("QUIT")
            return reply
        finally:
            wire.close()

    # RFC 3207: 530, "Must issue a STARTTLS command first" (whatever the words).
    assert smtp_reply(in_netns(lab.client, talk))[0] == 530


@pytest.mark.lab
@pytest.mark.parametrize("port", [25, 587])
def test_never_relays(lab: Lab, port: int) -> None:
    """RCPT TO another domain is refused, in plain text and after STARTTLS (no DATA)."""
    def talk() -> list[bytes]:
        wire = Wire(DC1, port)
        try:
            wire.smtp_reply()
            wire.send(f"EHLO {EHLO_NAME}")
            wire.smtp_reply()
            wire.send("STARTTLS")
            assert smtp_reply(wire.smtp_reply())[0] == 220
            wire.starttls(lab.ca.cert_path, DC1)
            wire.send(f"EHLO {EHLO_NAME}")
            wire.smtp_reply()
            wire.send("MAIL FROM:<probe@client.netvantage.test>")
            mail = wire.smtp_reply()
            replies = [mail]
            for rcpt in ("someone@example.com", f"postmaster@{HOST2}", "root@[10.233.2.2]"):
                wire.send(f"RCPT TO:<{rcpt}>")
                replies.append(wire.smtp_reply())
            wire.send("QUIT")
            wire.smtp_reply()
            return replies
        finally:
            wire.close()

    mail, *rcpts = in_netns(lab.client, talk)
    assert smtp_reply(mail)[0] == 250, mail
    for reply in rcpts:
        code, text = smtp_reply(reply)
        # Refused for good (Postfix's relay_domains_reject_code), and the enhanced
        # status (advertised ENHANCEDSTATUSCODES) says why: 5.7.x, policy.
        assert code == 554, reply
        assert (enhanced_status(text[0]) or "").startswith("5.7."), reply


# --------------------------------------------------------------------------
# 3. Two data centres at once; stopping leaves nothing behind
# --------------------------------------------------------------------------

@pytest.mark.lab
def test_two_data_centres_at_once(lab: Lab) -> None:
    def banners() -> list[bytes]:
        out = []
        for address in (DC1, DC2):
            wire = Wire(address, 25)
            try:
                out.append(wire.smtp_reply())
            finally:
                wire.close()
        return out

    replies = [smtp_reply(raw) for raw in in_netns(lab.client, banners)]
    assert [(code, text[0].split()[0]) for code, text in replies] == [(220, HOST1),
                                                                     (220, HOST2)]
    rc, out = s_client(lab.client, DC2, 993, lab.ca.cert_path)
    assert rc == 0, out  # verified (-verify_return_error)
    assert len(lab.dc1.pids) == len(lab.dc2.pids) == 2
    assert not set(lab.dc1.pids) & set(lab.dc2.pids)


def _assert_gone(pids: set[int], state_dir: Path) -> None:
    alive = pids & set(proc_table())
    assert not alive, f"still running: {alive}"
    assert not users_of(state_dir), users_of(state_dir)
    assert not (state_dir / PIDS_FILE).exists()


@pytest.mark.lab
def test_stop_leaves_nothing_and_works_from_a_fresh_object(lab: Lab) -> None:
    # A third server, in dc2's namespace on its second address.
    first = lab.server("dc2", DC2_EXTRA, "mx3.dc2.netvantage.test", "dc2b")
    state = first.state_dir
    try:
        # (a) the object that started it stops it; stop() is idempotent.
        first.start()
        everything = tree(first.pids)
        assert len(everything) > 2  # masters and their children
        first.stop()
        _assert_gone(everything, state)
        first.stop()
        assert first.pids == []

        # (b) a fresh object with the same state_dir stops what another started.
        first.start()
        everything = tree(first.pids)
        MailServer(name="other", state_dir=state, hostname="x", addresses=[DC2_EXTRA],
                   tls=first.tls, netns=lab.ns["dc2"]).stop()
        _assert_gone(everything, state)

        # (c) stop_recorded, as `lab down` after a crash would.
        first.start()
        everything = tree(first.pids)
        stop_recorded(state)
        _assert_gone(everything, state)
        stop_recorded(state)  # nothing left: still fine
    finally:
        first.stop()
    assert lab.dc1.pids and lab.dc2.pids  # the others were not touched


@pytest.mark.lab
def test_stop_after_a_failed_start(lab: Lab) -> None:
    """A partial start: Postfix comes up, Dovecot cannot bind (dc2 holds 143 there).

    start() raises with Dovecot's own words and leaves no process behind.
    """
    spare = lab.server("dc2", DC2, HOST2, "dc2c")
    broken = MailServer(name="dc2c", state_dir=spare.state_dir, hostname=HOST2,
                        addresses=[DC2], tls=spare.tls, netns=lab.ns["dc2"],
                        ports=MailPorts(smtp=2525, submission=2587, smtps=2465, imap=143,
                                        imaps=2993))
    with pytest.raises(MailLabError, match=r"(?s)dc2c: dovecot failed.*in use"):
        broken.start(timeout_s=5)
    assert broken.pids == []
    assert not users_of(broken.state_dir)
    broken.stop()  # idempotent after a failure too
    assert len(lab.dc2.pids) == 2  # the real dc2 is untouched


# --------------------------------------------------------------------------
# 4. Byte transcripts for protocol-parser tests
# --------------------------------------------------------------------------

def record_smtp(address: str) -> bytes:
    """Banner, EHLO reply and STARTTLS reply from port 25, bytes as received."""
    wire = Wire(address, 25)
    try:
        wire.smtp_reply()
        wire.send(f"EHLO {EHLO_NAME}")
        wire.smtp_reply()
        wire.send("STARTTLS")
        wire.smtp_reply()
        return bytes(wire.received)
    finally:
        wire.close()


def record_imap(address: str) -> bytes:
    """Greeting, CAPABILITY reply and STARTTLS reply from port 143, bytes as received."""
    wire = Wire(address, 143)
    try:
        wire.line()
        wire.send("a001 CAPABILITY")
        wire.imap_until("a001")
        wire.send("a002 STARTTLS")
        wire.imap_until("a002")
        return bytes(wire.received)
    finally:
        wire.close()


def smtp_meaning(raw: bytes) -> list[object]:
    """What an SMTP transcript (banner, EHLO, STARTTLS replies) says, less its wording:
    the codes, the domain in the banner and EHLO reply, and whether STARTTLS is offered."""
    (banner, greeting), (ehlo, keywords), (starttls, _) = smtp_replies(raw)
    return [(banner, greeting[0].split()[0]), (ehlo, keywords[0].split()[0]),
            "STARTTLS" in ehlo_keywords(keywords), starttls]


def imap_meaning(raw: bytes) -> tuple[list[tuple[str, str]], set[str]]:
    """What an IMAP transcript says, less its wording: tag and word of every response,
    and which of the capabilities that the probe acts on are offered."""
    responses = imap_responses(raw)
    return ([(tag, word) for tag, word, _ in responses],
            {"STARTTLS", "LOGINDISABLED"} & imap_capabilities(responses))


@pytest.mark.lab
def test_transcripts(lab: Lab) -> None:
    smtp = in_netns(lab.client, lambda: record_smtp(DC1))
    imap = in_netns(lab.client, lambda: record_imap(DC1))

    # Shape: CRLF everywhere, the replies we asked for, nothing more.
    for raw in (smtp, imap):
        assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert smtp_meaning(smtp) == [(220, HOST1), (250, HOST1), True, 220], smtp
    assert imap_meaning(imap) == (
        [("*", "OK"), ("*", "CAPABILITY"), ("a001", "OK"), ("a002", "OK")],
        {"STARTTLS", "LOGINDISABLED"}), imap

    if RECORD:
        TRANSCRIPTS.mkdir(exist_ok=True)
        SMTP_TRANSCRIPT.write_bytes(smtp)
        IMAP_TRANSCRIPT.write_bytes(imap)
        return
    # The recorded files must still mean what these servers say: the same codes,
    # response kinds and offers.  Not the same bytes: an upgrade that rewords a
    # reply or adds a capability leaves the transcripts true as parser data (they
    # record one real version, named in their README); one that changes what
    # the probe acts on fails here, and then they are re-recorded.
    assert smtp_meaning(SMTP_TRANSCRIPT.read_bytes()) == smtp_meaning(smtp)
    assert imap_meaning(IMAP_TRANSCRIPT.read_bytes()) == imap_meaning(imap)
