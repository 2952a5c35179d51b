"""Inference: tiled prediction of large rasters, change metrics, evaluation and the Pareto selection of
checkpoints (paper Section 8.5)."""
