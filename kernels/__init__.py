"""Replica-batched layers for the engine hot path, each beside a plain reference."""

# The submodules are the API (``from kernels import conv``; ``conv.conv3x3``).
# Nothing is re-exported here: ``kernels.dense`` must stay the module, not the
# function of the same name.
