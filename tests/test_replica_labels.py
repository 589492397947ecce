"""Each replica trains on its own poisoned labels: the grid -> labels mapping.

`prepare` on the embedded sample, checked against what the grid means written
out independently here: replica i is seed i // n_counts and count i % n_counts
(seed-major), and its labels are the clean labels with exactly `count` source
images, those of the recorded flipped set, relabelled as the target.
"""

from __future__ import annotations

import numpy as np
import pytest

from sweep.experiment import config
from sweep.experiment import prepare as prepare_lib

CAT, DOG = 3, 5


@pytest.fixture(scope="module", params=[False, True], ids=["shared", "per-seed"])
def prepared(request):
    c = config.tiny().replace(train_size=400, counts=("5", "20"), seeds=3,
                              seed_start=7, poison_per_seed=request.param)
    return prepare_lib.prepare(c)


def test_replicas_are_seed_major_over_counts(prepared):
    p = prepared
    assert p.grid.counts == (0, 5, 20) and p.grid.seeds == (7, 8, 9)
    expected = [(seed, count) for seed in (7, 8, 9) for count in (0, 5, 20)]
    assert [p.grid.replica(i) for i in range(p.grid.size)] == expected


def test_each_replica_gets_its_own_poisoned_labels(prepared):
    p = prepared
    clean = p.train_labels
    for i in range(p.grid.size):
        seed, count = p.grid.replica(i)
        labels = p.replica_labels(i)
        changed = np.flatnonzero(labels != clean)
        assert len(changed) == count, (i, seed, count)
        key = (count, seed if p.config.poison_per_seed else -1)
        np.testing.assert_array_equal(changed, np.sort(p.flipped[key]))
        assert (clean[changed] == CAT).all() and (labels[changed] == DOG).all()


def test_poisoned_sets_are_shared_or_redrawn_per_seed_as_configured(prepared):
    p = prepared
    by_seed = {}
    for i in range(p.grid.size):
        seed, count = p.grid.replica(i)
        if count == 20:
            by_seed[seed] = np.flatnonzero(p.replica_labels(i) != p.train_labels)
    same = [np.array_equal(by_seed[7], by_seed[s]) for s in (8, 9)]
    assert same == ([False, False] if p.config.poison_per_seed else [True, True])


@pytest.mark.slow
def test_a_chunk_trains_each_replica_on_its_own_labels(tmp_path):
    """A real chunk of three twins (counts 0, 10, 20 of one seed): each replica's
    epoch equals that replica trained alone on its own labels, and not on the
    labels of its twins (twins share every key, so only labels tell them apart)."""
    from sweep import engine
    from sweep.experiment.running import train_local

    c = config.tiny().replace(train_size=200, counts=("10", "20"), seeds=1,
                              out=str(tmp_path / "out"))
    p = prepare_lib.prepare(c)
    eng = engine.Engine(p.recipe(), p.train_images, p.dataset.test_images,
                        p.dataset.test_labels)
    chunk = [0, 1, 2]
    history = train_local.train_chunk(p, eng, chunk, len(chunk), ticks=None)
    seed = p.grid.replica(0)[0]  # the chunk's one seed; twins share its keys
    keys = engine.replica_keys(np.array([seed]), np.array([p.grid.stream(0)]))
    alone = {i: eng.train(p.replica_labels(i)[None], keys, 1)[1][0].train_loss[0]
             for i in chunk}
    for i in chunk:
        for j in chunk:
            close = np.isclose(history[0].train_loss[i], alone[j], rtol=1e-6, atol=0)
            assert close == (i == j), (i, j, history[0].train_loss[i], alone[j])
