"""Artifacts of training: checkpoints, models and ensembles loaded from them, ONNX export."""
