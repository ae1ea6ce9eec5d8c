"""A tiny authoritative-looking DNS server on loopback that serves crafted answers (tests only).

``FakeDns(records)`` answers over UDP (and TCP) from a dict ``{(name, TYPE): [rdata text]}``
built with dnspython's message API.  Special values of a name's entry make it misbehave:
``SILENT`` (never answers), ``SERVFAIL``, ``REFUSED``, ``GARBAGE`` (random bytes),
``TRUNCATE`` (TC bit over UDP; the full answer over TCP).
"""

from __future__ import annotations

import errno
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Mapping, Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

SILENT = "SILENT"
SERVFAIL = "SERVFAIL"
REFUSED = "REFUSED"
GARBAGE = "GARBAGE"
TRUNCATE = "TRUNCATE"
Records = Mapping[tuple[str, str], Sequence[str] | str]


class FakeDns:
    def __init__(self, records: Records) -> None:
        self.records = {(n.lower().rstrip("."), t.upper()): v for (n, t), v in records.items()}
        self.names = {n for n, _ in self.records}
        self.queries: list[tuple[str, str]] = []
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = outer.answer(data, tcp=False)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (size,) = struct.unpack("!H", head)
                data = b""
                while len(data) < size:
                    chunk = self.request.recv(size - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = outer.answer(data, tcp=True)
                if reply is not None:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        # DNS answers on one port over UDP and TCP: the kernel picks a free UDP port, and
        # the same number over TCP may be taken (another test's connection had it as its
        # own ephemeral port: "address already in use" once in a full run), so a pair of
        # free ports is looked for, not assumed.
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        for attempt in range(50):
            self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            self.port = self.udp.server_address[1]
            try:
                self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
                break
            except OSError as exc:
                self.udp.server_close()
                if exc.errno != errno.EADDRINUSE or attempt == 49:
                    raise
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True)
                        for s in (self.udp, self.tcp)]
        for t in self.threads:
            t.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for s in (self.udp, self.tcp):
            s.shutdown()
            s.server_close()

    def __enter__(self) -> FakeDns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _special(self, name: str) -> str | None:
        for key in ((name, "*"),):
            value = self.records.get(key)
            if isinstance(value, str):
                return value
        return None

    def answer(self, data: bytes, *, tcp: bool) -> bytes | None:
        query = dns.message.from_wire(data)
        q = query.question[0]
        name = q.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(q.rdtype)
        self.queries.append((name, rdtype))
        special = self._special(name) or (self.records.get((name, rdtype))
                                          if isinstance(self.records.get((name, rdtype)), str)
                                          else None)
        if special == SILENT:
            return None
        if special == GARBAGE:
            return data[:2] + os.urandom(40)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if special == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if special == REFUSED:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        if special == TRUNCATE and not tcp:
            response.flags |= dns.flags.TC
            return response.to_wire()
        current = name
        for _ in range(12):
            values = self.records.get((current, rdtype))
            if values is not None and not isinstance(values, str):
                response.answer.append(dns.rrset.from_text_list(
                    current + ".", 60, "IN", rdtype, list(values)))
                break
            cname = self.records.get((current, "CNAME"))
            if cname is None or isinstance(cname, str):
                break
            response.answer.append(dns.rrset.from_text_list(current + ".", 60, "IN", "CNAME",
                                                            list(cname)))
            current = str(cname[0]).rstrip(".").lower()
            if any(r.name == dns.name.from_text(current) for r in response.answer):
                break
        if not response.answer and name not in self.names and not any(
                n.endswith("." + name) for n in self.names):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
