"""The child frames' record ids as codes: a loaded ``samples``, ``hops`` and ``phases`` hold
their ``id`` as a Categorical whose categories are the measurements' ids in row order, so
that a row's code is its record's row (see :mod:`netvantage.analysis.frames`).

The codes are checked against the records themselves (how many rows of each child frame
a record makes, counted from its body), for every way the frames are built; frames built
by hand with string ids must analyse exactly as the loaded ones.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from conftest import campaign_sources
from netvantage.analysis.cluster import partitions, write_partitioned
from netvantage.analysis.codes import record_rows, rows_of, sorted_codes
from netvantage.analysis.detours import trace_detours
from netvantage.analysis.frames import Campaign
from netvantage.analysis.load import check_campaign, frames_from_records, load
from netvantage.analysis.metrics import metrics, phase_metrics, rtt_observations
from netvantage.analysis.paths import path_summary
from netvantage.analysis.summary import analyse
from netvantage.importers.atlas import import_atlas, load_probes
from netvantage.results import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
ATLAS = ROOT / "tests" / "data" / "atlas" / "made"
CHILDREN = ("samples", "hops", "phases")


def _rows_made(record: Any) -> dict[str, int]:
    """How many rows of each child frame ``record`` makes, from its body alone."""
    body = record.body
    made = dict.fromkeys(CHILDREN, 0)
    if record.kind == "ping" and getattr(body, "summary", None) is None:
        made["samples"] = len(body.rtts_ms)
    elif record.kind == "tcp" and getattr(body, "summary", None) is None:
        made["samples"] = len(body.attempts)
    elif record.kind == "trace":
        made["hops"] = sum(max(1, len(hop.responders)) for hop in body.hops)
    elif record.kind in ("smtp", "imap"):
        made["phases"] = len(body.phases)
    return made


def _check_codes(camp: Campaign, records: list[Any]) -> None:
    """Each child row's code is the row of its record in ``measurements``: the rows a
    record owns through the codes are as many as its body makes, and carry its time."""
    m = camp.measurements
    by_key = {(r.agent, r.id): r for r in records}
    # (agent, id) as loaded: a renamed id is AGENT:ID
    owner = [by_key.get((a, i)) or by_key[(a, i.split(":", 1)[1])]
             for a, i in zip(m["agent"].astype(str), m["id"].astype(str), strict=True)]
    shared = None
    for name in CHILDREN:
        frame = getattr(camp, name)
        ids = frame["id"]
        assert isinstance(ids.dtype, pd.CategoricalDtype), name
        categories = ids.cat.categories
        shared = categories if shared is None else shared
        assert categories is shared, name  # one Index for the three frames
        assert categories.tolist() == m["id"].tolist(), name
        codes = ids.cat.codes.to_numpy()
        assert len(frame) and codes.min() >= 0 and codes.max() < len(m), name
        owned = np.bincount(codes, minlength=len(m))
        want = np.array([_rows_made(r)[name] for r in owner])
        assert (owned == want).all(), name
        started = m["started_at"].to_numpy()[codes]
        assert (frame["started_at"].to_numpy() == started).all(), name
        np.testing.assert_array_equal(record_rows(ids, m["id"]), codes)


@pytest.fixture(scope="module")
def records() -> list[Any]:
    return read_jsonl(SAMPLE)


@pytest.fixture(scope="module")
def sources(records: list[Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ids")
    # the records shuffled: the measurements' order is not the ids' sorted order
    shuffled = [records[i] for i in np.random.default_rng(7).permutation(len(records))]
    return campaign_sources(shuffled, tmp)


@pytest.mark.parametrize("form", ["jsonl", "store", "parquet"])
def test_loaded_child_ids_code_their_records(form: str, sources: dict[str, Path],
                                             records: list[Any]) -> None:
    _check_codes(load(sources[form]), records)


def test_frames_from_records_code_their_records(records: list[Any]) -> None:
    _check_codes(frames_from_records(records[::-1]), records)
    # ids not distinct (frames_from_records does not deduplicate): strings, as before
    twice = frames_from_records([*records[:40], records[0]])
    assert all(getattr(twice, n)["id"].dtype == twice.measurements["id"].dtype
               for n in CHILDREN)


def test_a_renamed_id_codes_its_own_record(records: list[Any], tmp_path: Path) -> None:
    """Another agent's record with a taken id is renamed AGENT:ID: its hops' codes point at
    its own row, not at the first agent's."""
    trace = next(r for r in records if r.kind == "trace")
    other = msgspec.structs.replace(trace, agent="other-agent")
    source = tmp_path / "twice.jsonl"
    write_jsonl([*records, trace, other], source)
    camp = load(source)
    _check_codes(camp, [*records, other])
    m = camp.measurements
    mine = np.flatnonzero(camp.hops["id"].astype(str) == f"other-agent:{trace.id}")
    rows = camp.hops["id"].cat.codes.to_numpy()[mine]
    assert len(mine) and set(m["agent"].to_numpy()[rows]) == {"other-agent"}


def test_imported_records_code_their_records(tmp_path: Path) -> None:
    imported = import_atlas([ATLAS / "pings.jsonl"],
                            probes=load_probes([ATLAS / "probes.csv"])).records
    source = tmp_path / "atlas.jsonl"
    write_jsonl(imported, source)
    camp = load(source)
    assert len(camp.samples)
    codes = {n: getattr(camp, n)["id"].cat.codes.to_numpy() for n in ("samples", "hops")}
    owned = {n: np.bincount(c, minlength=len(camp.measurements)) for n, c in codes.items()}
    want = [_rows_made(r) for r in imported]
    by_id = dict(zip((r.id for r in imported), want, strict=True))
    for n in ("samples", "hops"):
        assert owned[n].tolist() == [by_id[i][n] for i in camp.measurements["id"]]


def test_a_cluster_partition_codes_its_records(records: list[Any], tmp_path: Path) -> None:
    """The Dask path loads a partition with the same loader: its codes are its rows."""
    source = tmp_path / "campaign.jsonl"
    write_jsonl(records, source)
    write_partitioned(source, tmp_path / "parts")
    for part in partitions(tmp_path / "parts"):
        camp = load(part)
        region = part.name.split("=", 1)[1]
        _check_codes(camp, [r for r in records if r.region == region])


def _with_string_ids(camp: Campaign) -> Campaign:
    """``camp`` as a user may build it: the children's ids as strings."""
    def strings(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(id=frame["id"].astype(camp.measurements["id"].dtype))

    return Campaign(camp.measurements, strings(camp.samples), strings(camp.hops),
                    strings(camp.phases), readiness=camp.readiness, pmtu=camp.pmtu)


@pytest.fixture(scope="module")
def loaded() -> Campaign:
    return load(SAMPLE)


def test_string_ids_analyse_the_same(loaded: Campaign) -> None:
    from netvantage.analysis.geo import locations

    plain = _with_string_ids(loaded)
    assert plain.samples["id"].dtype == plain.measurements["id"].dtype
    check_campaign(plain)  # the schemas take either
    places = locations(LOCATIONS)
    for where in (None, places):
        coded = analyse(loaded, locations=where).to_dict()
        assert json.dumps(analyse(plain, locations=where).to_dict(), default=str) == \
            json.dumps(coded, default=str)
    for a, b in ((phase_metrics(loaded), phase_metrics(plain)),
                 (rtt_observations(loaded.measurements, loaded.samples),
                  rtt_observations(plain.measurements, plain.samples)),
                 (metrics(loaded, n_boot=50), metrics(plain, n_boot=50)),
                 (path_summary(loaded.hops), path_summary(plain.hops)),
                 (trace_detours(loaded.hops, places, loaded.measurements),
                  trace_detours(plain.hops, places, plain.measurements))):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_codes_not_trusted_for_other_measurements(loaded: Campaign) -> None:
    """Measurements filtered or reordered no longer have the rows the codes count: the
    helpers look the ids up as strings, and find the same as for string ids."""
    m = loaded.measurements
    samples = loaded.samples
    assert record_rows(samples["id"], m["id"]) is not None
    # an equal copy of the ids is recognised, a reordered one is not
    assert record_rows(samples["id"], m["id"].copy(deep=True)) is not None
    backwards = m.iloc[::-1].reset_index(drop=True)
    assert record_rows(samples["id"], backwards["id"]) is None
    plain = samples["id"].astype(str)
    np.testing.assert_array_equal(rows_of(samples["id"], backwards["id"]),
                                  rows_of(plain, backwards["id"]))
    half = m[m["kind"].isin(["ping", "smtp"])]
    coded = Campaign(half, samples, loaded.hops, loaded.phases)
    for a, b in ((phase_metrics(coded), phase_metrics(_with_string_ids(coded))),
                 (rtt_observations(half, samples), rtt_observations(half, plain.to_frame()
                                                                    .join(samples["rtt_ms"])))):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    codes, names = sorted_codes(loaded.hops["id"])
    want_codes, want_names = sorted_codes(loaded.hops["id"].astype(str))
    np.testing.assert_array_equal(codes, want_codes)
    assert names.tolist() == want_names.tolist()


def test_record_ids_without_pandas_private_fast_path(loaded: Campaign,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A pandas without ``CategoricalDtype._from_fastpath``: the public constructor gives
    the same categories, in the records' row order."""
    load_module = importlib.import_module("netvantage.analysis.load")
    fast = load_module.record_ids(loaded.measurements)
    monkeypatch.delattr(pd.CategoricalDtype, "_from_fastpath")
    public = load_module.record_ids(loaded.measurements)
    assert fast is not None and public is not None
    assert list(public.categories) == list(fast.categories) == list(
        loaded.measurements["id"].astype(str))
