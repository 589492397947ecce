"""Coverage and power of every interval and decision the tool reports, simulated.

`python -m sweep.stats.simulate [--from RESULTS_DIR]` writes the table of
docs/statistics.md.

Modules:
  noise              the noise model (seed x count accuracies), from a sweep or textbook
  interval_coverage  coverage of the t, Welch, band and threshold intervals
  decisions          familywise error and power of the decision rules
  coverage_table     the table and its command line
  asr_coverage       a backdoor's attack success rate: coverage of its intervals,
                     threshold set and decisions, and its test's power
                     (python -m sweep.stats.simulate.asr_coverage [--power])
"""
