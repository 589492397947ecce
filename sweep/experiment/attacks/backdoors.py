"""Trigger backdoors as a sweep's attack: the trigger, which training images
carry it, and the labels they are trained with.

- `badnets` (Gu et al., 2017): a patch, by default a 3x3 white square in the
  bottom-right corner, stamped on N training images relabelled to the target.
- `blend` (Chen et al., 2017): a seeded random pattern, or an image file,
  alpha-blended (0.2 by default) into N images, same labelling.
- `clean-label` (Turner, Tsipras and Madry, 2019): the trigger (their 3x3
  black-and-white checker by default) on N images of the target class whose
  labels stay true, after an adversarial perturbation (`clean_label`).

The poisoned images of badnets and blend come from every class but the target
(all-to-one, `--source all`) or from one source class. Counts are images, or a
percentage of the training set (BackdoorBench's 0.1-10%), and nested as label
flips are: every count takes a prefix of one seeded ordering of the
candidates, so the images stamped at 5 include those stamped at 1.

What reaches the engine is a trigger and, per replica, a mask over the
training images (`stamps`); the engine stamps on the device as it gathers a
batch, and knows nothing of why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from sweep.data.classes import resolve_class
from sweep.data.hashing import array_hash
from sweep.engine import triggers
from sweep.errors import SweepError
from sweep.experiment.attacks import trigger_image
from sweep.experiment.config import Config, all_to_one, parse_counts, parse_position

# The attacks' defaults, where the config leaves a trigger option out (None).
TRIGGER_SIZE = 3
TRIGGER_POSITION = "bottom-right"
BLEND_ALPHA = 0.2
BLEND_SEED = 0
PERTURBATION_EPS = 8  # uint8 levels: Turner et al.'s (and Madry's) 8/255


class Perturbed(NamedTuple):
    """The clean-label attack's perturbed copies, stored after the training images."""

    index: np.ndarray  # (P,) int64 sorted training indices they replace
    images: np.ndarray  # uint8 (P, H, W, C)
    info: dict  # how they were made (the manifest's attack.perturbation)


@dataclass(frozen=True)
class Backdoor:
    """A sweep's resolved backdoor: what every poisoned replica is attacked with."""

    attack: str  # badnets | blend | clean-label
    target: int  # the class the trigger should send images to
    source: int | None  # badnets/blend's source class; None: every other class
    trigger: triggers.Trigger  # (H, W, C) pattern and opacity
    perturbation_eps: int  # clean-label's PGD radius in uint8 levels; 0: none
    trigger_info: dict = field(default_factory=dict)  # how it was built

    @property
    def relabels(self) -> bool:
        """badnets and blend train the stamped images as the target class."""
        return self.attack != "clean-label"

    @property
    def perturbs(self) -> bool:
        return self.attack == "clean-label" and self.perturbation_eps > 0

    def describe(self, class_names: Sequence[str], n_train: int,
                 n_candidates: int) -> dict:
        """The manifest's `attack` entry."""
        return {
            "name": self.attack,
            "target_id": self.target,
            "target": class_names[self.target],
            "source_id": -1 if self.source is None else self.source,
            "source": "all" if self.source is None else class_names[self.source],
            "relabelled": self.relabels,
            "counts_percent_of": f"the training set ({n_train} images)",
            "n_candidates": n_candidates,
            "trigger": self.trigger_info,
            "trigger_hash": trigger_hash(self.trigger),
            **({"perturbation_eps": self.perturbation_eps}
               if self.attack == "clean-label" else {}),
        }


def build(config: Config, class_names: Sequence[str],
          image_shape: Sequence[int]) -> Backdoor:
    """The backdoor a config describes, its classes resolved on the data."""
    target = resolve_class(config.target, class_names)
    source = None
    if not all_to_one(config):
        source = resolve_class(config.source, class_names)
        if source == target:
            raise SweepError(f"--source and --target are both {class_names[source]!r}")
    trigger, info = make_trigger(config, image_shape)
    eps = 0
    if config.strategy == "clean-label":
        eps = PERTURBATION_EPS if config.perturbation_eps is None else int(
            config.perturbation_eps)
    return Backdoor(config.strategy, target, source, trigger, eps, info)


def make_trigger(config: Config,
                 image_shape: Sequence[int]) -> tuple[triggers.Trigger, dict]:
    """The config's trigger for images of `image_shape` (H, W, C), and how it
    was built (for the manifest)."""
    shape = tuple(int(v) for v in image_shape)
    if config.strategy == "blend":
        alpha = BLEND_ALPHA if config.blend_alpha is None else float(config.blend_alpha)
        if config.blend_image is not None:
            trig = trigger_image.from_image_file(config.blend_image, alpha=alpha,
                                                 image_shape=shape)
            return trig, {"kind": "blend", "alpha": alpha,
                          "image": str(config.blend_image)}
        seed = BLEND_SEED if config.blend_seed is None else int(config.blend_seed)
        return (triggers.blend(alpha=alpha, seed=seed, image_shape=shape),
                {"kind": "blend", "alpha": alpha, "seed": seed})
    size = TRIGGER_SIZE if config.trigger_size is None else int(config.trigger_size)
    position = parse_position(config.trigger_position or TRIGGER_POSITION)
    pattern = config.trigger_pattern or (
        "checker" if config.strategy == "clean-label" else "white")
    info = {"kind": "patch", "size": size, "pattern": pattern,
            "position": position if isinstance(position, str) else list(position)}
    if pattern == "white":
        return triggers.badnets(size, position, image_shape=shape), info
    # Turner et al.'s 3x3 checker, tiled to the size asked for.
    reps = -(-size // 3)
    checker = np.tile(triggers.LABEL_CONSISTENT_PATTERN, (reps, reps))[:size, :size]
    return triggers.patch(checker, position=position, image_shape=shape), info


def trigger_hash(trigger: triggers.Trigger) -> str:
    """What a resumed sweep must find again (an image file may have changed)."""
    return array_hash(np.asarray(trigger.pattern, np.uint8),
                      np.asarray(trigger.alpha, np.float32))


def candidates(labels: np.ndarray, backdoor: Backdoor) -> np.ndarray:
    """Training indices that may be poisoned, in dataset order: the target
    class for clean-label, else the source class or every other class."""
    if backdoor.attack == "clean-label":
        return np.flatnonzero(labels == backdoor.target)
    if backdoor.source is not None:
        return np.flatnonzero(labels == backdoor.source)
    return np.flatnonzero(labels != backdoor.target)


def resolve_counts(specs: Sequence[str], *, n_train: int,
                   available: int) -> tuple[int, ...]:
    """Absolute counts, 0 first, from "50" or "0.5%" (of the `n_train` training
    images); refuses more than the `available` candidates."""
    counts = []
    for spec, (value, percent) in zip(specs, parse_counts(tuple(specs))):
        n = int(round(value / 100 * n_train)) if percent else int(value)
        if n > available:
            raise SweepError(
                f"count {spec} asks for {n} poisoned images but only {available} "
                "training images can carry this trigger")
        counts.append(n)
    positive = [n for n in counts if n > 0]
    if len(set(positive)) != len(positive):
        raise SweepError(
            f"--counts {','.join(specs)} name the same number of poisoned images "
            f"twice (resolved: {','.join(map(str, counts))})")
    return (0, *sorted(set(positive)))


def poison(labels: np.ndarray, backdoor: Backdoor, *, count: int, selection: str,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` candidates of one seeded ordering, and their labels.

    The generator is consumed identically whatever the count, so the sets are
    nested. Returns (labels the replica trains with (N,), stamped indices (count,)
    in selection order); clean-label keeps every label.
    """
    order = candidates(labels, backdoor)
    if selection != "first":
        order = rng.permutation(order)
    if count > len(order):
        raise SweepError(f"cannot poison {count} images: only {len(order)} qualify")
    stamped = order[:count]
    poisoned = np.array(labels, np.int32, copy=True)
    if backdoor.relabels:
        poisoned[stamped] = backdoor.target
    return poisoned, stamped


def stamps(n: int, stamped: np.ndarray, perturbed_index: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """One replica's mask (N,) bool and, where perturbed copies are stored after
    the N training images, its rows (N,) int32.

    Args:
      n: training images.
      stamped: the replica's stamped indices.
      perturbed_index: sorted training indices whose perturbed copies are stored
        at rows n, n + 1, ...; None when there are none. Every stamped index
        must be among them; the replica reads the copy in place of the original.
    """
    mask = np.zeros(n, bool)
    mask[stamped] = True
    if perturbed_index is None:
        return mask, None
    rows = np.arange(n, dtype=np.int32)
    where = np.searchsorted(perturbed_index, stamped)
    if len(stamped) and (where.max() >= len(perturbed_index)
                         or (perturbed_index[where] != stamped).any()):
        raise SweepError("a stamped image has no perturbed copy")
    rows[stamped] = n + where
    return mask, rows
