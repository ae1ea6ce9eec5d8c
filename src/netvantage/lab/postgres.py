"""A throw-away PostgreSQL server in a temporary directory (tests, benchmarks, trials).

:class:`TempPostgres` runs Debian's PostgreSQL binaries (``initdb``, ``pg_ctl``,
``createdb`` from ``/usr/lib/postgresql/VERSION/bin``) on a fresh data
directory.  The server listens on a Unix socket in that directory only (no
TCP port, so several can run at once and nothing outside the machine can reach
them) and trusts local connections; it is stopped and the directory removed
on :meth:`TempPostgres.stop` (or leaving the ``with`` block).

PostgreSQL refuses to run as root: run as root, the server runs as an
unprivileged user (``nobody`` unless told otherwise) who owns the directory.
``fsync=False`` trades durability for speed (tests); benchmarks keep the
default.  No Python driver is needed here (the collector extra has psycopg):
databases are made with ``createdb``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from ..errors import NetvantageError

__all__ = ["PostgresMissingError", "TempPostgres", "find_bin"]

SUPERUSER = "netvantage"


class PostgresMissingError(NetvantageError):
    """PostgreSQL's server binaries are not installed (Debian package ``postgresql``)."""


def find_bin() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``pg_ctl``."""
    found = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
             if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists()]
    if not found:
        raise PostgresMissingError("PostgreSQL's server is not installed (Debian: apt-get "
                                   "install postgresql; 'make test' installs it)")
    return max(found, key=lambda d: [int(p) if p.isdigit() else 0
                                     for p in d.parent.name.split(".")])


class TempPostgres:
    """A PostgreSQL server of its own; :meth:`url` names a database on it.

    >>> with TempPostgres() as pg:                       # doctest: +SKIP
    ...     url = pg.create_database("results")
    """

    def __init__(self, *, user: str = "nobody", fsync: bool = True,
                 timeout_s: float = 60.0) -> None:
        self.bin = find_bin()
        self.fsync = fsync
        self.timeout_s = timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="nv-pg-"))
        self.data = self.dir / "data"
        self.port = 5432  # names the socket file only: no TCP listener
        self._run_as: str | None = user if os.geteuid() == 0 else None
        self._started = False

    def _run(self, *args: str, timeout: float | None = None) -> str:
        try:
            done = subprocess.run(list(args), user=self._run_as, capture_output=True,
                                  text=True, timeout=timeout or self.timeout_s, cwd=self.dir,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise NetvantageError(f"{Path(args[0]).name} did not finish in "
                                  f"{timeout or self.timeout_s:g} s") from None
        if done.returncode != 0:
            raise NetvantageError(f"{Path(args[0]).name} failed ({done.returncode}): "
                                  f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def start(self) -> TempPostgres:
        try:
            if self._run_as is not None:
                entry = pwd.getpwnam(self._run_as)
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                      "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
            options = (f"-k {self.dir} -p {self.port} -c listen_addresses='' "
                       f"-c fsync={'on' if self.fsync else 'off'} "
                       f"-c full_page_writes={'on' if self.fsync else 'off'}")
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                      "-l", str(self.dir / "server.log"), "-w", "-t",
                      str(int(self.timeout_s)), "start")
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self

    def url(self, database: str = "postgres") -> str:
        """A libpq URL of ``database`` on this server (over its Unix socket)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.dir}&port={self.port}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        self._run(str(self.bin / "createdb"), "-h", str(self.dir), "-p", str(self.port),
                  "-U", SUPERUSER, name)
        return self.url(name)

    def log(self) -> str:
        """The server's log so far (for a failed test's message)."""
        with contextlib.suppress(OSError):
            return (self.dir / "server.log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory (idempotent)."""
        if self._started:
            self._started = False
            with contextlib.suppress(NetvantageError):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                          "-w", "-t", str(int(self.timeout_s)), "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
