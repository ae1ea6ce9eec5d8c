"""A seeded synthetic campaign in the ``samples`` layout, for bench/analysis_scale.py.

Writes one Parquet file with the columns of the ``samples`` frame
(:mod:`netvantage.analysis.frames`): id, kind, region, target, port, started_at, seq,
rtt_ms.  By default 10 million rows: 20 client regions, 8 data centres, 4 kinds, a
7-day campaign, about 2 % of the samples lost (a null ``rtt_ms``, read back as NaN).

The RTT of a sample is the (region, data centre) base latency (the great-circle distance
between the two airports at 2/3 c with a path stretch of 1.5, plus 1 ms of access
latency) times a per-kind factor, plus log-normal queueing noise (median 1.5 ms, heavy
right tail); each region has its own loss rate (uniform in 0.5 %–3.5 %, about 2 % over
all).  Every measurement (one ``id``) has the samples of one (region, target, kind) —
10 echoes for ping, 4 attempts for tcp, 6 for trace and smtp — and measurements are
written in time order, so the groups are interleaved as in a real campaign.

The file is written in row groups of ``--row-group`` rows (a few: 5 × 2 M by default),
one chunk at a time, so the generator's memory stays near one chunk (a few hundred MiB)
whatever ``--rows`` is.  ``region``, ``target`` and ``kind`` are plain strings in the
Arrow schema, dictionary-encoded in the Parquet file (as pyarrow writes repeated strings),
so a reader decides whether to turn them into Python strings or categoricals.

    .venv/bin/python bench/make_synthetic.py [/tmp/nv-10m.parquet] [--rows 10000000]
        [--seed 20240611] [--row-group 2000000]

The same seed and arguments give the same file content.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_PATH = "/tmp/nv-10m.parquet"

# Client regions and data centres at their airports (lat, lon).
REGIONS: dict[str, tuple[float, float]] = {
    "ZM-LUN": (-15.33, 28.45), "ZA-JNB": (-26.14, 28.25), "NG-LOS": (6.58, 3.32),
    "KE-NBO": (-1.32, 36.93), "EG-CAI": (30.12, 31.41), "GB-LHR": (51.47, -0.45),
    "DE-MUC": (48.35, 11.79), "ES-MAD": (40.47, -3.56), "PL-WAW": (52.17, 20.97),
    "CA-YYZ": (43.68, -79.62), "US-SEA": (47.45, -122.31), "US-ATL": (33.64, -84.43),
    "BR-GRU": (-23.43, -46.47), "AR-EZE": (-34.82, -58.54), "MX-MEX": (19.44, -99.07),
    "IN-BOM": (19.09, 72.87), "SG-SIN": (1.36, 103.99), "JP-NRT": (35.77, 140.39),
    "AU-SYD": (-33.95, 151.18), "NZ-AKL": (-37.01, 174.79),
}
DATA_CENTRES: dict[str, tuple[float, float]] = {
    "dc-fra": (50.03, 8.57), "dc-ams": (52.31, 4.76), "dc-iad": (38.95, -77.46),
    "dc-sjc": (37.36, -121.93), "dc-gru": (-23.43, -46.47), "dc-sin": (1.36, 103.99),
    "dc-nrt": (35.77, 140.39), "dc-jnb": (-26.14, 28.25),
}
# Four kinds (ping and tcp give samples in real campaigns; four make the group count of
# the issue), with samples per measurement, an RTT factor and their share of measurements.
KINDS: dict[str, tuple[int, float, float]] = {
    "ping": (10, 1.00, 0.40),
    "tcp": (4, 1.05, 0.30),
    "trace": (6, 1.02, 0.15),
    "smtp": (6, 1.10, 0.15),
}
PORTS = {"ping": 0, "tcp": 443, "trace": 0, "smtp": 25}  # 0 = no port (<NA>)
CAMPAIGN_START_NS = 1_717_200_000 * 10**9  # 2024-06-01 00:00 UTC
CAMPAIGN_NS = 7 * 86_400 * 10**9

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("kind", pa.string()),
    ("region", pa.string()),
    ("target", pa.string()),
    ("port", pa.int64()),
    ("started_at", pa.timestamp("ns", tz="UTC")),
    ("seq", pa.int64()),
    ("rtt_ms", pa.float64()),
])


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def base_rtt_ms() -> np.ndarray:
    """(regions × data centres) base RTT: 2/3 c in fibre (200 km/ms), stretch 1.5, +1 ms."""
    out = np.empty((len(REGIONS), len(DATA_CENTRES)))
    for i, r in enumerate(REGIONS.values()):
        for j, d in enumerate(DATA_CENTRES.values()):
            out[i, j] = 1.0 + 2 * 1.5 * great_circle_km(r, d) / 200.0
    return out


def chunk(rng: np.random.Generator, n_rows: int, first_measurement: int, total_meas: int,
          base: np.ndarray, loss: np.ndarray) -> tuple[pa.RecordBatch, int]:
    """The next ``n_rows`` samples (whole measurements, the last one cut to fit)."""
    kind_names = list(KINDS)
    per_kind = np.array([KINDS[k][0] for k in kind_names])
    factor = np.array([KINDS[k][1] for k in kind_names])
    share = np.array([KINDS[k][2] for k in kind_names])
    # Enough measurements for the chunk: n_rows / the smallest sample count per measurement.
    n_meas = n_rows // int(per_kind.min()) + 1
    kind = rng.choice(len(kind_names), size=n_meas, p=share / share.sum()).astype(np.int8)
    samples_per = per_kind[kind]
    cum = np.cumsum(samples_per)
    n_meas = int(np.searchsorted(cum, n_rows)) + 1  # the measurements that fill the chunk
    kind = kind[:n_meas]
    samples_per = samples_per[:n_meas]
    region = rng.integers(0, len(REGIONS), size=n_meas, dtype=np.int8)
    target = rng.integers(0, len(DATA_CENTRES), size=n_meas, dtype=np.int8)

    # Row-level columns: every measurement's values repeated for its samples.
    row_meas = np.repeat(np.arange(n_meas), samples_per)[:n_rows]
    starts = np.cumsum(samples_per) - samples_per
    seq = np.arange(n_rows) - starts[row_meas]
    r = region[row_meas]
    t = target[row_meas]
    k = kind[row_meas]
    noise = rng.lognormal(mean=math.log(1.5), sigma=1.0, size=n_rows)
    rtt = base[r, t] * factor[k] + noise
    lost = rng.random(n_rows) < loss[r]

    ids = np.arange(first_measurement, first_measurement + n_meas)
    id_strings = np.char.add("0190", np.char.zfill(ids.astype(str), 28))
    port = np.array([PORTS[name] for name in kind_names])[k]

    # Measurement m of the campaign starts at m / total_meas of the 7 days (in order, so
    # the file is in time order); its samples are 1 s apart.
    started = (CAMPAIGN_START_NS + ((first_measurement + row_meas) * CAMPAIGN_NS) // total_meas
               + seq * 10**9)
    return pa.record_batch([
        pa.DictionaryArray.from_arrays(pa.array(row_meas.astype(np.int32)),
                                       pa.array(id_strings)).cast(pa.string()),
        pa.DictionaryArray.from_arrays(pa.array(k), pa.array(kind_names)).cast(pa.string()),
        pa.DictionaryArray.from_arrays(pa.array(r), pa.array(list(REGIONS))).cast(pa.string()),
        pa.DictionaryArray.from_arrays(pa.array(t),
                                       pa.array(list(DATA_CENTRES))).cast(pa.string()),
        pa.array(port, mask=port == 0),
        pa.array(started, type=pa.timestamp("ns", tz="UTC")),
        pa.array(seq.astype(np.int64)),
        pa.array(rtt, mask=lost),
    ], schema=SCHEMA), n_meas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH,
                        help=f"the Parquet file to write (default {DEFAULT_PATH})")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--row-group", type=int, default=2_000_000,
                        help="rows per row group, generated as one chunk")
    args = parser.parse_args()
    path = Path(args.path).resolve()
    repo = Path(__file__).resolve().parent.parent
    if path.is_relative_to(repo):
        parser.error(f"{path} is inside the repository; write it elsewhere (e.g. /tmp)")

    rng = np.random.default_rng(args.seed)
    base = base_rtt_ms()
    loss = rng.uniform(0.005, 0.035, size=len(REGIONS))  # per region, mean 2 %
    # About 7.4 samples per measurement on average: the campaign's measurement count.
    mean_samples = sum(n * s for n, _, s in KINDS.values())
    total_meas = max(1, round(args.rows / mean_samples))
    t0 = time.perf_counter()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    written = 0
    first_meas = 0
    lost = 0
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression="zstd",
                              use_dictionary=["id", "kind", "region", "target"]) as writer:
            while written < args.rows:
                n = min(args.row_group, args.rows - written)
                batch, n_meas = chunk(rng, n, first_meas, total_meas, base, loss)
                lost += batch.column(7).null_count
                writer.write_batch(batch, row_group_size=n)
                written += n
                first_meas += n_meas
                del batch
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = pq.ParquetFile(path).metadata
    print(f"wrote {path}: {written:,} rows ({lost / written:.2%} lost), "
          f"{meta.num_row_groups} row groups, {path.stat().st_size / 2**20:.0f} MiB, "
          f"seed {args.seed}, in {elapsed:.1f} s, peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
