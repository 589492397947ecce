"""Attack success rate (ASR) of a trigger backdoor: intervals, tests, thresholds.

Input is one row per replica (`asr_design`): its poisoned count, its seed (the
twins of a seed share initial weights, data order and dropout) and, on the
stamped test set, `asr_hits` of `asr_n` stamped images whose true class is not
the target that were predicted as the target; a backdoor's metrics table is
turned into those rows (`replica_table`). Count 0 is the clean twin: its ASR is
the natural rate at which a never-poisoned model calls a stamped image the
target.

What is estimated. Seeds make a replica's ASR random; the estimand at a count
is its mean over seeds: the expected ASR of a model trained with this recipe,
measured on this stamped test set (the test set is fixed, as for every accuracy
interval of the summary). The delta is that mean minus the clean twins' mean,
in points. Neither is the ASR of the median seed: near 0 or 1 with a large
spread between seeds the two differ by a factor (docs/statistics.md).

Modules:
  fiducial_mean  mean ASR at a count: logit-normal fiducial interval, Wilson
                 added where events are few, one-sided when every seed is at
                 the bound
  bootstrap_t    the paired delta and its p-value: paired t referred to a
                 fiducial parametric bootstrap of the twins' model
  asr_design     metrics -> one row per replica -> (seed x count) arrays
  count_table    per count: the mean ASR table (dose-response), the deltas
  asr_threshold  the poisoned count at which mean ASR first reaches X%

Draws are Monte Carlo: with the default `draws` the ends move by well under a
tenth of the interval's width between generators; pass `rng` for repeatability
(None: a fixed seed, as elsewhere in sweep.stats). Coverage by simulation:
`python -m sweep.stats.simulate.asr_coverage`, tests/test_asr_coverage.py.
"""

from sweep.stats.attack_success.asr_design import (
    ASR_COLUMNS,
    AsrDesign,
    as_replica_table,
    asr_design,
    replica_table,
)
from sweep.stats.attack_success.asr_threshold import (
    DEFAULT_ASR_THRESHOLDS,
    THRESHOLD_GRID,
    asr_threshold_set,
    asr_thresholds,
    describe_asr_threshold,
    segment_kept,
)
from sweep.stats.attack_success.bootstrap_t import (
    DELTA_METHOD,
    MAX_RHO,
    PairReference,
    asr_delta_interval,
    pair_reference,
    reference_pivots,
)
from sweep.stats.attack_success.count_table import (
    MEAN_COLUMNS,
    UNPAIRED_METHOD,
    asr_deltas,
    fixed_sequence_adjusted,
    mean_asr_by_count,
    mean_note,
)
from sweep.stats.attack_success.fiducial_mean import (
    AT_BOUND,
    DEFAULT_DRAWS,
    FEW,
    FEW_EVENTS,
    FIDUCIAL,
    MEAN_METHODS,
    empirical_logit,
    logit_normal_draws,
    logit_normal_mean,
    mean_asr_interval,
    wilson_design_effect,
)

__all__ = [
    "ASR_COLUMNS",
    "AT_BOUND",
    "AsrDesign",
    "DEFAULT_ASR_THRESHOLDS",
    "DEFAULT_DRAWS",
    "DELTA_METHOD",
    "FEW",
    "FEW_EVENTS",
    "FIDUCIAL",
    "MAX_RHO",
    "MEAN_COLUMNS",
    "MEAN_METHODS",
    "PairReference",
    "THRESHOLD_GRID",
    "UNPAIRED_METHOD",
    "as_replica_table",
    "asr_deltas",
    "asr_delta_interval",
    "asr_design",
    "asr_threshold_set",
    "asr_thresholds",
    "describe_asr_threshold",
    "empirical_logit",
    "fixed_sequence_adjusted",
    "logit_normal_draws",
    "logit_normal_mean",
    "mean_asr_by_count",
    "mean_asr_interval",
    "mean_note",
    "pair_reference",
    "reference_pivots",
    "replica_table",
    "segment_kept",
    "wilson_design_effect",
]
