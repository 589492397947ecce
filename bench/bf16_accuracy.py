"""Does bf16 compute move clean accuracy beyond seed noise?

Trains the same clean replicas twice, float32 and bfloat16 compute (parameters
and Adam state stay float32 in both), with the same seeds: same init, data order
and dropout. The per-seed difference bf16 - f32 is then a paired delta, set
against the seed-to-seed spread of float32 accuracy.

    PYTHONPATH=. python bench/bf16_accuracy.py --data sample --seeds 8 --epochs 5

Writes JSON (--json) and prints a Markdown table for bench/RESULTS.md. Meant for
GPUs, where bf16 is fast; on CPU it runs, slowly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep import stats  # noqa: E402
from sweep.experiment.config import Config  # noqa: E402
from sweep.experiment.running import run_sweep  # noqa: E402


def clean_accuracy(config: Config, out: Path) -> tuple[pd.Series, float]:
    """Last-epoch test accuracy per seed of the clean replicas, and seconds."""
    t0 = time.perf_counter()
    run_sweep.run(config.replace(out=str(out)), log=lambda s: None)
    seconds = time.perf_counter() - t0
    m = pd.read_parquet(out / "metrics.parquet")
    last = m[(m["epoch"] == m["epoch"].max()) & (m["count"] == 0)]
    return last.groupby("seed")["test_accuracy"].first(), seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="sample")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args()

    base = Config(data=args.data, train_size=args.train_size, counts=("0",),
                  seeds=args.seeds, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        f32, t32 = clean_accuracy(base, Path(tmp) / "f32")
        bf16, t16 = clean_accuracy(base.replace(compute_dtype="bfloat16"),
                                   Path(tmp) / "bf16")
    diff = (bf16 - f32).to_numpy()
    mean, (low, high) = stats.t_interval(diff)
    seed_sd = float(np.std(f32.to_numpy(), ddof=1))
    import jax

    from sweep.results import environment as env_lib

    commit = (env_lib.git_commit(mark_dirty=True)
              or os.environ.get("SWEEP_GIT_COMMIT"))
    result = {
        "commit": commit,
        "versions": env_lib.versions(("jax", "jaxlib", "flax", "optax", "numpy")),
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "data": args.data, "train_size": args.train_size,
        "seeds": args.seeds, "epochs": args.epochs,
        "f32_accuracy_mean": float(f32.mean()), "bf16_accuracy_mean": float(bf16.mean()),
        "f32_seed_sd": seed_sd,
        "paired_diff_mean": float(mean), "paired_diff_ci95": [float(low), float(high)],
        "paired_diff_sd": float(np.std(diff, ddof=1)),
        "f32_seconds": round(t32, 2), "bf16_seconds": round(t16, 2),
        "per_seed": {"f32": f32.round(3).tolist(), "bf16": bf16.round(3).tolist()},
    }
    inside = abs(result["paired_diff_mean"]) <= seed_sd
    print(f"| device | clean acc f32 | clean acc bf16 | bf16 - f32 (paired, 95% CI) "
          f"| f32 seed sd | within seed noise | f32 s | bf16 s |\n|---|---|---|---|---|---|---|---|\n"
          f"| {result['device']} | {result['f32_accuracy_mean']:.2f} "
          f"| {result['bf16_accuracy_mean']:.2f} | {mean:+.2f} [{low:+.2f}, {high:+.2f}] "
          f"| {seed_sd:.2f} | {'yes' if inside else 'no'} | {t32:.1f} | {t16:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
