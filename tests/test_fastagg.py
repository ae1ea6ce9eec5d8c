"""sample_quantiles against the plain pandas group-by it replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netvantage.analysis.fastagg import quantile_column, row_quantiles, sample_quantiles

KEYS = ["region", "target", "kind"]
QS = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)


def naive(samples: pd.DataFrame, by: list[str], qs: tuple[float, ...]) -> pd.DataFrame:
    g = samples.groupby(by, observed=True, sort=True)["rtt_ms"]
    out = pd.DataFrame({"count": g.size(), "received": g.count(), "mean": g.mean()})
    q = g.quantile(np.asarray(qs)).unstack()
    # The columns are the quantiles (floats); pandas-stubs types every frame's columns str.
    q.columns = [quantile_column(float(x)) for x in q.columns]
    out["lost"] = out["count"] - out.pop("received")
    out["loss_ratio"] = out["lost"] / out["count"]
    columns = ["count", "lost", "loss_ratio", "mean", *(quantile_column(x) for x in qs)]
    return out.join(q).reset_index()[[*by, *columns]]


def random_samples(seed: int, n: int = 5000, categorical: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    regions = np.array(["ZM-LUN", "GB-LHR", "JP-NRT", "BR-GRU", "AU-SYD"])
    targets = np.array(["dc-fra", "dc-sin", "dc-iad"])
    kinds = np.array(["ping", "tcp"])
    df = pd.DataFrame({
        "region": regions[rng.integers(0, len(regions), n)],
        "target": targets[rng.integers(0, len(targets), n)],
        "kind": kinds[rng.integers(0, len(kinds), n)],
        # Rounded so that ties occur, as with real millisecond readings.
        "rtt_ms": np.round(rng.lognormal(3.0, 0.8, n), 1),
    })
    df.loc[rng.random(n) < 0.05, "rtt_ms"] = np.nan
    # A group whose samples were all lost, and a group of one received sample.
    df.loc[(df.region == "AU-SYD") & (df.target == "dc-iad") & (df.kind == "tcp"),
           "rtt_ms"] = np.nan
    one = pd.DataFrame({"region": ["XX-ONE"], "target": ["dc-fra"], "kind": ["ping"],
                        "rtt_ms": [12.5]})
    df = pd.concat([df, one], ignore_index=True)
    if categorical:
        for key in KEYS:
            df[key] = df[key].astype("category")
    return df


def assert_same(got: pd.DataFrame, want: pd.DataFrame, by: list[str]) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for key in by:
        assert got[key].astype(str).tolist() == want[key].astype(str).tolist()
    for column in ("count", "lost"):
        assert got[column].tolist() == want[column].tolist(), column
    floats = [c for c in want.columns if c not in (*by, "count", "lost")]
    np.testing.assert_allclose(got[floats].to_numpy(float), want[floats].to_numpy(float),
                               rtol=1e-12, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("categorical", [True, False])
def test_matches_pandas_groupby(seed: int, categorical: bool) -> None:
    samples = random_samples(seed, categorical=categorical)
    got = sample_quantiles(samples, by=KEYS, qs=QS)
    want = naive(samples, KEYS, QS)
    assert_same(got, want, KEYS)
    lost_group = got[(got.region == "AU-SYD") & (got.target == "dc-iad") & (got.kind == "tcp")]
    assert len(lost_group) == 1
    row = lost_group.iloc[0]
    assert row["lost"] == row["count"] > 0 and row["loss_ratio"] == 1.0
    assert np.isnan(row["mean"]) and np.isnan(row["p50"])
    if categorical:
        assert isinstance(got["region"].dtype, pd.CategoricalDtype)


def test_default_columns_and_fewer_keys() -> None:
    samples = random_samples(3)
    got = sample_quantiles(samples)
    assert list(got.columns) == [*KEYS, "count", "lost", "loss_ratio", "mean",
                                 "p50", "p90", "p95", "p99"]
    assert_same(sample_quantiles(samples, by=["target"], qs=(0.5, 0.99)),
                naive(samples, ["target"], (0.5, 0.99)), ["target"])


def test_missing_keys_and_unused_categories_are_dropped() -> None:
    samples = random_samples(4)
    samples["region"] = samples["region"].cat.add_categories(["NO-ONE"])
    samples.loc[samples.index[:50], "region"] = np.nan
    samples.loc[samples.index[100:120], "target"] = np.nan
    assert_same(sample_quantiles(samples, by=KEYS, qs=QS), naive(samples, KEYS, QS), KEYS)


def test_many_combinations_take_the_sparse_path() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    samples = pd.DataFrame({
        "a": rng.integers(0, 2000, n),  # 2000 × 2000 combinations: beyond the dense limit
        "b": rng.integers(0, 2000, n),
        "rtt_ms": rng.normal(50, 10, n),
    })
    samples.loc[rng.random(n) < 0.1, "rtt_ms"] = np.nan
    assert_same(sample_quantiles(samples, by=["a", "b"], qs=(0.5, 0.9)),
                naive(samples, ["a", "b"], (0.5, 0.9)), ["a", "b"])


def test_rejects_bad_arguments() -> None:
    samples = random_samples(6, n=10)
    with pytest.raises(ValueError):
        sample_quantiles(samples, by=())
    with pytest.raises(ValueError):
        sample_quantiles(samples, qs=(1.5,))


def test_too_many_combinations_for_mixed_radix_codes() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    by = [f"k{i}" for i in range(6)]  # up to 2000⁶ combinations: beyond 2⁶²
    samples = pd.DataFrame({k: rng.integers(0, 10**6, n) for k in by})
    samples.loc[: n // 2, by] = samples.loc[: n // 2, by].to_numpy() % 3  # repeated groups
    samples["rtt_ms"] = rng.normal(50, 10, n)
    samples.loc[rng.random(n) < 0.1, "rtt_ms"] = np.nan
    assert_same(sample_quantiles(samples, by=by, qs=(0.5, 0.9)),
                naive(samples, by, (0.5, 0.9)), by)


# --------------------------------------------------------------------------- kernels


def test_group_quantiles_equal_numpy_nanquantile_per_group() -> None:
    from netvantage.analysis.fastagg import group_quantiles

    rng = np.random.default_rng(11)
    n_groups = 40
    group = rng.integers(0, n_groups - 3, 3000)  # the last three groups stay empty
    values = np.round(rng.lognormal(3.0, 1.0, len(group)), 1)  # ties, as real readings
    values[rng.random(len(group)) < 0.1] = np.nan
    values[group == 5] = np.nan  # a group with nothing but NaN
    keep = (group != 7) | (np.cumsum(group == 7) == 1)  # a group of one value
    group, values = group[keep], values[keep]
    values[group == 7] = 42.0
    qs = (0.0, 0.05, 0.5, 0.95, 0.99, 1.0)
    got = group_quantiles(group, values, n_groups, qs)
    for g in range(n_groups):
        mine = values[group == g]
        if np.isnan(mine).all():
            assert np.isnan(got[g]).all(), g
        else:
            # Bit for bit: the same order statistics and numpy's own interpolation formula.
            assert got[g].tolist() == np.nanquantile(mine, qs).tolist(), g
    assert got[7].tolist() == [42.0] * len(qs)


def test_replicate_quantiles_equal_numpy_on_the_replicates_written_out() -> None:
    from netvantage.analysis.fastagg import replicate_quantiles

    rng = np.random.default_rng(5)
    values = np.sort(np.round(rng.normal(50.0, 10.0, 25), 0))
    weights = rng.multinomial(25, np.full(25, 1 / 25), size=200)
    weights[3] = 0  # a replicate that drew nothing
    weights[4] = 0
    weights[4, 6] = 1  # and one of a single value
    qs = (0.5, 0.95, 0.025)
    got = replicate_quantiles(values, weights, qs)
    for b in range(len(weights)):
        written = np.repeat(values, weights[b])
        if written.size == 0:
            assert np.isnan(got[b]).all()
        else:
            assert got[b].tolist() == np.quantile(written, qs).tolist(), b
    assert got[4].tolist() == [values[6]] * len(qs)


def test_replicate_quantiles_of_a_hand_checked_replicate() -> None:
    from netvantage.analysis.fastagg import replicate_quantiles

    # Values 10, 20, 30 drawn 2, 0, 1 times: the replicate is [10, 10, 30].  Its median is
    # the 2nd value, 10; its p95 lies at position 0.95 × 2 = 1.9, between 10 and 30:
    # 10 + 0.9 × 20 = 28.
    got = replicate_quantiles(np.array([10.0, 20.0, 30.0]), np.array([[2, 0, 1]]), (0.5, 0.95))
    assert got[0].tolist() == pytest.approx([10.0, 28.0])


def test_row_quantiles_equal_numpy_row_by_row() -> None:
    """Each row's quantiles are numpy's nanquantile of that row, bit for bit (NaN left
    out; a row of NaN gives NaN; one value gives itself)."""
    rng = np.random.default_rng(5)
    rows = np.round(rng.normal(size=(300, 17)), 2)  # ties
    rows[rng.random(rows.shape) < 0.3] = np.nan
    rows[0] = np.nan
    rows[1, 1:] = np.nan
    levels = (0.025, 0.5, 0.975)
    have = row_quantiles(rows, levels)
    assert np.isnan(have[0]).all()
    assert (have[1] == rows[1, 0]).all()
    for r in range(2, len(rows)):
        finite = rows[r][~np.isnan(rows[r])]
        assert have[r].tolist() == np.quantile(finite, levels).tolist()
