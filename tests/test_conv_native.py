"""The native convolution's hand-written backward pass, shared inputs, and
replicas one after another, each against the plain references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import conv, conv_native, replica_map

F32 = {"rtol": 1e-5, "atol": 1e-5}

# (R, B, H, W, C, O): the first layer's 3 channels, and a middle layer's.
SHAPES = [(2, 3, 8, 8, 3, 5), (3, 2, 6, 6, 7, 4)]


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale,
                       jnp.float32)


def _args(shape):
    r, b, h, w, c, o = shape
    x = _normal(0, (r, b, h, w, c))
    return x, _normal(1, (r, 3, 3, c, o), 1 / np.sqrt(9 * c)), _normal(2, (r, o))


def _value_and_grads(fn, args, probe):
    def loss(*a):
        return jnp.sum(fn(*a) * probe)
    return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))))(*args)


def _in_scan(fn, steps=2):
    """``fn`` inside a lax.scan, as the engine's epoch runs its step: XLA
    compiles a loop body's convolutions differently (kernels/conv_native.py)."""
    def looped(*args):
        def body(carry, _):
            return carry, fn(*args)
        return jax.lax.scan(body, 0.0, None, length=steps)[1][-1]
    return looped


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("looped", [False, True], ids=["plain", "in_scan"])
def test_native_conv_and_its_gradients_match_the_reference(shape, looped):
    args = _args(shape)
    probe = _normal(3, shape[:4] + (shape[5],))
    fn = lambda x, w, b: conv.conv3x3(x, w, b, impl="native")  # noqa: E731
    want_y, want_g = _value_and_grads(conv.conv3x3_reference, args, probe)
    got_y, got_g = _value_and_grads(_in_scan(fn) if looped else fn, args, probe)
    np.testing.assert_allclose(got_y, want_y, **F32)
    for got, want in zip(got_g, want_g, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, **F32)


def test_native_backward_pass_is_canonical_inside_a_loop():
    # The point of the custom VJP: inside a loop no convolution keeps autodiff's
    # non-canonical weight-gradient layout (f01b_i01o), which XLA:CPU runs as a
    # naive loop. Checked on the compiled program, not by timing.
    x, w, b = _args((1, 4, 8, 8, 16, 8))
    probe = _normal(3, (1, 4, 8, 8, 8))

    def grads(impl):
        fn = _in_scan(lambda x, w, b: conv.conv3x3(x, w, b, impl=impl))
        return jax.jit(jax.grad(lambda w: jnp.sum(fn(x, w, b) * probe)))

    def dim_labels(impl):
        text = grads(impl).lower(w).compile().as_text()
        return {part.split("=")[1].split(",")[0] for part in text.split()
                if part.startswith("dim_labels=")}

    assert "f01b_i01o->01bf" not in dim_labels("native")


def test_native_conv_bf16_products_stay_close():
    # bf16 operands (8 bits of mantissa), float32 sums: within 2% of f32.
    x, w, b = _args(SHAPES[1])
    want = conv.conv3x3_reference(x, w, b)
    got = conv.conv3x3(x, w, b, impl="native", compute_dtype=jnp.bfloat16)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=0.02 * float(jnp.abs(want).max()))
    out = conv.conv3x3(x, w, b, impl="native", compute_dtype=jnp.bfloat16,
                       out_dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), got,
                               atol=0.01 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("impl", conv.IMPLS)
@pytest.mark.parametrize("channels", [3, 7])
def test_a_shared_input_is_each_replicas_own_copy(impl, channels):
    # x (1, B, H, W, C): every replica reads the same batch (evaluation).
    r, b, h, w, o = 4, 2, 6, 6, 5
    x = _normal(0, (1, b, h, w, channels))
    wt, bias = _normal(1, (r, 3, 3, channels, o), 0.3), _normal(2, (r, o))
    want = conv.conv3x3_reference(jnp.repeat(x, r, axis=0), wt, bias)
    got = jax.jit(lambda x, wt, bias: conv.conv3x3(x, wt, bias, impl=impl))(
        x, wt, bias)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, **F32)


def test_shared_input_im2col_is_the_batched_im2col_bit_for_bit():
    # Evaluation's first layer reads the test batch once for all replicas; a
    # replica's logits must not depend on that (nor on how many replicas share).
    r = 3
    x = jnp.round(_normal(0, (1, 4, 8, 8, 3)) * 64) / 64
    wt, bias = _normal(1, (r, 3, 3, 3, 32), 0.3), _normal(2, (r, 32))
    shared = jax.jit(lambda x, w, b: conv.conv3x3(x, w, b, impl="im2col"))
    batched = jax.jit(lambda x, w, b: conv.conv3x3(
        jnp.repeat(x, r, axis=0), w, b, impl="im2col"))
    np.testing.assert_array_equal(shared(x, wt, bias), batched(x, wt, bias))
    alone = shared(x, wt[1:2], bias[1:2])
    np.testing.assert_array_equal(alone[0], shared(x, wt, bias)[1])


def test_refuses_inputs_that_are_neither_shared_nor_per_replica():
    x = jnp.zeros((3, 1, 4, 4, 3))
    with pytest.raises(ValueError, match="disagree"):
        conv.conv3x3(x, jnp.zeros((4, 3, 3, 3, 2)), jnp.zeros((4, 2)))


def test_sequential_replicas_compute_the_batched_function():
    # fn over (R, ...) arrays, with a shared argument; one replica at a time
    # it sees a replica axis of 1 and must give the same rows.
    r = 3
    a, b = _normal(0, (r, 4, 5)), _normal(1, (r, 5, 2))
    scale = _normal(2, (4,))

    def fn(a, b, scale):
        y = jnp.einsum("rij,rjk->rik", a, b) * scale[None, :, None]
        return {"y": y, "s": y.sum((1, 2))}

    want = fn(a, b, scale)
    for impl in replica_map.IMPLS:
        run = replica_map.over_replicas(fn, impl=impl)
        got = jax.jit(lambda a, b, s, run=run: run(a, b, s, shared=(2,)))(a, b, scale)
        for key in want:
            assert got[key].shape == want[key].shape
            np.testing.assert_allclose(got[key], want[key], **F32)


def test_conv_native_module_names_its_formulation():
    # conv_native is what kernels.conv calls "native".
    assert "native" in conv.IMPLS
    x, w, _ = _args(SHAPES[1])
    np.testing.assert_allclose(conv_native.conv_native(x[0], w[0]),
                               conv.conv3x3_reference(x, w, jnp.zeros((3, 4)))[0],
                               **F32)
