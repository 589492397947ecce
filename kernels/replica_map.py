"""Replicas one after another inside a compiled step, or all at once.

The engine's step is written for the replica-batched model: every array has a
leading replica axis R. How XLA is asked to run that axis is a formulation
like a convolution's (``kernels.select`` picks it per backend, op "replicas"):

- ``batched``: one call over all R replicas; every layer is one batched op
  over R replicas' activations. What accelerators want.
- ``sequential``: a loop over the replica axis; each iteration runs the same
  function on one replica (its arrays with a replica axis of 1). On a CPU the
  working set is then one replica's activations, which stay in the caches,
  where the batched step streams R replicas' activations through memory layer
  by layer (R = 8 cost 25-35% more per replica than R = 1 in a layer, measured
  on the 2-core AMD EPYC; ``kernels.select`` has the whole-step numbers). The
  loop body does not grow with R, so neither does the compile time, and every
  replica runs the same compiled body whatever R, so a chunk's size cannot
  change a replica's bits (``tests/test_chunk_invariance.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from kernels.select import check_impl, choose

IMPLS: tuple[str, ...] = ("batched", "sequential")


def resolve(impl: str = "auto", backend: str | None = None) -> str:
    """`impl`, with "auto" as ``kernels.select`` chooses it for `backend`."""
    impl = choose("replicas", backend=backend) if impl == "auto" else impl
    check_impl("replicas", impl, IMPLS)
    return impl


def over_replicas(fn: Callable, *, impl: str = "auto",
                  backend: str | None = None) -> Callable:
    """``fn`` run over the replica axis as ``impl`` says.

    Args:
      fn: takes arrays (or pytrees) with a leading replica axis and returns
        pytrees whose every leaf has that axis.
      impl: one of ``IMPLS``, or "auto" for ``choose("replicas")``.
      backend: for "auto"; None for ``jax.default_backend()``.

    Returns:
      ``g(*args, shared=())``: ``fn(*args)``; the positions in ``shared`` are
      arguments every replica reads whole (no replica axis). ``sequential``
      maps over the other arguments' leading axis.
    """
    impl = resolve(impl, backend)
    if impl == "batched":
        return lambda *args, shared=(): fn(*args)

    def sequential(*args, shared: Sequence[int] = ()):
        mapped = [i for i in range(len(args)) if i not in shared]
        r = jax.tree.leaves([args[i] for i in mapped])[0].shape[0]

        def one(i):  # replica i, its arrays with a replica axis of 1
            full = list(args)
            for k in mapped:
                full[k] = jax.tree.map(
                    lambda a: lax.dynamic_slice_in_dim(a, i, 1), args[k])
            return fn(*full)

        def body(i, outs):
            return jax.tree.map(
                lambda buf, o: lax.dynamic_update_slice_in_dim(buf, o, i, 0),
                outs, one(i))

        shapes = jax.eval_shape(one, 0)
        outs = jax.tree.map(lambda s: jnp.zeros((r, *s.shape[1:]), s.dtype), shapes)
        # A trip count XLA cannot see: it would inline a loop of one (R = 1)
        # and compile that replica's body in another context, with other bits.
        trips = lax.optimization_barrier(jnp.int32(r))
        return lax.fori_loop(0, trips, body, outs)

    return sequential
