"""Evaluation's formulations on the CPU, taking turns in one process (issue 21).

    PYTHONPATH=. python bench/cpu_eval.py [--replicas 8] [--images 2000]
        [--rounds 3] [--json PATH]

Each variant is the engine's own compiled evaluation (`sweep.engine.
make_evaluate`: every replica's model on the same test images, eval batch by
eval batch, loss sums and confusion matrices out), traced with
`kernels.select`'s CPU choices replaced (`bench/cpu_variants.py`'s `forced`)
and compiled under the engine's options (YNNPACK's fusions off; a variant
ending in `-ynn` gets its dots and reductions back). All variants are compiled
first and then take turns, one evaluation each per round, so load from other
processes falls on all alike. Random uint8 images and labels, weights from
the engine's init (what evaluation costs does not depend on the values).

Reported per variant: ms per replica-image (median over rounds), time over
`before`'s (the formulation before issue 21: im2col convolutions, replicas
batched, eval batch 1000), and whether its confusion matrices equal
`before`'s exactly and how far its loss sums are (largest relative gap).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from cpu_variants import forced  # noqa: E402

from sweep import engine  # noqa: E402

YNN = {"xla_cpu_experimental_ynn_fusion_type":
       "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
# name -> (conv, replicas, eval batch); "before" first: the others divide by it.
VARIANTS = {
    "before": ("im2col", "batched", 1000),
    "im2col-b250": ("im2col", "batched", 250),
    "native-b1000": ("native", "batched", 1000),
    "native-b250": ("native", "batched", 250),
    "after": ("native", "sequential", 1000),
    "after-b250": ("native", "sequential", 250),
    "after-b100": ("native", "sequential", 100),
    "after-ynn": ("native", "sequential", 1000),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--images", type=int, default=2000,
                   help="test images (a multiple of 1000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    r, n = args.replicas, args.images
    if n % 1000:
        print("--images must be a multiple of 1000 (every eval batch whole)",
              file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    keys = engine.replica_keys(np.arange(r), np.zeros(r))
    runs = {}
    for name, (conv, replicas, eb) in VARIANTS.items():
        recipe = engine.Recipe(n_train=128, n_classes=10, eval_batch_size=eb)
        params = engine.init_state(recipe, keys.init).params
        with forced(conv, replicas):
            lowered = engine.make_evaluate(recipe).lower(params, x, y)
        runs[name] = (lowered.compile(YNN if name.endswith("-ynn") else None), params)
    times = {k: [] for k in runs}
    outs = {}
    for _ in range(args.rounds):
        for name, (compiled, params) in runs.items():
            t0 = time.perf_counter()
            outs[name] = jax.block_until_ready(compiled(params, x, y))
            times[name].append(time.perf_counter() - t0)
    base_loss, base_conf = (np.asarray(a) for a in outs["before"])
    base = float(np.median(times["before"]))
    result = {}
    print(f"R = {r}, {n} test images, medians of {args.rounds} rounds")
    for name, ts in times.items():
        loss, conf = (np.asarray(a) for a in outs[name])
        med = float(np.median(ts))
        row = {"ms_per_replica_image": 1e3 * med / (r * n), "vs_before": med / base,
               "confusion_equal": bool((conf == base_conf).all()),
               "loss_rel_gap": float(np.abs(loss - base_loss).max()
                                     / np.abs(base_loss).max())}
        result[name] = row
        print(f"{name:14s} {row['ms_per_replica_image']:.3f} ms/replica-image  "
              f"x{row['vs_before']:.2f}  confusion equal {row['confusion_equal']}  "
              f"loss gap {row['loss_rel_gap']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
