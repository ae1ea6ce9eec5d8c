"""Records as tables a person reads (``netvantage measure ... --table``, the quick demo).

Ping and TCP records share one table (sent, received, loss, min/median/max, jitter);
SMTP and IMAP records get one of phases and TLS; every trace gets its hop table;
path MTU records one line each (the MTU, where it drops, whether the ICMP came).
A missing value prints as ``-``: a lost probe is never shown as 0 ms.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..results import (
    AnyRecord,
    ImapRecord,
    Multipath,
    PingRecord,
    PmtuRecord,
    SmtpRecord,
    TcpRecord,
    TraceRecord,
)
from ..text import columns, ms
from .target import Target

__all__ = ["mail_table", "multipath_lines", "pmtu_table", "reach_table", "records_table",
           "trace_table"]


def reach_table(records: Sequence[AnyRecord]) -> list[str]:
    """One row per ping or TCP record; other kinds are left out (no lines if none)."""
    rows = [("KIND", "TARGET", "ADDRESS", "STATUS", "SENT", "OK", "LOSS", "MIN", "MEDIAN",
             "MAX", "JITTER", "ERROR")]
    for r in records:
        if isinstance(r, PingRecord):
            sent, got = r.body.sent, r.body.received
            loss = "-" if r.body.loss_ratio is None else f"{r.body.loss_ratio:.0%}"
            stats = r.body.stats
            target = r.target
        elif isinstance(r, TcpRecord):
            sent, got = r.body.tried, r.body.succeeded
            loss = "-" if r.body.loss_ratio is None else f"{r.body.loss_ratio:.0%}"
            stats = r.body.stats
            target = str(Target(r.target, r.body.port))
        else:
            continue
        # A summary record's counts may be unknown (None): shown as "-", like a missing time.
        rows.append((r.kind, target, r.address or "-", r.status, _count(sent), _count(got), loss,
                     ms(stats.min_ms), ms(stats.median_ms), ms(stats.max_ms),
                     ms(stats.jitter_ms), r.error or ""))
    return columns(rows) if len(rows) > 1 else []


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def mail_table(records: Sequence[AnyRecord]) -> list[str]:
    """One row per SMTP or IMAP record: every phase's time, TLS version, certificate."""
    rows = [("KIND", "TARGET", "MODE", "STATUS", "TOTAL", "PHASES (ms)", "TLS", "CERT", "ERROR")]
    for r in records:
        if not isinstance(r, SmtpRecord | ImapRecord):
            continue
        b = r.body
        phases = " ".join(f"{p.name}={ms(p.duration_ms)}" if p.ok else f"{p.name}=FAILED"
                          for p in b.phases)
        tls = b.tls.version or "-" if b.tls else "-"
        cert = "-"
        if b.tls is not None and b.tls.verified is not None:
            cert = "verified" if b.tls.verified else "REFUSED"
        rows.append((r.kind, str(Target(r.target, b.port)), b.mode, r.status,
                     ms(r.duration_ms), phases, tls, cert, r.error or ""))
    return columns(rows) if len(rows) > 1 else []


def trace_table(records: Sequence[AnyRecord]) -> list[str]:
    """A heading line per trace record, then its hops indented: silent hops show ``*``."""
    lines: list[str] = []
    for r in records:
        if not isinstance(r, TraceRecord):
            continue
        b = r.body
        port = f":{b.port}" if b.port else ""
        lines.append(f"trace {b.protocol}{port} to {r.target} ({r.address or '-'}): {r.status}"
                     f", {b.stop_reason}" + (f" at TTL {b.dest_ttl}" if b.dest_ttl else ""))
        rows = [("TTL", "ADDRESS", "ASN", "CITY", "LOSS", "SENT", "BEST", "MEDIAN", "WORST")]
        for hop in b.hops:
            sent = str(len(hop.probes))
            loss = "-" if hop.loss_ratio is None else f"{hop.loss_ratio:.0%}"
            if not hop.responders:
                rows.append((str(hop.ttl), "*", "", "", loss, sent, "-", "-", "-"))
            for k, resp in enumerate(hop.responders):
                note = resp.annotation
                rows.append((str(hop.ttl) if k == 0 else "", resp.address,
                             f"AS{note.asn}" if note and note.asn else "",
                             (note.city or "") if note else "", loss if k == 0 else "",
                             sent if k == 0 else "", ms(resp.stats.min_ms),
                             ms(resp.stats.median_ms), ms(resp.stats.max_ms)))
        lines += ["  " + line for line in columns(rows)]
        if isinstance(b.multipath, Multipath):
            lines += ["  " + line for line in multipath_lines(b.multipath)]
    return lines


def multipath_lines(m: Multipath) -> list[str]:
    """The MDA's summary under a trace's hops: its cost, each TTL's width, its diamonds."""
    lines = [f"multipath (MDA, {m.confidence:.0%} per interface): {m.probes_sent} probes, "
             f"{m.flows} flows (varying the {m.flow_field.replace('_', ' ')})"]
    for ttl, found in enumerate(m.interfaces, start=1):
        if len(found) > 1:
            lines.append(f"  TTL {ttl}: {len(found)} interfaces: {', '.join(found)}")
    for d in m.diamonds:
        end = (f"{d.convergence} (TTL {d.convergence_ttl})" if d.convergence is not None
               else "not converged")
        lines.append(f"  diamond: {d.divergence} (TTL {d.divergence_ttl}) -> {end}: "
                     f"width {d.width}, length {d.length}")
    if not m.diamonds:
        lines.append("  no diamond: one interface per TTL")
    return lines


def pmtu_table(records: Sequence[AnyRecord]) -> list[str]:
    """One row per path MTU record: the MTU, the hop where a larger packet stops, the ICMP."""
    rows = [("KIND", "TARGET", "ADDRESS", "STATUS", "PATH MTU", "LOCAL", "DROPS AT", "NEXT HOP",
             "ICMP TOO BIG", "ERROR")]
    for r in records:
        if not isinstance(r, PmtuRecord):
            continue
        b = r.body
        hop = f"hop {b.hop_ttl} {b.hop_address}" if b.hop_ttl else (b.hop_address or "-")
        if b.path_mtu is not None and b.path_mtu == b.local_mtu:
            icmp = "not needed"
        elif b.ptb_received:
            icmp = f"received (mtu {b.ptb_mtu})"
        else:
            icmp = "NONE: black hole" if b.black_hole else "none"
        rows.append((f"pmtu/{b.protocol}", r.target, r.address or "-", r.status,
                     "-" if b.path_mtu is None else str(b.path_mtu), str(b.local_mtu), hop,
                     b.next_hop_address or "-", icmp, r.error or ""))
    return columns(rows) if len(rows) > 1 else []


def records_table(records: Sequence[AnyRecord]) -> str:
    """Every record in its table: ping/TCP first, then mail, path MTU, traces; times in ms."""
    reach = reach_table(records)
    rest = mail_table(records) + pmtu_table(records) + trace_table(records)
    lines = [*reach, "", *rest] if reach and rest else [*reach, *rest]
    return "\n".join([*lines, "(times in ms)"])
