"""Assemble a sweep from a config: data, grid, poisoned labels, engine, results."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep import data as data_lib
from sweep import poison, results
from sweep.config import Config
from sweep.errors import SweepError

# Rough training cost of one image through SimpleCNN: forward + backward ~ 3x the
# 11.4M multiply-adds of the forward pass, 2 FLOPs each.
TRAIN_FLOPS_PER_IMAGE = 3 * 2 * 11_375_616
# Bytes one replica needs on the device per training image of a batch, and fixed
# (parameters, gradients, two Adam moments), measured loosely and rounded up.
BYTES_PER_REPLICA_IMAGE = 1_200_000
BYTES_PER_REPLICA_FIXED = 4 * 4 * 1_147_466


@dataclass(frozen=True)
class Grid:
    """The replicas of a sweep, seed-major: replica i is (seeds[i], counts[i])."""

    counts: tuple[int, ...]  # distinct resolved counts, 0 first
    seeds: tuple[int, ...]  # training seeds
    paired: bool

    @property
    def size(self) -> int:
        return len(self.counts) * len(self.seeds)

    def replica(self, i: int) -> tuple[int, int]:
        """(seed, count) of replica i."""
        return self.seeds[i // len(self.counts)], self.counts[i % len(self.counts)]

    def stream(self, i: int) -> int:
        """Key stream: shared by a seed's twins when paired, distinct otherwise."""
        return 0 if self.paired else 1 + self.replica(i)[1]


@dataclass(frozen=True)
class Prepared:
    """Everything resolved from a config before any training."""

    config: Config
    dataset: data_lib.Dataset
    train_images: np.ndarray  # uint8 (N, H, W, C), after --train-size
    train_labels: np.ndarray  # int32 (N,) clean
    train_rows: np.ndarray  # (N,) row of each image in the full training set
    source_id: int
    target_id: int
    grid: Grid
    labels: dict  # (count, poison seed or -1) -> int32 (N,) poisoned labels
    flipped: dict  # same keys -> flipped indices into the (subset) training set
    out: Path

    def poison_key(self, seed: int, count: int) -> tuple[int, int]:
        return (count, seed if self.config.poison_per_seed else -1)

    def replica_labels(self, replica: int) -> np.ndarray:
        seed, count = self.grid.replica(replica)
        return self.labels[self.poison_key(seed, count)]


def prepare(config: Config) -> Prepared:
    """Load data and resolve the grid; refuses impossible requests before training."""
    check_kernel(config.kernel)
    ds = data_lib.load(config.data)
    rows = np.arange(len(ds.train_labels))
    if config.train_size is not None:
        rows = data_lib.balanced_subset(
            ds.train_labels, config.train_size, seed=config.subset_seed
        )
    images, labels = ds.train_images[rows], ds.train_labels[rows].astype(np.int32)
    source = poison.resolve_class(config.source, ds.class_names)
    target = poison.resolve_class(config.target, ds.class_names)
    if source == target:
        raise SweepError(f"--source and --target are both {ds.class_names[source]!r}")
    available = poison.flippable(labels, source=source, target=target,
                                 strategy=config.strategy)
    counts = poison.resolve_counts(config.counts, available=available)
    seeds = tuple(range(config.seed_start, config.seed_start + config.seeds))
    grid = Grid(counts=counts, seeds=seeds, paired=config.paired)

    poisoned, flipped = {}, {}
    poison_seeds = seeds if config.poison_per_seed else (-1,)
    for ps in poison_seeds:
        for count in counts:
            rng = poison.poison_rng(config.poison_seed, None if ps == -1 else ps)
            new, idx = poison.poison_labels(
                labels, source=source, target=target, count=count,
                strategy=config.strategy, selection=config.selection, rng=rng,
            )
            poisoned[(count, ps)], flipped[(count, ps)] = new.astype(np.int32), idx
    out = Path(config.out) if config.out else default_out(config, ds.class_names,
                                                           source, target)
    return Prepared(config, ds, images, labels, rows, source, target, grid,
                    poisoned, flipped, out)


def check_kernel(name: str) -> None:
    """Refuse an unknown --kernel now, not when the first chunk compiles."""
    if name != "auto":
        from kernels import conv
        from kernels.select import check_impl

        check_impl("conv", name, conv.IMPLS)


def default_out(config: Config, class_names, source: int, target: int) -> Path:
    """A folder named by what the sweep is, so the same command finds it again."""
    name = (f"{class_names[source]}-{class_names[target]}-{config.strategy}"
            f"-s{config.seeds}-{config.fingerprint()}")
    return Path("results") / name


def auto_replicas_per_step(batch_size: int, eval_batch_size: int) -> int:
    """How many replicas fit the device at once, leaving generous headroom."""
    import jax

    dev = jax.devices()[0]
    limit = None
    try:
        stats = dev.memory_stats() or {}
        limit = stats.get("bytes_limit")
    except Exception:  # memory_stats is unimplemented on some backends
        pass
    if not limit:
        limit = _host_memory_bytes()
    per_replica = BYTES_PER_REPLICA_FIXED + BYTES_PER_REPLICA_IMAGE * max(
        batch_size, eval_batch_size // 2
    )
    return max(1, int(0.6 * limit // per_replica))


def _host_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def chunks(todo: list[int], size: int) -> list[list[int]]:
    """Split replica ids into near-equal chunks of at most `size`."""
    if not todo:
        return []
    n = math.ceil(len(todo) / size)
    even = math.ceil(len(todo) / n)
    return [todo[i : i + even] for i in range(0, len(todo), even)]


def environment() -> dict:
    """Versions, device and commit, for the manifest."""
    import flax
    import jax
    import jaxlib
    import optax
    import pandas
    import pyarrow

    dev = jax.devices()[0]
    return {
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "pandas": pandas.__version__,
            "pyarrow": pyarrow.__version__,
        },
        "device": {
            "backend": jax.default_backend(),
            "kind": dev.device_kind,
            "count": jax.device_count(),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
        },
        "commit": _git_commit(),
        "argv": sys.argv,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def poisoned_hash(flipped: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(flipped):
        h.update(repr(key).encode())
        h.update(np.asarray(flipped[key], np.int64).tobytes())
    return "sha256:" + h.hexdigest()


def build_manifest(p: Prepared) -> dict:
    c = p.config
    return {
        "sweep_id": p.out.name,
        "status": "running",
        "fingerprint": c.fingerprint(),
        "config": c.to_dict(),
        "class_names": list(p.dataset.class_names),
        "source_id": p.source_id,
        "target_id": p.target_id,
        "resolved_counts": list(p.grid.counts),
        "seeds_list": list(p.grid.seeds),
        "n_replicas": p.grid.size,
        "data": {
            "source": p.dataset.source,
            "hash": p.dataset.content_hash,
            "n_train": int(len(p.train_labels)),
            "n_test": int(len(p.dataset.test_labels)),
            "train_subset_hash": _array_hash(p.train_rows),
        },
        "data_hash": p.dataset.content_hash,
        "poisoned_hash": poisoned_hash(p.flipped),
        **environment(),
        "timings": {},
    }


def _array_hash(a: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.asarray(a, np.int64).tobytes()).hexdigest()


def check_resumable(old: dict, new: dict, out: Path) -> None:
    """Refuse to continue a folder made by a different sweep, saying what differs."""
    from sweep.config import RUNTIME_FIELDS

    # The data spec may move (a copied folder); its content hash is what counts.
    a = old.get("config", {})
    b = json.loads(json.dumps(new["config"]))  # tuples -> lists, as stored
    diff = [
        f"{k}: {a.get(k)!r} -> {b[k]!r}"
        for k in b
        if k not in RUNTIME_FIELDS and k != "data" and a.get(k) != b[k]
    ]
    if diff:
        raise SweepError(
            f"{out} holds a different sweep ({'; '.join(diff)}); "
            "use another --out or the original options"
        )
    if old.get("data_hash") != new["data_hash"]:
        raise SweepError(
            f"{out} was run on different data ({old.get('data_hash')} there, "
            f"{new['data_hash']} now); use the same data or another --out"
        )


Reporter = Callable[[str], None]


def run(
    config: Config,
    *,
    resume: bool = False,
    log: Reporter = lambda s: print(s, file=sys.stderr),
    progress=None,
    on_facts=None,
) -> Path:
    """Run (or continue) a sweep; returns its results folder.

    Args:
      config: the sweep.
      resume: require an existing results folder to continue.
      log: where one-line status messages go.
      progress: optional `sweep.progress.Progress`-like object with
        `start(total_units, unit_images)`, `advance(units)` and `close()`.
      on_facts: with `config.report`, called with the report's numbers.
    """
    t_start = time.time()
    if config.mlflow is not None:
        from sweep import tracking

        tracking.check_store(config.mlflow)  # before hours of training, not after
    p = prepare(config)
    manifest = build_manifest(p)
    manifest_path = p.out / results.MANIFEST
    if resume and not manifest_path.exists():  # refuse before creating the folder
        raise SweepError(f"nothing to resume in {p.out}: it has no {results.MANIFEST}")
    results.prepare_dir(p.out)
    size_hint = None
    if manifest_path.exists():
        old = results.read_manifest(p.out)
        check_resumable(old, manifest, p.out)
        manifest["timings"] = old.get("timings", {})
        manifest["started"] = old.get("started")
        size_hint = old.get("replicas_per_step")
    manifest.setdefault("started", None)
    manifest["started"] = manifest["started"] or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.write_json(manifest, manifest_path)
    results.write_parquet(
        results.poisoned_frame(p.flipped, p.train_labels, p.labels),
        p.out / "poisoned.parquet",
    )

    done = results.done_replicas(p.out)
    todo = [i for i in range(p.grid.size) if i not in done]
    if done:
        log(f"resuming {p.out}: {len(done)} of {p.grid.size} replicas already done")
    if todo:
        train_chunks(p, todo, manifest, log=log, progress=progress,
                     size_hint=size_hint)
    finalize(p.out, manifest)
    manifest["timings"]["total_s"] = round(
        manifest["timings"].get("total_s", 0.0) + time.time() - t_start, 3
    )
    results.write_json(manifest, manifest_path)
    if config.report:
        from sweep import report

        path = report.write_report(p.out, threshold=config.threshold, on_facts=on_facts)
        log(f"report: {path}")
    if config.mlflow is not None:
        from sweep import tracking

        log(f"mlflow: {tracking.log_sweep(p.out, config.mlflow)}")
    return p.out


def train_chunks(p: Prepared, todo: list[int], manifest: dict, *, log, progress,
                 size_hint: int | None = None) -> None:
    """Train the replicas in `todo`, chunk by chunk, writing each chunk as it ends.

    Chunks checkpointed mid-way by an interrupted run continue first, at the
    replica count they started with. `size_hint` is the chunk size an earlier
    run of this sweep chose, so a resumed sweep splits the rest as it would have.
    """
    from sweep import engine as engine_lib

    c = p.config
    recipe = engine_lib.Recipe(
        n_train=len(p.train_labels),
        n_classes=len(p.dataset.class_names),
        # A batch larger than the data is the whole data, as a DataLoader gives
        # it; padding to the asked size would only waste memory.
        batch_size=min(c.batch_size, len(p.train_labels)),
        lr=c.lr,
        dropout=c.dropout,
        kernel=c.kernel,
        compute_dtype=c.compute_dtype,
        eval_batch_size=min(c.eval_batch_size, len(p.dataset.test_labels)),
    )
    if size_hint and not c.replicas_per_step:
        size = size_hint  # already even over the whole sweep
    else:
        size = c.replicas_per_step or auto_replicas_per_step(
            recipe.batch_size, recipe.eval_batch_size
        )
        # Even chunks: 21 replicas at 19 per step train as 11 + 10, not 19 + 2
        # with the second padded to 19.
        size = len(chunks(todo, size)[0])
    manifest["replicas_per_step"] = size
    results.write_json(manifest, p.out / results.MANIFEST)
    t0 = time.time()
    engine = engine_lib.Engine(
        recipe, p.train_images, p.dataset.test_images, p.dataset.test_labels
    )
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

    warn_if_slow(p, engine, len(todo), size, log=log)
    if progress is not None:
        progress.start(len(todo) * c.epochs, unit_images=recipe.n_train)
        for state in saved:
            progress.advance(len(state["replicas"]) * len(state["history"]["test_loss"]))
    chunk_times = timings.setdefault("chunks", [])
    while saved or pending:
        if saved:
            resumed = saved.pop(0)
            chunk, chunk_size = resumed["replicas"], resumed["padded"]
        else:
            resumed = None
            chunk, chunk_size = chunks(pending, size)[0], size
        try:
            t_chunk = time.time()
            history = train_chunk(p, engine, chunk, chunk_size, progress=progress,
                                  resumed=resumed)
        except Exception as e:  # out of device memory: retry with smaller chunks
            if not _is_oom(e):
                raise
            if chunk_size == 1:
                raise SweepError(
                    "out of device memory even with one replica per step; try a "
                    "smaller --batch-size or --train-size"
                ) from None
            if resumed is not None:  # cannot continue at another size: start over
                resumed["path"].unlink(missing_ok=True)
                pending = sorted(set(pending) | set(chunk))
            size = len(chunks(pending, max(1, chunk_size // 2))[0])
            manifest["replicas_per_step"] = size
            log(f"out of device memory; retrying with {size} replicas per step")
            continue
        seeds_counts = [p.grid.replica(i) for i in chunk]
        metrics, confusion = results.chunk_frames(
            replicas=chunk,
            counts=[sc[1] for sc in seeds_counts],
            seeds=[sc[0] for sc in seeds_counts],
            paired=p.grid.paired,
            class_names=p.dataset.class_names,
            history=history,
        )
        results.write_chunk(p.out, chunk, metrics, confusion)
        chunk_times.append(
            {"replicas": len(chunk), "padded_to": chunk_size,
             "seconds": round(time.time() - t_chunk, 3),
             **({"resumed_at_epoch": len(resumed["history"]["test_loss"])}
                if resumed else {})}
        )
        results.write_json(manifest, p.out / results.MANIFEST)
        pending = [i for i in pending if i not in chunk]
    if progress is not None:
        progress.close()


def warn_if_slow(p: Prepared, engine, n_replicas: int, size: int, *, log) -> None:
    """Warn before training when the sweep will take hours here, with an estimate.

    A cheap bound first (the FLOPs at an optimistic rate for the backend); only
    when that bound is near an hour is a real single-replica step timed, which
    costs a small compile. Batching makes R replicas cost at most about R single
    steps, so on accelerators the estimate is an upper bound.
    """
    import jax

    from sweep import engine as engine_lib

    c = p.config
    images = n_replicas * len(p.train_labels) * c.epochs
    optimistic = {"cpu": 1e11 * (os.cpu_count() or 1)}.get(jax.default_backend(), 4e14)
    if images * TRAIN_FLOPS_PER_IMAGE / optimistic < 1800:
        return
    seconds_per_step = engine_lib.time_single_step(engine.recipe, engine.train_images)
    steps = engine.recipe.steps_per_epoch * c.epochs
    estimate = seconds_per_step * steps * n_replicas
    if estimate > 3600:
        bound = "" if jax.default_backend() == "cpu" else "at most "
        log(
            f"warning: this sweep ({n_replicas} replicas x {c.epochs} epochs x "
            f"{len(p.train_labels):,} images) will take {bound}about "
            f"{estimate / 3600:.1f} hours on this {jax.default_backend()} device "
            f"({seconds_per_step * 1e3:.0f} ms per single-replica step); "
            "try --train-size, fewer --seeds/--counts, or a GPU"
        )


def checkpoint_every_s() -> float:
    """Seconds between mid-chunk checkpoints; a state copy costs ~14 MB a replica,
    so chunks whose epochs take seconds (accelerators) never write one."""
    return float(os.environ.get("SWEEP_CHECKPOINT_S", "60"))


def train_chunk(p: Prepared, engine, chunk: list[int], size: int, *, progress,
                resumed: dict | None = None):
    """Train one chunk, padded to `size` replicas so every chunk shares one compile.

    Between epochs, at most every `checkpoint_every_s()`, the state is saved so
    a killed sweep continues this chunk where it stopped; `resumed` is such a
    checkpoint (from `results.load_chunk_states`).
    """
    import jax

    from sweep import engine as engine_lib

    epochs = p.config.epochs
    padded = chunk + [chunk[-1]] * (size - len(chunk))
    seeds = np.array([p.grid.replica(i)[0] for i in padded])
    streams = np.array([p.grid.stream(i) for i in padded])
    keys = engine_lib.replica_keys(seeds, streams)
    labels = np.stack([p.replica_labels(i) for i in padded])

    start = None
    if resumed is not None:
        treedef = jax.tree.structure(jax.eval_shape(engine.init, keys))
        state = jax.tree.unflatten(treedef, [jax.device_put(a) for a in resumed["leaves"]])
        h = resumed["history"]
        history = [engine_lib.EpochMetrics(**{k: h[k][e] for k in h})
                   for e in range(len(h["test_loss"]))]
        start = (state, history)

    every = checkpoint_every_s()
    last_save = time.time()
    ticked = 0.0  # replica-epochs reported by step ticks in this epoch

    def on_step(steps_done):
        nonlocal ticked
        so_far = len(chunk) * steps_done / engine.recipe.steps_per_epoch
        if so_far > ticked:
            progress.advance(so_far - ticked, partial=True)
            ticked = so_far

    def on_epoch(epoch, state, history):
        nonlocal last_save, ticked
        if progress is not None:
            progress.advance(len(chunk) - ticked)
            ticked = 0.0
        if epoch + 1 < epochs and time.time() - last_save >= every:
            leaves = jax.device_get(jax.tree.leaves(state))
            results.save_chunk_state(p.out, chunk, size, leaves, history)
            last_save = time.time()

    engine.on_step = on_step if progress is not None else None
    try:
        _, history = engine.train(labels, keys, epochs, on_epoch=on_epoch, start=start)
    finally:
        engine.on_step = None
    return history


def _is_oom(e: Exception) -> bool:
    text = f"{type(e).__name__}: {e}"
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "OOM" in text


def finalize(out: Path, manifest: dict) -> None:
    """Join the chunks into the tidy tables and the summary; mark complete."""
    from sweep import stats

    metrics = results.read_chunks(out, "metrics")
    confusion = results.read_chunks(out, "confusion")
    results.write_parquet(metrics, out / "metrics.parquet")
    results.write_parquet(confusion, out / "confusion.parquet")
    summary = stats.summarize(metrics)
    results.write_parquet(summary, out / "summary.parquet")
    manifest["status"] = "complete"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["n_diverged"] = int(metrics.groupby("replica")["diverged"].any().sum())
    results.write_json(manifest, out / results.MANIFEST)
