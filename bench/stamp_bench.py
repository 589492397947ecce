"""What stamping a trigger costs the training step: stamped vs plain, one run.

    PYTHONPATH=. python bench/stamp_bench.py [--replicas 8] [--steps 4]
        [--repeats 5] [--poisoned 0.1] [--json bench/stamp.json]

A backdoor sweep's replicas gather their batch from the one uint8 copy of the
training set and stamp the trigger where their mask says
(`sweep.engine.triggers.gather_stamped`), in the same compiled epoch as the
rest of the step. This times one engine epoch (`make_train_epoch`: a
`lax.scan` over `--steps` steps of R replicas, SimpleCNN, batch 128) four
ways on the same random uint8 images, labels and keys:

  plain        the label-flip sweep's epoch (no stamps: its compiled program)
  badnets      a 3x3 patch, `--poisoned` of each poisoned replica's images
  blend        a full-image pattern at alpha 0.2, same masks
  clean-label  the patch, plus per-replica rows that point the stamped
               images at perturbed copies stored after the N training images

Each is compiled and run once first (compile time apart); then the four are
timed in turn, `--repeats` rounds interleaved, so a busy machine slows them
alike; `block_until_ready` before every clock stop. Reported: the median
epoch time, its range, the ratio of medians to the plain epoch, and each
round's ratio to the plain epoch timed beside it (median and range; the
issue's target: stamping costs under 5% of the step). badnets and blend share
one compiled program: the trigger is an array argument. Writes --json and
prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from sweep import engine  # noqa: E402
from sweep.engine import triggers  # noqa: E402
from sweep.results import environment as env_lib  # noqa: E402

BATCH = 128
VARIANTS = ("plain", "badnets", "blend", "clean-label")


def setup(replicas: int, steps: int, poisoned: float, seed: int = 0):
    """Images, labels, keys and each variant's (stamps, trigger) arguments."""
    n = BATCH * steps
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (replicas, n)).astype(np.int32)
    # Replica 0 is a clean twin (empty mask); the others stamp `poisoned` of N.
    mask = rng.random((replicas, n)) < poisoned
    mask[0] = False
    extra = rng.integers(0, 256, (int(mask.any(0).sum()), 32, 32, 3), dtype=np.uint8)
    stamped_any = np.flatnonzero(mask.any(0))
    rows = np.tile(np.arange(n, dtype=np.int32), (replicas, 1))
    for r in range(replicas):
        hit = np.flatnonzero(mask[r])
        rows[r, hit] = n + np.searchsorted(stamped_any, hit)
    patch = triggers.badnets()
    args = {
        "plain": (images, ()),
        "badnets": (images, (engine.Stamps(mask), patch)),
        "blend": (images, (engine.Stamps(mask), triggers.blend(alpha=0.2))),
        "clean-label": (np.concatenate([images, extra]),
                        (engine.Stamps(mask, rows), patch)),
    }
    keys = engine.replica_keys(np.zeros(replicas), np.zeros(replicas))
    return n, labels, keys, args


def main(argv: list[str] | None = None) -> int:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--replicas", type=int, default=8)
    a.add_argument("--steps", type=int, default=4, help="steps per timed epoch")
    a.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    a.add_argument("--poisoned", type=float, default=0.1,
                   help="share of a poisoned replica's images that are stamped")
    a.add_argument("--json", default="bench/stamp.json")
    args = a.parse_args(argv)

    n, labels, keys, variants = setup(args.replicas, args.steps, args.poisoned)
    recipe = engine.Recipe(n_train=n, n_classes=10)
    epoch = engine.make_train_epoch(recipe)
    state0 = jax.jit(lambda k: engine.init_state(recipe, k))(keys.init)
    placed = {name: (jax.device_put(images), jax.device_put(extra))
              for name, (images, extra) in variants.items()}
    labels = jax.device_put(jnp.asarray(labels))

    def once(name: str, e: int) -> float:
        images, extra = placed[name]
        t0 = time.perf_counter()
        out = epoch(state0, images, labels, keys, jnp.int32(e), *extra)
        jax.block_until_ready(out)
        return time.perf_counter() - t0

    compile_s = {name: once(name, 0) for name in VARIANTS}
    times = {name: [] for name in VARIANTS}
    for rep in range(args.repeats):
        for name in VARIANTS:
            times[name].append(once(name, 1 + rep))
    plain = statistics.median(times["plain"])
    rows = []
    for name in VARIANTS:
        t = times[name]
        med = statistics.median(t)
        # Each round's ratio to the plain epoch timed beside it: robust to a
        # load that drifts between rounds.
        paired = [a / b for a, b in zip(t, times["plain"], strict=True)]
        rows.append({"variant": name, "epoch_s_median": med, "epoch_s_min": min(t),
                     "epoch_s_max": max(t), "ratio_to_plain": med / plain,
                     "round_ratio_median": statistics.median(paired),
                     "round_ratio_min": min(paired), "round_ratio_max": max(paired),
                     "step_ms_median": 1000 * med / args.steps,
                     "compile_and_first_epoch_s": compile_s[name], "epoch_s": t})
    dev = jax.devices()[0]
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "command": "python bench/stamp_bench.py " + " ".join(argv or sys.argv[1:]),
        "commit": env_lib.git_commit(mark_dirty=True),
        "backend": jax.default_backend(), "device_kind": dev.device_kind,
        "platform": platform.platform(), "cpu_model": env_lib.cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "versions": env_lib.versions(("jax", "jaxlib", "numpy")),
        "replicas": args.replicas, "steps": args.steps, "batch": BATCH,
        "poisoned_share": args.poisoned, "repeats": args.repeats, "results": rows,
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(markdown(record))
    return 0


def markdown(record: dict) -> str:
    lines = [
        f"R = {record['replicas']} replicas, {record['steps']} steps of batch "
        f"{record['batch']} per epoch, {100 * record['poisoned_share']:g}% of each "
        f"poisoned replica's images stamped; {record['backend']} "
        f"({record['device_kind']}), jax {record['versions'].get('jax')}, "
        f"{record['date']}, load average at start "
        f"{record['load_average_at_start'][0]:.1f}",
        "",
        "| epoch | median s (range) | step ms | / plain (medians) | / plain per "
        "round: median (range) | compile+first s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['variant']} | {r['epoch_s_median']:.2f} ({r['epoch_s_min']:.2f}-"
            f"{r['epoch_s_max']:.2f}) | {r['step_ms_median']:.0f} | "
            f"{r['ratio_to_plain']:.3f} | {r['round_ratio_median']:.3f} "
            f"({r['round_ratio_min']:.3f}-{r['round_ratio_max']:.3f}) | "
            f"{r['compile_and_first_epoch_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
