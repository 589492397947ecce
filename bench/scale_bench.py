"""Past one device: 1 vs 4 virtual CPU devices, measured overheads, and the wall
time of the full attack matrix projected onto 1, 8 and 64 GPUs.

    PYTHONPATH=. python bench/scale_bench.py [--replicas 4] [--images 256]
        [--repeats 3] [--gpu-json PATH] [--skip-ray] [--json bench/scale.json]

1. Devices. The engine's compiled epoch (R replicas, ``--images`` real CIFAR-10
   images, batch 128) timed in three fresh processes: (a) one CPU device as
   today; (b) one of 4 virtual CPU devices
   (``XLA_FLAGS=--xla_force_host_platform_device_count=4``); (c) the replica
   axis sharded over those 4 (``sweep.engine.sharding``). Steady state, median of
   ``--repeats`` epochs after a compiling one, ``block_until_ready`` inside the
   clock. Virtual devices share this host's cores, so (c)/(a) measures what the
   sharding costs, not a speed-up.
2. Overheads, measured here: writing one chunk's tables (16 replicas x 5
   epochs), putting 50,000 uint8 images on the device, and with Ray installed
   a local cluster's start, a task's round trip, and a fresh worker's first task
   that imports the sweep (JAX).
3. Projection. The full attack matrix (90 ordered CIFAR-10 pairs x counts
   1,5,10,50,100 x 8 seeds, 5 epochs, 50,000 train / 10,000 test images: one
   shared clean replica per seed, 8 x (1 + 450) = 3,608 replicas) on G GPUs:

       T(G) = start + compile + ceil(chunks / G) x (chunk compute + write + task)
       chunk compute = chunk replicas x epochs x (N_train / train_rate + N_test / eval_rate)
       chunks = max(G, ceil(replicas / fit)), fit = sweep.engine.memory's per-device estimate

   train_rate and eval_rate (replica-images/s on one GPU) come from
   ``--gpu-json``, a ``bench/train_bench.py`` JSON measured on a GPU; without one
   they are ASSUMPTIONS, labelled as such in the output, never measurements.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = Path(os.environ.get("SWEEP_TEST_DATA", REPO.parent / "shared/data/cifar10"))
FLAG = "--xla_force_host_platform_device_count=4"

# The full attack matrix (issue 12).
MATRIX = {"pairs": 90, "counts": 5, "seeds": 8, "epochs": 5, "n_train": 50_000,
          "n_test": 10_000}
# ASSUMED when no GPU measurement is given: an H100 sustaining 20 TFLOP/s on
# this small f32 CNN (about 30% of its 67 TFLOP/s FP32 rate; no measurement),
# and evaluation (forward only, a third of the FLOPs) at 3x the training rate.
ASSUMED_GPU_TFLOPS = 20.0
ASSUMED_EVAL_OVER_TRAIN = 3.0
ASSUMED_GPU_BYTES = 80e9  # H100 memory, for the chunk size
ASSUMED_GPU_COMPILE_S = 30.0  # one compile per worker; not measured on a GPU


def worker(args) -> None:
    """One timing in this process (spawned with or without the XLA flag)."""
    import jax
    import numpy as np

    from sweep import engine as engine_lib
    from tests.fixtures_data import shared_slice

    ds = shared_slice(args.images // 10, 1)
    images = ds.train_images[: args.images]
    labels = np.tile(ds.train_labels[: args.images].astype(np.int32), (args.replicas, 1))
    recipe = engine_lib.Recipe(n_train=len(images), n_classes=10, batch_size=128)
    devices = jax.local_devices()[: args.n_devices]
    eng = engine_lib.Engine(recipe, images, ds.test_images, ds.test_labels,
                            devices=devices)
    r = args.replicas
    keys = engine_lib.replica_keys(np.arange(r), np.zeros(r))
    state = eng.init(keys)
    y = eng.place(jax.numpy.asarray(labels), r)
    k = keys if eng.sharding is None else eng.place(keys, r)
    times = []
    for epoch in range(args.repeats + 1):
        t0 = time.perf_counter()
        state, loss, correct = eng.train_epoch(state, eng.train_images, y, k,
                                               jax.numpy.int32(epoch))
        jax.block_until_ready((state, loss, correct))
        times.append(time.perf_counter() - t0)
    steady = float(np.median(times[1:]))
    shards = {d.id for leaf in jax.tree.leaves(state.params) for d in leaf.devices()}
    print(json.dumps({
        "devices_visible": len(jax.local_devices()), "devices_used": len(devices),
        "param_devices": len(shards), "replicas": r, "images": len(images),
        "first_epoch_s": round(times[0], 3), "epoch_s": [round(t, 3) for t in times[1:]],
        "epoch_s_median": round(steady, 3),
        "replica_images_per_s": round(r * len(images) / steady, 1),
        "sharded": eng.sharding is not None,
    }))


def spawn(args, *, flag: bool, n_devices: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if flag:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + FLAG).strip()
    cmd = [sys.executable, __file__, "--worker", "--n-devices", str(n_devices),
           "--replicas", str(args.replicas), "--images", str(args.images),
           "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def overheads(skip_ray: bool) -> dict:
    import jax
    import numpy as np

    from sweep import engine as engine_lib
    from sweep import results

    out = {}
    r, epochs, k = 16, 5, 10
    history = [engine_lib.EpochMetrics(np.ones(r), np.ones(r), np.ones(r),
                                       np.full((r, k, k), 10, np.int32))
               for _ in range(epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        results.prepare_dir(Path(tmp))
        times = []
        for i in range(5):
            t0 = time.perf_counter()
            m, c = results.chunk_frames(
                replicas=list(range(r)), counts=[0] * r, seeds=list(range(r)),
                paired=True, class_names=[str(i) for i in range(k)], history=history,
                sources=[-1] * r, targets=[-1] * r)
            results.write_chunk(Path(tmp), list(range(i * r, (i + 1) * r)), m, c)
            times.append(time.perf_counter() - t0)
    out["chunk_write_s"] = round(float(np.median(times)), 4)
    images = np.zeros((50_000, 32, 32, 3), np.uint8)
    t0 = time.perf_counter()
    jax.block_until_ready(jax.device_put(images))
    out["data_to_device_s"] = round(time.perf_counter() - t0, 4)
    if skip_ray:
        return out
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:  # its own process: Ray starts before anything imports JAX there
        done = subprocess.run([sys.executable, __file__, "--ray-worker"], env=env,
                              capture_output=True, text=True, timeout=900)
        out.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, IndexError, ValueError) as e:
        out["ray"] = f"not measured ({type(e).__name__})"
    return out


def ray_worker() -> None:
    """Ray's own overheads on a local 2-CPU cluster, printed as one JSON line."""
    import numpy as np

    try:
        import ray
    except ImportError:
        print(json.dumps({"ray": "not installed"}))
        return
    out = {}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 2**20, configure_logging=False)
    out["ray_start_s"] = round(time.perf_counter() - t0, 3)

    @ray.remote(num_cpus=1)
    def noop():
        return os.getpid()

    @ray.remote(num_cpus=1, max_calls=1)  # a fresh worker process each call
    def cold_import():
        import jax as j

        import sweep.experiment.prepare  # noqa: F401  (imports JAX, as a chunk task does)

        return len(j.devices())

    ray.get(noop.remote())  # a warm worker
    rts = []
    for _ in range(20):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        rts.append(time.perf_counter() - t0)
    out["ray_task_round_trip_s"] = round(float(np.median(rts)), 4)
    t0 = time.perf_counter()
    ray.get(cold_import.remote())
    out["ray_fresh_worker_import_s"] = round(time.perf_counter() - t0, 3)
    ray.shutdown()
    print(json.dumps(out))


def projection(gpu: dict, measured: dict, cpu_compile_s: float) -> dict:
    from sweep.engine.memory import BYTES_PER_REPLICA_FIXED, BYTES_PER_REPLICA_IMAGE

    m = MATRIX
    replicas = m["seeds"] * (1 + m["pairs"] * m["counts"])
    per_replica = BYTES_PER_REPLICA_FIXED + BYTES_PER_REPLICA_IMAGE * max(128, 500)
    fit = max(1, int(0.6 * gpu["bytes"] // per_replica))
    task = measured.get("ray_task_round_trip_s", 0.0)
    start = measured.get("ray_start_s", 0.0) + measured.get("ray_fresh_worker_import_s", 0.0)
    rows = []
    for g in (1, 8, 64):
        n_chunks = max(g, math.ceil(replicas / fit))
        chunk = math.ceil(replicas / n_chunks)
        compute = chunk * m["epochs"] * (m["n_train"] / gpu["train_rate"]
                                         + m["n_test"] / gpu["eval_rate"])
        per_chunk = compute + measured["chunk_write_s"] + (task if g > 1 else 0.0)
        waves = math.ceil(n_chunks / g)
        total = (start if g > 1 else 0.0) + gpu["compile_s"] + waves * per_chunk
        rows.append({"gpus": g, "chunks": n_chunks, "replicas_per_chunk": chunk,
                     "waves": waves, "chunk_compute_s": round(compute, 2),
                     "total_s": round(total, 1),
                     "compute_share": round(waves * compute / total, 3)})
    return {"replicas": replicas, "fit_per_gpu": fit, "rows": rows,
            "inputs": gpu, "cpu_compile_s_measured": cpu_compile_s}


def gpu_rates(path: str | None) -> dict:
    if path:
        res = json.loads(Path(path).read_text())
        if res["env"]["backend"] != "gpu":
            raise SystemExit(f"{path} was measured on {res['env']['backend']}, not a GPU")
        train = max(r["replica_images_per_s"] for r in res["scaling"]["rows"])
        return {"source": f"measured ({path}, {res['env']['device_kind']})",
                "train_rate": train,
                "eval_rate": res["engine_eval"]["replica_images_per_s"],
                "compile_s": max(r["compile_s"] for r in res["scaling"]["rows"]),
                "bytes": ASSUMED_GPU_BYTES}
    from sweep.experiment.running.time_warning import TRAIN_FLOPS_PER_IMAGE

    train = ASSUMED_GPU_TFLOPS * 1e12 / TRAIN_FLOPS_PER_IMAGE
    return {"source": f"ASSUMED: {ASSUMED_GPU_TFLOPS:g} TFLOP/s sustained per H100, "
                      f"eval {ASSUMED_EVAL_OVER_TRAIN:g}x the training rate, "
                      f"compile {ASSUMED_GPU_COMPILE_S:g} s (no GPU measurement)",
            "train_rate": round(train, 1), "eval_rate": round(train * ASSUMED_EVAL_OVER_TRAIN, 1),
            "compile_s": ASSUMED_GPU_COMPILE_S, "bytes": ASSUMED_GPU_BYTES}


def fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h")


def markdown(res: dict) -> str:
    d = res["devices"]
    a, b, c = d["one_device"], d["one_of_four_virtual"], d["four_virtual_sharded"]
    p = res["projection"]
    lines = [
        f"### Past one device: {res['env']['host']}, {res['env']['date'][:10]}", "",
        f"- command: `{res['env']['command']}`",
        f"- commit `{res['env']['commit']}`; jax {res['env']['jax']}; "
        f"{os.cpu_count()} cores; "
        + ("machine load: see the measuring run" if res["env"].get("from_log") else
           f"machine load (1 min) at start {res['env']['load_start']:.1f}, at end "
           f"{res['env']['load_end']:.1f}"), "",
        f"1 vs 4 virtual CPU devices: {a['replicas']} replicas x {a['images']} real "
        "CIFAR-10 images per epoch, median of "
        f"{len(a['epoch_s'])} epochs after the compiling one:", "",
        "| setup | devices holding params | epoch s | replica-img/s | vs (a) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in (("(a) 1 CPU device", a), ("(b) 1 of 4 virtual devices", b),
                      ("(c) sharded over 4 virtual devices", c)):
        ratio = row["replica_images_per_s"] / a["replica_images_per_s"]
        lines.append(f"| {name} | {row['param_devices']} | {row['epoch_s_median']:.2f} "
                     f"| {row['replica_images_per_s']:,.0f} | {ratio:.2f} |")
    o = res["overheads"]
    lines += [
        "", "Overheads measured here: "
        + ", ".join(f"{k} {v}" for k, v in o.items()), "",
        f"Full attack matrix: {p['replicas']:,} replicas (90 pairs x 5 counts x 8 "
        "seeds + 8 shared clean), 5 epochs, 50,000 / 10,000 images. Per-GPU rates: "
        f"{p['inputs']['source']}; train {p['inputs']['train_rate']:,.0f}, eval "
        f"{p['inputs']['eval_rate']:,.0f} replica-img/s; {p['fit_per_gpu']} replicas "
        "fit one 80 GB GPU (sweep.engine.memory's estimate).", "",
        "| GPUs | chunks | replicas/chunk | waves | projected wall time | compute share |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["rows"]:
        lines.append(f"| {r['gpus']} | {r['chunks']} | {r['replicas_per_chunk']} | "
                     f"{r['waves']} | {fmt_s(r['total_s'])} | {r['compute_share']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu-json", default=None)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json", default=str(Path(__file__).with_name("scale.json")))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n-devices", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--ray-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--from-log", default=None, help=(
        "finish from the lines a cut-short run printed (its measurements)"))
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.ray_worker:
        return ray_worker()
    import jax

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "command": "PYTHONPATH=. python bench/scale_bench.py " + " ".join(sys.argv[1:]),
           "commit": commit, "jax": jax.__version__, "host": platform.node() or "host",
           "load_start": os.getloadavg()[0]}
    logged = {}
    if args.from_log:
        for line in Path(args.from_log).read_text().splitlines():
            name, _, rest = line.partition(" ")
            if rest.startswith("{"):
                logged[name] = json.loads(rest)
        env["command"] += f"  (measured by the run logged in {args.from_log})"
        env["from_log"] = args.from_log
    devices = {}
    for name, flag, n in (("one_device", False, 1), ("one_of_four_virtual", True, 1),
                          ("four_virtual_sharded", True, 4)):
        devices[name] = logged.get(name) or spawn(args, flag=flag, n_devices=n)
        print(name, json.dumps(devices[name]), flush=True)  # kept if cut short
    measured = logged.get("overheads") or overheads(args.skip_ray)
    print("overheads", json.dumps(measured), flush=True)
    env["load_end"] = os.getloadavg()[0]
    res = {"env": env, "devices": devices, "overheads": measured,
           "projection": projection(gpu_rates(args.gpu_json), measured,
                                    devices["one_device"]["first_epoch_s"])}
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    Path(args.json).with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
