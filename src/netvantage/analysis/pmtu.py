"""Path MTU per (region, data centre): the ``pmtu`` records read as a finding.

A path whose MTU is below the client's interface MTU works only if the router that cannot
forward a full-size packet says so — ICMP "fragmentation needed" (RFC 1191) or ICMPv6
"packet too big" (RFC 8201) — and the message reaches the sender.  When it does not (a
filter drops the ICMP, a tunnel swallows it), small packets pass and large ones vanish:
a TCP connection opens, the SMTP greeting and EHLO come back, and the session stalls on
the first full-size segment (a certificate, a message body).  RFC 2923 calls this a PMTU
black hole; ``netvantage measure pmtu`` (:mod:`netvantage.measure.pmtu`) finds it by
searching the largest Don't-Fragment packet that reaches the target and by noting whether
any "too big" message came back, and names the router where the larger size stops.

Pure functions over the ``pmtu`` frame (:data:`PMTU_COLUMNS`, one row per record, built by
:func:`pmtu_frame`).  Per pair the latest record gives the state; the history says how
often it was seen.  Verdicts:

* ``black hole`` — the latest record found a path MTU below the local MTU with no "too
  big" message (``black_hole``): large packets are lost silently;
* ``reduced`` — a smaller path MTU, announced by a "too big" message: discovery works
  (the sender learns it, TCP's segments shrink), only the overhead grows;
* ``full`` — the whole local MTU reaches the target;
* ``unknown`` — the search did not reach the target or did not end.

A black hole is the one that breaks service, so it is what the ranking's text, the JSON
and the report show first; it does not change the score (the ranking counts latency, loss
and handshakes; a black hole is fixed by whoever filters the ICMP, not by moving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..results import PmtuRecord

__all__ = ["PMTU_COLUMNS", "PathMtu", "path_mtu", "pmtu_frame"]

PMTU_COLUMNS = ["id", "agent", "region", "target", "address", "started_at", "protocol",
                "ip_version", "local_mtu", "path_mtu", "reached", "ptb_received", "ptb_mtu",
                "ptb_from", "black_hole", "hop_ttl", "hop_address", "next_hop_address"]
#: Verdicts, worst first (the order of the table and of the text).
VERDICTS = ("black hole", "reduced", "unknown", "full")


def pmtu_frame(records: Sequence[PmtuRecord]) -> pd.DataFrame:
    """One row per ``pmtu`` record (:data:`PMTU_COLUMNS`)."""
    rows = [(r.id, r.agent, r.region, r.target, r.address, r.started_at, r.body.protocol,
             r.body.ip_version, r.body.local_mtu, r.body.path_mtu, r.body.reached,
             r.body.ptb_received, r.body.ptb_mtu, r.body.ptb_from, r.body.black_hole,
             r.body.hop_ttl, r.body.hop_address, r.body.next_hop_address) for r in records]
    frame = pd.DataFrame(rows, columns=PMTU_COLUMNS)
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    for column in ("ip_version", "local_mtu", "path_mtu", "ptb_mtu", "hop_ttl"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _verdict(row: Any) -> str:
    if bool(row.black_hole):
        return "black hole"
    if not bool(row.reached) or pd.isna(row.path_mtu):
        return "unknown"
    return "reduced" if int(row.path_mtu) < int(row.local_mtu) else "full"


def _where(row: Any) -> str:
    """The router where the larger size stops, as the record names it."""
    if pd.isna(row.hop_ttl) and row.hop_address is None:
        return ""
    at = f"hop {int(row.hop_ttl)}" if not pd.isna(row.hop_ttl) else "a hop"
    at += f" ({row.hop_address})" if row.hop_address else ""
    return at + (f", before {row.next_hop_address}" if row.next_hop_address else "")


def _evidence(row: Any, verdict: str, seen: int, records: int) -> str:
    local, path = int(row.local_mtu), row.path_mtu
    history = f" ({seen} of {records} records)" if records > 1 else ""
    if verdict == "black hole":
        return (f"path MTU {int(path)} < local {local} with no ICMP 'fragmentation needed' "
                f"or 'packet too big' (RFC 2923 black hole){history}: packets above "
                f"{int(path)} bytes are dropped silently")
    if verdict == "reduced":
        sender = f" from {row.ptb_from}" if row.ptb_from else ""
        return (f"path MTU {int(path)} < local {local}, announced{sender} (PMTU discovery "
                f"works){history}")
    if verdict == "full":
        return f"the local MTU {local} reaches the target{history}"
    return f"the search did not reach the target{history}"


@dataclass(frozen=True)
class PathMtu:
    """``table``: one row per (region, target) — verdict (of the latest record), path_mtu,
    local_mtu, where, evidence, records, seen (records with that verdict), latest_at."""

    table: pd.DataFrame

    @property
    def black_holes(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == "black hole"]

    def text_lines(self) -> list[str]:
        t = self.table
        counts = t["verdict"].value_counts()
        lines = [f"Path MTU ({len(t)} pair(s): "
                 + ", ".join(f"{int(counts[v])} {v!s}" for v in VERDICTS if v in counts)
                 + "):"]
        for r in t[t["verdict"] != "full"].itertuples():
            where = f"; stops at {r.where!s}" if r.where else ""
            lines.append(f"  {r.region!s} -> {r.target!s}: {r.verdict!s} — {r.evidence!s}"
                         f"{where}")
        if not (t["verdict"] != "full").any():
            lines.append("  every pair carries the full local MTU")
        return lines

    def to_dict(self) -> dict[str, Any]:
        import json

        return {"pairs": json.loads(self.table.to_json(orient="records", date_format="iso"))}


def path_mtu(frame: pd.DataFrame | None) -> PathMtu | None:
    """Each pair's path MTU finding, or None without pmtu records."""
    if frame is None or frame.empty:
        return None
    f = frame.copy()
    f["region"] = f["region"].astype("object").fillna("(no region)")
    f["verdict"] = [_verdict(r) for r in f.itertuples()]
    f = f.sort_values(["region", "target", "started_at", "id"], kind="stable")
    rows = []
    for (region, target), group in f.groupby(["region", "target"], sort=False):
        latest = next(group.iloc[[-1]].itertuples())
        verdict = str(latest.verdict)
        seen = int((group["verdict"] == verdict).sum())
        rows.append({"region": str(region), "target": str(target), "verdict": verdict,
                     "path_mtu": latest.path_mtu, "local_mtu": latest.local_mtu,
                     "where": _where(latest),
                     "evidence": _evidence(latest, verdict, seen, len(group)),
                     "records": len(group), "seen": seen, "latest_at": latest.started_at})
    table = pd.DataFrame(rows, columns=["region", "target", "verdict", "path_mtu",
                                        "local_mtu", "where", "evidence", "records", "seen",
                                        "latest_at"])
    order = {v: i for i, v in enumerate(VERDICTS)}
    table = table.sort_values(["verdict", "region", "target"],
                              key=lambda c: c.map(order) if c.name == "verdict" else c,
                              kind="stable").reset_index(drop=True)
    for column in ("path_mtu", "local_mtu"):
        table[column] = table[column].astype("Int64")
    return PathMtu(table)
