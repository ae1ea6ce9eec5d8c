"""One call from a campaign to the answer: metrics, the physical bound, where paths go
wrong, the ranking and the flags.  Pure: frames in, frames out (the caller loads).

This is what ``netvantage analyse``, the report and the notebooks call; each step
is also available on its own in its module.
"""

from __future__ import annotations

import json
import multiprocessing
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import NetvantageError
from ..text import columns, ms
from . import progress
from .codes import give_back
from .coverage import Coverage, same_city_pairs
from .coverage import coverage as coverage_of
from .degrade import degradation_flags
from .detours import Detours
from .detours import detours as detour_table
from .episodes import Changes, cadence, find_changes, series_shared, snapshots
from .frames import Campaign
from .geo import inflation as inflation_table
from .load import small_pages
from .metrics import metrics as metrics_table
from .mix import Mixes, client_regions, resolve_weights
from .mix import mixes as mix_answer
from .paths import path_evidence
from .physics import Physics
from .physics import check as physics_check
from .physics import json_keys as physics_keys
from .pmtu import PathMtu, path_mtu
from .rank import CostModel, PairCosts, Ranking, Stability, Thresholds, rank, stability
from .readiness import DEFAULT_FAIL_ON, Readiness, with_readiness
from .readiness import readiness as readiness_of

__all__ = ["Analysis", "NothingToAnalyse", "analyse", "condense_fails", "default_window",
           "equal_weights", "shown_breakdown", "weights_line"]

#: Past this many failing regions a candidate's threshold failures are summed up by
#: threshold (each region's figures stay in the per-region table).
FAILS_SHOWN = 3
#: Past this many regions the weights line says how they are spread, not each one.
WEIGHTS_SHOWN = 12
_MEASURED = re.compile(r" -?\d+(?:\.\d+)? (?:ms|%) ([<>]) ")


#: The terminal text's budgets (``Analysis.to_text``; ``full=True`` lifts them).
TEXT_BREAKDOWN_ROWS = 120
TEXT_FLAGGED_PAIRS = 40
TEXT_SECTION_LINES = 60


def shown_breakdown(breakdown: pd.DataFrame, flags: pd.DataFrame, winner: str | None,
                    max_rows: int | None) -> tuple[pd.DataFrame, str]:
    """The per-region table within ``max_rows`` (None: all of it), and what it left out.

    Past the budget it keeps, for every region, its best data centre and the recommended
    one, and every flagged pair; the note says so ("" when nothing was left out).
    """
    if max_rows is None or len(breakdown) <= max_rows:
        return breakdown, ""
    region = breakdown["region"].astype(str)
    target = breakdown["target"].astype(str)
    cost = breakdown["cost"].astype(float)
    flagged = set(zip(flags["region"].astype(str), flags["target"].astype(str), strict=True))
    keep = ((cost == cost.groupby(region).transform("min")).to_numpy(dtype=bool)
            | (target == (winner or "")).to_numpy(dtype=bool)
            | np.fromiter(((r, t) in flagged for r, t in zip(region, target, strict=True)),
                          dtype=bool, count=len(breakdown)))
    note = (f"{int(keep.sum()):,} of {len(breakdown):,} pairs shown: for every region its "
            "best data centre and the recommended one, and every flagged pair.")
    return breakdown[keep], note


def _budget(lines: list[str], budget: int | None) -> list[str]:
    """A section's text lines within ``budget`` lines (None: all), saying how many it cut."""
    if budget is None or len(lines) <= budget:
        return lines
    return [*lines[:budget], f"  … and {len(lines) - budget} more lines (--full, or "
            "--format json)"]


def condense_fails(fails: str, regions: Collection[str], *, shown: int = FAILS_SHOWN) -> str:
    """A candidate's threshold failures (the ranking's ``fails``: ``REGION: reason; reason;
    REGION: …``) short enough to read: as they are for ``shown`` regions or fewer, else
    how many regions fail and how many fail each threshold, most frequent first::

        in 140 regions: smtp handshake p95 > 1000 ms (140); loss > 1 % (118)

    ``regions`` are the client regions of the data (what starts a region's part).
    """
    per_region: list[list[str]] = []
    for part in fails.split("; ") if fails else []:
        head, sep, rest = part.partition(": ")
        if sep and head in regions:
            per_region.append([rest])
        elif per_region:
            per_region[-1].append(part)
        else:
            per_region.append([part])
    if len(per_region) <= shown:
        return fails
    counts = Counter(_MEASURED.sub(r" \1 ", reason) for reasons in per_region
                     for reason in dict.fromkeys(reasons))
    return (f"in {len(per_region)} regions: "
            + "; ".join(f"{reason} ({n})" for reason, n in counts.most_common()))


def weights_line(weights: Mapping[str, float], *, shown: int = WEIGHTS_SHOWN) -> str:
    """The client mix in one line: every region's weight, or for many regions how many,
    whether equal, and the heaviest few."""
    if len(weights) <= shown:
        return ", ".join(f"{r} {w:.2f}" for r, w in weights.items())
    values = list(weights.values())
    if max(values) - min(values) <= 1e-12 * max(1.0, abs(max(values))):
        return f"{len(weights)} regions, equally ({values[0]:.4f} each)"
    heaviest = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:shown]
    rest = sum(values) - sum(w for _, w in heaviest)
    return (", ".join(f"{r} {w:.3f}" for r, w in heaviest)
            + f" and {len(weights) - shown} more regions ({rest:.3f} in all)")


@dataclass(frozen=True)
class Analysis:
    """Everything a reader needs; every field is a DataFrame or a small value."""

    weights: dict[str, float]
    metrics: pd.DataFrame
    inflation: pd.DataFrame | None
    paths: pd.DataFrame
    ranking: Ranking
    stability: Stability
    flags: pd.DataFrame
    window: pd.Timedelta
    span: tuple[pd.Timestamp, pd.Timestamp] | None
    notes: list[str] = field(default_factory=list)
    changes: Changes | None = None  # episodes, improvements, events, snapshots
    physics: Physics | None = None
    mixes: Mixes | None = None
    detours: Detours | None = None
    coverage: Coverage | None = None
    readiness: Readiness | None = None  # mail readiness per candidate (mailready records)
    pmtu: PathMtu | None = None  # path MTU per pair (pmtu records)
    #: statistics other than a median that summary records' RTT figures are (e.g. "mean"
    #: for an imported latency matrix): the per-region "RTT P50" is over those figures
    summary_stats: tuple[str, ...] = ()

    @property
    def winner(self) -> str | None:
        table = self.ranking.table
        if "eligible" in table.columns:  # coverage first: an unmeasured candidate never wins
            table = table[table["eligible"].astype(bool) & table["score"].notna()]
        return None if table.empty else str(table.sort_values("rank").iloc[0]["target"])

    def to_dict(self) -> dict[str, Any]:
        """What ``netvantage analyse --format json`` prints: only JSON types inside."""
        def records(frame: pd.DataFrame, **how: Any) -> Any:
            return json.loads(frame.to_json(orient="records", **how))

        return {"weights": self.weights, "winner": self.winner, "notes": self.notes,
                "ranking": records(self.ranking.table),
                "breakdown": records(self.ranking.breakdown), **physics_keys(self.physics),
                **({"coverage": self.coverage.to_dict()} if self.coverage else {}),
                "flags": records(self.flags, date_format="iso"),
                **(self.changes.to_dict() if self.changes else {}),
                **({"mixes": self.mixes.to_dict()} if self.mixes else {}),
                **({"detours": self.detours.to_dict()} if self.detours else {}),
                **({"readiness": self.readiness.to_dict()} if self.readiness else {}),
                **({"path_mtu": self.pmtu.to_dict()} if self.pmtu else {})}

    def to_text(self, *, full: bool = False) -> str:
        """The answer for a terminal: ranking, per-region costs, flags with evidence.

        Long parts keep to a budget (a few hundred regions give thousands of pairs, and
        traces thousands of detours and path changes): the per-region table keeps for
        every region its best data centre and the recommended one and every flagged pair,
        flags the first :data:`TEXT_FLAGGED_PAIRS` pairs, the other sections
        :data:`TEXT_SECTION_LINES` lines each, each saying what it left out.  ``full``
        keeps everything; ``--format json`` always has everything.
        """
        lines = ["Which data centre serves this client mix best?",
                 "  weights: " + weights_line(self.weights),
                 ""]
        rows: list[tuple[str, ...]] = [
            ("RANK", "DATA CENTRE", "SCORE", "95% CI", "P(BEST)", "THRESHOLDS")]
        regions = set(self.ranking.breakdown["region"].astype(str))
        for r in self.ranking.table.sort_values("rank").itertuples():
            rows.append((str(r.rank), str(r.target), _whole(r.score),
                         "none" if _number(r.score_lo) is None else
                         f"{_whole(r.score_lo)}-{_whole(r.score_hi)}",
                         "-" if (p := _number(r.p_best)) is None else f"{p:.0%}",
                         ("met" if r.meets_thresholds
                          else f"not met: {condense_fails(str(r.fails), regions)}")
                         + ("" if getattr(r, "eligible", True) else "; NOT ELIGIBLE")))
        lines += columns(rows)
        st = self.stability
        lines += ["", (f"winner {st.winner}: stays first in {st.dirichlet_share:.0%} of "
                       f"perturbed weightings, {st.leave_one_out_share:.0%} of "
                       "leave-one-region-out checks") if st.winner is not None else
                  "no winner: no data centre was measured from every weighted region "
                  "(see Coverage)"]
        lines += ["", *self.coverage.text_lines()] if self.coverage else []
        lines += ["", *self.readiness.text_lines()] if self.readiness else []
        lines += ["", *_budget(self.pmtu.text_lines(), None if full else TEXT_SECTION_LINES)
                  ] if self.pmtu else []
        lines += ["", "Per region (cost in ms-equivalents; lower is better):"]
        rows = [("REGION", "DATA CENTRE", "RTT P50", "RTT P95", "LOSS %", "HANDSHAKE P95",
                 "COST")]
        bd, shown_note = shown_breakdown(self.ranking.breakdown, self.flags, self.winner,
                                         None if full else TEXT_BREAKDOWN_ROWS)
        for r in bd.sort_values(["region", "cost"]).itertuples():
            rows.append((str(r.region), str(r.target), ms(_number(r.rtt_p50_ms)),
                         ms(_number(r.rtt_p95_ms)), f"{r.loss_pct:.1f}",
                         ms(_number(r.handshake_p95_ms)), _whole(r.cost)))
        lines += columns(rows)
        lines += [f"  ({shown_note} Every pair: --full, or --format json.)"] if shown_note else []
        if self.summary_stats:
            lines.append("  (RTT P50 and P95 are over each pair's records' RTT figures; summary "
                         f"records give a {' or '.join(self.summary_stats)}, not a median: "
                         "with one record per pair the 'P50' is that figure.)")
        lines += ["", f"Flags ({len(self.flags)}; history window {self.window}):"]
        if self.flags.empty:
            lines.append("  none")
        pairs = self.flags.groupby(["region", "target"], sort=True)
        for n, ((region, target), group) in enumerate(pairs):
            if not full and n == TEXT_FLAGGED_PAIRS:
                lines.append(f"  … and {pairs.ngroups - n} more flagged pairs (--full, or "
                             "--format json)")
                break
            lines.append(f"  {region} -> {target}:")
            for f in group.itertuples():
                lines.append(f"    [{f.test}/{f.kind}] {f.evidence}")
            where = group["where"].dropna()
            if not where.empty:
                lines.append(f"    where: {where.iloc[0]}")
        budget = None if full else TEXT_SECTION_LINES
        lines += _budget(self.mixes.text_lines(), budget) if self.mixes else []
        lines += ["", *_budget(self.detours.text_lines(), budget)] if self.detours else []
        lines += ["", *_budget(self.physics.text_lines(), budget)] if self.physics else []
        lines += _budget(self.changes.text_lines(), budget) if self.changes else []
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _whole(value: Any) -> str:
    """A score or cost as a whole number, ``-`` where it is missing (no score)."""
    return "-" if pd.isna(value) else f"{float(value):.0f}"


def _number(value: Any) -> float | None:
    """A DataFrame cell as a float, or None where it is missing (NaN, NA)."""
    return None if pd.isna(value) else float(value)


def equal_weights(campaign: Campaign,
                  kinds: tuple[str, ...] = ("ping", "tcp", "trace")) -> dict[str, float]:
    """Every region counts the same — among the regions that measured every target that
    answered somewhere.

    A region that never measured some candidate cannot score it; counting it would
    leave every candidate without a score.  (Public probes, such as RIPE Atlas ones,
    often cover only some pairs.)  A target that never answered from anywhere does not
    shrink the set (it is listed by the coverage instead).  If no region covers every
    such target, all count.
    """
    m = campaign.measurements
    kept = (m["kind"].isin(kinds) & m["rtt_ms"].notna()).to_numpy(dtype=bool)
    # The distinct (region, target) pairs answered, as strings: a pass over the codes,
    # not a filter of the whole frame per region.
    pairs = m.loc[kept, ["region", "target"]].drop_duplicates().dropna(subset=["region"])
    regions = sorted(str(r) for r in pairs["region"].unique())
    targets = {str(t) for t in pairs["target"].dropna().unique()}
    answered: dict[str, set[str]] = {}
    for region, target in zip(pairs["region"].tolist(), pairs["target"].tolist(),
                              strict=True):
        answered.setdefault(str(region), set()).add(str(target))
    complete = [r for r in regions if answered.get(r, set()) >= targets]
    # Nothing answered anywhere: every region with records counts (and nothing can win).
    chosen = complete or regions or sorted(
        str(r) for r in campaign.measurements["region"].dropna().unique())
    return {r: 1.0 / len(chosen) for r in chosen} if chosen else {}


def _coverage_notes(ranking: Ranking, covered: Coverage) -> list[str]:
    """What the ranking did with pairs lacking ping/tcp RTTs and with gaps, said exactly."""
    notes = []
    bd = ranking.breakdown
    traced = bd[(bd["weight"] > 0) & (bd["latency_from"] == "trace") & (bd["rtt_records"] > 0)]
    if len(traced):
        pairs = [f"{r.region} -> {r.target}" for r in traced.head(10).itertuples()]
        more = f" and {len(traced) - len(pairs)} more" if len(traced) > len(pairs) else ""
        notes.append(f"{len(traced)} weighted pair(s) have no ping or TCP RTT of their own: "
                     f"their latency terms use the traces' destination RTT ({', '.join(pairs)}"
                     f"{more}); every other pair uses ping and TCP only")
    if covered.unmeasured:
        notes.append(f"{len(covered.unmeasured)} weighted pair(s) have no cost (never "
                     "measured successfully, or a cost term missing); gap policy "
                     f"'{covered.gaps}': {covered.policy} (see Coverage)")
    return notes


def default_window(campaign: Campaign) -> pd.Timedelta:
    """About a tenth of the campaign's length (in 10 s steps), at least 10 s and at least
    the records' cadence (weekly data gets weeks; see :func:`.episodes.cadence`)."""
    started = campaign.measurements["started_at"]
    if started.empty:
        return pd.Timedelta("5min")
    span = started.max() - started.min()
    window = pd.Timedelta((span / 10).ceil("10s"))
    return pd.Timedelta(max(window, pd.Timedelta("10s"), cadence(campaign.measurements)
                            or pd.Timedelta(0)))


def _summary_stats(m: pd.DataFrame) -> tuple[str, ...]:
    """The statistics other than a median that summary records' RTT figures are."""
    if "summary" not in m.columns or not m["summary"].any():
        return ()
    stats = m.loc[m["summary"].astype(bool) & m["rtt_ms"].notna(), "rtt_stat"]
    return tuple(sorted({str(x) for x in stats.dropna().unique()} - {"median"}))


def _summary_notes(m: pd.DataFrame) -> list[str]:
    """What the figures of summary records (statistics without samples) stand for."""
    if "summary" not in m.columns or not m["summary"].any():
        return []
    s = m[m["summary"].astype(bool)]
    stats = ", ".join(f"{n} {stat}" for stat, n in
                      s["rtt_stat"].astype(str).value_counts(sort=True).items()
                      if stat not in ("nan", "<NA>"))
    unknown = int((s["rtt_ms"].notna() & s["rtt_samples"].isna()).sum())
    no_counts = int((s["sent"].isna() | s["received"].isna()).sum())
    text = (f"{len(s)} summary record(s) (statistics without samples) count as one RTT "
            f"observation each ({stats or 'no RTT figure'})")
    if unknown:
        text += (f"; {unknown} without a sample count (how many RTTs stand behind the "
                 "figure is unknown)")
    if no_counts:
        text += f"; {no_counts} without probe counts (left out of the loss)"
    return [text]


def _path_evidence(campaign: Campaign, locations: pd.DataFrame | None) -> pd.DataFrame:
    """Where paths go wrong, every (region, target) of the hops at once (paths.path_evidence)."""
    return path_evidence(campaign.hops, locations)


#: From this many measurements on, :func:`analyse` computes the metrics table (its per-group
#: bootstrap, about 45 % of the analysis' CPU) in a forked child process while it does the
#: rest (:func:`_metrics_aside`).  Measured on seeded synthetic campaigns (2 CPUs, load
#: about 4): the child costs more CPU than computing here — about 0.3 s at 30k records,
#: 0.8 s at 100k, 1.5-2 s at 1M (the fork, copy-on-write faults) — and takes its share
#: off the critical path: 1.0-1.2 s of CPU at 30k, 2.5 s at 100k, 10-11 s at 1M.  Below
#: 100k the whole analysis takes a few seconds, and on a busy machine the extra CPU is
#: a loss; above it the gain is many seconds.
CONCURRENT_RECORDS = 100_000

#: What the metrics child computes from: set just before it is forked (copy-on-write), so
#: the campaign's frames are never pickled; only the small metrics frame comes back.
_ASIDE: tuple[Campaign, int, int] | None = None


def _metrics_of_aside() -> pd.DataFrame:
    """The metrics table of :data:`_ASIDE` (run in the forked child)."""
    assert _ASIDE is not None
    campaign, n_boot, seed = _ASIDE
    return metrics_table(campaign, n_boot=n_boot, seed=seed)


def _may_fork() -> bool:
    """Whether a forked child may compute beside this process (:func:`progress.fork_cpus`:
    Linux, not a daemon, no other thread running, more than one CPU)."""
    return progress.fork_cpus() > 1


@contextmanager
def _metrics_aside(campaign: Campaign, n_boot: int, seed: int
                   ) -> Iterator[Callable[[], pd.DataFrame]]:
    """Yields a function giving ``metrics_table(campaign, n_boot=n_boot, seed=seed)``.

    The metrics depend on nothing else :func:`analyse` computes, so for a campaign of
    :data:`CONCURRENT_RECORDS` measurements or more, where :func:`_may_fork`, a forked
    child computes them from the moment this is entered and the function waits for its
    pickled frame: the same computation on the same frames, so the same figures to the
    bit.  Otherwise the function computes them here, when called.  The child is ended
    when the block is left, whatever happens in it.
    """
    global _ASIDE
    if len(campaign.measurements) < CONCURRENT_RECORDS:
        yield lambda: metrics_table(campaign, n_boot=n_boot, seed=seed)
        return
    pool: ProcessPoolExecutor | None = None
    pending: Future[pd.DataFrame] | None = None
    # A progress bar's timer (the CLI's "analysing" step) is paused while the child is
    # forked: the only other thread a command runs.  The executor forks its child at
    # the first submit, before its own management thread starts.
    with progress.forkable():
        if _may_fork():
            _ASIDE = (campaign, n_boot, seed)
            try:
                pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
                pending = pool.submit(_metrics_of_aside)
            except OSError:  # no child to be had (out of processes or memory): here
                if pool is not None:
                    pool.shutdown(cancel_futures=True)
                pool = pending = None
            finally:
                _ASIDE = None  # the child has its copy; this process keeps no reference
    if pool is None or pending is None:
        yield lambda: metrics_table(campaign, n_boot=n_boot, seed=seed)
        return
    try:
        yield lambda: _answer_of(pending, campaign, n_boot, seed)
    finally:
        # The child is done or dead by now, unless the block was left by an exception:
        # then it is ended rather than waited for (the executor has no public way to end
        # a running child before Python 3.14).
        if not pending.done():
            children = getattr(pool, "_processes", None) or {}
            for child in list(children.values()):
                child.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _answer_of(pending: Future[pd.DataFrame], campaign: Campaign, n_boot: int,
               seed: int) -> pd.DataFrame:
    """The child's metrics table; if the child died without answering (killed, say by
    the kernel when memory ran out: the child is the biggest process of an analysis),
    computed here after saying so, rather than waiting forever for a dead process."""
    try:
        return pending.result()
    except BrokenProcessPool:
        progress.note("the metrics child process ended without an answer (killed?): "
                      "computing the metrics in this process")
        return metrics_table(campaign, n_boot=n_boot, seed=seed)


class NothingToAnalyse(NetvantageError, ValueError):
    """The campaign holds nothing the analysis can compare; the message says why."""


def _check_input(m: pd.DataFrame) -> str | None:
    """Refuse a campaign without records or without any client region; else a note on
    the records without a region (they cannot be ranked), if any."""
    if m.empty:
        raise NothingToAnalyse("no records to analyse: the data is empty")
    missing = int(m["region"].isna().sum())
    if missing == len(m):
        agents = sorted(str(a) for a in m["agent"].dropna().unique())
        shown = ", ".join(agents[:5]) + (f" and {len(agents) - 5} more" if len(agents) > 5
                                         else "")
        raise NothingToAnalyse(
            f"none of the {len(m)} records names its client region (agents: {shown or 'none'})"
            ", so regions cannot be compared, weighted or flagged. Give the records a region:"
            " `import atlas --probes` with the probes' metadata (or --geo-db), `import scamper "
            "--region`, or the plan's [agent] region")
    if missing:
        return (f"{missing} of {len(m)} records name no client region: they are left out of "
                "the ranking and the flags")
    return None


def analyse(campaign: Campaign, *, weights: Mapping[str, float] | None = None,
            locations: pd.DataFrame | None = None, cost: CostModel | None = None,
            thresholds: Thresholds | None = None, window: str | pd.Timedelta | None = None,
            compare: Campaign | None = None, compare_at: str | pd.Timestamp | None = None,
            episode_min_rise: float = 0.08, episode_min_windows: int = 3,
            n_boot: int = 500, seed: int = 0, keep_impossible: bool = False,
            mixes: Mapping[str, Mapping[str, float]] | None = None, gaps: str = "exclude",
            same_city_floor_ms: float | None = None,
            readiness_fail_on: tuple[str, ...] = DEFAULT_FAIL_ON) -> Analysis:
    """The whole analysis of a campaign (``locations`` enables the physical-bound tests).

    ``cost`` and ``thresholds`` default to :class:`CostModel` and :class:`Thresholds`'
    documented defaults; ``window`` to a tenth of the campaign (see :func:`default_window`).
    Impossible pairs (below light in fibre, :mod:`netvantage.analysis.physics`) are left
    out of the ranking unless ``keep_impossible`` (default False).
    ``weights`` and the named ``mixes`` (name → weights) may be by group: continent, country
    or region glob (see :mod:`netvantage.analysis.mix`); no named mix by default.
    ``gaps`` is the policy for weighted pairs never measured ("exclude": such a candidate
    cannot win; "skip", "worst", "fail": see :data:`netvantage.analysis.rank.GAP_POLICIES`);
    ``same_city_floor_ms`` (default None: a same-city pair needs its own measurement) is the
    access-network RTT assumed for an unmeasured same-city pair (:mod:`.coverage`).
    ``compare`` (an earlier snapshot) or ``compare_at`` (split ``campaign`` there): the
    two snapshots are compared pair by pair, the rest is of the later one;
    ``episode_min_rise`` (0.08) and ``episode_min_windows`` (3): the episode detector's
    rise and shortest episode (see :mod:`netvantage.analysis.episodes`).
    ``readiness_fail_on`` (default ``("dnsbl", "dkim")``): the mail-readiness checks whose
    failure fails a candidate (see :mod:`netvantage.analysis.readiness`); ``()`` switches
    that threshold off.  Without ``mailready`` records nothing changes.
    """
    ready = readiness_of(campaign.readiness, readiness_fail_on)
    campaign, earlier = snapshots(campaign, compare, compare_at)
    notes: list[str] = []
    no_region = _check_input(campaign.measurements)
    if no_region:
        notes.append(no_region)
    # The cadence (default window) and the episodes read the same series of records.
    # Huge pages off before the metrics child is forked, so that it runs without them too.
    with small_pages(), _metrics_aside(campaign, min(n_boot, 500), seed) as metrics_of, \
            series_shared():
        return _analysis(campaign, earlier, ready, notes, metrics_of, weights=weights,
                         locations=locations, cost=cost, thresholds=thresholds,
                         window=window, episode_min_rise=episode_min_rise,
                         episode_min_windows=episode_min_windows, n_boot=n_boot, seed=seed,
                         keep_impossible=keep_impossible, mixes=mixes, gaps=gaps,
                         same_city_floor_ms=same_city_floor_ms)


def _analysis(campaign: Campaign, earlier: Campaign | None, ready: Readiness | None,
              notes: list[str], metrics_of: Callable[[], pd.DataFrame], *,
              weights: Mapping[str, float] | None, locations: pd.DataFrame | None,
              cost: CostModel | None, thresholds: Thresholds | None,
              window: str | pd.Timedelta | None, episode_min_rise: float,
              episode_min_windows: int, n_boot: int, seed: int, keep_impossible: bool,
              mixes: Mapping[str, Mapping[str, float]] | None, gaps: str,
              same_city_floor_ms: float | None) -> Analysis:
    """:func:`analyse` past its input checks, the metrics table from ``metrics_of``."""
    if cost is None:
        cost = CostModel()  # traces stand in per pair only (CostModel.fallback_kinds)
    if thresholds is None:
        thresholds = Thresholds()
        measured = {str(k) for k in campaign.measurements["kind"].dropna().unique()}
        if not measured & set(thresholds.handshake_kinds):
            # Nothing to hold a handshake threshold against (e.g. imported RIPE Atlas data).
            thresholds = Thresholds(handshake_p95_ms=None)
            notes.append("no SMTP measurements: the handshake threshold is not applied")
    thresholds = with_readiness(thresholds, ready)
    weights, groups = resolve_weights(weights, client_regions(campaign.measurements),
                                      locations) if weights else (None, ())
    w = dict(weights) if weights else equal_weights(campaign)
    if not weights:
        all_regions = campaign.measurements["region"].dropna().nunique()
        notes.append(f"no client weights given: every region counts the same ({len(w)} of "
                     f"{all_regions} regions: those that measured every target that "
                     "answered anywhere)"
                     if len(w) < all_regions else
                     "no client weights given: every region counts the same")
    m = campaign.measurements
    notes += _summary_notes(m)
    span = (m["started_at"].min(), m["started_at"].max()) if not m.empty else None
    win = pd.Timedelta(window) if window is not None else default_window(campaign)
    infl, physics = None, None
    if locations is not None:
        infl = inflation_table(m, locations)
        physics = physics_check(m, locations, inflation=infl, keep_impossible=keep_impossible)
        notes += physics.notes
    else:
        notes.append("no locations given: the physical-bound and distance tests are skipped")
    evidence = _path_evidence(campaign, locations)
    ranked = physics.ranked(m) if physics is not None else m
    same = same_city_pairs(sorted(w), sorted(str(t) for t in m["target"].dropna().unique()),
                           locations)
    assumed = ({p: same_city_floor_ms for p in same} if same_city_floor_ms is not None
               else None)
    # The ranking, its stability and the mixes score the same pairs: one cost table each.
    shared = PairCosts(ranked, cost=cost, thresholds=thresholds, assumed=assumed)
    ranking = rank(ranked, w, cost=cost, thresholds=thresholds, n_boot=n_boot, seed=seed,
                   gaps=gaps, assumed=assumed, pair_costs=shared)
    stable = stability(ranked, w, cost=cost, thresholds=thresholds, seed=seed, gaps=gaps,
                       assumed=assumed, pair_costs=shared)
    covered = coverage_of(ranked, w, ranking, stable, gaps=gaps, same_city=same,
                          same_city_floor_ms=same_city_floor_ms)
    notes += _coverage_notes(ranking, covered)
    mixed = mix_answer(ranked, w, named=mixes, groups=groups, locations=locations, cost=cost,
                       thresholds=thresholds, gaps=gaps, assumed=assumed, pair_costs=shared)
    # The cost tables' records (some 60 MB at 1M records) and the memory the steps freed go
    # back before the steps over the hops, which peak while the metrics child holds its own
    # (codes.give_back; the hops' steps give theirs back themselves).
    del shared
    give_back()
    flags = degradation_flags(m, inflation=infl,
                              path_evidence=evidence if not evidence.empty else None,
                              window=win)
    give_back()
    changes = find_changes(m, flags=flags, hops=campaign.hops, earlier=earlier, window=window,
                           min_rise=episode_min_rise, min_windows=episode_min_windows)
    notes += changes.notes
    # Detours per trace and region (analysis.detours: probe places, light test, hop named).
    routes = detour_table(campaign.hops, locations, m)
    return Analysis(weights=w, metrics=metrics_of(),
                    inflation=infl, paths=evidence, ranking=ranking, stability=stable,
                    flags=flags, window=win, span=span, notes=notes, mixes=mixed,
                    physics=physics, detours=routes, coverage=covered,
                    changes=changes, readiness=ready, pmtu=path_mtu(campaign.pmtu),
                    summary_stats=_summary_stats(m))
