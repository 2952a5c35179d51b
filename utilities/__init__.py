"""Everything around the mantis models, one sub-package per stage of the work.

- :mod:`utilities.raster`: reading and checking rasters (GeoTIFF/PNG), windows and tiles of large scenes.
- :mod:`utilities.data`: data sets, chips, the boundary/distance targets, augmentation, CIFAR-10, synthetic scenes.
- :mod:`utilities.artifacts`: checkpoints, loading models and ensembles from them, ONNX export.
- :mod:`utilities.training`: configs, chip caches, the evolving-loss schedule, Horovod, the training step.
- :mod:`utilities.inference`: tiled prediction, metrics, evaluation, Pareto selection of checkpoints.

At the top, shared by all of them: :mod:`utilities.errors` (the one-line input errors), :mod:`utilities.atomic`
(atomic writes), :mod:`utilities.progress` (progress bars and log lines) and :mod:`utilities.cli` (the entry
scripts' argument handling). A sub-package imports from the top and from the stages listed before it, never
from one listed after it.
"""
