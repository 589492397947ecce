"""Command line: parse, build one frozen config, call run(config).

    python -m sweep --counts 1,5,10,50,100 --seeds 8     run a sweep
    python -m sweep report RESULTS_DIR                  statistics + report
    python -m sweep plan --effect 1.0                   how many seeds to pay for
    python -m sweep verify RESULTS_DIR [--data PATH]    re-check provenance
    python -m sweep detect --counts 50,500 --folds 4    find the flips, repair
    python -m sweep certify --partitions 50             a certified defence
"""

from __future__ import annotations

import sys

from sweep import api
from sweep.cli import certify_command, commands, console, detect_command
from sweep.cli.parser import Parser, config_from, run_parser
from sweep.errors import SweepError

COMMANDS = ("run", "report", "plan", "verify", "detect", "certify")


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    facts = []
    out = api.run_config(config_from(args), resume=args.resume,
                         progress=not args.quiet, on_facts=facts.append).path
    console.print_summary(out)
    if facts:
        print()
        console.print_headlines(facts[0])
        print(f"report: {out / 'report.html'} (and report.md, *.png)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "run"
    if argv and argv[0] == command:
        argv = argv[1:]
    try:
        if command == "run":
            return cmd_run(argv)
        if command == "detect":
            return detect_command.cmd_detect(argv, Parser)
        if command == "certify":
            return certify_command.cmd_certify(argv)
        return getattr(commands, f"cmd_{command}")(argv, Parser)
    except SweepError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsweep: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except MemoryError:
        print("sweep: error: out of host memory; try --train-size or "
              "--replicas-per-step", file=sys.stderr)
        return 1

