"""The authors' public MXNet code (feevos/ceecnet) as a test oracle.

It lives outside the repository, in ``../shared/reference/ceecnet``; :func:`authors_module` imports one
of its modules (as ``ceecnet.<...>``) or skips the calling test with the reason when it is absent (a
bare clone). mantis never imports it: only tests compare against it.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def authors_module(name: str) -> ModuleType:
    """``ceecnet.<name>`` from ``../shared/reference``, or skip the test when it is not there."""
    if not (REFERENCE / "ceecnet").is_dir():
        pytest.skip(f"the authors' code is absent ({REFERENCE / 'ceecnet'})")
    if str(REFERENCE) not in sys.path:
        sys.path.insert(0, str(REFERENCE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # its `mode is 'train'` comparisons
        return importlib.import_module(f"ceecnet.{name}")
