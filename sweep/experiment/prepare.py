"""A sweep assembled from its config before any training: data, grid, labels.

`prepare` resolves everything a config implies (the data and its training
subset, the classes, the grid of replicas, every replica's poisoned labels and,
for a trigger backdoor, its stamped images and the trigger, the results folder)
and refuses impossible requests before anything trains; `recipe_for` and
`build_engine` turn it into the engine's terms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kernels import conv
from kernels.select import KernelError, check_impl
from sweep import data as data_lib
from sweep import engine as engine_lib
from sweep.data.classes import resolve_class
from sweep.engine import transfer_head
from sweep.errors import SweepError
from sweep.experiment.attacks import attack_pairs, backdoors, label_flips
from sweep.experiment.config import Config, is_backdoor
from sweep.experiment.transfer import features as features_lib
from sweep.experiment.transfer import two_classes
from sweep.results.tables import CLEAN, poisoned_frame


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
    #   (a backdoor's: its stamped indices)
    out: Path
    transfer: dict = field(default_factory=dict)  # head: backbone and features info
    # Every (source, target) pair; labels/flipped above are the first pair's.
    pairs: tuple[tuple[int, int], ...] = ()
    pair_labels: dict | None = None  # (source, target, count, poison seed) -> (N,)
    pair_flipped: dict | None = None  # same keys -> flipped indices
    # A trigger backdoor (source_id is then -1 when all-to-one), and the
    # clean-label attack's perturbed copies once made (running.perturbation).
    backdoor: backdoors.Backdoor | None = None
    perturbed: backdoors.Perturbed | None = None

    def poison_key(self, seed: int, count: int) -> tuple[int, int]:
        return (count, seed if self.config.poison_per_seed else -1)

    def recipe(self):
        """The engine's `Recipe` for this sweep's data (see `recipe_for`)."""
        return recipe_for(self.config, n_train=len(self.train_labels),
                          n_classes=len(self.dataset.class_names),
                          n_test=len(self.dataset.test_labels))

    def model_spec(self):
        """What a replica is: SimpleCNN, or a head on this sweep's features."""
        if self.config.model != "head":
            return engine_lib.SIMPLE_CNN
        return transfer_head.spec(int(np.prod(self.train_images.shape[1:])))

    def replica_labels(self, replica: int) -> np.ndarray:
        seed, pair, count = self.grid.cell(replica)
        if pair <= 0:  # the clean replica, or the first pair: as before pairs
            return self.labels[self.poison_key(seed, count)]
        return self.pair_labels[(*self.pairs[pair], *self.poison_key(seed, count))]

    def replica_pair(self, replica: int) -> tuple[int, int]:
        """(source, target) of a poisoned replica; (-1, -1) for a clean one."""
        _, pair, _ = self.grid.cell(replica)
        return (CLEAN, CLEAN) if pair < 0 else self.pairs[pair]

    @property
    def is_matrix(self) -> bool:
        return len(self.pairs) > 1

    def perturbation_index(self) -> np.ndarray:
        """Sorted training indices the clean-label attack perturbs: every
        stamped image of any count and seed."""
        sets = [np.asarray(v, np.int64) for v in self.flipped.values()]
        return np.unique(np.concatenate(sets)) if sets else np.zeros(0, np.int64)

    def stored_images(self) -> np.ndarray:
        """What the engine holds: the training images, then any perturbed copies."""
        if self.backdoor is None or not self.backdoor.perturbs:
            return self.train_images
        if self.perturbed is None:
            raise SweepError("the clean-label perturbation has not been made yet "
                             "(sweep.experiment.running.perturbation.attach)")
        return np.concatenate([self.train_images, self.perturbed.images])

    def stamps(self, replicas: list[int]) -> engine_lib.Stamps | None:
        """The replicas' stamped images for the engine; None without a backdoor."""
        if self.backdoor is None:
            return None
        index = None
        if self.backdoor.perturbs:
            self.stored_images()  # refuses a missing perturbation
            index = self.perturbed.index
        n = len(self.train_labels)
        keys = [self.poison_key(*self.grid.replica(i)) for i in replicas]
        parts = [backdoors.stamps(n, self.flipped[key], index) for key in keys]
        rows = None if index is None else np.stack([rows for _, rows in parts])
        return engine_lib.Stamps(np.stack([mask for mask, _ in parts]), rows)


def prepare(config: Config) -> Prepared:
    """Load data and resolve the grid; refuses impossible requests before training."""
    check_kernel(config.kernel)
    view, plurals = None, False
    if config.model == "head":  # two classes; features replace images below
        view, plurals = two_classes.load(config), True
        ds = view.dataset
    else:
        ds = data_lib.load(config.data)
        if config.test_size is not None:  # quick runs: fewer test images
            ds = with_test_subset(ds, config.test_size)
    rows = np.arange(len(ds.train_labels))
    if config.train_size is not None:
        rows = data_lib.balanced_subset(
            ds.train_labels, config.train_size, seed=config.subset_seed
        )
    images, labels = ds.train_images[rows], ds.train_labels[rows].astype(np.int32)
    backdoor = None
    if config.pairs is None and is_backdoor(config):
        backdoor = backdoors.build(config, ds.class_names, images.shape[1:])
        pairs = ((CLEAN if backdoor.source is None else backdoor.source,
                  backdoor.target),)
    elif config.pairs is None:
        source = resolve_class(config.source, ds.class_names, plurals=plurals)
        target = resolve_class(config.target, ds.class_names, plurals=plurals)
        if source == target:
            raise SweepError(
                f"--source and --target are both {ds.class_names[source]!r}")
        pairs = ((source, target),)
    elif view is not None:
        raise SweepError("--pairs is for CNN sweeps; a head sweep has one pair "
                         "(--source/--target)")
    else:
        pairs = attack_pairs.resolve_pairs(config.pairs, config.source, config.target,
                                     ds.class_names)
    if backdoor is not None:
        counts = backdoors.resolve_counts(
            config.counts, n_train=len(labels),
            available=len(backdoors.candidates(labels, backdoor)))
        check_backdoor_measurable(ds, backdoor)
    else:
        counts = flip_counts(config, labels, pairs)
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
                rng = label_flips.poison_rng(config.poison_seed, None if ps == -1 else ps)
                if backdoor is not None:
                    new, idx = backdoors.poison(labels, backdoor, count=count,
                                                selection=config.selection, rng=rng)
                else:
                    new, idx = label_flips.poison_labels(
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
        feats = features_lib.features(config, view, images)
        images, info = feats.train, feats.info
        ds = two_classes.with_features(ds, feats.test)
    return Prepared(config, ds, images, labels, rows, source, target, grid,
                    poisoned, flipped, out, transfer=info, pairs=pairs,
                    pair_labels=pair_labels, pair_flipped=pair_flipped,
                    backdoor=backdoor)


def flip_counts(config: Config, labels: np.ndarray,
                pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """The counts of label flips, one resolution for every pair or refused."""
    counts = None
    for source, target in pairs:
        available = label_flips.flippable(labels, source=source, target=target,
                                          strategy=config.strategy)
        resolved = label_flips.resolve_counts(config.counts, available=available)
        if counts is not None and resolved != counts:
            raise SweepError(
                f"--counts {','.join(config.counts)} resolve to different flip "
                f"numbers for different pairs ({counts} vs {resolved}); give "
                "absolute counts with --pairs"
            )
        counts = resolved
    return counts


def with_test_subset(ds: data_lib.Dataset, n: int) -> data_lib.Dataset:
    """The dataset with a class-balanced subset of n test images (seed 0, as a
    head sweep's --test-size takes it); the content hash is the subset's."""
    rows = data_lib.balanced_subset(ds.test_labels, n, seed=0)
    return data_lib.dataset_from_arrays(
        ds.train_images, ds.train_labels, ds.test_images[rows], ds.test_labels[rows],
        ds.class_names, source=ds.source)


def check_measurable(ds: data_lib.Dataset, source: int, target: int) -> None:
    """Refuse data whose test split cannot measure the source or target class."""
    for cls, role in ((source, "source"), (target, "target")):
        if not np.any(ds.test_labels == cls):
            raise SweepError(
                f"the test split has no {ds.class_names[cls]!r} image (the {role} "
                "class), so its accuracy cannot be measured; use data whose test "
                "split holds both classes"
            )


def check_backdoor_measurable(ds: data_lib.Dataset,
                              backdoor: backdoors.Backdoor) -> None:
    """Refuse a test split without the target class, or without the images
    the attack success rate is measured on."""
    names = ds.class_names
    if not np.any(ds.test_labels == backdoor.target):
        raise SweepError(f"the test split has no {names[backdoor.target]!r} image "
                         "(the target class), so its accuracy cannot be measured")
    if backdoor.source is not None and not np.any(ds.test_labels == backdoor.source):
        raise SweepError(f"the test split has no {names[backdoor.source]!r} image (the "
                         "source class), so the attack's success cannot be measured")
    if not np.any(ds.test_labels != backdoor.target):
        raise SweepError("the test split holds only the target class, so the "
                         "attack's success cannot be measured")


def check_kernel(name: str) -> None:
    """Refuse an unknown --kernel now, not when the first chunk compiles."""
    if name != "auto":
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
    shared = {f.name for f in dataclasses.fields(engine_lib.Recipe)} - {
        "n_train", "n_classes"
    }
    values = {name: getattr(config, name) for name in shared}
    values["batch_size"] = min(config.batch_size, n_train)
    values["eval_batch_size"] = min(config.eval_batch_size, n_test)
    return engine_lib.Recipe(n_train=n_train, n_classes=n_classes, **values)


def default_out(config: Config, class_names, source: int, target: int) -> Path:
    """A folder named by what the sweep is, so the same command finds it again."""
    src = "all" if source == CLEAN else class_names[source]  # all-to-one backdoor
    name = (f"{src}-{class_names[target]}-{config.strategy}"
            f"-s{config.seeds}-{config.fingerprint()}")
    return Path("results") / name


def build_engine(p: Prepared, devices=None, on_step=None):
    """The compiled engine with this sweep's data on `devices` (None: default)."""
    return engine_lib.Engine(
        p.recipe(), p.stored_images(), p.dataset.test_images, p.dataset.test_labels,
        on_step=on_step, spec=p.model_spec(), devices=devices,
        trigger=None if p.backdoor is None else p.backdoor.trigger,
    )


def poisoned_table(p: Prepared):
    """poisoned.parquet: as before for one pair; with source/target per pair."""
    if not p.is_matrix:
        return poisoned_frame(p.flipped, p.train_labels, p.labels)
    frames = []
    for source, target in p.pairs:
        keys = [k for k in p.pair_flipped if k[:2] == (source, target)]
        part = poisoned_frame(
            {k[2:]: p.pair_flipped[k] for k in keys}, p.train_labels,
            {k[2:]: p.pair_labels[k] for k in keys},
        )
        part.insert(0, "target", np.full(len(part), target, np.int16))
        part.insert(0, "source", np.full(len(part), source, np.int16))
        frames.append(part)
    return pd.concat(frames, ignore_index=True)
