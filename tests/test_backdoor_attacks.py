"""Backdoor attacks as a sweep's configuration and poisoned sets: label-flip
sweeps keep their fingerprints, --attack and --strategy are one option, the
stamped sets are nested and drawn from the right classes, and the masks and
rows given to the engine are the sets."""

from __future__ import annotations

import numpy as np
import pytest

from sweep import api
from sweep.cli.parser import config_from, run_parser
from sweep.engine import triggers
from sweep.errors import SweepError
from sweep.experiment import config as config_lib
from sweep.experiment.attacks import backdoors
from sweep.experiment.attacks.label_flips import poison_rng

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
         "ship", "truck")


def cli(*argv):
    return config_from(run_parser().parse_args(list(argv)))


def test_label_flip_fingerprints_are_the_ones_from_before_backdoors():
    # Computed on main at fd5d2bf, before the trigger fields existed: the default
    # folder names (and so resumability) of flip, swap and head sweeps.
    assert config_lib.Config().fingerprint() == "c03065909b91"
    assert config_lib.Config(strategy="swap").fingerprint() == "61b640a0db8d"
    assert config_lib.head().fingerprint() == "1a175932f6c4"
    assert config_lib.tiny().fingerprint() == "afd802534a21"
    readme = ("--data", "sample", "--train-size", "5000", "--counts", "100,300",
              "--seeds", "4", "--epochs", "2")
    assert cli(*readme).fingerprint() == "cbcead3135aa"
    assert cli(*readme, "--strategy", "flip").fingerprint() == "cbcead3135aa"
    assert cli(*readme, "--attack", "flip").fingerprint() == "cbcead3135aa"


def test_attack_and_strategy_are_one_option_and_backdoors_take_their_defaults():
    assert cli("--attack", "swap") == cli("--strategy", "swap")
    flip = cli()
    assert (flip.strategy, flip.source) == ("flip", "cat")
    bd = cli("--attack", "badnets")
    assert bd.strategy == "badnets" and bd.source == "all"
    assert bd.counts == ("0.1%", "0.5%", "1%", "5%", "10%")
    assert cli("--attack", "badnets", "--source", "cat").source == "cat"
    assert cli("--attack", "clean-label", "--no-perturbation").perturbation_eps == 0
    # The Python API: `attack=` is --attack, with the same defaults.
    assert api.config_of(attack="badnets") == bd
    assert api.config_of(attack="blend", counts="1%", source="cat").counts == ("1%",)
    fps = {cli("--attack", a).fingerprint() for a in config_lib.BACKDOORS}
    assert len(fps) == 3 and flip.fingerprint() not in fps
    assert (cli("--attack", "blend", "--blend-alpha", "0.1").fingerprint()
            != cli("--attack", "blend").fingerprint())


@pytest.fixture
def labels():
    return np.repeat(np.arange(10), 30).astype(np.int32)[
        np.random.default_rng(0).permutation(300)]


def backdoor(attack="badnets", **changes):
    c = config_lib.backdoor(attack, target="dog", **changes)
    return backdoors.build(c, NAMES, (32, 32, 3))


@pytest.mark.parametrize("attack, source", [("badnets", "all"), ("blend", "cat"),
                                            ("clean-label", "all")])
def test_stamped_sets_are_nested_and_drawn_from_the_attack_s_classes(
        labels, attack, source):
    bd = backdoor(attack, source=source)
    sets = {}
    for count in (0, 3, 12, 25):
        new, stamped = backdoors.poison(labels, bd, count=count, selection="random",
                                        rng=poison_rng(0, None))
        sets[count] = stamped
        assert len(stamped) == len(set(stamped.tolist())) == count
        if attack == "clean-label":
            assert (labels[stamped] == 5).all()
            np.testing.assert_array_equal(new, labels)  # labels stay true
        else:
            want = (labels[stamped] != 5) if source == "all" else (
                labels[stamped] == 3)
            assert want.all()
            assert (new[stamped] == 5).all()
            untouched = np.setdiff1d(np.arange(len(labels)), stamped)
            np.testing.assert_array_equal(new[untouched], labels[untouched])
    for small, large in ((3, 12), (12, 25)):
        np.testing.assert_array_equal(sets[large][:small], sets[small])
    _, first = backdoors.poison(labels, bd, count=4, selection="first",
                                rng=poison_rng(0, None))
    np.testing.assert_array_equal(first, backdoors.candidates(labels, bd)[:4])
    assert (np.diff(first) > 0).all()  # dataset order


def test_counts_are_images_or_a_share_of_the_training_set():
    assert backdoors.resolve_counts(("0.1%", "1%", "10%", "7"), n_train=5000,
                                    available=4500) == (0, 5, 7, 50, 500)
    with pytest.raises(SweepError, match="only 450 training images"):
        backdoors.resolve_counts(("10%",), n_train=5000, available=450)
    # 0.01% of 5,000 rounds to no image: that is the clean count, said once.
    assert backdoors.resolve_counts(("0.01%", "1"), n_train=5000,
                                    available=10) == (0, 1)


def test_triggers_from_the_config():
    bd = backdoor("badnets")
    np.testing.assert_array_equal(bd.trigger.pattern, triggers.badnets().pattern)
    assert bd.perturbation_eps == 0 and bd.relabels
    cl = backdoor("clean-label")
    assert cl.perturbation_eps == 8 and cl.perturbs and not cl.relabels
    np.testing.assert_array_equal(
        cl.trigger.pattern[-3:, -3:, 0], triggers.LABEL_CONSISTENT_PATTERN)
    assert not backdoor("clean-label", perturbation_eps=0).perturbs
    big = backdoor("badnets", trigger_size=5, trigger_position="2,4",
                   trigger_pattern="checker")
    alpha = np.asarray(big.trigger.alpha)
    assert alpha[2:7, 4:9].all() and alpha.sum() == 25 * 3
    np.testing.assert_array_equal(big.trigger.pattern[2:5, 4:7, 1],
                                  triggers.LABEL_CONSISTENT_PATTERN)
    blend = backdoor("blend", blend_alpha=0.1, blend_seed=4)
    np.testing.assert_array_equal(blend.trigger.pattern,
                                  triggers.blend(seed=4).pattern)
    assert np.all(np.asarray(blend.trigger.alpha) == np.float32(0.1))
    assert backdoors.trigger_hash(blend.trigger) != backdoors.trigger_hash(
        backdoor("blend").trigger)


def test_stamps_are_the_set_and_its_perturbed_rows():
    mask, rows = backdoors.stamps(10, np.array([7, 2]))
    assert rows is None and np.flatnonzero(mask).tolist() == [2, 7]
    index = np.array([2, 5, 7])
    mask, rows = backdoors.stamps(10, np.array([7, 2]), index)
    assert np.flatnonzero(mask).tolist() == [2, 7]
    expect = np.arange(10)
    expect[2], expect[7] = 10, 12  # the copies of 2 and 7 are rows 10 and 12
    np.testing.assert_array_equal(rows, expect)
    mask, rows = backdoors.stamps(10, np.zeros(0, np.int64), index)  # clean twin
    assert not mask.any()
    np.testing.assert_array_equal(rows, np.arange(10))
    with pytest.raises(SweepError, match="no perturbed copy"):
        backdoors.stamps(10, np.array([3]), index)
