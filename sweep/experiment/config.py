"""The one frozen configuration a sweep runs from, and its presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sweep.engine import optim
from sweep.errors import SweepError

# The attacks (--attack; --strategy is its older name, and Config.strategy holds
# it): label flips, and trigger backdoors (sweep.experiment.attacks.backdoors).
LABEL_FLIPS = ("flip", "swap")
BACKDOORS = ("badnets", "blend", "clean-label")
STRATEGIES = LABEL_FLIPS + BACKDOORS
# --source for a backdoor drawn from every class but the target (all-to-one).
ALL_CLASSES = "all"
PATCH_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
PATCH_PATTERNS = ("white", "checker")
SELECTIONS = ("random", "first")
COMPUTE_DTYPES = ("float32", "bfloat16")
MODELS = ("cnn", "head")


@dataclass(frozen=True)
class Config:
    """Everything that decides a sweep's numbers (and a few things that do not).

    Tuple fields keep it hashable, so it can be a static jit argument.
    """

    # Data.
    data: str | None = None  # --data: path, "sample", or None for $SWEEP_DATA/download
    train_size: int | None = None  # class-balanced training subset (images)
    subset_seed: int = 0  # which balanced subset --train-size takes

    # Poisoning.
    counts: tuple[str, ...] = ("1", "5", "10", "50", "100")  # "N" or "P%" of source
    #   (of the training set for a backdoor)
    source: str = "cat"  # class name or id; "all": a backdoor's all-to-one
    target: str = "dog"
    # The attack (--attack, alias --strategy): flip: source->target; swap: N each
    # way; badnets / blend: a trigger on N images relabelled to the target;
    # clean-label: a trigger on N target images, labels kept (see
    # sweep.experiment.attacks.backdoors).
    strategy: str = "flip"
    selection: str = "random"  # random: seeded draw; first: dataset order
    poison_seed: int = 0  # the random draw, shared by every training seed...
    poison_per_seed: bool = False  # ...unless redrawn per training seed
    # The attack matrix: "src:tgt" pairs, or ("all",) for every ordered pair; None
    # is the one pair source -> target. See `parse_pairs`.
    pairs: tuple[str, ...] | None = None
    # Trigger backdoors (None: the attack's default; see LATER_FIELDS).
    trigger_size: int | None = None  # patch side, pixels (default 3)
    trigger_position: str | None = None  # a corner or "ROW,COL" (bottom-right)
    trigger_pattern: str | None = None  # patch: white (badnets' default) or
    #   checker (Turner et al.'s 3x3 black-and-white, clean-label's default)
    blend_alpha: float | None = None  # blend opacity in (0, 1] (default 0.2)
    blend_seed: int | None = None  # seeds blend's random pattern (default 0)
    blend_image: str | None = None  # blend: an image file as the pattern
    perturbation_eps: int | None = None  # clean-label PGD radius, uint8 levels
    #   (default 8, i.e. 8/255; 0: no perturbation)

    # Grid and pairing.
    seeds: int = 8  # training seeds: seed_start .. seed_start + seeds - 1
    seed_start: int = 0
    paired: bool = True  # twins of one seed share init, order and dropout

    # Training recipe (the reference notebook's). These and the engine fields
    # below reach the engine by name (`prepare.recipe_for` builds its Recipe).
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    dropout: float = 0.5
    # The optax transform as a spec (see sweep.engine.optim), e.g.
    # "clip_by_global_norm(1.0), adam"; None: torch's Adam at `lr`.
    optimizer: str | None = None

    # Engine.
    replicas_per_step: int | None = None  # None: as many as fit the device
    kernel: str = "auto"  # conv formulation, see kernels.select
    compute_dtype: str = "float32"  # bfloat16: bf16 compute, float32 parameters
    eval_batch_size: int = 1000  # test images per evaluation step

    # Output (does not change the numbers).
    out: str | None = None  # results folder; None: results/<name>-<fingerprint>
    report: bool = False  # write the report when the sweep ends
    threshold: float | None = None  # report: flips to push source below this %
    mlflow: str | None = None  # tracking URI ("" = ./mlruns); None: no tracking

    # Model: SimpleCNN on images, or a transfer head on frozen features
    # (sweep.engine.transfer_head).
    model: str = "cnn"  # cnn | head
    backbone: str | None = None  # head: simplecnn, or a keras.applications name
    weights: str | None = None  # keras backbone: a weights file, or "imagenet"
    classes: tuple[str, ...] | None = None  # head: the two classes (default
    #   source, target)
    image_size: int | None = None  # head: resize images to this square (pixels)
    test_size: int | None = None  # class-balanced test subset (images)
    pooling: str | None = None  # head: None flattens the backbone's output;
    #   "avg"/"max" pool it over space (Keras applications' `pooling`)

    # Scale-out (does not change the numbers; see sweep.engine.sharding,
    # sweep.experiment.running.train_ray).
    devices: int | None = None  # local devices the replica axis spans; None: all
    cluster: str | None = None  # "ray" or "ray://ADDRESS": chunks as Ray tasks

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the fields that decide the numbers (what resuming must match)."""
        numbers = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        # Fields added later count only when set, so the fingerprints (and the
        # default folder names) of sweeps that predate them stay the same.
        numbers = {k: v for k, v in numbers.items()
                   if not (k in LATER_FIELDS and v is None)}
        numbers = {k: v for k, v in numbers.items()
                   if not (k in MODEL_DEFAULTS and v == MODEL_DEFAULTS[k])}
        blob = json.dumps(numbers, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# Fields added with transfer heads; left out of the fingerprint at these values so
# CNN sweeps keep the folder names and resumability they had before.
MODEL_DEFAULTS = {"model": "cnn", "backbone": None, "weights": None, "classes": None,
                  "image_size": None, "test_size": None, "pooling": None}

# Fields that change how a sweep runs but not what it computes.
RUNTIME_FIELDS = (
    "replicas_per_step", "eval_batch_size", "out", "report", "threshold", "mlflow",
    "devices", "cluster",
)
# Fields added after sweeps were recorded, None meaning "as before they existed".
TRIGGER_FIELDS = ("trigger_size", "trigger_position", "trigger_pattern",
                  "blend_alpha", "blend_seed", "blend_image", "perturbation_eps")
LATER_FIELDS = ("optimizer", "pairs", *TRIGGER_FIELDS)


def validate(c: Config) -> None:
    """Refuse settings that cannot describe a sweep, with one line saying why."""
    if c.seeds < 1:
        raise SweepError(f"--seeds must be at least 1, got {c.seeds}")
    if c.seed_start < 0:
        raise SweepError(f"--seed-start must be >= 0, got {c.seed_start}")
    if c.seed_start + c.seeds > 2**32:  # training seeds are 32-bit keys
        raise SweepError(
            f"training seeds must stay below 2**32; --seed-start {c.seed_start} "
            f"with --seeds {c.seeds} goes past it"
        )
    if c.poison_seed < 0:
        raise SweepError(f"--poison-seed must be >= 0, got {c.poison_seed}")
    if c.epochs < 1:
        raise SweepError(f"--epochs must be at least 1, got {c.epochs}")
    if c.batch_size < 1:
        raise SweepError(f"--batch-size must be at least 1, got {c.batch_size}")
    if not (c.lr > 0 and math.isfinite(c.lr)):
        raise SweepError(f"--lr must be positive and finite, got {c.lr}")
    if not 0 <= c.dropout < 1:
        raise SweepError(f"--dropout must be in [0, 1), got {c.dropout}")
    if c.train_size is not None and c.train_size < 1:
        raise SweepError(f"--train-size must be positive, got {c.train_size}")
    if c.replicas_per_step is not None and c.replicas_per_step < 1:
        raise SweepError(
            f"--replicas-per-step must be at least 1, got {c.replicas_per_step}"
        )
    if c.threshold is not None and not 0 <= c.threshold <= 100:
        raise SweepError(f"--threshold is a percent in [0, 100], got {c.threshold}")
    if c.eval_batch_size < 1:
        raise SweepError(f"eval batch size must be positive, got {c.eval_batch_size}")
    if c.strategy not in STRATEGIES:
        raise SweepError(
            f"--attack (--strategy) must be one of {', '.join(STRATEGIES)}")
    if c.selection not in SELECTIONS:
        raise SweepError(f"--selection must be one of {', '.join(SELECTIONS)}")
    if c.compute_dtype not in COMPUTE_DTYPES:
        raise SweepError(f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}")
    same = str(c.source).strip().lower() == str(c.target).strip().lower()
    if c.pairs is None and same:
        raise SweepError(f"--source and --target are both {c.source!r}")
    validate_attack(c)
    if c.pairs is not None:
        parse_pairs(c.pairs)
    if c.devices is not None and c.devices < 1:
        raise SweepError(f"--devices must be at least 1, got {c.devices}")
    if c.cluster is not None:
        parse_cluster(c.cluster)
    parse_counts(c.counts)
    if c.optimizer is not None:
        optim.check(c.optimizer)
    validate_model(c)


def is_backdoor(c: Config) -> bool:
    return c.strategy in BACKDOORS


def all_to_one(c: Config) -> bool:
    """A backdoor drawn from every class but the target (--source all)."""
    return str(c.source).strip().lower() == ALL_CLASSES


# The trigger options each backdoor takes.
PATCH_OPTIONS = ("trigger_size", "trigger_position", "trigger_pattern")
ATTACK_OPTIONS = {
    "badnets": PATCH_OPTIONS,
    "clean-label": (*PATCH_OPTIONS, "perturbation_eps"),
    "blend": ("blend_alpha", "blend_seed", "blend_image"),
}


def validate_attack(c: Config) -> None:
    """Refuse trigger options that do not fit the attack, and backdoor sweeps
    of a kind not built yet, before anything loads."""
    given = [k for k in TRIGGER_FIELDS if getattr(c, k) is not None]
    if not is_backdoor(c):
        if given:
            raise SweepError(f"--{given[0].replace('_', '-')} only applies to a "
                             f"backdoor (--attack {'|'.join(BACKDOORS)})")
        if all_to_one(c):
            raise SweepError("--source all is for backdoor attacks; a label flip "
                             "needs one source class")
        return
    for k in given:
        if k not in ATTACK_OPTIONS[c.strategy]:
            which = [a for a in BACKDOORS if k in ATTACK_OPTIONS[a]]
            flag = f"--{k.replace('_', '-')}" + (
                "/--no-perturbation" if k == "perturbation_eps" else "")
            raise SweepError(f"{flag} does not apply to --attack {c.strategy} "
                             f"(only to {' and '.join(which)})")
    if c.trigger_size is not None and c.trigger_size < 1:
        raise SweepError(f"--trigger-size must be at least 1, got {c.trigger_size}")
    if c.trigger_position is not None:
        parse_position(c.trigger_position)
    if c.trigger_pattern is not None and c.trigger_pattern not in PATCH_PATTERNS:
        raise SweepError(f"--trigger-pattern must be one of {', '.join(PATCH_PATTERNS)}"
                         f", got {c.trigger_pattern!r}")
    if c.blend_alpha is not None and not 0 < c.blend_alpha <= 1:
        raise SweepError(f"--blend-alpha must be in (0, 1], got {c.blend_alpha}")
    if c.blend_seed is not None and c.blend_seed < 0:
        raise SweepError(f"--blend-seed must be >= 0, got {c.blend_seed}")
    if c.blend_seed is not None and c.blend_image is not None:
        raise SweepError("--blend-seed draws a random pattern; --blend-image "
                         "gives one: pass one of them")
    if c.perturbation_eps is not None and not 0 <= c.perturbation_eps <= 255:
        raise SweepError(f"--perturbation-eps is in uint8 levels 0..255, got "
                         f"{c.perturbation_eps}")
    if c.strategy == "clean-label" and not all_to_one(c):
        raise SweepError("--source does not apply to --attack clean-label: it "
                         "stamps target images and measures every other class")
    if c.pairs is not None:
        raise SweepError("--pairs is for label flips; a backdoor has one target "
                         "(--target)")
    if c.model != "cnn":
        raise SweepError("backdoor attacks stamp images: they need --model cnn")
    if c.threshold is not None:
        raise SweepError("--threshold asks how many flips push the source class "
                         "below X%; a backdoor's report answers at which count "
                         "ASR reaches 50% and 90% instead: drop --threshold")


def parse_position(spec: str) -> str | tuple[int, int]:
    """A patch position: a corner name, or "ROW,COL" of its top-left pixel."""
    s = str(spec).strip().lower()
    if s in PATCH_POSITIONS:
        return s
    parts = [p.strip() for p in s.split(",")]
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise SweepError(
            f"--trigger-position {spec!r} is not one of {', '.join(PATCH_POSITIONS)}"
            " or ROW,COL") from None
    if row < 0 or col < 0:
        raise SweepError(f"--trigger-position {spec!r} is negative")
    return row, col


def validate_model(c: Config) -> None:
    if c.model not in MODELS:
        raise SweepError(f"--model must be one of {', '.join(MODELS)}")
    if c.test_size is not None and c.test_size < 1:
        raise SweepError(f"--test-size must be positive, got {c.test_size}")
    head_only = {"backbone": c.backbone, "weights": c.weights, "classes": c.classes,
                 "image_size": c.image_size, "pooling": c.pooling}
    if c.model == "cnn":
        given = [k.replace("_", "-") for k, v in head_only.items() if v is not None]
        if given:
            raise SweepError(f"--{', --'.join(given)} only apply with --model head")
        return
    if not c.backbone:
        raise SweepError("--model head needs --backbone (simplecnn, vgg16, ...)")
    if c.pooling not in (None, "avg", "max"):
        raise SweepError(f"--pooling must be avg or max, got {c.pooling!r}")
    if c.classes is not None and len(c.classes) != 2:
        raise SweepError(f"--classes takes two classes, got {','.join(c.classes)}")
    if c.image_size is not None and c.image_size < 1:
        raise SweepError(f"--image-size must be positive, got {c.image_size}")


def parse_pairs(specs: Sequence[str]) -> tuple[tuple[str, str], ...] | str:
    """("cat:dog", ...) -> (("cat", "dog"), ...), or "all"; refuses malformed specs."""
    specs = tuple(str(s).strip() for s in specs)
    if not specs or specs == ("",):
        raise SweepError("--pairs is empty; give e.g. --pairs cat:dog,truck:automobile")
    if any(s.lower() == "all" for s in specs):
        if len(specs) > 1:
            raise SweepError("--pairs all cannot be combined with listed pairs")
        return "all"
    pairs = []
    for s in specs:
        parts = [p.strip() for p in s.split(":")]
        if len(parts) != 2 or not all(parts):
            raise SweepError(f"pair {s!r} is not SOURCE:TARGET (e.g. cat:dog)")
        if parts[0].lower() == parts[1].lower():
            raise SweepError(f"pair {s!r} flips a class to itself")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


def parse_cluster(spec: str) -> str | None:
    """"ray" -> None (local or $RAY_ADDRESS); "ray://HOST:PORT" -> that address."""
    s = str(spec).strip()
    if s == "ray":
        return None
    if s.startswith("ray://") and len(s) > len("ray://"):
        return s
    raise SweepError(f"--cluster must be 'ray' or 'ray://HOST:PORT', got {spec!r}")


def parse_counts(specs: tuple[str, ...]) -> tuple[tuple[float, bool], ...]:
    """Parse count specs into (value, is_percent) pairs, refusing malformed ones."""
    if not specs:
        raise SweepError("--counts is empty; give e.g. --counts 1,5,10")
    parsed = []
    for raw in specs:
        s = str(raw).strip()
        percent = s.endswith("%")
        body = s[:-1].strip() if percent else s
        try:
            value = float(body) if percent else int(body)
        except ValueError:
            kind = "a percentage" if percent else "a whole number or a percentage"
            raise SweepError(f"count {s!r} is not {kind} (e.g. 50 or 5%)") from None
        if value < 0:
            raise SweepError(f"count {s!r} is negative")
        if percent and value > 100:
            raise SweepError(f"count {s!r} is over 100%")
        parsed.append((value, percent))
    if len(set(parsed)) != len(parsed):
        dupes = sorted({s for s in specs if list(specs).count(s) > 1})
        raise SweepError(f"--counts has duplicates: {', '.join(dupes)}")
    return tuple(parsed)


def default() -> Config:
    """The reference recipe: counts 1,5,10,50,100 x 8 seeds, 5 epochs, cat -> dog."""
    return Config()


def head(**changes) -> Config:
    """The course project's recipe: heads on frozen features, balanced swaps of
    1-10%, batch 10, 10 epochs, RMSprop lr 1e-3; 64 seeds, since heads are cheap."""
    return default().replace(
        model="head", backbone="simplecnn", counts=("1%", "2.5%", "5%", "7.5%", "10%"),
        strategy="swap", seeds=64, epochs=10, batch_size=10, lr=1e-3, dropout=0.5,
    ).replace(**changes)


def backdoor(attack: str = "badnets", **changes) -> Config:
    """A trigger backdoor with BackdoorBench's poisoning rates (0.1-10% of the
    training set), all-to-one into the target class."""
    return default().replace(
        strategy=attack, source=ALL_CLASSES,
        counts=("0.1%", "0.5%", "1%", "5%", "10%"),
    ).replace(**changes)


def tiny() -> Config:
    """A few-second sweep on the embedded sample, for smoke tests."""
    return default().replace(
        data="sample", train_size=500, counts=("5", "50"), seeds=2, epochs=1
    )
