"""Statistics of a sweep: deltas, intervals, decisions, dose-response and power.

Reads only the tidy results tables (never the engine), so any results folder can
be re-analysed: `summarize(pd.read_parquet(".../metrics.parquet"))` returns the
summary.parquet the CLI writes. Accuracies are percent (0-100); deltas are
percentage points, poisoned minus clean. docs/statistics.md has the methods,
their references and their simulated coverage and power.

Modules, by concept:
  design        the metrics table laid out as arrays (one epoch)
  intervals     t / Welch intervals and tests, sign-flip and permutation tests
  multiplicity  the confirmatory fixed-sequence rule, Holm, Benjamini-Hochberg
  power         power and minimum detectable effect of that rule
  summary       the summary table (`summarize`)
  pair_tables   an attack matrix's tables, summarized per pair
  dose_curve    the dose-response curve and its pointwise band
  threshold     "how many flips push a class below X%": the threshold set
  planning      `plan`: seeds needed, from an sd or a finished sweep
  attack_success/ a backdoor's attack success rate: mean ASR intervals, the
                paired delta's bootstrap-t, the count at which ASR reaches X%
  backdoor_table  a backdoor's attack success per count (the dose-response table)
  simulate/     coverage and power simulations (python -m sweep.stats.simulate)
"""

from sweep.results.tables import METRIC_COLUMNS, check_metrics
from sweep.stats.attack_success import (
    DEFAULT_ASR_THRESHOLDS,
    asr_threshold_set,
    asr_thresholds,
    describe_asr_threshold,
)
from sweep.stats.backdoor_table import (
    asr_by_count,
    per_replica_asr,
    threshold_table,
)
from sweep.stats.design import Design, classes_of, design_of
from sweep.stats.dose_curve import (
    dose_response,
    isotonic_fit,
    monotone_fit,
    pava,
    pointwise_band,
)
from sweep.stats.intervals import (
    DEFAULT_N_RESAMPLES,
    MAX_EXACT_PERMUTATIONS,
    MAX_EXACT_SEEDS,
    min_attainable_p,
    permutation_test,
    sign_flip_floor,
    sign_flip_test,
    t_interval,
    t_test,
    welch_interval,
    welch_test,
)
from sweep.stats.multiplicity import (
    CONFIRMATORY,
    CONFIRMATORY_METHOD,
    EXPLORATORY,
    EXPLORATORY_METHOD,
    benjamini_hochberg,
    confirmatory_adjusted,
    graphical_adjusted,
    holm,
    sequence_stop_note,
    smallest_effective_count,
)
from sweep.stats.pair_tables import is_matrix, pair_slice, pairs_of, summarize_pairs
from sweep.stats.planning import format_plan, plan
from sweep.stats.power import (
    CONFIRMATORY_SHARE,
    DEFAULT_SD,
    PLAN_SEEDS,
    POWER_ALPHA,
    POWER_TARGET,
    min_detectable_effect,
    paired_power,
    power_t,
    row_alpha,
    seeds_needed,
)
from sweep.stats.summary import (
    ASR_CLASS_ID,
    ASR_CLASS_NAME,
    CLEAN_ACCURACY_ID,
    CLEAN_ACCURACY_NAME,
    SUMMARY_COLUMNS,
    accuracy_by_count,
    pooled_delta_sd,
    seeds_note,
    summarize,
    unpaired_seeds_equivalent,
)
from sweep.stats.threshold import (
    crossing,
    describe_threshold,
    first_crossing,
    threshold_count,
    threshold_interval_unpaired,
    threshold_set,
)

__all__ = [
    "ASR_CLASS_ID",
    "ASR_CLASS_NAME",
    "CLEAN_ACCURACY_ID",
    "CLEAN_ACCURACY_NAME",
    "CONFIRMATORY",
    "CONFIRMATORY_METHOD",
    "CONFIRMATORY_SHARE",
    "DEFAULT_ASR_THRESHOLDS",
    "DEFAULT_N_RESAMPLES",
    "DEFAULT_SD",
    "Design",
    "EXPLORATORY",
    "EXPLORATORY_METHOD",
    "MAX_EXACT_PERMUTATIONS",
    "MAX_EXACT_SEEDS",
    "METRIC_COLUMNS",
    "PLAN_SEEDS",
    "POWER_ALPHA",
    "POWER_TARGET",
    "SUMMARY_COLUMNS",
    "accuracy_by_count",
    "asr_by_count",
    "asr_threshold_set",
    "asr_thresholds",
    "benjamini_hochberg",
    "check_metrics",
    "classes_of",
    "confirmatory_adjusted",
    "crossing",
    "describe_threshold",
    "describe_asr_threshold",
    "design_of",
    "dose_response",
    "first_crossing",
    "format_plan",
    "graphical_adjusted",
    "holm",
    "is_matrix",
    "isotonic_fit",
    "min_attainable_p",
    "min_detectable_effect",
    "monotone_fit",
    "pair_slice",
    "paired_power",
    "pairs_of",
    "pava",
    "permutation_test",
    "plan",
    "pointwise_band",
    "pooled_delta_sd",
    "power_t",
    "row_alpha",
    "seeds_needed",
    "seeds_note",
    "sign_flip_floor",
    "sign_flip_test",
    "sequence_stop_note",
    "smallest_effective_count",
    "per_replica_asr",
    "summarize",
    "threshold_table",
    "summarize_pairs",
    "t_interval",
    "t_test",
    "threshold_count",
    "threshold_interval_unpaired",
    "threshold_set",
    "unpaired_seeds_equivalent",
    "welch_interval",
    "welch_test",
]
