"""The ASR intervals, test and threshold set: coverage by simulation, and the API.

Coverage cells use 2,000 trials for the mean ASR and 1,200 for the rest (the
estimate's sd is 0.005-0.006 at 95%), so "covers 95%" is asserted as
0.925-0.975 (0.98 for the delta, conservative at few seeds) and "a 90% interval
would not pass" as below 0.93; docs/statistics.md lists these cells, and
python -m sweep.stats.simulate.asr_coverage prints the full table. The cells
are the hard ones: ASR near 1 or near 0 with a large spread between seeds,
where the plain t interval covers under 0.925 (asserted).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from sweep.errors import SweepError
from sweep.stats import attack_success as asr
from sweep.stats.multiplicity import graphical_adjusted
from sweep.stats.simulate import asr_coverage as sim

TRIALS = 1200
MEAN_TRIALS = 2000  # the mean ASR interval is cheap
NEAR_ONE = sim.AsrScenario(
    "99.9%, sd 1.0, n 9,000", (0.05, 0.999), sigma=1.0, n_test=9000
)
NEAR_ZERO = sim.AsrScenario("3%, sd 1.0, n 9,000", (0.01, 0.03), sigma=1.0, n_test=9000)
FEW = sim.AsrScenario("99.95%, sd 0.5, n 1,000", (0.1, 0.9995), n_test=1000)
SKEWED_DELTA = sim.AsrScenario("5% -> 97%, sd 1.0", (0.05, 0.97), sigma=1.0)
CORRELATED_DELTA = sim.AsrScenario(
    "1% -> 3%, sd 1.0, r 0.9", (0.01, 0.03), sigma=1.0, twin_corr=0.9, n_test=9000
)


def kw(n: int, seed: int, level: float = 0.95, trials: int = TRIALS) -> dict:
    return dict(seeds=n, trials=trials, level=level, rng=np.random.default_rng(seed))


@pytest.mark.parametrize(("scenario", "n"), [(NEAR_ONE, 4), (NEAR_ZERO, 8)])
def test_mean_asr_interval_covers_95_near_the_bounds(scenario, n):
    result = sim.coverage_mean(scenario, **kw(n, n, trials=MEAN_TRIALS))
    assert 0.925 <= result["reported"] <= 0.975, result
    assert result["t"] < 0.925, result  # the plain t interval does not


def test_a_90_percent_mean_asr_interval_would_fail():
    result = sim.coverage_mean(NEAR_ZERO, **kw(8, 1, 0.90, MEAN_TRIALS))
    assert result["reported"] < 0.93, result


def test_every_seed_at_100_percent_gives_a_true_one_sided_bound():
    rng = np.random.default_rng(2)
    x = sim.draw_hits(FEW, trials=TRIALS, seeds=3, rng=rng)[..., 1]
    _, low, high, regime = asr.mean_asr_interval(x, 1000, draws=1000, rng=rng)
    top = (x == 1000).all(axis=1)
    assert top.sum() > 50  # a fifth of 3-seed sweeps see no miss at all
    assert (regime[top] == asr.AT_BOUND).all() and (high[top] == 1).all()
    assert np.mean(low[top] <= 0.9995) >= 0.95
    covered = (low <= 0.9995) & (0.9995 <= high)
    assert covered.mean() >= 0.95  # few events: at least 95%, as labelled
    t = sim.coverage_mean(FEW, **kw(3, 5))["t"]
    assert t < 0.925  # every seed at 100% gives the t interval zero width


@pytest.mark.parametrize(("scenario", "n"), [(SKEWED_DELTA, 4), (CORRELATED_DELTA, 8)])
def test_delta_interval_covers_95_where_the_paired_t_does_not(scenario, n):
    result = sim.coverage_delta(scenario, **kw(n, 10 + n))
    assert 0.925 <= result["reported"] <= 0.98, result
    assert result["t"] < 0.925, result


def test_a_90_percent_delta_interval_would_fail():
    result = sim.coverage_delta(CORRELATED_DELTA, **kw(8, 3, level=0.90))
    assert result["reported"] < 0.93, result


@pytest.mark.parametrize("x", [0.5, 0.9])
def test_threshold_set_covers_the_true_crossing(x):
    cover = sim.coverage_threshold(sim.CURVE, x, **kw(4, int(100 * x)))
    assert 0.925 <= cover <= 0.975, cover


def test_a_90_percent_threshold_set_would_fail():
    low = sim.coverage_threshold(sim.CURVE, 0.5, **kw(4, 7, level=0.90))
    assert low < 0.93, low


def test_fixed_sequence_controls_the_familywise_error():
    error = sim.fwer(
        sim.NULL_CURVE, seeds=4, trials=400, alpha=0.05, rng=np.random.default_rng(4)
    )
    assert error <= 0.075  # alpha + 3 sd of a 400-trial estimate


# The API on small tables.


def asr_table(
    hits: np.ndarray, counts: tuple[int, ...], n: int = 1800, **extra
) -> pd.DataFrame:
    """Rows count, seed, asr_hits, asr_n from (S, C) hits."""
    rows = [
        {"count": c, "seed": s, "asr_hits": int(hits[s, j]), "asr_n": n}
        for j, c in enumerate(counts)
        for s in range(hits.shape[0])
    ]
    table = pd.DataFrame(rows)
    for name, value in extra.items():
        table[name] = value
    return table


def simulated_table(seed: int, seeds: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = sim.draw_hits(sim.CURVE, trials=1, seeds=seeds, rng=rng)[0]
    return asr_table(x, sim.CURVE.counts)


def test_logit_normal_mean_is_the_integral():
    for mu, sigma in ((-6.0, 1.0), (0.3, 0.5), (7.0, 1.5), (2.0, 0.0)):
        value, _ = integrate.quad(
            lambda z: special.expit(mu + sigma * z) * stats.norm.pdf(z), -12, 12
        )
        assert asr.logit_normal_mean(mu, sigma) == pytest.approx(value, abs=1e-7)


def test_wilson_without_design_effect_is_wilsons_interval_with_a_t_quantile():
    x = np.array([10, 10, 10])  # no spread: design effect 1
    low, high = asr.wilson_design_effect(x, 1000, level=0.95)
    q = stats.t.ppf(0.975, 2)
    p, n = 0.01, 3000
    centre = (p + q * q / (2 * n)) / (1 + q * q / n)
    half = q / (1 + q * q / n) * math.sqrt(p * (1 - p) / n + q * q / (4 * n * n))
    assert (low, high) == pytest.approx((centre - half, centre + half))


def test_count_table_rows():
    table = simulated_table(1)
    means = asr.mean_asr_by_count(table, draws=4000)
    assert tuple(means.columns) == asr.MEAN_COLUMNS
    assert means["count"].tolist() == list(sim.CURVE.counts)
    assert (means["asr_low"] <= means["asr_mean"]).all()
    assert (means["asr_mean"] <= means["asr_high"]).all()
    deltas = asr.asr_deltas(table, draws=4000)
    assert [d["count"] for d in deltas] == list(sim.CURVE.counts[1:])
    for d, mean in zip(deltas, means["asr_mean"].iloc[1:], strict=True):
        assert d["poisoned"].mean() == pytest.approx(mean)
        assert d["delta_mean"] == pytest.approx(mean - means["asr_mean"].iloc[0])
        assert d["ci_low"] <= d["delta_mean"] <= d["ci_high"]
    # ASR rises from 3% to 99.9%: the largest count's delta is clear of 0.
    assert deltas[-1]["p_value"] < 0.01 and deltas[-1]["ci_low"] > 0


def test_p_value_is_the_delta_interval_inverted():
    for seed in range(6):
        rng = np.random.default_rng(seed)
        scenario = sim.AsrScenario("", (0.05, 0.08 + 0.02 * seed), sigma=0.8)
        x = sim.draw_hits(scenario, trials=40, seeds=4, rng=rng)
        _, low, high, p = asr.asr_delta_interval(
            x[..., 0], x[..., 1], 1800, 1800, draws=2000, rng=rng
        )
        excludes = (low > 0) | (high < 0)
        np.testing.assert_array_equal(p <= 0.05, excludes)


def test_fixed_sequence_is_the_graphical_procedure_with_one_chain():
    rng = np.random.default_rng(0)
    for c in (1, 2, 4):
        chain = np.zeros((c, c))
        chain[np.arange(c - 1), np.arange(1, c)] = 1.0  # largest count first
        weights = np.eye(c)[0]
        for _ in range(50):
            p = rng.uniform(0, 0.1, c)
            expected = graphical_adjusted(p[::-1], weights, chain)[::-1]
            np.testing.assert_allclose(asr.fixed_sequence_adjusted(p), expected)


def test_every_seed_at_100_percent_is_stated_as_a_one_sided_bound():
    hits = np.array([[30, 1800], [41, 1800], [25, 1800]])
    means = asr.mean_asr_by_count(asr_table(hits, (0, 500)))
    row = means.iloc[1]
    assert row["asr_high"] == 100 and row["asr_low"] < 100
    assert row["note"].startswith("every seed at 100%: mean ASR >= ")
    assert row["asr_method"] == asr.MEAN_METHODS[asr.AT_BOUND]
    assert means.iloc[0]["note"] == ""


def test_no_spread_in_the_deltas_leaves_the_interval_unstated():
    hits = np.array([[0, 1800], [0, 1800], [0, 1800]])
    (d,) = asr.asr_deltas(asr_table(hits, (0, 500)))
    assert math.isnan(d["ci_low"]) and math.isnan(d["p_value"])
    assert d["p_method"] == "none (no spread)"


def test_diverged_and_missing_replicas_are_left_out():
    table = simulated_table(2, seeds=5)
    table["diverged"] = (table["seed"] == 4) & (table["count"] == 80)
    means = asr.mean_asr_by_count(table, draws=2000).set_index("count")
    assert means.loc[80, "n_seeds"] == 4 and means.loc[80, "n_diverged"] == 1
    assert means.loc[20, "n_seeds"] == 5
    deltas = {d["count"]: d for d in asr.asr_deltas(table, draws=2000)}
    assert deltas[80]["poisoned"].size == 4 and deltas[20]["poisoned"].size == 5


def test_an_unpaired_sweep_gets_mean_intervals_and_no_paired_delta():
    table = simulated_table(4).assign(paired=False)
    means = asr.mean_asr_by_count(table, draws=2000)
    assert np.isfinite(means["asr_low"]).all()
    for d in asr.asr_deltas(table, draws=2000):
        assert math.isnan(d["p_value"]) and d["p_method"] == asr.UNPAIRED_METHOD
    point, pieces = asr.asr_threshold_set(table, threshold=50, draws=2000)
    assert 20 <= point <= 80 and math.isnan(pieces[0][0])


def test_the_monte_carlo_ends_are_stable_between_generators():
    table = simulated_table(3)
    a = asr.mean_asr_by_count(table, rng=np.random.default_rng(1))
    b = asr.mean_asr_by_count(table, rng=np.random.default_rng(2))
    width = (a["asr_high"] - a["asr_low"]).to_numpy()
    gap = np.maximum(np.abs(a["asr_low"] - b["asr_low"]),
                     np.abs(a["asr_high"] - b["asr_high"])).to_numpy()
    assert (gap <= 0.1 * width + 1e-9).all(), gap
    da = asr.asr_deltas(table, rng=np.random.default_rng(1))
    db = asr.asr_deltas(table, rng=np.random.default_rng(2))
    for x, y in zip(da, db, strict=True):
        width = x["ci_high"] - x["ci_low"]
        gap = max(abs(x["ci_low"] - y["ci_low"]), abs(x["ci_high"] - y["ci_high"]))
        assert gap <= 0.1 * width + 1e-9, (x["count"], gap)


def test_metrics_rows_give_the_hits_back_exactly():
    rng = np.random.default_rng(0)
    hits = rng.integers(0, 9001, 40)
    metrics = pd.DataFrame({
        "replica": np.arange(40), "count": np.repeat([0, 5, 50, 500], 10),
        "seed": np.tile(np.arange(10), 4), "epoch": 1, "paired": True,
        "diverged": False, "asr": 100.0 * hits / 9000, "n_stamped": 9000})
    table = asr.replica_table(metrics)
    np.testing.assert_array_equal(table["asr_hits"], hits)
    assert (table["asr_n"] == 9000).all()


def test_threshold_set_answers_the_question():
    table = simulated_table(5, seeds=6)
    result = asr.asr_thresholds(table, draws=2000)
    assert result["threshold"].tolist() == [50.0, 90.0]
    for _, row in result.iterrows():
        pieces = row["pieces"]
        assert pieces and all(lo <= hi for lo, hi in pieces)
        assert row["low"] <= row["count"] <= row["high"]
        assert "mean ASR reaches" in row["statement"]
        # The set rests on the curve being linear between two tested counts.
        below = max(c for c in sim.CURVE.counts if c <= row["count"])
        above = min(c for c in sim.CURVE.counts if c >= row["count"])
        assert f"tested counts {below} and {above}" in row["statement"]
    # Reached already by the clean replicas / never reached within the counts.
    low_point, low_pieces = asr.asr_threshold_set(table, threshold=1.0, draws=2000)
    assert low_point == 0 and low_pieces[0][0] == 0
    top = asr.asr_threshold_set(table, threshold=99.99, draws=2000)
    assert top[1][-1][1] == math.inf


def test_threshold_set_keeps_exactly_the_counts_its_test_keeps():
    table = simulated_table(6)
    design = asr.asr_design(table)
    point, pieces = asr.asr_threshold_set(
        table, threshold=50, rng=np.random.default_rng(0), draws=3000
    )
    # The 50% crossing lies between counts 20 and 80 (the 2nd segment).
    w = np.linspace(0, 1, asr.THRESHOLD_GRID)
    kept, _ = asr.segment_kept(
        design.hits[:, 1],
        design.hits[:, 2],
        design.n[:, 1],
        design.n[:, 2],
        w,
        0.5,
        level=0.95,
        draws=3000,
        rng=np.random.default_rng(9),
    )
    inside = [any(lo <= 20 + 60 * v <= hi for lo, hi in pieces) for v in w]
    assert 20 <= point <= 80
    # Monte Carlo draws differ: allow disagreement within 2 grid steps of an edge.
    disagree = np.flatnonzero(np.array(inside) != kept)
    edges = np.flatnonzero(np.diff(kept.astype(int)))
    assert all(np.abs(edges - i).min() <= 2 for i in disagree), (disagree, edges)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns="asr_n"), "lacks column"),
        (lambda t: t.assign(asr_hits=t["asr_n"] + 1), "between 0 and asr_n"),
        (lambda t: t[t["count"] > 0], "no clean"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "repeats"),
        (lambda t: t.drop(columns="asr_hits").assign(accuracy=1.0), "no asr"),
    ],
)
def test_bad_tables_are_refused_in_one_line(change, message):
    with pytest.raises(SweepError, match=message):
        asr.mean_asr_by_count(change(simulated_table(0)))
