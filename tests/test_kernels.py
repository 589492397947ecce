"""Each replica-batched kernel against its plain per-replica reference."""

import functools
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import conv, dense, invariance, pool
from kernels.select import KernelError, choose

jax.config.update("jax_numpy_rank_promotion", "raise")

# f32: the formulations sum the same products in different orders.
F32 = {"rtol": 1e-5, "atol": 1e-5}

# (R, B, H, W, C, O): one replica, several, odd channel counts, small odd batch.
CONV_SHAPES = [(1, 5, 8, 8, 3, 4), (3, 5, 6, 6, 7, 5), (2, 2, 4, 6, 32, 9)]


def _normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
    # NumPy draws: jax.random would compile a generator for every new shape.
    draw = np.random.default_rng(seed).standard_normal(shape) * scale
    return jnp.asarray(draw, jnp.float32)


def _conv_args(shape):
    r, b, h, w, c, o = shape
    x = _normal(0, (r, b, h, w, c))
    wt = _normal(1, (r, 3, 3, c, o), 1 / np.sqrt(9 * c))
    bias = _normal(2, (r, o))
    return x, wt, bias


def _weighted_grads(fn, args, seed=3):
    """Gradients of a random-weighted sum of ``fn(*args)`` w.r.t. every arg."""
    out_shape = jax.eval_shape(fn, *args).shape
    probe = _normal(seed, out_shape)

    def loss(*a):
        return jnp.sum(fn(*a) * probe)

    return jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)


@functools.cache
def _conv_reference(shape):
    """Reference output and gradients for ``_conv_args(shape)``, once per shape."""
    args = _conv_args(shape)
    ref = jax.jit(conv.conv3x3_reference)
    return ref(*args), _weighted_grads(ref, args)


def _assert_close(got, want, tol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **tol)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
@pytest.mark.parametrize("impl", conv.IMPLS + ("auto",))
def test_conv_matches_reference(impl, shape):
    args = _conv_args(shape)
    fn = jax.jit(lambda x, w, b: conv.conv3x3(x, w, b, impl=impl))
    want, want_grads = _conv_reference(shape)
    assert want.shape == shape[:4] + (shape[5],)
    _assert_close(fn(*args), want, F32)
    _assert_close(_weighted_grads(fn, args), want_grads, F32)


def test_conv_reference_is_a_convolution():
    # Pins the ground truth itself: one tap, one channel, a shifted copy.
    x = jnp.arange(16.0).reshape(1, 1, 4, 4, 1)
    w = jnp.zeros((1, 3, 3, 1, 1)).at[0, 0, 1, 0, 0].set(2.0)  # the row above
    y = conv.conv3x3_reference(x, w, jnp.ones((1, 1)))
    above = np.pad(np.arange(16.0).reshape(4, 4), ((1, 0), (0, 0)))[:4]
    np.testing.assert_array_equal(np.asarray(y[0, 0, :, :, 0]), 2 * above + 1)


@pytest.mark.parametrize("impl", conv.IMPLS)
def test_conv_bf16_compute(impl):
    args = _conv_args((2, 3, 6, 6, 5, 4))
    fn = jax.jit(
        lambda x, w, b: conv.conv3x3(x, w, b, impl=impl, compute_dtype=jnp.bfloat16)
    )
    want, want_grads = _conv_reference((2, 3, 6, 6, 5, 4))
    got = fn(*args)
    assert got.dtype == jnp.float32  # float32 out, parameters untouched
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-2 * scale)
    for g, w in zip(_weighted_grads(fn, args), want_grads, strict=True):
        assert g.dtype == jnp.float32
        gs = float(jnp.max(jnp.abs(w)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=3e-2 * gs)


def test_conv_replicas_are_independent():
    # Changing replica 1's weights must leave replica 0's output alone.
    x, w, b = _conv_args((2, 2, 4, 4, 3, 4))
    for impl in conv.IMPLS:
        y = conv.conv3x3(x, w, b, impl=impl)
        y2 = conv.conv3x3(x, w.at[1].multiply(-3.0), b, impl=impl)
        np.testing.assert_array_equal(np.asarray(y[0]), np.asarray(y2[0]))
        assert not np.allclose(np.asarray(y[1]), np.asarray(y2[1]))


POOL_SHAPES = [(1, 5, 8, 8, 3), (3, 2, 4, 6, 7), (5, 4, 4, 2)]


@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
@pytest.mark.parametrize("impl", pool.IMPLS + ("auto",))
def test_pool_matches_reference(impl, shape):
    # Continuous random inputs: no ties, so every formulation's gradient agrees.
    x = _normal(4, shape)
    fn = jax.jit(lambda x: pool.maxpool2(x, impl=impl))
    ref = jax.jit(pool.maxpool2_reference)
    want = ref(x)
    assert want.shape == shape[:-3] + (shape[-3] // 2, shape[-2] // 2, shape[-1])
    _assert_close(fn(x), want, {"rtol": 0, "atol": 0})
    _assert_close(_weighted_grads(fn, (x,)), _weighted_grads(ref, (x,)), F32)


def test_pool_reference_takes_window_maxima():
    x = jnp.array([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 9.0, 8.0]]).reshape(1, 2, 4, 1)
    np.testing.assert_array_equal(
        np.asarray(pool.maxpool2_reference(x)).ravel(), [5.0, 9.0]
    )


DENSE_SHAPES = [(1, 5, 7, 3), (3, 5, 16, 10), (2, 1, 33, 1)]


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
@pytest.mark.parametrize("impl", dense.IMPLS + ("auto",))
def test_dense_matches_reference(impl, shape):
    r, b, i, o = shape
    args = (
        _normal(5, (r, b, i)),
        _normal(6, (r, i, o), 1 / np.sqrt(i)),
        _normal(7, (r, o)),
    )
    fn = jax.jit(lambda x, w, b: dense.dense(x, w, b, impl=impl))
    ref = jax.jit(dense.dense_reference)
    _assert_close(fn(*args), ref(*args), F32)
    _assert_close(_weighted_grads(fn, args), _weighted_grads(ref, args), F32)


@pytest.mark.parametrize("impl", dense.IMPLS)
def test_dense_bf16_compute(impl):
    args = (_normal(5, (2, 4, 64)), _normal(6, (2, 64, 8), 1 / 8), _normal(7, (2, 8)))
    got = dense.dense(*args, impl=impl, compute_dtype=jnp.bfloat16)
    want = dense.dense_reference(*args)
    assert got.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-2 * scale)


@pytest.mark.parametrize("backend", ["cpu", "gpu", "cuda", "rocm", "tpu"])
def test_every_backends_choice_computes_the_reference(backend):
    """Whatever the table picks for a backend runs here and matches the reference.

    (A choice that names a removed or broken formulation fails on CPU too.)
    """
    x, w, b = _conv_args(CONV_SHAPES[1])
    impl = choose("conv", backend=backend, replicas=x.shape[0], channels=x.shape[-1])
    _assert_close(conv.conv3x3(x, w, b, impl=impl),
                  conv.conv3x3_reference(x, w, b), F32)
    y = _normal(4, (2, 3, 8, 8, 5))
    np.testing.assert_array_equal(pool.maxpool2(y, impl=choose("pool", backend=backend)),
                                  pool.maxpool2_reference(y))
    xd, wd, bd = _normal(5, (2, 3, 7)), _normal(6, (2, 7, 4)), _normal(7, (2, 4))
    _assert_close(dense.dense(xd, wd, bd, impl=choose("dense", backend=backend)),
                  dense.dense_reference(xd, wd, bd), F32)


def test_auto_is_the_formulation_choose_picks_on_this_backend():
    """`impl="auto"` traces to exactly the program of the chosen formulation, and
    not to the other one's: the table's choice is what actually runs."""
    x, w, b = _conv_args(CONV_SHAPES[1])
    chosen = choose("conv", replicas=x.shape[0], channels=x.shape[-1])

    def program(impl):
        return str(jax.make_jaxpr(lambda *a: conv.conv3x3(*a, impl=impl))(x, w, b))

    assert program("auto") == program(chosen)
    for other in set(conv.IMPLS) - {chosen}:
        assert program("auto") != program(other)


def test_choose_cpu_rule():
    # The measured CPU rule (select.py): XLA's own convolution with the
    # canonical backward pass of kernels.conv_native, every layer and R, and the
    # replicas one after another inside the compiled step.
    for r, c in ((4, 3), (4, 32), (8, 64), (9, 64), (None, None)):
        assert choose("conv", backend="cpu", replicas=r, channels=c) == "native"
    assert choose("replicas", backend="cpu") == "sequential"
    assert choose("conv", backend="cuda", replicas=4, channels=3) == "vmap"
    assert choose("replicas", backend="cuda") == "batched"


def test_unknown_names_are_one_line_errors():
    x, w, b = _conv_args((1, 1, 2, 2, 1, 1))
    with pytest.raises(KernelError, match="unknown conv kernel 'fast'"):
        conv.conv3x3(x, w, b, impl="fast")
    with pytest.raises(KernelError, match="unknown pool kernel"):
        pool.maxpool2(x, impl="avg")
    with pytest.raises(KernelError, match="unknown dense kernel"):
        dense.dense(x[:, 0, 0], w[:, 0, 0], b, impl="im2col")
    with pytest.raises(KernelError, match="unknown kernel op"):
        choose("attention")


def _cifar_batch(n: int) -> jax.Array:
    """The first ``n`` shared CIFAR-10 test images in [-1, 1], (n, 32, 32, 3)."""
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    path = os.path.join(os.environ.get("SWEEP_TEST_DATA", ""), "test.parquet")
    if not os.path.exists(path):
        pytest.skip(f"shared CIFAR-10 not found at {path} (set SWEEP_TEST_DATA)")
    table = pq.read_table(path, columns=["image"]).slice(0, n)
    images = [
        np.asarray(Image.open(io.BytesIO(b))) for b in table.column(0).to_pylist()
    ]
    return jnp.asarray(np.stack(images), jnp.float32) / 127.5 - 1.0


@pytest.mark.slow
def test_simplecnn_on_cifar_matches_per_replica_reference():
    # Two replicas of the whole network (auto formulations) on real images:
    # logits and the gradient of the summed loss equal the reference layers'.
    images = _cifar_batch(3)
    r = 2
    x = jnp.broadcast_to(images, (r, *images.shape))
    params = []
    for i, (cin, cout) in enumerate(((3, 32), (32, 64), (64, 128))):
        w = _normal(i, (r, 3, 3, cin, cout), 1 / np.sqrt(9 * cin))
        params.append((w, _normal(20 + i, (r, cout), 0.1)))
    params.append((_normal(10, (r, 2048, 16), 1 / np.sqrt(2048)), _normal(11, (r, 16))))

    def net(params, conv_fn, pool_fn, dense_fn):
        h = x
        for w, b in params[:3]:
            h = pool_fn(jax.nn.relu(conv_fn(h, w, b)))
        return dense_fn(h.reshape(r, h.shape[1], -1), *params[3])

    def loss(params, *fns):
        return jnp.sum(net(params, *fns) ** 2)

    fast = (conv.conv3x3, pool.maxpool2, dense.dense)
    ref = (conv.conv3x3_reference, pool.maxpool2_reference, dense.dense_reference)
    tol = {"rtol": 1e-4, "atol": 1e-4}
    _assert_close(
        jax.jit(lambda p: net(p, *fast))(params),
        jax.jit(lambda p: net(p, *ref))(params),
        tol,
    )
    _assert_close(
        jax.jit(jax.grad(lambda p: loss(p, *fast)))(params),
        jax.jit(jax.grad(lambda p: loss(p, *ref)))(params),
        tol,
    )


# Chunk sizes a replica must not notice: its forward pass and gradients (bias
# gradients included, the sums XLA:CPU handed to YNNPACK) are bit identical
# whether it is compiled alone or among 1, 2, 5 or 7 others. Shapes large
# enough that jaxlib 0.10.2's default options did differ (conv bias at R = 6).
CHUNKS = (1, 2, 3, 6, 8)
INVARIANCE_CASES = {
    # op: (fn, argument shapes, scale of each argument)
    "conv": (conv.conv3x3, [(8, 8, 16, 16, 3), (8, 3, 3, 3, 32), (8, 32)],
             [1.0, 0.2, 1.0]),
    "dense": (dense.dense, [(8, 8, 2048), (8, 2048, 64), (8, 64)],
              [1.0, 0.02, 1.0]),
    "pool": (pool.maxpool2, [(8, 8, 16, 16, 32)], [1.0]),
}


@pytest.mark.parametrize("op", INVARIANCE_CASES)
def test_a_replica_gets_the_same_bits_in_any_chunk(op):
    fn, shapes, scales = INVARIANCE_CASES[op]
    args = [_normal(i, s, k) for i, (s, k) in enumerate(zip(shapes, scales))]
    probe = _normal(9, jax.eval_shape(fn, *args).shape)

    def value_and_grads(probe, *a):
        # The probe is an argument: as a constant XLA would fold the bias
        # gradient (a sum of the probe) at compile time.
        grads = jax.grad(lambda *a: jnp.sum(fn(*a) * probe),
                         argnums=tuple(range(len(a))))(*a)
        return fn(*a), grads

    run = invariance.jit(value_and_grads)
    results = {r: jax.device_get(run(probe[:r], *(a[:r] for a in args)))
               for r in CHUNKS}
    for r in CHUNKS[1:]:
        # The first replica, alone and as the first of r.
        for got, want in zip(jax.tree.leaves(results[r]),
                             jax.tree.leaves(results[1]), strict=True):
            np.testing.assert_array_equal(got[:1], want)
    # The last replica of the largest chunk, alone.
    alone = jax.device_get(run(probe[-1:], *(a[-1:] for a in args)))
    for got, want in zip(jax.tree.leaves(results[CHUNKS[-1]]),
                         jax.tree.leaves(alone), strict=True):
        np.testing.assert_array_equal(got[-1:], want)
