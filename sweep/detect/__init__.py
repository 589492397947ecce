"""Defences against label flips: find the flipped images, measure the repair.

`folds` splits the training set for out-of-fold models, `detectors` turns
their predictions into a suspicion score per image, `scoring` grades the
scores against the known poisoned set, `pipeline` trains it all in the engine
and writes the tables, `figures`/`report` draw them, `cli` is the command.
"""
