"""Attacks as what a replica trains on: label flips, the matrix's pairs, and
trigger backdoors (which images carry a trigger, a trigger from an image file,
the clean-label attack's adversarial perturbation)."""
