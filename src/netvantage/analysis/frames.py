"""The tidy frames every analysis function takes and returns: their columns, written once.

A :class:`Campaign` holds four frames, built by :mod:`netvantage.analysis.load`
from JSON Lines, the collector's store or an exported Parquet dataset:

``measurements`` — one row per record
    id, kind, agent, region, target, address, port (Int64, <NA> for ping/ICMP
    trace), started_at (datetime64[ns, UTC]), duration_ms, status, ok (bool),
    source, and the measurement's headline figures (float, NaN when missing):
    rtt_ms (ping: median RTT; tcp: median connect; trace: median RTT of the
    destination hop; smtp/imap: total handshake time), rtt_min_ms, loss_ratio
    (ping: lost/sent; tcp: failed attempts/attempts; trace: destination hop
    loss), jitter_ms, sent, received (Int64), handshake_ms (smtp/imap: sum of
    phases when ok), failed_phase, tls_version, cert_verified (boolean, <NA>),
    summary (bool: a schema-2 summary record, statistics without samples),
    rtt_stat (which statistic of the record's RTTs rtt_ms is: "median" for
    ping/tcp/trace samples; for a summary the figure chosen, see
    :mod:`netvantage.analysis.load`), rtt_samples (Int64: RTTs behind the
    record's figures; <NA> when a summary does not say), rtt_sd_ms (the sample
    standard deviation of the record's own RTTs: ping/tcp with two or more
    received, or a summary's stdev_ms; NaN otherwise).

``samples`` — one row per RTT sample (ping echo, tcp attempt)
    id, kind, region, target, port, started_at, seq, rtt_ms (NaN = lost).

``hops`` — one row per (trace, TTL, responder); a silent TTL is one row with address <NA>
    id, region, target, started_at, protocol, ttl, address, replies, sent,
    loss_ratio (of the TTL), rtt_min_ms, rtt_median_ms, icmp_type,
    is_destination, asn, as_org, country, city, lat, lon.

``phases`` — one row per handshake phase
    id, kind, region, target, port, mode, started_at, phase, duration_ms (NaN if
    the phase failed), ok.

``readiness`` — one row per (mailready record, check); ``None`` when the source has none
    id, region, target, address, started_at, check, status (pass / warn / fail /
    unknown), summary, evidence (the check's evidence, one item a line).

``pmtu`` — one row per pmtu record; ``None`` when the source has none
    id, agent, region, target, address, started_at, protocol, ip_version, local_mtu,
    path_mtu, reached, ptb_received, ptb_mtu, ptb_from, black_hole, hop_ttl,
    hop_address, next_hop_address (:data:`netvantage.analysis.pmtu.PMTU_COLUMNS`).

``locations`` (given by the user or ``data/locations/``) — one row per place
    name (a region label or a target name), role ("region" or "dc"), lat, lon,
    country, continent, iata.

Categorical dtypes are used for the repeated strings (kind, agent, region,
target, status, phase): the group-bys over millions of rows are made of them.

The child frames' ``id`` (samples, hops, phases) is a Categorical too when the loader
builds them from records whose ids are distinct (always, after :func:`load`'s dedup):
its categories are the measurements' ids — the same Index for the three frames, in the
measurements' row order — so that a row's code is its record's row in ``measurements``
(:func:`netvantage.analysis.codes.record_rows`).  The codes are 4 bytes a row where the
strings were some 24 (at 1M records, the samples' id took 109 MiB as strings).  Frames
built by hand may hold the ids as strings: every analysis function takes either.
A frame of measurements filtered or reordered no longer matches those codes; the
functions then look the ids up as strings.  Sorting or grouping a child frame by ``id``
orders it as the categories are, the records' row order, not by the ids' text: sort by
``frame["id"].astype(str)`` for that.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["HOP_COLUMNS", "MEASUREMENT_COLUMNS", "PHASE_COLUMNS", "READINESS_COLUMNS",
           "SAMPLE_COLUMNS", "Campaign"]

MEASUREMENT_COLUMNS = (
    "id", "kind", "agent", "region", "target", "address", "port", "started_at", "duration_ms",
    "status", "ok", "source", "rtt_ms", "rtt_min_ms", "loss_ratio", "jitter_ms", "sent",
    "received", "handshake_ms", "failed_phase", "tls_version", "cert_verified", "summary",
    "rtt_stat", "rtt_samples", "rtt_sd_ms",
)
SAMPLE_COLUMNS = ("id", "kind", "region", "target", "port", "started_at", "seq", "rtt_ms")
HOP_COLUMNS = (
    "id", "region", "target", "started_at", "protocol", "ttl", "address", "replies", "sent",
    "loss_ratio", "rtt_min_ms", "rtt_median_ms", "icmp_type", "is_destination", "asn",
    "as_org", "country", "city", "lat", "lon",
)
PHASE_COLUMNS = ("id", "kind", "region", "target", "port", "mode", "started_at", "phase",
                 "duration_ms", "ok")
READINESS_COLUMNS = ("id", "region", "target", "address", "started_at", "check", "status",
                     "summary", "evidence")
LOCATION_COLUMNS = ("name", "role", "lat", "lon", "country", "continent", "iata")


@dataclass(frozen=True)
class Campaign:
    """A campaign's results as tidy frames (see the module docstring for the columns)."""

    measurements: pd.DataFrame
    samples: pd.DataFrame
    hops: pd.DataFrame
    phases: pd.DataFrame
    #: mail readiness checks (``mailready`` records), kept apart from the measurements
    readiness: pd.DataFrame | None = None
    #: path MTU findings (``pmtu`` records, :mod:`netvantage.analysis.pmtu`), apart too
    pmtu: pd.DataFrame | None = None
