"""Data sets, training-loop pieces, metrics and tools around the mantis models."""
