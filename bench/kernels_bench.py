"""Time a full SimpleCNN train step for each replica-batched kernel formulation.

    PYTHONPATH=. python bench/kernels_bench.py [--replicas 1,4,8,16]
        [--out bench/kernels.json]

One step is forward + backward + Adam on parameters with a leading replica axis
R; the loss is the sum over replicas of each replica's mean cross-entropy, so
each replica gets its own gradient. For each R every formulation is compiled
first (compile time reported apart), then the formulations take turns, one step
each, for ``--repeats`` rounds, so that load from other processes falls on all
of them alike; a plain single-model step is timed in blocks before and after.
Per (formulation, R) it reports the median step time with its spread,
replica-images/s, and ``ratio`` = step time / (R x the single-model step), the
cost of a batched replica relative to training models one by one (target on a
2-core CPU: <= 1.1). The header of the JSON written beside sums up the result.

Runs unchanged on GPU and TPU; its numbers there are what should fill that row of
``kernels.select.TABLE``. XLA:CPU sizes its thread pool to the visible cores
(recorded in the header); pin fewer with ``taskset`` to measure fewer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import flax_cnn
from bench import kernel_baselines as baselines
from kernels import conv, pool
from kernels.select import choose
from sweep import model, provenance

IMAGE = (32, 32, 3)
CLASSES = 10
DROPOUT = 0.5
# conv1..conv3 (in, out) channels, for the header's "auto" column.
CONVS = tuple((s[2], s[3]) for name, _, s in model.LAYOUT if name.startswith("conv"))


def init_params(key: jax.Array, replicas: int) -> model.Params:
    """SimpleCNN parameters as the engine draws them, one init per replica."""
    return jax.vmap(model.init)(jax.random.split(key, replicas))


def bench_layers(impls: tuple[str, str, str], dtype) -> model.Layers:
    """`model.batched_layers` with each layer's formulation chosen, baselines too."""
    conv_impl, pool_impl, dense_impl = impls
    return model.batched_layers("auto", jnp.dtype(dtype).name)._replace(
        conv=lambda x, w, b: baselines.conv3x3(
            x, w, b, impl=conv_impl, compute_dtype=dtype
        ),
        pool=lambda x: baselines.maxpool2(x, impl=pool_impl),
        dense=lambda x, w, b: baselines.dense(
            x, w, b, impl=dense_impl, compute_dtype=dtype
        ),
    )


def forward(params, x, dropout_key, *, impls: tuple[str, str, str], dtype):
    """Replica-batched SimpleCNN logits: x (R, B, 32, 32, 3) -> (R, B, 10)."""
    keys = jax.random.split(dropout_key, x.shape[0])
    return model.apply(params, x, layers=bench_layers(impls, dtype),
                       dropout=DROPOUT, dropout_key=keys)


# The plain single model, with the reshape pool the batched model uses: the
# baseline should differ from a replica only in the replica axis.
SINGLE_LAYERS = model.single_layers()._replace(
    pool=lambda x: pool.maxpool2(x, impl="reshape")
)


def forward_single(params, x, dropout_key):
    """One plain model, no replica axis: x (B, 32, 32, 3) -> (B, 10)."""
    return model.apply(params, x, layers=SINGLE_LAYERS, dropout=DROPOUT,
                       dropout_key=dropout_key)


def make_step(logits_fn: Callable, tx: optax.GradientTransformation) -> Callable:
    """Jitted train step for ``logits_fn(params, x, key) -> (..., B, 10)``."""

    def loss_fn(params, x, y, key):
        logits = logits_fn(params, x, key)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return ce.mean(axis=-1).sum()  # sum over replicas of per-replica means

    def step(params, opt_state, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def flax_step(tx: optax.GradientTransformation, batch: int):
    """A plain ``flax.linen`` SimpleCNN step and its parameters, for context."""
    net = flax_cnn.simple_cnn(dropout=DROPOUT, classes=CLASSES)
    x0 = jnp.zeros((batch, *IMAGE))
    params = net.init(jax.random.key(0), x0, train=False)["params"]

    def logits_fn(p, x, key):
        return net.apply({"params": p}, x, train=True, rngs={"dropout": key})

    return make_step(logits_fn, tx), params


# The PyTorch notebook's loop (model, Adam, cross-entropy, one batch reused so
# that only the step is timed), run by another interpreter: torch is not a
# dependency of this project.
TORCH_LOOP = """
import json, statistics, sys, time
import torch
from torch import nn

batch, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(0.5),
    nn.Linear(512, 10),
)
net.train()
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()
x = torch.rand(batch, 3, 32, 32) * 2 - 1
y = torch.randint(0, 10, (batch,))

def step():
    opt.zero_grad()
    loss = criterion(net(x), y)
    loss.backward()
    opt.step()
    return loss.item()

for _ in range(3):
    step()
times = []
for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({
    "torch": torch.__version__, "threads": torch.get_num_threads(),
    "step_s_median": statistics.median(times), "step_s_min": min(times),
    "images_per_s": batch / statistics.median(times), "repeats": repeats,
}))
"""


def time_torch(python: str, batch: int, repeats: int) -> dict:
    """The PyTorch loop's step time, run by ``python`` (which must have torch)."""
    done = subprocess.run(
        [python, "-c", TORCH_LOOP, str(batch), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


class Case:
    """One thing to time: a compiled step and the state it threads through."""

    def __init__(self, name: str, replicas: int, step, params, tx, x, y):
        self.name, self.replicas, self.x, self.y = name, replicas, x, y
        self.params, self.opt_state = params, tx.init(params)
        start = time.perf_counter()
        key = jax.random.key(0)
        self.step = step.lower(self.params, self.opt_state, x, y, key).compile()
        self.compile_s = time.perf_counter() - start
        self.times: list[float] = []  # wall seconds per timed step
        self.impls: tuple[str, str, str] | None = None  # (conv, pool, dense)
        self.dropped = False

    def run(self) -> float:
        key = jax.random.fold_in(jax.random.key(1), len(self.times))
        start = time.perf_counter()
        # Everything the step needs is already on the device: a host round trip
        # inside the timed region would be a bug, so make it one.
        with jax.transfer_guard("disallow"):
            self.params, self.opt_state, loss = self.step(
                self.params, self.opt_state, self.x, self.y, key
            )
            loss.block_until_ready()
        return time.perf_counter() - start


def time_cases(cases: list[Case], *, repeats: int, warmup: int, slow: float) -> None:
    """Time ``cases[1:]`` round-robin, between two blocks of ``cases[0]``.

    Taking turns, in a rotating order, shares background load fairly among the
    cases. The baseline ``cases[0]`` (the single model) is timed in a block
    before and after instead: its short step, run right after a large case,
    would also pay for the memory that case just released. A case whose first
    step takes more than ``slow`` x R baseline steps is timed once and dropped:
    it has lost, and would eat the run's time.
    """
    single, rest = cases[0], cases[1:]
    for case in cases:
        for _ in range(warmup):
            case.run()
    for _ in range(repeats):
        single.times.append(single.run())
    base = min(single.times)
    for case in rest:
        t = case.run()
        case.dropped = t > slow * case.replicas * base
        if case.dropped:
            case.times.append(t)
    live = [case for case in rest if not case.dropped]
    for k in range(repeats if live else 0):
        # Rotate the order: a case run right after a memory-hungry one is slowed
        # by the pages that one released, so no case should always follow it.
        for case in live[k % len(live) :] + live[: k % len(live)]:
            case.times.append(case.run())
    single.run()
    for _ in range(repeats):
        single.times.append(single.run())


def summary(case: Case, batch: int, single: np.ndarray) -> dict:
    t = np.asarray(case.times)
    med = float(np.median(t))
    q1, q3 = np.percentile(t, [25, 75])
    return {
        "name": case.name,
        "replicas": case.replicas,
        "compile_s": round(case.compile_s, 3),
        "step_s_median": med,
        "step_s_iqr": [float(q1), float(q3)],
        "step_s_min": float(t.min()),
        "step_s_max": float(t.max()),
        "repeats": len(t),
        "dropped_as_slow": case.dropped,
        "replica_images_per_s": case.replicas * batch / med,
        "ratio": med / (case.replicas * float(np.median(single))),
        "ratio_of_minima": float(t.min()) / (case.replicas * float(single.min())),
    }


def best(rows: list[dict], r: int) -> dict:
    """The fastest formulation timed in R's round, for the header."""
    mine = [row for row in rows if row["round_replicas"] == r and row["impls"]]
    top = min(mine, key=lambda row: row["step_s_median"])
    keys = ("name", "step_s_median", "replica_images_per_s", "ratio")
    return {k: top[k] for k in keys}


def variants(args) -> list[tuple[str, str, str]]:
    """(conv, pool, dense) formulations to compare, each varied alone."""
    out = [(c, "auto", "auto") for c in args.convs.split(",") if c]
    out += [("auto", p, "auto") for p in args.pools.split(",") if p]
    out += [("auto", "auto", d) for d in args.denses.split(",") if d]
    return list(dict.fromkeys(out))  # unique, in order


def report(row: dict) -> None:
    lo, hi = row["step_s_iqr"]
    print(
        f"[round R={row['round_replicas']:<3d}] R={row['replicas']:<3d} "
        f"{row['name']:<34s} "
        f"step {row['step_s_median'] * 1e3:8.1f} ms "
        f"(IQR {lo * 1e3:.1f}-{hi * 1e3:.1f}, n={row['repeats']}) "
        f"{row['replica_images_per_s']:7.0f} img/s "
        f"ratio {row['ratio']:5.2f} (of minima {row['ratio_of_minima']:.2f}) "
        f"compile {row['compile_s']:.1f} s"
        + (" DROPPED" if row["dropped_as_slow"] else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", default="1,4,8,16", help="comma-separated R values")
    p.add_argument(
        "--convs", default=",".join(conv.IMPLS + baselines.CONV_IMPLS + ("auto",))
    )
    p.add_argument("--pools", default="", help="pool impls to compare (conv auto)")
    p.add_argument("--denses", default="", help="dense impls to compare (conv auto)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--slow", type=float, default=3.0, help="drop cases over this ratio")
    p.add_argument(
        "--compute-dtype", default="float32", choices=("float32", "bfloat16")
    )
    p.add_argument("--no-flax", action="store_true", help="skip the Flax context step")
    p.add_argument(
        "--torch-python",
        default="",
        help="an interpreter with torch: also time the PyTorch loop, for context",
    )
    p.add_argument("--out", default="bench/kernels.json")
    args = p.parse_args(argv)

    dtype = jnp.dtype(args.compute_dtype)
    replicas = [int(r) for r in args.replicas.split(",")]
    tx = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    header = {
        "what": "SimpleCNN train step (fwd+bwd+Adam), replica-batched kernels",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "versions": provenance.versions(("jax", "jaxlib", "flax", "optax", "numpy")),
        "commit": provenance.git_commit(mark_dirty=True),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "batch": args.batch,
        "compute_dtype": args.compute_dtype,
        # What "auto" resolves to per R: conv per layer, then pool and dense.
        "auto": {
            r: {
                "conv": [choose("conv", replicas=r, channels=c) for c, _ in CONVS],
                "pool": choose("pool", replicas=r),
                "dense": choose("dense", replicas=r),
            }
            for r in replicas
        },
    }
    print(json.dumps(header))

    def data(lead: tuple[int, ...]):
        x = rng.uniform(-1, 1, (*lead, *IMAGE)).astype(np.float32)
        y = rng.integers(0, CLASSES, lead).astype(np.int32)
        return jax.device_put(x), jax.device_put(y)

    # The baseline: one plain model, re-timed beside every R so that it sees the
    # same background load as the cases it is compared with.
    x1, y1 = data((args.batch,))
    params1 = model.init(jax.random.key(0))
    single = Case("single", 1, make_step(forward_single, tx), params1, tx, x1, y1)
    context = []
    if not args.no_flax:
        fstep, fparams = flax_step(tx, args.batch)
        context.append(Case("flax", 1, fstep, fparams, tx, x1, y1))

    rows, dropped = [], set()
    for r in replicas:
        x, y = data((r, args.batch))
        cases = [single] + (context if r == replicas[0] else [])
        for impls in variants(args):
            if impls in dropped:
                continue  # lost at a smaller R already

            def logits_fn(prm, xx, key, impls=impls):
                return forward(prm, xx, key, impls=impls, dtype=dtype)

            params = init_params(jax.random.key(0), r)
            name = "conv={} pool={} dense={}".format(*impls)
            case = Case(name, r, make_step(logits_fn, tx), params, tx, x, y)
            case.impls = impls
            cases.append(case)
        single.times = []
        time_cases(cases, repeats=args.repeats, warmup=args.warmup, slow=args.slow)
        for case in cases:
            row = summary(case, args.batch, np.asarray(single.times))
            row["round_replicas"] = r  # the R whose round this was timed in
            row["impls"] = case.impls  # (conv, pool, dense); None for baselines
            rows.append(row)
            report(row)
            if case.dropped:
                dropped.add(case.impls)

    context_rows = {}
    if args.torch_python:
        context_rows["pytorch"] = time_torch(
            args.torch_python, args.batch, 2 * args.repeats
        )
        torch_s = context_rows["pytorch"]["step_s_median"]
        print(
            f"pytorch {context_rows['pytorch']['torch']}: step {torch_s * 1e3:.1f} ms "
            f"{args.batch / torch_s:.0f} img/s",
            flush=True,
        )

    header["result"] = {r: best(rows, r) for r in replicas}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"header": header, "rows": rows, "context": context_rows}, indent=1)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
