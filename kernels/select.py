"""Which formulation ``impl="auto"`` means, per backend and replica count.

Provisional table; filled in from bench/kernels_bench.py below.
"""

from __future__ import annotations

import jax

from sweep.errors import SweepError

# op -> backend -> impl.
TABLE: dict[str, dict[str, str]] = {
    "conv": {"cpu": "unroll", "gpu": "vmap", "tpu": "vmap"},
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
      backend: "cpu", "gpu" ("cuda"/"rocm" count as "gpu") or "tpu"; None for
        ``jax.default_backend()``.
      replicas: R, the leading replica axis (None: unknown).
      channels: input channels C of a convolution (None: unknown).

    Returns:
      An entry of that op's ``IMPLS``.
    """
    if op not in TABLE:
        raise SweepError(f"unknown kernel op {op!r}; expected one of {tuple(TABLE)}")
    backend = jax.default_backend() if backend is None else backend
    backend = "gpu" if backend in ("cuda", "rocm") else backend
    if op == "conv" and backend == "cpu" and channels is not None and channels <= 4:
        return "im2col"
    row = TABLE[op]
    return row.get(backend, row["cpu"])


def check_impl(op: str, impl: str, impls: tuple[str, ...]) -> None:
    """Refuse an impl name that ``op`` does not have, in one line."""
    if impl not in impls:
        raise SweepError(
            f"unknown {op} kernel {impl!r}; expected 'auto' or one of {impls}"
        )
