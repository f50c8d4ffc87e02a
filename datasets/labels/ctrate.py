"""CT-RATE label and metadata tables (and the CT-RATE-LT long-tail labels).

Public files (Hugging Face dataset ``ibrahimhamamci/CT-RATE``, CC BY-NC-SA 4.0):

* ``dataset/multi_abnormality_labels/dataset_multi_abnormality_labels_{train,valid}_predicted_labels.csv``:
  ``VolumeName`` then the 18 abnormalities :data:`CLASSES` in that order, values ``0``/``1`` (RadBERT predictions).
  The zero-shot test set is the validation split: 3,039 volumes.
* ``dataset/metadata/{train,validation}_metadata.csv``: one row per volume; this module reads ``VolumeName``,
  ``XYSpacing`` (a list literal ``[x, y]`` in mm), ``ZSpacing`` (mm), ``RescaleSlope``, ``RescaleIntercept`` and, when
  present, ``ImagePositionPatient`` / ``ImageOrientationPatient`` (list literals).
  CT-RATE v2 volumes already store HU: applying slope/intercept again double-rescales (CT-CLIP issue #50); the values
  are returned, whether to apply them is the reader's decision.
* CT-RATE-LT (BrgSA ``Dataset/CT-RATE-LT-label.csv``): ``VolumeName`` + the 15 underrepresented abnormalities
  :data:`LT_CLASSES` (radiologist-corrected GPT-4o labels of the 3,039 validation volumes), ``0``/``1``; the class order
  here is BrgSA's evaluation order, not the file's column order (columns are selected by name).

Volumes live at ``<split>/<split>_<patient>/<split>_<patient>_<scan>/<VolumeName>``
(e.g. ``valid/valid_1/valid_1_a/valid_1_a_1.nii.gz``); ``image_relpaths`` are relative to the split folder.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.errors import InputError
from datasets.labels.base import (
    LabelSet,
    TableRow,
    check_unique_ids,
    missing_ids_message,
    parse_binary,
    read_csv_table,
    require_columns,
)

__all__ = [
    "FORMAT_VERSION",
    "CLASSES",
    "LT_CLASSES",
    "LAYOUTS",
    "CTRateGeometry",
    "volume_relpath",
    "read_ctrate_labels",
    "read_ctrate_metadata",
    "join_metadata",
]

FORMAT_VERSION = "ct-rate-1"
CLASSES = [
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion", "Mosaic attenuation pattern",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
]
LT_CLASSES = [
    "Pneumonia", "Pneumothorax", "Empyema", "Tuberculosis", "Pulmonary fibrosis", "Lung cyst", "Bronchial thickening",
    "Lung mass", "Osteophyte", "Rib fracture", "Atherosclerosis", "Pericardial calcification", "Spondylosis",
    "Pleural calcification", "Pneumomediastinum",
]
LAYOUTS = ("nested", "flat")

_VOLUME_NAME = re.compile(r"^(?P<split>[a-z]+)_(?P<patient>\d+)_(?P<scan>[a-z]+)_(?P<recon>\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class CTRateGeometry:
    """Geometry and rescale values of one CT-RATE volume, from ``*_metadata.csv``.

    Attributes:
        spacing: voxel spacing ``(x, y, z)`` in mm (``XYSpacing`` then ``ZSpacing``).
        rescale_slope: ``RescaleSlope``.
        rescale_intercept: ``RescaleIntercept``.
        origin: ``ImagePositionPatient`` (mm), or None when the column is absent.
        orientation: ``ImageOrientationPatient`` (6 direction cosines), or None when the column is absent.
    """

    spacing: tuple[float, float, float]
    rescale_slope: float
    rescale_intercept: float
    origin: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None


def volume_relpath(volume_name: str, layout: str = "nested") -> str:
    """Path of a volume relative to its split folder.

    Args:
        volume_name: e.g. ``"valid_1_a_1.nii.gz"``.
        layout: ``"nested"`` (CT-RATE's ``valid_1/valid_1_a/valid_1_a_1.nii.gz``) or ``"flat"`` (the name itself).
            Defaults to "nested".

    Raises:
        ValueError: an unknown layout, or a name that does not follow ``<split>_<n>_<letter>_<n>.nii.gz``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "flat":
        return volume_name
    match = _VOLUME_NAME.match(volume_name)
    if match is None:
        raise ValueError(f"{volume_name!r} is not a CT-RATE volume name like 'valid_1_a_1.nii.gz'")
    patient = f"{match['split']}_{match['patient']}"
    return f"{patient}/{patient}_{match['scan']}/{volume_name}"


def read_ctrate_labels(
    path: str | os.PathLike, classes: Sequence[str] = tuple(CLASSES), layout: str = "nested"
) -> LabelSet:
    """Read a CT-RATE multi-abnormality label table (or the CT-RATE-LT table with ``classes=LT_CLASSES``).

    Args:
        path: the CSV file.
        classes: label columns to read, in this order. Defaults to the 18 :data:`CLASSES`.
        layout: volume folder layout for ``image_relpaths`` (see :func:`volume_relpath`). Defaults to "nested".

    Raises:
        InputError: a missing column, a value other than 0/1 (e.g. "yes"), a duplicate ``VolumeName``, or (nested
            layout) a ``VolumeName`` that does not follow CT-RATE's naming.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["VolumeName", *classes])
    check_unique_ids(path, "VolumeName", rows)
    labels = np.array(
        [[parse_binary(row.values[name], path, row.number, name) for name in classes] for row in rows],
        dtype=np.float32,
    ).reshape(len(rows), len(classes))
    relpaths = []
    for row in rows:
        try:
            relpaths.append(volume_relpath(row.values["VolumeName"], layout))
        except ValueError as err:
            raise InputError(f"{path}: row {row.number}, column 'VolumeName': {err}") from err
    meta = [{"row": row.number} for row in rows]
    ids = [row.values["VolumeName"] for row in rows]
    return LabelSet(ids, list(classes), labels, meta, path, FORMAT_VERSION, relpaths, key_column="VolumeName")


def _literal_floats(row: TableRow, column: str, path: Path, size: int | None) -> tuple[float, ...]:
    text = row.values[column]
    try:
        value = ast.literal_eval(text)
        numbers = tuple(float(v) for v in value)
    except (ValueError, SyntaxError, TypeError) as err:
        raise InputError(
            f"{path}: row {row.number}, column {column!r}: expected a list of numbers, got {text!r}"
        ) from err
    if size is not None and len(numbers) != size:
        raise InputError(f"{path}: row {row.number}, column {column!r}: expected {size} numbers, got {text!r}")
    return numbers


def _float(row: TableRow, column: str, path: Path) -> float:
    text = row.values[column]
    try:
        return float(text)
    except ValueError as err:
        raise InputError(f"{path}: row {row.number}, column {column!r}: expected a number, got {text!r}") from err


def read_ctrate_metadata(path: str | os.PathLike) -> dict[str, CTRateGeometry]:
    """Read a CT-RATE ``*_metadata.csv`` into ``{VolumeName: CTRateGeometry}``.

    Raises:
        InputError: a missing column, an unparsable spacing / rescale value, or a duplicate ``VolumeName``.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"])
    check_unique_ids(path, "VolumeName", rows)
    geometry = {}
    for row in rows:
        x, y = _literal_floats(row, "XYSpacing", path, 2)
        origin = _literal_floats(row, "ImagePositionPatient", path, 3) if "ImagePositionPatient" in header else None
        orientation = (
            _literal_floats(row, "ImageOrientationPatient", path, 6) if "ImageOrientationPatient" in header else None
        )
        geometry[row.values["VolumeName"]] = CTRateGeometry(
            (x, y, _float(row, "ZSpacing", path)), _float(row, "RescaleSlope", path),
            _float(row, "RescaleIntercept", path), origin, orientation,
        )
    return geometry


def join_metadata(labels: LabelSet, geometry: Mapping[str, CTRateGeometry], source: str = "the metadata") -> LabelSet:
    """Add each volume's :class:`CTRateGeometry` to its ``meta`` under ``"geometry"`` (a join by ``VolumeName``).

    Raises:
        InputError: volumes of the label table are absent from the metadata (the message lists them).
    """
    absent = [name for name in labels.image_ids if name not in geometry]
    if absent:
        raise InputError(missing_ids_message(absent, f"the label table {labels.source}", source))
    meta = [{**row, "geometry": geometry[name]} for name, row in zip(labels.image_ids, labels.meta)]
    return LabelSet(
        list(labels.image_ids), list(labels.class_names), labels.labels, meta, labels.source, labels.format_version,
        list(labels.image_relpaths), labels.key_column,
    )
