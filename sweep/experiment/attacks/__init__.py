"""Attacks as labels a replica trains on: label flips, and the matrix's pairs."""
