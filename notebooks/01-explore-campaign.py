# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1 · Explore a campaign
#
# A *campaign* is a set of measurements taken by agents in client **regions** towards
# candidate **data centres** (the *targets*). This notebook opens the bundled sample,
# `data/campaigns/lab-sample.jsonl`, and looks at what was measured before anything is
# ranked or flagged (notebooks 2 and 3 do that).
#
# The sample was recorded in netvantage's lab: an **emulated** network with real Postfix
# and Dovecot servers, not the internet. Four client regions — Lusaka (`ZM-LUN`),
# Johannesburg (`ZA-JNB`), London (`GB-LHR`), Toronto (`CA-YYZ`) — measured three data
# centres — Amsterdam (`dc-ams`), Johannesburg (`dc-jnb`), Toronto (`dc-yyz`) — every 15 s
# for 8 minutes. Two problems were built into it, and we should be able to see both by eye:
#
# * Lusaka and Johannesburg reach Amsterdam through a congested detour up the west coast
#   of Africa (Lagos → Lisbon): slow, lossy and jittery, all campaign long;
# * at 20:04:15 UTC the lab degraded the London–Amsterdam link (3 → 30 ms each way, 5 %
#   loss each way), which London and Toronto (whose Amsterdam traffic crosses London)
#   feel from then on.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

# nbsetup.py: the lab sample's files (data/), when its link degraded, show(fig), table formats
from nbsetup import DEGRADED_AT, LOCATIONS, SAMPLE, naive, show

from netvantage import analysis as nva

# %% [markdown]
# ## Load
#
# `nva.load` returns a `Campaign` of four tidy frames: `measurements` (one row per
# record), `samples` (one row per ping echo or tcp connect), `hops` (one row per trace,
# TTL and responder) and `phases` (one row per step of an SMTP or IMAP dialogue).
# `nva.locations` reads where each region and data centre is.

# %%
campaign = nva.load(SAMPLE)
places = nva.locations(LOCATIONS)
m = campaign.measurements

# %%
for name in ("measurements", "samples", "hops", "phases"):
    print(f"{name:13} {len(getattr(campaign, name)):6,} rows")
display(places)

# %% [markdown]
# ## What was measured
#
# Five kinds of measurement: `ping` (10 ICMP echoes), `tcp` (3 connects to port 25),
# `trace` (a Paris-style ICMP traceroute, 2 probes per TTL), `smtp` (a STARTTLS dialogue on
# port 25) and `imap` (IMAP over TLS on 993). Every pair got the same treatment: about 32
# records of each kind, one round every 15 s.

# %%
start, end = m["started_at"].min(), m["started_at"].max()
minutes = (end - start).total_seconds() / 60
print(f"from {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC ({minutes:.1f} min)")
print("agents:", ", ".join(sorted(m["agent"].astype(str).unique())))
statuses = m["status"].value_counts()
print("status:", statuses[statuses > 0].to_dict())
by_pair = m.sort_values("started_at").groupby(["region", "target", "kind"], observed=True)
print("typical gap between records of a pair and kind:", by_pair["started_at"].diff().median())
by_pair.size().unstack("kind")

# %% [markdown]
# ## The physical bound
#
# Light in optical fibre covers about **200 km per millisecond** (c / 1.47), so a round
# trip over a great-circle distance of *d* km takes at least 2*d*/200 ms: **about 1 ms of
# RTT per 100 km**. No network can beat this floor. Real cables are not great circles and
# every router adds a little, so a healthy path typically measures 1.5–2.5 × its floor;
# how far above the floor a path sits (its *inflation*) is what tells a detour from a
# long way. `nva.great_circle_km` and `nva.rtt_floor_ms` give both numbers.

# %%
regions = places[places["role"] == "region"].set_index("name")
dcs = places[places["role"] == "dc"].set_index("name")
REGIONS, TARGETS = sorted(regions.index), sorted(dcs.index)
km = pd.DataFrame(
    {dc: nva.great_circle_km(regions["lat"], regions["lon"], at["lat"], at["lon"])
     for dc, at in dcs.iterrows()},
    index=regions.index,
)
floor = pd.DataFrame(nva.rtt_floor_ms(km.to_numpy()), index=km.index, columns=km.columns)
pd.concat({"distance (km)": km.round(0), "RTT floor (ms)": floor}, axis=1)

# %% [markdown]
# ## Round-trip times per region × data centre
#
# Each ping echo is one RTT sample. The boxes show every echo of the campaign per pair,
# one panel per client region; the red tick is the pair's fibre floor. A box sitting at
# one to two times its floor is a direct path; a box far above it is a long way round; a
# tall box or a second cluster means the pair changed during the campaign. Note the two
# African regions' boxes to Amsterdam (2.5–3 × the floor, where London → Johannesburg,
# as far, is at 1.8 ×) and London → Amsterdam, spread between ~9 and ~63 ms.

# %%
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

# %% [markdown]
# ## Medians and tails, with their uncertainty
#
# `nva.metrics` summarises each group: percentiles of the RTT observations, jitter, loss
# over all probes, and bootstrap 95 % intervals that resample *records*, not echoes (the
# ten echoes of one ping share a moment and a queue, so they are not independent
# observations). The interval is wide where the pair changed during the campaign.

# %%
summary = nva.metrics(campaign, by=("region", "target", "kind"), n_boot=200)
columns = ["records", "rtt_samples", "rtt_p50_ms", "rtt_p50_lo", "rtt_p50_hi", "rtt_p95_ms",
           "jitter_ms", "loss_ratio"]
summary[summary["kind"] == "ping"].set_index(["region", "target"])[columns]

# %% [markdown]
# ## Loss
#
# Loss is counted over probes: unanswered echoes for ping, failed connect attempts for
# tcp, the destination hop's unanswered probes for a trace. Only the paths into Amsterdam
# lose anything: the African ones all campaign long (the Lagos–Lisbon link), London and
# Toronto since the degradation.

# %%
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
display(loss)

# %% [markdown]
# ## Handshakes, phase by phase
#
# An SMTP record runs connect → greeting → EHLO → STARTTLS → TLS handshake → EHLO →
# QUIT; an IMAP one connect → TLS handshake → greeting → CAPABILITY → LOGOUT. Every phase
# needs at least one round trip (the EHLO after TLS needs two here: the TLS session
# tickets arrive first), so a handshake costs several RTTs — about 8 for SMTP and 5 for
# IMAP in this campaign. From another continent that is a second or more however fast the
# server: it is why the ranking's SMTP-handshake threshold (notebook 2) is so hard to
# meet. `nva.phase_metrics` gives each phase's median and 95th percentile.

# %%
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

# %%
# How many round trips a handshake costs: its median over the pair's median ping RTT, on
# the pairs far enough apart for the round trips to dominate.
medians = summary.pivot_table(index=["region", "target"], columns="kind",
                              values=["handshake_p50_ms", "rtt_p50_ms"], observed=True)
rtt = medians[("rtt_p50_ms", "ping")]
for kind in ("smtp", "imap"):
    rounds = (medians[("handshake_p50_ms", kind)] / rtt)[rtt > 20]
    print(f"{kind} handshake ≈ {rounds.median():.1f} × the ping RTT "
          f"(median over the {len(rounds)} pairs longer than 20 ms)")

# %% [markdown]
# The tails tell another story. The `connect` phase into Amsterdam has a 95th percentile
# above one second for Toronto's SMTP and Lusaka's IMAP records, where its median is one
# RTT: a lost SYN is sent again only after TCP's initial retransmission timeout of 1 s. A
# few percent of packet loss turns into whole seconds at the tail of a handshake — one
# reason the ranking charges loss far more than its percentage suggests.

# %%
p95 = phases[phases["target"] == "dc-ams"].pivot_table(
    index=["region", "kind"], columns="phase", values="duration_p95_ms", observed=True)
p95.columns = p95.columns.astype(str)
p95.round(0)

# %% [markdown]
# ## Over time: the London–Amsterdam degradation
#
# `nva.windowed` computes the same metrics per time window. Below, one-minute windows of
# ping towards Amsterdam from every region: the faint dots are the individual echoes (a
# "smoke" plot: one column of ten dots per record), the lines the windows' medians with
# their bootstrap interval, the bottom panel the windows' loss. The dashed line is the
# moment the lab degraded London–Amsterdam (from the campaign's `.meta.json`). London
# and Toronto step up by ~54 ms (+27 ms each way) and start losing packets; Lusaka and
# Johannesburg, whose detour does not touch London, stay as they were: slow and lossy
# from the start.

# %%
windows = nva.windowed(campaign, "1min", by=("region", "target", "kind"), n_boot=200)
to_ams = windows[(windows["target"] == "dc-ams") & (windows["kind"] == "ping")]
echoes = ping[ping["target"] == "dc-ams"]
fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 1))
for i, region in enumerate(REGIONS):
    colour = f"C{i}"
    dots = echoes[echoes["region"] == region]
    top.scatter(naive(dots["started_at"]), dots["rtt_ms"], s=3, alpha=0.2, color=colour)
    line = to_ams[to_ams["region"] == region]
    middle = naive(line["window"] + pd.Timedelta("30s"))
    top.plot(middle, line["rtt_p50_ms"], marker="o", color=colour, label=region)
    top.fill_between(middle, line["rtt_p50_lo"], line["rtt_p50_hi"], alpha=0.2, color=colour)
    bottom.plot(middle, 100 * line["loss_ratio"], marker="o", color=colour)
for ax in (top, bottom):
    ax.axvline(naive(DEGRADED_AT), color="black", linestyle="--")
top.set_ylabel("ping RTT to dc-ams (ms)")
top.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
bottom.set_ylabel("loss (%)")
bottom.set_xlabel("time (UTC)")
top.set_title("Towards Amsterdam, per one-minute window (dashed: the degradation)")
show(fig)

# %% [markdown]
# The same comparison in numbers: `metrics` grouped by any column of the measurements,
# here a `period` column that says which side of the degradation a record is on.

# %%
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

# %% [markdown]
# ## What we have seen
#
# * Every pair was measured alike (≈ 32 records per kind, 15 s apart, 8 minutes).
# * Most pairs sit at 1–2 × their fibre floor; Lusaka and Johannesburg → Amsterdam sit
#   near 3 × and lose packets all along: a standing detour.
# * London and Toronto → Amsterdam changed at 20:04:15: +54 ms and several % of loss.
# * Handshakes cost 5–8 round trips, and loss turns into 1 s retransmission tails.
#
# Notebook 2 turns these measurements into a ranking for a client mix; notebook 3 follows
# the Lusaka → Amsterdam flag down to the hop where it starts.
