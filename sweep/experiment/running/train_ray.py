"""Chunks as Ray tasks: a sweep across the hosts of a Ray cluster.

The driver resolves the sweep as a local run does, then submits every chunk not
yet on disk as a Ray task holding one device (a GPU where the cluster has them,
else one CPU slot). Each task rebuilds the sweep from its config, trains its
chunk, and writes the chunk's tables atomically into the shared results folder,
exactly as a local run writes them; the driver joins them when all are in. A
task whose worker dies is retried by Ray (`max_retries`), continuing from the
chunk's mid-way checkpoint if one was written; a driver that dies is simply run
again, and the chunks already written are skipped, as in any resumed sweep.

The results folder must be one path every worker can write (a shared
filesystem for many hosts).
"""

from __future__ import annotations

import os
import time
import types
from pathlib import Path

import jax

from sweep import results
from sweep.errors import SweepError
from sweep.experiment.config import parse_cluster
from sweep.experiment.prepare import Prepared, build_engine, prepare
from sweep.experiment.running import perturbation, time_warning, train_local

RAY_MISSING = 'Ray is not installed; pip install -e ".[ray]"'


# Ray re-runs a task whose worker process or node died this many times.
MAX_RETRIES = 3
# Set to a folder to have every task attempt write `<chunk id>.<pid>` there
# (lets an operator, or a test, find and stop the process training a chunk).
PID_DIR_ENV = "SWEEP_TASK_PID_DIR"


def import_ray():
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_MISSING) from None
    return ray


def connect(spec: str, *, log) -> object:
    """Join the cluster `spec` names, or start a local one (all CPUs/GPUs here)."""
    ray = import_ray()
    address = parse_cluster(spec)
    if not ray.is_initialized():
        local = address is None and not os.environ.get("RAY_ADDRESS")
        # A cluster started here only moves small task results: keep its object
        # store (shared memory) small on a shared machine.
        extra = {"object_store_memory": 256 * 2**20} if local else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **extra)
    res = ray.cluster_resources()
    log(f"ray: {int(res.get('CPU', 0))} CPU(s), {int(res.get('GPU', 0))} GPU(s) "
        f"on {sum(1 for n in ray.nodes() if n.get('Alive'))} node(s)")
    return ray


def train_chunks(p: Prepared, todo: list[int], size: int, manifest: dict, *, log,
                 progress) -> None:
    """Train `todo` as Ray tasks, one chunk each, written by the tasks themselves.

    Chunks with a mid-way checkpoint keep their replicas and padded size (the
    task continues them); the rest are split as a local run splits them.
    """
    ray = connect(p.config.cluster, log=log)
    gpus = ray.cluster_resources().get("GPU", 0)
    slot = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False,
                      **slot)(train_chunk_task)
    # Workers may start elsewhere: hand them absolute paths.
    config = p.config.replace(out=str(p.out.resolve()), data=_absolute(p.config.data))

    saved = [s for s in results.load_chunk_states(p.out)
             if set(s["replicas"]) <= set(todo)]
    in_saved = {i for s in saved for i in s["replicas"]}
    pending = [i for i in todo if i not in in_saved]
    work = [(s["replicas"], s["padded"]) for s in saved]
    work += [(chunk, size) for chunk in train_local.chunks(pending, size)]
    epochs = p.config.epochs
    if progress is not None:
        progress.start(len(todo) * epochs, unit_images=len(p.train_labels))
    log(f"ray: {len(work)} chunk(s) of up to {size} replicas as tasks")
    _plan(p, ray, len(todo), size, log=log)
    refs = {task.remote(config, chunk, padded): chunk for chunk, padded in work}
    chunk_times = manifest["timings"].setdefault("chunks", [])
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        chunk = refs.pop(ready[0])
        try:
            record = ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SweepError):  # bad input found on the worker
                raise cause from None
            raise
        except ray.exceptions.RayError as e:  # retries spent: the worker kept dying
            raise SweepError(
                f"chunk {results.chunk_id(chunk)} failed {MAX_RETRIES + 1} times on "
                f"the cluster ({type(e).__name__}); run the same command to resume"
            ) from None
        chunk_times.append({**record, "finished": round(time.time(), 3)})
        results.write_json(manifest, p.out / results.MANIFEST)
        if progress is not None:
            progress.advance(len(chunk) * epochs)
    if progress is not None:
        progress.close()


def _plan(p, ray, n_replicas: int, size: int, *, log) -> None:
    """The run's time warning, for the cluster: tasks run on GPUs (one each) or,
    on a CPU cluster, one node's cores at a time; each is assumed as fast as the
    driver's device, so the estimate is only given where they are of one kind."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if (gpus > 0) != (jax.default_backend() == "gpu"):
        log("ray: the driver's device is not the workers' kind; no time estimate")
        return
    slots = gpus or nodes
    engine = types.SimpleNamespace(recipe=p.recipe(),
                                   train_images=jax.device_put(p.train_images))
    time_warning.warn_if_slow(p, engine, n_replicas, size, log=log, parallel=slots,
                              where=f"the Ray cluster ({slots} {'GPU' if gpus else 'node'}"
                               "(s) at this driver's speed)")


def train_chunk_task(config, chunk: list[int], padded: int) -> dict:
    """One chunk on a worker: train it (from its checkpoint if there is one) and
    write its tables into the results folder. Returns its timing record."""
    pid_dir = os.environ.get(PID_DIR_ENV)
    if pid_dir:
        name = f"{results.chunk_id(chunk)}.{os.getpid()}"
        Path(pid_dir, name).write_text(str(os.getpid()))
    t0 = time.time()
    p, engine = _worker_sweep(config)
    resumed = next((s for s in results.load_chunk_states(p.out)
                    if s["replicas"] == list(chunk) and s["padded"] == padded), None)
    history = train_local.train_chunk(p, engine, list(chunk), padded, ticks=None,
                                   resumed=resumed)
    train_local.write_chunk_tables(p, list(chunk), history)
    record = {"replicas": len(chunk), "padded_to": padded,
              "seconds": round(time.time() - t0, 3), "pid": os.getpid()}
    if resumed is not None:
        record["resumed_at_epoch"] = len(resumed["history"]["test_loss"])
    return record


_WORKER: dict = {}  # per worker process: the prepared sweep and its engine


def _worker_sweep(config):
    """The sweep and its compiled engine, built once per worker process."""
    if config not in _WORKER:  # one engine serves every chunk size (a recompile)
        _WORKER.clear()
        # A clean-label sweep's perturbed pixels are the driver's (the file).
        p = perturbation.attach(prepare(config), compute=False)
        _WORKER[config] = (p, build_engine(p, devices=None))
    return _WORKER[config]


def _absolute(data: str | None) -> str | None:
    if data is not None and os.path.exists(data):
        return os.path.abspath(data)
    return data
