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
    assert math.isnan(stats.t_test(np.array([1.0])))
    assert stats.t_test(np.zeros(3)) == 1.0
    assert math.isnan(stats.t_test(np.full(3, 2.0)))  # no spread: undefined


def test_t_tests_match_scipy_and_agree_with_their_intervals():
    rng = np.random.default_rng(12)
    for n in (3, 4, 8):
        clean, poisoned = rng.normal(70, 3, n), rng.normal(68, 3, n)
        p = stats.t_test(poisoned - clean)
        assert p == pytest.approx(sps.ttest_rel(poisoned, clean).pvalue)
        _, (low, high) = stats.t_interval(poisoned - clean, level=1 - p)
        assert min(abs(low), abs(high)) == pytest.approx(0, abs=1e-9)
        assert stats.welch_test(poisoned, clean) == pytest.approx(
            sps.ttest_ind(poisoned, clean, equal_var=False).pvalue
        )


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
    # Zero deltas have no sign to flip: the floor counts the non-zero ones.
    d = np.array([0.0, 0.0, 1.5, 2.0, 0.5])
    assert stats.sign_flip_floor(d) == pytest.approx(2 / 2**3)
    assert stats.sign_flip_test(d)[0] == pytest.approx(2 / 2**3)
    assert stats.sign_flip_floor(np.zeros(4)) == 1.0


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
        metrics, class_id=CAT, threshold=start - 5
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
    cat = stats.dose_response(metrics, class_id=CAT)
    dog = stats.dose_response(metrics, class_id=DOG)
    assert not cat["increasing"].iloc[0] and dog["increasing"].iloc[0]
    assert np.all(np.diff(cat["fit"]) <= 1e-12) and np.all(np.diff(dog["fit"]) >= 0)
    assert np.all(cat["band_low"] <= cat["band_high"])
    assert cat["delta_mean"].iloc[0] == 0.0 and (cat["band"] == "pointwise").all()
    assert cat["fit"].iloc[-1] == pytest.approx(-25, abs=2)  # truth: -0.25 * 100
    single = stats.dose_response(fake_metrics(seeds=1), class_id=CAT)
    assert single["band_low"].iloc[1:].isna().all() and single["fit"].notna().all()


# The summary.


def test_summarize_paired_rows_match_independent_computations():
    metrics = fake_metrics(diverged=((50, 2),))
    summary = stats.summarize(metrics)
    assert list(summary.columns) == list(stats.SUMMARY_COLUMNS)
    assert len(summary) == 2 * len(NAMES)
    assert not summary.duplicated(["count", "class_id"]).any()
    row = summary[(summary["count"] == 5) & (summary["class_id"] == CAT)].iloc[0]
    clean, poisoned = cell(metrics, 5, CAT)
    test = sps.ttest_rel(poisoned, clean)
    ci = test.confidence_interval(0.95)
    assert row["delta_mean"] == pytest.approx((poisoned - clean).mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["p_value"] == pytest.approx(test.pvalue)
    assert row["p_method"] == "paired t"
    assert row["p_signflip"] == pytest.approx(
        brute_force_sign_flip((poisoned - clean).to_numpy())
    )
    assert row["twin_corr"] == pytest.approx(np.corrcoef(clean, poisoned)[0, 1])
    assert row["unpaired_sd"] == pytest.approx(
        math.sqrt(poisoned.var(ddof=1) + clean.var(ddof=1))
    )
    # mde: the paired t at the level the procedure gives a confirmatory row.
    assert row["mde_alpha"] == 0.025
    assert row["mde"] == pytest.approx(
        stats.min_detectable_effect(row["delta_sd"], 6, alpha=0.025)
    )
    # The diverged replica takes its seed's twin out of count 50 only.
    dropped = summary[summary["count"] == 50]
    assert (dropped["n_seeds"] == 5).all() and (dropped["n_diverged"] == 1).all()
    assert (summary[summary["count"] == 5]["n_diverged"] == 0).all()
    # Families: cat and dog confirmatory (fixed sequence), the rest Holm.
    confirm = summary["class_id"].isin([CAT, DOG])
    assert (summary.loc[confirm, "family"] == "confirmatory").all()
    assert (summary.loc[~confirm, "family"] == "exploratory").all()
    explore = summary[~confirm]
    np.testing.assert_allclose(explore["p_adjusted"], stats.holm(explore["p_value"]))
    cat = summary[summary["class_id"] == CAT]
    dog = summary[summary["class_id"] == DOG]
    expected = stats.confirmatory_adjusted(cat["p_value"], dog["p_value"])
    np.testing.assert_allclose(cat["p_adjusted"], expected[0])
    np.testing.assert_allclose(dog["p_adjusted"], expected[1])
    assert (summary["significant"] == (summary["p_adjusted"] <= 0.05)).all()
    assert stats.seeds_note(summary) is None


def test_summarize_takes_other_confirmatory_classes_by_name_or_id():
    metrics = fake_metrics()
    by_name = stats.summarize(metrics, classes=("bird", "frog"))
    by_id = stats.summarize(metrics, classes=(2, 6))
    assert by_name.equals(by_id)
    family = by_name.set_index(["count", "class_name"])["family"]
    assert family[(5, "bird")] == "confirmatory" and family[(5, "cat")] == "exploratory"
    with pytest.raises(SweepError, match="'lion' is not in the results"):
        stats.summarize(metrics, classes=("lion", "dog"))
    with pytest.raises(SweepError, match="must differ"):
        stats.summarize(metrics, classes=("dog", "dog"))


def test_summarize_unpaired_uses_welch_and_label_permutations():
    metrics = fake_metrics(paired=False, seeds=5)
    summary = stats.summarize(metrics, level=0.9)
    row = summary[(summary["count"] == 50) & (summary["class_id"] == CAT)].iloc[0]
    clean, poisoned = cell(metrics, 50, CAT)
    ci = sps.ttest_ind(poisoned, clean, equal_var=False).confidence_interval(0.9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["p_method"] == "Welch t"
    assert row["p_value"] == pytest.approx(
        sps.ttest_ind(poisoned, clean, equal_var=False).pvalue
    )
    assert row["p_signflip_method"] == "permutation exact"
    assert math.isnan(row["twin_corr"])
    assert not row["paired"] and row["level"] == 0.9


def test_summarize_single_seed_gives_points_and_a_note_without_warnings():
    summary = stats.summarize(fake_metrics(seeds=1))  # warnings are errors here
    assert summary["delta_mean"].notna().all()
    for column in ("ci_low", "p_value", "p_adjusted", "p_signflip", "mde", "twin_corr"):
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
    # A replica that diverges at epoch 2 is left out at epoch 1 as well.
    late = metrics.copy()
    late.loc[
        (late["count"] == 50) & (late["seed"] == 3) & (late["epoch"] == 2), "diverged"
    ] = True
    early = stats.summarize(late, epoch=1)
    assert (early[early["count"] == 50]["n_seeds"] == 5).all()
    with pytest.raises(SweepError, match="epoch 7 is not in the results"):
        stats.summarize(metrics, epoch=7)
    with pytest.raises(SweepError, match="--level"):
        stats.summarize(metrics, level=95)
    with pytest.raises(SweepError, match="no clean"):
        stats.summarize(metrics[metrics["count"] > 0])
    with pytest.raises(SweepError, match="lacks column"):
        stats.summarize(metrics.drop(columns="diverged"))


def test_smallest_effective_count_reads_the_confirmatory_rule():
    summary = pd.DataFrame(
        {
            "count": [1, 5, 10, 1, 5, 10, 1],
            "class_id": [3, 3, 3, 5, 5, 5, 0],
            "family": ["confirmatory"] * 6 + ["exploratory"],
            "p_adjusted": [0.2, 0.04, 0.01, 0.9, 0.9, 0.9, 0.001],
        }
    )
    assert stats.smallest_effective_count(summary, 3) == 5
    assert stats.smallest_effective_count(summary, 5) is None
    with pytest.raises(SweepError, match="not in the confirmatory family"):
        stats.smallest_effective_count(summary, 0)


def test_fixed_sequence_stops_at_the_first_count_it_cannot_reject():
    # Source: largest count first, each at alpha/2 = 0.025; 0.03 at the middle
    # count stops the sequence, so the smallest count (p 0.001) is not declared.
    s, t = stats.confirmatory_adjusted(
        np.array([0.001, 0.03, 0.001]), np.array([0.5, 0.5, 0.5])
    )
    np.testing.assert_allclose(s, [0.06, 0.06, 0.002])
    # The target rejecting every count passes its alpha on: source at 0.05.
    s, t = stats.confirmatory_adjusted(
        np.array([0.001, 0.03, 0.001]), np.array([0.001, 0.001, 0.001])
    )
    assert (s <= 0.05).all() and (t <= 0.05).all()
    # NaN (too few seeds) is never rejected and stops the sequence.
    s, _ = stats.confirmatory_adjusted(np.array([0.001, np.nan]), np.array([1.0, 1.0]))
    assert (s == 1).all()


def test_unpaired_seeds_equivalent_compares_like_with_like():
    base = {"n_seeds": [4, 4], "delta_sd": [2.0, 2.0]}
    # Unrelated twins (unpaired sd = delta sd): no gain beyond the df.
    same = stats.unpaired_seeds_equivalent(
        pd.DataFrame({**base, "unpaired_sd": [2.0, 2.0]})
    )
    assert same == 4
    # Correlated twins: an unpaired sweep needs m with
    # t(2m-2) sd_u / sqrt(m) <= t(3) sd_d / 2.
    m = stats.unpaired_seeds_equivalent(
        pd.DataFrame({**base, "unpaired_sd": [6.0, 6.0]})
    )
    paired = sps.t.ppf(0.975, 3) * 2.0 / 2
    assert sps.t.ppf(0.975, 2 * m - 2) * 6 / math.sqrt(m) <= paired
    assert sps.t.ppf(0.975, 2 * m - 4) * 6 / math.sqrt(m - 1) > paired


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
    # The confirmatory rule tests each class's sequence at alpha / 2.
    needed = stats.seeds_needed(1.0, 2.0, alpha=0.025)
    assert table.attrs["test_alpha"] == 0.025
    assert list(table["seeds"]) == [4, 8, needed]
    assert table.loc[table["seeds"] == needed, "note"].item() == "needed"
    assert table["power"].is_monotonic_increasing
    assert table.attrs["sd_source"] == "given"
    assert f"{needed} seeds" in stats.format_plan(table)
    assert stats.plan(1.0).attrs["sd"] == stats.DEFAULT_SD
    with pytest.raises(SweepError, match="--effect"):
        stats.plan(0.0)
    with pytest.raises(SweepError, match="not both"):
        stats.plan(1.0, sd=2.0, results_dir="somewhere")
