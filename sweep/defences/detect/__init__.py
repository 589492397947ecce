"""Defences against label flips: find the flipped images, measure the repair.

`folds` splits the training set for out-of-fold models, `detectors` turns
their predictions and features into a suspicion score per image, `scoring`
grades the scores against the known poisoned set, `detect_run` trains it all
in the engine and writes the tables, `detect_report` draws and renders them.
`backdoor_detectors` scores penultimate features for trigger backdoors
(spectral signatures, activation clustering); not wired into `detect` yet.
"""
