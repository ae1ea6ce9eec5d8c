"""The client mix as an answer: weights by group, winners under named mixes, and how far the
mix must move before the winner changes.

**Weights by group.**  A key of a weights mapping (``--weights``, ``--mix``) is one of

* ``region:NAME`` or a plain region name of the data: that region (a plain name the data do
  not hold is kept as a region, as it always was: it scores nothing);
* a region glob with ``*``, ``?`` or ``[...]`` (``ZA-*``, ``*`` for every region);
* ``continent:XX`` or a bare continent code ``AF AN AS EU NA OC SA`` (upper case);
* ``country:XX`` or a bare ISO 3166 alpha-2 code (two upper-case letters).

They are tried in that order, so a region of the data named ``NA`` (a Namibian probe in an
Atlas import) stays that region, and ``NA`` otherwise means North America: write
``country:NA`` for Namibia.  A group's weight is split **equally among the regions it
matches**; a region in several groups gets the sum of its shares.  A group that matches no
region of the data is refused (:class:`MixError`).  A region's country and continent come from
the ``locations`` frame; without a row there, from its name: ``ZA-JNB`` (a country code then
``-``, ``_``, ``.`` or a space) or a bare country code such as ``AO``.

**Winners under named mixes** are those of :func:`netvantage.analysis.rank.rank` for each
mix's weights (its coverage and threshold rules included).

**Where the winner flips.**  A score is linear in the weights,
``score_d(w) = Σ_r w_r × cost_{r,d}`` (see :mod:`.rank`), so along the straight line
``w(t) = (1 - t) w0 + t w1`` between the given mix ``w0`` and another mix ``w1`` every score is
a straight line in ``t`` and the winner changes exactly where two of them cross:
:func:`continuum` returns the winner on each stretch of ``t``.  Along that line the regions
with weight are those of both mixes, so the candidates are those measured from all of them
(and, when any meets every service threshold there, only those).  The **smallest change**
(:func:`nearest_flip`) is the least share of clients that, moved from some regions to another,
makes a runner-up tie with the winner: for a challenger ``b`` with ``d_r = cost_{r,a} -
cost_{r,b}``, the gap ``Σ w_r d_r`` closes fastest by moving weight to the region with the
largest ``d`` from the regions with the smallest; taking sources in that order is optimal
(a fractional knapsack), and the least over challengers is the answer.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import NetvantageError
from .geo import continent_of
from .rank import CostModel, PairCosts, Thresholds, rank

__all__ = [
    "CONTINENTS",
    "GroupMatch",
    "Mix",
    "MixError",
    "Mixes",
    "Move",
    "NearestFlip",
    "Segment",
    "Stretch",
    "client_regions",
    "continuum",
    "mixes",
    "nearest_flip",
    "region_places",
    "resolve_weights",
]

FloatArray = npt.NDArray[np.float64]

CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")
_GLOB = re.compile(r"[*?\[]")
_NAME_COUNTRY = re.compile(r"^([A-Za-z]{2})(?:[-_. ]|$)")
_TOL = 1e-12
_COST, _THRESHOLDS = CostModel(), Thresholds()  # frozen: shared defaults are safe


class MixError(NetvantageError, ValueError):
    """A client mix that cannot be used (a group matching no region, no positive weight)."""


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True, slots=True)
class GroupMatch:
    """One key of a weights mapping and the regions it stands for."""

    group: str
    kind: str  # "region", "glob", "continent" or "country"
    weight: float  # as given (before the mix is normalised)
    regions: tuple[str, ...]
    from_names: tuple[str, ...] = ()  # regions placed by their name, not the locations table

    def text(self) -> str:
        if self.kind == "region":
            return f"{self.group} = {self.weight:g}"
        each = self.weight / len(self.regions)
        out = (f"{self.group} ({self.kind}) = {self.weight:g}: {len(self.regions)} region(s), "
               f"{each:.3g} each: {', '.join(self.regions)}")
        if self.from_names:
            out += f" (placed by name: {', '.join(self.from_names)})"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "kind": self.kind, "weight": self.weight,
                "regions": list(self.regions), "placed_by_name": list(self.from_names)}


def region_places(regions: Sequence[str], locations: pd.DataFrame | None
                  ) -> dict[str, tuple[str | None, str | None, str]]:
    """Region → (country, continent, source): source "locations", "name" or "unknown"."""
    table: dict[str, tuple[str | None, str | None]] = {}
    if locations is not None and not locations.empty:
        for row in locations.itertuples():
            country = row.country if isinstance(row.country, str) and row.country else None
            continent = (row.continent if isinstance(row.continent, str) and row.continent
                         else None)
            table[str(row.name)] = (country, continent)
    out: dict[str, tuple[str | None, str | None, str]] = {}
    for r in regions:
        if r in table and (table[r][0] or table[r][1]):
            country, continent = table[r]
            if continent is None and country is not None:
                continent = continent_of([country])[0]
            out[r] = (country, continent, "locations")
            continue
        found = _NAME_COUNTRY.match(r)
        code = found.group(1).upper() if found else None
        continent = continent_of([code])[0] if code else None
        out[r] = (code, continent, "name") if continent else (None, None, "unknown")
    return out


def client_regions(measurements: pd.DataFrame) -> list[str]:
    """The client regions of the data: every region with a record, sorted."""
    return sorted(str(r) for r in measurements["region"].dropna().unique())


def _classify(key: str, regions: set[str]) -> tuple[str, str]:
    """(kind, value) of one weights key, by the rules of the module docstring."""
    prefix, sep, rest = key.partition(":")
    if sep and prefix.lower() in ("region", "continent", "country", "glob"):
        value = rest.strip()
        kind = prefix.lower()
        if kind in ("continent", "country"):
            value = value.upper()
            if kind == "continent" and value not in CONTINENTS:
                raise MixError(f"{key!r}: {value!r} is not a continent code "
                               f"({' '.join(CONTINENTS)})")
            if kind == "country" and not re.fullmatch(r"[A-Z]{2}", value):
                raise MixError(f"{key!r}: {value!r} is not an ISO 3166 alpha-2 country code")
        return kind, value
    if _GLOB.search(key):
        return "glob", key
    if key in regions:
        return "region", key
    if key in CONTINENTS:
        return "continent", key
    if re.fullmatch(r"[A-Z]{2}", key):
        return "country", key
    return "region", key


def resolve_weights(weights: Mapping[str, float], regions: Sequence[str],
                    locations: pd.DataFrame | None = None
                    ) -> tuple[dict[str, float], tuple[GroupMatch, ...]]:
    """Weights by region (summed over groups) from weights by group, and what each matched.

    ``regions``: the client regions of the data.  Weights by plain region name come back
    unchanged.  Raises :class:`MixError` for a group that matches no region, a negative or
    non-finite weight, or no positive weight at all.
    """
    known = set(regions)
    places = region_places(sorted(known), locations)
    out: dict[str, float] = {}
    matches: list[GroupMatch] = []
    for key, raw in weights.items():
        w = float(raw)
        if not (math.isfinite(w) and w >= 0):
            raise MixError(f"weight of {key!r} must be a finite number ≥ 0, not {raw!r}")
        kind, value = _classify(str(key).strip(), known)
        if kind == "region":
            matched = [value]
        elif kind == "glob":
            matched = sorted(r for r in known if fnmatch.fnmatchcase(r, value))
        else:
            at = 0 if kind == "country" else 1
            matched = sorted(r for r in known if places[r][at] == value)
        if not matched:
            raise MixError(_nothing_matched(str(key), kind, places))
        for r in matched:
            out[r] = out.get(r, 0.0) + w / len(matched)
        by_name = tuple(r for r in matched if kind in ("continent", "country")
                        and places[r][2] == "name")
        matches.append(GroupMatch(str(key), kind, w, tuple(matched), by_name))
    if not out or sum(out.values()) <= 0:
        raise MixError("a client mix needs a positive weight somewhere")
    return out, tuple(matches)


def _nothing_matched(key: str, kind: str,
                     places: Mapping[str, tuple[str | None, str | None, str]]) -> str:
    listed = [f"{r} ({p[0] or '?'}, {p[1] or '?'})" for r, p in sorted(places.items())]
    shown = ", ".join(listed[:20]) + (f" and {len(listed) - 20} more" if len(listed) > 20
                                      else "")
    unknown = sum(1 for p in places.values() if p[2] == "unknown")
    text = f"weights: {key!r} ({kind}) matches no client region of the data; regions: {shown}"
    if unknown and kind in ("continent", "country"):
        text += (f"; {unknown} region(s) have no known country: give --locations with their "
                 "country")
    if kind == "country" and key in CONTINENTS:
        text += f" (for the continent write continent:{key})"
    return text


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True, slots=True)
class Mix:
    """One client mix and its winner (by :func:`rank`)."""

    name: str
    weights: dict[str, float]  # normalised to sum 1, by region
    groups: tuple[GroupMatch, ...]
    winner: str | None
    score: float
    runner_up: str | None
    margin: float  # runner-up's score minus the winner's

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights,
                "groups": [g.to_dict() for g in self.groups], "winner": self.winner,
                "score": _json(self.score), "runner_up": self.runner_up,
                "margin": _json(self.margin)}


@dataclass(frozen=True, slots=True)
class Segment:
    """On ``start < t < end`` of a line between two mixes, ``winner`` wins."""

    start: float
    end: float
    winner: str


@dataclass(frozen=True, slots=True)
class Stretch:
    """The winners along the line from the given mix (t = 0) to another (t = 1)."""

    to: str  # the other mix's name, or "region:NAME" for the line to one region
    segments: tuple[Segment, ...]
    flip_at: float | None  # the first t where the winner differs from the given mix's
    flip_to: str | None
    weights_at_flip: dict[str, float]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "flip_at": self.flip_at, "flip_to": self.flip_to,
                "weights_at_flip": self.weights_at_flip, "note": self.note,
                "segments": [{"start": s.start, "end": s.end, "winner": s.winner}
                             for s in self.segments]}


@dataclass(frozen=True, slots=True)
class Move:
    source: str
    dest: str
    share: float  # of all clients


@dataclass(frozen=True, slots=True)
class NearestFlip:
    """The least share of clients that, moved between regions, makes ``challenger`` tie."""

    winner: str
    challenger: str
    distance: float
    moves: tuple[Move, ...]

    def text(self) -> str:
        moves = "; ".join(f"{m.share:.1%} from {m.source} to {m.dest}" for m in self.moves)
        return (f"moving {self.distance:.1%} of the clients ({moves}) makes {self.challenger} "
                f"tie with {self.winner}")

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner, "challenger": self.challenger,
                "distance": self.distance,
                "moves": [{"from": m.source, "to": m.dest, "share": m.share}
                          for m in self.moves]}


@dataclass(frozen=True)
class Mixes:
    """The client mix as an answer: the given mix, named mixes, and where the winner flips."""

    given: Mix
    named: tuple[Mix, ...]
    lines: tuple[Stretch, ...]  # from the given mix to each named mix
    towards: tuple[Stretch, ...]  # from the given mix towards each single region
    nearest: NearestFlip | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"given": self.given.to_dict(), "named": [m.to_dict() for m in self.named],
                "lines": [s.to_dict() for s in self.lines],
                "towards_region": [s.to_dict() for s in self.towards],
                "nearest_flip": self.nearest.to_dict() if self.nearest else None,
                "notes": self.notes}

    def nearest_regions(self, n: int = 5) -> list[Stretch]:
        """The ``n`` single regions whose growth flips the winner soonest, nearest first."""
        return sorted((s for s in self.towards if s.flip_at is not None),
                      key=lambda s: float(s.flip_at or 0.0))[:n]

    def text_lines(self) -> list[str]:
        lines = ["", "Client mixes (winner per mix; 'flips at': share of the way from the "
                 "given mix):"]
        for g in self.given.groups:
            if g.kind != "region":
                lines.append(f"  weights {g.text()}")
        rows = [("MIX", "WINNER", "SCORE", "RUNNER-UP", "MARGIN", "FLIPS AT")]
        flips = {s.to: s for s in self.lines}
        for m in (self.given, *self.named):
            s = flips.get(m.name)
            at = "-" if s is None else ("never" if s.flip_at is None else
                                        f"{s.flip_at:.1%} -> {s.flip_to}")
            rows.append((m.name, m.winner or "none", _fmt(m.score), m.runner_up or "-",
                         _fmt(m.margin), at))
        width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip()
                  for r in rows]
        for m in self.named:
            for g in m.groups:
                if g.kind != "region":
                    lines.append(f"  {m.name}: {g.text()}")
        if self.nearest is not None:
            lines.append(f"  smallest change that flips the winner: {self.nearest.text()}")
        for s in self.nearest_regions():
            region = s.to.removeprefix("region:")
            lines.append(f"  towards {region}: {s.flip_to} wins once {region} has "
                         f"{s.weights_at_flip.get(region, 0.0):.1%} of the clients "
                         f"(now {self.given.weights.get(region, 0.0):.1%})")
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}"


def _json(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _normalised(w: Mapping[str, float]) -> dict[str, float]:
    total = sum(w.values())
    return {r: v / total for r, v in sorted(w.items()) if v > 0}


def _mix(name: str, weights: Mapping[str, float], groups: tuple[GroupMatch, ...],
         measurements: pd.DataFrame, cost: CostModel, thresholds: Thresholds,
         gaps: str = "exclude",
         assumed: Mapping[tuple[str, str], float] | None = None,
         pair_costs: PairCosts | None = None) -> Mix:
    table = rank(measurements, weights, cost=cost, thresholds=thresholds, n_boot=0,
                 gaps=gaps, assumed=assumed, pair_costs=pair_costs).table
    table = table.sort_values("rank")
    # Only a candidate the ranking lets win counts (coverage first: column "eligible").
    able = table[table["score"].notna() & (table["eligible"].astype(bool)
                                            if "eligible" in table.columns else True)]
    winner = str(able.iloc[0]["target"]) if len(able) and able.index[0] == table.index[0] \
        else None
    score = float(able.iloc[0]["score"]) if winner else math.nan
    runner = str(able.iloc[1]["target"]) if winner and len(able) > 1 else None
    margin = (float(able.iloc[1]["score"]) - score) if runner else math.nan
    return Mix(name, _normalised(weights), groups, winner, score, runner, margin)


@dataclass(frozen=True, slots=True)
class Costs:
    """Cost per (region, target) and whether the pair meets every threshold."""

    regions: list[str]
    targets: list[str]
    cost: FloatArray  # regions × targets, NaN where not measured
    meets: npt.NDArray[np.bool_]

    @classmethod
    def from_breakdown(cls, breakdown: pd.DataFrame) -> Costs:
        regions = sorted(str(r) for r in breakdown["region"].unique())
        targets = sorted(str(t) for t in breakdown["target"].unique())
        cost = np.full((len(regions), len(targets)), np.nan)
        meets = np.zeros((len(regions), len(targets)), dtype=bool)
        ri = {r: i for i, r in enumerate(regions)}
        ti = {t: j for j, t in enumerate(targets)}
        for row in breakdown.itertuples():
            i, j = ri[str(row.region)], ti[str(row.target)]
            cost[i, j] = float(cast(Any, row.cost))
            meets[i, j] = bool(row.meets_thresholds)
        return cls(regions, targets, cost, meets)

    def vector(self, weights: Mapping[str, float]) -> FloatArray:
        return np.array([float(weights.get(r, 0.0)) for r in self.regions])


def _eligible(costs: Costs, support: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Candidates measured from every region of ``support``, meeting thresholds if any can."""
    finite: npt.NDArray[np.bool_] = np.asarray(
        np.isfinite(costs.cost[support]).all(axis=0), dtype=bool)
    meets = finite & np.asarray(costs.meets[support].all(axis=0), dtype=bool)
    return meets if meets.any() else finite


def continuum(costs: Costs, w0: Mapping[str, float], w1: Mapping[str, float], *,
              to: str = "", given_winner: str | None = None) -> Stretch:
    """The winners along ``(1 - t) w0 + t w1`` for 0 < t ≤ 1 (both mixes normalised).

    Exact: each score is ``a_d + t (b_d - a_d)`` with ``a``, ``b`` the scores at the ends;
    a tie goes to the candidate whose score falls faster, then by name (as :func:`rank`).
    ``given_winner`` (the winner at t = 0 by :func:`rank`) sets ``flip_at``; by default the
    first stretch's winner.
    """
    v0 = costs.vector(_normalised(w0))
    v1 = costs.vector(_normalised(w1))
    support = (v0 > 0) | (v1 > 0)
    ok = _eligible(costs, support)
    if not ok.any():
        return Stretch(to, (), None, None, {}, "no candidate is measured from every region "
                       "of both mixes")
    sub = np.where(np.isnan(costs.cost), 0.0, costs.cost)
    a = v0 @ sub
    b = v1 @ sub
    slope = b - a
    cand = np.flatnonzero(ok)
    segments: list[Segment] = []
    t = 0.0
    # The winner just after t: lowest score, then lowest slope, then name order.
    cur = min(cand, key=lambda j: (a[j] + slope[j] * t, slope[j], j))
    while True:
        nxt, t_next = None, 1.0
        for j in cand:
            if j == cur or slope[j] >= slope[cur] - _TOL:
                continue
            cross = (a[j] - a[cur]) / (slope[cur] - slope[j])
            if cross > t + _TOL and (cross < t_next - _TOL or (
                    abs(cross - t_next) <= _TOL and nxt is not None
                    and (slope[j], j) < (slope[nxt], nxt))):
                nxt, t_next = j, float(cross)
        segments.append(Segment(t, t_next if nxt is not None else 1.0, costs.targets[cur]))
        if nxt is None:
            break
        t, cur = t_next, nxt
    start = given_winner if given_winner is not None else segments[0].winner
    flip = next((s for s in segments if s.winner != start), None)
    if flip is None:
        return Stretch(to, tuple(segments), None, None, {})
    at = flip.start
    mix = (1 - at) * v0 + at * v1
    weights = {r: float(x) for r, x in zip(costs.regions, mix, strict=True) if x > 0}
    note = ("" if at > 0 else f"{start} is not measured from every region of both mixes, or "
            "misses a threshold there: any weight on those regions changes the winner")
    return Stretch(to, tuple(segments), at, flip.winner, weights, note)


def nearest_flip(costs: Costs, w0: Mapping[str, float], winner: str) -> NearestFlip | None:
    """The least share of clients to move between regions so that a runner-up ties ``winner``.

    Weight may go to any region where both the winner and the challenger were measured (and
    meet the thresholds, when the winner meets them under ``w0``); it is taken from the
    regions of ``w0``.  None when no candidate can tie by moving clients.
    """
    if winner not in costs.targets:
        return None
    v0 = costs.vector(_normalised(w0))
    support = v0 > 0
    ok = _eligible(costs, support)
    a = costs.targets.index(winner)
    winner_meets = bool(costs.meets[support, a].all())
    best: NearestFlip | None = None
    for b in np.flatnonzero(ok):
        if b == a:
            continue
        d = costs.cost[:, a] - costs.cost[:, b]  # > 0 where b is cheaper
        dest_ok = np.isfinite(d)
        if winner_meets:
            dest_ok &= costs.meets[:, a] & costs.meets[:, b]
        if not dest_ok.any():
            continue
        dest = int(np.flatnonzero(dest_ok)[int(np.argmax(d[dest_ok]))])
        need = -float(np.nansum(v0[support] * d[support]))  # ≥ 0: b's score minus a's
        moves: list[Move] = []
        moved = 0.0
        for i in sorted(np.flatnonzero(support), key=lambda i: (d[i], i)):
            if need <= _TOL:
                break
            gain = d[dest] - d[i]
            if gain <= _TOL:
                break
            take = float(min(float(v0[i]), need / float(gain)))
            moves.append(Move(costs.regions[i], costs.regions[dest], take))
            moved += take
            need -= take * gain
        if need > 1e-9 * max(1.0, abs(float(np.nanmax(np.abs(d))))):
            continue
        if best is None or moved < best.distance - _TOL:
            best = NearestFlip(winner, costs.targets[b], moved, tuple(moves))
    return best


def mixes(measurements: pd.DataFrame, weights: Mapping[str, float], *,
          named: Mapping[str, Mapping[str, float]] | None = None,
          groups: tuple[GroupMatch, ...] = (), locations: pd.DataFrame | None = None,
          cost: CostModel = _COST, thresholds: Thresholds = _THRESHOLDS,
          gaps: str = "exclude",
          assumed: Mapping[tuple[str, str], float] | None = None,
          pair_costs: PairCosts | None = None) -> Mixes:
    """The given mix (``weights`` by region, ``groups`` what its keys matched) and the
    ``named`` mixes (by group: resolved here with ``locations``), their winners, the lines
    between them and the smallest change that flips the given mix's winner.

    ``gaps`` and ``assumed`` are the main ranking's gap policy and same-city RTTs (see
    :func:`netvantage.analysis.rank.rank`; defaults "exclude" and none): every mix's winner
    is ranked under them.  The lines between mixes and the smallest change count only
    candidates measured from every region with weight on them (the "exclude" rule).
    ``pair_costs`` (:class:`~netvantage.analysis.rank.PairCosts` of the same arguments)
    spares rebuilding the cost tables the ranking built."""
    regions = client_regions(measurements)
    resolved: dict[str, tuple[dict[str, float], tuple[GroupMatch, ...]]] = {}
    for name, spec in (named or {}).items():
        resolved[name] = resolve_weights(spec, regions, locations)
    given = _mix("given", weights, groups, measurements, cost, thresholds, gaps, assumed,
                 pair_costs)
    others = tuple(_mix(name, w, g, measurements, cost, thresholds, gaps, assumed, pair_costs)
                   for name, (w, g) in resolved.items())
    every = sorted(set(regions) | set(weights) | {r for w, _ in resolved.values() for r in w})
    breakdown = rank(measurements, dict.fromkeys(every, 1.0), cost=cost, thresholds=thresholds,
                     n_boot=0, assumed=assumed, pair_costs=pair_costs).breakdown
    costs = Costs.from_breakdown(breakdown)
    notes: list[str] = []
    if gaps != "exclude":
        notes.append(f"winners follow the gap policy '{gaps}'; the lines between mixes and "
                     "the smallest change count only candidates measured from every region "
                     "with weight on them")
    lines = tuple(continuum(costs, weights, w, to=name, given_winner=given.winner)
                  for name, (w, _) in resolved.items())
    towards = tuple(continuum(costs, weights, {r: 1.0}, to=f"region:{r}",
                              given_winner=given.winner)
                    for r in regions if np.isfinite(costs.cost[costs.regions.index(r)]).any())
    nearest = nearest_flip(costs, weights, given.winner) if given.winner else None
    if given.winner and nearest is None:
        notes.append(f"no move of clients between measured regions makes another candidate "
                     f"tie with {given.winner}")
    return Mixes(given, others, lines, towards, nearest, notes)
