"""The band-file inputs a model was trained on (its checkpoint record's ``band_inputs``), and the two dates of a
pair read as that model needs them (:mod:`utilities.raster.bands`): its bands by name, in its order, on its
reference band's grid with its resampling."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from utilities.artifacts.model_io import checkpoint_record
from utilities.errors import InputError
from utilities.raster.bands import DEFAULT_RESAMPLING, DateSource, PathLike, check_band_names, pair_rasters


def model_dates(model: PathLike, date1: DateSource, date2: DateSource, names: Optional[Sequence[str]] = None,
                align: Optional[str] = None, stem: str = "pair") -> Tuple[Path, Path]:
    """The two dates a model is to read, as raster paths.

    A model trained on band files (its record's ``band_inputs``) reads the bands it was trained on, from folders,
    lists or rasters with those band descriptions, stacked with its reference band and resampling; ``names``, if
    given, must be the same bands in the same order. Others read the dates as given (``names`` then stacks
    band files). ``align="date1"`` resamples date 2 onto date 1's grid.

    Raises
    ------
    InputError
        One line naming the first band missing or extra (:func:`check_band_names`), or a band file missing.
    """
    trained = model_band_inputs(model)
    if trained is None:
        if names is None and align is None:
            return Path(date1), Path(date2)
        return pair_rasters(date1, date2, names, align=align, stem=stem)
    if names is not None:
        check_band_names(trained["names"], names, "the band list --bands")
    return pair_rasters(date1, date2, trained["names"], trained.get("reference"),
                        trained.get("resampling") or DEFAULT_RESAMPLING, align, stem=stem)


def model_band_inputs(model: PathLike) -> Optional[Dict[str, Any]]:
    """The band-file inputs a model was trained on (its first checkpoint record's ``band_inputs``), or None
    (trained on whole rasters, an ONNX file, or no record)."""
    model = Path(model)
    if model.suffix == ".onnx":
        return None
    if model.is_file() and model.suffix == ".json":
        try:
            content = json.loads(model.read_text())
        except (OSError, ValueError):
            return None
        members = content.get("members") if isinstance(content, dict) else None
        if members:
            model = Path(members[0]) if Path(members[0]).is_absolute() else model.parent / members[0]
    try:
        record, _ = checkpoint_record(model)
    except InputError:
        return None  # the model's loader reports it
    return getattr(record, "band_inputs", None)
