"""RAD-ChestCT label tables and ``.npz`` volumes.

Public files (Draelos et al. 2021, Zenodo; 3,630 volumes in the public release):

* ``img{train,valid,test}_Abnormality_and_Location_Labels.csv``: ``NoteAcc_DEID`` (the volume key, e.g. ``tst32575``)
  then one ``<abnormality>*<location>`` column per pair (e.g. ``nodule*right_lung``), values ``0``/``1``. An
  abnormality is positive when any of its locations is (OR over locations).
* A location-merged table with plain abnormality columns (BrgSA's ``merged_abnormality_labels_with_id.csv``) is read
  as is.
* ``<NoteAcc_DEID>.npz``: a NumPy archive whose key ``ct`` holds the volume (int16 HU), slice axis first. The public
  volumes were resampled to 0.8 mm isotropic (BrgSA's ``data_process_radchestct.py`` default); the archive itself
  stores no spacing or direction, so :func:`read_radchestct_volume` reports the spacing as that documented value.
  :func:`radchestct_ct_volume` turns it into a :class:`~datasets.ct.CTVolume` for the CT pipeline: the slice axis is
  flipped as BrgSA's preprocessing does (research notes "brgsa.md" 3.2), and, the direction being unrecorded, the axes
  are taken in the DICOM display convention (columns toward patient left, rows toward posterior, flipped slices toward
  superior), an assumption stated in the volume's ``meta``.

Zero-shot classes (BrgSA, research notes "brgsa.md" 2.3): the 16 RAD abnormalities :data:`CLASSES` matched to CT-RATE
findings (:data:`DISPLAY_NAMES`); CT-RATE's Mosaic attenuation pattern has no counterpart and is dropped; RAD's
``calcification`` is scored by the larger of the Arterial-wall and Coronary-artery-wall calcification scores.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from datasets.errors import InputError
from datasets.labels.base import LabelSet, check_unique_ids, parse_binary, read_csv_table, require_columns

if TYPE_CHECKING:
    from datasets.ct import CTVolume

__all__ = [
    "FORMAT_VERSION",
    "CLASSES",
    "DISPLAY_NAMES",
    "VOLUME_KEY",
    "SPACING_MM",
    "RadChestCTVolume",
    "check_volume_archive",
    "radchestct_ct_volume",
    "read_radchestct_labels",
    "read_radchestct_volume",
]

FORMAT_VERSION = "rad-chestct-1"
CLASSES = [
    "catheter_or_port", "calcification", "cardiomegaly", "pericardial_effusion", "hernia", "lymphadenopathy",
    "emphysema", "atelectasis", "nodule", "opacity", "scarring", "pleural_effusion", "bronchial_wall_thickening",
    "consolidation", "bronchiectasis", "septal_thickening",
]
DISPLAY_NAMES = [
    "Medical material", "Calcification", "Cardiomegaly", "Pericardial effusion", "Hiatal hernia", "Lymphadenopathy",
    "Emphysema", "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Peribronchial thickening", "Consolidation", "Bronchiectasis", "Interlobular septal thickening",
]
VOLUME_KEY = "ct"
SPACING_MM = (0.8, 0.8, 0.8)


@dataclass(frozen=True)
class RadChestCTVolume:
    """One RAD-ChestCT volume and what is known of its geometry.

    Attributes:
        array: the ``ct`` array as stored, ``(slices, rows, columns)``.
        spacing: voxel spacing in mm along the array axes (the release's documented 0.8 mm isotropic; not in the file).
        source: the ``.npz`` file.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    source: Path


def read_radchestct_labels(path: str | os.PathLike, classes: Sequence[str] = tuple(CLASSES)) -> LabelSet:
    """Read a RAD-ChestCT label table (per-location or location-merged) into a :class:`LabelSet`.

    Args:
        path: the CSV file.
        classes: abnormalities to read, in this order. Defaults to the 16 zero-shot :data:`CLASSES`.

    Returns:
        A label set keyed by ``NoteAcc_DEID``; ``image_relpaths`` are ``<NoteAcc_DEID>.npz``.

    Raises:
        InputError: a missing ``NoteAcc_DEID`` column, an abnormality with no column, a value other than 0/1, or a
            duplicate volume key.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["NoteAcc_DEID"])
    check_unique_ids(path, "NoteAcc_DEID", rows)
    per_location = any("*" in name for name in header)
    columns = {
        name: [col for col in header if col.split("*", 1)[0] == name] if per_location else [name] for name in classes
    }
    missing = [name for name, cols in columns.items() if not cols or not set(cols) <= set(header)]
    if missing:
        kind = "'<abnormality>*<location>' columns" if per_location else "columns"
        raise InputError(f"{path}: no {kind} for abnormality(ies) {missing}")
    labels = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, name in enumerate(classes):
            labels[i, j] = max(parse_binary(row.values[col], path, row.number, col) for col in columns[name])
    ids = [row.values["NoteAcc_DEID"] for row in rows]
    meta = [{"row": row.number} for row in rows]
    return LabelSet(ids, list(classes), labels, meta, path, FORMAT_VERSION, [f"{key}.npz" for key in ids],
                    key_column="NoteAcc_DEID")


def read_radchestct_volume(path: str | os.PathLike) -> RadChestCTVolume:
    """Read one RAD-ChestCT ``.npz`` volume (key ``ct``) without unpickling anything.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: not a NumPy ``.npz`` archive, no ``ct`` key (the message lists the keys found), or not a 3-D array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no RAD-ChestCT volume", str(path))
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path} is not a readable NumPy .npz archive: {err}") from err
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: expected a .npz archive with key {VOLUME_KEY!r}, got a single .npy array")
    with loaded as archive:
        if VOLUME_KEY not in archive.files:
            raise InputError(f"{path}: no array {VOLUME_KEY!r} in the archive; it holds {archive.files}")
        array = archive[VOLUME_KEY]
    if array.ndim != 3:
        raise InputError(f"{path}: array {VOLUME_KEY!r} has shape {array.shape}; expected a 3-D volume")
    return RadChestCTVolume(array, SPACING_MM, path)


def check_volume_archive(path: Path, where: str) -> None:
    """Check, reading the archive's index only (not the array), that ``path`` holds a :data:`VOLUME_KEY` array.

    Raises:
        InputError: not a readable ``.npz`` archive, or no ``ct`` array (``where`` starts the message).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as err:
        raise InputError(f"{where} is not a readable .npz archive: {err}") from err
    if f"{VOLUME_KEY}.npy" not in names:
        raise InputError(f"{where}: no array {VOLUME_KEY!r} in the archive (it holds {names}); expected RAD-ChestCT's")


def radchestct_ct_volume(path: str | os.PathLike) -> CTVolume:
    """A RAD-ChestCT ``.npz`` volume as a :class:`~datasets.ct.CTVolume` (array (X, Y, Z) float32 HU, RAS+ affine).

    Raises:
        FileNotFoundError, InputError: as :func:`read_radchestct_volume`.
    """
    from datasets.ct import CTVolume

    volume = read_radchestct_volume(path)
    array = np.ascontiguousarray(volume.array[::-1].transpose(2, 1, 0), dtype=np.float32)  # (Z,Y,X) -> (X,Y,Z)
    spacing = (volume.spacing[2], volume.spacing[1], volume.spacing[0])
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel axes, superior slices, in RAS+
    meta = {"format": "radchestct-npz", "already_hu": True, "orientation": "LPS", "canonical": False,
            "assumed_geometry": f"{SPACING_MM} mm, slices flipped, display-convention directions (not in the file)"}
    return CTVolume(array, affine, spacing, str(volume.source), meta)
