"""The lab's MTA-STS policy host: one HTTPS file, ``/.well-known/mta-sts.txt`` (RFC 8461 3.3).

Run by :mod:`netvantage.lab.dns` inside the hub router's namespace as
``python -m netvantage.lab.mtasts --bind ADDR --port 443 --cert CHAIN --key KEY --policy FILE``.
The standard library's HTTP server behind an ``ssl`` context is enough for one static
file; every other path is 404.  Prints ``ready`` once it listens.
"""

from __future__ import annotations

import argparse
import http.server
import ssl
import sys
from pathlib import Path

__all__ = ["main"]

POLICY_PATH = "/.well-known/mta-sts.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netvantage.lab.mtasts")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--policy", type=Path, required=True)
    args = parser.parse_args(argv)
    policy = args.policy.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API names it
            if self.path != POLICY_PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(policy)))
            self.end_headers()
            self.wfile.write(policy)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("ready", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
