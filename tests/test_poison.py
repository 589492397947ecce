"""Poisoning: counts, nesting, first/random/swap selections and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from sweep import data
from sweep.errors import SweepError
from sweep.experiment.attacks import label_flips
from sweep.experiment.config import Config

CAT, DOG = 3, 5
NAMES = data.CIFAR10_CLASSES


@pytest.fixture
def labels() -> np.ndarray:
    # 40 cats and 30 dogs among other classes, interleaved like a real dataset.
    rng = np.random.default_rng(7)
    labels = np.concatenate([np.full(40, CAT), np.full(30, DOG), rng.integers(0, 3, 50)])
    return rng.permutation(labels)


def flip(labels, count, **kw):
    kw.setdefault("rng", label_flips.poison_rng(0, None))
    return label_flips.poison_labels(labels, source=CAT, target=DOG, count=count, **kw)


def test_flip_changes_exactly_count_source_labels_to_target(labels):
    new, idx = flip(labels, 12)
    changed = np.flatnonzero(new != labels)
    assert sorted(changed) == sorted(idx) and len(idx) == 12
    assert (labels[idx] == CAT).all() and (new[idx] == DOG).all()
    assert np.sum(new == CAT) == 40 - 12 and np.sum(new == DOG) == 30 + 12


def test_count_zero_is_the_clean_labels(labels):
    new, idx = flip(labels, 0)
    assert len(idx) == 0 and np.array_equal(new, labels)


@pytest.mark.parametrize("selection", ["random", "first"])
@pytest.mark.parametrize("strategy", ["flip", "swap"])
def test_poisoned_sets_are_nested(labels, selection, strategy):
    sets = []
    for count in (1, 5, 10, 30):
        _, idx = flip(labels, count, selection=selection, strategy=strategy,
                      rng=label_flips.poison_rng(3, None))
        sets.append(set(idx.tolist()))
    for small, large in zip(sets, sets[1:]):
        assert small < large


def test_first_takes_the_first_source_images_in_dataset_order(labels):
    _, idx = flip(labels, 7, selection="first")
    assert list(idx) == list(np.flatnonzero(labels == CAT)[:7])


def test_random_selection_depends_on_the_poison_seed_only(labels):
    a = flip(labels, 10, rng=label_flips.poison_rng(1, None))[1]
    b = flip(labels, 10, rng=label_flips.poison_rng(1, None))[1]
    c = flip(labels, 10, rng=label_flips.poison_rng(2, None))[1]
    assert np.array_equal(a, b) and not np.array_equal(np.sort(a), np.sort(c))
    # Redrawn per training seed: distinct draws for distinct training seeds.
    d = flip(labels, 10, rng=label_flips.poison_rng(1, 0))[1]
    e = flip(labels, 10, rng=label_flips.poison_rng(1, 1))[1]
    assert not np.array_equal(np.sort(d), np.sort(e))


def test_random_selection_is_not_the_first_images(labels):
    _, idx = flip(labels, 10)
    assert set(idx) != set(np.flatnonzero(labels == CAT)[:10])


def test_swap_moves_count_each_way_and_keeps_class_sizes(labels):
    new, idx = flip(labels, 8, strategy="swap")
    assert len(idx) == 16
    assert (labels[idx[:8]] == CAT).all() and (new[idx[:8]] == DOG).all()
    assert (labels[idx[8:]] == DOG).all() and (new[idx[8:]] == CAT).all()
    assert np.sum(new == CAT) == 40 and np.sum(new == DOG) == 30
    assert np.sum(new != labels) == 16


def test_counts_resolve_absolute_and_percent_with_clean_first():
    assert label_flips.resolve_counts(("50", "5"), available=5000) == (0, 5, 50)
    assert label_flips.resolve_counts(("1%", "2.5%", "10%"), available=5000) == (
        0, 50, 125, 500)
    assert label_flips.resolve_counts(("0",), available=10) == (0,)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (("5", "5"), "duplicates"),
        (("1%", "50"), "same number of flips twice"),  # 1% of 5000 is 50
        (("5001",), "only 5000 images"),
        (("101%",), "over 100%"),
        (("-3",), "negative"),
        (("ten",), "not a whole number"),
        (("1.5",), "not a whole number"),
        ((), "empty"),
    ],
)
def test_impossible_counts_are_refused(specs, message):
    with pytest.raises(SweepError, match=message):
        label_flips.resolve_counts(specs, available=5000)


def test_classes_resolve_by_name_or_id_and_unknown_ones_are_refused():
    assert data.resolve_class("Cat", NAMES) == CAT
    assert data.resolve_class("5", NAMES) == DOG
    with pytest.raises(SweepError, match="unknown class 'kitten'"):
        data.resolve_class("kitten", NAMES)
    with pytest.raises(SweepError, match="out of range"):
        data.resolve_class("10", NAMES)


def test_more_flips_than_images_and_same_class_are_refused(labels):
    with pytest.raises(SweepError, match="only 40"):
        flip(labels, 41)
    with pytest.raises(SweepError, match="only 30"):
        flip(labels, 31, strategy="swap")  # a swap is limited by the smaller class
    with pytest.raises(SweepError, match="same class"):
        label_flips.poison_labels(labels, source=CAT, target=CAT, count=1,
                             rng=label_flips.poison_rng(0, None))
    assert label_flips.flippable(labels, source=CAT, target=DOG, strategy="flip") == 40
    assert label_flips.flippable(labels, source=CAT, target=DOG, strategy="swap") == 30


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": 0}, "--seeds must be at least 1"),
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"source": "cat", "target": "CAT"}, "both"),
        ({"counts": ("1", "x")}, "not a whole number"),
        ({"strategy": "shuffle"}, "--strategy"),
    ],
)
def test_config_refuses_what_cannot_be_a_sweep(changes, message):
    with pytest.raises(SweepError, match=message):
        Config(**changes)


def test_fingerprint_ignores_runtime_fields_only():
    base = Config()
    assert base.fingerprint() == base.replace(out="x", replicas_per_step=3).fingerprint()
    assert base.fingerprint() != base.replace(seeds=3).fingerprint()
    assert base.fingerprint() != base.replace(poison_seed=1).fingerprint()
