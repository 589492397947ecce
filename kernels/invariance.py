"""Compiler options under which a replica's numbers do not depend on R.

A replica trained in a chunk of 2 must end bit for bit where it ends in a chunk
of 6 (an out-of-memory retry with smaller chunks, another device count, a Ray
run: a resumed sweep must not change its numbers). The kernels keep replicas
apart (the replica axis is a batch dimension of every dot, never a contracted
one), but XLA:CPU decides per op, from the op's whole shape, who runs it.

jaxlib 0.10.2's XLA:CPU hands dots and reductions above a size threshold to
YNNPACK (``__ynn_fusion``), and YNNPACK splits a sum into partial sums
differently as the number of outputs (R x channels) grows:

- a conv layer's bias gradient, a sum over B*H*W rows, changed its last bit
  between R = 1 and R = 6 (batch 64; from R = 4 for the bare sum);
- the softmax cross-entropy's logsumexp over 10 logits moved to YNNPACK from
  R*B >= 416 rows (R = 7 at batch 64), where XLA's own loop had summed the same
  10 numbers in another order; from there every gradient differed.

With YNNPACK's fusions off, XLA:CPU runs each dot as Eigen GEMMs over the
replica (batch) axis and each reduction in its own loop, and every replica
gets the same bits whatever R: measured through the engine on CIFAR-10 for R
in 1, 2, 3, 6, 8 at batch 64 and 1, 2, 3, 6, 8, 16 at batch 128;
tests/test_chunk_invariance.py (chunks of 1, 2, 6, 8) and tests/test_kernels.py
(1, 2, 3, 6, 8) hold it. Keeping YNNPACK's dots and turning off only its
reductions (``"LIBRARY_FUSION_TYPE_DOT"``) is invariant too but was slower.
Measured interleaved at R = 8, batch 128, on the shared 2-core VM (loaded, so
ratios only; medians of paired ratios in three runs): a train step took 0.96-
1.04x the default options' time with no YNNPACK fusions, 1.04-1.10x with
YNNPACK's dots kept; evaluation 0.74-0.76x and 0.99-1.02x.

Numbers change against the default options (every dot and the large sums move
to Eigen and XLA's loops). Other backends get no options: GPU and TPU
invariance is not measured yet.

The option is experimental in XLA; a jaxlib that does not know it gets no
options (and the tests above fail, which is the point: re-measure, re-pin).
"""

from __future__ import annotations

import functools

import jax

# backend -> XLA DebugOptions set on every replica-batched compilation.
# An empty list replaces jaxlib 0.10.2's default YNNPACK fusion types (DOT,
# REDUCE): no op goes to YNNPACK.
OPTIONS: dict[str, dict[str, str]] = {
    "cpu": {"xla_cpu_experimental_ynn_fusion_type": ""},
}


# The same for a function that runs its replicas one at a time (`jit`): YNNPACK's
# dots and reductions, as jaxlib 0.10.2 has them by default, but not the other
# op kinds its default also sends to YNNPACK (19 fusions in a 2-replica epoch
# against 13), which cost a train step 1.5x (107 vs 71 ms per replica-step,
# bench/cpu_variants.py, `after` vs `conv=native+rep=sequential+ynn`).
ONE_AT_A_TIME_OPTIONS: dict[str, dict[str, str]] = {
    "cpu": {"xla_cpu_experimental_ynn_fusion_type":
            "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"},
}


def compiler_options(one_at_a_time: bool = False) -> dict[str, str] | None:
    """The options for ``jax.default_backend()``, or None.

    None where the backend has none, or where this jaxlib does not know them.
    `one_at_a_time`: the options for a function that runs its replicas one
    after another (`jit`).
    """
    table = ONE_AT_A_TIME_OPTIONS if one_at_a_time else OPTIONS
    options = table.get(jax.default_backend())
    if options is None or not _known(tuple(sorted(options.items()))):
        return None
    return dict(options)


def jit(fn, *, one_at_a_time: bool = False, **kwargs):
    """``jax.jit(fn, **kwargs)``, compiled under `compiler_options()`.

    `one_at_a_time`: `fn` runs its replicas one after another
    (``kernels.replica_map``'s ``sequential``), every float sum inside the
    per-replica body, and outside it only exact or elementwise work. Every
    shape XLA sees in a replica's arithmetic is then the same whatever R, so
    YNNPACK's fusions keep the invariance and the function gets them
    (`ONE_AT_A_TIME_OPTIONS`: a train step 0.91x the time without them,
    ``kernels.select``).
    """
    return jax.jit(fn, compiler_options=compiler_options(one_at_a_time), **kwargs)


@functools.cache
def _known(options: tuple[tuple[str, str], ...]) -> bool:
    # An unknown option fails only when something compiles: try something tiny.
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options))(1.0)
    except Exception:  # XlaRuntimeError: "No such compile option", a bad value
        return False
    return True
