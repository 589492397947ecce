"""Defences: more replicas over the same engine, and what they buy.

`detect/`: out-of-fold models that score every training image, graded against
the planted poison, and the repaired set retrained as paired twins.
"""
