"""Planted truth for the client mix: the winner flips between a European and a southern-African
data centre at a planted share of African clients.

Four client regions (GB-LHR, DE-FRA in Europe; ZA-JNB, ZA-CPT in Africa) measure two
candidates, ``dc-ams`` and ``dc-jnb``, with ping records whose RTTs are drawn around planted
medians (no loss, no failures: the cost of a pair is then its median plus half its p95).
The medians are chosen so that on the line from the mix "all European" (EU=1) to "all
African" (AF=1) the two candidates' costs cross at the planted African share ``p``:

    cost_ams(t) = (1 - t) e_ams + t a_ams,  cost_jnb(t) = (1 - t) e_jnb + t a_jnb,
    equal at t = p  when  a_jnb = a_ams - (1 - p) / p × (e_jnb - e_ams).

The detector is ``netvantage.analysis.mix.continuum`` on :func:`analyse`'s output (``--weights
EU=1 --mix africa=AF=1``): it is right when the flip it reports lies within 5 percentage points
of the planted share.  Control cases plant no flip (dc-ams cheaper everywhere): nothing must
be reported there.

    .venv/bin/python bench/planted_mix.py [--seed 7]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from netvantage.analysis.frames import MEASUREMENT_COLUMNS, Campaign
from netvantage.analysis.load import frames_from_records
from netvantage.analysis.summary import analyse

__all__ = ["TOLERANCE", "campaign_from_medians", "evaluate", "flip_share", "generate",
           "locations"]

TOLERANCE = 0.05
EUROPE = ("GB-LHR", "DE-FRA")
AFRICA = ("ZA-JNB", "ZA-CPT")
SITES = ("dc-ams", "dc-jnb")
_PLACES = {"GB-LHR": (51.47, -0.45, "GB", "EU"), "DE-FRA": (50.03, 8.57, "DE", "EU"),
           "ZA-JNB": (-26.14, 28.25, "ZA", "AF"), "ZA-CPT": (-33.97, 18.60, "ZA", "AF"),
           "dc-ams": (52.31, 4.76, "NL", "EU"), "dc-jnb": (-26.14, 28.25, "ZA", "AF")}


def locations() -> pd.DataFrame:
    """The places of the synthetic campaign (as :func:`netvantage.analysis.locations` gives)."""
    from netvantage.analysis.geo import locations as read

    rows = [{"name": n, "role": "dc" if n.startswith("dc-") else "region", "lat": lat,
             "lon": lon, "country": c, "continent": k}
            for n, (lat, lon, c, k) in _PLACES.items()]
    return read(pd.DataFrame(rows))


def _medians(share: float | None, rng: np.random.Generator) -> dict[tuple[str, str], float]:
    """Planted median RTT per (region, site); the flip at ``share`` (None: no flip).

    With ``g_eu`` the mean extra RTT of dc-jnb over dc-ams from Europe and ``g_af`` the
    mean extra RTT of dc-ams over dc-jnb from Africa, the flip is at ``g_eu / (g_eu + g_af)``
    of African clients.  Every RTT stays above the fibre floor of its pair (~90 ms between
    Europe and South Africa) so that no pair is an impossible measurement.
    """
    p = 0.5 if share is None else share
    g = float(rng.uniform(140, 170))
    g_eu, g_af = (g, g * (1 - p) / p) if p <= 0.5 else (g * p / (1 - p), g)
    out: dict[tuple[str, str], float] = {}
    spread = (-4.0, 4.0)  # the two regions of a continent differ; their mean is planted
    base_eu, base_af = float(rng.uniform(10, 20)), float(rng.uniform(15, 30))
    for r, d in zip(EUROPE, spread, strict=True):
        out[(r, "dc-ams")] = base_eu + d
        out[(r, "dc-jnb")] = base_eu + g_eu - d
    for r, d in zip(AFRICA, spread, strict=True):
        out[(r, "dc-jnb")] = base_af + d
        out[(r, "dc-ams")] = base_af + g_af + d
        if share is None:  # no flip: a badly connected dc-jnb, dearer from Africa too
            out[(r, "dc-jnb")] = base_af + g_af + 40.0 + d
    return out


def generate(seed: int, share: float | None, *, records: int = 40) -> Campaign:
    """A campaign whose winner flips at the African ``share`` (None: dc-ams wins every mix)."""
    rng = np.random.default_rng(seed)
    return campaign_from_medians(_medians(share, rng), rng, records=records)


def campaign_from_medians(medians: dict[tuple[str, str], float], rng: np.random.Generator,
                          *, records: int = 40, spread: float = 0.02) -> Campaign:
    """Ping records per (region, site) with RTTs around the given medians (log-normal
    ``spread``; 0 gives every record the median itself), no loss, all successful."""
    start = pd.Timestamp("2026-01-01", tz="UTC")
    rows: list[dict[str, Any]] = []
    for (region, site), median in sorted(medians.items()):
        for k in range(records):
            rtt = median * float(np.exp(rng.normal(0.0, spread))) if spread else median
            rows.append({"id": f"{region}-{site}-{k}", "kind": "ping", "agent": region,
                         "region": region, "target": site, "address": "192.0.2.1",
                         "started_at": start + pd.Timedelta(minutes=k), "duration_ms": rtt * 3,
                         "status": "ok", "ok": True, "source": "synthetic", "rtt_ms": rtt,
                         "rtt_min_ms": rtt * 0.97, "loss_ratio": 0.0, "jitter_ms": 0.5,
                         "sent": 3, "received": 3, "summary": False, "rtt_stat": "median",
                         "rtt_samples": 3})
    m = pd.DataFrame(rows).reindex(columns=list(MEASUREMENT_COLUMNS))
    for c in ("kind", "agent", "region", "target", "status"):
        m[c] = m[c].astype("category")
    m["started_at"] = pd.to_datetime(m["started_at"], utc=True)
    m["ok"] = m["ok"].astype(bool)
    m["summary"] = m["summary"].astype(bool)
    for c in ("port", "sent", "received", "rtt_samples"):
        m[c] = m[c].astype("Int64")
    m["cert_verified"] = m["cert_verified"].astype("boolean")
    empty = frames_from_records([])  # no samples, traces or handshakes: frames of no rows
    return Campaign(m, empty.samples, empty.hops, empty.phases)


def flip_share(campaign: Campaign) -> float | None:
    """The detector: the African share where the winner flips from EU=1 towards AF=1."""
    result = analyse(campaign, weights={"EU": 1.0}, mixes={"africa": {"AF": 1.0}},
                     locations=locations(), n_boot=0)
    assert result.mixes is not None
    line = result.mixes.lines[0]
    return line.flip_at


def evaluate(seed: int) -> list[dict[str, Any]]:
    """Planted flips at shares 0.2 … 0.8 and as many controls without a flip."""
    rng = np.random.default_rng(seed)
    shares = [0.2, 0.35, 0.5, 0.65, 0.8]
    planted = flagged = true_pos = 0
    for i, share in enumerate(shares):
        found = flip_share(generate(int(rng.integers(1 << 31)) + i, share))
        planted += 1
        if found is not None:
            flagged += 1
            true_pos += abs(found - share) <= TOLERANCE
        if flip_share(generate(int(rng.integers(1 << 31)) + i, None)) is not None:
            flagged += 1
    return [{"detector": "mix flip point (within 5 % of the planted share)",
             "planted": planted, "flagged": flagged, "true_positives": int(true_pos)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for share in (0.2, 0.35, 0.5, 0.65, 0.8):
        found = flip_share(generate(int(rng.integers(1 << 31)), share))
        print(f"planted flip at {share:.0%} African clients: found "
              f"{'none' if found is None else f'{found:.1%}'}")
    for row in evaluate(args.seed):
        print(row)


if __name__ == "__main__":
    main()
