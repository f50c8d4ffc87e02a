"""NIH ChestX-ray14 label tables.

Public files (NIH Clinical Center, https://nihcc.app.box.com/v/ChestXray-NIHCC):

* ``Data_Entry_2017.csv``: header ``Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,
  View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],``. The bracketed names hold an unquoted
  comma, so a CSV parser sees the columns ``OriginalImage[Width`` / ``Height]`` and ``OriginalImagePixelSpacing[x`` /
  ``y]``; the header and the rows end with a comma (an empty unnamed last column, dropped here).
  ``Finding Labels`` is a ``|``-separated list of the 14 findings, or ``No Finding`` (all 14 negative).
* ``test_list.txt`` / ``train_val_list.txt``: NIH's official split, one image name per line (25,596 test images).
* The CheXNet-style label list CARZero evaluates on (arnoweng/CheXNet ``labels/test_list.txt``, 22,433 lines):
  whitespace-separated, an image path then 14 0/1 labels in :data:`CLASSES` order. It is not NIH's official split.

Class order is NIH's / CheXNet's; note the underscore in ``Pleural_Thickening``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.labels.base import LabelSet, check_unique_ids, read_csv_table, require_columns

__all__ = ["FORMAT_VERSION", "CLASSES", "NO_FINDING", "read_data_entry", "read_image_list", "read_chexnet_list"]

FORMAT_VERSION = "chestxray14-1"

CLASSES = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
NO_FINDING = "No Finding"

_META_COLUMNS = {
    "Follow-up #": "follow_up", "Patient ID": "patient_id", "Patient Age": "patient_age",
    "Patient Gender": "patient_sex", "Patient Sex": "patient_sex", "View Position": "view",
    "OriginalImage[Width": "width", "Height]": "height",
    "OriginalImagePixelSpacing[x": "spacing_x", "y]": "spacing_y",
}

logger = logging.getLogger(__name__)


def read_data_entry(path: str | os.PathLike) -> LabelSet:
    """Read ``Data_Entry_2017.csv`` into a 14-class :class:`LabelSet` (all rows, file order).

    Args:
        path: the ``Data_Entry_2017.csv`` file (or the 2020 re-release with the same layout).

    Returns:
        A label set whose ``meta`` carries ``follow_up``, ``patient_id``, ``patient_age``, ``patient_sex``, ``view``,
        ``width``, ``height``, ``spacing_x``, ``spacing_y`` (as text) where present.

    Raises:
        InputError: a missing column, an unknown finding name, "No Finding" combined with a finding, or a duplicate
            image id.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["Image Index", "Finding Labels"])
    check_unique_ids(path, "Image Index", rows)
    labels = np.zeros((len(rows), len(CLASSES)), dtype=np.float32)
    meta = []
    for i, row in enumerate(rows):
        findings = [name.strip() for name in row.values["Finding Labels"].split("|")]
        if findings == [NO_FINDING]:
            findings = []
        for name in findings:
            if name not in CLASSES:
                raise InputError(
                    f"{path}: row {row.number} ({row.values['Image Index']}), column 'Finding Labels': unknown finding "
                    f"{name!r}; expected '|'-separated names from {CLASSES} or {NO_FINDING!r} alone"
                )
            labels[i, CLASSES.index(name)] = 1.0
        fields = {key: row.values[col] for col, key in _META_COLUMNS.items() if col in header}
        meta.append({"row": row.number, **fields})
    return LabelSet([row.values["Image Index"] for row in rows], list(CLASSES), labels, meta, path, FORMAT_VERSION)


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Read an image list with one image name per line (NIH ``test_list.txt`` / ``train_val_list.txt``).

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: a line holds more than one field, or a name repeats.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no image list", str(path))
    names: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise InputError(f"{path}: line {number}: expected one image name, got {len(fields)} fields")
        if fields[0] in names:
            raise InputError(f"{path}: line {number}: duplicate image {fields[0]!r} (first on line {names[fields[0]]})")
        names[fields[0]] = number
    logger.info("read %s: %d images, sha256 %s", path, len(names), sha256_file(path))
    return list(names)


def read_chexnet_list(path: str | os.PathLike) -> LabelSet:
    """Read a CheXNet-style label list (image path + 14 whitespace-separated 0/1 labels per line).

    The image id is the path's file name; ``image_relpaths`` keep the path as written.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: a line without exactly 15 fields, a label other than 0/1, or a duplicate image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no label list", str(path))
    ids, relpaths, rows, meta = [], [], [], []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1 + len(CLASSES):
            raise InputError(
                f"{path}: line {number}: expected an image path and {len(CLASSES)} labels, got {len(fields)} fields"
            )
        image_id = fields[0].replace("\\", "/").rsplit("/", 1)[-1]
        if image_id in seen:
            raise InputError(f"{path}: line {number}: duplicate image {image_id!r} (first on line {seen[image_id]})")
        seen[image_id] = number
        values = []
        for name, text in zip(CLASSES, fields[1:]):
            if text not in ("0", "1"):
                raise InputError(f"{path}: line {number} ({image_id}), column {name!r}: expected 0 or 1, got {text!r}")
            values.append(float(text))
        ids.append(image_id)
        relpaths.append(fields[0])
        rows.append(values)
        meta.append({"row": number})
    logger.info("read %s: %d images, sha256 %s", path, len(ids), sha256_file(path))
    labels = np.asarray(rows, dtype=np.float32).reshape(len(ids), len(CLASSES))
    return LabelSet(ids, list(CLASSES), labels, meta, path, FORMAT_VERSION, relpaths)
