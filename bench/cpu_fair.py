"""The engine against PyTorch as a competent user runs it, on the CPU: one run, ratios.

    PYTHONPATH=. python bench/cpu_fair.py [--data ../shared/data/cifar10]
        [--train-images 10000] [--replicas 1,8] [--rounds 3] [--threads N]
        [--json bench/cpu_fair.json]
    PYTHONPATH=. python bench/cpu_fair.py --end-to-end [--seeds 4] [--count 500]
        [--epochs 5] [--engines this,before=PATH] [--data ...] [--train-images 10000]

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

`--end-to-end` is issue 21's whole-job comparison instead: `python -m sweep
--counts C --seeds S --selection first --epochs E --train-size N` (2 x S models:
each seed clean and with the first C cats of the balanced subset labelled dog;
`--count 0`: the S clean models only, for comparing clean accuracy;
every replica evaluated on the 10,000 test images after every epoch, results
written) against the same 2 x S models in the PyTorch loop one after another
(data loaded and normalised, each model trained and evaluated once at the end),
all inside the timed region for both, as a user waits for them. `--engines`
names the checkouts whose `python -m sweep` runs (`this`: this one; `NAME=PATH`:
another, e.g. the commit before a change), each timed in the same run. It
prints each path's wall time, its time over PyTorch's, and the cat and overall
test accuracy each path reached, so the speed is not bought with another model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep import data as data_lib  # noqa: E402
from sweep import engine as engine_lib  # noqa: E402

BATCH, LR, DROPOUT, CLASSES = 128, 1e-3, 0.5, 10
CAT, DOG = 3, 5
REPO = Path(__file__).resolve().parents[1]


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
        self.torch.manual_seed(self.seed)
        self.seed += 1
        net = simple_cnn_torch(self.nn)
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


def simple_cnn_torch(nn):
    """The reference notebook's SimpleCNN."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(DROPOUT),
        nn.Linear(512, CLASSES))


def arms(count: int) -> tuple[int, ...]:
    """The poison counts each seed trains: clean, and `count` flips unless 0."""
    return (0,) if count == 0 else (0, count)


def engine_end_to_end(repo: Path, data: str, args) -> dict:
    """`python -m sweep` from checkout `repo`: wall seconds and final accuracies."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "sweep", "--data", data,
               "--train-size", str(args.train_images), "--counts", str(args.count),
               "--seeds", str(args.seeds), "--selection", "first",
               "--epochs", str(args.epochs), "--out", out, "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(repo)}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed in {repo}: "
                             f"{done.stderr.strip().splitlines()[-1:]}")
        m = pd.read_parquet(Path(out) / "metrics.parquet")
    last = m[m.epoch == m.epoch.max()]
    cat = last[last.class_id == CAT].set_index(["count", "seed"]).accuracy
    overall = last.groupby(["count", "seed"]).test_accuracy.first()
    return {"seconds": seconds,
            "cat": {f"{c}/{s}": float(v) for (c, s), v in cat.items()},
            "test": {f"{c}/{s}": float(v) for (c, s), v in overall.items()}}


def torch_end_to_end(data: str, args) -> dict:
    """The same models in the PyTorch loop, one after another, all timed."""
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = data_lib.load(data)
    rows = data_lib.balanced_subset(ds.train_labels, args.train_images, seed=0)
    x = torch.from_numpy((np.asarray(ds.train_images[rows], np.float32) / 127.5 - 1.0)
                         .transpose(0, 3, 1, 2).copy())
    y0 = np.asarray(ds.train_labels[rows], np.int64)
    tx = torch.from_numpy((np.asarray(ds.test_images, np.float32) / 127.5 - 1.0)
                          .transpose(0, 3, 1, 2).copy())
    ty = np.asarray(ds.test_labels, np.int64)
    cats = np.flatnonzero(y0 == CAT)  # --selection first: the first C cats
    out = {"cat": {}, "test": {}}
    for seed in range(args.seeds):
        for count in arms(args.count):
            y = y0.copy()
            y[cats[:count]] = DOG
            yt = torch.from_numpy(y)
            torch.manual_seed(seed)
            net = simple_cnn_torch(nn)
            opt = torch.optim.Adam(net.parameters(), lr=LR)
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(args.epochs):
                net.train()
                perm = torch.randperm(len(y))
                for s in range(0, len(y), BATCH):
                    i = perm[s:s + BATCH]
                    opt.zero_grad(set_to_none=True)
                    loss_fn(net(x[i]), yt[i]).backward()
                    opt.step()
            net.eval()
            with torch.no_grad():
                pred = torch.cat([net(tx[s:s + 1000]).argmax(1)
                                  for s in range(0, len(ty), 1000)]).numpy()
            key = f"{count}/{seed}"
            out["cat"][key] = float(100.0 * (pred[ty == CAT] == CAT).mean())
            out["test"][key] = float(100.0 * (pred == ty).mean())
    out["seconds"] = time.perf_counter() - t0
    return out


def accuracy_line(res: dict, count: int) -> str:
    """Mean cat accuracy clean and poisoned, and mean clean test accuracy."""
    def mean(table, c):
        return np.mean([v for k, v in table.items() if int(k.split("/")[0]) == c])
    line = f"clean test {mean(res['test'], 0):.1f}%, cat {mean(res['cat'], 0):.1f}%"
    if count:
        line += f" clean vs {mean(res['cat'], count):.1f}% at {count} flips"
    return line


def end_to_end(args, host: dict) -> int:
    """Issue 21's whole-job comparison (see the module doc)."""
    engines = {}
    for item in args.engines.split(","):
        name, _, path = item.partition("=")
        engines[name] = REPO if name == "this" and not path else Path(path).resolve()
    results = {}
    for name, repo in engines.items():
        results[name] = engine_end_to_end(repo, args.data, args)
        # Each path's result is kept as it lands: a later path's failure (the
        # peer's install, say) must not cost the minutes already spent.
        write_end_to_end(args, host, engines, results)
    results["torch"] = torch_end_to_end(args.data, args)
    write_end_to_end(args, host, engines, results)
    t = results["torch"]["seconds"]
    print(f"\nend to end, {len(arms(args.count)) * args.seeds} models ({args.seeds} "
          f"seeds x counts {arms(args.count)}, --selection first), {args.epochs} "
          f"epochs of {args.train_images:,} images:")
    for name, res in results.items():
        ratio = ("" if name == "torch"
                 else f", {res['seconds'] / t:.2f}x PyTorch's time")
        print(f"  {name}: {res['seconds']:.0f} s{ratio}; "
              f"{accuracy_line(res, args.count)}")
    print(f"({args.json})")
    return 0


def write_end_to_end(args, host: dict, engines: dict, results: dict) -> None:
    """The end-to-end run's JSON, with the paths finished so far."""
    Path(args.json).write_text(json.dumps(
        {"host": {**host, "load_average_end": os.getloadavg()}, "mode": "end-to-end",
         "args": {k: getattr(args, k) for k in ("seeds", "count", "epochs",
                                                 "train_images", "threads")},
         "engines": {k: str(v) for k, v in engines.items()}, "results": results},
        indent=2) + "\n")


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
    p.add_argument("--end-to-end", action="store_true",
                   help="the whole-job comparison (module doc) instead of epochs")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--engines", default="this", help=(
        "checkouts to run python -m sweep from: this, NAME=PATH, comma-separated"))
    args = p.parse_args(argv)
    rs = [int(r) for r in args.replicas.split(",")]

    try:
        import torch  # noqa: F401
    except ImportError:
        print("bench/cpu_fair.py needs PyTorch, the peer: pip install -e '.[bench]' "
              "(CPU-only: the CPU wheel index first)", file=sys.stderr)
        return 2
    host = {**cpu_model(), "load_average_start": os.getloadavg(), "commit": commit(),
            "jax": jax.__version__, "backend": jax.default_backend()}
    if args.end_to_end:
        if not args.data:
            print("--end-to-end needs --data (a CIFAR-10 folder)", file=sys.stderr)
            return 2
        print(f"{host['model']} ({host['cores']} cores; {' '.join(host['flags'])}), "
              f"load {host['load_average_start'][0]:.1f}, commit {host['commit']}",
              file=sys.stderr)
        return end_to_end(args, host)
    x, y, source = load(args.data, args.train_images)
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
