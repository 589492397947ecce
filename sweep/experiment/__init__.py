"""The experiment: what a sweep is (config, attacks, data views) and running it.

Modules, bottom up:
  config      the one frozen `Config`, its presets and the parsing of its fields
  attacks/    label flips (`label_flips`) and the attack matrix's pairs
  transfer/   transfer heads' data: two-class views, frozen backbones, features
  prepare     config -> data, grid, every replica's labels (before any training)
  running/    run a sweep: manifest, checkpoints, chunks here or on Ray, progress
  verify      re-check a finished folder's provenance
"""
