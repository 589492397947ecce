"""A replica's numbers do not depend on the chunk it was trained in.

A sweep splits its replicas into chunks of R (--replicas-per-step, an
out-of-memory retry with smaller chunks, the device count, Ray tasks), and a
resumed or retried sweep must reproduce its numbers bit for bit. So the same
replicas (same keys, same labels) trained through the real engine in chunks of
1, 2, 6 and 8 must end with identical parameters and identical metrics (each
chunk size costs a compilation; tests/test_kernels.py covers R = 3 too).

Not a pinned value: both sides are computed here, on this CPU and jaxlib.
"""

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from kernels import invariance
from sweep import engine
from sweep.data.decode import decode_images
from sweep.data.sample import sample_path

# Batch 64 puts R*B >= 416 rows into the loss at R = 8, where jaxlib 0.10's
# default options moved the logsumexp to YNNPACK; the conv bias gradients
# changed already at R = 6 (kernels/invariance.py).
N_TRAIN, N_TEST, BATCH, N_REPLICAS = 128, 50, 64, 8

# Each row: the replicas trained together, chunk by chunk. Together they cover
# chunk sizes 1, 2, 6 and 8, with replicas at different places in a chunk.
PARTITIONS = (
    ((0, 1, 2, 3, 4, 5, 6, 7),),
    ((0, 1, 2, 3, 4, 5), (6, 7)),
    ((0,), (7,)),
)


def sample_slice(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n images spread over the embedded sample's `split` (it is sorted by class)."""
    path = sample_path() / f"{split}.parquet"
    table = pq.read_table(path, columns=["image", "label"])
    rows = np.linspace(0, table.num_rows - 1, n).astype(int)
    table = table.take(rows)
    images = decode_images(table.column("image").to_pylist(), lambda i: f"row {i}")
    return images, table.column("label").to_numpy().astype(np.int32)


@pytest.fixture(scope="module")
def trained():
    """{partition index: {replica: (params, metrics)}} after one epoch."""
    train_x, train_y = sample_slice("train", N_TRAIN)
    test_x, test_y = sample_slice("test", N_TEST)
    recipe = engine.Recipe(n_train=N_TRAIN, n_classes=10, batch_size=BATCH,
                           eval_batch_size=N_TEST)
    eng = engine.Engine(recipe, train_x, test_x, test_y)
    rng = np.random.default_rng(0)
    # Each replica its own seed and its own label flips, as in a sweep.
    flips = rng.random((N_REPLICAS, N_TRAIN)) < 0.2
    labels = np.where(flips, rng.integers(0, 10, flips.shape), train_y).astype(np.int32)
    keys = engine.replica_keys(np.arange(N_REPLICAS) + 11, np.zeros(N_REPLICAS))
    # Initial weights are drawn once for all replicas and sliced per chunk: a
    # draw per chunk size would cost a compilation each (~5-9 s of CPU, the
    # threefry hash), and it is elementwise in the key anyway.
    first = eng.init(keys)
    out = {}
    for p, chunks in enumerate(PARTITIONS):
        out[p] = {}
        for chunk in chunks:
            sel = np.asarray(chunk)
            own_keys = engine.ReplicaKeys(*(k[sel] for k in keys))
            start = jax.tree.map(lambda leaf, sel=sel: leaf[sel] if np.ndim(leaf)
                                 else leaf, first)
            state, history = eng.train(labels[sel], own_keys, epochs=1,
                                       start=(start, []))
            params = jax.device_get(state.params)
            for j, replica in enumerate(chunk):
                out[p][replica] = (
                    jax.tree.map(lambda leaf, j=j: leaf[j], params),
                    [jax.tree.map(lambda m, j=j: m[j], metrics) for metrics in history],
                )
    return out


@pytest.mark.parametrize("p", range(1, len(PARTITIONS)))
def test_replicas_are_bit_identical_whatever_their_chunk(trained, p):
    whole = trained[0]  # every replica in one chunk of 8
    for replica, (params, history) in trained[p].items():
        want_params, want_history = whole[replica]
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        for (path, got), want in zip(flat, jax.tree.leaves(want_params)):
            np.testing.assert_array_equal(
                got, want, err_msg=f"replica {replica} {jax.tree_util.keystr(path)}")
        for got, want in zip(history, want_history):
            for name in engine.EpochMetrics._fields:
                np.testing.assert_array_equal(
                    getattr(got, name), getattr(want, name),
                    err_msg=f"replica {replica} {name}")


def test_this_jaxlib_knows_the_invariance_options():
    # On CPU the guarantee rests on the options; a jaxlib that drops them must
    # say so here, by name, besides the bit differences above.
    if jax.default_backend() == "cpu":
        assert invariance.compiler_options() == invariance.OPTIONS["cpu"]
