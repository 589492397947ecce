"""`python -m sweep certify`: the sweep's options plus the defence's."""

from __future__ import annotations

from sweep.cli.parser import config_from, csv, run_parser
from sweep.defences.certify import certify_report
from sweep.defences.certify.certify_run import CertifyConfig, run_certify
from sweep.errors import SweepError

DEFAULT_SEEDS = 3


def certify_parser():
    p = run_parser()
    p.prog = "python -m sweep certify"
    p.description = (
        "A certified defence: partition aggregation. For every seed (a hash of "
        "each image's bytes splits the training set into k partitions), one "
        "base model per partition trains as an engine replica on its partition "
        "alone; their plurality vote (DPA, or Run-Off Election, or Finite "
        "Aggregation's k*d models) gives every test image a prediction and a "
        "certified radius: the poisoned training images it provably survives. "
        "Under each --counts attack only the partitions holding a flip are "
        "retrained, and the ensemble is set beside its certified bound and the "
        "undefended sweep under the same flips (OUT/sweep/).")
    p.set_defaults(seeds=DEFAULT_SEEDS)
    g = p.add_argument_group("defence")
    g.add_argument("--partitions", type=csv, default=("50",), help=(
        "comma-separated k: base models (partitions) per ensemble, e.g. 50,250"))
    g.add_argument("--aggregation", type=csv, default=("dpa", "dpa-roe"), help=(
        "aggregations, each with its own certificate: dpa (plurality vote), "
        "dpa-roe (Run-Off Election over the same models), fa and fa-roe (Finite "
        "Aggregation: k*d models, d buckets each; --fa-copies d)"))
    g.add_argument("--fa-copies", type=int, default=8, help=(
        "d of Finite Aggregation (training costs d times DPA's)"))
    g.add_argument("--base-epochs", type=int, default=None, help=(
        "epochs of every base model (default: --epochs)"))
    g.add_argument("--no-baseline", action="store_true", help=(
        "skip the undefended sweep (no 'undefended' or 'one model, all data' "
        "numbers)"))
    g.add_argument("--level", type=float, default=0.95,
                   help="confidence level of the intervals over seeds")
    return p


def config_from_args(args) -> CertifyConfig:
    try:
        partitions = tuple(int(k) for k in args.partitions if k)
    except ValueError:
        raise SweepError(f"--partitions takes whole numbers, got "
                         f"{','.join(args.partitions)}") from None
    return CertifyConfig(sweep=config_from(args), partitions=partitions,
                         aggregations=tuple(a for a in args.aggregation if a),
                         fa_copies=args.fa_copies, base_epochs=args.base_epochs,
                         baseline=not args.no_baseline, level=args.level)


def cmd_certify(argv: list[str]) -> int:
    args = certify_parser().parse_args(argv)
    out = run_certify(config_from_args(args))
    path = certify_report.write_certify_report(out)
    for line in certify_report.console_lines(out):
        print(line)
    print(f"\nresults: {out}/ (certificates.parquet, certified.parquet, "
          "attack.parquet, price.parquet)")
    print(f"report: {path}")
    return 0
