"""Where a training step's time goes on XLA:CPU, layer by layer (issue 21).

    PYTHONPATH=. python bench/cpu_profile.py [--variants before,after]
        [--replicas 1,8] [--steps 4] [--epochs 2] [--torch] [--threads 2]
        [--top N] [--json PATH]

Runs the engine's compiled epoch (``sweep.engine.make_train_epoch``, the same
``lax.scan`` over ``--steps`` steps of batch 128 a sweep runs, compiled under
the same ``kernels.invariance`` options) for ``--epochs`` epochs under
``jax.profiler``, with XLA's per-thunk trace events on
(``xla_cpu_enable_xprof_traceme``, added to that compilation's options), and
adds each thunk's wall time to the layer and pass it belongs to.

Variants (``--variants``, comma-separated; the names of
``bench/cpu_variants.py``, whose ``forced`` replaces ``kernels.select``'s CPU
choices while the epoch is traced):

- ``before``: every convolution ``im2col``, the replica axis ``batched`` (the
  engine before issue 21);
- ``after``: what ``kernels.select`` chooses now (``native`` convolutions,
  replicas ``sequential``: each replica's forward and backward pass inside a
  ``fori_loop``, ``kernels.replica_map``);
- "+"-joined settings such as ``conv=native+rep=batched``, ``dtype=bfloat16``,
  ``ynn`` (``r=N`` replaces ``--replicas`` for that variant).

One column per (variant, R), in ms per replica-step.

Timing: a thunk's trace event starts when it is launched; an asynchronous one
(Eigen's convolutions and dots) returns at once and marks its completion with
an ``end: NAME`` event, so a thunk counts from its start to its ``end:``.
Thunks that run others (``while``, ``call``) are left out (their thunks count),
and time two thunks overlap is split between them, so the rows add up to the
time some thunk ran: the epoch's wall time less the executor's gaps (the
``sum of events`` and ``wall`` lines). The library kernels (Eigen, YNNPACK)
spread themselves over the pool's threads inside one thunk.

Rows are found by name: the model runs with every layer call inside a
``jax.named_scope`` (conv1..3, pool1..3, fc1..2, dropout), the uint8->float
normalise, the loss and the optimizer update inside their own, so every HLO
instruction's ``op_name`` says where it came from (inside the sequential
replica loop too: ``.../while/body/.../conv2/...``), and ``transpose(...)`` in
it marks the backward pass (the ``native`` convolution's hand-written backward,
a custom VJP, carries its layer's scope and ``transpose``). "fwd" is whatever
is not a transpose: the forward pass and the linearisation work done with it
(the pools' tie counts). A fusion that holds a convolution or dot counts as
that op (XLA:CPU fuses a convolution's input gradient into the backward pass of
the pool before it, and names the fusion after the pool); any other fusion
counts where its root came from (a ReLU fused into the pool after it counts as
the pool's, a pool's backward fused into the ReLU's as the ReLU's). The ReLUs
are matched by their custom JVP's ops (``jit(relu)``, the unnamed ``jvp()``'s
compare and select). Instructions without metadata are matched by shape: dots
by their output, bias-gradient reductions by their input. What no rule claims
is the step's own work: the batch gather (``gather``, with the normalise), the
sequential loop's slicing of each replica's inputs and writing of its outputs
(``replicas``), and in ``other`` the dropout keys, metrics, the epoch's
shuffle, Adam's ``apply_updates`` and the loop carry's copies.

``--torch`` adds the PyTorch reference step (the notebook's SimpleCNN, Adam,
batch 128, ``--threads`` threads, uint8 batches gathered and normalised in the
step) on the same shapes, from ``torch.profiler`` with input shapes, grouped
into the same rows.

Timings on a shared machine are disturbed by the other jobs: compare rows
within one run, and re-measure on a quiet machine before quoting absolutes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
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

from bench.cpu_variants import YNN_DEFAULT, YNN_DOT, forced, settings  # noqa: E402
from kernels import invariance  # noqa: E402
from sweep import engine  # noqa: E402
from sweep.engine import optim, simple_cnn, trainer  # noqa: E402

BATCH = 128
ROWS = ("gather", "conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "fc1",
        "relu", "dropout", "fc2", "loss", "adam", "replicas", "other")
# Named scopes -> rows; "normalise" is spec.prepare, counted with the gather.
SCOPES = {r: r for r in ROWS if r not in ("gather", "relu", "replicas", "other")}
SCOPES["normalise"] = "gather"
# Per-thunk trace events, per compilation (XLA_FLAGS is read once per process).
TRACEME = {"xla_cpu_enable_xprof_traceme": True}


def scoped_layers(layers: simple_cnn.Layers) -> simple_cnn.Layers:
    """``layers`` with each call named conv1, conv2, ... in trace order.

    The counters restart with every new `scoped_layers`, so build one per
    trace of the model (``scoped_spec``'s apply does).
    """
    seen = collections.Counter()

    def named(kind, prefix, fn):
        def call(*args, **kwargs):
            seen[kind] += 1
            with jax.named_scope(f"{prefix}{seen[kind]}"):
                return fn(*args, **kwargs)
        return call

    def dropout(*args):
        with jax.named_scope("dropout"):
            return layers.dropout(*args)

    return simple_cnn.Layers(
        conv=named("conv", "conv", layers.conv),
        pool=named("pool", "pool", layers.pool),
        dense=named("dense", "fc", layers.dense),
        dropout=dropout,
    )


def scoped_spec() -> engine.ModelSpec:
    """SIMPLE_CNN with named scopes around layers, normalise, loss and update.

    Computes what SIMPLE_CNN computes (the same functions, the reference Adam
    applied per replica); only the names in the HLO metadata differ. The
    layers' formulations are chosen when the epoch is traced ("auto"), so
    trace it inside ``forced``.
    """
    base = engine.SIMPLE_CNN

    def make_apply(recipe):
        layers = simple_cnn.batched_layers(recipe.kernel, recipe.compute_dtype)

        def apply(params, x, *, dropout=0.0, dropout_key=None):
            return simple_cnn.apply(params, x, layers=scoped_layers(layers),
                                    dropout=dropout, dropout_key=dropout_key)
        return apply

    def prepare(batch):
        with jax.named_scope("normalise"):
            return base.prepare(batch)

    def loss(logits, y):
        with jax.named_scope("loss"):
            return base.loss(logits, y)

    def optimizer(lr):
        tx = optim.reference_adam(lr)

        def update(updates, state, params=None):
            with jax.named_scope("adam"):
                return tx.update(updates, state, params)
        return optax.GradientTransformation(tx.init, update)

    return base._replace(make_apply=make_apply, prepare=prepare, loss=loss,
                         optimizer=optimizer)


# Dots by their output's last two dims, for instructions that lost their
# metadata: a dot the algebraic simplifier rebuilt (where a replica axis of
# size 1 goes away: R = 1, or every replica in sequential mode) carries no
# op_name. Convolutions (``native``) keep theirs.
_DOT_SHAPES = {(27, 32): "conv1/b", (288, 64): "conv2/b", (576, 128): "conv3/b",
               (2048, 512): "fc1/b", (512, 10): "fc2/b", (128, 2048): "fc1/b",
               (32, 27): "conv1/b", (64, 288): "conv2/b", (128, 576): "conv3/b",
               (512, 2048): "fc1/b", (10, 512): "fc2/b",
               (128, 512): "fc1/f", (128, 10): "fc2/f"}
# A layer's output by its trailing dims: a reduction over one without metadata
# (XLA splits a bias gradient's sum into a reduce-window and a reduce and
# names neither) is that layer's bias gradient.
_OUT_SHAPES = {(32, 32, 32): "conv1", (16, 16, 64): "conv2", (8, 8, 128): "conv3",
               (128, 512): "fc1", (128, 10): "fc2"}


def _dot_by_shape(line: str) -> str | None:
    m = re.search(r" = \w+\[([\d,]*)\]\S* (?:dot|fusion)\(", line)
    if not m or ("dot(" not in line and "ynn_fusion" not in line):
        return None
    dims = [int(d) for d in m.group(1).split(",") if d]
    if len(dims) < 2:
        return None
    mm, n = dims[-2], dims[-1]
    key = _DOT_SHAPES.get((mm, n))
    if key is None:
        fwd = {32: "conv1", 64: "conv2", 128: "conv3"}
        bwd = {288: "conv2", 576: "conv3"}
        if n in bwd:
            key = f"{bwd[n]}/b"
        elif n in fwd and mm % 64 == 0 and mm > 128:
            key = f"{fwd[n]}/f"
    if key is None:
        return None
    layer, p = key.split("/")
    return f"by_shape/{'transpose(' if p == 'b' else ''}{layer}"


def _reduce_by_shape(dims: tuple[int, ...] | None) -> str | None:
    for n in (3, 2):
        if dims is not None and tuple(dims[-n:]) in _OUT_SHAPES:
            return f"by_shape/transpose({_OUT_SHAPES[tuple(dims[-n:])]}"
    return None


def _row(op: str) -> str:
    parts = re.split(r"[/()]", op)
    row = next((SCOPES[p] for p in reversed(parts) if p in SCOPES), None)
    if row is not None:
        return row
    if "jit(relu)" in op or re.search(r"jvp\(\)\)?/(gt|select_n)$", op):
        # The ReLUs run outside every layer's scope; their custom JVP's
        # compare and select carry only the step's unnamed jvp().
        return "relu"
    if re.search(r"while/body/.*while/body/dynamic_(update_)?slice$", op):
        return "replicas"  # the sequential replica loop's slices
    if re.search(r"/gather$", op) and "while/body" in op and "transpose" not in op:
        return "gather"
    return "other"


def hlo_rows(hlo_text: str) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """instruction name -> (row, "fwd" | "bwd") from the compiled HLO's op_names,
    and the instructions no op_name or shape rule placed (counted as other).

    A fusion that holds a convolution or dot counts as that op (XLA:CPU fuses
    e.g. a convolution's input gradient into the pool's backward pass before
    it, and names the fusion after the pool). Any other fusion without
    metadata of its own takes its fused computation's: the root's op_name,
    else the first op_name inside.
    """
    comp_op: dict[str, str] = {}  # computation -> op_name of root / first
    comp_heavy: dict[str, str] = {}  # computation -> its convolution's or dot's
    comp_param: dict[str, tuple[int, ...]] = {}  # computation -> param 0's dims
    comp_reduces: set[str] = set()  # computations whose root is a reduction
    instr: dict[str, tuple[str | None, str | None, str]] = {}
    current = None
    for line in hlo_text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) (.*)\{\s*$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            shape = re.search(r"\w+\[([\d,]*)\]", head.group(2))
            if shape:
                comp_param[current] = tuple(
                    int(d) for d in shape.group(1).split(",") if d)
            continue
        m = re.match(r"^\s*(ROOT )?%?([\w.\-]+) = ", line)
        if not m:
            continue
        op = re.search(r'op_name="([^"]*)"', line)
        op = op.group(1) if op else None
        calls = re.search(r"calls=%?([\w.\-]+)", line)
        if op is None:  # e.g. a dot the simplifier rebuilt at a replica axis of 1
            op = _dot_by_shape(line)
        instr[m.group(2)] = (op, calls.group(1) if calls else None, line)
        if current is None:
            continue
        if op and (m.group(1) or current not in comp_op):
            comp_op[current] = op
        if op and re.search(r" (convolution|dot)\(", line):
            comp_heavy.setdefault(current, op)
        if m.group(1) and re.search(r" reduce(-window)?\(", line):
            comp_reduces.add(current)
    out, unnamed = {}, set()
    for name, (op, calls, line) in instr.items():
        if calls in comp_heavy and " fusion(" in line:
            op = comp_heavy[calls]
        op = op or comp_op.get(calls or "")
        if op is None and calls in comp_reduces:
            op = _reduce_by_shape(comp_param.get(calls))
        if op is None:
            unnamed.add(name)
            out[name] = ("other", "fwd")
            continue
        out[name] = (_row(op), "bwd" if "transpose(" in op else "fwd")
    return out, unnamed


# Thunks that run other thunks (each of those has its own events).
_NESTING = ("while", "call", "conditional")


def thunk_times(path: str) -> collections.Counter:
    """Wall time (ns) per thunk (HLO instruction) from an xplane trace.

    A thunk's event starts when it is launched; an asynchronous one (Eigen's
    convolutions and dots) returns at once and marks its completion with an
    "end: NAME" event, so a thunk runs from its event's start to its "end:"
    event (or its event's end). Time two thunks overlap is split between
    them, so the times add up to the time some thunk was running.
    """
    from jax.profiler import ProfileData

    starts = collections.defaultdict(list)
    ends = collections.defaultdict(list)
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            if not line.name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient")):
                continue
            for ev in line.events:
                if ev.name.startswith("end: "):
                    ends[ev.name[5:]].append(ev.start_ns)
                elif not ev.name.startswith(("ThunkExecutor", "Slinky",
                                             "ThreadpoolListener")):
                    starts[ev.name].append((ev.start_ns, ev.duration_ns))
    edges = []
    for name, evs in starts.items():
        if name.split(".")[0] in _NESTING:
            continue
        evs.sort()
        done = sorted(ends.get(name, ()))
        for i, (t0, dur) in enumerate(evs):  # a thunk never overlaps itself
            t1 = max(t0 + dur, done[i] if i < len(done) else 0)
            edges += [(t0, 1, name), (t1, -1, name)]
    edges.sort()
    ns = collections.Counter()
    active = collections.Counter()
    last = None
    for t, kind, name in edges:
        if active and last is not None:
            share = (t - last) / sum(active.values())
            for n, k in active.items():
                ns[n] += share * k
        last = t
        active[name] += kind
        if active[name] == 0:
            del active[name]
    return ns


def profile_engine(variant: str, replicas: int, steps: int, epochs: int, log,
                   top: int = 0) -> dict:
    """Per-row ms per step of the engine's compiled epoch, one variant at R."""
    s = settings(variant)
    replicas = s.get("r", replicas)
    recipe = engine.Recipe(n_train=BATCH * steps, n_classes=10,
                           compute_dtype=s.get("dtype", "float32"))
    spec = scoped_spec()
    keys = engine.replica_keys(np.arange(replicas), np.zeros(replicas))
    state = engine.init_state(recipe, keys.init, spec)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (BATCH * steps, 32, 32, 3), np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, (replicas, BATCH * steps)), jnp.int32)
    with forced(s.get("conv"), s.get("rep")):
        # The engine's own epoch and options, with the trace events added.
        one = trainer.one_at_a_time("auto")
        options = invariance.compiler_options(one) or {}
        options |= {"ynn": YNN_DEFAULT, "ynndot": YNN_DOT}.get(s.get("ynn"), {})
        options |= TRACEME
        epoch_fn = engine.make_train_epoch(recipe, spec=spec)
        compiled = epoch_fn.lower(state, images, labels, keys,
                                  jnp.int32(0)).compile(options)
    text = compiled.as_text()
    rows, unnamed = hlo_rows(text)
    shapes = dict(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+\[[\d,]*\])", text,
                             re.M))
    state = jax.block_until_ready(
        compiled(state, images, labels, keys, jnp.int32(0)))[0]
    trace_dir = tempfile.mkdtemp(prefix="cpu_profile_")
    walls = []
    with jax.profiler.trace(trace_dir):
        for e in range(epochs):
            t0 = time.perf_counter()
            state = jax.block_until_ready(
                compiled(state, images, labels, keys, jnp.int32(e + 1)))[0]
            walls.append(time.perf_counter() - t0)
    path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
    ns = collections.Counter()
    per_op = collections.Counter()
    times = thunk_times(path)
    shutil.rmtree(trace_dir, ignore_errors=True)
    for name, t in times.items():
        row = rows.get(name, ("other", "fwd"))
        ns[row] += t
        per_op[(name, *row)] += t
    per_step = epochs * steps
    table = {f"{r}/{p}": v / 1e6 / per_step for (r, p), v in sorted(ns.items())}
    wall_ms = float(np.sum(walls)) / per_step * 1e3
    lost = collections.Counter({n: t for (n, _, _), t in per_op.items()
                                if n in unnamed or n not in rows})
    mode = "sequential" if one else "batched"
    log(f"{variant} R={replicas} ({mode}): wall {wall_ms:.1f} ms/step, thunks "
        f"{sum(table.values()):.1f} ms/step; unattributed (in other) "
        f"{sum(lost.values()) / 1e6 / per_step:.1f} ms/step "
        f"{[(n, round(t / 1e6 / per_step, 2)) for n, t in lost.most_common(3)]}")
    for (name, row, p), v in per_op.most_common(top):
        log(f"    {v / 1e6 / per_step / replicas:7.2f} ms/replica-step  {row}/{p}  "
            f"{name}  {shapes.get(name, '')}")
    return {"variant": variant, "replicas": replicas, "replica_mode": mode,
            "compiler_options": {k: str(v) for k, v in options.items()},
            "wall_ms_per_step": wall_ms, "rows": table}


TORCH_PROFILE = r"""
import collections, json, sys, time
import torch
from torch import nn
from torch.profiler import profile, ProfilerActivity, record_function
steps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(0.5),
    nn.Linear(512, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
crit = nn.CrossEntropyLoss()
xu8 = torch.randint(0, 256, (1280, 3, 32, 32), dtype=torch.uint8)
y = torch.randint(0, 10, (1280,))
def step(s):
    with record_function("gather"):
        i = torch.randperm(1280)[:128]
        xb = xu8[i].float() / 127.5 - 1.0
        yb = y[i]
    opt.zero_grad()
    out = xb
    for k, m in enumerate(net):
        with record_function(f"layer{k}"):
            out = m(out)
    with record_function("loss"):
        loss = crit(out, yb)
    loss.backward()
    with record_function("adam"):
        opt.step()
for s in range(3):
    step(s)
t0 = time.perf_counter()
for s in range(steps):
    step(s)
wall = (time.perf_counter() - t0) / steps
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for s in range(steps):
        step(s)
out = []
for e in prof.events():
    chain, p = [], e
    while p is not None:
        chain.append(p.name)
        p = p.cpu_parent
    out.append([chain, str(e.input_shapes), e.self_cpu_time_total])
print(json.dumps({"wall_ms": wall * 1e3, "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "events": out}))
"""

# nn.Sequential index -> row; backward ops are found by the autograd node
# above them and the shapes they were given.
_TORCH_LAYER = {0: "conv1", 1: "relu", 2: "pool1", 3: "conv2", 4: "relu",
                5: "pool2", 6: "conv3", 7: "relu", 8: "pool3", 9: "other",
                10: "fc1", 11: "relu", 12: "dropout", 13: "fc2"}
_TORCH_BWD_SHAPES = (  # (row, substrings of the input shapes), first match wins
    ("conv1", ("[128, 32, 32, 32], [128, 3, 32, 32]",)),
    ("conv2", ("[128, 64, 16, 16], [128, 32, 16, 16]",)),
    ("conv3", ("[128, 128, 8, 8], [128, 64, 8, 8]",)),
    ("pool1", ("[128, 32, 16, 16], [128, 32, 32, 32]",)),
    ("pool2", ("[128, 64, 8, 8], [128, 64, 16, 16]",)),
    ("pool3", ("[128, 128, 4, 4], [128, 128, 8, 8]",)),
    ("fc2", ("10]", "[10,")),
    ("fc1", ("2048", "[512]")),
)


def torch_rows(events: list) -> dict[str, float]:
    """Sum torch.profiler self times (us) into the engine's rows."""
    us = collections.Counter()
    for chain, shapes, self_us in events:
        top = chain[-1]
        bwd = any("Backward" in c or c.startswith("autograd::engine") for c in chain)
        if top.startswith("layer") and not bwd:
            row = _TORCH_LAYER[int(top[5:])]
        elif top in ("gather", "loss", "adam") and not bwd:
            row = top
        elif bwd:
            node = next((c for c in reversed(chain) if "Backward" in c), "")
            if "Relu" in node or "threshold" in chain[0]:
                row = "relu"
            elif "LogSoftmax" in node or "NllLoss" in node:
                row = "loss"
            elif "Mul" in node or "Dropout" in node:
                row = "dropout"
            else:
                row = next((r for r, keys in _TORCH_BWD_SHAPES
                            if any(k in shapes for k in keys)), "other")
        else:
            row = "other"
        us[f"{row}/{'bwd' if bwd else 'fwd'}"] += self_us
    return dict(us)


def profile_torch(steps: int, threads: int, log) -> dict:
    import subprocess

    done = subprocess.run([sys.executable, "-c", TORCH_PROFILE, str(steps),
                           str(threads)], capture_output=True, text=True, check=True)
    res = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {k: v / 1e3 / steps for k, v in torch_rows(res["events"]).items()}
    log(f"torch {res['torch']}: wall {res['wall_ms']:.1f} ms/step "
        f"({res['threads']} threads), profiled self time "
        f"{sum(rows.values()):.1f} ms/step")
    return {"wall_ms_per_step": res["wall_ms"], "rows": rows,
            "threads": res["threads"], "torch": res["torch"]}


def markdown(results: list[dict], torch_res: dict | None) -> str:
    cols = [f"{r['variant']} R={r['replicas']}" for r in results]
    head = "| row | pass | " + " | ".join(cols)
    if torch_res:
        head += " | PyTorch"
    lines = ["ms per replica-step (PyTorch: per step, one model)", "",
             head + " |", "|---|---|" + "---:|" * (len(cols) + bool(torch_res))]
    keys = sorted({k for r in results for k in r["rows"]}
                  | set(torch_res["rows"] if torch_res else ()),
                  key=lambda k: (ROWS.index(k.split("/")[0])
                                 if k.split("/")[0] in ROWS else 99, k))
    for k in keys:
        row, p = k.split("/")
        vals = [r["rows"].get(k, 0.0) / r["replicas"] for r in results]
        line = f"| {row} | {p} | " + " | ".join(f"{v:.1f}" for v in vals)
        if torch_res:
            line += f" | {torch_res['rows'].get(k, 0.0):.1f}"
        lines.append(line + " |")
    tot = [sum(r["rows"].values()) / r["replicas"] for r in results]
    wall = [r["wall_ms_per_step"] / r["replicas"] for r in results]
    line = "| **sum of events** | | " + " | ".join(f"{v:.1f}" for v in tot)
    line2 = "| **wall (unprofiled in torch)** | | " + " | ".join(
        f"{v:.1f}" for v in wall)
    if torch_res:
        line += f" | {sum(torch_res['rows'].values()):.1f}"
        line2 += f" | {torch_res['wall_ms_per_step']:.1f}"
    return "\n".join(lines + [line + " |", line2 + " |"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", "--variant", default="before,after",
                   help="comma-separated, as bench/cpu_variants.py names them")
    p.add_argument("--replicas", default="1,8")
    p.add_argument("--steps", type=int, default=4, help="steps per profiled epoch")
    p.add_argument("--epochs", type=int, default=2, help="profiled epochs")
    p.add_argument("--torch", action="store_true")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="PyTorch's threads")
    p.add_argument("--json", default=None)
    p.add_argument("--top", type=int, default=0,
                   help="also print the N costliest HLO instructions")
    args = p.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    log(f"jax {jax.__version__}, cpus {len(os.sched_getaffinity(0))}, "
        f"load average {os.getloadavg()[0]:.1f}")
    results = []
    for variant in args.variants.split(","):
        reps = [settings(variant)["r"]] if "r" in settings(variant) else \
            [int(r) for r in args.replicas.split(",")]
        results += [profile_engine(variant, r, args.steps, args.epochs, log,
                                   args.top) for r in reps]
    torch_res = (profile_torch(args.steps * args.epochs, args.threads, log)
                 if args.torch else None)
    log(f"load average {os.getloadavg()[0]:.1f}")
    print(markdown(results, torch_res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"engine": results, "torch": torch_res, "argv": sys.argv[1:]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
