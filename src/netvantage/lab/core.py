"""Bring the emulated internet up and down.

What ``up`` builds, in order (each step is recorded in the lab's state
directory *before* it is taken, so that ``down`` can undo a half-built lab):

1. one network namespace per node, named ``PREFIX-NODE``, with sysctls set
   for a lab (forwarding on routers, no ICMP rate limit, no DAD, no rp_filter);
2. links: a veth pair where a link has no delay; otherwise either a veth with
   ``netem`` on both ends (kernels that have it) or a pair of TUN devices
   served by the userspace delay element (:mod:`netvantage.lab.delay`);
3. addresses and routes, one ``ip -batch`` per namespace (see
   :mod:`netvantage.lab.topology` for the plan);
4. loss: an nftables rule per lossy interface, ``numgen random`` in the
   postrouting hook, so each direction of a link drops independently; in the
   same chain, on the routers of a ``drop_ptb`` link, a rule that drops the
   ICMP "fragmentation needed" / ICMPv6 "packet too big" they send (a path
   MTU black hole: RFC 2923 describes it);
5. MaxMind-format ASN and City databases for the lab's addresses (from the
   topology's ``asn``/``org``/``city``/``lat``/``lon``), so that hop annotation
   is tested for real;
6. a lab CA, and Postfix and Dovecot in every data centre;
7. DNS (:mod:`netvantage.lab.dns`): Knot authoritative for the lab's zones and
   reverse zones, rbldnsd serving blocklist zones, an Unbound resolver in every
   client region (named by ``/etc/netns/PREFIX-NODE/resolv.conf``), with the
   planted mail-readiness problems of the topology's ``mail_plant``.

The lab has only its own prefixes, no default route and no link to the root
namespace: nothing it sends can leave it.  ``down`` stops the recorded
processes, kills anything still running inside the lab's namespaces, deletes
the namespaces of its own prefix (and only those) and removes its state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NetvantageError
from .topology import Link, Topology, load_topology

__all__ = ["DEFAULT_PREFIX", "Lab", "LabError", "LabStatus"]

DEFAULT_PREFIX = "nvl"
STATE_ROOT = Path(os.environ.get("NETVANTAGE_LAB_STATE", "/run/netvantage"))
_NFT_TABLE = "nvlab"
_CMD_TIMEOUT_S = 30


class LabError(NetvantageError):
    """The lab cannot do what was asked; the message says why and what to do."""


def _run(args: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = _CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True, slots=True)
class LabStatus:
    prefix: str
    up: bool
    namespaces: list[str]
    state: dict[str, Any]

    def describe(self, topology: Topology | None = None) -> list[str]:
        """What ``netvantage lab status`` prints: phase, delay element, nodes, overrides."""
        phase = self.state.get("phase", "unknown (no state file)")
        scheduling = self.state.get("delay_scheduling")
        lines = [f"lab {self.prefix!r}: {phase}, {len(self.namespaces)} namespace(s), "
                 f"delay: {self.state.get('delay_method', '?')}"
                 + (f" (element scheduled {scheduling})" if scheduling else "")]
        if topology is not None:
            lines += ["  " + line for line in topology.node_lines()]
        for key in ("loss_overrides", "delay_overrides"):
            if self.state.get(key):
                lines.append(f"  {key}: {json.dumps(self.state[key])}")
        return lines


class Lab:
    """One lab instance: a topology under a namespace prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, topology: Topology | None = None) -> None:
        if not prefix.replace("-", "").isalnum() or len(prefix) > 12:
            raise LabError(f"lab prefix {prefix!r}: letters, digits and '-', at most 12")
        self.prefix = prefix
        self.state_dir = STATE_ROOT / prefix
        self.state_file = self.state_dir / "state.json"
        self._topology = topology

    # -- names ---------------------------------------------------------------

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            state = self.read_state()
            source = state.get("topology")
            if not source:
                raise LabError(f"lab {self.prefix!r} is not up (no state); run `netvantage lab up`")
            self._topology = load_topology(source)
        return self._topology

    def own_namespaces(self) -> list[str]:
        out = _run(["ip", "netns", "list"]).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return sorted(n for n in names if n.startswith(self.prefix + "-"))

    # -- state ---------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
            return data
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LabError(f"{self.state_file}: unreadable lab state ({exc}); "
                           "`netvantage lab down` still cleans up by prefix") from None

    def _write_state(self, state: dict[str, Any]) -> None:
        # Searchable but not listable: Postfix and Dovecot drop privileges and must
        # reach their directories below; secrets (the CA key) are 0600 files.
        for directory in (self.state_dir.parent, self.state_dir):
            directory.mkdir(exist_ok=True, mode=0o711)
            directory.chmod(0o711)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_file)

    def status(self) -> LabStatus:
        state = self.read_state()
        names = self.own_namespaces()
        return LabStatus(prefix=self.prefix, up=state.get("phase") == "up" and bool(names),
                         namespaces=names, state=state)

    # -- up ------------------------------------------------------------------

    def up(self, *, mail: bool = True, dns: bool = True,
           progress: Any = None) -> dict[str, Any]:
        """Build the lab; on any failure undo what was built and raise :class:`LabError`."""
        say = progress or (lambda msg: None)
        self._preflight()
        existing = self.own_namespaces()
        if existing or self.state_file.exists():
            raise LabError(
                f"lab {self.prefix!r} is already up (or was left half-built): "
                f"{len(existing)} namespace(s) {', '.join(existing[:3])}"
                f"{'…' if len(existing) > 3 else ''}. Run `netvantage lab down` first."
            )
        topo = self.topology
        t0 = time.monotonic()
        state: dict[str, Any] = {"prefix": self.prefix, "topology": topo.source,
                                 "phase": "building", "started": time.time(),
                                 "namespaces": [], "delay_pid": None, "mail": []}
        self._write_state(state)
        try:
            say(f"namespaces: {len(topo.nodes)}")
            self._make_namespaces(topo, state)
            netem = self._netem_available(self.ns(next(iter(topo.nodes))))
            state["delay_method"] = "netem" if netem else "userspace"
            say(f"links: {len(topo.links)} (delay by {state['delay_method']})")
            self._make_links(topo, state, netem)
            self._address_and_route(topo)
            self._apply_loss(topo)
            from .geodb import write_lab_databases

            asn_db, city_db = write_lab_databases(topo, self.state_dir / "geo")
            state["geo"] = {"asn": str(asn_db), "city": str(city_db)}
            if mail and topo.of_role("dc"):
                say(f"mail servers: {len(topo.of_role('dc'))} data centre(s)")
                self._start_mail(topo, state)
            if dns and topo.of_role("client"):
                from .dns import start_dns

                say(f"DNS: Knot, rbldnsd, {len(topo.of_role('client'))} Unbound resolver(s)")
                state["dns"] = {"root": str(self.state_dir / "dns")}
                self._write_state(state)
                ca_dir = Path(state["ca"]).parent if state.get("ca") else None
                state["dns"] = start_dns(topo, self.state_dir / "dns",
                                         {n: self.ns(n) for n in topo.nodes}, ca_dir=ca_dir)
            state["phase"] = "up"
            state["up_seconds"] = round(time.monotonic() - t0, 3)
            self._write_state(state)
        except BaseException as exc:
            try:
                self.down()
            finally:
                if isinstance(exc, LabError | KeyboardInterrupt):
                    raise
                raise LabError(f"lab up failed and was undone: {exc}") from exc
        return state

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces); run with sudo")
        missing = [tool for tool in ("ip", "nft", "tc") if shutil.which(tool) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} (Debian: iproute2, nftables)")

    def _make_namespaces(self, topo: Topology, state: dict[str, Any]) -> None:
        for node in topo.nodes.values():
            ns = self.ns(node.name)
            state["namespaces"].append(ns)
            self._write_state(state)
            _run(["ip", "netns", "add", ns])
            keys = [
                "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
                "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.ping_group_range=0 2147483647",
                # No TCP black-hole detection (RFC 4821 probing; Linux's default, said
                # outright): a path MTU black hole must stall TLS, as it does in the wild.
                "net.ipv4.tcp_mtu_probing=0",
                f"net.ipv4.ip_forward={int(node.role == 'router')}",
                f"net.ipv6.conf.all.forwarding={int(node.role == 'router')}",
            ]
            if node.ecmp:  # multipath routes hash the ports too (L4), IPv4 and IPv6
                keys += ["net.ipv4.fib_multipath_hash_policy=1",
                         "net.ipv6.fib_multipath_hash_policy=1"]
            _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *keys])

    def _netem_available(self, ns: str) -> bool:
        probe = _run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root",
                      "netem", "delay", "1ms"], check=False)
        if probe.returncode == 0:
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root"],
                 check=False)
            return True
        return False

    def _make_links(self, topo: Topology, state: dict[str, Any], netem: bool) -> None:
        tun_links: list[Link] = []
        for link in topo.links:
            if link.delayed and not netem:
                tun_links.append(link)
                continue
            _run(["ip", "link", "add", link.dev(link.a), "netns", self.ns(link.a), "type", "veth",
                  "peer", "name", link.dev(link.b), "netns", self.ns(link.b)])
            if link.delayed:
                for node in (link.a, link.b):
                    _run(["ip", "netns", "exec", self.ns(node), "tc", "qdisc", "add", "dev",
                          link.dev(node), "root", "netem", *self._netem_args(link)])
        if tun_links:
            self._start_delay(tun_links, state)

    @staticmethod
    def _netem_args(link: Link, delay_ms: float | None = None,
                    jitter_ms: float | None = None) -> list[str]:
        delay = link.delay_ms if delay_ms is None else delay_ms
        jitter = link.jitter_ms if jitter_ms is None else jitter_ms
        args = ["delay", f"{delay}ms"]
        if jitter:
            args += [f"{jitter}ms", "distribution", "uniform"]
        return args

    def _start_delay(self, links: Sequence[Link], state: dict[str, Any]) -> None:
        from .delay import LinkSpec, write_spec

        specs = [LinkSpec(name=f"l{link.index}", a_netns=self.ns(link.a), a_dev=link.dev(link.a),
                          b_netns=self.ns(link.b), b_dev=link.dev(link.b),
                          delay_ms=link.delay_ms, jitter_ms=link.jitter_ms)
                 for link in links]
        spec_path = self.state_dir / "delay.json"
        control = self.state_dir / "delay.sock"
        write_spec(specs, spec_path)
        log = open(self.state_dir / "delay.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "netvantage.lab.delay", "--spec", str(spec_path),
             "--control", str(control)],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        state["delay_pid"] = proc.pid
        state["delay_control"] = str(control)
        self._write_state(state)
        assert proc.stdout is not None
        line = _readline_with_timeout(proc, 20.0)
        proc.stdout.close()
        log_text = (self.state_dir / "delay.log").read_text(errors="replace")
        if line.strip() != "ready":
            raise LabError(f"the delay element did not start: "
                           f"{log_text.strip() or line or 'no output'}")
        # Its last start-up line says how it is scheduled (real-time or not).
        said = [x for x in log_text.splitlines() if x.startswith("scheduling: ")]
        state["delay_scheduling"] = said[-1].removeprefix("scheduling: ") if said else None

    def _address_and_route(self, topo: Topology) -> None:
        def batch(node_name: str) -> None:
            node = topo.nodes[node_name]
            cmds = ["link set lo up",
                    f"addr add {node.v4}/32 dev lo",
                    f"addr add {node.v6}/128 dev lo nodad"]
            for link in topo.links_of(node_name):
                dev = link.dev(node_name)
                v4, v6 = link.addresses(node_name)
                # IPv6: up before the address, and nodad, or the first packet waits ~1 s.
                if link.mtu is not None and link.mtu_for is None:
                    cmds.append(f"link set {dev} mtu {link.mtu}")
                cmds += [f"link set {dev} up",
                         f"addr add {v4}/24 dev {dev}",
                         f"addr add {v6}/64 dev {dev} nodad"]
            for other in topo.nodes.values():
                if other.name == node_name:
                    continue
                hops = topo.next_hops(node_name, other.name)
                if len(hops) > 1:  # equal-cost multipath (the node's `ecmp`)
                    via4 = via6 = ""
                    for hop in hops:
                        link = topo.link(node_name, hop)
                        hop_v4, hop_v6 = link.addresses(hop)
                        via4 += f" nexthop via {hop_v4} dev {link.dev(node_name)}"
                        via6 += f" nexthop via {hop_v6} dev {link.dev(node_name)}"
                    cmds += [f"route add {other.v4}/32 src {node.v4}{via4}",
                             f"route add {other.v6}/128 src {node.v6}{via6}"]
                    continue
                hop = hops[0]
                link = topo.link(node_name, hop)
                dev = link.dev(node_name)
                hop_v4, hop_v6 = link.addresses(hop)
                cmds += [f"route add {other.v4}/32 via {hop_v4} dev {dev} src {node.v4}",
                         f"route add {other.v6}/128 via {hop_v6} dev {dev} src {node.v6}"]
            pair4, pair6 = self._pair_mtu_routes(topo, node_name)
            _run(["ip", "-n", self.ns(node_name), "-batch", "-"],
                 input="\n".join(cmds + pair4) + "\n")
            if pair6:  # `ip rule` does not infer the family from the address: its own batch
                _run(["ip", "-6", "-n", self.ns(node_name), "-batch", "-"],
                     input="\n".join(pair6) + "\n")

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(batch, topo.nodes))

    @staticmethod
    def _pair_mtu_routes(topo: Topology, node_name: str) -> tuple[list[str], list[str]]:
        """Policy rules and ``mtu lock`` routes of the ``mtu_for`` links this node ends.

        For packets from X to Y that this node forwards over such a link, a rule
        sends the lookup to a table of the link's own whose one route carries the
        link's MTU, locked: Linux's forwarding path honours a route's MTU (IPv6
        only when locked), sends "fragmentation needed" / "packet too big" for a
        larger packet that may not be fragmented, and no other pair is touched.
        """
        cmds: tuple[list[str], list[str]] = ([], [])
        for link in topo.links_of(node_name):
            if link.mtu_for is None or link.mtu is None:
                continue
            peer = link.peer(node_name)
            table = 1000 + link.index
            peer_v4, peer_v6 = link.addresses(peer)
            x, y = link.mtu_for
            for src, dst in ((x, y), (y, x)):
                hops = topo.path(src, dst)
                if node_name not in hops[:-1] or topo.next_hop(node_name, dst) != peer:
                    continue
                s, d = topo.nodes[src], topo.nodes[dst]
                for out, s_addr, d_addr, plen, via in ((cmds[0], s.v4, d.v4, 32, peer_v4),
                                                       (cmds[1], s.v6, d.v6, 128, peer_v6)):
                    # Forwarded packets only (the rule matches X's address): no ``src``.
                    out += [f"rule add from {s_addr} to {d_addr} lookup {table} pref {table}",
                             f"route add {d_addr}/{plen} via {via} dev {link.dev(node_name)} "
                             f"mtu lock {link.mtu} table {table}"]
        return cmds

    def _loss_rules(self, topo: Topology, node: str,
                    overrides: dict[int, float] | None = None) -> str:
        lines = [f"table inet {_NFT_TABLE} {{", " chain egress {",
                 "  type filter hook postrouting priority 0;"]
        for link in topo.links_of(node):
            loss = (overrides or {}).get(link.index, link.loss)
            per_million = round(loss * 1_000_000)
            if per_million >= 1_000_000:
                lines.append(f'  oifname "{link.dev(node)}" counter drop')
            elif per_million > 0:
                lines.append(f'  oifname "{link.dev(node)}" numgen random mod 1000000 '
                             f"< {per_million} counter drop")
        if any(link.drop_ptb for link in topo.links_of(node)):
            # Dropped as they leave, whichever interface they leave by: the router
            # still refuses the packet that does not fit, but the sender never hears.
            lines += ["  icmp type destination-unreachable icmp code frag-needed counter drop",
                      "  icmpv6 type packet-too-big counter drop"]
        lines += [" }", "}"]
        return "\n".join(lines) + "\n"

    def _apply_loss(self, topo: Topology, overrides: dict[int, float] | None = None,
                    nodes: Sequence[str] | None = None) -> None:
        for node in nodes or list(topo.nodes):
            rules = self._loss_rules(topo, node, overrides)
            # add + delete + add: replaces the table whether it existed or not.
            script = (f"table inet {_NFT_TABLE}\ndelete table inet {_NFT_TABLE}\n" + rules)
            _run(["ip", "netns", "exec", self.ns(node), "nft", "-f", "-"], input=script)

    def _start_mail(self, topo: Topology, state: dict[str, Any]) -> None:
        from .mail import MailServer
        from .pki import LabCA

        ca = LabCA.create(self.state_dir / "ca")
        state["ca"] = str(ca.cert_path)
        servers = []
        for dc in topo.of_role("dc"):
            hostname = f"mail.{dc.name}.lab"
            state_dir = self.state_dir / "mail" / dc.name
            state["mail"].append({"node": dc.name, "state_dir": str(state_dir),
                                  "hostname": hostname})
            issued = ca.issue(hostname, dns_names=[hostname], ips=[dc.v4, dc.v6],
                              directory=self.state_dir / "ca" / dc.name)
            servers.append(MailServer(name=dc.name, state_dir=state_dir, hostname=hostname,
                                      addresses=[dc.v4, dc.v6], tls=issued,
                                      netns=self.ns(dc.name)))
        self._write_state(state)
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(lambda s: s.start(), servers))

    # -- changing a running lab ---------------------------------------------

    def set_link(self, a: str, b: str, *, delay_ms: float | None = None,
                 jitter_ms: float | None = None, loss: float | None = None) -> Link:
        """Change one link's delay, jitter or loss while the lab runs."""
        state = self.read_state()
        if state.get("phase") != "up":
            raise LabError(f"lab {self.prefix!r} is not up")
        topo = self.topology
        try:
            link = topo.link(a, b)
        except KeyError as exc:
            raise LabError(str(exc)) from None
        if loss is not None:
            if not 0 <= loss <= 1:
                raise LabError("loss is a ratio in 0..1")
            changes = dict(state.get("loss_overrides", {}))
            changes[str(link.index)] = loss
            state["loss_overrides"] = changes
            overrides = {int(k): float(v) for k, v in changes.items()}
            self._apply_loss(topo, overrides, nodes=[link.a, link.b])
        if delay_ms is not None or jitter_ms is not None:
            if not link.delayed:
                raise LabError(f"link {a}-{b} was built without delay (a plain veth); give it "
                               "a delay in the topology to change it at run time")
            if state.get("delay_method") == "netem":
                current = state.get("delay_overrides", {}).get(str(link.index), {})
                d = delay_ms if delay_ms is not None else current.get("delay_ms", link.delay_ms)
                j = jitter_ms if jitter_ms is not None else current.get("jitter_ms",
                                                                         link.jitter_ms)
                for node in (link.a, link.b):
                    _run(["ip", "netns", "exec", self.ns(node), "tc", "qdisc", "change", "dev",
                          link.dev(node), "root", "netem", *self._netem_args(link, d, j)])
            else:
                from .delay import set_link as set_delay

                set_delay(Path(state["delay_control"]), f"l{link.index}",
                          delay_ms=delay_ms, jitter_ms=jitter_ms)
            overrides_d = dict(state.get("delay_overrides", {}))
            entry = dict(overrides_d.get(str(link.index), {}))
            if delay_ms is not None:
                entry["delay_ms"] = delay_ms
            if jitter_ms is not None:
                entry["jitter_ms"] = jitter_ms
            overrides_d[str(link.index)] = entry
            state["delay_overrides"] = overrides_d
        self._write_state(state)
        return link

    def exec(self, node: str, command: Sequence[str]) -> int:
        if node not in self.topology.nodes:
            raise LabError(f"unknown node {node!r}; nodes: {', '.join(self.topology.nodes)}")
        return subprocess.call(["ip", "netns", "exec", self.ns(node), *command])

    # -- down ----------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything of this prefix; works on a half-built or crashed lab."""
        done: list[str] = []
        try:
            state = self.read_state()
        except LabError:
            state = {}
        mail_dirs = [Path(m["state_dir"]) for m in state.get("mail", [])]
        mail_root = self.state_dir / "mail"
        if mail_root.is_dir():
            mail_dirs += [p for p in mail_root.iterdir() if p.is_dir() and p not in mail_dirs]
        if mail_dirs:
            from .mail import stop_recorded

            with ThreadPoolExecutor(max_workers=len(mail_dirs)) as pool:
                list(pool.map(stop_recorded, mail_dirs))
            done.append(f"stopped mail servers in {len(mail_dirs)} data centre(s)")
        dns_root = self.state_dir / "dns"
        names = self.own_namespaces()
        if dns_root.is_dir() or any((Path("/etc/netns") / ns).exists() for ns in names):
            from .dns import stop_dns

            stopped = stop_dns(dns_root, names)
            done.append(f"stopped {stopped} DNS server(s)")
        pid = state.get("delay_pid")
        if isinstance(pid, int) and _pid_alive(pid):
            _terminate(pid)
            done.append(f"stopped the delay element (pid {pid})")
        names = self.own_namespaces()
        leftovers: list[int] = []
        for ns in names:
            out = _run(["ip", "netns", "pids", ns], check=False).stdout
            leftovers += [int(p) for p in out.split() if p.isdigit()]
        for leftover in leftovers:
            _terminate(leftover, grace_s=2.0)
        if leftovers:
            done.append(f"stopped {len(leftovers)} leftover process(es) inside the lab")
        for ns in names:
            _run(["ip", "netns", "del", ns], check=False)
        if names:
            done.append(f"deleted {len(names)} namespace(s)")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
            done.append(f"removed {self.state_dir}")
        return done


def _terminate(pid: int, grace_s: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _readline_with_timeout(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The child's first stdout line, or '' if it exits or stays silent past the deadline."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout_s
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    return buf.decode(errors="replace").split("\n", 1)[0]
