"""The subcommands besides `run`: report, plan, verify.

Each takes its argv and the one-line-error parser class from `__main__`, and
returns the exit status. Errors are `SweepError`s, printed by `__main__.main`.
"""

from __future__ import annotations

import argparse


def cmd_report(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    from sweep import report

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
    facts = []
    path = report.write_report(args.results_dir, level=args.level,
                               threshold=args.threshold, on_facts=facts.append)
    print_headlines(facts[0])
    print(f"report: {path} (and report.md, *.png, summary.parquet beside it)")
    return 0


def print_headlines(facts) -> None:
    """The answers a reader wants first, as the report states them."""
    f = facts
    if f.seeds_note:
        print(f"note: {f.seeds_note}")
    print(f.threshold_text)
    holm, bh = f.significant.get(f.source, (None, None))
    if holm is None and bh is None:
        print(f"{f.source}: no count's effect is significant after correction "
              f"(smallest attainable p with these seeds: {f.min_p:.3g})")
    else:
        print(f"{f.source}: smallest significant count {holm} (Holm), {bh} (BH)")
    if f.twin_corr == f.twin_corr:  # not NaN
        print(f"paired design: twin correlation {f.twin_corr:.2f}, intervals "
              f"{f.width_ratio:.2f}x the width of unpaired (Welch) ones")


def cmd_plan(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    from sweep import stats

    p = parser_class(
        prog="python -m sweep plan",
        description=(
            "How many seeds a sweep needs to detect an effect of a given size "
            "(paired t test), and the power of each seed count. The sd of the "
            "paired deltas comes from --sd, a finished sweep (--from), or a default."
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
                   help="two-sided significance level")
    p.add_argument("--power", type=float, default=stats.POWER_TARGET,
                   help="wanted power")
    args = p.parse_args(argv)
    table = stats.plan(args.effect, args.sd, args.alpha, args.power,
                       results_dir=args.results_dir)
    print(stats.format_plan(table))
    return 0
