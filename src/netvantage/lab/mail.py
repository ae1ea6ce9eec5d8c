"""Real Postfix and Dovecot for one data centre of the emulated internet.

Why real daemons
----------------
The SMTP and IMAP probes are meant to measure what clients see from real mail
servers: banners, EHLO and CAPABILITY replies, STARTTLS, implicit TLS and the
time each step takes.  A Python imitation would only ever agree with our own
parsers.  So each data centre runs the Debian packages' ``postfix`` (3.7) and
``dovecot`` (2.3), each instance with its own configuration, queue, state and
log files under one ``state_dir``; two data centres run side by side without
sharing a file, a socket or a lock.

What the servers offer
----------------------
========  ===========================================================
port      behaviour
========  ===========================================================
25        SMTP, STARTTLS offered (``smtpd_tls_security_level=may``)
587       submission, TLS required before MAIL FROM (``encrypt``)
465       SMTPS, TLS from the first byte (``smtpd_tls_wrappermode``)
143       IMAP, STARTTLS offered, ``LOGINDISABLED`` before TLS
993       IMAPS, TLS from the first byte
========  ===========================================================

TLS uses the certificate chain a :class:`~netvantage.lab.pki.LabCA` issued,
TLS 1.2 or newer only.  Dovecot knows one user (``probe`` with a random
password, see :data:`CREDENTIALS_FILE`) so that a probe can test LOGIN.

Safety: nothing ever leaves
---------------------------
Postfix **never relays and never delivers**: ``mydestination`` and
``relay_domains`` are empty, every RCPT TO is checked by
``reject_unauth_destination``, every transport (default, relay, local,
virtual) is ``error:``, master.cf has no ``smtp``/``lmtp``/``local`` delivery
agents at all, and DNS is off (``smtp_dns_support_level = disabled``,
``smtpd_peername_lookup = no``).  Nothing is written outside ``state_dir``.

Process bookkeeping
-------------------
Both daemons detach (the Postfix master and the Dovecot master become
children of init), so their PIDs are read from their own pid files and
recorded, with each process's kernel start time, in ``state_dir/pids.json``.
Stopping signals exactly those processes – and the children they had when
stop began – after checking the start time, so a PID that the kernel has since
given to another program is never touched.  Nothing is ever stopped by name:
other people's mail servers may run on the same machine.
:func:`stop_recorded` reads the same file, so ``lab down`` works after the
process that started the servers has crashed.

Measured gotchas (see LAB-NOTES)
--------------------------------
* ``postfix`` prints its errors only when stderr is a terminal, otherwise it
  exits 1 silently: it runs on a pseudo-terminal here and its output (plus the
  tail of its log) goes into the exception.
* ``maillog_file`` must lie under ``maillog_file_prefixes``; ``data_directory``
  must belong to user ``postfix``; a ``main.cf`` modified in the current second
  makes Postfix wait about 2 s, so the files are back-dated 10 s.
* Dovecot needs 1–2 s to exit after SIGTERM: :func:`stop_all` stops data
  centres in parallel.
* Daemons drop privileges (``postfix``, ``dovecot``, ``dovenull``,
  ``nobody``), so every directory above ``state_dir`` must be searchable by
  others (mode ``o+x``); :meth:`MailServer.start` checks this and says so.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import grp
import hashlib
import ipaddress
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetvantageError, PrivilegeError
from .pki import Issued

__all__ = [
    "CREDENTIALS_FILE",
    "PIDS_FILE",
    "MailLabError",
    "MailPorts",
    "MailServer",
    "listening",
    "missing_binaries",
    "stop_all",
    "stop_recorded",
]

#: JSON with the IMAP test user's name and password, inside ``state_dir``.
CREDENTIALS_FILE = "imap-credentials.json"
#: The record of started processes, inside ``state_dir``.
PIDS_FILE = "pids.json"

IMAP_USER = "probe"
# The mailbox owner: an unprivileged system account that exists everywhere
# (Dovecot refuses UIDs below first_valid_uid=500, and root).
_MAIL_UID_NAME, _MAIL_GID_NAME = "nobody", "nogroup"

POSTFIX = "postfix"
DOVECOT = "dovecot"

# Where Debian puts them; PATH of a non-login root shell may lack the sbin dirs.
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_PACKAGES = {"postfix": "postfix", "dovecot": "dovecot-imapd", "ip": "iproute2"}

# Unix socket paths are limited to 108 bytes; Dovecot's longest socket name
# under base_dir is about 30 bytes.
_MAX_BASE_DIR = 70
_POLL_S = 0.02


class MailLabError(NetvantageError):
    """A lab mail server could not be configured, started or stopped."""


@dataclass(frozen=True, slots=True)
class MailPorts:
    """TCP ports of one data centre's mail services (standard ones by default)."""

    smtp: int = 25
    submission: int = 587
    smtps: int = 465
    imap: int = 143
    imaps: int = 993

    def __post_init__(self) -> None:
        values = [self.smtp, self.submission, self.smtps, self.imap, self.imaps]
        if any(not 1 <= p <= 65535 for p in values):
            raise ValueError("ports must be 1..65535")
        if len(set(values)) != len(values):
            raise ValueError("the five mail ports must differ")

    @property
    def postfix(self) -> tuple[int, int, int]:
        return (self.smtp, self.submission, self.smtps)

    @property
    def dovecot(self) -> tuple[int, int]:
        return (self.imap, self.imaps)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN_DIRS:
        path = Path(d) / name
        if os.access(path, os.X_OK):
            return str(path)
    return None


def missing_binaries(netns: bool = True) -> list[str]:
    """Debian packages to install before a :class:`MailServer` can run (empty: none)."""
    names = ["postfix", "dovecot"] + (["ip"] if netns else [])
    return [_PACKAGES[n] for n in names if _binary(n) is None]


def _need(name: str) -> str:
    path = _binary(name)
    if path is None:
        raise MailLabError(f"`{name}` not found: install the Debian package {_PACKAGES[name]}")
    return path


# --------------------------------------------------------------------------
# Processes: identity by (pid, kernel start time)
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Proc:
    role: str
    pid: int
    start: int  # /proc/PID/stat field 22: clock ticks after boot


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid``, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return None
        raise
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _boot_ticks() -> int:
    """Now, in the unit of /proc/PID/stat's start time (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def _alive(proc: _Proc) -> bool:
    """True while ``proc`` – that very process, not a successor with its PID – runs.

    A zombie counts as gone: it holds no sockets and no files, and its reaper
    (init) is not ours to wait for.
    """
    st = _stat(proc.pid)
    return st is not None and st[2] == proc.start and st[0] not in ("Z", "X")


def _identify(role: str, pid: int) -> _Proc | None:
    st = _stat(pid)
    return None if st is None else _Proc(role, pid, st[2])


def _descendants(roots: Iterable[_Proc]) -> list[_Proc]:
    """Every live process below ``roots`` (one scan of /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None and st[0] not in ("Z", "X"):
            children.setdefault(st[1], []).append((int(entry.name), st[2]))
    found: list[_Proc] = []
    todo = [(r.role, r.pid) for r in roots if _alive(r)]
    while todo:
        role, pid = todo.pop()
        for child, start in children.get(pid, []):
            found.append(_Proc(role + "-child", child, start))
            todo.append((role, child))
    return found


def _signal(procs: Iterable[_Proc], sig: signal.Signals) -> None:
    for p in procs:
        if _alive(p):  # re-checked right before the signal: never a reused PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)


def _terminate(masters: Sequence[_Proc], timeout_s: float) -> list[_Proc]:
    """SIGTERM the masters, wait for them and their children; SIGKILL what remains.

    Returns the processes still alive at the end (normally none).
    """
    victims = [p for p in masters if _alive(p)]
    if not victims:
        return []
    victims += _descendants(victims)
    _signal([p for p in victims if p.role in (POSTFIX, DOVECOT)], signal.SIGTERM)
    now = time.monotonic()
    # Children are their master's business first; after half the time, stragglers
    # (say, orphans of a master that died) get a TERM of their own, at the end a KILL.
    stragglers_at, deadline = now + timeout_s / 2, now + timeout_s
    stragglers_signalled = False
    while any(_alive(p) for p in victims):
        now = time.monotonic()
        if now >= deadline:
            _signal(victims, signal.SIGKILL)
            break
        if now >= stragglers_at and not stragglers_signalled:
            _signal(victims, signal.SIGTERM)
            stragglers_signalled = True
        time.sleep(_POLL_S)
    end = time.monotonic() + 2.0
    while any(_alive(p) for p in victims) and time.monotonic() < end:
        time.sleep(_POLL_S)
    return [p for p in victims if _alive(p)]


def _read_records(state_dir: Path) -> list[_Proc]:
    try:
        data = json.loads((state_dir / PIDS_FILE).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise MailLabError(f"{state_dir / PIDS_FILE}: unreadable ({exc})") from exc
    return [_Proc(str(p["role"]), int(p["pid"]), int(p["start"]))
            for p in data.get("processes", [])]


def _write_records(state_dir: Path, procs: Sequence[_Proc]) -> None:
    """Replace the record atomically: a crash never leaves half a file."""
    path = state_dir / PIDS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "processes": [{"role": p.role, "pid": p.pid, "start": p.start} for p in procs],
    }, indent=1) + "\n")
    tmp.replace(path)


def _holders(state_dir: Path) -> list[int]:
    """Live processes holding a file inside ``state_dir`` (ours by construction).

    The recorded masters and their children are stopped first; this catches what a
    race can leave behind (a child forked by a master just as it was told to stop).
    """
    prefix = str(state_dir.resolve()) + "/"
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).startswith(prefix):
                        found.append(int(entry.name))
                        break
    return found


def _sweep(state_dir: Path, timeout_s: float = 3.0) -> None:
    pids = _holders(state_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = _holders(state_dir)
            if not pids:
                return
            time.sleep(0.05)


def _stop_procs(state_dir: Path, procs: Sequence[_Proc], timeout_s: float) -> None:
    left = _terminate(procs, timeout_s)
    if state_dir.is_dir():
        _sweep(state_dir)
    if left:
        _write_records(state_dir, [p for p in procs if _alive(p)])
        raise MailLabError(
            "still running after SIGKILL: " + ", ".join(f"{p.role} {p.pid}" for p in left))
    with contextlib.suppress(FileNotFoundError):
        (state_dir / PIDS_FILE).unlink()


def stop_recorded(state_dir: Path, timeout_s: float = 10.0) -> None:
    """Stop whatever a :class:`MailServer` with this ``state_dir`` recorded.

    For ``lab down`` after the process that started the servers is gone.
    Does nothing if nothing is recorded or everything recorded has exited.
    """
    state_dir = Path(state_dir)
    _stop_procs(state_dir, _read_records(state_dir), timeout_s)


def stop_all(servers: Sequence[MailServer], timeout_s: float = 10.0) -> None:
    """Stop several servers in parallel (Dovecot alone takes 1–2 s to exit).

    Every server is stopped even if another fails; the first error is raised
    afterwards.
    """
    if not servers:
        return
    errors: list[BaseException] = []

    def one(server: MailServer) -> None:
        try:
            server.stop(timeout_s)
        except Exception as exc:  # collected, re-raised below
            errors.append(exc)

    with ThreadPoolExecutor(max_workers=min(16, len(servers))) as pool:
        list(pool.map(one, servers))
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------
# Listening sockets, seen through the daemon's own network namespace
# --------------------------------------------------------------------------

def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in ``pid``'s network namespace.

    ``/proc/PID/net/tcp`` shows the namespace of PID, so this works from the
    root namespace for a daemon inside ``ip netns exec`` – without opening
    connections that would show up in the servers' logs.  A socket in LISTEN
    state is one the kernel completes handshakes for: it accepts connections.
    """
    found: set[tuple[str, int]] = set()
    for name, size in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A = TCP_LISTEN
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            found.add((str(ipaddress.ip_address(raw)), int(port_hex, 16)))
    return found


def _covers(listening: set[tuple[str, int]], address: str, port: int) -> bool:
    wildcard = "::" if ":" in address else "0.0.0.0"
    return (address, port) in listening or (wildcard, port) in listening


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------

def _ssha512(password: str) -> str:
    """Dovecot's ``{SSHA512}`` scheme: base64(SHA-512(password + salt) + salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _run_on_pty(cmd: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run ``cmd`` with stdout/stderr on a pseudo-terminal; return (exit code, output).

    Postfix writes its diagnostics only to a terminal.  The output is read
    while the command runs (a full pty would block it); a daemon it leaves
    behind holds no end of this terminal (Postfix's master reopens its stdio
    on /dev/null), and even if one did, reading stops once the command exits.
    """
    master_fd, slave_fd = os.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave_fd,
                                stderr=slave_fd, start_new_session=True)
    finally:
        os.close(slave_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done = proc.poll() is not None
            ready, _, _ = select.select([master_fd], [], [], 0 if done else _POLL_S)
            if ready:
                try:
                    data = os.read(master_fd, 4096)
                except OSError:  # EIO: every writer has closed the terminal
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                if done:
                    break
            elif done:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                chunks.append(f"\n(timed out after {timeout_s:.0f} s)".encode())
                break
    finally:
        os.close(master_fd)
    rc = proc.wait()
    return rc, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n").strip()


class MailServer:
    """Postfix and Dovecot for one data centre, all state under ``state_dir``.

    ``addresses`` are the IP addresses the services listen on (and that the
    certificate in ``tls`` should name); ``netns`` is the network namespace
    to run in (``None``: the current one, for tests on loopback with high
    ports).  ``hostname`` is the name in the SMTP banner and the EHLO reply.
    """

    def __init__(self, *, name: str, state_dir: Path, hostname: str,
                 addresses: Sequence[str], tls: Issued, netns: str | None = None,
                 ports: MailPorts = MailPorts()) -> None:
        if not addresses:
            raise ValueError("at least one listening address is needed")
        self.addresses = [str(ipaddress.ip_address(a)) for a in addresses]
        if not hostname or any(c.isspace() or c in ",;#" for c in hostname):
            raise ValueError(f"bad hostname {hostname!r}")
        self.name = name
        self.state_dir = Path(state_dir).absolute()
        self.hostname = hostname
        self.tls = tls
        self.netns = netns
        self.ports = ports
        self._procs: list[_Proc] = []

    # ---- paths -----------------------------------------------------------
    @property
    def postfix_config_dir(self) -> Path:
        return self.state_dir / "postfix"

    @property
    def dovecot_config(self) -> Path:
        return self.state_dir / "dovecot" / "dovecot.conf"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def postfix_log(self) -> Path:
        return self.log_dir / "postfix.log"

    @property
    def dovecot_log(self) -> Path:
        return self.log_dir / "dovecot.log"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / CREDENTIALS_FILE

    @property
    def _queue_dir(self) -> Path:
        return self.state_dir / "postfix-queue"

    @property
    def _data_dir(self) -> Path:
        return self.state_dir / "postfix-data"

    @property
    def _dovecot_base(self) -> Path:
        return self.state_dir / "dovecot-run"

    @property
    def pids(self) -> list[int]:
        """PIDs of the masters this server started and that are still running."""
        return [p.pid for p in self._procs if _alive(p)]

    def __repr__(self) -> str:
        where = self.netns or "host"
        return f"MailServer({self.name!r}, {self.hostname}, {self.addresses}, netns={where})"

    # ---- lifecycle -------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> None:
        """Write the configuration, start both daemons, wait until every port listens.

        On any failure whatever was started is stopped again before the
        :class:`MailLabError` (with the daemons' own messages) propagates.
        """
        deadline = time.monotonic() + timeout_s
        self.state_dir.mkdir(parents=True, exist_ok=True)
        running = [p for p in _read_records(self.state_dir) if _alive(p)]
        if running:
            raise MailLabError(
                f"{self.name}: already running from {self.state_dir} (pids "
                f"{', '.join(str(p.pid) for p in running)}); stop it first")
        self._procs = []
        try:
            self._prepare()
            self._launch(deadline)
            self._wait_listening(deadline)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the recorded processes and their children; safe to call any time."""
        known = {(p.pid, p.start): p for p in self._procs}
        for p in _read_records(self.state_dir):
            known.setdefault((p.pid, p.start), p)
        try:
            _stop_procs(self.state_dir, list(known.values()), timeout_s)
        finally:
            self._procs = [p for p in known.values() if _alive(p)]

    def __enter__(self) -> MailServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals -------------------------------------------------------
    def _command(self, program: str, *args: str) -> list[str]:
        cmd = [_need(program), *args]
        if self.netns is None:
            return cmd
        return [_need("ip"), "netns", "exec", self.netns, *cmd]

    def _record(self, role: str, pid_file: Path, not_before: int) -> None:
        """Record the master named in ``pid_file`` if it started after ``not_before``.

        The start-time check makes a stale pid file harmless: its PID may now
        belong to an unrelated program, which must never be recorded (and later
        signalled) as ours.
        """
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        proc = _identify(role, pid)
        if proc is not None and proc.start >= not_before and _alive(proc):
            self._procs.append(proc)
            _write_records(self.state_dir, self._procs)

    def _check_searchable(self) -> None:
        for parent in [self.state_dir, *self.state_dir.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise MailLabError(
                    f"{parent} is not searchable by other users (mode {mode & 0o7777:o}); "
                    "Postfix and Dovecot drop privileges and must reach "
                    f"{self.state_dir}: chmod o+x {parent}, or choose a state_dir "
                    "outside private directories")

    def _prepare(self) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError(
                "the lab's mail servers need root: Postfix and Dovecot switch users, "
                "and the lab runs them in network namespaces")
        if len(str(self._dovecot_base)) > _MAX_BASE_DIR:
            raise MailLabError(
                f"state_dir {self.state_dir} is too long for Dovecot's unix sockets "
                f"(base_dir must stay under {_MAX_BASE_DIR} characters)")
        for path in (self.tls.chain, self.tls.key):
            if not path.is_file():
                raise MailLabError(f"TLS file {path} is missing")
        self.state_dir.chmod(0o755)
        self._check_searchable()
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        dovecot_gid = grp.getgrnam("dovecot").gr_gid
        mail_uid = pwd.getpwnam(_MAIL_UID_NAME).pw_uid
        mail_gid = grp.getgrnam(_MAIL_GID_NAME).gr_gid

        for d in (self.postfix_config_dir, self._queue_dir, self.log_dir,
                  self.dovecot_config.parent, self.state_dir / "dovecot-state",
                  self.state_dir / "mail"):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self._data_dir.mkdir(exist_ok=True)
        os.chown(self._data_dir, postfix_uid, -1)
        self._data_dir.chmod(0o700)
        home = self.state_dir / "mail" / IMAP_USER
        home.mkdir(exist_ok=True)
        os.chown(home, mail_uid, mail_gid)
        home.chmod(0o700)

        # Postfix: back-dated so that it does not wait for a "fresh" main.cf.
        past = time.time() - 10
        for fname, text in (("main.cf", self._postfix_main()),
                            ("master.cf", self._postfix_master())):
            path = self.postfix_config_dir / fname
            path.write_text(text)
            os.utime(path, (past, past))

        # Dovecot: the test user, keeping the password across restarts.
        password = self._imap_password()
        users = self.dovecot_config.parent / "users"
        users.write_text(f"{IMAP_USER}:{_ssha512(password)}:{mail_uid}:{mail_gid}::{home}::\n")
        os.chown(users, 0, dovecot_gid)
        users.chmod(0o640)
        self.dovecot_config.write_text(self._dovecot_conf(users))

    def _imap_password(self) -> str:
        try:
            old = json.loads(self.credentials_file.read_text())
            if old.get("user") == IMAP_USER and isinstance(old.get("password"), str):
                return str(old["password"])
        except (OSError, ValueError):
            pass
        password = secrets.token_urlsafe(18)
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"user": IMAP_USER, "password": password, "hostname": self.hostname,
                       "addresses": self.addresses, "imap": self.ports.imap,
                       "imaps": self.ports.imaps}, f, indent=1)
            f.write("\n")
        return password

    def _launch(self, deadline: float) -> None:
        """Start Postfix (on a pty) and Dovecot side by side; record both masters."""
        pid_files = {POSTFIX: self._queue_dir / "pid" / "master.pid",
                     DOVECOT: self._dovecot_base / "master.pid"}
        for stale in pid_files.values():  # nothing recorded runs (checked in start())
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        not_before = _boot_ticks() - 1
        # Dovecot's master keeps the stderr it was started with for good, so a
        # pipe would never reach end-of-file: its start-up messages go to a file.
        d_out_path = self.log_dir / "dovecot-start.out"
        with d_out_path.open("wb") as d_out_file:
            dovecot = subprocess.Popen(
                self._command("dovecot", "-c", str(self.dovecot_config)),
                stdin=subprocess.DEVNULL, stdout=d_out_file, stderr=d_out_file,
                start_new_session=True)
        try:
            rc, out = _run_on_pty(
                self._command("postfix", "-c", str(self.postfix_config_dir), "start"),
                max(1.0, deadline - time.monotonic()))
        finally:
            try:
                dovecot.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                dovecot.kill()
                dovecot.wait()
            # Record whatever did start, even if the other one failed.
            for role, pid_file in pid_files.items():
                self._record(role, pid_file, not_before)
        d_out = _tail(d_out_path)
        if rc != 0:
            raise MailLabError(
                f"{self.name}: `postfix start` failed (exit {rc}):\n{out}\n"
                f"--- {self.postfix_log}:\n{_tail(self.postfix_log)}")
        if dovecot.returncode != 0:
            raise MailLabError(
                f"{self.name}: dovecot failed (exit {dovecot.returncode}):\n"
                f"{d_out}\n"
                f"--- {self.dovecot_log}:\n{_tail(self.dovecot_log)}")
        for role in (POSTFIX, DOVECOT):
            if not any(p.role == role for p in self._procs):
                raise MailLabError(f"{self.name}: {role} started but left no live master")

    def _wait_listening(self, deadline: float) -> None:
        want = {POSTFIX: self.ports.postfix, DOVECOT: self.ports.dovecot}
        while True:
            missing: list[str] = []
            for proc in self._procs:
                if not _alive(proc):
                    log = self.postfix_log if proc.role == POSTFIX else self.dovecot_log
                    raise MailLabError(f"{self.name}: {proc.role} master {proc.pid} exited"
                                       f"\n--- {log}:\n{_tail(log)}")
                bound = listening(proc.pid)
                missing += [f"{a}:{port}" for port in want[proc.role] for a in self.addresses
                            if not _covers(bound, a, port)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise MailLabError(f"{self.name}: not listening on {', '.join(missing)} "
                                   "in time\n" + _tail(self.postfix_log, 8) + "\n"
                                   + _tail(self.dovecot_log, 8))
            time.sleep(_POLL_S)

    # ---- configuration text ------------------------------------------------
    def _postfix_main(self) -> str:
        v4 = [a for a in self.addresses if ":" not in a]
        v6 = [a for a in self.addresses if ":" in a]
        protocols = "all" if v4 and v6 else ("ipv6" if v6 else "ipv4")
        own = [f"{a}/32" for a in v4] + [f"[{a}]/128" for a in v6]
        mynetworks = " ".join(["127.0.0.0/8", "[::1]/128", *own])
        domain = self.hostname.split(".", 1)[1] if "." in self.hostname else self.hostname
        never = "error:5.7.1 this lab data centre never forwards or delivers mail"
        return f"""\
# Written by netvantage for lab data centre {self.name!r}; rewritten on every start.
compatibility_level = 3.6
queue_directory = {self._queue_dir}
data_directory = {self._data_dir}
mail_owner = postfix
setgid_group = postdrop

myhostname = {self.hostname}
mydomain = {domain}
myorigin = $myhostname
smtpd_banner = $myhostname ESMTP
inet_interfaces = {", ".join(self.addresses)}
inet_protocols = {protocols}

# Never relay, never deliver: nothing this server accepts can leave it.
mydestination =
relay_domains =
mynetworks = {mynetworks}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
default_transport = {never}
relay_transport = {never}
local_transport = {never}
virtual_transport = {never}
alias_maps =
alias_database =
local_recipient_maps =
disable_vrfy_command = yes
biff = no
append_dot_mydomain = no

# No DNS in the lab (disable_dns_lookups is the pre-3.0 spelling of this).
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no

smtpd_tls_chain_files = {self.tls.key}, {self.tls.chain}
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_session_cache_database =
smtpd_sasl_auth_enable = no
smtp_tls_security_level = none

maillog_file = {self.postfix_log}
maillog_file_prefixes = {self.log_dir}
"""

    def _postfix_master(self) -> str:
        p = self.ports
        rows = [
            # service        type  priv unpriv chroot wakeup maxproc command
            f"{p.smtp}        inet  n  -  n  -  -  smtpd",
            f"{p.submission}  inet  n  -  n  -  -  smtpd",
            "  -o syslog_name=postfix/submission",
            "  -o smtpd_tls_security_level=encrypt",
            f"{p.smtps}       inet  n  -  n  -  -  smtpd",
            "  -o syslog_name=postfix/smtps",
            "  -o smtpd_tls_wrappermode=yes",
            "  -o smtpd_tls_security_level=encrypt",
            "pickup    unix  n  -  n  60    1  pickup",
            "cleanup   unix  n  -  n  -     0  cleanup",
            "qmgr      unix  n  -  n  300   1  qmgr",
            "tlsmgr    unix  -  -  n  1000? 1  tlsmgr",
            "rewrite   unix  -  -  n  -     -  trivial-rewrite",
            "bounce    unix  -  -  n  -     0  bounce",
            "defer     unix  -  -  n  -     0  bounce",
            "trace     unix  -  -  n  -     0  bounce",
            "verify    unix  -  -  n  -     1  verify",
            "flush     unix  n  -  n  1000? 0  flush",
            "proxymap  unix  -  -  n  -     -  proxymap",
            "showq     unix  n  -  n  -     -  showq",
            "error     unix  -  -  n  -     -  error",
            "retry     unix  -  -  n  -     -  error",
            "discard   unix  -  -  n  -     -  discard",
            "anvil     unix  -  -  n  -     1  anvil",
            "scache    unix  -  -  n  -     1  scache",
            "postlog   unix-dgram n - n - 1 postlogd",
        ]
        head = ("# Written by netvantage.  No smtp/lmtp/local/virtual/pipe delivery agents:\n"
                "# this Postfix cannot send mail anywhere even if misconfigured.\n")
        return head + "\n".join(rows) + "\n"

    def _dovecot_conf(self, users: Path) -> str:
        p = self.ports
        return f"""\
# Written by netvantage for lab data centre {self.name!r}; rewritten on every start.
instance_name = nv-{self.name}
base_dir = {self._dovecot_base}
state_dir = {self.state_dir / "dovecot-state"}
log_path = {self.dovecot_log}
protocols = imap
listen = {", ".join(self.addresses)}
hostname = {self.hostname}
shutdown_clients = yes
verbose_proctitle = no

ssl = yes
ssl_cert = <{self.tls.chain}
ssl_key = <{self.tls.key}
ssl_min_protocol = TLSv1.2
ssl_prefer_server_ciphers = yes
# Plaintext LOGIN only after TLS: CAPABILITY says LOGINDISABLED before STARTTLS.
disable_plaintext_auth = yes
auth_mechanisms = plain login

passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
mail_location = maildir:~/Maildir

service imap-login {{
  inet_listener imap {{
    port = {p.imap}
  }}
  inet_listener imaps {{
    port = {p.imaps}
    ssl = yes
  }}
}}
"""
