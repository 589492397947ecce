"""`sweep plan`: how many seeds a sweep needs, from a given sd or a finished sweep.

The power is that of the confirmatory procedure the summary uses (see
`sweep.stats.power`); a finished sweep's paired-delta sd comes from its summary.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from sweep.errors import SweepError
from sweep.results.load import load_results
from sweep.stats.design import classes_of
from sweep.stats.power import (
    DEFAULT_SD,
    PLAN_SEEDS,
    POWER_ALPHA,
    POWER_TARGET,
    min_detectable_effect,
    paired_power,
    row_alpha,
    seeds_needed,
)
from sweep.stats.summary import pooled_delta_sd, summarize


def plan(
    effect: float,
    sd: float | None = None,
    alpha: float = POWER_ALPHA,
    power: float = POWER_TARGET,
    *,
    results_dir: str | os.PathLike | None = None,
    seeds: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Seeds the confirmatory procedure needs to declare `effect` points, by n.

    The power is that of the procedure the summary uses for the source or
    target class at one count: a paired t test at alpha/2 inside its fixed
    sequence (see `sweep.stats.power`; checked against simulation in
    tests/test_coverage.py). The sd of the paired deltas comes from `sd`, else
    from `results_dir` (pooled over its counts x classes), else DEFAULT_SD.

    Args:
      effect: difference to detect (points).
      sd: sd of paired deltas (points), or None.
      alpha: familywise error rate of the confirmatory family.
      power: wanted power.
      results_dir: a finished sweep to take the sd from.
      seeds: seed numbers to tabulate (default PLAN_SEEDS).

    Returns:
      Rows seeds, power (for `effect`), mde (points at alpha and power), note
      ("needed" on the fewest seeds that reach `power`, "this sweep" on the
      sweep's own); attrs hold effect, sd, sd_source, alpha, test_alpha, power,
      needed.
    """
    if not effect > 0:
        raise SweepError(f"--effect must be positive, got {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise SweepError("alpha and power must be between 0 and 1")
    if sd is not None and results_dir is not None:
        raise SweepError("give either --sd or a results folder, not both")
    own = None
    if sd is not None:
        source = "given"
    elif results_dir is not None:
        results = load_results(results_dir)
        summary = summarize(results.metrics, classes=classes_of(results.manifest))
        sd = pooled_delta_sd(summary)
        own = int(summary["n_seeds"].max())
        if not np.isfinite(sd):
            raise SweepError(
                f"cannot estimate the sd from {results_dir}: it has {own} usable "
                "seed(s); pass --sd"
            )
        source = f"pooled over {len(summary)} count x class rows of {results_dir}"
    else:
        sd = DEFAULT_SD
        source = "default: a typical per-class paired delta, SimpleCNN on CIFAR-10"
    if not sd > 0:
        raise SweepError(f"--sd must be positive, got {sd}")
    level = row_alpha("confirmatory", alpha=alpha)
    needed = seeds_needed(effect, sd, alpha=level, power=power)
    ns = set(PLAN_SEEDS if seeds is None else seeds) | {needed}
    if own is not None and own >= 2:
        ns.add(own)
    if min(ns) < 2:
        raise SweepError("--seeds must all be at least 2")
    ns = sorted(ns)
    notes = [
        ", ".join(
            t for t, hit in (("needed", n == needed), ("this sweep", n == own)) if hit
        )
        for n in ns
    ]
    table = pd.DataFrame(
        {
            "seeds": ns,
            "power": [paired_power(effect, sd, n, alpha=level) for n in ns],
            "mde": [min_detectable_effect(sd, n, alpha=level, power=power) for n in ns],
            "note": notes,
        }
    )
    table.attrs.update(
        effect=effect,
        sd=sd,
        sd_source=source,
        alpha=alpha,
        test_alpha=level,
        power=power,
        needed=needed,
    )
    return table


def format_plan(table: pd.DataFrame) -> str:
    """The `plan` table as text for the terminal, with its assumptions on top."""
    a = table.attrs
    points = f"{a['effect']:g} point{'' if a['effect'] == 1 else 's'}"
    head = (
        f"sd of paired deltas: {a['sd']:.2f} points ({a['sd_source']})\n"
        f"to declare an effect of {points} on the source or target class at a "
        f"count, familywise alpha {a['alpha']:g}, with power {a['power']:.0%}: "
        f"{a['needed']} seeds\n"
        f"(the confirmatory rule: fixed sequence from the largest count down, each "
        f"class's sequence at alpha/2 = {a['test_alpha']:g}, paired t; power: chance "
        f"it declares {points} at a count once the larger counts are declared; "
        f"mde: smallest effect declared with power {a['power']:.0%})\n"
    )
    body = table.to_string(
        index=False,
        formatters={"power": "{:.3f}".format, "mde": "{:.2f}".format},
    )
    return head + body
