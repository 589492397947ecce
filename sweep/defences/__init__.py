"""Defences: more replicas over the same engine, and what they buy.

`detect/`: out-of-fold models that score every training image, graded against
the planted poison, and the repaired set retrained as paired twins.
`certify/`: base models on hash partitions of the training set, whose vote
carries a certified radius against poisoning (DPA, Finite Aggregation, Run-Off).
"""
