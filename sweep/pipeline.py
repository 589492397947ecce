"""Assemble a sweep from a config: data, grid, poisoned labels, engine, results.

`prepare` resolves everything a config implies before any training; `run`
trains what is not done yet (`sweep.chunking`), joins the chunks into the tidy
tables and writes the summary, the report and the MLflow run if asked.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep import data as data_lib
from sweep import lock, poison, results
from sweep.chunking import train_chunks
from sweep.config import Config
from sweep.errors import SweepError
from sweep.provenance import build_manifest, check_resumable


@dataclass(frozen=True)
class Grid:
    """The replicas of a sweep, seed-major.

    Per seed: the clean replica (count 0), then for each pair its positive
    counts. With one pair, replica i is (seeds[i], counts[i]) laid out as
    before pairs existed: seed-major, counts ascending.
    """

    counts: tuple[int, ...]  # distinct resolved counts, 0 first
    seeds: tuple[int, ...]  # training seeds
    paired: bool
    n_pairs: int = 1  # source -> target pairs sharing each seed's clean replica

    @property
    def per_seed(self) -> int:
        return 1 + self.n_pairs * (len(self.counts) - 1)

    @property
    def size(self) -> int:
        return self.per_seed * len(self.seeds)

    def cell(self, i: int) -> tuple[int, int, int]:
        """(seed, pair index or -1 for the shared clean replica, count) of replica i."""
        seed = self.seeds[i // self.per_seed]
        j = i % self.per_seed
        if j == 0:
            return seed, -1, 0
        positive = len(self.counts) - 1
        return seed, (j - 1) // positive, self.counts[1 + (j - 1) % positive]

    def replica(self, i: int) -> tuple[int, int]:
        """(seed, count) of replica i."""
        seed, _, count = self.cell(i)
        return seed, count

    def stream(self, i: int) -> int:
        """Key stream: shared by a seed's twins when paired, distinct otherwise."""
        if self.paired:
            return 0
        _, pair, count = self.cell(i)
        return 1 + count + max(pair, 0) * UNPAIRED_PAIR_STRIDE


# Unpaired key streams of pair p start at p * this (counts stay far below it).
UNPAIRED_PAIR_STRIDE = 1 << 24


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
    transfer: dict = field(default_factory=dict)  # head: backbone and features info
    # Every (source, target) pair; labels/flipped above are the first pair's.
    pairs: tuple[tuple[int, int], ...] = ()
    pair_labels: dict | None = None  # (source, target, count, poison seed) -> (N,)
    pair_flipped: dict | None = None  # same keys -> flipped indices

    def poison_key(self, seed: int, count: int) -> tuple[int, int]:
        return (count, seed if self.config.poison_per_seed else -1)

    def recipe(self):
        """The engine's `Recipe` for this sweep's data (see `recipe_for`)."""
        return recipe_for(self.config, n_train=len(self.train_labels),
                          n_classes=len(self.dataset.class_names),
                          n_test=len(self.dataset.test_labels))

    def model_spec(self):
        """What a replica is: SimpleCNN, or a head on this sweep's features."""
        from sweep import engine

        if self.config.model != "head":
            return engine.SIMPLE_CNN
        from sweep import head

        return head.spec(int(np.prod(self.train_images.shape[1:])))

    def replica_labels(self, replica: int) -> np.ndarray:
        seed, pair, count = self.grid.cell(replica)
        if pair <= 0:  # the clean replica, or the first pair: as before pairs
            return self.labels[self.poison_key(seed, count)]
        return self.pair_labels[(*self.pairs[pair], *self.poison_key(seed, count))]

    def replica_pair(self, replica: int) -> tuple[int, int]:
        """(source, target) of a poisoned replica; (-1, -1) for a clean one."""
        from sweep.matrix import CLEAN

        _, pair, _ = self.grid.cell(replica)
        return (CLEAN, CLEAN) if pair < 0 else self.pairs[pair]

    @property
    def is_matrix(self) -> bool:
        return len(self.pairs) > 1


def prepare(config: Config) -> Prepared:
    """Load data and resolve the grid; refuses impossible requests before training."""
    check_kernel(config.kernel)
    view, resolve = None, poison.resolve_class
    if config.model == "head":  # two classes; features replace images below
        from sweep import transfer

        view, resolve = transfer.load(config), transfer.resolve_name
        ds = view.dataset
    else:
        ds = data_lib.load(config.data)
    rows = np.arange(len(ds.train_labels))
    if config.train_size is not None:
        rows = data_lib.balanced_subset(
            ds.train_labels, config.train_size, seed=config.subset_seed
        )
    images, labels = ds.train_images[rows], ds.train_labels[rows].astype(np.int32)
    from sweep import matrix

    if config.pairs is None:
        source = resolve(config.source, ds.class_names)
        target = resolve(config.target, ds.class_names)
        if source == target:
            raise SweepError(
                f"--source and --target are both {ds.class_names[source]!r}")
        pairs = ((source, target),)
    elif view is not None:
        raise SweepError("--pairs is for CNN sweeps; a head sweep has one pair "
                         "(--source/--target)")
    else:
        pairs = matrix.resolve_pairs(config.pairs, config.source, config.target,
                                     ds.class_names)
    counts = None
    for source, target in pairs:
        available = poison.flippable(labels, source=source, target=target,
                                     strategy=config.strategy)
        resolved = poison.resolve_counts(config.counts, available=available)
        if counts is not None and resolved != counts:
            raise SweepError(
                f"--counts {','.join(config.counts)} resolve to different flip "
                f"numbers for different pairs ({counts} vs {resolved}); give "
                "absolute counts with --pairs"
            )
        counts = resolved
    for source, target in pairs:
        check_measurable(ds, source, target)
    seeds = tuple(range(config.seed_start, config.seed_start + config.seeds))
    grid = Grid(counts=counts, seeds=seeds, paired=config.paired, n_pairs=len(pairs))

    pair_labels, pair_flipped = {}, {}
    poison_seeds = seeds if config.poison_per_seed else (-1,)
    for source, target in pairs:
        for ps in poison_seeds:
            for count in counts:
                # Every pair draws from the same generator as a one-pair sweep of
                # it would, so a matrix's pair equals that sweep's poisoned sets.
                rng = poison.poison_rng(config.poison_seed, None if ps == -1 else ps)
                new, idx = poison.poison_labels(
                    labels, source=source, target=target, count=count,
                    strategy=config.strategy, selection=config.selection, rng=rng,
                )
                key = (source, target, count, ps)
                pair_labels[key], pair_flipped[key] = new.astype(np.int32), idx
    first = pairs[0]
    poisoned = {k[2:]: v for k, v in pair_labels.items() if k[:2] == first}
    flipped = {k[2:]: v for k, v in pair_flipped.items() if k[:2] == first}
    source, target = first
    if config.out:
        out = Path(config.out)
    elif len(pairs) > 1:
        out = Path("results") / (f"matrix{len(pairs)}-{config.strategy}-s{config.seeds}"
                                 f"-{config.fingerprint()}")
    else:
        out = default_out(config, ds.class_names, source, target)
    info = {}
    if view is not None:
        feats = transfer.features(config, view, images)
        images, info = feats.train, feats.info
        ds = transfer.with_features(ds, feats.test)
    return Prepared(config, ds, images, labels, rows, source, target, grid,
                    poisoned, flipped, out, transfer=info, pairs=pairs,
                    pair_labels=pair_labels, pair_flipped=pair_flipped)


def check_measurable(ds: data_lib.Dataset, source: int, target: int) -> None:
    """Refuse data whose test split cannot measure the source or target class."""
    for cls, role in ((source, "source"), (target, "target")):
        if not np.any(ds.test_labels == cls):
            raise SweepError(
                f"the test split has no {ds.class_names[cls]!r} image (the {role} "
                "class), so its accuracy cannot be measured; use data whose test "
                "split holds both classes"
            )


def check_kernel(name: str) -> None:
    """Refuse an unknown --kernel now, not when the first chunk compiles."""
    if name != "auto":
        from kernels import conv
        from kernels.select import KernelError, check_impl

        try:
            check_impl("conv", name, conv.IMPLS)
        except KernelError as e:  # kernels/ knows nothing of sweep's errors
            raise SweepError(str(e)) from None


def recipe_for(config: Config, *, n_train: int, n_classes: int, n_test: int):
    """The engine's `Recipe` for a sweep: its training fields, taken by name.

    Every Recipe field but the data's sizes is a Config field of the same name
    (tests/test_layout.py holds them to it), so the config is the one source.
    A batch larger than the data is the whole data, as a DataLoader gives it;
    padding to the asked size would only waste memory.
    """
    import dataclasses

    from sweep import engine as engine_lib

    shared = {f.name for f in dataclasses.fields(engine_lib.Recipe)} - {
        "n_train", "n_classes"
    }
    values = {name: getattr(config, name) for name in shared}
    values["batch_size"] = min(config.batch_size, n_train)
    values["eval_batch_size"] = min(config.eval_batch_size, n_test)
    return engine_lib.Recipe(n_train=n_train, n_classes=n_classes, **values)


def default_out(config: Config, class_names, source: int, target: int) -> Path:
    """A folder named by what the sweep is, so the same command finds it again."""
    name = (f"{class_names[source]}-{class_names[target]}-{config.strategy}"
            f"-s{config.seeds}-{config.fingerprint()}")
    return Path("results") / name


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
    with lock.hold(p.out):  # one writer per folder, until the end
        results.remove_tmp(p.out)
        train_and_write(p, manifest, t_start=t_start, log=log, progress=progress,
                        on_facts=on_facts)
    return p.out


def train_and_write(p: Prepared, manifest: dict, *, t_start: float, log: Reporter,
                    progress, on_facts) -> None:
    """Train what is not done yet, join the tables, report; under the lock."""
    config = p.config
    manifest_path = p.out / results.MANIFEST
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
    results.write_parquet(poisoned_table(p), p.out / "poisoned.parquet")

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


def poisoned_table(p: Prepared):
    """poisoned.parquet: as before for one pair; with source/target per pair."""
    import pandas as pd

    if not p.is_matrix:
        return results.poisoned_frame(p.flipped, p.train_labels, p.labels)
    frames = []
    for source, target in p.pairs:
        keys = [k for k in p.pair_flipped if k[:2] == (source, target)]
        part = results.poisoned_frame(
            {k[2:]: p.pair_flipped[k] for k in keys}, p.train_labels,
            {k[2:]: p.pair_labels[k] for k in keys},
        )
        part.insert(0, "target", np.full(len(part), target, np.int16))
        part.insert(0, "source", np.full(len(part), source, np.int16))
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def build_engine(p: Prepared, devices=None, on_step=None):
    """The compiled engine with this sweep's data on `devices` (None: default)."""
    from sweep import engine as engine_lib

    return engine_lib.Engine(
        p.recipe(), p.train_images, p.dataset.test_images, p.dataset.test_labels,
        on_step=on_step, spec=p.model_spec(), devices=devices,
    )


def finalize(out: Path, manifest: dict) -> None:
    """Join the chunks into the tidy tables and the summary; mark complete."""
    from sweep import matrix, stats

    metrics = results.read_chunks(out, "metrics")
    confusion = results.read_chunks(out, "confusion")
    results.write_parquet(metrics, out / "metrics.parquet")
    results.write_parquet(confusion, out / "confusion.parquet")
    summary = matrix.summarize_pairs(metrics, summarize=stats.summarize,
                                     classes=stats.classes_of(manifest))
    results.write_parquet(summary, out / "summary.parquet")
    manifest["status"] = "complete"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["n_diverged"] = int(metrics.groupby("replica")["diverged"].any().sum())
    results.write_json(manifest, out / results.MANIFEST)
