"""A seeded synthetic campaign of records, for bench/analysis_scale.py.

Writes JSON Lines records of the result schema (what agents and ``netvantage
export`` write), so that ``netvantage analyse`` reads them as it reads real data:

* ``--regions`` client regions (300 by default: a few hundred, as a real
  campaign's probe cities) named ``XX-NNN``, spread over the globe, two agents
  each; ``--targets`` data centres (12) at real airports;
* kinds in a realistic mix: ping 40 %, tcp 25 %, trace 15 %, smtp 10 %, imap
  10 %.  ping and tcp carry samples (10 echoes, 3 connects) drawn around the
  pair's base latency (great circle at 2/3 c, path stretch 1.5, +1 ms of
  access) with log-normal queueing noise and a per-region loss rate; trace,
  smtp and imap bodies are those of the bundled lab campaign (real records,
  ``data/campaigns/lab-sample.jsonl``) under the synthetic envelope;
* gaps: 6 % of the (region, data centre) pairs are never measured, and every
  region is silent for one random tenth of the campaign;
* dead targets: 1 % of the pairs only ever time out (no reply, every attempt
  a timeout);
* ``started_at`` spread over 7 days in time order.

``--matrix N`` writes instead the N × N one-record-per-pair matrix: N regions, N
data centres, one ping record each.

    .venv/bin/python bench/make_synthetic.py OUT.jsonl [--records 1000000] [--seed 20240611]
        [--regions 300] [--targets 12] [--matrix 250]

The same seed and arguments give the same file.  About 0.8 KB per record.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from netvantage.results import rtt_stats  # noqa: E402

SAMPLE = REPO / "data" / "campaigns" / "lab-sample.jsonl"
DATA_CENTRES: dict[str, tuple[float, float]] = {
    "dc-fra": (50.03, 8.57), "dc-ams": (52.31, 4.76), "dc-iad": (38.95, -77.46),
    "dc-sjc": (37.36, -121.93), "dc-gru": (-23.43, -46.47), "dc-sin": (1.36, 103.99),
    "dc-nrt": (35.77, 140.39), "dc-jnb": (-26.14, 28.25), "dc-bom": (19.09, 72.87),
    "dc-syd": (-33.95, 151.18), "dc-lhr": (51.47, -0.45), "dc-yyz": (43.68, -79.62),
}
KIND_SHARE = {"ping": 0.40, "tcp": 0.25, "trace": 0.15, "smtp": 0.10, "imap": 0.10}
START = datetime(2024, 6, 1, tzinfo=UTC)
CAMPAIGN_S = 7 * 86_400
_enc = msgspec.json.Encoder()


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def stats_dict(rtts: list[float | None]) -> dict[str, float | None]:
    return msgspec.to_builtins(rtt_stats(rtts))  # type: ignore[no-any-return]


def templates() -> dict[str, list[dict[str, object]]]:
    """The lab campaign's trace, smtp and imap bodies, by kind."""
    out: dict[str, list[dict[str, object]]] = {"trace": [], "smtp": [], "imap": []}
    with open(SAMPLE, "rb") as fh:
        for line in fh:
            record = msgspec.json.decode(line)
            if record["kind"] in out:
                out[record["kind"]].append(record["body"])
    return out


class Writer:
    """Record lines, built as dicts and encoded once each."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.bodies = {k: [_enc.encode(b) for b in v] for k, v in templates().items()}
        self.n = 0

    def envelope(self, kind: str, region: str, agent: str, target: str, when: datetime,
                 status: str) -> dict[str, object]:
        self.n += 1
        return {"kind": kind, "id": f"syn-{self.n:012d}", "schema": 2, "agent": agent,
                "region": region, "target": target, "address": "192.0.2.1",
                "started_at": when.isoformat().replace("+00:00", "Z"),
                "duration_ms": 1000.0, "status": status, "error": None,
                "source": "netvantage"}

    def ping(self, env: dict[str, object], rtts: list[float | None]) -> bytes:
        received = sum(r is not None for r in rtts)
        env["body"] = {"ip_version": 4, "socket": "raw", "payload_bytes": 56,
                       "interval_s": 0.1, "timeout_s": 2.0, "dont_fragment": False,
                       "sent": len(rtts), "received": received, "duplicates": 0,
                       "rtts_ms": rtts, "stats": stats_dict(rtts),
                       "loss_ratio": round(1 - received / len(rtts), 6),
                       "icmp_errors": [], "rx_clock": "kernel"}
        return _enc.encode(env)

    def tcp(self, env: dict[str, object], rtts: list[float | None]) -> bytes:
        attempts = [{"status": "ok", "connect_ms": r, "handshake_rtt_ms": None, "error": None}
                    if r is not None else
                    {"status": "timeout", "connect_ms": None, "handshake_rtt_ms": None,
                     "error": "timed out"} for r in rtts]
        env["body"] = {"port": 443, "ip_version": 4, "timeout_s": 3.0, "attempts": attempts,
                       "succeeded": sum(r is not None for r in rtts),
                       "stats": stats_dict(rtts)}
        return _enc.encode(env)

    def spliced(self, env: dict[str, object], kind: str) -> bytes:
        bodies = self.bodies[kind]
        body = bodies[int(self.rng.integers(len(bodies)))]
        return _enc.encode(env)[:-1] + b',"body":' + body + b"}"


def regions(n: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.95, n)))
    lon = rng.uniform(-180, 180, n)
    return {f"X{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}-{i:03d}": (float(a), float(o))
            for i, (a, o) in enumerate(zip(lat, lon, strict=True))}


def rtt_list(rng: np.random.Generator, base: float, n: int, loss: float) -> list[float | None]:
    values = base + rng.lognormal(math.log(1.5), 1.0, n)
    lost = rng.random(n) < loss
    return [None if gone else round(float(v), 3) for v, gone in zip(values, lost, strict=True)]


def campaign(out: Path, records: int, n_regions: int, n_targets: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    writer = Writer(rng)
    regs = regions(n_regions, rng)
    dcs = dict(list(DATA_CENTRES.items())[:n_targets])
    names, dc_names = list(regs), list(dcs)
    base = np.array([[1.0 + 3 * great_circle_km(regs[r], dcs[d]) / 200.0 for d in dc_names]
                     for r in names])
    pair_state = rng.random((len(names), len(dc_names)))
    gap, dead = pair_state < 0.06, (pair_state >= 0.06) & (pair_state < 0.07)
    loss = rng.uniform(0.005, 0.035, len(names))
    silent = rng.uniform(0, 0.9, len(names))  # each region silent for [s, s + 0.1)
    kinds = list(KIND_SHARE)
    share = np.array(list(KIND_SHARE.values()))
    chunk = 100_000
    drawn = 0
    # Draws to make ``records`` once gaps and silences are left out.
    draws = records / ((1 - gap.mean()) * 0.9)
    with open(out, "wb") as fh:
        while writer.n < records:
            n = min(chunk, max(1000, round(draws - drawn)))
            frac = np.minimum((drawn + np.arange(n)) / draws, 1 - 1e-9)
            reg = rng.integers(0, len(names), n)
            tgt = rng.integers(0, len(dc_names), n)
            kind = rng.choice(len(kinds), n, p=share)
            keep = ~gap[reg, tgt] & ~((frac >= silent[reg]) & (frac < silent[reg] + 0.1))
            lines = []
            for i in np.flatnonzero(keep)[:records - writer.n]:
                r, t, k = int(reg[i]), int(tgt[i]), kinds[kind[i]]
                when = START + timedelta(seconds=float(frac[i]) * CAMPAIGN_S)
                is_dead = bool(dead[r, t])
                env = writer.envelope(k, names[r], f"{names[r].lower()}-{1 + i % 2}",
                                      dc_names[t], when, "timeout" if is_dead else "ok")
                if k == "ping":
                    rtts = ([None] * 10 if is_dead
                            else rtt_list(rng, float(base[r, t]), 10, float(loss[r])))
                    lines.append(writer.ping(env, rtts))
                elif k == "tcp":
                    rtts = ([None] * 3 if is_dead
                            else rtt_list(rng, float(base[r, t]) * 1.05, 3, float(loss[r])))
                    lines.append(writer.tcp(env, rtts))
                else:
                    env["status"] = "ok"  # the lab's bodies succeeded
                    lines.append(writer.spliced(env, k))
            fh.write(b"\n".join(lines) + b"\n" if lines else b"")
            drawn += n
    return writer.n


def matrix(out: Path, n: int, seed: int) -> int:
    """N regions × N data centres, one ping record per pair."""
    rng = np.random.default_rng(seed)
    writer = Writer(rng)
    regs = regions(n, rng)
    dcs = {f"dc-{name[-3:]}": place for name, place in regions(n, rng).items()}
    with open(out, "wb") as fh:
        for r, rp in regs.items():
            lines = []
            for d, dp in dcs.items():
                env = writer.envelope("ping", r, f"{r.lower()}-1", d, START, "ok")
                base = 1.0 + 3 * great_circle_km(rp, dp) / 200.0
                lines.append(writer.ping(env, rtt_list(rng, base, 10, 0.02)))
            fh.write(b"\n".join(lines) + b"\n")
    return writer.n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", type=Path, help="the JSON Lines file to write")
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records written")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--regions", type=int, default=300)
    parser.add_argument("--targets", type=int, default=12)
    parser.add_argument("--matrix", type=int, metavar="N",
                        help="write the N x N one-record-per-pair matrix instead")
    args = parser.parse_args()
    path = args.path.resolve()
    if path.is_relative_to(REPO):
        parser.error(f"{path} is inside the repository; write it elsewhere (e.g. /tmp)")
    t0 = time.perf_counter()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        n = (matrix(tmp, args.matrix, args.seed) if args.matrix
             else campaign(tmp, args.records, args.regions, args.targets, args.seed))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {path}: {n:,} records, {path.stat().st_size / 2**20:.0f} MiB, "
          f"seed {args.seed}, in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
