"""Certified defences by partition aggregation (DPA, Finite Aggregation, Run-Off).

`partition` says which base model trains on which training image (a hash of the
image's bytes, never its label); `aggregation` turns the base models' test
predictions into the ensemble's prediction and a certified radius: the number of
poisoned training images (inserted, deleted or relabelled) it provably survives.
Pure NumPy; the engine that trains the base models lives elsewhere.
"""
