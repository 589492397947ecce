"""Which formulation ``impl="auto"`` means, per backend, replica count and layer.

The choice is made at trace time from static shapes, so it costs nothing at run
time. Ops: "conv" (``kernels.conv``), "pool", "dense", and "replicas"
(``kernels.replica_map``: the replica axis run all at once or one replica after
another inside the compiled step).

CPU, measured on a 2-core AMD EPYC VM (Zen 4: AVX-512, avx512_bf16, no AMX;
XLA:CPU, jax 0.10.2), quiet machine (load < 2), 2026-12-06. The engine's own
compiled epoch (``make_train_epoch``, 10 steps of batch 128, R = 8, Adam,
dropout), variants taking turns in one process, ms per replica-step, medians
of 3-4 rounds (``PYTHONPATH=. python bench/cpu_variants.py --replicas 8 --steps
10 --rounds 3 --variants before,after,r=1 --torch``, and the variant lists in
bench/RESULTS.md):

    conv     replicas     R=8 ms   vs im2col+batched
    im2col   batched      88-92    1.00  (the rule before issue 21)
    im2col   sequential   95       1.07
    native   batched      77       0.87
    native   sequential   64-69    0.74-0.78  (with kernels.invariance's
                                    one-at-a-time options; 0.79-0.82 without)
    PyTorch 2.13 (2 threads, fair loop, one model): 71-85 ms

- ``native`` (XLA's convolution, its backward pass in the canonical form of
  ``kernels.conv_native``) runs every convolution as one library call in or
  out of the epoch's while loop; autodiff's own weight gradient falls to a
  naive loop inside it (8.1 s against 61 ms, conv2's shape). On every layer,
  the 3-channel first one included, it beat ``im2col`` (whose patches and
  transposed weight-gradient dots were two fifths of a step).
- ``sequential`` replicas keep one replica's activations in the caches where a
  batched layer streams R replicas' through memory (25-35% more per replica
  per layer at R = 8 than R = 1). It costs nothing per replica: R = 1 runs the
  same loop body (66.6 ms against 69.1 at R = 8 in one run), so replicas
  together are no cheaper than one after another on a CPU; both are faster
  than PyTorch's loop.
- ``vmap`` (grouped convolution) costs 7-11x R single models on XLA:CPU, and
  ``map``/``unroll`` run autodiff's convolution inside a loop: never chosen;
  baselines in ``bench/kernel_baselines.py``.
- Evaluation (the test set through every replica each epoch) with ``native``
  and ``sequential``: 0.50x the ``im2col``/batched time, confusion matrices
  and losses bit-equal in the run that measured it (eval batch 1000; 250 or
  100 were no faster, YNNPACK's fusions no help).

Not measured: an Intel CPU (the issue's Xeon with AMX); re-run the bench there.

GPU and TPU rows are not measured yet (no accelerator was available): ``vmap``
lets cuDNN / the TPU compiler run one grouped convolution per layer, and the
replicas one batched pass, which is the usual best there; run the bench and fix
the row.

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
    "conv": {"cpu": "native", "gpu": "vmap", "tpu": "vmap"},
    "pool": {"cpu": "reshape", "gpu": "reshape", "tpu": "reshape"},
    "dense": {"cpu": "einsum", "gpu": "einsum", "tpu": "einsum"},
    "replicas": {"cpu": "sequential", "gpu": "batched", "tpu": "batched"},
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
      op: "conv", "pool", "dense" or "replicas" (``kernels.replica_map``).
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
