"""sweep: measure what label-flip poisoning does to a classifier.

    import sweep
    res = sweep.run(data="sample", counts=[100, 300], seeds=4, epochs=3)
    res.summary, res.plot_dose_response(), res.report()
    sweep.load("results/...")
    sweep.summarize(metrics_df, level=0.95, epoch=None, classes=("cat", "dog"))
    sweep.certify(data="sample", partitions=[50], counts=[5, 50])  # certified defence
"""

from sweep.api import CertifyResults, Results, certify, load, run
from sweep.stats import dose_response, summarize, threshold_count, threshold_set

__all__ = [
    "CertifyResults",
    "Results",
    "certify",
    "dose_response",
    "load",
    "run",
    "summarize",
    "threshold_count",
    "threshold_set",
]
