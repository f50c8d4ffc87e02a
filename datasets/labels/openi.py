"""Open-I (Indiana University chest X-ray collection) label table, as CARZero used it.

Files (CARZero ``Dataset/OpenI/``, built from the NLMCXR ``ecgen`` XML reports; the same ``custom.csv`` layout as
torchxrayvision's Open-I loader):

* ``custom.csv``: columns ``uid,file_name,labels_major,labels_automatic``; ``labels_automatic`` holds the MeSH
  "automatic" terms of the report.
* ``openi_multi_label_image.csv``: the evaluated images, column ``Path`` (frontal and lateral views).

Label rule (research notes, "carzero.md" 4.1): an image is positive for a class when ``labels_automatic`` contains the
lower-cased class name or one of its synonyms (:data:`SYNONYMS`), case-insensitively; otherwise negative (a blank
``labels_automatic`` is negative for all). Containment means ``Granuloma`` is positive whenever ``Calcified
Granuloma`` is, as in the original. The 18 classes :data:`CLASSES` follow CARZero's prompt order (ChestX-ray14's
classes without Consolidation, then Fracture, Opacity, Lesion, Calcified Granuloma, Granuloma). Images are matched
by file name without extension.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from datasets.labels.base import LabelSet, check_unique_ids, read_csv_table, require_columns

__all__ = ["FORMAT_VERSION", "CLASSES", "SYNONYMS", "read_openi_custom_csv", "read_openi_image_list"]

FORMAT_VERSION = "openi-1"
CLASSES = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax", "Edema",
    "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia", "Fracture", "Opacity", "Lesion", "Calcified Granuloma",
    "Granuloma",
]
SYNONYMS = {
    "Pleural_Thickening": ["pleural thickening"], "Infiltration": ["infiltrate"], "Atelectasis": ["atelectases"],
}


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem


def read_openi_custom_csv(path: str | os.PathLike) -> LabelSet:
    """Read ``custom.csv`` and apply the containment rule.

    Returns:
        A label set keyed by ``file_name`` without extension; ``image_relpaths`` keep ``file_name``; ``meta`` keeps
        ``uid``, ``labels_major`` and ``labels_automatic``.

    Raises:
        InputError: a missing column or a duplicate ``file_name``.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["uid", "file_name", "labels_major", "labels_automatic"])
    check_unique_ids(path, "file_name", rows)
    terms = [[name.lower(), *SYNONYMS.get(name, [])] for name in CLASSES]
    labels = np.zeros((len(rows), len(CLASSES)), dtype=np.float32)
    for i, row in enumerate(rows):
        text = row.values["labels_automatic"].lower()
        for j, words in enumerate(terms):
            labels[i, j] = float(any(word in text for word in words))
    meta = [
        {"row": row.number, **{key: row.values[key] for key in ("uid", "labels_major", "labels_automatic")}}
        for row in rows
    ]
    ids = [_stem(row.values["file_name"]) for row in rows]
    return LabelSet(ids, list(CLASSES), labels, meta, path, FORMAT_VERSION, [row.values["file_name"] for row in rows])


def read_openi_image_list(path: str | os.PathLike) -> list[str]:
    """Read ``openi_multi_label_image.csv`` and return the image keys (file names without extension), in order.

    Raises:
        InputError: no ``Path`` column or a repeated image.
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    require_columns(path, header, ["Path"])
    check_unique_ids(path, "Path", rows)
    return [_stem(row.values["Path"]) for row in rows]
