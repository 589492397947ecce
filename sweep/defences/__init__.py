"""Defences against poisoned training data."""
