"""Write the notebooks of this directory from the cells below.

    python notebooks/build.py           # (re)write notebooks/*.ipynb
    python notebooks/build.py --check   # exit 1 if a notebook differs from what this builds

The .ipynb files are generated, never edited by hand: edit a cell here and rebuild.
They are written without outputs and with stable cell ids (``<notebook>-<n>``), so that
rebuilding an unchanged notebook changes no byte and a changed cell is a small diff.
Every notebook runs top to bottom on the bundled sample campaign using only the public
analysis API (``from netvantage import analysis as nva``), pandas and matplotlib;
``tests/test_notebooks.py`` executes them.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", textwrap.dedent(text).strip())


def code(text: str) -> Cell:
    return ("code", textwrap.dedent(text).strip())


# --------------------------------------------------------------------------- shared cells

BACKEND = code('''
    import matplotlib

    matplotlib.use("Agg")  # draw off-screen: no window, the same on a laptop, a server or a test
''')

SETUP = code('''
    import io
    import json
    from pathlib import Path

    import matplotlib.pyplot as plt
    import pandas as pd
    from IPython.display import Image, display

    from netvantage import analysis as nva

    # Three significant digits below 10 (ratios, p-values), one decimal above.
    pd.set_option("display.float_format", lambda x: f"{x:.3g}" if abs(x) < 10 else f"{x:,.1f}")
    pd.set_option("display.max_colwidth", 160)
    pd.set_option("display.width", 160)

    # The repository's root, wherever the notebook runs from (notebooks/, the root, a test).
    ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "data/campaigns").is_dir())
    SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
    LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
    META = json.loads(SAMPLE.with_name("lab-sample.meta.json").read_text())
    # When the lab made the London-Amsterdam link slow and lossy (recorded with the campaign).
    DEGRADED_AT = pd.Timestamp(META["degradation"]["at"])


    def show(fig):
        """Show a figure as a PNG in the notebook (Agg draws it; nothing opens a window)."""
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        display(Image(buffer.getvalue()))


    def naive(times):
        """UTC timestamps (a Series or one) without their zone, for matplotlib's date axis."""
        if isinstance(times, pd.Series):
            return times.dt.tz_convert(None)
        return pd.Timestamp(times).tz_convert(None)
''')

LOAD = code('''
    campaign = nva.load(SAMPLE)
    places = nva.locations(LOCATIONS)
    m = campaign.measurements
''')


# --------------------------------------------------------------------------- 01

EXPLORE = [
    md('''
        # 1 · Explore a campaign

        A *campaign* is a set of measurements taken by agents in client **regions** towards
        candidate **data centres** (the *targets*). This notebook opens the bundled sample,
        `data/campaigns/lab-sample.jsonl`, and looks at what was measured before anything is
        ranked or flagged (notebooks 2 and 3 do that).

        The sample was recorded in netvantage's lab: an **emulated** network with real Postfix
        and Dovecot servers, not the internet. Four client regions — Lusaka (`ZM-LUN`),
        Johannesburg (`ZA-JNB`), London (`GB-LHR`), Toronto (`CA-YYZ`) — measured three data
        centres — Amsterdam (`dc-ams`), Johannesburg (`dc-jnb`), Toronto (`dc-yyz`) — every 15 s
        for 8 minutes. Two problems were built into it, and we should be able to see both by eye:

        * Lusaka and Johannesburg reach Amsterdam through a congested detour up the west coast
          of Africa (Lagos → Lisbon): slow, lossy and jittery, all campaign long;
        * at 20:04:15 UTC the lab degraded the London–Amsterdam link (3 → 30 ms each way, 5 %
          loss each way), which London and Toronto (whose Amsterdam traffic crosses London)
          feel from then on.
    '''),
    BACKEND,
    SETUP,
    md('''
        ## Load

        `nva.load` returns a `Campaign` of four tidy frames: `measurements` (one row per
        record), `samples` (one row per ping echo or tcp connect), `hops` (one row per trace,
        TTL and responder) and `phases` (one row per step of an SMTP or IMAP dialogue).
        `nva.locations` reads where each region and data centre is.
    '''),
    LOAD,
    code('''
        for name in ("measurements", "samples", "hops", "phases"):
            print(f"{name:13} {len(getattr(campaign, name)):6,} rows")
        places
    '''),
    md('''
        ## What was measured

        Five kinds of measurement: `ping` (10 ICMP echoes), `tcp` (3 connects to port 25),
        `trace` (a Paris-style ICMP traceroute, 2 probes per TTL), `smtp` (a STARTTLS dialogue on
        port 25) and `imap` (IMAP over TLS on 993). Every pair got the same treatment: about 32
        records of each kind, one round every 15 s.
    '''),
    code('''
        start, end = m["started_at"].min(), m["started_at"].max()
        minutes = (end - start).total_seconds() / 60
        print(f"from {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC ({minutes:.1f} min)")
        print("agents:", ", ".join(sorted(m["agent"].astype(str).unique())))
        statuses = m["status"].value_counts()
        print("status:", statuses[statuses > 0].to_dict())
        rounds = m.sort_values("started_at").groupby(["region", "target", "kind"], observed=True)
        print("typical gap between records of a pair and kind:",
              rounds["started_at"].diff().median())
        m.groupby(["region", "target", "kind"], observed=True).size().unstack("kind")
    '''),
    md('''
        ## The physical bound

        Light in optical fibre covers about **200 km per millisecond** (c / 1.47), so a round
        trip over a great-circle distance of *d* km takes at least 2*d*/200 ms: **about 1 ms of
        RTT per 100 km**. No network can beat this floor. Real cables are not great circles and
        every router adds a little, so a healthy path typically measures 1.5–2.5 × its floor;
        how far above the floor a path sits (its *inflation*) is what tells a detour from a
        long way. `nva.great_circle_km` and `nva.rtt_floor_ms` give both numbers.
    '''),
    code('''
        regions = places[places["role"] == "region"].set_index("name")
        dcs = places[places["role"] == "dc"].set_index("name")
        REGIONS, TARGETS = sorted(regions.index), sorted(dcs.index)
        km = pd.DataFrame({dc: nva.great_circle_km(regions["lat"], regions["lon"], at["lat"],
                                                   at["lon"])
                           for dc, at in dcs.iterrows()}, index=regions.index)
        floor = pd.DataFrame(nva.rtt_floor_ms(km.to_numpy()), index=km.index, columns=km.columns)
        pd.concat({"distance (km)": km.round(0), "RTT floor (ms)": floor}, axis=1)
    '''),
    md('''
        ## Round-trip times per region × data centre

        Each ping echo is one RTT sample. The boxes show every echo of the campaign per pair,
        one panel per client region; the red tick is the pair's fibre floor. A box sitting at
        one to two times its floor is a direct path; a box far above it is a long way round; a
        tall box or a second cluster means the pair changed during the campaign. Note the two
        African regions' boxes to Amsterdam (2.5–3 × the floor, where London → Johannesburg,
        as far, is at 1.8 ×) and London → Amsterdam, spread between ~9 and ~63 ms.
    '''),
    code('''
        samples = campaign.samples
        ping = samples[(samples["kind"] == "ping") & samples["rtt_ms"].notna()]
        fig, axes = plt.subplots(1, len(REGIONS), figsize=(14, 3.8))
        for ax, region in zip(axes, REGIONS, strict=True):
            here = ping[ping["region"] == region]
            ax.boxplot([here.loc[here["target"] == t, "rtt_ms"] for t in TARGETS],
                       tick_labels=TARGETS, whis=(5, 95), flierprops={"markersize": 2})
            ax.scatter(range(1, len(TARGETS) + 1), floor.loc[region, TARGETS], marker="_",
                       s=500, color="red", zorder=3, label="fibre floor")
            ax.set_title(f"from {region}")
            ax.set_ylim(bottom=0)
        axes[0].set_ylabel("ping RTT (ms)")
        axes[0].legend(loc="upper left")
        fig.suptitle("Ping echoes per pair (box: quartiles; whiskers: 5th-95th percentile)")
        show(fig)
    '''),
    md('''
        ## Medians and tails, with their uncertainty

        `nva.metrics` summarises each group: percentiles of the RTT observations, jitter, loss
        over all probes, and bootstrap 95 % intervals that resample *records*, not echoes (the
        ten echoes of one ping share a moment and a queue, so they are not independent
        observations). The interval is wide where the pair changed during the campaign.
    '''),
    code('''
        summary = nva.metrics(campaign, by=("region", "target", "kind"), n_boot=200)
        columns = ["records", "rtt_samples", "rtt_p50_ms", "rtt_p50_lo", "rtt_p50_hi", "rtt_p95_ms",
                   "jitter_ms", "loss_ratio"]
        summary[summary["kind"] == "ping"].set_index(["region", "target"])[columns]
    '''),
    md('''
        ## Loss

        Loss is counted over probes: unanswered echoes for ping, failed connect attempts for
        tcp, the destination hop's unanswered probes for a trace. Only the paths into Amsterdam
        lose anything: the African ones all campaign long (the Lagos–Lisbon link), London and
        Toronto since the degradation.
    '''),
    code('''
        lossy = summary[summary["kind"].isin(["ping", "tcp", "trace"])]
        loss = lossy.pivot_table(index=["region", "target"], columns="kind", values="loss_ratio",
                                 observed=True)
        loss.columns = [f"{kind} loss %" for kind in loss.columns]
        loss = 100 * loss
        fig, ax = plt.subplots(figsize=(9, 3.5))
        loss.plot.bar(ax=ax, rot=30)
        ax.set_ylabel("loss (%)")
        ax.set_xlabel("")
        ax.set_xticklabels([f"{r} → {t}" for r, t in loss.index], ha="right")
        show(fig)
        loss
    '''),
    md('''
        ## Handshakes, phase by phase

        An SMTP record runs connect → greeting → EHLO → STARTTLS → TLS handshake → EHLO →
        QUIT; an IMAP one connect → TLS handshake → greeting → CAPABILITY → LOGOUT. Every phase
        needs at least one round trip (the EHLO after TLS needs two here: the TLS session
        tickets arrive first), so a handshake costs several RTTs — about 8 for SMTP and 5 for
        IMAP in this campaign. From another continent that is a second or more however fast the
        server: it is why the ranking's SMTP-handshake threshold (notebook 2) is so hard to
        meet. `nva.phase_metrics` gives each phase's median and 95th percentile.
    '''),
    code('''
        phases = nva.phase_metrics(campaign, by=("region", "target", "kind"))
        smtp = phases[phases["kind"] == "smtp"]
        p50 = smtp.pivot_table(index=["region", "target"], columns="phase",
                               values="duration_p50_ms", observed=True)
        p50.columns = p50.columns.astype(str)  # in dialogue order
        p50.index = [f"{r} → {t}" for r, t in p50.index]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        p50.plot.barh(stacked=True, ax=ax)
        ax.invert_yaxis()
        ax.set_xlabel("median duration of each SMTP phase, stacked (ms)")
        show(fig)

        ratio = summary.pivot_table(index=["region", "target"], columns="kind",
                                    values=["handshake_p50_ms", "rtt_p50_ms"], observed=True)
        rtt = ratio[("rtt_p50_ms", "ping")]
        for kind in ("smtp", "imap"):
            rounds = (ratio[("handshake_p50_ms", kind)] / rtt)[rtt > 20]
            print(f"{kind} handshake ≈ {rounds.median():.1f} × the ping RTT "
                  f"(median over the {len(rounds)} pairs longer than 20 ms)")
    '''),
    md('''
        The tails tell another story. The `connect` phase into Amsterdam has a 95th percentile
        above one second for Toronto's SMTP and Lusaka's IMAP records, where its median is
        one RTT: a lost SYN is
        sent again only after TCP's initial retransmission timeout of 1 s. A few percent of
        packet loss turns into whole seconds at the tail of a handshake — one reason the
        ranking charges loss far more than its percentage suggests.
    '''),
    code('''
        p95 = phases[phases["target"] == "dc-ams"].pivot_table(
            index=["region", "kind"], columns="phase", values="duration_p95_ms", observed=True)
        p95.columns = p95.columns.astype(str)
        p95.round(0)
    '''),
    md('''
        ## Over time: the London–Amsterdam degradation

        `nva.windowed` computes the same metrics per time window. Below, one-minute windows of
        ping towards Amsterdam from every region: the faint dots are the individual echoes (a
        "smoke" plot: one column of ten dots per record), the lines the windows' medians with
        their bootstrap interval, the bottom panel the windows' loss. The dashed line is the
        moment the lab degraded London–Amsterdam (from the campaign's `.meta.json`). London
        and Toronto step up by ~54 ms (+27 ms each way) and start losing packets; Lusaka and
        Johannesburg, whose detour does not touch London, stay as they were: slow and lossy
        from the start.
    '''),
    code('''
        windows = nva.windowed(campaign, "1min", by=("region", "target", "kind"), n_boot=200)
        to_ams = windows[(windows["target"] == "dc-ams") & (windows["kind"] == "ping")]
        echoes = ping[ping["target"] == "dc-ams"]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                          height_ratios=(3, 1))
        for i, region in enumerate(REGIONS):
            colour = f"C{i}"
            dots = echoes[echoes["region"] == region]
            top.scatter(naive(dots["started_at"]), dots["rtt_ms"], s=3, alpha=0.2, color=colour)
            line = to_ams[to_ams["region"] == region]
            middle = naive(line["window"] + pd.Timedelta("30s"))
            top.plot(middle, line["rtt_p50_ms"], marker="o", color=colour, label=region)
            top.fill_between(middle, line["rtt_p50_lo"], line["rtt_p50_hi"], alpha=0.2,
                             color=colour)
            bottom.plot(middle, 100 * line["loss_ratio"], marker="o", color=colour)
        for ax in (top, bottom):
            ax.axvline(naive(DEGRADED_AT), color="black", linestyle="--")
        top.set_ylabel("ping RTT to dc-ams (ms)")
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
        bottom.set_ylabel("loss (%)")
        bottom.set_xlabel("time (UTC)")
        top.set_title("Towards Amsterdam, per one-minute window (dashed: the degradation)")
        show(fig)
    '''),
    md('''
        The same comparison in numbers: `metrics` grouped by any column of the measurements,
        here a `period` column that says which side of the degradation a record is on.
    '''),
    code('''
        period = (m["started_at"] >= DEGRADED_AT).map({False: "before", True: "after"})
        split = nva.metrics({"measurements": m.assign(period=period), "samples": samples},
                            by=("region", "target", "kind", "period"), n_boot=200)
        split = split[(split["target"] == "dc-ams") & (split["kind"] == "ping")]
        split = split.set_index(["region", "period"])
        for region in REGIONS:
            early, late = split.loc[(region, "before")], split.loc[(region, "after")]
            print(f"{region} → dc-ams, ping: median {early['rtt_p50_ms']:.0f} ms before "
                  f"{DEGRADED_AT:%H:%M:%S}, {late['rtt_p50_ms']:.0f} ms after; "
                  f"loss {early['loss_ratio']:.1%} → {late['loss_ratio']:.1%}")
        split[["records", "rtt_p50_ms", "rtt_p50_lo", "rtt_p50_hi", "loss_ratio"]]
    '''),
    md('''
        ## What we have seen

        * Every pair was measured alike (≈ 32 records per kind, 15 s apart, 8 minutes).
        * Most pairs sit at 1–2 × their fibre floor; Lusaka and Johannesburg → Amsterdam sit
          near 3 × and lose packets all along: a standing detour.
        * London and Toronto → Amsterdam changed at 20:04:15: +54 ms and several % of loss.
        * Handshakes cost 5–8 round trips, and loss turns into 1 s retransmission tails.

        Notebook 2 turns these measurements into a ranking for a client mix; notebook 3 follows
        the Lusaka → Amsterdam flag down to the hop where it starts.
    '''),
]


# --------------------------------------------------------------------------- 02

RANK = [
    md('''
        # 2 · Rank the data centres for a client mix

        Which data centre should host the service depends on **who the clients are**. netvantage
        gives each (region, data centre) pair a **cost** in *milliseconds-equivalent*: its
        median RTT, plus half its 95th percentile, plus 10 ms per % of loss, plus 0.2 × the 95th
        percentile of its SMTP/IMAP handshakes, plus 20 ms per % of failed records
        (`nva.CostModel`). A data centre's **score** for a client mix *w* (shares summing to 1)
        is Σ<sub>r</sub> *w*<sub>r</sub> × cost(*r*, data centre): lower is better.

        The score comes with a 95 % interval from a bootstrap that resamples each pair's
        records, and `p_best`, the share of bootstrap replicates in which the data centre comes
        first. **Thresholds** (`nva.Thresholds`) are service levels every region with a
        positive weight must get; a data centre that fails one ranks after all those that meet
        them, whatever its score.
    '''),
    BACKEND,
    SETUP,
    LOAD,
    code('''
        print(nva.CostModel())
        print(nva.Thresholds())
    '''),
    md('''
        ## Three client mixes

        An African mix (90 % in Lusaka and Johannesburg), a European one (80 % in London) and
        one where every region counts the same (`nva.equal_weights`). `nva.analyse` does the
        whole analysis for each: ranking, stability, flags.
    '''),
    code('''
        MIXES = {
            "African": {"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.05, "CA-YYZ": 0.05},
            "European": {"GB-LHR": 0.8, "CA-YYZ": 0.1, "ZM-LUN": 0.05, "ZA-JNB": 0.05},
            "equal": nva.equal_weights(campaign),
        }
        results = {name: nva.analyse(campaign, weights=mix, locations=places, n_boot=200)
                   for name, mix in MIXES.items()}
        for name, result in results.items():
            best = result.ranking.table.iloc[0]
            print(f"winner for the {name} mix: {result.winner} (score {best['score']:.0f}, "
                  f"95 % CI {best['score_lo']:.0f}-{best['score_hi']:.0f}, "
                  f"P(best) {best['p_best']:.0%})")
        columns = ["target", "score", "score_lo", "score_hi", "p_best", "meets_thresholds"]
        pd.concat({name: result.ranking.table.set_index("rank")[columns]
                   for name, result in results.items()}, names=["mix", "rank"])
    '''),
    md('''
        Johannesburg wins the African mix by a factor of six and the equal mix too. For the
        European mix **Toronto**, not Amsterdam, comes first — and Amsterdam's interval is
        very wide (about 355–760). Both are the London–Amsterdam degradation of 20:04:15: the score
        pools the whole campaign, half of which London spent 54 ms and ~12 % loss further from
        Amsterdam. Ranked on the records before the degradation, Amsterdam wins the European
        mix comfortably. (A ranking answers for the period it is given: choose it on purpose.)
    '''),
    code('''
        FRAMES = ("measurements", "samples", "hops", "phases")
        before = nva.Campaign(**{name: getattr(campaign, name)[lambda f: f["started_at"]
                                                                < DEGRADED_AT]
                                 for name in FRAMES})
        ranking_before = nva.rank(before.measurements, MIXES["European"], n_boot=200)
        print("winner for the European mix before the degradation:",
              ranking_before.table.iloc[0]["target"])
        ranking_before.table[columns]
    '''),
    md('''
        ## Where a score comes from

        `ranking.breakdown` has one row per (region, data centre): the metrics, the cost of each
        term, the pair's cost and its weighted share of the score. The costs do not depend on
        the mix, only the weights do. Below: the pair costs, and for each mix how the regions
        add up to each data centre's score.
    '''),
    code('''
        breakdown = results["African"].ranking.breakdown
        terms = [c for c in breakdown.columns if c.startswith("cost_")]
        breakdown.set_index(["region", "target"])[[*terms, "cost"]].round(0)
    '''),
    code('''
        fig, axes = plt.subplots(1, len(results), figsize=(14, 3.8), sharey=True)
        for ax, (name, result) in zip(axes, results.items(), strict=True):
            parts = result.ranking.breakdown.pivot(index="target", columns="region",
                                                   values="weighted_cost")
            parts.plot.bar(stacked=True, ax=ax, rot=0, legend=ax is axes[-1])
            ax.set_title(f"{name} mix: winner {result.winner}")
            ax.set_xlabel("")
        axes[0].set_ylabel("score = Σ weight × cost (ms-eq.)")
        show(fig)
    '''),
    md('''
        ## Playing with the weights

        The score is linear in the weights, so as the share of African clients grows each data
        centre's score moves along a straight line and the winner changes where two lines
        cross. Below, the African share goes from 0 to 1 (split evenly between Lusaka and
        Johannesburg; the rest is 80 % London, 20 % Toronto), once over the whole campaign and
        once over the records before the degradation. `n_boot=0` skips the bootstrap: the point
        estimates draw the lines.
    '''),
    code('''
        def sweep(measurements, steps=20):
            rows = []
            for i in range(steps + 1):
                share = i / steps
                mix = {"ZM-LUN": share / 2, "ZA-JNB": share / 2,
                       "GB-LHR": 0.8 * (1 - share), "CA-YYZ": 0.2 * (1 - share)}
                table = nva.rank(measurements, mix, n_boot=0).table
                rows += [{"african_share": share, "target": row.target, "score": row.score,
                          "rank": row.rank} for row in table.itertuples()]
            return pd.DataFrame(rows)


        sweeps = {"whole campaign": sweep(m), "before the degradation": sweep(before.measurements)}
        fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
        for ax, (label, frame) in zip(axes, sweeps.items(), strict=True):
            scores = frame.pivot(index="african_share", columns="target", values="score")
            scores.plot(ax=ax, marker=".")
            winners = frame[frame["rank"] == 1].set_index("african_share")["target"]
            for share, target in winners.items():
                ax.axvspan(share - 0.025, share + 0.025, alpha=0.12,
                           color=f"C{list(scores.columns).index(target)}", lw=0)
            ax.set_title(f"{label} (shading: the winner)")
            ax.set_xlabel("share of African clients")
            changes = winners[winners != winners.shift()]
            print(f"{label}: " + ", then ".join(f"{t} from {s:.0%}" for s, t in changes.items()))
        axes[0].set_ylabel("score (ms-eq.)")
        show(fig)
    '''),
    md('''
        Because the lines are straight, the exact crossing follows from the two ends: the
        share of African clients above which Johannesburg beats the best of the others.
    '''),
    code('''
        for label, frame in sweeps.items():
            ends = frame.pivot(index="african_share", columns="target", values="score")
            ends = ends.loc[[0.0, 1.0]]
            rival = ends.drop(columns="dc-jnb").loc[0.0].idxmin()
            d0, d1 = (ends.loc[s, "dc-jnb"] - ends.loc[s, rival] for s in (0.0, 1.0))
            print(f"{label}: dc-jnb beats {rival} once more than {d0 / (d0 - d1):.0%} "
                  f"of the clients are African")
    '''),
    md('''
        ## Thresholds

        With the default thresholds almost nobody passes: an SMTP handshake is ~8 round trips
        (notebook 1), so a client 150 ms away cannot finish one in a second anywhere but next
        door. When every candidate fails, thresholds cannot separate them and the score
        decides. The `fails` column says who fails what, where.

        Relax the handshake level and the loss threshold begins to bite. For the European mix
        before the degradation, Amsterdam has by far the best score, yet with the handshake
        level at 2.5 s (or off) it ranks **last**: the 5 % of clients in Lusaka and the 5 % in
        Johannesburg see ~3 % loss on the Lagos–Lisbon detour, above the 1 % level. That is
        what thresholds are for — a small population with an unacceptable service is not
        averaged away — and why they need care: a weight of 0.05 is enough to veto.
    '''),
    code('''
        variants = {
            "default": nva.Thresholds(),
            "handshake ≤ 2.5 s": nva.Thresholds(handshake_p95_ms=2500),
            "handshake off": nva.Thresholds(handshake_p95_ms=None),
            "none": nva.Thresholds(handshake_p95_ms=None, loss_pct=None, success_pct=None),
        }
        rows = []
        for label, thresholds in variants.items():
            table = nva.rank(before.measurements, MIXES["European"], thresholds=thresholds,
                             n_boot=0).table
            rows += [{"thresholds": label, "rank": row.rank, "target": row.target,
                      "score": row.score, "meets": row.meets_thresholds, "fails": row.fails}
                     for row in table.itertuples()]
        pd.DataFrame(rows).set_index(["thresholds", "rank"])
    '''),
    md('''
        ## How sure is the winner?

        `p_best` answers "would more records change the winner?". `stability` answers "would a
        slightly different client mix?": the winner under 1,000 mixes drawn from a Dirichlet
        distribution around the given one (each share moves by about ±15 %), and with each
        region left out in turn (the others renormalised).
    '''),
    code('''
        for name, result in results.items():
            st = result.stability
            print(f"{name:8} mix: {st.winner} stays first in {st.dirichlet_share:.0%} of "
                  f"perturbed mixes and {st.leave_one_out_share:.0%} of leave-one-region-out")
        results["equal"].stability.leave_one_out
    '''),
    md('''
        For the African mix the answer is robust to anything. With equal weights Johannesburg
        still wins 92 % of the perturbed mixes, but leave out *either* African region and
        Toronto wins: that decision rests on both African populations being there — the kind
        of fact to know before moving a server.

        Notebook 3 looks at why Amsterdam is so bad for the African clients.
    '''),
]


# --------------------------------------------------------------------------- 03

INVESTIGATE = [
    md('''
        # 3 · Investigate a flagged region

        `nva.analyse` flags the (region, data centre) pairs that are degraded, each flag with
        its **evidence**:

        * the **test**: `peers` — worse than the other regions measuring the same data centre,
          after allowing for distance; `bound` — its *best* round trip is far above what the
          campaign's typical inflation gives for its distance (a detour); `history` — worse
          than its own recent past (`since` says from when);
        * `value` and `reference`: the pair's figure and what it was compared with (ms, or a
          loss ratio), `effect` the difference, `p_value` the test's p-value adjusted for the
          number of comparisons, `evidence` the same in a sentence;
        * `where`: the place on the pair's traceroutes where the latency or the loss first
          jumps.

        A flag needs a small p-value *and* an effect big enough to matter, so a healthy
        campaign stays quiet. This notebook takes the motivating case — clients in Lusaka
        reaching a mail server in Amsterdam — and follows the evidence down to the hop.
    '''),
    BACKEND,
    SETUP,
    LOAD,
    code('''
        result = nva.analyse(campaign, locations=places, n_boot=100)
        flags = result.flags
        print(f"{len(flags)} flags; history compared {result.window} windows")
        flags[["region", "target", "kind", "test", "metric", "value", "reference", "effect",
               "since", "p_value"]]
    '''),
    md('''
        Two groups. London and Toronto → Amsterdam have `history` flags since 20:04:10 (the
        start of the history window holding the degradation of 20:04:15): an incident.
        Lusaka and Johannesburg → Amsterdam have `bound` flags, and Lusaka `peers` flags too,
        with no `since`: their trouble was there from the first record — a standing condition
        of the route.
    '''),
    code('''
        REGION, TARGET = "ZM-LUN", "dc-ams"
        ours = flags[(flags["region"] == REGION) & (flags["target"] == TARGET)]
        for flag in ours.itertuples():
            print(f"[{flag.test}/{flag.kind}] {flag.evidence}")
        print()
        print("where:", ours["where"].iloc[0])
    '''),
    md('''
        ## Against the physical floor

        Lusaka–Amsterdam is about 7,860 km of great circle: light in fibre needs at least
        79 ms for the round trip (1 ms per 100 km). `result.inflation` compares each pair's
        best RTT — the minimum over its ping, tcp and trace records, the one least disturbed by
        queues — with its floor: their ratio is the pair's *inflation*. Short pairs are divided
        by at least 10 ms (an access network alone costs that), so same-city pairs read low.
    '''),
    code('''
        inflation = result.inflation
        inflation
    '''),
    code('''
        fig, ax = plt.subplots(figsize=(8, 5.5))
        typical = inflation["typical_inflation"].iloc[0]
        flagged = set(zip(flags.loc[flags["test"] == "bound", "region"],
                          flags.loc[flags["test"] == "bound", "target"], strict=True))
        for row in inflation.itertuples():
            bad = (row.region, row.target) in flagged
            ax.scatter(row.floor_ms, row.rtt_min_ms, color="C3" if bad else "C0", zorder=3)
            ax.annotate(f"{row.region}→{row.target}", (row.floor_ms, row.rtt_min_ms),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        line = pd.Series(range(0, 141, 5), dtype="float64")
        ax.plot(line, line, color="black", label="the floor itself (inflation 1)")
        ax.plot(line, typical * line.clip(lower=10), color="grey", linestyle="--",
                label=f"the campaign's typical inflation ({typical:.2f} ×)")
        ax.set_xlabel("fibre floor of the great circle (ms)")
        ax.set_ylabel("best measured RTT (ms)")
        ax.legend()
        ax.set_title("Best RTT against the floor (red: bound flags)")
        show(fig)
        pair = inflation[(inflation["region"] == REGION) & (inflation["target"] == TARGET)].iloc[0]
        print(f"{REGION} → {TARGET}: {pair['distance_km']:,.0f} km, "
              f"floor {pair['floor_ms']:.0f} ms, best RTT {pair['rtt_min_ms']:.0f} ms: "
              f"inflation {pair['inflation']:.2f} where the campaign's typical one is "
              f"{typical:.2f}")
    '''),
    md('''
        Lusaka → Amsterdam is 2.9 × its floor where the campaign's pairs typically are 1.8 ×:
        some 90 ms that distance does not explain, on the *best* round trip, so not a queue
        that comes and goes. (The `detour_candidate` column of `inflation` stays False here:
        it compares twelve numbers, two of which are the detour itself, and finds the spread
        too wide. The `bound` flag fits one line through every pair — a fixed overhead plus a
        slope — and tests each of the pair's records against it, which has the power that
        twelve summary numbers lack.)

        ## The traces, hop by hop

        Every 15 s the agent in Lusaka ran an ICMP traceroute to Amsterdam, two probes per TTL.
        The `hops` frame has one row per (trace, TTL, responder), annotated with the
        responder's AS and city (`netvantage annotate`, with the lab's MaxMind-format
        databases). Pooled over the pair's 32 traces, with each step's fibre floor from the
        previous hop's city:
    '''),
    code('''
        hops = campaign.hops
        HOP_INFO = ["address", "asn", "as_org", "city", "country", "lat", "lon"]


        def per_hop(frame, source):
            """Per TTL: the most frequent responder and its place, median best RTT, pooled loss."""
            rows = []
            for ttl, at in frame.groupby("ttl"):
                answered = at[at["address"].notna()]
                modal = answered[answered["address"] == answered["address"].mode().iloc[0]]
                info = modal.iloc[0][HOP_INFO] if len(modal) else pd.Series(index=HOP_INFO)
                rows.append({"ttl": ttl, **info.to_dict(), "traces": at["id"].nunique(),
                             "rtt_ms": at["rtt_min_ms"].median(),
                             "loss": 1 - at["replies"].sum() / at["sent"].sum()})
            out = pd.DataFrame(rows).set_index("ttl")
            previous_lat = out["lat"].shift(fill_value=source["lat"])
            previous_lon = out["lon"].shift(fill_value=source["lon"])
            out["hop_km"] = nva.great_circle_km(previous_lat, previous_lon, out["lat"], out["lon"])
            out["step_ms"] = out["rtt_ms"].diff().fillna(out["rtt_ms"])
            out["step_floor_ms"] = nva.rtt_floor_ms(out["hop_km"].to_numpy())
            out["excess_ms"] = out["step_ms"] - out["step_floor_ms"]
            return out.drop(columns=["lat", "lon"])


        where_is = places.set_index("name")
        pair_hops = hops[(hops["region"] == REGION) & (hops["target"] == TARGET)]
        path = per_hop(pair_hops, where_is.loc[REGION])
        path
    '''),
    md('''
        Up to Lagos every step costs about what its distance costs (a few ms of excess). The
        step from Lagos to Lisbon — about 3,800 km, a 38 ms floor — costs ~117 ms: **~80 ms of
        excess**, and the replies start going missing at Lisbon and stay missing at every hop
        behind it. That pattern is a congested link, not a router slow to answer ICMP: a slow
        router's delay and drops would not carry on to every later hop.

        `nva.path_summary` finds the same per trace (first RTT jump, first persistent loss, the
        AS path, countries and continents crossed); `nva.where_it_starts` pools all the traces
        of the pair and says it in a sentence — the `where` of the flags.
    '''),
    code('''
        traces = nva.path_summary(pair_hops, places)
        for as_path, count in traces["as_path"].value_counts().items():
            print(f"{count} traces: " + " → ".join(f"AS{asn}" for asn in as_path))
        print("countries:", " → ".join(traces["countries"].iloc[0]))
        print("first RTT jump:", ", ".join(f"at TTL {ttl} in {n} traces"
                                           for ttl, n in traces["jump_ttl"].value_counts().items()))
        traces[["started_at", "reached", "jump_ttl", "jump_step_ms", "jump_as_org", "jump_city",
                "loss_ttl", "loss_ratio", "loss_city"]].head(8)
    '''),
    code('''
        found = nva.where_it_starts(hops, REGION, TARGET, places)
        print(found["jump_evidence"])
        print(found["loss_evidence"])
    '''),
    md('''
        `path_summary`'s `continental_detour` is False for this pair: that test looks for a
        path leaving the continent its two ends share, and Lusaka and Amsterdam are on two
        continents anyway. The detour here is *which way* the path leaves Africa — up the west
        coast through Lagos and Lisbon — and it shows in the inflation and in the step, not in
        the list of continents.

        ## RTT and loss per hop

        Top: each trace's best RTT at each TTL (boxes) against the fibre floor of the path so
        far (the cumulative floor of the great circles hop to hop). Bottom: the pooled loss per
        TTL. The shaded hop is where `where_it_starts` puts the jump.
    '''),
    code('''
        def hop_labels(path):
            return [f"{ttl}\\n{row.city}\\nAS{row.asn}" for ttl, row in path.iterrows()]


        ttls = list(path.index)
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                          height_ratios=(3, 1.3))
        top.boxplot([pair_hops.loc[pair_hops["ttl"] == t, "rtt_min_ms"].dropna() for t in ttls],
                    positions=ttls, widths=0.5)
        top.plot(ttls, path["step_floor_ms"].cumsum(), color="red", linestyle=":", marker="_",
                 markersize=25, label="fibre floor of the path up to this hop")
        top.set_ylabel("best RTT per trace (ms)")
        top.legend(loc="upper left")
        bottom.bar(ttls, 100 * path["loss"], width=0.5, color="C1")
        bottom.set_ylabel("loss (%)")
        bottom.set_xticks(ttls, hop_labels(path))
        for ax in (top, bottom):
            ax.axvspan(found["jump_ttl"] - 0.4, found["jump_ttl"] + 0.4, color="C3", alpha=0.12)
        top.set_title(f"{REGION} → {TARGET}, hop by hop ({found['traces']} traces)")
        show(fig)
    '''),
    md('''
        ## A different kind of trouble: London → Amsterdam, before and after

        London's flags are `history` flags. Filter the hops by time and ask `where_it_starts`
        about each period; do the same for Lusaka to see that its problem did not change.
    '''),
    code('''
        moments = {"before": hops["started_at"] < DEGRADED_AT,
                   "after": hops["started_at"] >= DEGRADED_AT}
        compared = {}
        for region in ("GB-LHR", REGION):
            for label, when in moments.items():
                part = hops[when]
                found_then = nva.where_it_starts(part, region, TARGET, places)
                compared[(region, label)] = per_hop(
                    part[(part["region"] == region) & (part["target"] == TARGET)],
                    where_is.loc[region])
                print(f"{region} → {TARGET}, {label} {DEGRADED_AT:%H:%M:%S} "
                      f"({found_then['traces']} traces):")
                print("   ", found_then["jump_evidence"] or "no RTT jump")
                print("   ", found_then["loss_evidence"] or "no persistent loss")
    '''),
    code('''
        fig, axes = plt.subplots(2, 2, figsize=(13, 6.5), sharex="col", height_ratios=(3, 1.3),
                                 width_ratios=(2, 5))
        for column, region in enumerate(("GB-LHR", REGION)):
            for i, label in enumerate(moments):
                hop_path = compared[(region, label)]
                axes[0, column].plot(hop_path.index, hop_path["rtt_ms"], marker="o",
                                     color=f"C{i}", label=label)
                offset = -0.15 if label == "before" else 0.15
                axes[1, column].bar(hop_path.index + offset, 100 * hop_path["loss"], width=0.3,
                                    color=f"C{i}", label=label)
            axes[0, column].set_title(f"{region} → {TARGET}")
            axes[0, column].legend(loc="upper left")
            axes[1, column].set_xticks(hop_path.index, hop_labels(hop_path), fontsize=8)
        axes[0, 0].set_ylabel("median best RTT (ms)")
        axes[1, 0].set_ylabel("loss (%)")
        show(fig)
        pd.concat({f"{region} {label}": frame[["city", "rtt_ms", "loss", "excess_ms"]]
                   for (region, label), frame in compared.items()}, axis=1)
    '''),
    md('''
        London → Amsterdam had no jump and no loss before 20:04:15; after it, the RTT jumps
        by ~56 ms at TTL 2 (the Amsterdam end of the London–Amsterdam link, AS64800) and the
        loss starts there. Lusaka → Amsterdam looks the same in both halves: the Lagos–Lisbon
        jump and loss are there all along.

        Did a route change? `nva.path_changes` lists consecutive traces of a pair whose
        responders differ.
    '''),
    code('''
        changes = nva.path_changes(hops)
        print(f"route changes during the campaign: {len(changes)}")
        changes
    '''),
    md('''
        None: London's incident is the same link getting slow and lossy (congestion or a
        degraded circuit), not a reroute; Lusaka's trouble is a stable route through a bad
        segment.

        ## Conclusion

        For clients in Lusaka the Amsterdam server is ~90 ms and a few % of loss worse than
        distance and their peers justify, on every trace, for the whole campaign, and both the
        excess delay and the loss start on the **Lagos → Lisbon segment of AS64710 (West Coast
        Cable)**. That is the evidence to bring to the transit provider — or the reason to
        serve these clients from Johannesburg, which notebook 2 ranks first for an African
        client mix.
    '''),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01-explore-campaign": EXPLORE,
    "02-rank-data-centres": RANK,
    "03-investigate-flagged-region": INVESTIGATE,
}


# --------------------------------------------------------------------------- writing


def build(name: str, cells: list[Cell]) -> nbformat.NotebookNode:
    """The notebook ``name`` without outputs, its cell ids ``<number>-<index>``."""
    nb = new_notebook(metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python"},
    })
    prefix = name.split("-", 1)[0]
    for index, (kind, source) in enumerate(cells, start=1):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell["id"] = f"nb{prefix}-{index:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a notebook is missing or out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / f"{name}.ipynb"
        text = render(build(name, cells))
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run python notebooks/build.py): {', '.join(stale)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
