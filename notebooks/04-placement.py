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
# # 4 · Placement: one site, a pair, k sites under a budget
#
# The ranking (notebook 2) answers "which **one** data centre". Operators often run two: a
# primary and a relay, two MX hosts with priorities, or several points of presence.
# `nva.place_campaign` (and `netvantage place`) chooses the **set**, from the very costs
# the ranking scores: one cost per (client region, site) in ms-equivalents, with the
# ranking's bootstrap replicates for the interval. Three modes:
#
# * **anycast** — each region is served by its cheapest site of the set;
# * **failover** — priority order (as MX hosts): the primary serves all; the next serves
#   when it is down (probability *f*), and an outage of all costs as 100 % failures;
# * **relay** — one primary; a region reaches it directly or through a relay site, plus the
#   relay's leg to the primary (measured, or estimated from the distance).
#
# A site never measured from a region never serves it, and sets whose pairs meet every
# service threshold come first — the ranking's rules.

# %%
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

# nbsetup.py: the lab sample's files (data/), show(fig), table formats
from nbsetup import LOCATIONS, SAMPLE, show

from netvantage import analysis as nva

# %%
campaign = nva.load(SAMPLE)
places = nva.locations(LOCATIONS)
m = campaign.measurements
equal = nva.equal_weights(campaign)

# %% [markdown]
# ## The cost matrix
#
# `nva.cost_matrix` is the ranking's cost per (region, site) — the one thing placement is
# built on. A site's ranking score is the weighted sum of its column.

# %%
regions = sorted(equal)
matrix = nva.cost_matrix(m, regions, n_boot=200)
costs = pd.DataFrame(matrix.cost, index=matrix.regions, columns=matrix.targets)
meets = pd.DataFrame(matrix.meets, index=matrix.regions, columns=matrix.targets)
display(costs.round(0))
print("pairs meeting every service threshold:")
display(meets)

# %% [markdown]
# ## The best single site and the best pair, equal mix

# %%
pair = nva.place_campaign(campaign, locations=places, sites=2)
print(f"best single site: {pair.single.sites[0]} (score {pair.single.score:.0f})")
print(f"best pair for the equal mix: {' + '.join(pair.best.sites)} "
      f"(score {pair.best.score:.0f}, 95 % CI {pair.best.score_lo:.0f}-{pair.best.score_hi:.0f})")
display(pair.per_region)

# %%
fig, ax = plt.subplots(figsize=(8, 3.2))
shown = pair.per_region.set_index("region")
y = np.arange(len(shown))
ax.barh(y + 0.2, shown["single_cost"], height=0.38, color="0.6",
        label=f"one site: {pair.single.sites[0]}")
ax.barh(y - 0.2, shown["cost"], height=0.38, label=f"the pair: {' + '.join(pair.best.sites)}")
ax.set_yticks(y, shown.index)
ax.invert_yaxis()
ax.set_xlabel("cost (ms-equivalents)")
ax.legend()
show(fig)

# %% [markdown]
# **Check by brute force.** Every pair of sites, each region at its cheapest site of the
# pair; first with the pairs that meet every threshold only, then with all measured pairs.
# The pair with every region served within the thresholds wins, as the ranking ranks a data
# centre meeting every threshold first.

# %%
rows = []
for a, b in itertools.combinations(costs.columns, 2):
    strict = costs[[a, b]].where(meets[[a, b]]).min(axis=1)
    loose = costs[[a, b]].min(axis=1)
    rows.append({"pair": f"{a} + {b}",
                 "meets thresholds everywhere": bool(strict.notna().all()),
                 "score (thresholds first)": (strict * pd.Series(equal)).sum()
                 if strict.notna().all() else np.nan,
                 "score (any measured pair)": (loose * pd.Series(equal)).sum()})
pd.DataFrame(rows).set_index("pair").sort_values(
    ["meets thresholds everywhere", "score (any measured pair)"], ascending=[False, True])

# %% [markdown]
# ## Failover and relay
#
# With MX-style failover the primary serves everyone; the secondary only matters for the
# share *f* of the time the primary is down. The order is by single score, so without a
# budget the best failover pair is always the best single site plus the next best —
# unlike anycast, where the best pair need not hold the best single site.

# %%
for f in (0.01, 0.2):
    fo = nva.place_campaign(campaign, locations=places, sites=2, mode="failover",
                            failure_prob=f, n_boot=0)
    print(f"failover, f = {f}: {' then '.join(fo.best.sites)}, score {fo.best.score:.0f} "
          f"(one site: {fo.single.score:.0f})")

# %% [markdown]
# The lab has no agent inside a data centre, so the relay legs are **estimated**: the fibre
# floor of the distance times the campaign's typical inflation. The answer says so.

# %%
relay = nva.place_campaign(campaign, locations=places, sites=2, mode="relay", n_boot=0)
print(relay.to_text())

# %% [markdown]
# ## Another client mix, and how stable the choice is
#
# Stability: the share of client mixes drawn around the given one (about ±15 % on each
# share) in which the chosen set stays the best.

# %%
african = {"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.05, "CA-YYZ": 0.05}
for name, weights in {"equal": equal, "African": african}.items():
    for k in (1, 2, 3):
        got = nva.place_campaign(campaign, weights=weights, locations=places, sites=k,
                                 n_boot=0)
        print(f"{name} mix, {k} site(s): {' + '.join(got.best.sites)} "
              f"score {got.best.score:.0f}, stays best in {got.stability:.0%} of mixes "
              f"(among {got.stability_pool})")

# %% [markdown]
# ## Under a budget
#
# Prices per site (`prices`, `--cost`) and a `budget` (`--budget`): the set may hold from
# one to k sites whose prices fit. Toronto is dear here.

# %%
prices = {"dc-ams": 100.0, "dc-jnb": 120.0, "dc-yyz": 300.0}
for budget in (150, 250, 450):
    got = nva.place_campaign(campaign, locations=places, sites=3, prices=prices,
                             budget=budget, n_boot=0)
    print(f"budget {budget} EUR: {' + '.join(got.best.sites)} ({got.best.price:.0f} EUR), "
          f"score {got.best.score:.0f}")

# %% [markdown]
# ## At size: the search and its optimality gap
#
# With few candidate sets every set is scored. With many, placement runs greedy additions,
# interchange and a branch and bound with a node limit, and reports the **optimality gap**
# it can prove. On a random 40 sites × 120 regions matrix, against scoring every set:

# %%
rng = np.random.default_rng(1)
big = pd.DataFrame(rng.gamma(2.0, 60.0, size=(120, 40)),
                   index=[f"r{i:03d}" for i in range(120)],
                   columns=[f"s{j:02d}" for j in range(40)])
w = dict.fromkeys(big.index, 1.0)
rows = []
for k in (1, 2, 3):
    exact = nva.place_costs(big, w, sites=k, n_draws=0, method="exhaustive")
    heur = nva.place_costs(big, w, sites=k, n_draws=0, method="heuristic")
    rows.append({"k": k, "sets": exact.search.sets, "exhaustive": exact.best.score,
                 "heuristic": heur.best.score, "proven gap": heur.search.gap,
                 "nodes": heur.search.evaluated})
table = pd.DataFrame(rows).set_index("k")
display(table)

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(table.index.astype(str), table["heuristic"] / table["exhaustive"] - 1)
ax.set_xlabel("sites (k)")
ax.set_ylabel("heuristic / exhaustive − 1")
ax.set_title("how far the search's best is from the optimum")
show(fig)
