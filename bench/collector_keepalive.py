"""Keep-alive latency of the collector: many requests on one connection.

Starts the collector in this process (:class:`BackgroundCollector`, loopback,
a fresh store in a temporary directory) and sends ``--requests`` health
checks one after another on one keep-alive ``http.client`` connection,
``--rounds`` times.  Prints the median and the worst per-request time.

With ``--without-nodelay`` the server's side of the connection has
TCP_NODELAY turned off after the first answer, as it was before the listening
socket was made with IPPROTO_TCP: uvicorn writes a response's head and body
in two sends, Nagle's algorithm holds the second until the client ACKs the
first, and the client delays that ACK (about 40 ms on Linux).  The two runs
side by side show the stall the option removes.

    .venv/bin/python bench/collector_keepalive.py [--requests 20] [--rounds 5]
        [--without-nodelay]

Not a test: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import tempfile
import time
from pathlib import Path

from netvantage.collector.serve import BackgroundCollector
from netvantage.collector.store import Store


def one_round(port: int, requests: int, collector: BackgroundCollector,
              nodelay: bool) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    took: list[float] = []
    try:
        for i in range(requests):
            t0 = time.perf_counter()
            conn.request("GET", "/v1/health")
            response = conn.getresponse()
            response.read()
            took.append(time.perf_counter() - t0)
            if i == 0 and not nodelay:
                for sock in collector.connection_sockets():
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    finally:
        conn.close()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20, help="requests per connection")
    ap.add_argument("--rounds", type=int, default=5, help="connections, one after another")
    ap.add_argument("--without-nodelay", action="store_true",
                    help="turn TCP_NODELAY off on the server's side (the old behaviour)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "c.db", synchronous="normal")
        try:
            with BackgroundCollector(store) as collector:
                after_first: list[float] = []
                for _ in range(args.rounds):
                    took = one_round(collector.port, args.requests, collector,
                                     not args.without_nodelay)
                    after_first += took[1:]
        finally:
            store.close()
    ms = sorted(t * 1000 for t in after_first)
    label = "TCP_NODELAY off" if args.without_nodelay else "TCP_NODELAY on"
    print(f"{label}: {len(ms)} keep-alive requests after each connection's first: "
          f"median {statistics.median(ms):.3f} ms, p90 {ms[int(len(ms) * 0.9) - 1]:.3f} ms, "
          f"max {ms[-1]:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
