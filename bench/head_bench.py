"""Heads per second: the engine training R heads together vs Keras one at a time.

The course project's head (Flatten -> Dense 256 ReLU -> Dropout 0.5 -> Dense 1
sigmoid, RMSprop, binary cross-entropy, batch 10) on N frozen-feature vectors of
D values, for E epochs. (a) the engine: R heads as replicas in one jitted
`lax.scan` epoch, compile timed apart; (b) Keras 3 on the JAX backend: a fresh
model per head, `model.fit`, one head after another, as the course project
trains its models (compile included: it is paid per head). Same process, same
features, so the ratio is what to read. Feature values do not change the time;
they are random here.

    KERAS_BACKEND=jax PYTHONPATH=. python bench/head_bench.py --replicas 64 \
        --keras-heads 2 --epochs 2

Writes bench/head.json (raw numbers and the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402


def engine_heads_per_s(x, y, test_x, test_y, r: int, epochs: int) -> dict:
    from sweep import engine
    from sweep.engine import transfer_head

    recipe = engine.Recipe(n_train=len(x), n_classes=2, batch_size=10, lr=1e-3,
                           dropout=0.5, eval_batch_size=len(test_y))
    eng = engine.Engine(recipe, x, test_x, test_y, spec=transfer_head.spec(x.shape[1]))
    keys = engine.replica_keys(np.arange(r), np.zeros(r))
    labels = np.broadcast_to(y, (r, len(y))).copy()
    t0 = time.perf_counter()
    state, _ = eng.train(labels, keys, 1)  # compiles train + eval
    jax.block_until_ready(state)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = eng.train(labels, keys, epochs)  # compiled: steady state
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    return {"heads": r, "epochs": epochs, "seconds": seconds,
            "compile_and_first_epoch_s": first, "heads_per_s": r / seconds}


def keras_heads_per_s(x, y, test_x, test_y, k: int, epochs: int) -> dict:
    import keras

    times = []
    for i in range(k):
        t0 = time.perf_counter()
        keras.utils.set_random_seed(i)
        m = keras.Sequential([
            keras.Input(x.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        m.compile(optimizer=keras.optimizers.RMSprop(), loss="binary_crossentropy",
                  metrics=["accuracy"])
        m.fit(x, y, batch_size=10, epochs=epochs, verbose=0,
              validation_data=(test_x, test_y))
        times.append(time.perf_counter() - t0)
    return {"heads": k, "epochs": epochs, "seconds": sum(times),
            "seconds_per_head": times, "heads_per_s": k / sum(times)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--replicas", type=int, default=64)
    p.add_argument("--keras-heads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=800)
    p.add_argument("--features", type=int, default=2048)
    p.add_argument("--out", default="bench/head.json")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(a.n_train, a.features)).astype(np.float32)
    y = rng.integers(0, 2, a.n_train).astype(np.int32)
    test_x = rng.normal(size=(a.n_test, a.features)).astype(np.float32)
    test_y = rng.integers(0, 2, a.n_test).astype(np.int32)

    eng = engine_heads_per_s(x, y, test_x, test_y, a.replicas, a.epochs)
    print(f"engine: {eng['heads']} heads x {a.epochs} epochs in {eng['seconds']:.1f} s"
          f" = {eng['heads_per_s']:.2f} heads/s (compile + 1st epoch "
          f"{eng['compile_and_first_epoch_s']:.1f} s)", flush=True)
    with jax.numpy_rank_promotion("allow"):
        ker = keras_heads_per_s(x, y, test_x, test_y, a.keras_heads, a.epochs)
    print(f"keras:  {ker['heads']} heads x {a.epochs} epochs in {ker['seconds']:.1f} s"
          f" = {ker['heads_per_s']:.3f} heads/s", flush=True)
    ratio = eng["heads_per_s"] / ker["heads_per_s"]
    print(f"ratio engine/keras: {ratio:.1f}x")
    import keras

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    record = {
        "command": " ".join(sys.argv), "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": f"{jax.default_backend()} {jax.devices()[0].device_kind}, "
                  f"{os.cpu_count()} cores, {platform.node()}",
        "versions": {"jax": jax.__version__, "keras": keras.__version__},
        "settings": vars(a), "engine": eng, "keras": ker, "ratio": ratio,
    }
    with open(a.out, "w") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
