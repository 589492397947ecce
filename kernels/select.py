"""Which formulation ``impl="auto"`` means, per backend, replica count and layer.

The choice is made at trace time from static shapes, so it costs nothing at run
time. Re-measure a row with ``PYTHONPATH=. python bench/kernels_bench.py`` on
that backend (full SimpleCNN train step, batch 128, each formulation x R).

CPU (2-core AMD EPYC VM, XLA:CPU, jax 0.10.2; 2026-11-22; ms per replica step,
plain single model ~88 ms; medians of 9-15 interleaved steps, other jobs
sharing the machine, so +-5-10%; measured with XLA:CPU's default YNNPACK
fusions, before ``kernels.invariance`` turned them off for the engine: the
bench now compiles as the engine does, re-measure this row):

    R   vmap    map       unroll  im2col  auto
    1   92      3470      91      80      81
    4   687     dropped   89      74      73
    8   dropped dropped   78      71-87   68-81
    16  dropped dropped   91      81-84   80-83
    32  -       -         -       77      92 (auto = unroll above conv1 then)

- ``vmap`` (grouped convolution) costs 7-11x R single models: XLA:CPU has no
  fast path for ``feature_group_count > 1``. ``map`` runs its convolutions
  inside a while loop, where XLA:CPU is 40x slower still. Neither is chosen.
- ``im2col`` turns each layer into one batched GEMM: its cost per replica is
  flat in R and its compile time constant (~1.5 s).
- ``unroll`` gives every replica XLA's own (Eigen) convolution, which beats
  im2col on the 32- and 64-channel layers by ~7% of a step at R <= 8, but
  compiles in time growing with R (4.7 s at R=16, 8 s at R=32) and falls
  behind im2col from R=16 on.
- The first layer (3 input channels) is faster as im2col at every R: a
  27-deep GEMM beats a convolution over 3 channels (~20 ms of a step saved).

Those are steps timed alone. The engine runs a whole epoch inside one
``lax.scan``, and there XLA:CPU's own convolution falls off a cliff: inside a
while loop it is not dispatched to Eigen, and a 2-replica ``unroll`` step took
4.8 s against 0.115 s outside the loop (``im2col``: 0.10 s inside, the same
as outside). So on CPU ``auto`` is ``im2col`` for every layer and R. ``map``,
``unroll``, pool ``window`` and dense ``vmap`` are never chosen; they are
baselines in ``bench/kernel_baselines.py``, which the bench still times.

GPU and TPU rows are not measured yet (no accelerator was available): ``vmap``
lets cuDNN / the TPU compiler run one grouped convolution per layer, which is
the usual best there; run the bench and fix the row.

Pool: ``reshape`` everywhere; ``window`` (``lax.reduce_window``) has a
select-and-scatter backward that adds ~30% to a CPU step (108.6 vs 81.6 ms at
R=1). Dense: ``einsum``; ``vmap`` gives XLA the same batched dot.
"""

from __future__ import annotations

import jax


class KernelError(ValueError):
    """An unknown op or formulation name (callers above may translate it)."""


# op -> backend -> impl. Shape-independent today: no measured shape changed a
# winner inside the epoch loop (the CPU table above).
TABLE: dict[str, dict[str, str]] = {
    "conv": {"cpu": "im2col", "gpu": "vmap", "tpu": "vmap"},
    "pool": {"cpu": "reshape", "gpu": "reshape", "tpu": "reshape"},
    "dense": {"cpu": "einsum", "gpu": "einsum", "tpu": "einsum"},
}


def choose(
    op: str,
    *,
    backend: str | None = None,
    replicas: int | None = None,
    channels: int | None = None,
) -> str:
    """The formulation ``impl="auto"`` resolves to.

    Args:
      op: "conv", "pool" or "dense".
      backend: "cpu", "gpu" ("cuda" and "rocm" count as "gpu") or "tpu"; None
        for ``jax.default_backend()``. Unknown backends get the CPU row.
      replicas: R, the leading replica axis (None: unknown).
      channels: input channels of a convolution (None: unknown).

    Returns:
      An entry of that op's ``IMPLS``.
    """
    if op not in TABLE:
        raise KernelError(f"unknown kernel op {op!r}; expected one of {tuple(TABLE)}")
    backend = jax.default_backend() if backend is None else backend
    backend = "gpu" if backend in ("cuda", "rocm") else backend
    row = TABLE[op]
    if backend not in row:
        backend = "cpu"
    return row[backend]


def check_impl(op: str, impl: str, impls: tuple[str, ...]) -> None:
    """Refuse an impl name that ``op`` does not have, in one line."""
    if impl not in impls:
        raise KernelError(
            f"unknown {op} kernel {impl!r}; expected 'auto' or one of {impls}"
        )
