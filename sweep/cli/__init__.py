"""The command line: `python -m sweep [run|report|plan|verify|detect] ...`.

`parser` turns a sweep's options into one frozen Config, `main` dispatches to
the commands (`commands` for report/plan/verify, `detect_command`), `console`
prints what they found. Every command runs through the same functions as the
Python API; a `SweepError` becomes one line and exit status 2.
"""
