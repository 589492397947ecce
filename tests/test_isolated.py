"""Isolated subset replicas: each a function of its own images, labels and keys.

A base model of a partition-aggregation defence must not move when anything
outside its partition moves: the other replicas of its chunk, the chunk's size,
the widest subset (and so the compiled epoch's step count), images inserted or
removed elsewhere in the training set, labels flipped in other partitions.
`SubsetEngine(isolated=True)` promises that bit for bit; these tests hold it
to it on real CIFAR-10 images from the embedded sample. Both sides of every
comparison are computed here, on this CPU and jaxlib (nothing pinned).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from sweep import engine
from sweep.data.decode import decode_images
from sweep.data.sample import sample_path

N_TRAIN, N_TEST, BATCH, EPOCHS = 120, 40, 16, 2


def sample_slice(split: str, n: int, offset: int = 0):
    """n images spread over the embedded sample's `split` (sorted by class)."""
    table = pq.read_table(sample_path() / f"{split}.parquet",
                          columns=["image", "label"])
    rows = (np.linspace(0, table.num_rows - 1, n).astype(int) + offset) % table.num_rows
    table = table.take(rows)
    images = decode_images(table.column("image").to_pylist(), lambda i: f"row {i}")
    return images, table.column("label").to_numpy().astype(np.int32)


@pytest.fixture(scope="module")
def clean(data):
    """The four partitions trained together on the clean labels."""
    train_x, train_y, _, _, test_x, test_y = data
    return train(train_x, train_y, test_x, test_y, PARTS, [0, 1, 2, 3])[0]


@pytest.fixture(scope="module")
def data():
    train_x, train_y = sample_slice("train", N_TRAIN)
    extra_x, extra_y = sample_slice("train", 60, offset=7)  # other images
    test_x, test_y = sample_slice("test", N_TEST)
    return train_x, train_y, extra_x, extra_y, test_x, test_y


def recipe(n_train: int) -> engine.Recipe:
    return engine.Recipe(n_train=n_train, n_classes=10, batch_size=BATCH,
                         eval_batch_size=N_TEST)


def rows(groups: list[np.ndarray]) -> engine.Subsets:
    """Subsets from index lists, padded to the widest with the row's first index."""
    width = max(1, max(len(g) for g in groups))
    index = np.stack([np.pad(np.asarray(g, np.int32), (0, width - len(g)),
                             mode="edge") if len(g) else np.zeros(width, np.int32)
                      for g in groups])
    return engine.Subsets(index.astype(np.int32),
                          np.array([len(g) for g in groups], np.int32))


def keys_of(models: list[int]) -> engine.ReplicaKeys:
    return engine.replica_keys(np.full(len(models), 5), np.asarray(models))


ENGINES: dict = {}  # one engine (and its compilations) per training set


def isolated_engine(images, test_x, test_y) -> engine.SubsetEngine:
    key = (len(images), images[:2].tobytes())
    if key not in ENGINES:
        ENGINES[key] = engine.SubsetEngine(recipe(len(images)), images, test_x,
                                           test_y, isolated=True)
    return ENGINES[key]


def train(images, labels, test_x, test_y, groups, models):
    """Train isolated replicas; returns (params, opt_state, test log-probs) per
    replica, on the host."""
    eng = isolated_engine(images, test_x, test_y)
    labels = np.broadcast_to(labels, (len(groups), len(labels)))
    state, history, _ = eng.train(labels, keys_of(models), EPOCHS,
                                  subsets=rows(groups), evaluate=False)
    params, opt_state = jax.device_get((state.params, state.opt_state))
    logp = eng.log_probs(state.params, test_x)
    out = []
    for r in range(len(groups)):
        out.append((jax.tree.map(lambda x, r=r: x[r], params),
                    jax.tree.map(lambda x, r=r: x[r], opt_state), logp[r]))
    return out, history


def assert_identical(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def differ(a, b) -> bool:
    return any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# Four partitions of unequal sizes (17 to 45 images: 2 to 3 batches of 16).
PARTS = [np.arange(0, 120, 7), np.arange(1, 120, 3), np.arange(2, 120, 4),
         np.arange(5, 120, 5)]


def test_a_replica_alone_equals_it_in_a_chunk(data, clean):
    train_x, train_y, _, _, test_x, test_y = data
    together = clean
    # The narrowest alone: a chunk of one, its own width (2 steps, not 3).
    alone, _ = train(train_x, train_y, test_x, test_y, [PARTS[0]], [0])
    assert_identical(together[0], alone[0])
    # In another chunk, at another place and another chunk size.
    other, _ = train(train_x, train_y, test_x, test_y, [PARTS[2], PARTS[0]], [2, 0])
    assert_identical(together[0], other[1])
    assert_identical(together[2], other[0])
    # The check can fail: another partition gives another model.
    assert differ(together[0][0], together[1][0])


def test_other_partitions_growing_or_shrinking_leave_a_replica_alone(data, clean):
    """Images inserted into the training set (moving every index), another
    partition made the widest (more compiled steps), one made empty, and
    another partition's images dropped: replica 0's bits do not move."""
    train_x, train_y, extra_x, extra_y, test_x, test_y = data
    before = clean
    # 60 new images in front: every old index moves by 60.
    images = np.concatenate([extra_x, train_x])
    labels = np.concatenate([extra_y, train_y])
    shifted = [p + 60 for p in PARTS]
    widest = np.concatenate([np.arange(60), shifted[1]])  # 100 images: 7 batches
    groups = [shifted[0], widest, np.array([], np.int64), shifted[3][:5]]
    after, _ = train(images, labels, test_x, test_y, groups, [0, 1, 2, 3])
    assert_identical(before[0], after[0])
    assert differ(before[1][0], after[1][0])


def test_a_flip_changes_only_its_own_partition(data, clean):
    train_x, train_y, _, _, test_x, test_y = data
    flipped = train_y.copy()
    image = int(PARTS[2][4])  # in partition 2 only
    assert all(image not in p for i, p in enumerate(PARTS) if i != 2)
    flipped[image] = (flipped[image] + 1) % 10
    poisoned, _ = train(train_x, flipped, test_x, test_y, PARTS, [0, 1, 2, 3])
    for r in (0, 1, 3):
        assert_identical(clean[r], poisoned[r])
    assert differ(clean[2][0], poisoned[2][0])


def test_padded_steps_change_nothing_and_counts_are_own(data):
    """A replica takes ceil(length / B) steps per epoch, its Adam count says so,
    and an empty subset stays at its initial weights with a zero count."""
    train_x, train_y, _, _, test_x, test_y = data
    groups = [PARTS[0], np.array([], np.int64), PARTS[1], PARTS[3]]
    out, history = train(train_x, train_y, test_x, test_y, groups, [0, 1, 2, 3])
    counts = [int(np.asarray(jax.tree.leaves(o[1])[0])) for o in out]
    steps = [-(-len(g) // BATCH) * EPOCHS for g in groups]
    assert counts == steps, (counts, steps)
    eng = isolated_engine(train_x, test_x, test_y)
    init = jax.device_get(eng.init(keys_of([1])).params)
    assert_identical(out[1][0], jax.tree.map(lambda x: x[0], init))
    assert np.isnan(history[-1].train_loss[1])  # 0 / 0: it trained on nothing
    assert np.isfinite(history[-1].train_loss[[0, 2, 3]]).all()


def test_isolated_batches_visit_own_images_once_whatever_the_width():
    keys = engine.replica_keys(np.array([0, 1]), np.zeros(2))
    rng = np.random.default_rng(2)
    index = rng.permutation(500)[:90].reshape(2, 45).astype(np.int32)
    length = np.array([45, 30], np.int32)
    idx, mask = engine.isolated_batches(16, keys.shuffle, jnp.int32(1),
                                        engine.Subsets(index, length))
    wide = np.pad(index, ((0, 0), (0, 50)), mode="edge")  # width 95: 6 batches
    idx_w, mask_w = engine.isolated_batches(16, keys.shuffle, jnp.int32(1),
                                            engine.Subsets(wide, length))
    assert idx.shape == (3, 2, 16) and idx_w.shape == (6, 2, 16)
    for r in range(2):
        flat = np.asarray(idx[:, r]).reshape(-1)
        valid = np.asarray(mask[:, r]).reshape(-1) > 0
        np.testing.assert_array_equal(np.sort(flat[valid]),
                                      np.sort(index[r, : length[r]]))
        assert valid[: length[r]].all() and not valid[length[r]:].any()
        # The same order at width 95: the padding only adds empty batches.
        flat_w = np.asarray(idx_w[:, r]).reshape(-1)
        np.testing.assert_array_equal(flat_w[: length[r]], flat[: length[r]])
        assert not np.asarray(mask_w[:, r]).reshape(-1)[length[r]:].any()
    # Another epoch, another order.
    idx2, _ = engine.isolated_batches(16, keys.shuffle, jnp.int32(2),
                                      engine.Subsets(index, length))
    assert not np.array_equal(np.asarray(idx2[:, 0]), np.asarray(idx[:, 0]))


def test_isolated_refuses_margins(data):
    train_x, _, _, _, test_x, test_y = data
    with pytest.raises(ValueError, match="margins"):
        engine.SubsetEngine(recipe(N_TRAIN), train_x, test_x, test_y,
                            isolated=True, record_margins=True)
