"""The engine against PyTorch as a competent user runs it, on the CPU: one run, ratios.

    PYTHONPATH=. python bench/cpu_fair.py [--data ../shared/data/cifar10]
        [--train-images 10000] [--replicas 1,8] [--rounds 3] [--threads N]
        [--json bench/cpu_fair.json]

`bench/train_bench.py` times PyTorch from inside the loop that builds each
model and over 10 steps a model; that flatters the engine (issue 21). Here
PyTorch gets what a competent user gives it:

- the model and its Adam built before the clock starts (a fresh pair per round);
- the training images already normalised to [-1, 1], float32 NCHW, contiguous;
- `torch.set_num_threads` at the cores this process may use (`--threads`);
- whole epochs: every image once, 128 a batch, the last short batch included.

The engine gets the same: its epoch compiled before the clock starts, the uint8
images resident on the device, one whole epoch (`Engine.train_epoch`, its
`lax.scan` over the same number of steps) for R replicas at once.

Rounds interleave the paths (engine R=1, engine R=8, ..., PyTorch), so load from
other jobs falls on all of them alike; each round gives its own ratios, and
the medians over rounds are reported beside their range. Throughput is in
replica-images per second: R x images / epoch seconds for the engine, images /
epoch seconds for PyTorch (one model after another costs R times one model).
Cost ratio: time(R) / (R x time(1)), below 1 when replicas together are
cheaper than one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep import data as data_lib  # noqa: E402
from sweep import engine as engine_lib  # noqa: E402

BATCH, LR, DROPOUT, CLASSES = 128, 1e-3, 0.5, 10


def cpu_model() -> dict:
    """The host's CPU model and the instruction-set flags that matter to XLA."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    return {"model": model, "flags": [f for f in wanted if f in flags],
            "cores": os.cpu_count()}


def commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], text=True,
                              capture_output=True, cwd=Path(__file__).parent)
        return done.stdout.strip()
    except OSError:
        return "?"


def load(path: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """n class-balanced training images (uint8 NHWC) and labels."""
    if path:
        ds = data_lib.load(path)
        x, y = np.asarray(ds.train_images), np.asarray(ds.train_labels, np.int32)
        rng = np.random.default_rng(0)
        per = n // CLASSES
        i = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per]
                            for c in range(CLASSES)])
        i = rng.permutation(i)
        return x[i], y[i], f"{ds.source}, {len(i)} class-balanced training images"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return x, rng.integers(0, CLASSES, n).astype(np.int32), "synthetic"


class EnginePath:
    """R replicas' epoch, compiled once, timed per call."""

    def __init__(self, x: np.ndarray, y: np.ndarray, replicas: int):
        self.r, n = replicas, len(y)
        recipe = engine_lib.Recipe(n_train=n, n_classes=CLASSES, batch_size=BATCH,
                                   lr=LR, dropout=DROPOUT)
        self.eng = engine_lib.Engine(recipe, x, x[:BATCH], y[:BATCH])
        self.keys = engine_lib.replica_keys(np.arange(replicas), np.zeros(replicas))
        self.labels = jax.device_put(np.broadcast_to(y, (replicas, n)).astype(np.int32))
        self.state = self.eng.init(self.keys)
        self.epoch = 0
        t0 = time.perf_counter()
        self.compiled = self.eng.train_epoch.lower(
            self.state, self.eng.train_images, self.labels, self.keys,
            jnp.int32(0)).compile()
        self.compile_s = time.perf_counter() - t0
        self.images = n * replicas
        self.run()  # warm-up: first-call allocations stay out of the rounds

    def run(self) -> float:
        t0 = time.perf_counter()
        self.state, loss, _ = self.compiled(self.state, self.eng.train_images,
                                            self.labels, self.keys,
                                            jnp.int32(self.epoch))
        jax.block_until_ready((self.state, loss))
        self.epoch += 1
        return time.perf_counter() - t0


class TorchPath:
    """The notebook's SimpleCNN and Adam, one model's epoch per call."""

    def __init__(self, x: np.ndarray, y: np.ndarray, threads: int):
        import torch
        from torch import nn

        self.torch, self.nn = torch, nn
        torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.version = torch.__version__
        # Normalised once, outside every timed region: (x / 255 - 0.5) / 0.5.
        self.x = torch.from_numpy(
            (x.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy())
        self.y = torch.from_numpy(y.astype(np.int64))
        self.images = len(y)
        self.seed = 0
        self.run()  # warm-up: oneDNN primitives are created on first use

    def build(self):
        nn = self.nn
        self.torch.manual_seed(self.seed)
        self.seed += 1
        net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(DROPOUT),
            nn.Linear(512, CLASSES))
        return net, self.torch.optim.Adam(net.parameters(), lr=LR)

    def run(self) -> float:
        torch = self.torch
        net, opt = self.build()
        net.train()
        loss_fn = self.nn.CrossEntropyLoss()
        perm = torch.randperm(self.images)
        t0 = time.perf_counter()
        for s in range(0, self.images, BATCH):
            i = perm[s:s + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(self.x[i]), self.y[i])
            loss.backward()
            opt.step()
        loss.detach().item()  # waits for the last step
        return time.perf_counter() - t0


def median(v: list[float]) -> float:
    return float(np.median(v))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(__file__).resolve().parents[2] / "shared/data/cifar10"
    p.add_argument("--data",
                   default=str(default_data) if default_data.exists() else None)
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--replicas", default="1,8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--json", default="bench/cpu_fair.json")
    args = p.parse_args(argv)
    rs = [int(r) for r in args.replicas.split(",")]

    try:
        import torch  # noqa: F401
    except ImportError:
        print("bench/cpu_fair.py needs PyTorch, the peer: pip install -e '.[bench]' "
              "(CPU-only: the CPU wheel index first)", file=sys.stderr)
        return 2
    x, y, source = load(args.data, args.train_images)
    host = {**cpu_model(), "load_average_start": os.getloadavg(), "commit": commit(),
            "jax": jax.__version__, "backend": jax.default_backend()}
    print(f"{host['model']} ({host['cores']} cores; {' '.join(host['flags'])}), "
          f"load {host['load_average_start'][0]:.1f}, commit {host['commit']}; "
          f"{source}", file=sys.stderr)
    engines = {r: EnginePath(x, y, r) for r in rs}
    peer = TorchPath(x, y, args.threads)

    rounds = []
    for k in range(args.rounds):
        row = {f"engine_R{r}_s": engines[r].run() for r in rs}
        row["torch_s"] = peer.run()
        torch_rate = peer.images / row["torch_s"]
        for r in rs:
            rate = engines[r].images / row[f"engine_R{r}_s"]
            row[f"engine_R{r}_vs_torch"] = rate / torch_rate
            if rs[0] == 1:
                row[f"cost_R{r}"] = row[f"engine_R{r}_s"] / (r * row["engine_R1_s"])
        rounds.append(row)
        print(f"round {k + 1}: torch {torch_rate:,.0f} img/s; " + "; ".join(
            f"engine R={r} {engines[r].images / row[f'engine_R{r}_s']:,.0f} "
            f"({row[f'engine_R{r}_vs_torch']:.2f}x)" for r in rs), file=sys.stderr)

    result = {
        "host": {**host, "load_average_end": os.getloadavg()},
        "data": source, "train_images": len(y), "threads": peer.threads,
        "torch": peer.version, "rounds": rounds,
        "compile_s": {f"R{r}": engines[r].compile_s for r in rs},
        "median": {key: median([row[key] for row in rounds]) for key in rounds[0]},
        "range": {key: [min(row[key] for row in rounds),
                        max(row[key] for row in rounds)] for key in rounds[0]},
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    m, rg = result["median"], result["range"]
    print(f"\nPyTorch (fair: model built untimed, data normalised, {peer.threads} "
          f"threads, whole epochs): {peer.images / m['torch_s']:,.0f} img/s")
    for r in rs:
        cost = (f", cost ratio {m[f'cost_R{r}']:.2f}" if f"cost_R{r}" in m else "")
        print(f"engine R={r}: {engines[r].images / m[f'engine_R{r}_s']:,.0f} "
              f"replica-img/s, {m[f'engine_R{r}_vs_torch']:.2f}x PyTorch "
              f"[{rg[f'engine_R{r}_vs_torch'][0]:.2f}-{rg[f'engine_R{r}_vs_torch'][1]:.2f}]"
              f"{cost}")
    print(f"(medians of {args.rounds} interleaved rounds; {args.json})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
