"""CheXpert label tables.

Public files (Stanford AIMI, CheXpert-v1.0):

* ``train.csv`` / ``valid.csv``: header ``Path,Sex,Age,Frontal/Lateral,AP/PA`` then the 14 observations of
  :data:`OBSERVATIONS`. Cells are ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned
  in the report).
* The expert-labelled test set, ``test_labels.csv`` (as distributed with CheXlocalize and read by CARZero): ``Path``
  plus observation columns with radiologist-consensus ``0``/``1`` only; no blanks, no uncertainty.

Uncertainty policy (:data:`UNCERTAINTY_POLICIES`, Irvin et al. 2019): ``u_ones`` maps -1 to 1, ``u_zeros`` maps -1 to
0, ``ignore`` maps -1 to NaN (excluded from metrics). Blank cells follow ``blank``: ``"zeros"`` (the CheXpert paper's
convention: not mentioned = negative) or ``"ignore"`` (NaN).

Zero-shot evaluation (CARZero and the papers it compares with) uses the test set and the 5 competition tasks
:data:`COMPETITION_TASKS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.errors import InputError
from datasets.labels.base import LabelSet, check_unique_ids, parse_binary, read_csv_table, require_columns

__all__ = [
    "FORMAT_VERSION",
    "OBSERVATIONS",
    "COMPETITION_TASKS",
    "UNCERTAINTY_POLICIES",
    "BLANK_POLICIES",
    "read_chexpert_csv",
    "read_chexpert_test",
]

FORMAT_VERSION = "chexpert-1"

OBSERVATIONS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
COMPETITION_TASKS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
UNCERTAINTY_POLICIES = ("u_ones", "u_zeros", "ignore")
BLANK_POLICIES = ("zeros", "ignore")

_META_COLUMNS = {"Sex": "sex", "Age": "age", "Frontal/Lateral": "frontal_lateral", "AP/PA": "ap_pa"}
_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0}


def _check_classes(classes: Sequence[str]) -> None:
    unknown = [name for name in classes if name not in OBSERVATIONS]
    if unknown:
        raise ValueError(f"unknown CheXpert observation(s) {unknown}; choose from {OBSERVATIONS}")


def read_chexpert_csv(
    path: str | os.PathLike,
    uncertainty: str = "ignore",
    blank: str = "zeros",
    classes: Sequence[str] = tuple(OBSERVATIONS),
) -> LabelSet:
    """Read CheXpert's ``train.csv`` or ``valid.csv``.

    Args:
        path: the CSV file.
        uncertainty: policy for -1.0 cells, one of :data:`UNCERTAINTY_POLICIES`. Defaults to "ignore".
        blank: policy for blank cells, one of :data:`BLANK_POLICIES`. Defaults to "zeros".
        classes: observations to keep, in this order. Defaults to all 14 :data:`OBSERVATIONS`.

    Returns:
        A label set keyed by ``Path``; ``meta`` carries ``sex``, ``age``, ``frontal_lateral``, ``ap_pa``.

    Raises:
        ValueError: an unknown policy or class name.
        InputError: a missing column, a value other than 1.0/0.0/-1.0/blank (e.g. 2), or a duplicate path.
    """
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty policy must be one of {UNCERTAINTY_POLICIES}, got {uncertainty!r}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank policy must be one of {BLANK_POLICIES}, got {blank!r}")
    _check_classes(classes)
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["Path", *_META_COLUMNS, *classes])
    check_unique_ids(path, "Path", rows)
    uncertain = {"u_ones": 1.0, "u_zeros": 0.0, "ignore": math.nan}[uncertainty]
    empty = 0.0 if blank == "zeros" else math.nan
    labels = np.empty((len(rows), len(classes)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, name in enumerate(classes):
            text = row.values[name]
            if text == "":
                labels[i, j] = empty
                continue
            if text not in _VALUES:
                raise InputError(
                    f"{path}: row {row.number} ({row.values['Path']}), column {name!r}: expected 1.0, 0.0, -1.0 or "
                    f"blank, got {text!r}"
                )
            value = _VALUES[text]
            labels[i, j] = uncertain if value == -1.0 else value
    meta = [{"row": row.number, **{key: row.values[col] for col, key in _META_COLUMNS.items()}} for row in rows]
    return LabelSet([row.values["Path"] for row in rows], list(classes), labels, meta, path, FORMAT_VERSION)


def read_chexpert_test(path: str | os.PathLike, classes: Sequence[str] = tuple(COMPETITION_TASKS)) -> LabelSet:
    """Read the expert-labelled CheXpert test set (``test_labels.csv``: ``Path`` + 0/1 observation columns).

    Args:
        path: the CSV file.
        classes: observations to keep, in this order. Defaults to the 5 :data:`COMPETITION_TASKS`.

    Raises:
        ValueError: an unknown class name.
        InputError: a missing column, a value other than 0/1 (blank or -1 included), or a duplicate path.
    """
    _check_classes(classes)
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["Path", *classes])
    check_unique_ids(path, "Path", rows)
    labels = np.array(
        [[parse_binary(row.values[name], path, row.number, name) for name in classes] for row in rows],
        dtype=np.float32,
    ).reshape(len(rows), len(classes))
    meta = [{"row": row.number} for row in rows]
    return LabelSet([row.values["Path"] for row in rows], list(classes), labels, meta, path, FORMAT_VERSION)
