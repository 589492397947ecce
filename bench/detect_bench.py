"""Cost of a detect sweep's fold replicas: one compiled step vs one after another.

    PYTHONPATH=. python bench/detect_bench.py [--n 1000] [--replicas 8]
        [--folds 4] [--repeats 3] [--json bench/detect.json]

A detect run trains counts x seeds x folds fold replicas, each on the training
set minus its fold (`sweep.engine.SubsetEngine`, training margins recorded).
This times one epoch of R such replicas (a) together, in one compiled
`lax.scan` epoch, and (b) one fold model after another through the same
engine built for one replica, on the same random uint8 images, and reports
the ratio (b) / (a). Compilation is timed apart; each path is warmed up first;
the median of --repeats epochs is reported, with `block_until_ready`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import jax
import numpy as np


def main() -> None:
    from sweep import engine
    from sweep.defences.detect import folds

    a = argparse.ArgumentParser()
    a.add_argument("--n", type=int, default=1000, help="training images")
    a.add_argument("--replicas", type=int, default=8)
    a.add_argument("--folds", type=int, default=4)
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--json", default="bench/detect.json")
    args = a.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n).astype(np.int32)
    test_x = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, 100).astype(np.int32)
    recipe = engine.Recipe(n_train=args.n, n_classes=10, eval_batch_size=100)
    r = args.replicas
    split = folds.training_subsets(folds.assign_folds(args.n, args.folds, rng),
                                   args.folds)
    which = np.arange(r) % args.folds
    subsets = engine.Subsets(split.index[which], split.length[which])
    keys = engine.replica_keys(np.arange(r), 1000 + which)
    all_labels = np.stack([labels] * r)

    def epoch_fn(eng, n_rep):
        def run(state, sub, ks, epoch):
            out = eng.subset_epoch(state, eng.train_images,
                                   jax.numpy.asarray(all_labels[:n_rep]), ks, sub,
                                   jax.numpy.int32(epoch))
            jax.block_until_ready(out)
            return out[0]
        return run

    def time_path(n_rep, groups):
        eng = engine.SubsetEngine(recipe, images, test_x, test_y, record_margins=True)
        run = epoch_fn(eng, n_rep)
        states, subs, kss = [], [], []
        for g in groups:
            ks = engine.ReplicaKeys(*(k[g] for k in keys))
            subs.append(engine.Subsets(subsets.index[g], subsets.length[g]))
            kss.append(ks)
            states.append(eng.init(ks))
        t0 = time.perf_counter()
        states[0] = run(states[0], subs[0], kss[0], 0)  # compile + first epoch
        compile_s = time.perf_counter() - t0
        times = []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(len(groups)):
                states[i] = run(states[i], subs[i], kss[i], rep + 1)
            times.append(time.perf_counter() - t0)
        t = np.array(times)
        return float(np.median(t)), float(t.min()), float(t.max()), compile_s

    together = time_path(r, [np.arange(r)])
    apart = time_path(1, [np.array([i]) for i in range(r)])
    images_per_epoch = int(subsets.length.sum())
    result = {
        "device": f"{jax.default_backend()} {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(), "host": platform.node(),
        "load_average": os.getloadavg(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "jax": jax.__version__, "n": args.n, "replicas": r, "folds": args.folds,
        "together_s": together[0], "together_range": together[1:3],
        "together_compile_s": together[3],
        "apart_s": apart[0], "apart_range": apart[1:3], "apart_compile_s": apart[3],
        "ratio_apart_over_together": apart[0] / together[0],
        "replica_images_per_s_together": images_per_epoch / together[0],
        "replica_images_per_s_apart": images_per_epoch / apart[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
