"""sweep.stats against independent computations, simulations and hand examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sweep import data, stats
from sweep.errors import SweepError

NAMES = data.CIFAR10_CLASSES
CAT, DOG = 3, 5


def fake_metrics(
    *,
    seeds: int = 6,
    counts: tuple[int, ...] = (0, 5, 50),
    paired: bool = True,
    epochs: int = 2,
    diverged: tuple[tuple[int, int], ...] = (),
    noise: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """A metrics table shaped exactly like a sweep's, with a known truth.

    Per-class accuracy = base + seed effect (shared by twins when paired) +
    count effect (cat -0.25/label, dog +0.08/label) + noise, rounded to the
    1,000-image grid a real test set gives.
    """
    rng = np.random.default_rng(seed)
    k = len(NAMES)
    base = 70 + rng.normal(0, 5, k)
    twin = rng.normal(0, 2, (seeds, k))
    rows, replica = [], 0
    for count in counts:
        effect = np.zeros(k)
        effect[CAT], effect[DOG] = -0.25 * count, 0.08 * count
        for s in range(seeds):
            shift = twin[s] if paired else rng.normal(0, 2, k)
            for epoch in range(1, epochs + 1):
                p = base + shift + effect - 5 * (epochs - epoch)
                p = np.clip(p + rng.normal(0, noise, k), 1, 99)
                correct = np.round(10 * p).astype(int)  # of 1,000 images
                for c in range(k):
                    rows.append(
                        {
                            "replica": replica,
                            "count": count,
                            "seed": s if paired else 1000 * count + s,
                            "paired": paired,
                            "epoch": epoch,
                            "class_id": c,
                            "class_name": NAMES[c],
                            "correct": int(correct[c]),
                            "n": 1000,
                            "accuracy": correct[c] / 10,
                            "train_loss": 1.0 / epoch,
                            "train_accuracy": 50.0 + epoch,
                            "test_loss": 1.2 / epoch,
                            "test_accuracy": float(correct.mean() / 10),
                            "diverged": (count, s) in diverged,
                        }
                    )
            replica += 1
    return pd.DataFrame(rows)


def cell(metrics: pd.DataFrame, count: int, class_id: int, epoch: int = 2):
    """(clean, poisoned) accuracies of one class, by seed, straight from the table."""
    rows = metrics[(metrics["epoch"] == epoch) & (metrics["class_id"] == class_id)]
    clean = rows[rows["count"] == 0].set_index("seed")["accuracy"]
    poisoned = rows[rows["count"] == count].set_index("seed")["accuracy"]
    return clean, poisoned


# Intervals.


def test_t_interval_matches_scipy_paired_t():
    rng = np.random.default_rng(1)
    clean, poisoned = rng.normal(70, 3, 9), rng.normal(68, 3, 9)
    for level in (0.9, 0.95, 0.99):
        mean, (low, high) = stats.t_interval(poisoned - clean, level=level)
        expected = sps.ttest_rel(poisoned, clean).confidence_interval(level)
        assert mean == pytest.approx(np.mean(poisoned - clean))
        assert (low, high) == pytest.approx((expected.low, expected.high))


def test_welch_interval_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(70, 3, 7), rng.normal(66, 6, 11)
    diff, (low, high) = stats.welch_interval(a, b, level=0.9)
    expected = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((expected.low, expected.high))


def test_intervals_degrade_without_warnings_on_tiny_samples():
    assert math.isnan(stats.t_interval(np.array([1.0]))[1][0])
    assert math.isnan(stats.welch_interval(np.array([1.0]), np.array([2.0, 3]))[1][1])
    assert stats.t_interval(np.array([2.0, 2, 2]))[1] == (2.0, 2.0)
    point, interval, method = stats.bootstrap_interval(np.array([1.5]))
    assert point == 1.5 and math.isnan(interval[0]) and method == "none (n < 2)"
    point, interval, method = stats.bootstrap_interval(np.array([0.7, 0.7, 0.7]))
    assert interval == (point, point) == pytest.approx((0.7, 0.7))
    assert method.startswith("degenerate")
    _, (low, high), method = stats.bootstrap_interval(np.array([1.0, 3.0]))
    assert method == "percentile (n < 3)" and 1.0 <= low <= high <= 3.0


def test_bootstrap_is_bca_and_matches_scipy_with_the_same_generator():
    x = np.random.default_rng(3).normal(1, 2, 12)
    _, (low, high), method = stats.bootstrap_interval(
        x, level=0.9, rng=np.random.default_rng(7), n_resamples=2000
    )
    expected = sps.bootstrap(
        (x,),
        np.mean,
        confidence_level=0.9,
        n_resamples=2000,
        method="BCa",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert method == "BCa"
    assert (low, high) == pytest.approx((expected.low, expected.high))


def test_t_interval_covers_the_true_delta_95_percent_of_the_time():
    # 2,000 trials: the coverage estimate has sd 0.5 points, so 93-97% is +-4 sd
    # around 95% and a correct interval fails with negligible probability.
    rng = np.random.default_rng(20240611)
    deltas = rng.normal(-3.0, 2.5, (2000, 8))  # trials x seeds
    intervals = [stats.t_interval(d, level=0.95)[1] for d in deltas]
    low, high = np.array(intervals).T
    assert 0.93 <= np.mean((low <= -3.0) & (-3.0 <= high)) <= 0.97
    # The check has teeth: 90% intervals on the same trials fall outside it.
    intervals = [stats.t_interval(d, level=0.90)[1] for d in deltas]
    low, high = np.array(intervals).T
    assert np.mean((low <= -3.0) & (-3.0 <= high)) < 0.93


def test_bootstrap_interval_covers_the_true_delta_95_percent_of_the_time():
    # Bootstrap intervals for a mean behave like a z interval with the
    # 1/n-variance sd, covering about P(|t_{n-1}| < 1.96 sqrt((n-1)/n)): 93.3%
    # at n = 25, 94.2% at n = 80. So n = 80; 2,000 trials put the estimate's sd
    # at 0.5 points, leaving more than 2 sd above 93%. 999 resamples each.
    rng = np.random.default_rng(11)
    truth, hits = 1.0, 0
    for _ in range(2000):
        x = rng.normal(truth, 2.0, 80)
        _, (low, high), method = stats.bootstrap_interval(x, rng=rng, n_resamples=999)
        hits += low <= truth <= high
    assert method == "BCa"
    assert 0.93 <= hits / 2000 <= 0.97
    # With 5 seeds the same interval under-covers: the check can fail.
    hits = 0
    for _ in range(400):
        x = rng.normal(truth, 2.0, 5)
        _, (low, high), _ = stats.bootstrap_interval(x, rng=rng, n_resamples=999)
        hits += low <= truth <= high
    assert hits / 400 < 0.93


# Tests and multiplicity.


def brute_force_sign_flip(d: np.ndarray) -> float:
    """Share of all 2^n sign patterns whose |sum| reaches the observed |sum|."""
    observed = abs(sum(d))
    patterns = list(itertools.product((1, -1), repeat=len(d)))
    hits = sum(
        abs(sum(s * x for s, x in zip(signs, d))) >= observed - 1e-9
        for signs in patterns
    )
    return hits / len(patterns)


def test_sign_flip_p_value_matches_brute_force_and_scipy():
    rng = np.random.default_rng(4)
    for n in (1, 3, 6, 9):
        # On the 0.1-point grid of real accuracies, ties are common.
        d = np.round(rng.normal(0.8, 2, n), 1)
        p, method = stats.sign_flip_test(d)
        assert p == pytest.approx(brute_force_sign_flip(d))
        assert method == f"sign-flip exact (2^{n})"
        if n > 1:
            expected = sps.permutation_test(
                (d,), np.mean, permutation_type="samples", n_resamples=np.inf
            ).pvalue
            assert p == pytest.approx(expected)
    assert stats.sign_flip_test(np.array([0.0, 0.0, 0.0]))[0] == 1.0
    assert stats.sign_flip_test(np.full(8, 2.5))[0] == pytest.approx(2 / 2**8)
    assert stats.min_attainable_p(8) == pytest.approx(2 / 2**8)


def test_sign_flip_goes_monte_carlo_beyond_16_seeds():
    d = np.round(np.random.default_rng(5).normal(0.3, 1, 17), 1)
    exact, _ = stats.sign_flip_test(d, max_exact=17)
    p, method = stats.sign_flip_test(d, rng=np.random.default_rng(0), n_resamples=20000)
    assert method == "sign-flip Monte Carlo (20000)"
    assert p == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20000))


def test_unpaired_permutation_test_matches_enumeration():
    rng = np.random.default_rng(6)
    x, y = np.round(rng.normal(1, 1, 4), 1), np.round(rng.normal(0, 1, 5), 1)
    pooled = np.concatenate([x, y])
    observed = abs(x.mean() - y.mean())
    splits = list(itertools.combinations(range(9), 4))
    hits = 0
    for chosen in splits:
        rest = [i for i in range(9) if i not in chosen]
        hits += abs(pooled[list(chosen)].mean() - pooled[rest].mean()) >= (
            observed - 1e-9
        )
    p, method = stats.permutation_test(x, y)
    assert method == "permutation exact"
    assert p == pytest.approx(hits / len(splits))
    expected = sps.permutation_test(
        (x, y),
        lambda a, b, axis: np.abs(a.mean(axis=axis) - b.mean(axis=axis)),
        n_resamples=np.inf,
        alternative="greater",
    ).pvalue
    assert p == pytest.approx(expected)
    mc, method = stats.permutation_test(
        x, y, max_exact=10, rng=np.random.default_rng(0), n_resamples=20000
    )
    assert method == "permutation Monte Carlo (20000)"
    assert mc == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 20000))


def test_holm_on_a_hand_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06).
    adjusted = stats.holm(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    np.testing.assert_allclose(stats.holm(np.array([0.5, 0.6])), [1.0, 1.0])


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(7).uniform(0, 0.2, 40) ** 2
    np.testing.assert_allclose(
        stats.benjamini_hochberg(p), sps.false_discovery_control(p)
    )
    with_nan = np.concatenate([p[:5], [np.nan]])
    adjusted = stats.benjamini_hochberg(with_nan)
    np.testing.assert_allclose(adjusted[:5], sps.false_discovery_control(p[:5]))
    assert math.isnan(adjusted[5])


# Isotonic fits and the threshold.


def test_isotonic_known_examples_and_pava_matches_scipy():
    np.testing.assert_allclose(
        stats.isotonic_fit(np.array([1.0, 3, 2, 4])), [1, 2.5, 2.5, 4]
    )
    np.testing.assert_allclose(
        stats.pava(np.array([5.0, 3, 4, 1]), increasing=False), [5, 3.5, 3.5, 1]
    )
    # Weighted: the pooled block is the weighted mean (3*3 + 1*2) / 4.
    np.testing.assert_allclose(
        stats.pava(np.array([1.0, 3, 2]), weights=np.array([1.0, 3, 1])),
        [1, 2.75, 2.75],
    )
    rng = np.random.default_rng(8)
    for _ in range(50):
        y, w = rng.normal(size=7), rng.uniform(0.5, 3, 7)
        for up in (True, False):
            fit = stats.pava(y, weights=w, increasing=up)
            np.testing.assert_allclose(
                fit, stats.isotonic_fit(y, weights=w, increasing=up), atol=1e-12
            )
            assert (
                np.all(np.diff(fit) >= -1e-12) if up else np.all(np.diff(fit) <= 1e-12)
            )


def test_isotonic_fit_is_the_least_squares_monotone_sequence_by_brute_force():
    # Among all non-decreasing sequences on a fine grid, none beats the fit.
    y = np.array([0.3, -0.2, 0.5, 0.1])
    fit = stats.isotonic_fit(y)
    grid = np.round(np.arange(-0.5, 0.81, 0.05), 10)
    best = min(
        float(((np.array(s) - y) ** 2).sum())
        for s in itertools.combinations_with_replacement(grid, 4)
    )
    assert float(((fit - y) ** 2).sum()) <= best + 1e-12


def test_monotone_fit_picks_the_direction_with_smaller_sse():
    _, increasing = stats.monotone_fit(np.array([0.0, -1, -0.5, -4, -9]))
    assert increasing is False
    _, increasing = stats.monotone_fit(np.array([0.0, 0.5, 0.2, 2, 3]))
    assert increasing is True


def test_crossing_interpolates_on_a_constructed_curve():
    counts, curve = np.array([0, 10, 50, 100]), np.array([80.0, 70, 40, 20])
    # Between (10, 70) and (50, 40): 10 + (70 - 60) / 30 * 40.
    assert stats.crossing(counts, curve, 60) == pytest.approx(10 + 40 / 3)
    assert stats.crossing(counts, curve, 70) == pytest.approx(10 + 0 / 30 * 40)
    assert stats.crossing(counts, curve, 90) == 0.0
    assert stats.crossing(counts, curve, 10) == math.inf


def test_threshold_count_on_noise_free_data_is_exact():
    metrics = fake_metrics(counts=(0, 10, 50, 100), seeds=4, noise=0.0)
    clean = metrics[(metrics["count"] == 0) & (metrics["class_id"] == CAT)]
    start = clean[clean["epoch"] == 2]["accuracy"].mean()
    # Mean cat accuracy is start - 0.25 * count: it crosses start - 5 at 20 flips.
    point, (low, high) = stats.threshold_count(
        metrics, class_id=CAT, threshold=start - 5, rng=np.random.default_rng(0)
    )
    assert point == pytest.approx(20.0, abs=1e-6)
    assert low <= point <= high
    never = stats.threshold_count(metrics, class_id=CAT, threshold=start - 40)
    assert never == (math.inf, (math.inf, math.inf))
    text = stats.describe_threshold(
        never, threshold=start - 40, class_name="cat", largest_count=100
    )
    assert "not reached within the counts tried" in text


def test_dose_response_is_monotone_in_the_data_direction_with_a_band():
    metrics = fake_metrics(counts=(0, 1, 5, 10, 50, 100), seeds=6)
    rng = np.random.default_rng(0)
    cat = stats.dose_response(metrics, class_id=CAT, rng=rng, n_boot=300)
    dog = stats.dose_response(metrics, class_id=DOG, rng=rng, n_boot=300)
    assert not cat["increasing"].iloc[0] and dog["increasing"].iloc[0]
    assert np.all(np.diff(cat["fit"]) <= 1e-12) and np.all(np.diff(dog["fit"]) >= 0)
    assert np.all(cat["band_low"] <= cat["band_high"])
    assert cat["delta_mean"].iloc[0] == 0.0
    assert cat["fit"].iloc[-1] == pytest.approx(-25, abs=2)  # truth: -0.25 * 100
    single = stats.dose_response(fake_metrics(seeds=1), class_id=CAT)
    assert single["band_low"].isna().all() and single["fit"].notna().all()


# The summary.


def test_summarize_paired_rows_match_independent_computations():
    metrics = fake_metrics(diverged=((50, 2),))
    summary = stats.summarize(metrics, rng=np.random.default_rng(0))
    assert list(summary.columns) == list(stats.SUMMARY_COLUMNS)
    assert len(summary) == 2 * len(NAMES)
    assert not summary.duplicated(["count", "class_id"]).any()
    row = summary[(summary["count"] == 5) & (summary["class_id"] == CAT)].iloc[0]
    clean, poisoned = cell(metrics, 5, CAT)
    ci = sps.ttest_rel(poisoned, clean).confidence_interval(0.95)
    assert row["delta_mean"] == pytest.approx((poisoned - clean).mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["p_value"] == pytest.approx(
        brute_force_sign_flip((poisoned - clean).to_numpy())
    )
    assert row["twin_corr"] == pytest.approx(np.corrcoef(clean, poisoned)[0, 1])
    welch = sps.ttest_ind(poisoned, clean, equal_var=False).confidence_interval(0.95)
    assert row["width_ratio"] == pytest.approx(
        (ci.high - ci.low) / (welch.high - welch.low)
    )
    assert row["boot_method"] == "BCa" and row["boot_low"] < row["boot_high"]
    assert row["mde"] == pytest.approx(stats.min_detectable_effect(row["delta_sd"], 6))
    # The diverged replica takes its seed's twin out of count 50 only.
    dropped = summary[summary["count"] == 50]
    assert (dropped["n_seeds"] == 5).all() and (dropped["n_diverged"] == 1).all()
    assert (summary[summary["count"] == 5]["n_diverged"] == 0).all()
    np.testing.assert_allclose(summary["p_holm"], stats.holm(summary["p_value"]))
    np.testing.assert_allclose(
        summary["p_bh"], sps.false_discovery_control(summary["p_value"])
    )
    assert stats.seeds_note(summary) is None


def test_summarize_unpaired_uses_welch_and_label_permutations():
    metrics = fake_metrics(paired=False, seeds=5)
    summary = stats.summarize(metrics, level=0.9)
    row = summary[(summary["count"] == 50) & (summary["class_id"] == CAT)].iloc[0]
    clean, poisoned = cell(metrics, 50, CAT)
    ci = sps.ttest_ind(poisoned, clean, equal_var=False).confidence_interval(0.9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["p_method"] == "permutation exact"
    assert math.isnan(row["twin_corr"]) and math.isnan(row["width_ratio"])
    assert not row["paired"] and row["level"] == 0.9


def test_summarize_single_seed_gives_points_and_a_note_without_warnings():
    summary = stats.summarize(fake_metrics(seeds=1))  # warnings are errors here
    assert summary["delta_mean"].notna().all()
    for column in ("ci_low", "boot_low", "p_value", "p_holm", "mde", "twin_corr"):
        assert summary[column].isna().all(), column
    assert stats.seeds_note(summary) == (
        "intervals need at least 2 seeds; this sweep has 1"
    )


def test_divergence_is_told_apart_from_a_single_seed():
    head = "intervals need at least 2 seeds; "
    twins = stats.summarize(fake_metrics(seeds=2, diverged=((0, 0),)), n_resamples=99)
    assert (
        stats.seeds_note(twins) == head + "at most 1 per count is left after divergence"
    )
    lost = ((50, 0), (50, 1), (50, 2), (50, 3), (50, 4), (50, 5))
    metrics = fake_metrics(diverged=lost)
    summary = stats.summarize(metrics, n_resamples=99)
    assert stats.seeds_note(summary) == (
        head + "after dropping diverged replicas count(s) 50 have fewer"
    )
    assert (summary[summary["count"] == 50]["n_seeds"] == 0).all()
    # The threshold curve goes on without the lost count.
    point, (low, high) = stats.threshold_count(metrics, class_id=CAT, threshold=10)
    assert point == math.inf and high == math.inf


def test_summarize_analyses_the_requested_epoch_and_refuses_bad_ones():
    metrics = fake_metrics()
    early = stats.summarize(metrics, epoch=1, n_resamples=99)
    clean, poisoned = cell(metrics, 50, CAT, epoch=1)
    row = early[(early["count"] == 50) & (early["class_id"] == CAT)].iloc[0]
    assert row["poisoned_mean"] == pytest.approx(poisoned.mean())
    assert row["epoch"] == 1
    with pytest.raises(SweepError, match="epoch 7 is not in the results"):
        stats.summarize(metrics, epoch=7)
    with pytest.raises(SweepError, match="--level"):
        stats.summarize(metrics, level=95)
    with pytest.raises(SweepError, match="no clean"):
        stats.summarize(metrics[metrics["count"] > 0])
    with pytest.raises(SweepError, match="lacks column"):
        stats.summarize(metrics.drop(columns="diverged"))


def test_smallest_significant_count_reads_the_adjusted_column():
    summary = pd.DataFrame(
        {
            "count": [1, 5, 10, 1, 5, 10],
            "class_id": [3, 3, 3, 5, 5, 5],
            "p_holm": [0.2, 0.04, 0.01, 0.9, 0.9, 0.9],
            "p_bh": [0.03, 0.02, 0.01, 0.9, 0.9, 0.04],
        }
    )
    assert stats.smallest_significant_count(summary, 3) == 5
    assert stats.smallest_significant_count(summary, 3, adjust="bh") == 1
    assert stats.smallest_significant_count(summary, 5) is None


# Power.


def test_power_matches_known_values_and_simulation():
    # G*Power, paired t, dz = 1, alpha 0.05 two-sided: n = 10 gives 0.8031.
    assert stats.paired_power(1.0, 1.0, 10) == pytest.approx(0.80310, abs=1e-4)
    assert stats.seeds_needed(1.0, 1.0) == 10
    assert stats.seeds_needed(0.5, 1.0) == 34
    mde = stats.min_detectable_effect(2.0, 8)
    assert stats.paired_power(mde, 2.0, 8) == pytest.approx(0.8, abs=1e-6)
    deltas = np.random.default_rng(9).normal(1.0, 1.0, (4000, 10))
    rejected = sps.ttest_1samp(deltas, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.803, abs=0.025)


def test_plan_table_and_its_errors():
    table = stats.plan(1.0, sd=2.0, seeds=(4, 8))
    needed = stats.seeds_needed(1.0, 2.0)
    assert list(table["seeds"]) == [4, 8, needed]
    assert table.loc[table["seeds"] == needed, "note"].item() == "needed"
    assert table["power"].is_monotonic_increasing
    assert table.attrs["sd_source"] == "given"
    assert "34 seeds" in stats.format_plan(table)
    assert stats.plan(1.0).attrs["sd"] == stats.DEFAULT_SD
    with pytest.raises(SweepError, match="--effect"):
        stats.plan(0.0)
    with pytest.raises(SweepError, match="not both"):
        stats.plan(1.0, sd=2.0, results_dir="somewhere")
