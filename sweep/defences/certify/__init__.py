"""Certified defences by partition aggregation (DPA, Finite Aggregation, Run-Off).

`partition` says which base model trains on which training image (a hash of the
image's bytes, never its label); `aggregation` turns the base models' test
predictions into the ensemble's prediction and a certified radius: the number of
poisoned training images (inserted, deleted or relabelled) it provably survives.
Both are pure NumPy.

`base_models` trains the base models as isolated engine replicas (each a
function of its own partition only) and names each by what it is a function
of, so a flip retrains only its own partition's models; `certify_run` is the
run (`python -m sweep certify`), `certify_tables` its tables, `certify_report`
its report.
"""
