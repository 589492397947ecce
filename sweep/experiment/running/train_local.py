"""Train a sweep's replicas on this host, chunk by chunk, each chunk one atomic write.

A chunk is as many replicas as fit the device, padded to one size so every
chunk shares one compilation. When a chunk runs out of device memory it is
retried at half the size; chunks checkpointed mid-way by an interrupted run
(`checkpoints`) continue first, at the size they started with.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np

from sweep import engine as engine_lib
from sweep import results
from sweep.engine import memory, sharding
from sweep.errors import SweepError
from sweep.experiment.prepare import Prepared, build_engine
from sweep.experiment.running import checkpoints, time_warning


def chunks(todo: list[int], size: int) -> list[list[int]]:
    """Split replica ids into near-equal chunks of at most `size`."""
    if not todo:
        return []
    n = math.ceil(len(todo) / size)
    even = math.ceil(len(todo) / n)
    return [todo[i : i + even] for i in range(0, len(todo), even)]


def chunk_size(p: Prepared, todo: list[int], manifest: dict, *,
               size_hint: int | None = None) -> int:
    """Replicas per chunk for `todo`, recorded in the manifest.

    `--replicas-per-step`, else as many as fit the device, evened out over the
    chunks and rounded to a whole number per device. `size_hint` is the size an
    earlier run of this sweep chose, so a resumed sweep splits the rest as it
    would have.
    """
    c = p.config
    recipe = p.recipe()
    devices = local_devices(p)
    n_dev = 1 if devices is None else len(devices)
    if size_hint and not c.replicas_per_step and size_hint % n_dev == 0:
        size = size_hint  # already even over the whole sweep
    else:
        per_replica = None
        if c.model == "head":
            per_replica = memory.head_bytes(
                recipe.eval_batch_size, int(np.prod(p.train_images.shape[1:]))
            )
        size = c.replicas_per_step or n_dev * memory.auto_replicas_per_step(
            recipe.batch_size, recipe.eval_batch_size, per_replica
        )
        # Even chunks: 21 replicas at 19 per step train as 11 + 10, not 19 + 2
        # with the second padded to 19; then a whole number per device.
        size = sharding.round_up(len(chunks(todo, size)[0]), n_dev)
    manifest["replicas_per_step"] = size
    manifest["devices_used"] = n_dev  # the replica axis is sharded over these
    results.write_json(manifest, p.out / results.MANIFEST)
    return size


def local_devices(p: Prepared) -> list | None:
    """The devices one chunk's replica axis spans; on a cluster every task holds
    one device, so None (the default device)."""
    return None if p.config.cluster else sharding.local_devices(p.config.devices)


def train_chunks(p: Prepared, todo: list[int], size: int, manifest: dict, *, log,
                 progress) -> None:
    """Train the replicas in `todo` here, `size` per chunk, writing each as it ends.

    Chunks checkpointed mid-way by an interrupted run continue first, at the
    replica count they started with.
    """
    c = p.config
    recipe = p.recipe()
    devices = local_devices(p)
    n_dev = 1 if devices is None else len(devices)
    ticks = None if progress is None else StepTicks(progress, recipe.steps_per_epoch)
    t0 = time.time()
    engine = build_engine(p, devices, on_step=ticks)
    timings = manifest["timings"]
    timings["data_to_device_s"] = round(time.time() - t0, 3)

    saved = []
    for state in results.load_chunk_states(p.out):
        if set(state["replicas"]) <= set(todo):
            saved.append(state)
        else:  # left by a chunk that finished after all
            state["path"].unlink(missing_ok=True)
    in_saved = {i for state in saved for i in state["replicas"]}
    pending = [i for i in todo if i not in in_saved]

    if n_dev > 1 and jax.default_backend() != "cpu":
        parallel, where = n_dev, f"{n_dev} {jax.default_backend()} devices"
    elif n_dev > 1:  # virtual CPU devices share the host's cores
        parallel, where = 1, f"{n_dev} CPU devices (sharing this host's cores)"
    else:
        parallel, where = 1, None
    time_warning.warn_if_slow(p, engine, len(todo), size, log=log, parallel=parallel,
                              where=where)
    if progress is not None:
        # Epochs that checkpointed chunks already trained count as done.
        done = sum(len(state["replicas"]) * len(state["history"]["test_loss"])
                   for state in saved)
        progress.start(len(todo) * c.epochs, unit_images=recipe.n_train, done=done)
    chunk_times = timings.setdefault("chunks", [])
    while saved or pending:
        if saved:
            resumed = saved.pop(0)
            chunk, padded = resumed["replicas"], resumed["padded"]
        else:
            resumed = None
            chunk, padded = chunks(pending, size)[0], size
        try:
            t_chunk = time.time()
            history = train_chunk(p, engine, chunk, padded, ticks=ticks,
                                  resumed=resumed)
        except Exception as e:  # out of device memory: retry with smaller chunks
            if not is_oom(e):
                raise
            if padded <= n_dev:
                where = "step" if n_dev == 1 else "device"
                raise SweepError(
                    f"out of device memory even with one replica per {where}; try a "
                    "smaller --batch-size or --train-size"
                ) from None
            if resumed is not None:  # cannot continue at another size: start over
                resumed["path"].unlink(missing_ok=True)
                pending = sorted(set(pending) | set(chunk))
            half = max(n_dev, sharding.round_up(padded // 2, n_dev))
            size = sharding.round_up(len(chunks(pending, half)[0]), n_dev)
            manifest["replicas_per_step"] = size
            log(f"out of device memory; retrying with {size} replicas per step")
            continue
        write_chunk_tables(p, chunk, history)
        chunk_times.append(
            {"replicas": len(chunk), "padded_to": padded,
             "seconds": round(time.time() - t_chunk, 3),
             **({"resumed_at_epoch": len(resumed["history"]["test_loss"])}
                if resumed else {})}
        )
        results.write_json(manifest, p.out / results.MANIFEST)
        pending = [i for i in pending if i not in chunk]
    if progress is not None:
        progress.close()


def write_chunk_tables(p: Prepared, chunk: list[int], history) -> None:
    """One finished chunk's metrics and confusion, written atomically.

    Only a matrix's tables carry source/target columns: a one-pair sweep's stay
    as they always were (its pair is in the manifest)."""
    seeds_counts = [p.grid.replica(i) for i in chunk]
    pairs = [p.replica_pair(i) for i in chunk] if p.is_matrix else None
    bd = p.backdoor
    metrics, confusion = results.chunk_frames(
        replicas=chunk,
        counts=[sc[1] for sc in seeds_counts],
        seeds=[sc[0] for sc in seeds_counts],
        paired=p.grid.paired,
        class_names=p.dataset.class_names,
        history=history,
        sources=None if pairs is None else [st[0] for st in pairs],
        targets=None if pairs is None else [st[1] for st in pairs],
        backdoor=None if bd is None else (bd.target, bd.source),
    )
    results.write_chunk(p.out, chunk, metrics, confusion)


def train_chunk(p: Prepared, engine, chunk: list[int], size: int, *,
                ticks: StepTicks | None, resumed: dict | None = None):
    """Train one chunk, padded to `size` replicas so every chunk shares one compile.

    Between epochs, at most every `checkpoints.every_s()`, the state is saved so
    a killed sweep continues this chunk where it stopped; `resumed` is such a
    checkpoint (from `results.load_chunk_states`). `ticks` is the progress
    observer the engine was built with.
    """
    epochs = p.config.epochs
    padded = chunk + [chunk[-1]] * (size - len(chunk))
    seeds = np.array([p.grid.replica(i)[0] for i in padded])
    streams = np.array([p.grid.stream(i) for i in padded])
    keys = engine_lib.replica_keys(seeds, streams)
    labels = np.stack([p.replica_labels(i) for i in padded])
    stamps = p.stamps(padded)  # None unless a trigger backdoor

    start = None if resumed is None else checkpoints.restore(engine, keys, resumed)
    save = checkpoints.Saver(p.out, chunk, size, epochs)
    if ticks is not None:
        ticks.start_chunk(len(chunk))

    def on_epoch(epoch, state, history):
        if ticks is not None:
            ticks.end_epoch()
        save(epoch, state, history)

    _, history = engine.train(labels, keys, epochs, on_epoch=on_epoch, start=start,
                              stamps=stamps)
    return history


class StepTicks:
    """Turns the engine's in-epoch step ticks into progress, in replica-epochs.

    The engine is built once with this as its `on_step`; each chunk tells it
    how many real (unpadded) replicas it trains.
    """

    def __init__(self, progress, steps_per_epoch: int):
        self.progress = progress
        self.steps_per_epoch = steps_per_epoch
        self.replicas = 0
        self.ticked = 0.0  # replica-epochs reported by step ticks in this epoch

    def start_chunk(self, replicas: int) -> None:
        self.replicas, self.ticked = replicas, 0.0

    def __call__(self, steps_done: int) -> None:
        so_far = self.replicas * steps_done / self.steps_per_epoch
        if so_far > self.ticked:
            self.progress.advance(so_far - self.ticked, partial=True)
            self.ticked = so_far

    def end_epoch(self) -> None:
        self.progress.advance(self.replicas - self.ticked)
        self.ticked = 0.0


def is_oom(e: Exception) -> bool:
    text = f"{type(e).__name__}: {e}"
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "OOM" in text
