"""Time a full SimpleCNN train step for each replica-batched kernel formulation.

    PYTHONPATH=. python bench/kernels_bench.py [--replicas 1,4,8,16]
        [--out bench/kernels.json]
    PYTHONPATH=. python bench/kernels_bench.py --per-layer [--replicas 8,16,32,64,96]
        [--out bench/kernels_layers.json]

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

``--per-layer`` instead times each convolution layer of SimpleCNN alone (conv1
32x32x3->32, conv2 16x16x32->64, conv3 8x8x64->128, batch ``--batch``), every
formulation at every R: the forward pass (what evaluation runs) and the
training pass (forward + the gradients training needs: kernel and bias, and the
input too from conv2 on), each against R x the plain single-model convolution
timed in the same rounds. That is the per-layer table behind a backend's row of
``kernels.select``; the whole-step mode then checks the chosen mix.

Formulations (``kernels.conv`` and the baselines in ``bench/kernel_baselines.py``):
``vmap`` (grouped convolution, what ``jax.vmap`` makes), ``im2col`` (batched
GEMM), ``map``, ``unroll``, ``grouped`` (the replicas folded into the channels
of one convolution with ``feature_group_count=R``, written by hand: the same
program as ``vmap``, a cross-check), ``blockdiag`` (the same fold as one
ungrouped convolution with block-diagonal weights, R x the work) and ``shared``
(one input batch shared by all replicas, the R kernels as R x O output
channels: evaluation, and the first layer of paired twins; in the whole-step
mode it applies to the first layer only, the others are "auto"). ``--cap``
keeps the ones whose cost or program grows with R off the large R.

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
from kernels import conv, invariance, pool
from kernels.select import choose
from sweep.engine import simple_cnn
from sweep.results import environment as env_lib

IMAGE = (32, 32, 3)
CLASSES = 10
DROPOUT = 0.5
# conv1..conv3 (in, out) channels, for the header's "auto" column.
CONVS = tuple((s[2], s[3]) for name, _, s in simple_cnn.LAYOUT if name.startswith("conv"))


def init_params(key: jax.Array, replicas: int) -> simple_cnn.Params:
    """SimpleCNN parameters as the engine draws them, one init per replica."""
    return jax.vmap(simple_cnn.init)(jax.random.split(key, replicas))


def layer_conv_impl(conv_impl: str, in_channels: int) -> str:
    """``shared`` is valid on the first layer only (its input is the data)."""
    if conv_impl == "shared" and in_channels != IMAGE[-1]:
        return "auto"
    return conv_impl


def bench_layers(impls: tuple[str, str, str], dtype) -> simple_cnn.Layers:
    """`simple_cnn.batched_layers` with each layer's formulation chosen, baselines too."""
    conv_impl, pool_impl, dense_impl = impls
    return simple_cnn.batched_layers("auto", jnp.dtype(dtype).name)._replace(
        conv=lambda x, w, b: baselines.conv3x3(
            x, w, b, impl=layer_conv_impl(conv_impl, x.shape[-1]), compute_dtype=dtype
        ),
        pool=lambda x: baselines.maxpool2(x, impl=pool_impl),
        dense=lambda x, w, b: baselines.dense(
            x, w, b, impl=dense_impl, compute_dtype=dtype
        ),
    )


def forward(params, x, dropout_key, *, impls: tuple[str, str, str], dtype):
    """Replica-batched SimpleCNN logits: x (R, B, 32, 32, 3) -> (R, B, 10)."""
    keys = jax.random.split(dropout_key, x.shape[0])
    return simple_cnn.apply(params, x, layers=bench_layers(impls, dtype),
                       dropout=DROPOUT, dropout_key=keys)


# The plain single model, with the reshape pool the batched model uses: the
# baseline should differ from a replica only in the replica axis.
SINGLE_LAYERS = simple_cnn.single_layers()._replace(
    pool=lambda x: pool.maxpool2(x, impl="reshape")
)


def forward_single(params, x, dropout_key):
    """One plain model, no replica axis: x (B, 32, 32, 3) -> (B, 10)."""
    return simple_cnn.apply(params, x, layers=SINGLE_LAYERS, dropout=DROPOUT,
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

    # Compiled as the engine compiles it (kernels/invariance.py).
    return invariance.jit(step, donate_argnums=(0, 1))


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
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(0.5),
    nn.Linear(512, 10),
).to(dev)
net.train()
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
criterion = nn.CrossEntropyLoss()
x = (torch.rand(batch, 3, 32, 32) * 2 - 1).to(dev)
y = torch.randint(0, 10, (batch,)).to(dev)

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
    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(dev),
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


# SimpleCNN's convolutions: (name, height = width, in channels, out channels).
CONV_LAYERS = (("conv1", 32, 3, 32), ("conv2", 16, 32, 64), ("conv3", 8, 64, 128))


def parse_caps(text: str) -> dict[str, int]:
    """``"map=32,unroll=32"`` -> ``{"map": 32, "unroll": 32}``."""
    caps = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, r = item.partition("=")
        caps[name.strip()] = int(r)
    return caps


def commit_id() -> str | None:
    """The checkout's commit, or $SWEEP_GIT_COMMIT where the copy has no .git."""
    found = env_lib.git_commit(mark_dirty=True)
    if found:
        return found
    given = os.environ.get("SWEEP_GIT_COMMIT")
    return f"{given} (from SWEEP_GIT_COMMIT)" if given else None


class LayerCase:
    """One layer, one formulation, one R: a compiled forward and training pass."""

    def __init__(self, name: str, fwd, train, args_fwd, args_train, inner: int):
        self.name, self.inner = name, inner
        self.args_fwd, self.args_train = args_fwd, args_train
        start = time.perf_counter()
        self.fwd = invariance.jit(fwd).lower(*args_fwd).compile()
        self.train = invariance.jit(train).lower(*args_train).compile()
        self.compile_s = time.perf_counter() - start
        self.times = {"fwd": [], "train": []}

    def _time(self, fn, args) -> float:
        # ``inner`` calls back to back, then one wait: on a GPU one small
        # convolution is shorter than Python's dispatch of it.
        start = time.perf_counter()
        with jax.transfer_guard("disallow"):
            out = None
            for _ in range(self.inner):
                out = fn(*args)
            jax.block_until_ready(out)
        return (time.perf_counter() - start) / self.inner

    def run(self) -> None:
        self.times["fwd"].append(self._time(self.fwd, self.args_fwd))
        self.times["train"].append(self._time(self.train, self.args_train))


def layer_case(impl: str, r: int, batch: int, layer: tuple, dtype, rng, inner: int):
    """A `LayerCase` for one formulation of one layer at R (``impl`` "single": R=1
    plain convolution without a replica axis, the baseline)."""
    _, hw, c, o = layer
    first = c == IMAGE[-1]  # the data needs no gradient
    x = jnp.asarray(rng.uniform(-1, 1, (r, batch, hw, hw, c)), dtype=jnp.float32)
    w = jnp.asarray(rng.normal(0, 1 / np.sqrt(9 * c), (r, 3, 3, c, o)), jnp.float32)
    b = jnp.zeros((r, o), jnp.float32)
    g = jnp.asarray(rng.normal(0, 1, (r, batch, hw, hw, o)), jnp.float32)
    if impl == "single":
        x, w, b, g = x[0], w[0], b[0], g[0]

        def conv_fn(x, w, b):
            y = conv.conv_single(x.astype(dtype), w.astype(dtype), jnp.float32)
            return y + b[None, None, None, :]
    elif impl == "shared":
        x = x[0]  # one batch for every replica

        def conv_fn(x, w, b):
            y = baselines.conv_shared(x.astype(dtype), w.astype(dtype), jnp.float32)
            return y + b[:, None, None, None, :]
    else:

        def conv_fn(x, w, b):
            return baselines.conv3x3(x, w, b, impl=impl, compute_dtype=dtype)

    argnums = (1, 2) if first else (0, 1, 2)

    def train(x, w, b, g):
        return jax.grad(lambda *a: jnp.sum(conv_fn(*a) * g), argnums=argnums)(x, w, b)

    return LayerCase(impl, conv_fn, train, (x, w, b), (x, w, b, g), inner)


def per_layer(args, dtype, header: dict) -> None:
    """Time every conv formulation per layer and R; write ``--out``, print tables."""
    replicas = [int(r) for r in args.replicas.split(",")]
    impls = [i for i in args.convs.split(",") if i and i != "auto"]
    caps = parse_caps(args.cap)
    rng = np.random.default_rng(0)
    rows = []
    for layer in CONV_LAYERS:
        if args.layers and layer[0] not in args.layers.split(","):
            continue
        for r in replicas:
            single = layer_case("single", 1, args.batch, layer, dtype, rng, args.inner)
            cases = [single]
            for impl in impls:
                if r > caps.get(impl, r):
                    continue
                if impl == "shared" and layer[2] != IMAGE[-1]:
                    continue  # only the first layer's input (the data) is shared
                try:
                    cases.append(layer_case(impl, r, args.batch, layer, dtype, rng,
                                            args.inner))
                except Exception as e:  # e.g. out of memory: say so, go on
                    print(f"{layer[0]} R={r} {impl}: failed to compile: "
                          f"{type(e).__name__}: {str(e)[:200]}", flush=True)
                    rows.append({"layer": layer[0], "replicas": r, "impl": impl,
                                 "error": f"{type(e).__name__}: {str(e)[:500]}"})
            for case in cases:
                for _ in range(args.warmup):
                    case.run()
                case.times = {"fwd": [], "train": []}
            for k in range(args.repeats):
                for case in cases[k % len(cases):] + cases[: k % len(cases)]:
                    case.run()
            base = {p: float(np.median(single.times[p])) for p in ("fwd", "train")}
            for case in cases[1:]:
                row = {"layer": layer[0], "replicas": r, "impl": case.name,
                       "compile_s": round(case.compile_s, 3), "inner": args.inner,
                       "repeats": args.repeats}
                for p in ("fwd", "train"):
                    med = float(np.median(case.times[p]))
                    row[f"{p}_s_median"] = med
                    row[f"{p}_s_min"] = float(min(case.times[p]))
                    row[f"{p}_single_s_median"] = base[p]
                    row[f"{p}_ratio"] = med / (r * base[p])
                rows.append(row)
                print(f"{layer[0]} R={r:<3d} {case.name:<10s} fwd "
                      f"{row['fwd_s_median'] * 1e3:8.3f} ms "
                      f"(ratio {row['fwd_ratio']:5.2f})  train "
                      f"{row['train_s_median'] * 1e3:8.3f} ms "
                      f"(ratio {row['train_ratio']:5.2f})  "
                      f"compile {case.compile_s:.1f} s",
                      flush=True)
    header["what"] = "SimpleCNN conv layers alone, fwd and fwd+grads, per formulation"
    header["caps"] = caps
    header["best"] = best_per_layer(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"header": header, "per_layer": rows}, indent=1) + "\n")
    md = (f"### Conv layers alone: {header['device']} ({header['backend']}), "
          f"{header['date'][:10]}\n\n- commit `{header['commit']}`; batch "
          f"{args.batch}; {args.compute_dtype}; median of {args.repeats} rounds of "
          f"{args.inner} calls; caps {caps}\n" + per_layer_markdown(rows, replicas))
    out.with_suffix(".md").write_text(md)
    print(md, flush=True)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def best_per_layer(rows: list[dict]) -> dict:
    """Fastest formulation per (layer, pass, R), ``shared`` apart (eval only)."""
    best = {}
    for row in rows:
        if "error" in row:
            continue
        for p in ("fwd", "train"):
            key = f"{row['layer']} {p} R={row['replicas']}"
            if row["impl"] == "shared":
                continue
            if key not in best or row[f"{p}_s_median"] < best[key][1]:
                best[key] = (row["impl"], row[f"{p}_s_median"])
    return {k: {"impl": v[0], "s": v[1]} for k, v in best.items()}


def per_layer_markdown(rows: list[dict], replicas: list[int]) -> str:
    """One table per pass: ms per step of the layer (ratio to R x single)."""
    lines = []
    for p, what in (("fwd", "forward (evaluation)"),
                    ("train", "forward + gradients (training)")):
        lines += ["", f"Per layer, {what}: ms (ratio to R x one plain conv); "
                  "* = fastest at that R", "",
                  "| layer | formulation | " + " | ".join(f"R = {r}" for r in replicas)
                  + " |", "|---|---|" + "---:|" * len(replicas)]
        layers = list(dict.fromkeys(row["layer"] for row in rows))
        for layer in layers:
            mine = [row for row in rows if row["layer"] == layer and "error" not in row]
            fastest = {}
            for row in mine:
                if row["impl"] != "shared":
                    r = row["replicas"]
                    if r not in fastest or row[f"{p}_s_median"] < fastest[r]:
                        fastest[r] = row[f"{p}_s_median"]
            for impl in dict.fromkeys(row["impl"] for row in mine):
                cells = []
                for r in replicas:
                    hit = [row for row in mine if row["impl"] == impl
                           and row["replicas"] == r]
                    if not hit:
                        cells.append("")
                        continue
                    t = hit[0][f"{p}_s_median"]
                    star = "*" if fastest.get(r) == t else ""
                    cells.append(f"{t * 1e3:.3g}{star} ({hit[0][f'{p}_ratio']:.2f})")
                lines.append(f"| {layer} | {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    p.add_argument(
        "--cap",
        default="map=32,unroll=32,blockdiag=32",
        help="largest R per formulation: map/unroll grow the program, blockdiag "
        "does R x the work",
    )
    p.add_argument("--per-layer", action="store_true",
                   help="time each conv layer alone instead of the whole step")
    p.add_argument("--layers", default="", help="--per-layer: e.g. conv1,conv2")
    p.add_argument("--inner", type=int, default=10,
                   help="--per-layer: calls per timed sample (dispatch overhead)")
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
        "versions": env_lib.versions(("jax", "jaxlib", "flax", "optax", "numpy")),
        "commit": commit_id(),
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
    if args.per_layer:
        per_layer(args, dtype, header)
        return

    def data(lead: tuple[int, ...]):
        x = rng.uniform(-1, 1, (*lead, *IMAGE)).astype(np.float32)
        y = rng.integers(0, CLASSES, lead).astype(np.int32)
        return jax.device_put(x), jax.device_put(y)

    # The baseline: one plain model, re-timed beside every R so that it sees the
    # same background load as the cases it is compared with.
    x1, y1 = data((args.batch,))
    params1 = simple_cnn.init(jax.random.key(0))
    single = Case("single", 1, make_step(forward_single, tx), params1, tx, x1, y1)
    context = []
    if not args.no_flax:
        fstep, fparams = flax_step(tx, args.batch)
        context.append(Case("flax", 1, fstep, fparams, tx, x1, y1))

    caps = parse_caps(args.cap)
    header["caps"] = caps
    rows, dropped = [], set()
    for r in replicas:
        x, y = data((r, args.batch))
        cases = [single] + (context if r == replicas[0] else [])
        for impls in variants(args):
            if impls in dropped:
                continue  # lost at a smaller R already
            if r > caps.get(impls[0], r):
                continue  # a formulation whose program or work grows with R

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
        try:
            context_rows["pytorch"] = time_torch(
                args.torch_python, args.batch, 2 * args.repeats
            )
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            err = getattr(e, "stderr", "") or ""
            print(f"pytorch loop skipped: {type(e).__name__} {err[-300:]}", flush=True)
        else:
            torch_s = context_rows["pytorch"]["step_s_median"]
            print(
                f"pytorch {context_rows['pytorch']['torch']}: step "
                f"{torch_s * 1e3:.1f} ms {args.batch / torch_s:.0f} img/s",
                flush=True,
            )

    header["result"] = {r: best(rows, r) for r in replicas}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"header": header, "rows": rows, "context": context_rows}, indent=1)
        + "\n"
    )
    md = step_markdown(header, rows, replicas, context_rows)
    out.with_suffix(".md").write_text(md)
    print(md, flush=True)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def step_markdown(header: dict, rows: list[dict], replicas: list[int],
                  context: dict) -> str:
    """Whole train step: ms per replica (ratio to one plain model), per R."""
    lines = [
        f"### Kernels, whole train step: {header['device']} ({header['backend']}), "
        f"{header['date'][:10]}", "",
        f"- commit `{header['commit']}`; batch {header['batch']}; "
        f"{header['compute_dtype']}; caps {header.get('caps')}; auto = "
        + "; ".join(f"R={r}: conv {v['conv']}" for r, v in header["auto"].items()),
        "", "ms per replica-step (ratio = step / (R x plain single-model step)); "
        "D = dropped as slow", "",
        "| formulation | " + " | ".join(f"R = {r}" for r in replicas) + " |",
        "|---|" + "---:|" * len(replicas),
    ]
    names = list(dict.fromkeys(row["name"] for row in rows if row["impls"]))
    for name in names:
        cells = []
        for r in replicas:
            hit = [row for row in rows if row["name"] == name and row["replicas"] == r]
            if not hit:
                cells.append("")
                continue
            row = hit[0]
            cells.append(f"{row['step_s_median'] * 1e3 / r:.3g} ({row['ratio']:.2f})"
                         + (" D" if row["dropped_as_slow"] else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if any(row["impls"] and row["impls"][0] == "shared" for row in rows):
        lines += ["", "conv=shared: the first layer convolves replica 0's batch once "
                  "for every replica (the others are auto); right only where replicas "
                  "share a batch (evaluation; paired twins of one seed), so it bounds "
                  "what sharing can save rather than being a training formulation."]
    singles = [row for row in rows if row["name"] == "single"]
    if singles:
        lines += ["", "Plain single-model step: " + ", ".join(
            f"{row['step_s_median'] * 1e3:.3g} ms (round R={row['round_replicas']})"
            for row in singles) + "."]
    if "pytorch" in context:
        t = context["pytorch"]
        lines.append(f"PyTorch {t['torch']} step: {t['step_s_median'] * 1e3:.3g} ms.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
