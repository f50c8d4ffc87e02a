"""Detects a foreign ``datasets`` package (Hugging Face's) shadowing medvl's data layer."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DatasetsClashError", "MEDVL_DATA_LAYER", "check_own_folder", "require_medvl_datasets"]

MEDVL_DATA_LAYER = "medvl"

# Files that only Hugging Face's `datasets` has; their presence in our folder means both were installed into it.
_FOREIGN_MARKERS = ("arrow_dataset.py", "load.py", "dataset_dict.py")

_FIX = (
    "medvl's data layer is imported as `datasets`, the same name as Hugging Face's `datasets` library, and the two "
    "cannot share one environment. Fix: create a separate virtual environment for medvl "
    "(`python -m venv .venv && .venv/bin/pip install medvl`, or `make test`), or uninstall Hugging Face's package "
    "there (`pip uninstall datasets`) and reinstall medvl."
)


class DatasetsClashError(ImportError):
    """Raised when the importable ``datasets`` package is not medvl's data layer."""


def check_own_folder(package_paths: Iterable[str]) -> None:
    """Raise :class:`DatasetsClashError` when Hugging Face's files were installed into our ``datasets`` folder."""
    for folder in package_paths:
        found = [name for name in _FOREIGN_MARKERS if (Path(folder) / name).exists()]
        if found:
            raise DatasetsClashError(
                f"the folder {folder} mixes medvl's data layer with Hugging Face `datasets` files "
                f"({', '.join(found)}). " + _FIX
            )


def require_medvl_datasets() -> None:
    """Import ``datasets`` and raise :class:`DatasetsClashError` unless it is medvl's data layer.

    Called by ``lsms``, ``carzero`` and ``brgsa`` at import time, so a shadowing package fails with an explanation
    instead of an ``AttributeError`` deep inside a data loader.
    """
    module = sys.modules.get("datasets") or importlib.import_module("datasets")
    if getattr(module, "__medvl_data_layer__", None) != MEDVL_DATA_LAYER:
        origin = getattr(module, "__file__", None) or "an unknown location"
        raise DatasetsClashError(f"the importable `datasets` package at {origin} is not medvl's data layer. " + _FIX)
