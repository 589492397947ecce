"""The engine's compiled epoch in formulations, taking turns in one process (issue 21).

    PYTHONPATH=. python bench/cpu_variants.py [--replicas 8] [--steps 4]
        [--rounds 5] [--variants before,after,...] [--torch] [--threads 2]
        [--json PATH]

Each variant is the engine's own epoch (``sweep.engine.make_train_epoch``: R
replicas in one jitted ``lax.scan`` over ``--steps`` steps of batch 128, uint8
images resident, every batch gathered there, Adam, dropout 0.5), compiled as
the engine compiles it (``kernels.invariance``'s options), with the
formulations ``kernels.select`` would choose replaced for that variant's trace
(``forced``). All variants are compiled first, then take turns, one epoch each
per round, so load from other processes falls on all alike; ``--torch`` adds a
turn of the fair PyTorch loop (the notebook's SimpleCNN and Adam over
pre-normalised float tensors, model and optimizer built outside the timed
region, ``--threads`` threads, the same steps, one model).

Variant names, "+"-joined settings:

- ``before``: the formulations before issue 21 (every conv ``im2col``,
  replicas ``batched``); ``after``: what ``kernels.select`` chooses now.
- ``conv=im2col|native``, ``rep=batched|sequential``,
- ``dtype=bfloat16`` (``--precision bf16``), ``r=N`` (N replicas),
- ``ynn``: compiled with XLA:CPU's default YNNPACK fusions instead of the
  engine's options (``kernels.invariance``); ``ynndot``: YNNPACK's dots only.

Reported per variant: ms per replica-step (median and min over rounds), the
median over rounds of its time per replica over the first variant's in the
same round, and with ``--torch`` the median of PyTorch's time over its own.
On a shared machine the paired ratios are what hold; re-measure absolute
numbers on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kernels import select  # noqa: E402
from sweep import engine  # noqa: E402

BATCH = 128
YNN_DEFAULT = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
YNN_DOT = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}

@contextlib.contextmanager
def forced(conv: str | None = None, replicas: str | None = None,
           backend: str = "cpu"):
    """``kernels.select``'s CPU choices replaced while a variant is traced."""
    saved = {op: dict(select.TABLE[op]) for op in ("conv", "replicas")}
    try:
        if conv is not None:
            select.TABLE["conv"][backend] = conv
        if replicas is not None:
            select.TABLE["replicas"][backend] = replicas
        yield
    finally:
        for op, row in saved.items():
            select.TABLE[op].clear()
            select.TABLE[op].update(row)


def settings(name: str) -> dict:
    """A variant name as settings: conv, rep, dtype, r, ynn."""
    if name == "after":
        return {}
    parts = name.split("+")
    out: dict = {}
    for part in parts:
        key, _, value = part.partition("=")
        if key == "before":
            out.update(conv="im2col", rep="batched")
        elif key in ("conv", "rep", "dtype"):
            out[key] = value
        elif key == "r":
            out["r"] = int(value)
        elif key in ("ynn", "ynndot"):
            out["ynn"] = key
        elif key != "after":
            raise SystemExit(f"unknown variant setting {part!r} in {name!r}")
    return out


class EngineRun:
    """One variant: its compiled epoch, state and timings."""

    def __init__(self, name: str, replicas: int, steps: int, data):
        s = settings(name)
        self.name, self.steps = name, steps
        self.replicas = s.get("r", replicas)
        recipe = engine.Recipe(n_train=BATCH * steps, n_classes=10,
                               compute_dtype=s.get("dtype", "float32"))
        keys = engine.replica_keys(np.arange(self.replicas), np.zeros(self.replicas))
        self.keys = keys
        self.images = jax.device_put(data["x"])
        self.labels = jax.device_put(np.broadcast_to(
            data["y"], (self.replicas, len(data["y"]))).astype(np.int32))
        self.state = engine.init_state(recipe, keys.init)
        options = {"ynn": YNN_DEFAULT, "ynndot": YNN_DOT}.get(s.get("ynn"))
        t0 = time.perf_counter()
        with forced(s.get("conv"), s.get("rep")):
            fn = engine.make_train_epoch(recipe)
            self.compiled = fn.lower(self.state, self.images, self.labels, keys,
                                     jnp.int32(0)).compile(options)
        self.compile_s = time.perf_counter() - t0
        self.epoch = 0
        self.run()  # warm up
        self.times: list[float] = []

    def run(self) -> float:
        t0 = time.perf_counter()
        self.state, loss, _ = jax.block_until_ready(self.compiled(
            self.state, self.images, self.labels, self.keys, jnp.int32(self.epoch)))
        dt = time.perf_counter() - t0
        self.epoch += 1
        self.last_loss = float(np.mean(np.asarray(loss))) / (BATCH * self.steps)
        return dt


class TorchRun:
    """The fair PyTorch loop: float tensors ready, model built outside timing."""

    replicas = 1

    def __init__(self, steps: int, data, threads: int, bf16: bool = False):
        import torch
        from torch import nn

        torch.set_num_threads(threads)
        self.torch, self.steps, self.bf16 = torch, steps, bf16
        self.name = f"torch({threads}t{', bf16 autocast' if bf16 else ''})"
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, 10))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.crit = nn.CrossEntropyLoss()
        x = data["x"].astype(np.float32) / 127.5 - 1.0
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.y = torch.from_numpy(data["y"].astype(np.int64))
        self.compile_s = 0.0
        self.run()
        self.times: list[float] = []

    def run(self) -> float:
        torch = self.torch
        t0 = time.perf_counter()
        perm = torch.randperm(len(self.y))
        for s in range(self.steps):
            i = perm[s * BATCH:(s + 1) * BATCH]
            self.opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = self.crit(self.net(self.x[i]), self.y[i])
            loss.backward()
            self.opt.step()
        self.last_loss = float(loss.item())
        return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default="before,after")
    p.add_argument("--torch", action="store_true")
    p.add_argument("--torch-bf16", action="store_true")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    n = BATCH * args.steps
    data = {"x": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "y": rng.integers(0, 10, n).astype(np.int32)}
    load0 = os.getloadavg()[0]
    print(f"jax {jax.__version__} cpus {len(os.sched_getaffinity(0))} "
          f"load {load0:.1f}", flush=True)
    runs: list = []
    for name in args.variants.split(","):
        run = EngineRun(name, args.replicas, args.steps, data)
        print(f"  compiled {name}: {run.compile_s:.1f} s", flush=True)
        runs.append(run)
    torch_run = None
    if args.torch_bf16:
        runs.append(TorchRun(args.steps, data, args.threads, bf16=True))
    if args.torch:
        torch_run = TorchRun(args.steps, data, args.threads)
        runs.append(torch_run)
    for _ in range(args.rounds):
        for run in runs:
            run.times.append(run.run())
    base = runs[0]
    base_per = np.asarray(base.times) / base.replicas
    rows = []
    for run in runs:
        r = run.replicas
        t = np.asarray(run.times)
        per = t / (r * args.steps) * 1e3  # ms per replica-step
        row = {"name": run.name, "replicas": r, "ms_median": float(np.median(per)),
               "ms_min": float(per.min()), "compile_s": run.compile_s,
               "img_s_median": float(BATCH / np.median(per) * 1e3),
               "vs_first": float(np.median((t / r) / base_per)),
               "loss": run.last_loss}
        if torch_run is not None:
            row["speed_vs_torch"] = float(np.median(
                np.asarray(torch_run.times) / (t / r)))
        rows.append(row)
        print(f"{run.name:28s} R={r:<3d} {row['ms_median']:8.1f} ms/replica-step "
              f"(min {row['ms_min']:7.1f})  {row['img_s_median']:7.0f} img/s  "
              f"time vs {base.name} {row['vs_first']:.2f}"
              + (f"  speed vs torch {row['speed_vs_torch']:.2f}"
                 if torch_run is not None else "")
              + f"  loss {row['loss']:.3f}", flush=True)
    load1 = os.getloadavg()[0]
    print(f"load {load1:.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"argv": sys.argv[1:], "load": [load0, load1], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
