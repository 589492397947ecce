"""Cost of a certified defence's base models: together vs one after another, and
the time to certify again after a flip.

    PYTHONPATH=. python bench/certify_bench.py [--n 2000] [--k 20] [--epochs 2]
        [--batch-size 32] [--flips 1,10] [--repeats 2] [--json bench/certify.json]

Real CIFAR-10 images (the embedded sample, a class-balanced --n of them) split
into --k hash partitions (`sweep.defences.certify.partition`, seed 0); every
base model is an isolated replica (`SubsetEngine(isolated=True)`).

(1) One epoch of the k base models (a) together, one compiled `lax.scan`
    epoch over R = k replicas, (b) one after another through the same
    compiled function built for one replica (R = 1; the run itself trains a
    lone model beside a twin for bit-identity, which would double (b)'s cost,
    so (b) calls the compiled epoch directly). Median of --repeats epochs
    after a compile-and-warm-up epoch; `block_until_ready`.
(2) Certifying again after --flips cat -> dog flips: (i) retrain only the
    partitions holding a flip (their count, at least 2 replicas), predict the
    test set with them, re-aggregate (DPA); (ii) retrain all k, predict,
    aggregate. Both warm (each shape compiled and run once before timing);
    compile times apart; --repeats of each, interleaved, medians. Checks that
    (ii)'s untouched models are bit for bit the clean ones and that (i) and
    (ii) give the same certificates.
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
import jax.numpy as jnp
import numpy as np


def main() -> None:
    from sweep import data, engine
    from sweep.defences.certify import aggregation, base_models, partition
    from sweep.defences.certify.base_models import Scheme

    a = argparse.ArgumentParser()
    a.add_argument("--n", type=int, default=2000, help="training images")
    a.add_argument("--k", type=int, default=20, help="partitions (base models)")
    a.add_argument("--epochs", type=int, default=2, help="base models' epochs (2)")
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--flips", default="1,10", help="cat -> dog flips for (2)")
    a.add_argument("--repeats", type=int, default=2)
    a.add_argument("--json", default="bench/certify.json")
    args = a.parse_args()

    ds = data.load("sample")
    rows = data.balanced_subset(ds.train_labels, args.n, seed=0)
    images = ds.train_images[rows]
    labels = ds.train_labels[rows].astype(np.int32)
    test_x, test_y = ds.test_images, ds.test_labels.astype(np.int32)
    k, b = args.k, args.batch_size
    lay = base_models.layout(images, Scheme(k, 1), seed=0)
    recipe = engine.Recipe(n_train=len(images), n_classes=10, batch_size=b,
                           eval_batch_size=250)
    eng = engine.SubsetEngine(recipe, images, test_x, test_y, isolated=True)
    width = -(-int(lay.length.max()) // b) * b
    index = np.zeros((k, width), np.int32)
    for i in range(k):
        index[i, : lay.length[i]] = lay.index[i, : lay.length[i]]
    keys = base_models.model_keys(np.zeros(k), np.full(k, k), np.ones(k),
                                  np.arange(k))
    all_labels = jnp.asarray(np.stack([labels] * k))

    def take(tree, sel):
        return jax.tree.map(lambda x: x[sel], tree)

    def epoch(state, sel, e):
        sub = engine.Subsets(jnp.asarray(index[sel]), jnp.asarray(lay.length[sel]))
        out = eng.subset_epoch(state, eng.train_images, all_labels[: len(sel)],
                               take(keys, sel), sub, jnp.int32(e))
        jax.block_until_ready(out)
        return out[0]

    def time_epochs(groups):
        states = [eng.init(take(keys, g)) for g in groups]
        t0 = time.perf_counter()
        states[0] = epoch(states[0], groups[0], 0)
        compile_s = time.perf_counter() - t0
        for i in range(1, len(groups)):
            states[i] = epoch(states[i], groups[i], 0)
        times = []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            for i in range(len(groups)):
                states[i] = epoch(states[i], groups[i], rep + 1)
            times.append(time.perf_counter() - t0)
        t = np.array(times)
        return float(np.median(t)), float(t.min()), float(t.max()), compile_s

    together = time_epochs([np.arange(k)])
    apart = time_epochs([np.array([i]) for i in range(k)])
    images_per_epoch = int(lay.length.sum())

    # (2) certify again after a flip.
    def train_predict(sel, model_labels):
        """Train models `sel` (>= 2 replicas: a lone one beside its twin, as the
        run does) and return their test ranks (len(sel), n, C) and digests."""
        sub = engine.Subsets(index[sel], lay.length[sel])
        state, _, _ = eng.train(model_labels, take(keys, sel), args.epochs,
                                subsets=sub, evaluate=False)
        ranks = base_models.preference_ranks(eng.log_probs(state.params, test_x))
        return ranks, base_models.params_digests(state.params)

    def timed(fn, *xs):
        t0 = time.perf_counter()
        out = fn(*xs)
        return out, time.perf_counter() - t0

    clean_ranks, clean_digests = train_predict(np.arange(k), np.stack([labels] * k))
    flips = [int(f) for f in args.flips.split(",")]
    rng = np.random.default_rng(0)
    cats = np.flatnonzero(labels == 3)
    order = rng.permutation(cats)
    parts = partition.partition_ids(images, k, seed=0)
    recert = []
    for f in flips:
        poisoned = labels.copy()
        poisoned[order[:f]] = 5
        touched = np.unique(parts[order[:f]])
        sel = touched if len(touched) > 1 else np.r_[touched, touched]

        def only_touched(sel=sel, poisoned=poisoned, touched=touched):
            ranks, digests = train_predict(sel, np.stack([poisoned] * len(sel)))
            votes = clean_ranks.argmax(-1).copy()
            votes[touched] = ranks[: len(touched)].argmax(-1)
            return aggregation.dpa_certify(votes, num_classes=10), digests

        def all_models(poisoned=poisoned):
            ranks, digests = train_predict(np.arange(k), np.stack([poisoned] * k))
            return aggregation.dpa_certify(ranks.argmax(-1), num_classes=10), digests

        # R = k was compiled for the clean models; R = touched compiles here.
        _, t_first_touched = timed(only_touched)
        touched_s, all_s = [], []
        for _ in range(args.repeats):  # interleaved: the machine's load hits both
            (cert_t, _), t = timed(only_touched)
            touched_s.append(t)
            (cert_a, dig_a), t = timed(all_models)
            all_s.append(t)
        t_touched, t_all = float(np.median(touched_s)), float(np.median(all_s))
        untouched = np.setdiff1d(np.arange(k), touched)
        same_untouched = all(dig_a[i] == clean_digests[i] for i in untouched)
        same_certs = all(np.array_equal(x, y) for x, y in zip(cert_t, cert_a))
        recert.append({"flips": f, "touched_partitions": int(len(touched)),
                       "retrain_touched_s": t_touched, "retrain_all_s": t_all,
                       "retrain_touched_range": [min(touched_s), max(touched_s)],
                       "retrain_all_range": [min(all_s), max(all_s)],
                       "ratio_all_over_touched": t_all / t_touched,
                       "first_call_touched_s": t_first_touched,
                       "untouched_bit_identical": bool(same_untouched),
                       "same_certificates": bool(same_certs)})
        print(recert[-1], flush=True)

    result = {
        "device": f"{jax.default_backend()} {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(), "host": platform.node(),
        "load_average": os.getloadavg(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "jax": jax.__version__, "n": args.n, "k": k, "batch_size": b,
        "epochs": args.epochs, "partition_sizes": [int(lay.length.min()),
                                                   int(lay.length.max())],
        "together_s": together[0], "together_range": together[1:3],
        "together_compile_s": together[3],
        "apart_s": apart[0], "apart_range": apart[1:3], "apart_compile_s": apart[3],
        "ratio_apart_over_together": apart[0] / together[0],
        "replica_images_per_s_together": images_per_epoch / together[0],
        "replica_images_per_s_apart": images_per_epoch / apart[0],
        "recertify": recert,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
