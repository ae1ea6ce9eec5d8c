"""The delay element itself: one process forwarding packets between TUN pairs, on time.

Where the timestamps come from
------------------------------
Everything runs in one thread on one ``epoll`` selector, so nothing of ours
runs between reading the clock and the system call next to it.

* **arrival** – ``CLOCK_MONOTONIC`` (``time.monotonic_ns``) is read right after
  the ``read()`` that took the packet from the TUN device.  The kernel does not
  timestamp TUN reads; the time from the sender's ``sendto()`` to our wake-up
  is therefore *not* part of the delay and shows up as overhead.
* **due** – arrival + delay ± uniform jitter (clamped at zero), but never
  earlier than the previous packet's due time in the same direction: a link
  delays, it does not reorder.
* **departure** – a ``timerfd`` on ``CLOCK_MONOTONIC``, armed with an
  *absolute* time shortly before the earliest held packet is due, sits in the
  same selector as the TUN devices; the last stretch (``--spin-us``, 200 µs by
  default) is busy-polled with zero-timeout selects, so input stays served and
  the wake-up latency of a sleeping process (tens of µs, more on a VM) does not
  land on the packet.  ``epoll_wait`` alone only knows milliseconds (and Python
  rounds its timeout up), which would add up to 1 ms per packet.  A packet is
  never written before its due time.  ``--timer poll`` is the variant without a
  timerfd, for comparison: whole-millisecond ``epoll`` timeouts, then a busy
  poll for the last millisecond (same latency, ten times the CPU at 100 pps:
  ``bench/delay_overhead.py`` shows both).

* **scheduling** – a due time is only kept if the process runs when its timer
  fires.  On a small machine busy with other work (two CPUs running a probe, a
  forking Postfix and a test runner) an ordinary process waits its turn, and the
  packet arrives late by however long that was: with three CPU-bound processes
  beside it, iputils ``ping`` through the lab's yyz→dc-ams path (87.2 ms) showed
  p90 89.0 ms and p99 91.2 ms.  So the element asks for ``SCHED_FIFO`` at a low
  real-time priority (``--rt-priority``, 10 by default; 0 keeps normal
  scheduling): it then preempts ordinary processes when a packet is due, and the
  same run showed p90 87.4 ms and p99 87.9 ms.  The kernel still keeps a share of
  every CPU for ordinary processes (RT throttling), so a busy element cannot
  lock a machine up.  If the request is refused (no ``CAP_SYS_NICE``, a
  container's limits), the element says so on standard error and runs
  normally.

What is left as overhead is the sender's path into its TUN device, our wake-up
and ``read()``, our ``write()`` and the receiver's input path (about 0.05 ms
per direction on the lab machine, against 0.4–0.5 ms for a plain select loop).
Measure a link's real RTT with iputils ``ping`` (see
``bench/delay_overhead.py``) and compare probes with *that*.

Memory is bounded: at most :data:`MAX_QUEUE` packets and
:data:`MAX_QUEUE_BYTES` bytes wait per direction; more are dropped and counted
(like a router's full buffer, which is the only place a link of this kind can
lose packets).

Running it
----------
``python -m netvantage.lab.delay --spec SPEC.json --control CONTROL.sock`` (as
root) creates the devices (``IFF_TUN | IFF_NO_PI``, not persistent, MTU set,
*not* up and without addresses), binds the control socket (mode 0600; its
protocol is in :mod:`.control`), prints ``ready`` and forwards until SIGTERM or
SIGINT.  Because the devices are not persistent they disappear when the process
ends, however it ends (and while it runs, they keep a namespace alive that
``ip netns del`` has already unlisted: stop the process first).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import gc
import heapq
import os
import random
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .control import ControlError, StatsRequest, encode_line, parse_request
from .spec import LinkSpec, SpecError, read_spec

__all__ = ["DEFAULT_RT_PRIORITY", "DEFAULT_SPIN_US", "MAX_QUEUE", "MAX_QUEUE_BYTES", "main"]

MAX_QUEUE = 10_000  # packets held per direction; more are dropped and counted
MAX_QUEUE_BYTES = 32 << 20  # and bytes, since a device's MTU may be raised to 64 KiB

# Linux ABI numbers the standard library does not name.
_CLONE_NEWNET = 0x4000_0000
_TUNSETIFF = 0x4004_54CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_SIOCSIFMTU = 0x8922
_IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq with ifr_flags
_IFREQ_MTU = struct.Struct("16si20x")  # struct ifreq with ifr_mtu
_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_ITIMERSPEC = struct.Struct("@qqqq")  # it_interval {sec, nsec}, it_value {sec, nsec}
_PR_SET_TIMERSLACK = 29

# Forwarding loop tuning.
_READ_BATCH = 64  # packets read from one device per wake-up, so no device starves others
_READ_SIZE = 65_536  # whatever MTU the caller sets later, a packet is never truncated
# How long before a due time the loop stops sleeping and busy-polls instead.
# "poll" needs a whole millisecond because epoll's timeout is in milliseconds.
DEFAULT_SPIN_US = {"timerfd": 200, "poll": 1000}
DEFAULT_RT_PRIORITY = 10  # SCHED_FIFO, below threaded interrupt handlers (50)

# Control socket limits: a bad client may waste its own connection, never the loop.
_MAX_LINE = 4096
_MAX_CLIENTS = 32
_CLIENT_IDLE_S = 10.0
_MAX_PENDING_OUT = 1 << 20

_PROG = "netvantage.lab.delay"  # run as python -m netvantage.lab.delay

TimerKind = Literal["timerfd", "poll"]


# -- namespaces and TUN devices -----------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check_call(result: int, what: str) -> None:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(libc: ctypes.CDLL, fd: int) -> None:
    # Python 3.11 has no os.setns.  Only this (the only) thread changes namespace.
    _check_call(libc.setns(fd, _CLONE_NEWNET), "setns")


@contextlib.contextmanager
def _in_netns(libc: ctypes.CDLL, netns: str) -> Iterator[None]:
    """Run the body with this thread in namespace ``netns``; always come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"netns {netns} does not exist "
                                        f"(no /run/netns/{netns})") from None
        try:
            _setns(libc, target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Staying in the wrong namespace would make every later device land
            # there: if the way back fails, nothing else may happen.
            _setns(libc, home)
    finally:
        os.close(home)


def _open_tun(libc: ctypes.CDLL, netns: str, dev: str, mtu: int) -> int:
    """Create non-persistent TUN ``dev`` in ``netns``; return its (non-blocking) fd."""
    with _in_netns(libc, netns):
        # A TUN device belongs to the namespace of the thread that opened
        # /dev/net/tun, so both the open and TUNSETIFF happen in there.
        try:
            socket.if_nametoindex(dev)
        except OSError:
            pass
        else:
            raise OSError(errno.EEXIST, f"a device named {dev} already exists in netns {netns}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, _TUNSETIFF, _IFREQ_FLAGS.pack(dev.encode(), _IFF_TUN | _IFF_NO_PI))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                fcntl.ioctl(s.fileno(), _SIOCSIFMTU, _IFREQ_MTU.pack(dev.encode(), mtu))
        except BaseException:
            os.close(fd)
            raise
        return fd


# -- the forwarder --------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Direction:
    """One direction of one link: the counters and the FIFO clamp."""

    link: _Link
    label: str  # "a_to_b" or "b_to_a"
    in_fd: int
    out_fd: int
    last_due: int = 0
    queued: int = 0
    queued_bytes: int = 0
    forwarded: int = 0
    dropped: int = 0
    errors: int = 0


@dataclass(slots=True, eq=False)
class _Link:
    spec: LinkSpec
    delay_ns: int
    jitter_ns: int
    directions: list[_Direction] = field(default_factory=list)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.directions:
            for what in ("forwarded", "queued", "dropped", "errors"):
                out[f"{d.label}_{what}"] = int(getattr(d, what))
        return out


def _ns(ms_value: float) -> int:
    return round(ms_value * 1_000_000)


class _TimerFd:
    """A CLOCK_MONOTONIC timerfd armed with absolute due times (ns)."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._libc = libc
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        _check_call(fd, "timerfd_create")
        self.fd: int = fd
        self.armed: int | None = None

    def arm(self, due_ns: int) -> None:
        if due_ns == self.armed:
            return
        # it_value of zero would disarm: an overdue time is clamped to 1 ns,
        # which the kernel treats as already expired.
        due_ns = max(due_ns, 1)
        spec = _ITIMERSPEC.pack(0, 0, due_ns // 1_000_000_000, due_ns % 1_000_000_000)
        _check_call(self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, spec, None),
                    "timerfd_settime")
        self.armed = due_ns

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        self.armed = None

    def close(self) -> None:
        os.close(self.fd)


class _Client:
    __slots__ = ("closing", "deadline", "inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.closing = False
        self.deadline = time.monotonic() + _CLIENT_IDLE_S


_Callback = Callable[[int], None]
_Entry = tuple[int, int, _Direction, bytes]


class _Forwarder:
    """The single-threaded forwarding loop over all links (internal; see :func:`main`)."""

    def __init__(self, links: list[_Link], listener: socket.socket, timer: TimerKind,
                 libc: ctypes.CDLL, spin_us: int | None = None) -> None:
        if spin_us is None:
            spin_us = DEFAULT_SPIN_US[timer]
        if timer == "poll":
            spin_us = max(spin_us, 1000)
        self.spin_ns = spin_us * 1000
        self.links = {link.spec.name: link for link in links}
        self.listener = listener
        self.sel = selectors.EpollSelector()
        self.heap: list[_Entry] = []
        self.seq = 0
        self.rng = random.Random()
        self.stop = False
        self.clients: dict[int, _Client] = {}
        self.timer = _TimerFd(libc) if timer == "timerfd" else None
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        for link in links:
            for d in link.directions:
                self.sel.register(d.in_fd, selectors.EVENT_READ, self._reader(d))
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, self._on_accept)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self.timer is not None:
            self.sel.register(self.timer.fd, selectors.EVENT_READ, self._on_timer)

    # -- lifecycle ------------------------------------------------------------

    def install_signals(self) -> None:
        def on_signal(_signum: int, _frame: object) -> None:
            self.stop = True

        # The handler only sets a flag; the wakeup fd makes epoll_wait return
        # so that the loop sees it (PEP 475 would otherwise just retry).
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        for client in list(self.clients.values()):
            self._drop_client(client)
        self.sel.close()
        if self.timer is not None:
            self.timer.close()
        self._wake_r.close()
        self._wake_w.close()

    def run(self) -> None:
        sel, heap, timer, spin = self.sel, self.heap, self.timer, self.spin_ns
        while not self.stop:
            timeout = self._client_timeout()
            if heap:
                wait = heap[0][0] - time.monotonic_ns()
                if wait <= spin:
                    # The last stretch before a due time is busy-polled: inputs
                    # stay served, and no wake-up latency lands on the packet.
                    timeout = 0.0
                elif timer is not None:
                    timer.arm(heap[0][0] - spin)
                else:
                    # epoll counts whole milliseconds (Python rounds up): wake
                    # up to a millisecond early, spin the rest.
                    whole_ms = (wait - spin) // 1_000_000 / 1000
                    timeout = whole_ms if timeout is None else min(timeout, whole_ms)
            for key, mask in sel.select(timeout):
                key.data(mask)
            self._flush()
            if self.clients:
                self._expire_clients()

    # -- packets --------------------------------------------------------------

    def _reader(self, d: _Direction) -> _Callback:
        def on_readable(_mask: int) -> None:
            self._read(d)
        return on_readable

    def _read(self, d: _Direction) -> None:
        link, heap, fd = d.link, self.heap, d.in_fd
        for _ in range(_READ_BATCH):
            try:
                packet = os.read(fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                d.errors += 1  # e.g. EIO while the device goes down; try again later
                return
            now = time.monotonic_ns()
            if not packet:
                continue
            if d.queued >= MAX_QUEUE or d.queued_bytes >= MAX_QUEUE_BYTES:
                d.dropped += 1
                continue
            delay = link.delay_ns
            if link.jitter_ns:
                delay = max(0, delay + self.rng.randint(-link.jitter_ns, link.jitter_ns))
            due = now + delay
            if due < d.last_due:
                due = d.last_due  # FIFO: never overtake the packet before
            d.last_due = due
            self.seq += 1
            d.queued += 1
            d.queued_bytes += len(packet)
            heapq.heappush(heap, (due, self.seq, d, packet))

    def _flush(self) -> None:
        heap = self.heap
        if not heap:
            return
        now = time.monotonic_ns()
        while heap:
            if heap[0][0] > now:
                # Writes take time: look at the clock once more before giving up.
                now = time.monotonic_ns()
                if heap[0][0] > now:
                    return
            _due, _seq, d, packet = heapq.heappop(heap)
            d.queued -= 1
            d.queued_bytes -= len(packet)
            try:
                os.write(d.out_fd, packet)
            except OSError:
                d.errors += 1  # far device down or the packet refused: like a wire, drop
            else:
                d.forwarded += 1

    def _on_timer(self, _mask: int) -> None:
        assert self.timer is not None
        self.timer.clear()

    def _on_wake(self, _mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(512):
                pass

    # -- control socket -------------------------------------------------------

    def _client_timeout(self) -> float | None:
        if not self.clients:
            return None
        first = min(c.deadline for c in self.clients.values())
        return max(0.0, first - time.monotonic())

    def _expire_clients(self) -> None:
        now = time.monotonic()
        for client in [c for c in self.clients.values() if c.deadline <= now]:
            self._drop_client(client)

    def _on_accept(self, _mask: int) -> None:
        for _ in range(_MAX_CLIENTS):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.clients) >= _MAX_CLIENTS:
                sock.close()  # busy: the client sees the connection close, the loop goes on
                continue
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[sock.fileno()] = client
            self.sel.register(sock, selectors.EVENT_READ, self._client_cb(client))

    def _client_cb(self, client: _Client) -> _Callback:
        def on_event(mask: int) -> None:
            if mask & selectors.EVENT_WRITE:
                self._send(client)
            if mask & selectors.EVENT_READ and client.sock.fileno() in self.clients:
                self._receive(client)
        return on_event

    def _drop_client(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self.clients.pop(fd, None) is not None:
            self.sel.unregister(client.sock)
        client.sock.close()

    def _receive(self, client: _Client) -> None:
        try:
            data = client.sock.recv(_MAX_LINE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_client(client)
            return
        if not data:
            client.closing = True
        if client.closing and not data and not client.outbuf:
            self._drop_client(client)
            return
        client.deadline = time.monotonic() + _CLIENT_IDLE_S
        client.inbuf += data
        while b"\n" in client.inbuf and not client.closing:
            line, client.inbuf = client.inbuf.split(b"\n", 1)
            self._reply(client, self.handle(line))
        if len(client.inbuf) > _MAX_LINE:
            self._reply(client, {"ok": False, "error": f"line longer than {_MAX_LINE} bytes"})
            client.inbuf = b""
            client.closing = True
        if client.closing:
            self._stop_reading(client)

    def _stop_reading(self, client: _Client) -> None:
        if client.sock.fileno() not in self.clients:
            return
        if client.outbuf:
            self.sel.modify(client.sock, selectors.EVENT_WRITE, self._client_cb(client))
        else:
            self._drop_client(client)

    def _reply(self, client: _Client, reply: dict[str, Any]) -> None:
        client.outbuf += encode_line(reply)
        if len(client.outbuf) > _MAX_PENDING_OUT:
            self._drop_client(client)  # it does not read its answers
            return
        self._send(client)

    def _send(self, client: _Client) -> None:
        if client.sock.fileno() not in self.clients:
            return
        try:
            sent = client.sock.send(client.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop_client(client)
            return
        client.outbuf = client.outbuf[sent:]
        if client.outbuf:
            events = selectors.EVENT_WRITE | (0 if client.closing else selectors.EVENT_READ)
            self.sel.modify(client.sock, events, self._client_cb(client))
        elif client.closing:
            self._drop_client(client)
        else:
            self.sel.modify(client.sock, selectors.EVENT_READ, self._client_cb(client))

    def handle(self, line: bytes) -> dict[str, Any]:
        """Answer one control request line (already without its newline)."""
        try:
            request = parse_request(line, self.links)
        except ControlError as exc:
            return {"ok": False, "error": str(exc)}
        if isinstance(request, StatsRequest):
            return {"ok": True, "stats": {n: link.stats() for n, link in self.links.items()}}
        link = self.links[request.link]
        if request.delay_ms is not None:
            link.delay_ns = _ns(request.delay_ms)
        if request.jitter_ms is not None:
            link.jitter_ns = _ns(request.jitter_ms)
        return {"ok": True}


# -- the process --------------------------------------------------------------


def _bind_control(path: Path) -> tuple[socket.socket, int]:
    """Listen on ``path`` (mode 0600); replace only a *stale* socket left there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()  # nobody listens: left behind by a killed process
            else:
                raise OSError(errno.EADDRINUSE, f"{path} is in use by another process")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never a moment with a wider mode than 0600
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock, os.stat(path).st_ino


def _schedule(priority: int) -> str:
    """Ask for SCHED_FIFO at *priority* (0: leave scheduling alone); say what we got."""
    if priority:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as exc:
            return f"normal (SCHED_FIFO {priority} refused: {_reason(exc)})"
    policy = os.sched_getscheduler(0)
    if policy == os.SCHED_FIFO:
        return f"SCHED_FIFO {os.sched_getparam(0).sched_priority}"
    return "normal"


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr, flush=True)
    return 1


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_PROG}",
        description="Forward packets between TUN pairs in network namespaces with delay/jitter.",
    )
    parser.add_argument("--spec", type=Path, required=True, help="JSON spec (see write_spec)")
    parser.add_argument("--control", type=Path, required=True, help="UNIX control socket path")
    parser.add_argument("--timer", choices=("timerfd", "poll"), default="timerfd",
                        help="how to wake for due packets (default: timerfd)")
    parser.add_argument("--spin-us", type=int, default=None, metavar="US",
                        help="busy-poll this long before a due time (default: "
                             + ", ".join(f"{v} with {k}" for k, v in DEFAULT_SPIN_US.items())
                             + ")")
    parser.add_argument("--rt-priority", type=int, default=DEFAULT_RT_PRIORITY, metavar="N",
                        help="run as SCHED_FIFO at this priority, 1..99; 0 for normal "
                             f"scheduling (default: {DEFAULT_RT_PRIORITY})")
    args = parser.parse_args(argv)
    if args.spin_us is not None and not 0 <= args.spin_us <= 100_000:
        parser.error("--spin-us must be 0..100000")
    if not 0 <= args.rt_priority <= 99:
        parser.error("--rt-priority must be 0..99")

    try:
        specs = read_spec(args.spec)
    except SpecError as exc:
        return _fail(f"bad spec: {exc}")

    # Signals first: a SIGTERM during start-up must still lead to a clean exit.
    stopping = False

    def early_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)

    libc = _libc()
    # Finer timer slack: every wake-up (epoll timeouts, hrtimers) lands closer to
    # its time.  Best effort; the default is 50 µs.
    libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)

    fds: list[int] = []
    links: list[_Link] = []
    listener: socket.socket | None = None
    inode = 0
    forwarder: _Forwarder | None = None
    try:
        for spec in specs:
            pair: list[int] = []
            for side, netns, dev in (("a", spec.a_netns, spec.a_dev),
                                     ("b", spec.b_netns, spec.b_dev)):
                try:
                    fd = _open_tun(libc, netns, dev, spec.mtu)
                except OSError as exc:
                    return _fail(f"link {spec.name}: cannot create TUN device {dev} "
                                 f"in netns {netns} (side {side}): {_reason(exc)}")
                fds.append(fd)
                pair.append(fd)
            link = _Link(spec, _ns(spec.delay_ms), _ns(spec.jitter_ms))
            link.directions = [_Direction(link, "a_to_b", pair[0], pair[1]),
                               _Direction(link, "b_to_a", pair[1], pair[0])]
            links.append(link)
        try:
            listener, inode = _bind_control(args.control)
        except OSError as exc:
            return _fail(f"control socket {args.control}: {_reason(exc)}")
        try:
            forwarder = _Forwarder(links, listener, args.timer, libc, args.spin_us)
        except OSError as exc:
            return _fail(f"cannot set up the forwarding loop: {_reason(exc)}")
        forwarder.install_signals()
        if stopping:
            return 0
        gc.freeze()  # start-up objects are permanent: keep them out of collections
        print(f"scheduling: {_schedule(args.rt_priority)}", file=sys.stderr, flush=True)
        with contextlib.suppress(BrokenPipeError):
            print("ready", flush=True)
        forwarder.run()
        return 0
    finally:
        if forwarder is not None:
            forwarder.close()
        if listener is not None:
            listener.close()
            with contextlib.suppress(OSError):
                if os.stat(args.control).st_ino == inode:
                    os.unlink(args.control)
        # Non-persistent TUN devices disappear with their last fd.
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


