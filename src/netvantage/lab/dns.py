"""The lab's DNS: an authoritative server, a blocklist server and a resolver per client region.

Real servers from Debian packages, each in a lab namespace, none reachable from outside:

* **Knot DNS** (``knotd``), authoritative for the lab's zones: ``lab.`` (the data
  centres' mail hosts ``mail.DC.lab``), the mail domain ``mail.example.`` (MX, SPF,
  DKIM keys, DMARC, TLS-RPT) and the reverse zones of the node addresses
  (``255.10.10.in-addr.arpa.`` and its IPv6 nibble twin);
* **rbldnsd**, serving blocklist zones under the names of the well-known public
  ones (:data:`netvantage.measure.mailready.DEFAULT_ZONES`), so that the check's
  defaults work in the lab unchanged — the lab has no route out, so no public
  blocklist is ever asked;
* an **MTA-STS policy host** (:mod:`netvantage.lab.mtasts`, HTTPS with a certificate of
  the lab CA) at ``mta-sts.mail.example`` on the hub's address, port 443, serving an
  ``enforce`` policy naming every data centre's mail host (when the lab has a CA);
* **Unbound**, one per client region, in the region's own namespace on 127.0.0.1
  and the region's node address: stub zones point it at Knot and rbldnsd.
  ``/etc/netns/PREFIX-NODE/resolv.conf`` names it, so anything started with
  ``ip netns exec`` in that region (``lab exec``, the campaign's agents) resolves
  through it — the file convention of ``ip netns``.

Knot and rbldnsd run in the namespace of the router with the most links (ties by
name): a hub every region reaches.  Knot listens on its node address, port 53;
rbldnsd on port 5300.  The zone ``unanswered.bl.lab`` is delegated to port 5301 of
the same address, where an nftables rule drops every packet: a blocklist that
never answers, for tests of "a timeout is unknown, never clean".

Planted readiness problems come from the topology's ``mail_plant`` of each data
centre: ``listed`` puts its address in ``zen.spamhaus.org`` (127.0.0.2, with a
TXT reason); ``ptr`` gives its address a generic PTR
(``10-10-255-16.dyn.jnb-hosting.lab``) without an A record; ``dkim`` leaves the key
of its selector unpublished.  Data centre number *i* (1-based, file order) signs
with selector ``s<i>`` (:func:`selector`).

Processes are recorded (PID and kernel start time) in ``dns/pids.json`` and
stopped by those records only; ``lab down`` also removes the resolv.conf files.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetvantageError
from .mail import listening
from .topology import Node, Topology

__all__ = ["DOMAIN", "NETNS_ETC", "LabDnsError", "dns_hub", "missing_dns_binaries",
           "selector", "start_dns", "stop_dns"]

DOMAIN = "mail.example"
NETNS_ETC = Path("/etc/netns")
BL_PORT = 5300
DEAD_PORT = 5301
UNANSWERED_ZONE = "unanswered.bl.lab"
PIDS = "pids.json"
# rbldnsd refuses to run as root; Debian's package creates this account.
_RBLDNS_USER = "rbldns"
_PACKAGES = {"knotd": "knot", "unbound": "unbound", "rbldnsd": "rbldnsd"}
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# Reverse zones Unbound answers itself by default (RFC 6303 and RFC 1918 / 4193 space).
_PRIVATE_REVERSE = ("10.in-addr.arpa", "168.192.in-addr.arpa",
                    *(f"{n}.172.in-addr.arpa" for n in range(16, 32)), "d.f.ip6.arpa")


class LabDnsError(NetvantageError):
    """The lab's DNS servers could not be configured, started or stopped."""


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        if os.access(Path(d) / name, os.X_OK):
            return str(Path(d) / name)
    return None


def missing_dns_binaries() -> list[str]:
    """Debian packages to install before the lab's DNS can run (empty: none)."""
    return [pkg for name, pkg in _PACKAGES.items() if _binary(name) is None]


def selector(topo: Topology, dc: str) -> str:
    """The DKIM selector data centre ``dc`` signs with: ``s1``, ``s2``, … in file order."""
    names = [n.name for n in topo.of_role("dc")]
    return f"s{names.index(dc) + 1}"


def dns_hub(topo: Topology) -> Node:
    """The router whose namespace runs Knot and rbldnsd: most links, ties by name."""
    routers = topo.of_role("router") or list(topo.nodes.values())
    return min(routers, key=lambda n: (-len(topo.links_of(n.name)), n.name))


def mail_host(dc: Node) -> str:
    return f"mail.{dc.name}.lab"


def generic_ptr(dc: Node) -> str:
    org = (dc.org or dc.name).lower().replace(" ", "-")
    return f"{dc.v4.replace('.', '-')}.dyn.{org}.lab"


# --------------------------------------------------------------------------- zone data


def _dkim_key() -> str:
    """A fresh RSA 2048 public key, base64 SubjectPublicKeyInfo (the private key is dropped:
    the lab never signs, it only publishes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _txt(text: str) -> str:
    chunks = [text[i:i + 200] for i in range(0, len(text), 200)] or [""]
    return " ".join(f'"{c}"' for c in chunks)


def _soa(origin: str, hub: Node) -> list[str]:
    return [f"$ORIGIN {origin}", "$TTL 60",
            "@ SOA ns.lab. hostmaster.lab. 1 3600 600 86400 5",
            "@ NS ns.lab."]


def _reverse_zones(topo: Topology) -> tuple[str, str]:
    v4 = ipaddress.ip_network(f"{topo.ipv4.network_address + (255 << 8)}/24")
    v6 = ipaddress.ip_network(f"{topo.ipv6.network_address + (0xFF << 80)}/48")
    rev4 = ".".join(str(v4.network_address).split(".")[:3][::-1]) + ".in-addr.arpa"
    nibbles = v6.network_address.exploded.replace(":", "")[:12]
    rev6 = ".".join(nibbles[::-1]) + ".ip6.arpa"
    return rev4, rev6


def zone_texts(topo: Topology, hub: Node, mta_sts: bool = False) -> dict[str, str]:
    """Zone name → zone file text, for Knot (``mta_sts``: publish the policy's TXT and host)."""
    dcs = topo.of_role("dc")
    lab = [*_soa("lab.", hub), f"ns A {hub.v4}", f"ns AAAA {hub.v6}"]
    for dc in dcs:
        lab += [f"mail.{dc.name} A {dc.v4}", f"mail.{dc.name} AAAA {dc.v6}"]
    mail = [*_soa(f"{DOMAIN}.", hub)]
    mail += [f"@ MX {10 * (i + 1)} {mail_host(dc)}." for i, dc in enumerate(dcs)]
    mail += [f"@ TXT {_txt('v=spf1 mx -all')}",
             f"_dmarc TXT {_txt(f'v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}')}",
             f"_smtp._tls TXT {_txt(f'v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}')}"]
    if mta_sts:
        mail += [f"_mta-sts TXT {_txt('v=STSv1; id=20261205T000000')}",
                 f"mta-sts A {hub.v4}", f"mta-sts AAAA {hub.v6}"]
    key = _dkim_key()
    for dc in dcs:
        if dc.mail_plant != "dkim":
            mail.append(f"{selector(topo, dc.name)}._domainkey TXT "
                        f"{_txt(f'v=DKIM1; k=rsa; p={key}')}")
    rev4, rev6 = _reverse_zones(topo)
    r4 = _soa(f"{rev4}.", hub)
    r6 = _soa(f"{rev6}.", hub)
    for dc in dcs:
        name = generic_ptr(dc) if dc.mail_plant == "ptr" else mail_host(dc)
        last4 = dc.v4.rsplit(".", 1)[1]
        r4.append(f"{last4} PTR {name}.")
        full = ipaddress.ip_address(dc.v6).reverse_pointer
        r6.append(f"{full}. PTR {name}.")
    return {"lab": "\n".join(lab) + "\n", DOMAIN: "\n".join(mail) + "\n",
            rev4: "\n".join(r4) + "\n", rev6: "\n".join(r6) + "\n"}


def _blocklists(topo: Topology, root: Path) -> list[str]:
    """rbldnsd zone specs; the data files written under ``root``."""
    from ..measure.mailready import DEFAULT_ZONES

    listed = [dc for dc in topo.of_role("dc") if dc.mail_plant == "listed"]
    big = root / "listed.ip4set"
    big.write_text(":127.0.0.2:$ listed in the lab's copy of this blocklist (planted by "
                   "netvantage: the new address was used by a spammer before)\n"
                   + "".join(f"{dc.v4}\n" for dc in listed))
    # ip6trie, not ip6tset: the "trivial" IPv6 set holds /64s only (rbldnsd(8)).
    big6 = root / "listed.ip6trie"
    big6.write_text(":127.0.0.2:listed in the lab's copy of this blocklist (planted)\n"
                    + "".join(f"{dc.v6}/128\n" for dc in listed))
    empty = root / "empty.ip4set"
    empty.write_text("")
    empty6 = root / "empty.ip6trie"
    empty6.write_text("")
    none = root / "empty.dnset"
    none.write_text("")
    specs = []
    for i, zone in enumerate(DEFAULT_ZONES):
        if zone.kind == "domain":
            specs.append(f"{zone.name}:dnset:{none.name}")
        elif i == 0:  # the first IP zone (zen.spamhaus.org) carries the planted listing
            specs += [f"{zone.name}:ip4set:{big.name}", f"{zone.name}:ip6trie:{big6.name}"]
        else:
            specs += [f"{zone.name}:ip4set:{empty.name}", f"{zone.name}:ip6trie:{empty6.name}"]
    return specs


# --------------------------------------------------------------------------- configuration


def _knot_conf(root: Path, hub: Node, zones: list[str]) -> str:
    return f"""\
# Written by netvantage for the lab; rewritten on every start.
server:
    rundir: "{root}"
    pidfile: "{root}/knot.pid"
    listen: [ "{hub.v4}@53", "{hub.v6}@53" ]
log:
  - target: "{root}/knot.log"
    any: info
database:
    storage: "{root}/db"
control:
    listen: "{root}/knot.sock"
template:
  - id: default
    storage: "{root}/zones"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
""" + "".join(f"  - domain: {z}.\n" for z in zones)


def _unbound_conf(root: Path, topo: Topology, client: Node, hub: Node) -> str:
    from ..measure.mailready import DEFAULT_ZONES

    rev4, rev6 = _reverse_zones(topo)
    stubs = [("lab", f"{hub.v4}@53"), (DOMAIN, f"{hub.v4}@53"), (rev4, f"{hub.v4}@53"),
             (rev6, f"{hub.v4}@53"), (UNANSWERED_ZONE, f"{hub.v4}@{DEAD_PORT}")]
    stubs += [(z.name, f"{hub.v4}@{BL_PORT}") for z in DEFAULT_ZONES]
    # Unbound serves RFC 1918 / ULA reverse zones as empty local zones by default
    # (RFC 6303); the lab's own reverse zones must go to Knot instead.
    lines = [
        "# Written by netvantage for the lab; rewritten on every start.",
        "server:",
        "  verbosity: 1",
        "  interface: 127.0.0.1",
        f"  interface: {client.v4}",
        "  port: 53",
        "  do-ip6: no",
        "  access-control: 127.0.0.0/8 allow",
        f"  access-control: {topo.ipv4} allow",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{root}"',
        f'  pidfile: "{root}/unbound-{client.name}.pid"',
        "  use-syslog: no",
        f'  logfile: "{root}/unbound-{client.name}.log"',
        '  module-config: "iterator"',
        "  qname-minimisation: no",
        "  do-not-query-localhost: no",
        "  num-threads: 1",
        "  so-reuseport: no",
        "  msg-cache-size: 1m",
        "  rrset-cache-size: 1m",
        "  cache-max-negative-ttl: 5",
        "  infra-host-ttl: 5",
        "  prefetch: no",
        *(f'  local-zone: "{zone}." nodefault' for zone in _PRIVATE_REVERSE),
        "remote-control:",
        "  control-enable: no",
    ]
    for name, addr in stubs:
        lines += ["stub-zone:", f'  name: "{name}."', f"  stub-addr: {addr}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class _Proc:
    role: str
    pid: int
    start: int


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(p: _Proc) -> bool:
    return _start_ticks(p.pid) == p.start


def _record(root: Path, procs: list[_Proc]) -> None:
    tmp = root / (PIDS + ".tmp")
    tmp.write_text(json.dumps([{"role": p.role, "pid": p.pid, "start": p.start}
                               for p in procs]))
    tmp.replace(root / PIDS)


def _udp_listening(pid: int, port: int) -> bool:
    """Whether a UDP socket is bound to ``port`` in ``pid``'s network namespace."""
    for name in ("udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 2 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _tcp_listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in ``pid``'s network namespace (the mail
    lab's reading of /proc/PID/net/tcp)."""
    return any(p == port for _, p in listening(pid))


def _mta_sts_files(topo: Topology, root: Path, ca_dir: Path) -> tuple[Path, Path, Path]:
    """The policy file and a certificate for mta-sts.DOMAIN from the lab CA."""
    from .pki import LabCA

    issued = LabCA.load(ca_dir).issue("mta-sts", dns_names=[f"mta-sts.{DOMAIN}"],
                                      directory=root / "mta-sts")
    policy = root / "mta-sts" / "mta-sts.txt"
    policy.write_text("version: STSv1\nmode: enforce\n"
                      + "".join(f"mx: {mail_host(dc)}\n" for dc in topo.of_role("dc"))
                      + "max_age: 86400\n")
    return policy, issued.chain, issued.key


def start_dns(topo: Topology, root: Path, ns_of: dict[str, str],
              timeout_s: float = 15.0, ca_dir: Path | None = None) -> dict[str, object]:
    """Write every configuration under ``root`` and start Knot, rbldnsd and the Unbounds.

    ``ns_of`` maps node names to namespace names.  On failure whatever started is
    stopped before :class:`LabDnsError` propagates.  Returns what ``lab`` state records.
    ``ca_dir``: the lab CA (the MTA-STS policy host's certificate comes from it; without it
    no MTA-STS policy is published).
    """
    missing = missing_dns_binaries()
    if missing:
        raise LabDnsError(f"the lab's DNS needs the Debian packages {', '.join(missing)}")
    root.mkdir(parents=True, exist_ok=True)
    hub = dns_hub(topo)
    zones = zone_texts(topo, hub, mta_sts=ca_dir is not None)
    (root / "zones").mkdir(exist_ok=True)
    (root / "db").mkdir(exist_ok=True)
    for name, text in zones.items():
        (root / "zones" / f"{name}.zone").write_text(text)
    (root / "knot.conf").write_text(_knot_conf(root, hub, list(zones)))
    bl = root / "bl"
    bl.mkdir(exist_ok=True)
    specs = _blocklists(topo, bl)
    procs: list[_Proc] = []
    started: list[tuple[_Proc, int, Path]] = []

    def launch(role: str, node: str, cmd: list[str], port: int, tcp: bool = False) -> None:
        log = root / f"{role}.out"
        with log.open("wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns_of[node], *cmd],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        deadline = time.monotonic() + 2.0
        ticks = _start_ticks(proc.pid)
        while ticks is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
            ticks = _start_ticks(proc.pid)
        if ticks is None:
            raise LabDnsError(f"{role} did not start: {log.read_text(errors='replace')[-800:]}")
        p = _Proc(role, proc.pid, ticks)
        procs.append(p)
        _record(root, procs)
        started.append((p, -port if tcp else port, log))  # negative: a TCP port

    try:
        launch("knot", hub.name, [_binary("knotd") or "knotd", "-c", str(root / "knot.conf")],
               53)
        launch("rbldnsd", hub.name, [_binary("rbldnsd") or "rbldnsd", "-n", "-u", _RBLDNS_USER,
                                     "-w", str(bl), "-b", f"{hub.v4}/{BL_PORT}", "-t", "60",
                                     *specs], BL_PORT)
        for client in topo.of_role("client"):
            conf = root / f"unbound-{client.name}.conf"
            conf.write_text(_unbound_conf(root, topo, client, hub))
            launch(f"unbound-{client.name}", client.name,
                   [_binary("unbound") or "unbound", "-d", "-c", str(conf)], 53)
        if ca_dir is not None:
            policy, chain, key = _mta_sts_files(topo, root, ca_dir)
            launch("mta-sts", hub.name, [sys.executable, "-m", "netvantage.lab.mtasts",
                                         "--bind", hub.v4, "--port", "443", "--cert",
                                         str(chain), "--key", str(key), "--policy",
                                         str(policy)], 443, tcp=True)
        _drop_dead_port(ns_of[hub.name])
        deadline = time.monotonic() + timeout_s
        for p, port, log in started:
            while not (_tcp_listening(p.pid, -port) if port < 0
                       else _udp_listening(p.pid, port)):
                if not _alive(p):
                    raise LabDnsError(f"{p.role} exited: "
                                      f"{log.read_text(errors='replace')[-800:]}")
                if time.monotonic() > deadline:
                    raise LabDnsError(f"{p.role} not listening on port {abs(port)} in time")
                time.sleep(0.02)
        for client in topo.of_role("client"):
            etc = NETNS_ETC / ns_of[client.name]
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(
                f"# Written by netvantage lab: the {client.name} region's Unbound\n"
                "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    except BaseException:
        stop_dns(root, list(ns_of.values()))
        raise
    return {"hub": hub.name, "address": hub.v4, "blocklist_port": BL_PORT,
            "unanswered_zone": UNANSWERED_ZONE, "domain": DOMAIN,
            "selectors": {dc.name: selector(topo, dc.name) for dc in topo.of_role("dc")},
            "root": str(root)}


def _drop_dead_port(ns: str) -> None:
    rules = (f"table inet nvdns {{\n chain input {{\n  type filter hook input priority 0;\n"
             f"  udp dport {DEAD_PORT} drop\n  tcp dport {DEAD_PORT} drop\n }}\n}}\n")
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules,
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise LabDnsError(f"nft in {ns}: {proc.stderr.strip()}")


def stop_dns(root: Path, namespaces: list[str], timeout_s: float = 5.0) -> int:
    """Stop the recorded DNS servers; remove the namespaces' resolv.conf.  Returns how many
    processes were stopped.  Safe on a half-started or already stopped lab."""
    procs: list[_Proc] = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        procs = [_Proc(str(p["role"]), int(p["pid"]), int(p["start"]))
                 for p in json.loads((root / PIDS).read_text())]
    alive = [p for p in procs if _alive(p)]
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in alive) and time.monotonic() < deadline:
        for p in alive:  # our own children: reap them so they do not linger as zombies
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p.pid, os.WNOHANG)
        time.sleep(0.02)
    for p in alive:
        if _alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    for ns in namespaces:
        etc = NETNS_ETC / ns
        with contextlib.suppress(FileNotFoundError):
            (etc / "resolv.conf").unlink()
        with contextlib.suppress(OSError):
            etc.rmdir()
    with contextlib.suppress(FileNotFoundError):
        (root / PIDS).unlink()
    return len(alive)
