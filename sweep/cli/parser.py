"""The sweep's command-line options, parsed into one frozen Config.

`run_parser` is every option of a sweep; `detect` (and any command that takes a
sweep's options) starts from it. `config_from` builds the Config: options left
out take the model's recipe.
"""

from __future__ import annotations

import argparse

from sweep.experiment import config as config_lib


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip() != "") or ("",)


def run_parser() -> Parser:
    p = Parser(
        prog="python -m sweep",
        description=(
            "Train SimpleCNN replicas (poison count x seed) together and measure "
            "how label-flip poisoning moves per-class test accuracy. Replicas of "
            "one seed share init, data order and dropout (paired twins), so "
            "poisoned-minus-clean deltas carry little seed noise. Other commands: "
            "report RESULTS_DIR, plan --effect E, verify RESULTS_DIR (each has --help)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None, help=(
        "'sample' (embedded 10k/2k CIFAR-10 sample), a parquet folder, a "
        "cifar-10-batches-py folder, or ROOT/{train,test}/<class>/ image folder; "
        "default $SWEEP_DATA, else download CIFAR-10"))
    d.add_argument("--train-size", type=int, default=None,
                   help="train on a class-balanced subset of this many images")
    g = p.add_argument_group("poisoning")
    g.add_argument("--counts", type=csv, default=None, help=(
        "comma-separated flip counts, absolute (50) or percent of the source "
        "class (5%%; for a backdoor, of the training set); the clean count 0 is "
        "always added (default 1,5,10,50,100; with --model head "
        "1%%,2.5%%,5%%,7.5%%,10%%; for a backdoor 0.1%%,0.5%%,1%%,5%%,10%%)"))
    g.add_argument("--source", default=None, help=(
        "class whose labels are flipped (default cat); for a backdoor, the class "
        "its poisoned images come from (default all: every class but the target)"))
    g.add_argument("--target", default="dog",
                   help="label they are flipped to; a backdoor's target class")
    g.add_argument("--pairs", type=csv, default=None, help=(
        "the attack matrix: comma-separated SOURCE:TARGET pairs, or 'all' for "
        "every ordered pair of classes; replaces --source/--target, and one clean "
        "replica per seed serves every pair"))
    g.add_argument("--attack", "--strategy", dest="strategy",
                   choices=config_lib.STRATEGIES, default=None, help=(
        "flip: N source -> target; swap: also N target -> source (balanced); "
        "badnets: a patch trigger on N images relabelled to the target; blend: "
        "a blended pattern, same labelling; clean-label: the trigger on N "
        "target images, labels kept, after a PGD perturbation (default flip; "
        "swap with --model head)"))
    g.add_argument("--selection", choices=("random", "first"), default="random",
                   help="random: a seeded draw; first: the first N in dataset order")
    g.add_argument("--poison-seed", type=int, default=0,
                   help="seed of the random selection")
    g.add_argument("--poison-per-seed", action="store_true", help=(
        "redraw the poisoned images for every training seed (default: one draw "
        "shared by all seeds, so seeds measure training noise only)"))
    b = p.add_argument_group("backdoor triggers (--attack badnets|blend|clean-label)")
    b.add_argument("--trigger-size", type=int, default=None,
                   help="side of the patch trigger, pixels (default 3)")
    b.add_argument("--trigger-position", default=None, metavar="CORNER|ROW,COL",
                   help="where the patch goes: bottom-right (default), bottom-left, "
                   "top-right, top-left, or ROW,COL of its top-left pixel")
    b.add_argument("--trigger-pattern", choices=config_lib.PATCH_PATTERNS,
                   default=None, help="the patch: a white square (badnets' default) "
                   "or Turner et al.'s black-and-white checker (clean-label's)")
    b.add_argument("--blend-alpha", type=float, default=None,
                   help="blend: the pattern's opacity (default 0.2)")
    b.add_argument("--blend-seed", type=int, default=None,
                   help="blend: seeds the random pattern (default 0)")
    b.add_argument("--blend-image", default=None, metavar="PATH",
                   help="blend: an image file as the pattern (resized to the images)")
    b.add_argument("--perturbation-eps", type=int, default=None, metavar="LEVELS",
                   help="clean-label: the PGD radius in uint8 levels (default 8, "
                   "i.e. 8/255), from a clean surrogate the engine trains first")
    b.add_argument("--no-perturbation", dest="perturbation_eps", action="store_const",
                   const=0, help="clean-label without the adversarial perturbation "
                   "(Turner et al. show it fails)")
    t = p.add_argument_group("grid and training")
    t.add_argument("--seeds", type=int, default=None,
                   help="training seeds per count (default 8; 64 with --model head)")
    t.add_argument("--seed-start", type=int, default=0, help="first training seed")
    t.add_argument("--unpaired", action="store_true", help=(
        "give every replica its own init/order/dropout instead of sharing them "
        "with its clean twin (for comparison)"))
    t.add_argument("--epochs", type=int, default=None,
                   help="(default 5; 10 with --model head)")
    t.add_argument("--batch-size", type=int, default=None,
                   help="(default 128; 10 with --model head)")
    t.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate (Adam; RMSprop for a head)")
    t.add_argument("--dropout", type=float, default=0.5)
    t.add_argument("--optimizer", default=None, metavar="SPEC", help=(
        "optax transform applied per replica, as optax calls, e.g. "
        "'clip_by_global_norm(1.0), adam' (--lr fills a missing learning_rate); "
        "default: torch's Adam"))
    m = p.add_argument_group("model (transfer-learning heads; see README)")
    m.add_argument("--model", choices=("cnn", "head"), default="cnn", help=(
        "cnn: SimpleCNN on the images; head: Dense 256 + Dropout + Dense 1 "
        "sigmoid on frozen --backbone features of two classes"))
    m.add_argument("--backbone", default=None, help=(
        "head: simplecnn (pretrained here on the other classes) or a "
        "keras.applications model (vgg16, resnet50, ...; needs sweep[transfer])"))
    m.add_argument("--weights", default=None, metavar="PATH|imagenet", help=(
        "Keras backbone weights: a local weights file, or imagenet (downloads)"))
    m.add_argument("--classes", type=csv, default=None, help=(
        "head: the two classes, e.g. cat,dog (default --source,--target)"))
    m.add_argument("--image-size", type=int, default=None, help=(
        "head: resize images to this square, bilinear as Keras' load_img "
        "(default 150 for a train/+validation/ folder, else the data's size)"))
    m.add_argument("--test-size", type=int, default=None,
                   help="class-balanced subset of the test split (images)")
    m.add_argument("--pooling", choices=("avg", "max"), default=None, help=(
        "head: pool the backbone's output over space instead of flattening it "
        "(as keras.applications' pooling=); far fewer head weights"))
    e = p.add_argument_group("engine")
    e.add_argument("--replicas-per-step", type=int, default=None, help=(
        "replicas trained in one compiled step (default: as many as fit in "
        "device memory; smaller chunks are tried if memory runs out)"))
    e.add_argument("--kernel", default="auto", help=(
        "conv formulation: auto (chosen per backend), vmap, im2col or native"))
    e.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype (parameters stay float32)")
    e.add_argument("--devices", type=int, default=None, help=(
        "local devices the replica axis is sharded over (default: all)"))
    e.add_argument("--cluster", default=None, metavar="ray[://ADDRESS]", help=(
        "run chunks as Ray tasks: 'ray' joins the cluster of $RAY_ADDRESS or "
        "starts a local one, 'ray://HOST:PORT' a remote one; needs sweep[ray]"))
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help=(
        "results folder (default results/<source>-<target>-<attack>-s<seeds>-"
        "<config hash>); rerunning the same command continues it"))
    o.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out; refuse if there is none")
    o.add_argument("--report", action="store_true",
                   help="also write the report (figures, HTML) at the end")
    o.add_argument("--threshold", type=float, default=None, help=(
        "with --report: how many flips push source accuracy below this percent"))
    o.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                   help="log to MLflow: URI, else $MLFLOW_TRACKING_URI, else MLflow's "
                   "default store in this folder (what `mlflow ui` opens); needs "
                   "sweep[mlflow]")
    o.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def config_from(args: argparse.Namespace) -> config_lib.Config:
    # Options left out take the model's recipe: SimpleCNN's, or the head's; a
    # backdoor's counts and source are BackdoorBench's (config_lib.backdoor).
    if args.model == "head":
        base = config_lib.head()
    elif args.strategy in config_lib.BACKDOORS:
        base = config_lib.backdoor(args.strategy)
    else:
        base = config_lib.default()

    def given(name):
        value = getattr(args, name)
        return getattr(base, name) if value is None else value

    counts = given("counts")
    return config_lib.Config(
        data=args.data,
        train_size=args.train_size,
        counts=tuple(counts) if not isinstance(counts, str) else csv(counts),
        source=given("source"),
        target=args.target,
        strategy=given("strategy"),
        selection=args.selection,
        poison_seed=args.poison_seed,
        poison_per_seed=args.poison_per_seed,
        seeds=given("seeds"),
        seed_start=args.seed_start,
        paired=not args.unpaired,
        epochs=given("epochs"),
        batch_size=given("batch_size"),
        lr=args.lr,
        dropout=args.dropout,
        optimizer=args.optimizer,
        replicas_per_step=args.replicas_per_step,
        kernel=args.kernel,
        compute_dtype=args.dtype,
        out=args.out,
        report=args.report,
        threshold=args.threshold,
        mlflow=args.mlflow,
        model=args.model,
        backbone=args.backbone,
        weights=args.weights,
        classes=args.classes,
        image_size=args.image_size,
        test_size=args.test_size,
        pooling=args.pooling,
        pairs=args.pairs,
        trigger_size=args.trigger_size,
        trigger_position=args.trigger_position,
        trigger_pattern=args.trigger_pattern,
        blend_alpha=args.blend_alpha,
        blend_seed=args.blend_seed,
        blend_image=args.blend_image,
        perturbation_eps=args.perturbation_eps,
        devices=args.devices,
        cluster=args.cluster,
    )
