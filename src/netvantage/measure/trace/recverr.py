"""The unprivileged mode (``method="recverr"``): one probe at a time on an ordinary
socket, ICMP errors read from the socket's error queue, like ``tracepath``."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from typing import Any

from ...errors import PrivilegeError
from ...results import TraceProbe
from ..kernel import (
    IP_RECVERR,
    IPV6_RECVERR,
    MSG_ERRQUEUE,
    SO_TIMESTAMPNS,
    kernel_stamp,
    queued_error,
)
from ..packets import icmp_echo
from .state import UNREACHABLE, TraceRun, probe_rtt_ms

__all__ = ["run_recverr"]


async def run_recverr(t: TraceRun, deadline: float) -> None:
    """One probe at a time on an ordinary socket; errors from the error queue (tracepath)."""
    o = t.opts
    loop = asyncio.get_running_loop()
    family = socket.AF_INET if t.version == 4 else socket.AF_INET6
    if o.protocol == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    elif o.protocol == "icmp":
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM,
                                 socket.IPPROTO_ICMP if t.version == 4 else socket.IPPROTO_ICMPV6)
        except PermissionError:
            raise PrivilegeError(
                "unprivileged ICMP traceroute needs net.ipv4.ping_group_range to include "
                "your group; --protocol udp --method recverr needs nothing") from None
    else:
        raise PrivilegeError("TCP traceroute needs raw sockets (root or CAP_NET_RAW)")
    sock.setblocking(False)
    level, recverr = ((socket.IPPROTO_IP, IP_RECVERR) if t.version == 4
                      else (socket.IPPROTO_IPV6, IPV6_RECVERR))
    sock.setsockopt(level, recverr, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    port = o.dport or 0
    sock.connect((t.dst, port))
    ttl_opt = ((socket.IPPROTO_IP, socket.IP_TTL) if t.version == 4
               else (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
    got: asyncio.Future[tuple[Any, ...]] | None = None
    current: dict[str, Any] = {}

    def readable() -> None:
        nonlocal got
        while True:
            try:
                data, anc, _fl, _addr = sock.recvmsg(2048, 512, MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            rx_mono = time.perf_counter_ns()
            error = queued_error(anc, t.version)
            if error is None:
                continue
            # The error quotes our datagram: the probe id is in it where the
            # router quoted enough (ICMP: the sequence; UDP: our payload).
            if o.protocol == "icmp" and len(data) >= 8:
                seq = struct.unpack_from("!H", data, 6)[0]
            elif o.protocol == "udp" and len(data) >= 2:
                seq = struct.unpack_from("!H", data, 0)[0]
            else:
                seq = current.get("seq")
            if got is not None and not got.done() and seq == current.get("seq"):
                got.set_result((error.offender, error.icmp_type, error.icmp_code,
                                kernel_stamp(anc), rx_mono))
        while True:
            try:
                data, anc, _fl, _addr = sock.recvmsg(2048, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # the pending error was reported through the error queue
            rx_mono = time.perf_counter_ns()
            if o.protocol == "icmp" and len(data) >= 8 and data[0] in (0, 129):
                seq = struct.unpack_from("!H", data, 6)[0]
                if got is not None and not got.done() and seq == current.get("seq"):
                    got.set_result((t.dst, data[0], 0, kernel_stamp(anc), rx_mono))

    loop.add_reader(sock.fileno(), readable)
    try:
        for cycle in range(o.cycles):
            begin = loop.time()
            silent_run = 0
            for ttl in range(o.first_ttl, o.max_ttl + 1):
                answered_ttl = False
                for index in range(o.probes_per_hop):
                    if loop.time() >= deadline:
                        t.stop_reason = "deadline"
                        return
                    pid, probe = t.new_probe(cycle, ttl, index)
                    current["seq"] = pid
                    sock.setsockopt(*ttl_opt, ttl)
                    payload = (icmp_echo(t.version, 0, pid, o.payload_bytes, t.src, t.dst)
                               if o.protocol == "icmp"
                               else struct.pack("!H", pid) + bytes(o.payload_bytes))
                    got = loop.create_future()
                    probe.tx_real, probe.tx_mono = time.time_ns(), time.perf_counter_ns()
                    try:
                        sock.send(payload)
                    except OSError as exc:
                        probe.result = TraceProbe(cycle=cycle)
                        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                            t.stop_reason = "unreachable"
                            return
                        continue
                    probe.sent = True
                    try:
                        res = await asyncio.wait_for(
                            got, min(o.probe_timeout_s, max(0.001, deadline - loop.time())))
                    except TimeoutError:
                        probe.result = TraceProbe(cycle=cycle)
                        continue
                    responder, itype, icode, rx_real, rx_mono = res
                    probe.result = TraceProbe(
                        cycle=cycle, address=responder, icmp_type=itype, icmp_code=icode,
                        rtt_ms=probe_rtt_ms(probe.tx_real, probe.tx_mono, rx_real, rx_mono))
                    answered_ttl = True
                    if responder == t.dst:
                        t.dest_ttl.setdefault(cycle, ttl)
                    elif itype == UNREACHABLE[t.version]:
                        t.unreachable_ttl = ttl
                t.highest_ttl = max(t.highest_ttl, ttl)
                if cycle in t.dest_ttl:
                    break
                if t.unreachable_ttl is not None:
                    t.stop_reason = "unreachable"
                    break
                silent_run = 0 if answered_ttl else silent_run + 1
                if silent_run >= o.gap_limit:
                    t.stop_reason = "gap"
                    break
            rest = begin + o.cycle_interval_s - loop.time()
            if cycle + 1 < o.cycles and rest > 0:
                await asyncio.sleep(rest)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
