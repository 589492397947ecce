"""Replica-batched layers for the engine hot path, each beside a plain reference."""
