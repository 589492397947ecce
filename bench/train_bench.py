"""Training throughput: the sweep engine against what people write first.

    PYTHONPATH=. python bench/train_bench.py [--quick] [--data PATH]
        [--replicas 1,2,4,8,16] [--steps N] [--json bench/train.json]
    PYTHONPATH=. python bench/train_bench.py --full-sweep --data PATH

One run, one device, four ways to train SimpleCNN (batch 128, Adam 1e-3,
dropout 0.5) on the same uint8 images and labels, each replica doing the same
``--steps`` optimizer steps:

  (a) engine: ``sweep.engine.make_train_epoch``, R replicas in one jitted
      ``lax.scan`` over the epoch's steps, images resident on the device as
      uint8, every batch gathered there. Timed for every R in ``--replicas``.
  (b) flax-vmap: a ``flax.linen`` SimpleCNN step with optax Adam, ``jax.vmap``
      over params / opt_state / batches, jitted; a Python loop over steps feeds
      host batches (numpy shuffle, index, scale to float32, ``device_put``).
  (c) flax-seq: the same Flax step, one replica after another, same host loop.
  (d) torch-seq: the reference notebook's PyTorch SimpleCNN, one model after
      another, a DataLoader-free loop over in-memory tensors. Only when torch
      imports (``pip install -e ".[bench]"``; on a CPU-only machine install
      ``torch==2.13.0`` or the CPU index first); skipped with a note otherwise.

Every path is compiled (or warmed up) first; compile time is reported apart.
Throughput is steady state, in replica-images/s, with ``block_until_ready``
around the timed region. Ratios are engine / other at the same R.

Also reported: R-scaling of the engine (step time, replica-images/s, cost ratio
time(R) / (R x time(1)), the R where throughput reaches 95% of its maximum),
memory per replica (the compiled executable's ``memory_analysis()`` everywhere;
the device's ``peak_bytes_in_use`` where the backend has ``memory_stats``),
the share of the device's peak FLOP rate, and the estimated wall time of the
full default sweep (48 replicas x 5 epochs over 50,000 CIFAR-10 images, plus
evaluation on 10,000 test images each epoch) at the chunk size the sweep
would use here.

``--full-sweep`` instead runs that default sweep end to end through
``sweep.experiment.running.run_sweep.run`` on real data (``--data``), twice by default: the second run
finds its compilations in a persistent compilation cache, so it shows the
sweep without most of its compile time. Meant for a GPU (~10 s); on CPU it
takes hours, so it refuses there without ``--force``.

Writes ``--json`` (default ``bench/train.json``) and a Markdown section for
``bench/RESULTS.md`` beside it (same name, ``.md``), and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sweep import engine as engine_lib  # noqa: E402
from sweep.results import environment as env_lib  # noqa: E402

BATCH = 128
BENCH_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch")
IMAGE = (32, 32, 3)
CLASSES = 10
LR = 1e-3
DROPOUT = 0.5

# Forward multiply-adds of one image through SimpleCNN, layer by layer:
# conv: output pixels x out channels x (3 x 3 x in channels); dense: in x out.
FORWARD_MACS = {
    "conv1": 32 * 32 * 32 * (9 * 3),  # 884,736
    "conv2": 16 * 16 * 64 * (9 * 32),  # 4,718,592
    "conv3": 8 * 8 * 128 * (9 * 64),  # 4,718,592
    "fc1": 2048 * 512,  # 1,048,576
    "fc2": 512 * 10,  # 5,120
}
FORWARD_MACS_TOTAL = sum(FORWARD_MACS.values())  # 11,375,616
# Training ~ forward + backward (input and weight gradients) = 3 x forward,
# 2 FLOPs per multiply-add. Bias, ReLU, pooling, softmax and Adam are left out.
TRAIN_FLOPS_PER_IMAGE = 3 * 2 * FORWARD_MACS_TOTAL  # 68,253,696

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets, matched against
# jax's device_kind in order (first substring that matches). "tf32" is what
# XLA uses for float32 convolutions and matmuls at JAX's default precision.
PEAK_TFLOPS = (
    ("H200 NVL", {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H100 NVL", {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0}),
    ("H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM (HBM3)
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)

# The default sweep: counts 1,5,10,50,100 plus the clean 0, x 8 seeds.
SWEEP_REPLICAS = 6 * 8
SWEEP_EPOCHS = 5
CIFAR_TRAIN = 50_000
CIFAR_TEST = 10_000
EVAL_BATCH = 1000


# ----------------------------------------------------------------------------
# Environment


class CpuShare:
    """How much of the machine's CPU time other processes took during the run.

    Busy jiffies of the whole machine (/proc/stat) minus this process's own CPU
    time, over wall time x cores: 0 means the measurements had the machine to
    themselves; 1 means another job kept every core busy.
    """

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.time(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        v = [int(x) for x in fields]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def other_share(self) -> float | None:
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return None
        wall = time.time() - self.t0
        cores = os.cpu_count() or 1
        other = (busy - self.busy0) - (self._own() - self.own0)
        return round(max(0.0, other) / (wall * cores), 3) if wall > 0 else None


def other_jobs() -> list[str]:
    """Command lines of other processes using noticeable CPU right now (ps)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    jobs = []
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[0]) != os.getpid():
            try:
                if float(parts[1]) >= 20.0:
                    jobs.append(f"{parts[1]}% {parts[2][:120]}")
            except ValueError:
                pass
    return jobs[:5]


# ----------------------------------------------------------------------------
# Peak FLOP rate


def table_peak(kind: str) -> tuple[str, dict] | None:
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in kind.lower():
            return name, peaks
    return None


def cpu_theoretical_tflops() -> dict:
    """cores x GHz x float32 FLOPs per cycle, from /proc/cpuinfo (an estimate)."""
    cores = len(os.sched_getaffinity(0))
    ghz, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz") and ghz is None:
                ghz = float(line.split(":")[1]) / 1000
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":")[1].split())
    except OSError:
        pass
    # Two FMA pipes per core assumed: AVX-512 16 lanes, AVX2 8 lanes, x2 (FMA) x2.
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512 FMA"
    elif {"avx2", "fma"} <= flags:
        per_cycle, isa = 32, "AVX2 FMA (2 x 256-bit FMA pipes)"
    elif "avx" in flags:
        per_cycle, isa = 16, "AVX"
    else:
        per_cycle, isa = 8, "SSE"
    ghz = ghz or 2.0
    return {
        "tflops": cores * ghz * per_cycle / 1000,
        "basis": f"{cores} cores x {ghz:.2f} GHz x {per_cycle} f32 FLOPs/cycle ({isa})",
    }


def measure_matmul_tflops(n: int, dtype, repeats: int = 10) -> float:
    """Achievable rate: one large square matmul, jitted, median of ``repeats``."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)

    mm = jax.jit(lambda a, b: a @ b)
    mm(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e12


# ----------------------------------------------------------------------------
# Data


def balanced_take(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` images spread over the classes, the same on every run.

    The shared parquet is sorted by class: its first 2,560 images are all
    airplanes, a one-class problem whose loss falls to 0.000 and checks nothing.
    This takes ``sweep.data.subset.balanced_subset`` (what ``--train-size``
    takes: each class an equal share, a seeded permutation within each class),
    then shuffles the picks with the same seed. Past the whole set, the whole
    set is repeated (each repeat in its own seeded order) before the remainder.
    """
    from sweep.data.subset import balanced_subset

    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts, left = [], n
    while left >= len(labels):
        parts.append(rng.permutation(len(labels)))
        left -= len(labels)
    if left:
        if left >= len(np.unique(labels)):
            parts.append(rng.permutation(balanced_subset(labels, left, seed=seed)))
        else:  # fewer images than classes: any seeded few
            parts.append(rng.permutation(len(labels))[:left])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def per_class(labels: np.ndarray, names=None) -> str:
    """"airplane 256, automobile 256, ..." for a source string."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    return ", ".join(f"{names[c] if names is not None and c < len(names) else c} {k}"
                     for c, k in zip(classes.tolist(), counts.tolist()))


def load_data(args) -> dict:
    """Training and test arrays (uint8 NHWC, int32 labels), real or synthetic.

    Real data: ``--steps x 128`` training and ``--eval-images`` test images,
    each a class-balanced seed-0 sample (``balanced_take``), never the first N
    rows (the shared parquet is sorted by class).
    """
    n_train, n_test = args.steps * BATCH, args.eval_images
    if args.data:
        from sweep import data as data_lib

        ds = data_lib.load(args.data)
        tx, ty = np.asarray(ds.train_images), np.asarray(ds.train_labels, np.int32)
        ex, ey = np.asarray(ds.test_images), np.asarray(ds.test_labels, np.int32)
        names = getattr(ds, "class_names", None)
        i = balanced_take(ty, n_train, seed=0)
        tx, ty = tx[i], ty[i]
        j = balanced_take(ey, n_test, seed=0)
        ex, ey = ex[j], ey[j]
        source = (f"{ds.source}: {n_train} training images, a class-balanced "
                  f"seed-0 sample (sweep.data.subset.balanced_subset, as "
                  f"--train-size takes; repeated past the whole set) in seed-0 "
                  f"order [{per_class(ty, names)}]; {n_test} test images sampled "
                  f"likewise [{per_class(ey, names)}]")
    else:
        rng = np.random.default_rng(0)
        tx = rng.integers(0, 256, (n_train, *IMAGE), dtype=np.uint8)
        ty = rng.integers(0, CLASSES, n_train).astype(np.int32)
        ex = rng.integers(0, 256, (n_test, *IMAGE), dtype=np.uint8)
        ey = rng.integers(0, CLASSES, n_test).astype(np.int32)
        source = "synthetic uint8 images, random labels"
    return {"train_x": tx, "train_y": ty, "test_x": ex, "test_y": ey, "source": source}


def host_batches(rng: np.random.Generator, n: int, replicas: int, steps: int):
    """Per-replica shuffles, like a shuffling DataLoader: (steps, R, B) indices."""
    perms = np.stack([rng.permutation(n) for _ in range(replicas)])
    return perms[:, : steps * BATCH].reshape(replicas, steps, BATCH).transpose(1, 0, 2)


# ----------------------------------------------------------------------------
# (a) the engine


def compiled_memory(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend / version has it
        return None
    if m is None:
        return None
    out = {k: int(getattr(m, k)) for k in (
        "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
        "temp_size_in_bytes", "generated_code_size_in_bytes")
        if hasattr(m, k)}
    peak = getattr(m, "peak_memory_in_bytes", None)
    if peak:
        out["peak_memory_in_bytes"] = int(peak)
    return out


def device_peak_bytes() -> int | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def block(tree):
    return jax.block_until_ready(tree)


def time_engine(eng, data: dict, replicas: int, repeats: int, log) -> dict:
    """Compile one epoch for R replicas, warm it up, time ``repeats`` epochs."""
    recipe = eng.recipe
    n = recipe.n_train
    keys = engine_lib.replica_keys(np.arange(replicas), np.zeros(replicas))
    labels = jax.device_put(np.broadcast_to(data["train_y"], (replicas, n)).astype(np.int32))
    state = block(eng.init(keys))
    t0 = time.perf_counter()
    compiled = eng.train_epoch.lower(
        state, eng.train_images, labels, keys, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled_memory(compiled)
    t0 = time.perf_counter()
    state, loss, correct = block(compiled(state, eng.train_images, labels, keys,
                                          jnp.int32(0)))
    first_s = time.perf_counter() - t0
    times = []
    for e in range(repeats):
        t0 = time.perf_counter()
        state, loss, correct = block(compiled(state, eng.train_images, labels, keys,
                                              jnp.int32(e + 1)))
        times.append(time.perf_counter() - t0)
    loss = np.asarray(loss) / n
    epoch_s = float(np.median(times))
    row = {
        "replicas": replicas,
        "steps": recipe.steps_per_epoch,
        "compile_s": round(compile_s, 3),
        "first_epoch_s": round(first_s, 4),
        "epoch_s": times,
        "epoch_s_median": epoch_s,
        "step_s": epoch_s / recipe.steps_per_epoch,
        "replica_images_per_s": replicas * recipe.steps_per_epoch * BATCH / epoch_s,
        "final_train_loss_mean": float(loss.mean()),
        "finite": bool(np.isfinite(loss).all()),
        "compiled_memory": memory,
        "device_peak_bytes": device_peak_bytes(),
    }
    log(f"(a) engine R={replicas:<3d} step {row['step_s'] * 1e3:8.2f} ms  "
        f"{row['replica_images_per_s']:9.0f} replica-img/s  compile {compile_s:.1f} s  "
        f"loss {row['final_train_loss_mean']:.3f}")
    return row


def time_engine_eval(eng, replicas: int, repeats: int, log) -> dict:
    """The engine's evaluation pass (test set, eval batch 1000) for R replicas."""
    keys = engine_lib.replica_keys(np.arange(replicas), np.zeros(replicas))
    params = block(eng.init(keys).params)
    t0 = time.perf_counter()
    compiled = eng.evaluate.lower(params, eng.test_images, eng.test_labels).compile()
    compile_s = time.perf_counter() - t0
    block(compiled(params, eng.test_images, eng.test_labels))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(compiled(params, eng.test_images, eng.test_labels))
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    n_images = int(eng.test_images.shape[0])
    row = {"replicas": replicas, "test_images": n_images, "compile_s": round(compile_s, 3),
           "eval_s": times, "eval_s_median": s,
           "replica_images_per_s": replicas * n_images / s}
    log(f"(a) engine eval R={replicas}: {row['replica_images_per_s']:.0f} "
        f"replica-img/s (forward only), compile {compile_s:.1f} s")
    return row


def init_compile_s(recipe, replicas: int) -> float:
    keys = engine_lib.replica_keys(np.arange(replicas), np.zeros(replicas))
    t0 = time.perf_counter()
    jax.jit(lambda k: engine_lib.init_state(recipe, k)).lower(keys.init).compile()
    return time.perf_counter() - t0


def xla_step_flops(recipe, train_images) -> float | None:
    """XLA's own FLOP count of one single-replica train step, per image."""
    keys = engine_lib.replica_keys(np.zeros(1), np.zeros(1))
    state = engine_lib.init_state(recipe, keys.init)
    labels = jnp.zeros((1, recipe.n_train), jnp.int32)
    idx = jnp.arange(BATCH)[None] % recipe.n_train
    mask = jnp.ones((BATCH,), jnp.float32)
    try:
        c = jax.jit(engine_lib.make_train_step(recipe)).lower(
            state, train_images, labels, keys.dropout, idx, mask).compile()
        cost = c.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        return float(cost["flops"]) / BATCH
    except Exception:
        return None


# ----------------------------------------------------------------------------
# (b), (c) plain Flax


def flax_model():
    """``(init(key) -> params, step(params, opt_state, x, y, key))``, flax.linen."""
    from bench import flax_cnn

    model = flax_cnn.simple_cnn(dropout=DROPOUT, classes=CLASSES)
    tx = optax.adam(LR)

    def init(key):
        params = model.init(key, jnp.zeros((1, *IMAGE)), train=False)["params"]
        return params, tx.init(params)

    def step(params, opt_state, x, y, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return init, step


def to_float(x_u8: np.ndarray) -> np.ndarray:
    """The notebook's ToTensor + Normalize(0.5, 0.5), on the host."""
    return x_u8.astype(np.float32) / 127.5 - 1.0


def time_flax_vmap(data: dict, replicas: int, steps: int, warmup: int, log) -> dict:
    init, step = flax_model()
    tx_, ty_ = data["train_x"], data["train_y"]
    params, opt_state = jax.vmap(init)(jax.random.split(jax.random.key(0), replicas))
    vstep = jax.jit(jax.vmap(step))
    x0 = jnp.zeros((replicas, BATCH, *IMAGE), jnp.float32)
    y0 = jnp.zeros((replicas, BATCH), jnp.int32)
    k0 = jax.random.split(jax.random.key(1), replicas)
    t0 = time.perf_counter()
    compiled = vstep.lower(params, opt_state, x0, y0, k0).compile()
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    base = jax.random.key(2)

    def run(n_steps: int):
        nonlocal params, opt_state
        idx = host_batches(rng, len(ty_), replicas, n_steps)
        loss = None
        for s in range(n_steps):
            xb = jax.device_put(to_float(tx_[idx[s]]))  # (R, B, 32, 32, 3)
            yb = jax.device_put(ty_[idx[s]])
            keys = jax.random.split(jax.random.fold_in(base, s), replicas)
            params, opt_state, loss = compiled(params, opt_state, xb, yb, keys)
        return block(loss)

    run(warmup)
    t0 = time.perf_counter()
    loss = run(steps)
    seconds = time.perf_counter() - t0
    row = {"replicas": replicas, "steps": steps, "compile_s": round(compile_s, 3),
           "seconds": seconds, "step_s": seconds / steps,
           "replica_images_per_s": replicas * steps * BATCH / seconds,
           "final_loss_mean": float(np.mean(loss))}
    log(f"(b) flax vmap R={replicas}: step {row['step_s'] * 1e3:.1f} ms  "
        f"{row['replica_images_per_s']:.0f} replica-img/s  compile {compile_s:.1f} s")
    return row


def time_flax_seq(data: dict, replicas: int, steps: int, warmup: int, log) -> dict:
    init, step = flax_model()
    tx_, ty_ = data["train_x"], data["train_y"]
    jstep = jax.jit(step)
    params, opt_state = init(jax.random.key(0))
    t0 = time.perf_counter()
    compiled = jstep.lower(params, opt_state, jnp.zeros((BATCH, *IMAGE)),
                           jnp.zeros((BATCH,), jnp.int32), jax.random.key(1)).compile()
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)

    def train_one(r: int, n_steps: int):
        params, opt_state = init(jax.random.key(r))
        perm = rng.permutation(len(ty_))
        base = jax.random.key(100 + r)
        loss = None
        for s in range(n_steps):
            i = perm[s * BATCH:(s + 1) * BATCH]
            xb, yb = jax.device_put(to_float(tx_[i])), jax.device_put(ty_[i])
            params, opt_state, loss = compiled(params, opt_state, xb, yb,
                                               jax.random.fold_in(base, s))
        return block(loss)

    train_one(0, warmup)
    t0 = time.perf_counter()
    losses = [float(train_one(r, steps)) for r in range(replicas)]
    seconds = time.perf_counter() - t0
    row = {"replicas": replicas, "steps": steps, "compile_s": round(compile_s, 3),
           "seconds": seconds, "step_s": seconds / (replicas * steps),
           "replica_images_per_s": replicas * steps * BATCH / seconds,
           "final_loss_mean": float(np.mean(losses))}
    log(f"(c) flax one by one x{replicas}: step {row['step_s'] * 1e3:.1f} ms  "
        f"{row['replica_images_per_s']:.0f} img/s  compile {compile_s:.1f} s")
    return row


# ----------------------------------------------------------------------------
# (d) PyTorch


def time_torch(data: dict, replicas: int, steps: int, warmup: int, log) -> dict:
    try:
        import torch
        from torch import nn
    except ImportError as e:
        note = (f"torch not importable ({e}); pip install -e '.[bench]' "
                "(CPU-only: torch==2.13.0 or the CPU index first)")
        log(f"(d) skipped: {note}")
        return {"skipped": note}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # The notebook's data: uint8 NCHW tensors in memory, scaled per batch.
    xt = torch.from_numpy(np.ascontiguousarray(data["train_x"])).permute(0, 3, 1, 2)
    xt = xt.contiguous()
    yt = torch.from_numpy(data["train_y"].astype(np.int64))
    n = len(yt)

    def train_one(r: int, n_steps: int) -> float:
        torch.manual_seed(r)
        net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(DROPOUT),
            nn.Linear(512, CLASSES),
        ).to(device)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        criterion = nn.CrossEntropyLoss()
        perm = torch.randperm(n)
        loss = None
        for s in range(n_steps):
            i = perm[s * BATCH:(s + 1) * BATCH]
            xb = (xt[i].float() / 127.5 - 1.0).to(device)
            yb = yt[i].to(device)
            opt.zero_grad()
            loss = criterion(net(xb), yb)
            loss.backward()
            opt.step()
        sync()
        return float(loss.item()) if loss is not None else float("nan")

    train_one(0, warmup)
    t0 = time.perf_counter()
    losses = [train_one(r, steps) for r in range(replicas)]
    seconds = time.perf_counter() - t0
    row = {"replicas": replicas, "steps": steps, "device": str(device),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "compile_s": 0.0, "seconds": seconds,
           "step_s": seconds / (replicas * steps),
           "replica_images_per_s": replicas * steps * BATCH / seconds,
           "final_loss_mean": float(np.mean(losses))}
    log(f"(d) torch one by one x{replicas} on {device} ({row['threads']} threads): "
        f"step {row['step_s'] * 1e3:.1f} ms  {row['replica_images_per_s']:.0f} img/s")
    return row


# ----------------------------------------------------------------------------
# The sweep's chunk size and the full-sweep estimate


def sweep_chunk_size(replicas: int = SWEEP_REPLICAS) -> tuple[int, str]:
    """The replicas per step the sweep would pick here for the default grid."""
    try:
        from sweep.engine.memory import auto_replicas_per_step
        from sweep.experiment.running.train_local import chunks

        size = auto_replicas_per_step(BATCH, EVAL_BATCH)
        return len(chunks(list(range(replicas)), size)[0]), "sweep.engine.memory.auto_replicas_per_step"
    except Exception as e:  # the sweep's API moved: say so, guess
        return min(replicas, 16), f"guess (sweep.engine.memory unavailable: {e})"


def estimate_full_sweep(train_row: dict, eval_row: dict, init_s: float, chunk: int) -> dict:
    n_chunks = math.ceil(SWEEP_REPLICAS / chunk)
    steps = math.ceil(CIFAR_TRAIN / BATCH)  # 391; the short last batch is padded
    train_epoch_s = chunk * steps * BATCH / train_row["replica_images_per_s"]
    test_padded = math.ceil(CIFAR_TEST / EVAL_BATCH) * EVAL_BATCH
    eval_epoch_s = chunk * test_padded / eval_row["replica_images_per_s"]
    train_s = n_chunks * SWEEP_EPOCHS * train_epoch_s
    eval_s = n_chunks * SWEEP_EPOCHS * eval_epoch_s
    compile_s = train_row["compile_s"] + eval_row["compile_s"] + init_s
    return {
        "replicas": SWEEP_REPLICAS, "epochs": SWEEP_EPOCHS, "chunk": chunk,
        "chunks": n_chunks, "padded_replicas": n_chunks * chunk,
        "train_images": CIFAR_TRAIN, "test_images": CIFAR_TEST,
        "train_s": train_s, "eval_s": eval_s, "compile_s": compile_s,
        "total_without_compile_s": train_s + eval_s,
        "total_with_compile_s": train_s + eval_s + compile_s,
        "basis": (f"measured engine train rate at R={train_row['replicas']} "
                  f"and eval rate at R={eval_row['replicas']}; compile = train epoch "
                  "+ evaluate + init, once (every chunk reuses it); the 391-step "
                  "epoch compiles like the shorter timed one (same scan body)"),
    }


# ----------------------------------------------------------------------------
# Markdown


def fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return ""


def markdown(res: dict) -> str:
    env, cmp_ = res["env"], res["comparison"]
    lines = [
        f"### Training throughput: {env['device_kind']} ({env['backend']}), "
        f"{env['date'][:10]}",
        "",
        f"- command: `{env['command']}`",
        f"- commit `{env['commit']}`; " + ", ".join(
            f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- host: {env['cpu_model']}, {env['cpus_usable']} usable cores; data: "
        f"{res['settings']['data']}; {res['settings']['steps']} steps x batch {BATCH} "
        f"per replica per timed run; engine compute {res['settings']['compute_dtype']}",
        f"- CPU taken by other processes during the run: "
        f"{env['other_cpu_share_during_run']} of the machine"
        + (" (**measured while another job used the CPU**: "
           + "; ".join(env["other_jobs_at_start"]) + ")"
           if env["contended"] else " (the machine was otherwise idle)"),
        "",
        f"Comparison at R = {cmp_['replicas']} (replica-images/s, steady state; "
        "ratio = engine / path):",
        "",
        "| path | how | replica-img/s | engine is x faster | compile s |",
        "|---|---|---:|---:|---:|",
    ]
    for key, how in (
        ("a_engine", f"engine, {cmp_['replicas']} replicas, scan epoch, data on device"),
        ("b_flax_vmap", f"flax.linen + jax.vmap, {cmp_['replicas']} replicas, host batches"),
        ("c_flax_seq", "flax.linen, jitted step, one replica after another"),
        ("d_torch_seq", "PyTorch notebook loop, one model after another"),
    ):
        row = cmp_["paths"].get(key)
        if row is None or "skipped" in row:
            note = row["skipped"] if row else "not run"
            lines.append(f"| ({key[0]}) | {how} | skipped: {note} | | |")
            continue
        ratio = cmp_["engine_over"].get(key)
        extra = f" ({row['device']}, {row['threads']} threads)" if key == "d_torch_seq" else ""
        lines.append(
            f"| ({key[0]}) | {how}{extra} | {row['replica_images_per_s']:,.0f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {row['compile_s']:.1f} |")
    one = res["engine_one_replica_vs_torch"]
    if one:
        lines += ["", f"One replica: engine {one['engine_images_per_s']:,.0f} img/s vs "
                  f"PyTorch {one['torch_images_per_s']:,.0f} img/s "
                  f"(engine / torch = {one['ratio']:.2f})."]
    sc = res["scaling"]
    lines += [
        "",
        "Engine R-scaling (cost ratio = step(R) / (R x step(1)); memory per replica "
        "from the compiled epoch's memory_analysis, arguments + temporaries - "
        "aliased; device peak where memory_stats exists):",
        "",
        "| R | step ms | replica-img/s | cost ratio | compile s | mem/replica (compiled) "
        "| device peak/replica | share of peak FLOP/s | train loss, last epoch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sc["rows"]:
        peak = row.get("device_peak_bytes")
        lines.append(
            f"| {row['replicas']} | {row['step_s'] * 1e3:.1f} | "
            f"{row['replica_images_per_s']:,.0f} | {row['cost_ratio']:.2f} | "
            f"{row['compile_s']:.1f} | {fmt_bytes(row.get('memory_per_replica_bytes'))} | "
            f"{'n/a on CPU' if peak is None else fmt_bytes(peak / row['replicas'])} | "
            f"{100 * row['peak_share']:.1f}% | {row['final_train_loss_mean']:.3f} |")
    fl = res["flops"]
    lines += [
        "",
        f"- Throughput stops growing (>= 95% of the max {sc['max_replica_images_per_s']:,.0f}) "
        f"at R = {sc['saturation_replicas']}.",
        f"- FLOPs per training image: 3 x 2 x {FORWARD_MACS_TOTAL:,} forward MACs = "
        f"{TRAIN_FLOPS_PER_IMAGE:,}"
        + (f" (XLA's cost analysis of one engine step: {fl['xla_flops_per_image']:,.0f}"
           " per image)" if fl.get("xla_flops_per_image") else "") + ".",
        f"- Peak used: {fl['peak_tflops']:.3g} TFLOP/s ({fl['peak_basis']})."
        + (f" Measured large matmul: {fl['matmul_f32_tflops']:.3g} TFLOP/s f32"
           + (f", {fl['matmul_bf16_tflops']:.3g} bf16" if fl.get("matmul_bf16_tflops") else "")
           + (f"; the engine's best R reaches {100 * fl['best_share_of_matmul']:.0f}% of"
              " that f32 matmul rate" if fl.get("best_share_of_matmul") else "") + "."
           if fl.get("matmul_f32_tflops") else ""),
    ]
    est = res["full_sweep_estimate"]
    lines += [
        f"- Full default sweep here (48 replicas x 5 epochs x 50,000 images + 10,000 test "
        f"images per epoch, chunks of {est['chunk']} ({res['settings']['chunk_source']}) "
        f"-> {est['chunks']} chunk(s)): train {fmt_s(est['train_s'])} + eval "
        f"{fmt_s(est['eval_s'])} = **{fmt_s(est['total_without_compile_s'])} without "
        f"compile, {fmt_s(est['total_with_compile_s'])} with** "
        f"({est['compile_s']:.1f} s compile).",
    ]
    return "\n".join(lines) + "\n"


def markdown_full(res: dict) -> str:
    env, fs = res["env"], res["full_sweep"]
    lines = [
        f"### Full default sweep: {env['device_kind']} ({env['backend']}), "
        f"{env['date'][:10]}",
        "",
        f"- command: `{env['command']}`",
        f"- commit `{env['commit']}`; " + ", ".join(
            f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- data {fs['data']}; {fs['replicas']} replicas, {fs['epochs']} epochs, "
        f"{fs['n_train']:,} training images, {fs['n_test']:,} test images; "
        f"chunks of {fs['replicas_per_step']}; kernel "
        f"{(fs.get('config') or {}).get('kernel', 'auto')}, compute "
        f"{(fs.get('config') or {}).get('compute_dtype', 'float32')}",
        "",
        "| run | training (chunks, incl. eval) s | of which compile (est.) | wall s "
        "(load, train, stats) |",
        "|---|---:|---:|---:|",
    ]
    for i, r in enumerate(fs["runs"]):
        lines.append(f"| {i + 1} ({'cold' if i == 0 else 'compile cache warm'}) | "
                     f"{r['training_s']:.2f} | {r.get('compile_note', '')} | "
                     f"{r['wall_s']:.2f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# Main


def environment(argv: list[str]) -> dict:
    dev = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", "bench/train_bench.py", *argv]),
        "commit": (env_lib.git_commit(mark_dirty=True)
                   or (os.environ["SWEEP_GIT_COMMIT"] + " (from SWEEP_GIT_COMMIT)"
                       if os.environ.get("SWEEP_GIT_COMMIT") else None)),
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "cpu_model": env_lib.cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
        "other_jobs_at_start": other_jobs(),
        "versions": env_lib.versions(BENCH_PACKAGES),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a few steps, R in 1,2,4: checks every path runs (CPU)")
    p.add_argument("--data", default=None,
                   help="sweep.data.load spec ('sample', a CIFAR-10 folder); "
                        "default: synthetic uint8 images (timing only)")
    p.add_argument("--replicas", default=None,
                   help="engine R list (default CPU 1,2,4,8,16; GPU 1,2,4,8,16,32,48)")
    p.add_argument("--compare-replicas", type=int, default=None,
                   help="R for the (a) vs (b) comparison (default CPU 8, GPU 48)")
    p.add_argument("--sequential", type=int, default=None,
                   help="replicas trained one after another in (c) and (d) (default 2)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed optimizer steps per replica (default CPU 20, GPU 100)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed engine epochs per R, median reported (default 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps before (b), (c), (d) (default 2)")
    p.add_argument("--eval-images", type=int, default=None,
                   help="test images for the eval timing (default CPU 2000, GPU 10000)")
    p.add_argument("--chunk", type=int, default=None,
                   help="chunk size for the full-sweep estimate (default: the sweep's)")
    p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="engine compute dtype (Flax and torch stay float32)")
    p.add_argument("--kernel", default="auto",
                   help="engine conv formulation (kernels.conv.IMPLS or auto), for (a) "
                        "and --full-sweep")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak for the FLOP share (default: table / CPU estimate)")
    p.add_argument("--skip", default="",
                   help="paths to leave out, e.g. b,d (a always runs)")
    p.add_argument("--json", default=str(Path(__file__).with_name("train.json")))
    p.add_argument("--full-sweep", action="store_true",
                   help="instead: run the default sweep end to end on --data")
    p.add_argument("--force", action="store_true", help="--full-sweep on CPU anyway")
    p.add_argument("--sweep-runs", type=int, default=2,
                   help="--full-sweep: runs (the 2nd finds a warm compile cache)")
    p.add_argument("--seeds", type=int, default=None, help="--full-sweep smoke tests only")
    p.add_argument("--epochs", type=int, default=None, help="--full-sweep smoke tests only")
    p.add_argument("--train-size", type=int, default=None,
                   help="--full-sweep smoke tests only")
    p.add_argument("--counts", default=None,
                   help="--full-sweep smoke tests only: poison counts, e.g. 1")
    p.add_argument("--keep", default=None,
                   help="--full-sweep: copy the last run's results folder here "
                        "(metrics, manifest; `python -m sweep report` it for the "
                        "sweep's own answer)")
    args = p.parse_args(argv)

    gpu = jax.default_backend() != "cpu"
    if args.quick:
        defaults = dict(replicas="1,2,4", compare_replicas=2, sequential=1, steps=4,
                        repeats=2, warmup=1, eval_images=1000)
    elif gpu:
        defaults = dict(replicas="1,2,4,8,16,32,48", compare_replicas=48, sequential=2,
                        steps=100, repeats=3, warmup=2, eval_images=CIFAR_TEST)
    else:
        defaults = dict(replicas="1,2,4,8,16", compare_replicas=8, sequential=2,
                        steps=20, repeats=3, warmup=2, eval_images=2000)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.replica_list = sorted({int(r) for r in args.replicas.split(",") if r})
    return args


def write_outputs(res: dict, md: str, json_path: Path, log) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=1, default=float) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(md)
    print(md)
    log(f"wrote {json_path} and {md_path}")


def full_sweep(args, env: dict, log) -> int:
    from sweep.experiment.config import Config
    from sweep.experiment.running import run_sweep

    if not args.data and not os.environ.get("SWEEP_DATA"):
        log("--full-sweep needs real data: --data PATH (a CIFAR-10 folder)")
        return 2
    overrides = {k: v for k, v in (("seeds", args.seeds), ("epochs", args.epochs),
                                   ("train_size", args.train_size)) if v is not None}
    if args.kernel != "auto":
        overrides["kernel"] = args.kernel
    if args.compute_dtype != "float32":
        overrides["compute_dtype"] = args.compute_dtype
    if args.counts:
        overrides["counts"] = tuple(
            c.strip() for c in args.counts.split(",") if c.strip())
    smoke = any(v is not None for v in (args.seeds, args.epochs, args.train_size,
                                        args.counts))
    if env["backend"] == "cpu" and not args.force and not smoke:
        log("--full-sweep on CPU: 48 replicas x 5 epochs over 50,000 images takes "
            "hours on a 2-core machine (see the estimate a plain run of this bench "
            "prints). Refusing; pass --force to run it anyway.")
        return 2
    # A persistent compilation cache, fresh for this bench: the first run fills
    # it, later runs show the sweep with (most of) its compile time served.
    cache = tempfile.mkdtemp(prefix="train-bench-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    cfg = Config(data=args.data, **overrides)
    runs = []
    with tempfile.TemporaryDirectory(prefix="train-bench-sweep-") as tmp:
        for i in range(args.sweep_runs):
            out = Path(tmp) / f"run{i}"
            t0 = time.perf_counter()
            run_sweep.run(cfg.replace(out=str(out)), log=lambda s: log(f"  sweep: {s}"))
            wall = time.perf_counter() - t0
            manifest = json.loads((out / "manifest.json").read_text())
            timings = manifest.get("timings", {})
            chunks = timings.get("chunks", [])
            training = sum(c["seconds"] for c in chunks)
            runs.append({"wall_s": wall, "training_s": training, "chunks": chunks,
                         "data_to_device_s": timings.get("data_to_device_s"),
                         "manifest_total_s": timings.get("total_s")})
            log(f"full sweep run {i + 1}: training {training:.2f} s "
                f"({len(chunks)} chunk(s)), wall {wall:.2f} s")
            if args.keep and i == args.sweep_runs - 1:
                import shutil

                shutil.copytree(out, args.keep, dirs_exist_ok=True)
                log(f"kept run {i + 1}'s results in {args.keep}")
            if i == 0:
                fs_info = {
                    "data": manifest.get("data", {}).get("source", args.data),
                    "replicas": manifest.get("n_replicas"),
                    "epochs": cfg.epochs,
                    "n_train": manifest.get("data", {}).get("n_train"),
                    "n_test": manifest.get("data", {}).get("n_test"),
                    "replicas_per_step": manifest.get("replicas_per_step"),
                    "config": manifest.get("config"),
                }
    if len(runs) > 1:
        for r in runs:
            r["compile_note"] = ""
        runs[0]["compile_note"] = (
            f"~{max(0.0, runs[0]['training_s'] - runs[1]['training_s']):.1f} s "
            "(cold - warm)")
        runs[1]["compile_note"] = "cache hits; tracing remains"
    fs = {**fs_info, "runs": runs, "compile_cache": "persistent, fresh per bench run",
          "target": "< 10 s training on H100/H200 for the default sweep"}
    res = {"env": env, "full_sweep": fs}
    json_path = Path(args.json)
    write_outputs(res, markdown_full(res), json_path, log)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cpu_share = CpuShare()
    env = environment(argv)
    log(f"device {env['device_kind']} ({env['backend']}), jax {env['versions']['jax']}, "
        f"commit {env['commit']}")
    if env["other_jobs_at_start"]:
        log("other busy processes: " + " | ".join(env["other_jobs_at_start"]))
    if args.full_sweep:
        return full_sweep(args, env, log)

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    data = load_data(args)
    recipe = engine_lib.Recipe(
        n_train=len(data["train_y"]), n_classes=CLASSES, batch_size=BATCH, lr=LR,
        dropout=DROPOUT, compute_dtype=args.compute_dtype, kernel=args.kernel,
        eval_batch_size=min(EVAL_BATCH, len(data["test_y"])))
    eng = engine_lib.Engine(recipe, data["train_x"], data["test_x"], data["test_y"])
    chunk, chunk_source = (args.chunk, "--chunk") if args.chunk else sweep_chunk_size()
    gpu = env["backend"] != "cpu"

    # Peak FLOP rates: the table (GPU) or the CPU estimate, and a measured matmul.
    log("timing a large matmul for the achievable rate ...")
    n_mm = 8192 if gpu else 2048
    flops = {"train_flops_per_image": TRAIN_FLOPS_PER_IMAGE,
             "forward_macs": FORWARD_MACS, "forward_macs_total": FORWARD_MACS_TOTAL,
             "matmul_n": n_mm,
             "matmul_f32_tflops": measure_matmul_tflops(n_mm, jnp.float32),
             "matmul_bf16_tflops": (measure_matmul_tflops(n_mm, jnp.bfloat16)
                                    if gpu else None),
             "xla_flops_per_image": xla_step_flops(recipe, eng.train_images)}
    if args.peak_tflops:
        flops["peak_tflops"], flops["peak_basis"] = args.peak_tflops, "--peak-tflops"
    elif gpu and table_peak(env["device_kind"]):
        name, peaks = table_peak(env["device_kind"])
        which = "bf16" if args.compute_dtype == "bfloat16" else "tf32"
        flops["peak_tflops"] = peaks[which]
        flops["peak_basis"] = (f"{name} dense {which} from the data sheet; f32 at JAX's "
                               f"default precision runs on TF32 tensor cores. All: {peaks}")
        flops["peak_table"] = peaks
    elif gpu:
        flops["peak_tflops"] = flops["matmul_bf16_tflops" if args.compute_dtype ==
                                     "bfloat16" else "matmul_f32_tflops"]
        flops["peak_basis"] = "unknown device: the measured matmul rate"
    else:
        est = cpu_theoretical_tflops()
        flops["peak_tflops"] = est["tflops"]
        flops["peak_basis"] = "CPU estimate, " + est["basis"]

    # (a) R-scaling; the comparison R and the sweep's chunk size are timed too.
    r_list = sorted(set(args.replica_list) | {args.compare_replicas, chunk} | {1})
    rows = []
    for r in r_list:
        rows.append(time_engine(eng, data, r, args.repeats, log))
    base_step = rows[0]["step_s"]
    for row in rows:
        row["cost_ratio"] = row["step_s"] / (row["replicas"] * base_step)
        row["achieved_tflops"] = row["replica_images_per_s"] * TRAIN_FLOPS_PER_IMAGE / 1e12
        row["peak_share"] = row["achieved_tflops"] / flops["peak_tflops"]
        mem = row["compiled_memory"]
        if mem:
            total = (mem.get("argument_size_in_bytes", 0) + mem.get("temp_size_in_bytes", 0)
                     + mem.get("output_size_in_bytes", 0) - mem.get("alias_size_in_bytes", 0))
            row["memory_per_replica_bytes"] = total / row["replicas"]
    top = max(row["replica_images_per_s"] for row in rows)
    scaling = {
        "rows": rows,
        "max_replica_images_per_s": top,
        "saturation_replicas": min(row["replicas"] for row in rows
                                   if row["replica_images_per_s"] >= 0.95 * top),
        "max_cost_ratio_up_to_16": max(row["cost_ratio"] for row in rows
                                       if row["replicas"] <= 16),
    }
    flops["best_share_of_peak"] = max(row["peak_share"] for row in rows)
    flops["best_share_of_matmul"] = (top * TRAIN_FLOPS_PER_IMAGE / 1e12
                                     / flops["matmul_f32_tflops"])

    by_r = {row["replicas"]: row for row in rows}
    eval_row = time_engine_eval(eng, chunk, max(1, args.repeats - 1), log)
    estimate = estimate_full_sweep(by_r[chunk], eval_row, init_compile_s(recipe, chunk),
                                   chunk)
    log(f"full default sweep estimate at chunk {chunk}: "
        f"{fmt_s(estimate['total_without_compile_s'])} without compile, "
        f"{fmt_s(estimate['total_with_compile_s'])} with")

    paths = {"a_engine": by_r[args.compare_replicas]}
    if "c" not in skip:
        paths["c_flax_seq"] = time_flax_seq(data, args.sequential, args.steps,
                                            args.warmup, log)
    if "b" not in skip:
        paths["b_flax_vmap"] = time_flax_vmap(data, args.compare_replicas, args.steps,
                                              args.warmup, log)
    if "d" not in skip:
        paths["d_torch_seq"] = time_torch(data, args.sequential, args.steps,
                                          args.warmup, log)
    a_rate = paths["a_engine"]["replica_images_per_s"]
    engine_over = {k: a_rate / v["replica_images_per_s"] for k, v in paths.items()
                   if "replica_images_per_s" in v}
    torch_row = paths.get("d_torch_seq", {})
    one = None
    if "replica_images_per_s" in torch_row:
        one = {"engine_images_per_s": by_r[1]["replica_images_per_s"],
               "torch_images_per_s": torch_row["replica_images_per_s"],
               "ratio": by_r[1]["replica_images_per_s"] / torch_row["replica_images_per_s"]}

    env["other_cpu_share_during_run"] = cpu_share.other_share()
    env["load_average_at_end"] = os.getloadavg()
    env["contended"] = bool(env["other_jobs_at_start"]) or (
        (env["other_cpu_share_during_run"] or 0) > 0.1)
    res = {
        "env": env,
        "settings": {
            "data": data["source"], "batch": BATCH, "steps": args.steps,
            "repeats": args.repeats, "warmup": args.warmup, "replicas": r_list,
            "compare_replicas": args.compare_replicas, "sequential": args.sequential,
            "eval_images": len(data["test_y"]), "compute_dtype": args.compute_dtype,
            "chunk": chunk, "chunk_source": chunk_source, "quick": args.quick,
            "kernel": args.kernel,
        },
        "comparison": {"replicas": args.compare_replicas, "paths": paths,
                       "engine_over": engine_over},
        "engine_one_replica_vs_torch": one,
        "scaling": scaling,
        "engine_eval": eval_row,
        "flops": flops,
        "full_sweep_estimate": estimate,
        "targets": {
            "gpu_default_sweep_training_s": "< 10 (H100/H200)",
            "engine_over_flax_vmap": ">= 3", "engine_over_torch_seq": ">= 30 (GPU)",
            "cpu_cost_ratio_up_to_16": "<= 1.1",
            "cpu_stretch_one_replica_vs_torch": ">= 0.5",
        },
    }
    write_outputs(res, markdown(res), Path(args.json), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
