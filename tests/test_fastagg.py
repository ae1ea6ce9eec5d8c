"""sample_quantiles against the plain pandas group-by it replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netvantage.analysis.fastagg import quantile_column, sample_quantiles

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
