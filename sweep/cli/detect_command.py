"""`python -m sweep detect`: the sweep's options plus the defence's."""

from __future__ import annotations

import pandas as pd

from sweep import results
from sweep.cli.parser import config_from, run_parser
from sweep.defences.detect import backdoor_tables, detect_report
from sweep.defences.detect.backdoor_run import (
    BackdoorDetectConfig,
    run_backdoor_detect,
)
from sweep.defences.detect.detect_run import DetectConfig, run_detect
from sweep.errors import SweepError
from sweep.experiment.config import BACKDOORS

DEFAULT_COUNTS = "50,500"


def detect_parser(parser_class):
    p = run_parser()
    p.prog = "python -m sweep detect"
    p.description = (
        "Find the flipped labels and measure the repair. For each count x seed, "
        "--folds fold replicas (the poisoned set minus one fold each) train "
        "together and predict their held-out fold; confident learning "
        "(cleanlab), out-of-fold margin, area under the margin, deep k-NN and "
        "the ensemble over seeds score every training image; scores are graded "
        "against the known flips with intervals over seeds; the poisoned set "
        "minus one detector's flags, and with them relabelled to the predicted "
        "class, are retrained as paired twins. With a backdoor attack (--attack "
        "badnets|blend|clean-label): every replica trains as in the sweep, "
        "spectral signatures and activation clustering examine its penultimate "
        "features of the target class, are graded against the stamped images, "
        "and each one's flags are removed and the replica retrained (its ASR "
        "and clean accuracy after repair, paired by seed); --folds, --knn-k and "
        "--repair-method do not apply, --repair-with none skips the repair.")
    p.set_defaults(counts=DEFAULT_COUNTS, seeds=4)
    g = p.add_argument_group("defence")
    g.add_argument("--folds", type=int, default=4, help="out-of-fold models per "
                   "count x seed")
    g.add_argument("--fold-seed", type=int, default=0, help="seed of the K-fold split")
    g.add_argument("--knn-k", type=int, default=10, help="neighbours of deep k-NN")
    g.add_argument("--repair-with", default="cleanlab", help=(
        "detector whose flagged images the repair removes or relabels: cleanlab, "
        "margin, aum, knn, ensemble, or none"))
    g.add_argument("--repair-method", default="remove,relabel", help=(
        "repairs, each a paired twin of the seed's clean and poisoned replicas: "
        "remove (retrain without the flagged images), relabel (retrain with them "
        "labelled as their out-of-fold predicted class), or both (default)"))
    return p


def cmd_detect(argv: list[str], parser_class) -> int:
    args = detect_parser(parser_class).parse_args(argv)
    sweep_config = config_from(args)
    if sweep_config.strategy in BACKDOORS:
        return _cmd_backdoor(args, sweep_config)
    config = DetectConfig(sweep=sweep_config, folds=args.folds,
                          fold_seed=args.fold_seed, knn_k=args.knn_k,
                          repair_with=args.repair_with,
                          repair_methods=tuple(
                              m.strip() for m in args.repair_method.split(",")
                              if m.strip()))
    out = run_detect(config)
    path = detect_report.write_detect_report(out)
    print_tables(out)
    print(f"\nresults: {out}/ (suspects.parquet, detection.parquet, repair.parquet)")
    print(f"report: {path}")
    return 0


def print_tables(out) -> None:
    for line in (detect_report.detection_lines(out) + [""]
                 + detect_report.clean_lines(out) + [""]
                 + detect_report.repair_lines(out)):
        print(line)


def _cmd_backdoor(args, sweep_config) -> int:
    """The backdoor detect run (`backdoor_run`)."""
    if args.repair_with not in ("cleanlab", "none"):  # cleanlab: the flip default
        raise SweepError("with a backdoor attack the repair removes each "
                         "detector's flags; --repair-with takes only none")
    config = BackdoorDetectConfig(sweep=sweep_config,
                                  repair=args.repair_with != "none")
    out = run_backdoor_detect(config)
    lines = backdoor_lines(out)
    for line in lines:
        print(line)
    path = out / "report.md"
    results.atomic_write_bytes(path, (
        "# Backdoor detection and repair\n\n"
        + "".join(f"    {line}\n" if line else "\n" for line in lines)).encode())
    print(f"\nresults: {out}/ (detection.parquet, detection_seeds.parquet, "
          "repair.parquet, backdoor_suspects.parquet)")
    print(f"report: {path}")
    return 0


def backdoor_lines(out) -> list[str]:
    """A backdoor detect run's detection and repair tables, as printed."""
    lines = backdoor_tables.detection_lines(pd.read_parquet(out / "detection.parquet"))
    if (out / "repair.parquet").exists():
        lines += [""] + backdoor_tables.repair_lines(
            pd.read_parquet(out / "repair.parquet"))
    return lines
