"""The subcommands besides `run`: report, plan, verify (argument parsing only).

Each takes its argv and the one-line-error parser class from `__main__`, and
returns the exit status. Errors are `SweepError`s, printed by `cli.main.main`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep import stats
from sweep.cli import console
from sweep.cli.detect_command import print_tables
from sweep.defences.detect.detect_report import write_detect_report
from sweep.experiment.verify import verify
from sweep.report.write import write_report


def cmd_report(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    p = parser_class(
        prog="python -m sweep report",
        description=(
            "Recompute every statistic of a finished sweep and write report.md, "
            "report.html, the PNG figures and an updated summary.parquet into "
            "its results folder."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results_dir", help="a sweep's results folder")
    p.add_argument("--level", type=float, default=0.95,
                   help="confidence level of every interval")
    p.add_argument("--threshold", type=float, default=None, help=(
        "answer: how many flips push source-class accuracy below this percent "
        "(default: 10 points below its clean accuracy)"))
    args = p.parse_args(argv)
    if (Path(args.results_dir) / "detect.json").exists():  # a `detect` folder
        path = write_detect_report(args.results_dir)
        print_tables(Path(args.results_dir))
        print(f"report: {path} (and detect.md, detect_*.png beside it)")
        return 0
    facts = []
    path = write_report(args.results_dir, level=args.level,
                               threshold=args.threshold, on_facts=facts.append)
    if facts:  # an attack matrix's report states no one-pair headlines
        console.print_headlines(facts[0])
    print(f"report: {path} (and report.md, *.png, summary.parquet beside it)")
    return 0


def cmd_plan(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    p = parser_class(
        prog="python -m sweep plan",
        description=(
            "How many seeds a sweep needs for its confirmatory rule (paired t, "
            "fixed sequence, each of source and target at alpha/2) to declare an "
            "effect of a given size, and the power of each seed count. The sd of "
            "the paired deltas comes from --sd, a finished sweep (--from), or a "
            "default."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--effect", type=float, required=True,
                   help="accuracy change to detect, percentage points")
    p.add_argument("--sd", type=float, default=None,
                   help="sd of paired deltas, points (default: from --from, "
                   f"else {stats.DEFAULT_SD})")
    p.add_argument("--from", dest="results_dir", default=None, metavar="RESULTS_DIR",
                   help="take the sd from this finished sweep")
    p.add_argument("--alpha", type=float, default=stats.POWER_ALPHA,
                   help="familywise error rate of the confirmatory family")
    p.add_argument("--power", type=float, default=stats.POWER_TARGET,
                   help="wanted power")
    args = p.parse_args(argv)
    table = stats.plan(args.effect, args.sd, args.alpha, args.power,
                       results_dir=args.results_dir)
    print(stats.format_plan(table))
    return 0


def cmd_verify(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    """See `sweep.experiment.verify.verify`."""
    p = parser_class(
        prog="python -m sweep verify",
        description=(
            "Re-check a sweep's provenance: the data still hashes as recorded in "
            "manifest.json, the training subset and the poisoned sets are what "
            "the recorded configuration implies on that data (and what "
            "poisoned.parquet holds), and the result tables are complete. "
            "Nothing in the results folder is changed. Exit status 0: verified; "
            "1: a check failed; 2: bad input."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results_dir", help="a sweep's results folder")
    p.add_argument("--data", default=None, metavar="PATH", help=(
        "the data to check, as for a sweep's --data ('sample' or a path); "
        "default: the data the sweep recorded, else $SWEEP_DATA"))
    args = p.parse_args(argv)
    return verify(args.results_dir, data=args.data)
