"""A backdoor sweep's attack success per poison count, as plain summaries.

Reads the `asr`, `robust_accuracy` and `test_accuracy` columns a trigger
backdoor's metrics.parquet carries (sweep.results.tables) and gives, per count,
their mean over the usable seeds with the smallest and largest seed. No
intervals here: these are descriptions of the seeds run, not inference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.errors import SweepError

COLUMNS = ("count", "n_seeds", "asr_mean", "asr_min", "asr_max", "robust_mean",
           "test_accuracy_mean", "n_stamped")


def asr_by_count(metrics: pd.DataFrame, *, epoch: int | None = None) -> pd.DataFrame:
    """Attack success per count at one epoch, over replicas that did not diverge.

    Args:
      metrics: a backdoor sweep's metrics table (replica x epoch x class rows).
      epoch: the epoch; None for the last.
    Returns:
      One row per count (0 included: the clean twins' natural rate), COLUMNS;
      percentages, like the table's.
    """
    if "asr" not in metrics.columns:
        raise SweepError("these metrics have no asr column: not a backdoor sweep")
    epoch = int(metrics["epoch"].max()) if epoch is None else int(epoch)
    rows = metrics[(metrics["epoch"] == epoch) & ~metrics["diverged"]]
    per_replica = rows.groupby("replica").first()
    out = []
    for count, group in per_replica.groupby("count"):
        asr = group["asr"].to_numpy(float)
        out.append({
            "count": int(count), "n_seeds": len(group),
            "asr_mean": float(np.mean(asr)), "asr_min": float(np.min(asr)),
            "asr_max": float(np.max(asr)),
            "robust_mean": float(group["robust_accuracy"].mean()),
            "test_accuracy_mean": float(group["test_accuracy"].mean()),
            "n_stamped": int(group["n_stamped"].iloc[0]),
        })
    return pd.DataFrame(out, columns=list(COLUMNS))
