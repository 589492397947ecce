"""sweep: measure what label-flip poisoning does to a classifier.

    import sweep
    res = sweep.run(data="sample", counts=[100, 300], seeds=4, epochs=3)
    res.summary, res.plot_dose_response(), res.report()
    sweep.load("results/...")
"""

from sweep.api import Results, load, run

__all__ = ["Results", "load", "run"]
