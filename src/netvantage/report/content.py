"""What the report says, as plain data: sentences and tables built from an :class:`Analysis`.

Both renderers (HTML and Markdown) read the same :class:`ReportContent`, so the two formats
cannot disagree.  Nothing here decides anything: the recommendation is
``Analysis.winner``, the ranking and its intervals are ``Analysis.ranking``, the flags are
``Analysis.flags`` row for row, and the path diagnosis is their ``where`` column.  This
module only words them and arranges them (which flags to quote first, how to group flagged
regions per data centre for the headline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..analysis.coverage import CONFIDENCE_RULE
from ..analysis.frames import Campaign
from ..analysis.place import Placement
from ..analysis.summary import Analysis, condense_fails, shown_breakdown
from .coverage import CoverageSection, coverage_section
from .detours import DetourSection, detour_section
from .mixes import MixSection, mix_section
from .physics import PhysicsSection, physics_section
from .placement import PlacementSection, placement_section
from .pmtu import PmtuSection, pmtu_section
from .readiness import ReadinessSection, readiness_section

__all__ = ["FlagGroup", "FlaggedPair", "Recommendation", "ReportContent", "Table", "anchor",
           "collect_content", "distinct_text", "duration_text"]


@dataclass(frozen=True, slots=True)
class Table:
    """A table of display strings; ``numeric`` right-aligns a column, ``marks`` tags rows."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    marks: tuple[str, ...] = ()  # per row: "" or a CSS-ish tag ("winner", "flagged")
    note: str = ""  # what the table leaves out, shown under it

    def mark(self, i: int) -> str:
        return self.marks[i] if i < len(self.marks) else ""


@dataclass(frozen=True, slots=True)
class Recommendation:
    question: str
    winner: str | None
    answer: str  # the sentence after the winner's name
    confidence: str  # "high" / "moderate" / "low", with the rule in ``confidence_rule``
    confidence_rule: str
    evidence: tuple[str, ...]  # how confident, in numbers
    would_change: tuple[str, ...]  # what would change the answer


@dataclass(frozen=True, slots=True)
class FlagGroup:
    """Regions degraded towards one data centre, for the headline."""

    target: str
    since: str | None  # when every flag of the group is a change over time
    headline: str
    lines: tuple[str, ...]  # one per region: what is wrong and where it starts


@dataclass(frozen=True, slots=True)
class FlaggedPair:
    """One flagged (region, data centre), for its own section."""

    region: str
    target: str
    anchor: str
    flags: Table
    where: tuple[str, ...]  # the flags' path diagnosis, sentence by sentence
    hops: Table | None


@dataclass(frozen=True, slots=True)
class ReportContent:
    title: str
    generated: str
    version: str
    recommendation: Recommendation
    flag_groups: tuple[FlagGroup, ...]
    ranking: Table
    breakdown: Table
    flagged: tuple[FlaggedPair, ...]
    gathering: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    changes: dict[str, Any] | None = None  # analysis.episodes: events first
    detours: DetourSection | None = None
    mixes: MixSection | None = None
    coverage: CoverageSection | None = None
    physics: PhysicsSection | None = None
    placement: PlacementSection | None = None  # the best single site, the best pair
    ranking_note: str = ""  # what the 95 % CI and p(best) columns rest on, or why empty
    calm: str = ""  # the sentence shown when no region is flagged: what was tested
    readiness: ReadinessSection | None = None  # "Will mail flow on day one?"
    pmtu: PmtuSection | None = None  # path MTU per pair: black holes first


# --------------------------------------------------------------------------- formatting


def _num(value: Any, digits: int = 0) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else f"{x:,.{digits}f}"


def _pct(value: Any, digits: int = 0) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else f"{x:.{digits}%}"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _when(ts: Any) -> str:
    return "–" if _missing(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(td: Any) -> str:
    """A time span as "50 s", "8 min 0 s", "2 h 5 min" (pandas prints "0 days 00:00:50")."""
    if _missing(td):
        return "–"
    total = round(pd.Timedelta(td).total_seconds())
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def distinct_text(column: pd.Series) -> list[str]:
    """The distinct values of ``column`` that are not missing, as text (those of
    ``column.dropna().astype(str)``), in order of appearance: the values are found first
    and only they converted, not every row (a samples frame has hundreds of thousands)."""
    return [str(v) for v in pd.Series(column.unique()).dropna().astype(str).unique()]


def _and(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def anchor(region: str, target: str) -> str:
    """An HTML id for a flagged pair's section (also the Markdown heading's text)."""
    safe = "".join(ch if ch.isalnum() else "-" for ch in f"{region}-{target}".lower())
    return f"flag-{safe}"


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(w for w in weights.values() if w > 0)
    return {r: (w / total if total > 0 else 0.0) for r, w in weights.items()}


# --------------------------------------------------------------------------- recommendation


def _recommendation(result: Analysis) -> Recommendation:
    weights = _normalised(result.weights)
    mix = ", ".join(f"{r} {w:.0%}" for r, w in sorted(weights.items(), key=lambda kv: -kv[1])
                    if w > 0)
    question = ("Which data centre should host the service so that its clients — "
                f"{mix} — reach it best, and where are they badly served?")
    table = result.ranking.table.sort_values("rank").reset_index(drop=True)
    winner = result.winner
    if winner is None or table.empty:
        return Recommendation(question, None, "no data centre could be ranked: the data hold "
                              "no target measured from the weighted regions.", "low",
                              "", (), ())
    best = table.iloc[0]
    st = result.stability
    loo = st.leave_one_out
    loo_same = int(loo["same"].sum()) if len(loo) else 0
    p_best = float(best["p_best"])
    high = (p_best >= 0.95 and st.dirichlet_share >= 0.9
            and (len(loo) == 0 or loo_same == len(loo)))
    moderate = p_best >= 0.8 and st.dirichlet_share >= 0.7
    level = "high" if high else "moderate" if moderate else "low"
    if result.coverage is not None:  # the rule of analysis.coverage: margin against noise
        level = result.coverage.confidence.level
    rule = CONFIDENCE_RULE if result.coverage is not None else (
            "high: best in ≥ 95 % of bootstrap resamplings, first in ≥ 90 % of perturbed "
            "client mixes and in every leave-one-region-out check; moderate: ≥ 80 % and "
            "≥ 70 %; low otherwise")
    answer = (f"has the lowest weighted cost for this client mix: a score of "
              f"{_num(best['score'])} ms-equivalent ("
              + (f"95 % CI {_num(best['score_lo'])}–{_num(best['score_hi'])}"
                 if not _missing(best['score_lo']) else _no_interval(best))
              + "; lower is better).")
    evidence = [
        f"Best in {_pct(p_best)} of bootstrap resamplings of the records (p_best)."
        if not math.isnan(p_best) else _no_resampling(table),
        f"Stays first in {_pct(st.dirichlet_share)} of perturbed client mixes (each share "
        f"varied by about ±15 %).",
    ]
    if len(loo):
        evidence.append(f"Stays first in {loo_same} of {len(loo)} checks leaving one region's "
                        "clients out.")
    evidence.append(
        "Meets every service threshold in every weighted region." if bool(
            best["meets_thresholds"]) else
        f"Does not meet every service threshold: {best['fails']}.")
    return Recommendation(question, winner, answer, level, rule, tuple(evidence),
                          tuple(_would_change(result, table)))


_FEW = "fewer than two records in some pair"


def _no_interval(row: Any) -> str:
    """Why a candidate's score has no interval, in a few words."""
    basis = str(row.get("ci_basis", "") or "")
    if basis.startswith(_FEW):
        return "no interval: a weighted pair of it has a single record, nothing to resample"
    if basis == "no score":
        return "no interval: no score"
    return "no interval: no bootstrap was run"


def _no_resampling(table: pd.DataFrame) -> str:
    """The evidence line when there is no p(best): there were no resamplings, and why."""
    basis = table["ci_basis"].astype(str) if "ci_basis" in table.columns else pd.Series([])
    few = table.loc[basis.str.startswith(_FEW), "target"].astype(str).tolist()
    if few and len(few) == int(table["score"].notna().sum()):
        return ("No bootstrap resampling: every candidate has a weighted pair measured by a "
                "single record (one snapshot per pair), so there is nothing to resample; "
                "no interval and no p(best). The confidence rests on the margin against "
                "the measurement noise and on the client-mix checks.")
    if few:
        return ("No p(best): " + _and(few) + " ha" + ("s" if len(few) == 1 else "ve")
                + " a weighted pair with a single record, so the resamplings cannot compare "
                "every candidate. The confidence rests on the margin against the measurement "
                "noise and on the client-mix checks.")
    return "No bootstrap resampling was run, so there is no p(best)."


def _ranking_note(table: pd.DataFrame) -> str:
    """What the ranking table's 95 % CI and p(best) columns rest on (or why they are empty)."""
    has_ci = table["score_lo"].notna() if "score_lo" in table.columns else pd.Series([])
    if has_ci.all() and len(has_ci):
        return ("95 % CI from a stratified bootstrap of the records; p(best): share of "
                "bootstrap replicates in which the data centre scores lowest.")
    if has_ci.any():
        return ("95 % CI from a stratified bootstrap of the records, where every weighted "
                "pair has two records or more (– otherwise); p(best): share of bootstrap "
                "replicates in which the data centre scores lowest, – when some candidate "
                "could not be resampled.")
    if table.empty:
        return ""
    return ("No 95 % CI and no p(best) (–): no candidate has a record to resample in every "
            "weighted pair (a single record per pair, such as one snapshot of a latency "
            "matrix, has none).")


def _calm(result: Analysis) -> str:
    """What "no region is flagged" means here: the tests that could run, and those that could
    not."""
    could = ["than its peers"]
    could_not = []
    ph = result.physics
    located = 0 if ph is None or ph.pairs.empty else int(
        (ph.pairs["status"] != "unlocated").sum())
    if located:
        could.append("than the physical bound")
    else:
        could_not.append("the physical bound (no pair with a minimum RTT and the places of "
                         "both ends" + ("" if ph is not None else ": no --locations") + ")")
    span = result.span
    if span is not None and pd.Timedelta(span[1] - span[0]) >= 2 * result.window:
        could.append("than its own recent past")
    else:
        could_not.append("its own recent past (the campaign spans under two history "
                         "windows)" if span is not None and span[1] > span[0] else
                         "its own recent past (every record was taken at one time)")
    text = ("No region is flagged: no (region, data centre) pair is significantly worse "
            + _and(could) + ".")
    if could_not:
        text += " Not tested: " + "; ".join(could_not) + "."
    return text


def _changes(result: Analysis) -> dict[str, Any] | None:
    """The events-and-episodes section's strings, with the window as a plain duration."""
    if result.changes is None:
        return None
    section = result.changes.report_section()
    if result.changes.window is not None:
        section["window"] = duration_text(pd.Timedelta(result.changes.window))
    return section


def _would_change(result: Analysis, table: pd.DataFrame) -> list[str]:
    out: list[str] = []
    best = table.iloc[0]
    winner = str(best["target"])
    if not bool(best["meets_thresholds"]):
        out.append(f"No data centre meets every service threshold in every region, so "
                   f"{winner} ranks first on score alone; a candidate that met them all would "
                   "rank first whatever its score.")
    if len(table) > 1:
        second = table.iloc[1]
        runner = str(second["target"])
        gap = float(second["score"]) - float(best["score"])
        bd = result.ranking.breakdown
        per = (bd[bd["target"] == runner].set_index("region")["weighted_cost"]
               - bd[bd["target"] == winner].set_index("region")["weighted_cost"]).dropna()
        per = per.sort_values(ascending=False)
        ci = (f"95 % CI {_num(second['score_lo'])}–{_num(second['score_hi'])}"
              if not _missing(second["score_lo"]) else "no interval")
        text = (f"The runner-up, {runner} (score {_num(second['score'])}, {ci}), would need "
                f"to be {_num(gap)} ms-equivalent cheaper overall")
        worse = [f"{r} (+{_num(v)})" for r, v in per.items() if v >= 0.5][:3]
        better = [f"{r} ({_num(v)})" for r, v in per.items() if v <= -0.5]
        if worse:
            text += f"; it loses most in {_and(worse)}"
        if better:
            text += f" and gains in {_and(better)}"
        text += " (weighted cost against the winner)."
        out.append(text)
        lo2, hi1 = float(second["score_lo"]), float(best["score_hi"])
        if not math.isnan(lo2) and not math.isnan(hi1) and lo2 <= hi1:
            out.append(f"The intervals of {winner} and {runner} overlap: the data do not "
                       "yet separate them; a longer campaign would.")
        if not bool(second["meets_thresholds"]) and second["fails"]:
            out.append(f"{runner} also misses thresholds: {second['fails']}.")
    st = result.stability
    for row in st.leave_one_out.itertuples():
        if not row.same:
            out.append(f"Without the clients in {row.left_out}, {row.winner} would win.")
    others = st.wins[(st.wins["target"] != winner) & (st.wins["share"] > 0)]
    for row in others.itertuples():
        out.append(f"{row.target} wins in {_pct(row.share)} of perturbed client mixes.")
    return out


# --------------------------------------------------------------------------- flags


def _flag_phrase(f: Any) -> str:
    """A short phrase for one flag row (its ``evidence`` column says it in full)."""
    since = "" if _missing(f.since) else f" since {pd.Timestamp(f.since):%H:%M:%S} UTC"
    if f.test == "bound":
        return (f"a detour: minimum RTT {_num(f.value)} ms where distance allows about "
                f"{_num(f.reference)} ms (+{_num(f.effect)} ms)")
    if f.test == "peers" and f.metric == "rtt_ms":
        return (f"slower than other regions: median RTT {_num(f.value)} ms where peers "
                f"predict {_num(f.reference)} ms (+{_num(f.effect)} ms)")
    if f.metric == "loss_ratio":
        versus = "before" if f.test == "history" else "at peers"
        return f"loss {_pct(f.value, 1)}{since} vs {_pct(f.reference, 1)} {versus}"
    if f.test == "history":
        return (f"median RTT {_num(f.value)} ms{since} vs {_num(f.reference)} ms before "
                f"(+{_num(f.effect)} ms)")
    return str(f.evidence)


def _where_parts(where: Any) -> list[str]:
    """The diagnosis sentences of a ``where`` text (they are joined by "; " in it)."""
    if _missing(where):
        return []
    parts: list[str] = []
    for chunk in str(where).split("; "):
        # Continuations ("later hops 6%", "0 of 192 before it") belong to the sentence before.
        if parts and not chunk.startswith(("RTT first", "loss first")):
            parts[-1] += "; " + chunk
        else:
            parts.append(chunk)
    return parts


def _where_short(where: Any) -> str | None:
    """"loss first shows at TTL 5, 10.10.255.9 (AS64710 …, Lisbon)" (else the RTT jump)."""
    parts = _where_parts(where)
    for prefix in ("loss first", "RTT first"):
        for p in parts:
            if p.startswith(prefix):
                return p.split(": ", 1)[0]
    return parts[0].split(": ", 1)[0] if parts else None


def _pair_summary(rows: Sequence[Any]) -> str:
    # One phrase per (test, metric), the ping flag preferred: ping and tcp usually agree.
    order = sorted(rows, key=lambda f: (f.test, f.metric, int(f.kind != "ping")))
    seen: set[tuple[str, str]] = set()
    phrases: list[str] = []
    for f in order:
        key = (str(f.test), str(f.metric))
        if key in seen:
            continue
        seen.add(key)
        phrases.append(_flag_phrase(f))
    return "; ".join(phrases)


def _by_pair(flags: pd.DataFrame) -> list[tuple[tuple[str, str], list[Any]]]:
    """The flags' rows (``itertuples``) per (region, target), in the order and with the
    keys of ``flags.groupby(["region", "target"], sort=True)``, rows in frame order: one
    pass over the frame instead of a frame per pair (a sort, a filter and an ``itertuples``
    per pair were most of the words' time: 0.3 s for the 93 flagged pairs of 100k
    synthetic records)."""
    grouped = flags.groupby(["region", "target"], sort=True)
    codes = grouped.ngroup().to_numpy()  # -1: a row without a region or a target
    rows = list(flags.itertuples())
    out: list[tuple[tuple[str, str], list[Any]]] = []
    for g in range(grouped.ngroups):
        mine = [rows[i] for i in np.flatnonzero(codes == g)]
        if mine:
            out.append(((str(mine[0].region), str(mine[0].target)), mine))
    return out


def _first_where(rows: Sequence[Any]) -> Any:
    """The first ``where`` text of a pair's flags (None when none has one)."""
    return next((f.where for f in rows if not _missing(f.where)), None)


def _flag_groups(flags: pd.DataFrame) -> list[FlagGroup]:
    if flags.empty:
        return []
    pairs: list[tuple[str, str, str | None, str, str | None]] = []
    for (region, target), rows in _by_pair(flags):
        history_only = all(f.test == "history" for f in rows)
        since = (_when(min((f.since for f in rows if not _missing(f.since)), default=None))
                 if history_only else None)
        where = _first_where(rows)
        pairs.append((region, target, since, _pair_summary(rows),
                      None if where is None else _where_short(where)))
    out: list[FlagGroup] = []
    # Standing problems first (they are what a choice of site must live with), then changes.
    keys = sorted({(t, s) for _, t, s, _, _ in pairs}, key=lambda k: (k[1] is not None, k))
    for target, since in keys:
        members = [p for p in pairs if p[1] == target and p[2] == since]
        regions = [p[0] for p in members]
        head = (f"Clients in {_and(regions)} {'is' if len(regions) == 1 else 'are'} degraded "
                f"towards {target}" + (f" since {since}" if since else ""))
        lines = tuple(f"{r}: {summary}" + (f" — {where}" if where else "")
                      for r, _, _, summary, where in members)
        out.append(FlagGroup(target, since, head, lines))
    return out


def _text_in(column: pd.Series, texts: set[str]) -> npt.NDArray[np.bool_]:
    """Whether each value of ``column``, as text (``astype(str)``), may be one of ``texts``
    (a prefilter: False only where it is not): a categorical column's categories are
    converted, not its every row, and its rows without a value are kept."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        known = column.cat.categories.astype(str).isin(list(texts))
        return np.where(codes >= 0, known[codes], True)
    return column.astype(str).isin(list(texts)).to_numpy()


#: A flagged pair's typical path: per TTL, (TTL, the table row's cells).
_PathRows = list[tuple[int, tuple[str, ...]]]


def _typical_paths(hops: pd.DataFrame, pairs: set[tuple[str, str]]
                   ) -> dict[tuple[str, str], _PathRows]:
    """Per pair of ``pairs`` (region, target) that has hops: per TTL over all its traces,
    the usual responder (the address of the most hop rows there, a row per trace and
    responder; of equals, the first in text order) with its AS, place and median minimum
    RTT, the pooled loss and the traces it answered in — every pair and TTL from one
    group-by of the pairs' hops (a filter per pair and TTL took 0.85 s for the 93 flagged
    pairs of 100k synthetic records; this takes 0.05 s)."""
    if hops.empty or not pairs:
        return {}
    # The rows whose region may be one of the pairs' and whose target one of theirs (each
    # column's text read once per category), then of those the pairs' own rows.
    near = (_text_in(hops["region"], {r for r, _ in pairs})
            & _text_in(hops["target"], {t for _, t in pairs}))
    region = hops["region"][near].astype(str)
    target = hops["target"][near].astype(str)
    mask = pd.MultiIndex.from_arrays([region, target]).isin(list(pairs))
    sel = hops.loc[near, ["id", "ttl", "address", "sent", "replies", "rtt_min_ms", "asn",
                          "as_org", "city", "country"]][mask].reset_index(drop=True)
    sel["region"] = region[mask].to_numpy()
    sel["target"] = target[mask].to_numpy()
    sel["pos"] = np.arange(len(sel))  # frame order: the first row of each responder
    keys = ["region", "target", "ttl"]
    totals = sel.groupby(keys, sort=True)[["sent", "replies"]].sum()
    traces = sel.groupby(["region", "target"], sort=False)["id"].nunique()
    answered = sel[sel["address"].notna()]
    by_address = answered.groupby([*(answered[k] for k in keys),
                                   answered["address"].astype(str).rename("addr")], sort=True)
    usual = pd.DataFrame({"n": by_address.size(),
                          "first": by_address["pos"].min(),
                          "seen": by_address["id"].nunique(),
                          "rtt": by_address["rtt_min_ms"].median()}).reset_index()
    usual = (usual.sort_values([*keys, "n", "addr"], ascending=[True, True, True, False, True],
                               kind="stable")
             .drop_duplicates(keys, keep="first"))
    found = {(r, t, ttl): (addr, int(first), int(seen), rtt) for r, t, ttl, addr, first, seen, rtt
             in zip(usual["region"], usual["target"], usual["ttl"], usual["addr"],
                    usual["first"], usual["seen"], usual["rtt"], strict=True)}
    places = [sel[c].array for c in ("asn", "as_org", "city", "country")]
    out: dict[tuple[str, str], _PathRows] = {}
    for (r, t, ttl), sent, replies in zip(totals.index, totals["sent"].to_numpy(dtype=float),
                                          totals["replies"].to_numpy(dtype=float), strict=True):
        responder = found.get((r, t, ttl))
        if responder is not None:
            addr, first, seen, rtt = responder
            asn, org, city, country = (cast(Any, where[first]) for where in places)
            cells: tuple[str, ...] = (
                str(addr), "" if _missing(asn) else f"AS{int(asn)}",
                "" if _missing(org) else str(org),
                ", ".join(str(v) for v in (city, country) if not _missing(v)), _num(rtt, 1))
        else:
            cells, seen = ("(silent)", "", "", "", "–"), 0
        ttl_i = int(cast(Any, ttl))
        out.setdefault((str(r), str(t)), []).append((ttl_i, (
            str(ttl_i), *cells, _pct(1 - replies / sent, 1) if sent > 0 else "–",
            f"{seen}/{traces[(r, t)]}")))
    return out


def _typical_hops(path: _PathRows | None, marked_ttls: Sequence[int]) -> Table | None:
    """A flagged pair's typical path (:func:`_typical_paths`) as a table, the TTLs where
    latency or loss jumps marked."""
    if not path:
        return None
    return Table(("TTL", "usual responder", "AS", "AS name", "place", "RTT min, median (ms)",
                  "loss (pooled)", "traces seen"), tuple(cells for _, cells in path),
                 (True, False, False, False, False, True, True, True),
                 tuple("flagged" if ttl in marked_ttls else "" for ttl, _ in path))


def _flagged_pairs(result: Analysis, campaign: Campaign) -> list[FlaggedPair]:
    out: list[FlaggedPair] = []
    flags = result.flags
    if flags.empty:
        return out
    by_pair = _by_pair(flags)
    hops = _typical_paths(campaign.hops, {key for key, _ in by_pair})
    # Each pair's first row of the path diagnosis: its TTLs where latency or loss jumps.
    paths = result.paths
    jumps: dict[tuple[str, str], list[int]] = {}
    if not paths.empty:
        for region, target, *ttls in zip(paths["region"], paths["target"], paths["jump_ttl"],
                                         paths["loss_ttl"], strict=True):
            jumps.setdefault((str(region), str(target)),
                             [int(v) for v in ttls if not _missing(v)])
    for (region, target), rows in by_pair:
        table = Table(("test", "kind", "metric", "evidence", "since", "p-value"),
                      tuple((str(f.test), str(f.kind), str(f.metric), str(f.evidence),
                             _when(f.since), f"{float(cast(Any, f.p_value)):.1e}")
                            for f in rows),
                      (False, False, False, False, False, True))
        where = _first_where(rows)
        out.append(FlaggedPair(region, target, anchor(region, target), table,
                               () if where is None else tuple(_where_parts(where)),
                               _typical_hops(hops.get((region, target)),
                                             jumps.get((region, target), []))))
    return out


# --------------------------------------------------------------------------- tables


def _ranking_table(result: Analysis) -> Table:
    table = result.ranking.table.sort_values("rank")
    regions = set(result.ranking.breakdown["region"].astype(str))
    rows = tuple((str(r.rank), str(r.target), _num(r.score),
                  "–" if _missing(r.score_lo) else f"{_num(r.score_lo)}–{_num(r.score_hi)}",
                  _pct(r.p_best),
                  "met" if r.meets_thresholds
                  else f"not met: {condense_fails(str(r.fails), regions)}")
                 for r in table.itertuples())
    marks = tuple("winner" if str(r.target) == result.winner else "" for r in table.itertuples())
    return Table(("rank", "data centre", "score", "95 % CI", "p(best)", "service thresholds"),
                 rows, (True, False, True, True, True, False), marks)


#: The per-region table's row budget: a 250 x 250 city matrix has 62,500 pairs, a page
#: of them is tens of megabytes that no reader scrolls.  Beyond it the table keeps, per
#: region, its best data centre and the recommended one, and every flagged pair.
BREAKDOWN_ROWS = 2000


def _breakdown_table(result: Analysis, max_rows: int = BREAKDOWN_ROWS) -> Table:
    flagged = set(zip(result.flags["region"].astype(str), result.flags["target"].astype(str),
                      strict=True))
    bd, note = shown_breakdown(result.ranking.breakdown, result.flags, result.winner, max_rows)
    if note:
        note += " Every pair: netvantage analyse --format json (the breakdown)."
    bd = bd.sort_values(["region", "cost"])
    weights = _normalised(result.weights)
    rows: list[tuple[str, ...]] = []
    marks: list[str] = []
    for r in bd.itertuples():
        key = (str(r.region), str(r.target))
        rows.append((str(r.region), str(r.target), _pct(weights.get(str(r.region), r.weight)),
                     str(int(cast(Any, r.records))), _num(r.rtt_p50_ms, 1), _num(r.rtt_p95_ms, 1),
                     _num(r.loss_pct, 1), _num(r.handshake_p95_ms), _num(r.failure_pct, 1),
                     _num(r.cost), "met" if r.meets_thresholds else str(r.fails),
                     "flagged" if key in flagged else ""))
        marks.append("flagged" if key in flagged else "")
    return Table(("region", "data centre", "weight", "records", "RTT p50 (ms)", "RTT p95 (ms)",
                  "loss %", "handshake p95 (ms)", "failed %", "cost", "thresholds", "flag"),
                 tuple(rows), (False, False, True, True, True, True, True, True, True, True,
                               False, False), tuple(marks), note)


def _gathering(campaign: Campaign, result: Analysis, sources: Sequence[str],
               version: str) -> list[tuple[str, str]]:
    m = campaign.measurements
    out: list[tuple[str, str]] = []
    if sources:
        out.append(("input", ", ".join(sources)))
    out.append(("records", f"{len(m):,}"))
    kinds = m["kind"].astype(str).value_counts().sort_index()
    out.append(("per kind", ", ".join(f"{k} {n:,}" for k, n in kinds.items())))
    status = m["status"].astype(str).value_counts()
    out.append(("status", ", ".join(f"{k} {n:,}" for k, n in status.items() if n)))
    src = m["source"].astype(str).value_counts()
    out.append(("sources", ", ".join(f"{k} {n:,}" for k, n in src.items() if n)))
    agents = (m[["agent", "region"]].astype(str).drop_duplicates()
              .sort_values(["region", "agent"]))
    out.append(("agents", f"{len(agents)}: " + ", ".join(
        f"{a.agent} ({a.region})" for a in agents.itertuples())))
    regions = sorted(distinct_text(m["region"]))
    out.append(("client regions", f"{len(regions)}: " + ", ".join(regions)))
    dcs = m[["target", "address"]].astype(str).drop_duplicates().sort_values("target")
    out.append(("data centres", ", ".join(
        f"{d.target}" + ("" if _missing(d.address) or str(d.address) in ("nan", "None", "")
                         else f" ({d.address})")
        for d in dcs.itertuples())))
    if result.span is not None:
        start, end = result.span
        length = pd.Timedelta(end - start)
        out.append(("period", f"{_when(start)} to {_when(end)} ({duration_text(length)})"))
    out.append(("traces", f"{campaign.hops['id'].nunique():,} traces, {len(campaign.hops):,} "
                          "hop rows"))
    resampled = result.ranking.table["score_lo"].notna().any()
    out.append(("analysis", f"history window {duration_text(result.window)}; "
                            + ("score CIs from a stratified bootstrap of the records"
                               if resampled else "no score CIs (no pair had records to "
                               "resample)")
                            + "; costs in ms-equivalents of median RTT"))
    out.append(("tool", f"netvantage {version}"))
    return out


def collect_content(campaign: Campaign, result: Analysis, *, title: str, version: str,
                    generated: pd.Timestamp, sources: Sequence[str] = (),
                    placement: Placement | None = None) -> ReportContent:
    """Everything the report says, from the campaign and its analysis (no figures);
    ``placement``: the best single site and pair (:mod:`netvantage.analysis.place`)."""
    return ReportContent(
        title=title,
        generated=_when(generated),
        version=version,
        recommendation=_recommendation(result),
        flag_groups=tuple(_flag_groups(result.flags)),
        ranking=_ranking_table(result),
        breakdown=_breakdown_table(result),
        flagged=tuple(_flagged_pairs(result, campaign)),
        gathering=tuple(_gathering(campaign, result, sources, version)),
        notes=tuple(result.notes),
        changes=_changes(result),
        detours=detour_section(result.detours),
        mixes=mix_section(result.mixes),
        coverage=coverage_section(result.coverage),
        physics=physics_section(result.physics),
        placement=placement_section(placement),
        ranking_note=_ranking_note(result.ranking.table),
        calm=_calm(result),
        readiness=readiness_section(result.readiness),
        pmtu=pmtu_section(result.pmtu),
    )
