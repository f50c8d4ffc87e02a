"""ChestX-Det10 label file.

Public files (Deepwise AI Lab, github.com/Deepwise-AILab/ChestX-Det10-Dataset): ``train.json`` / ``test.json``, a JSON
list with one object per image: ``file_name`` (e.g. ``"36199.png"``), ``syms`` (list of class names, empty for an
image without findings) and ``boxes`` (one ``[x1, y1, x2, y2]`` pixel box per entry of ``syms``).

The 10 classes are :data:`CLASSES`. CARZero's zero-shot benchmark uses the 542 test images and binarises ``syms``
(any box of a class makes the image positive for it); the boxes stay in ``meta`` for grounding.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.labels.base import LabelSet

__all__ = ["FORMAT_VERSION", "CLASSES", "read_chestxdet10_json"]

FORMAT_VERSION = "chestxdet10-1"
CLASSES = [
    "Atelectasis", "Calcification", "Consolidation", "Effusion", "Emphysema", "Fibrosis", "Fracture", "Mass", "Nodule",
    "Pneumothorax",
]

logger = logging.getLogger(__name__)


def _is_box(box: object) -> bool:
    return (
        isinstance(box, list) and len(box) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
    )


def read_chestxdet10_json(path: str | os.PathLike) -> LabelSet:
    """Read a ChestX-Det10 ``train.json`` / ``test.json``.

    Entries are numbered from 1 in error messages (entry N = the N-th object of the list).

    Returns:
        A label set keyed by ``file_name``; ``meta`` carries ``syms`` and ``boxes`` as in the file.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: not a JSON list of objects, a missing key, an unknown class in ``syms``, ``boxes`` not one
            ``[x1, y1, x2, y2]`` per sym, or a duplicate ``file_name``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no label file", str(path))
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is skipped
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a readable JSON file: {err}") from err
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected a JSON list of image objects, got {type(entries).__name__}")
    ids, meta = [], []
    labels = np.zeros((len(entries), len(CLASSES)), dtype=np.float32)
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object with file_name, syms, boxes")
        missing = [key for key in ("file_name", "syms", "boxes") if key not in entry]
        if missing:
            raise InputError(f"{where}: missing key(s) {missing}")
        name, syms, boxes = entry["file_name"], entry["syms"], entry["boxes"]
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}, key 'file_name': expected a file name, got {name!r}")
        where = f"{where} ({name})"
        if name in seen:
            raise InputError(f"{where}, key 'file_name': duplicate image (first in entry {seen[name]})")
        seen[name] = number
        if not isinstance(syms, list) or not isinstance(boxes, list) or len(syms) != len(boxes):
            raise InputError(f"{where}: 'syms' and 'boxes' must be lists of the same length, got {syms!r} / {boxes!r}")
        for sym, box in zip(syms, boxes):
            if sym not in CLASSES:
                raise InputError(f"{where}, key 'syms': unknown class {sym!r}; expected one of {CLASSES}")
            if not _is_box(box):
                raise InputError(f"{where}, key 'boxes': expected [x1, y1, x2, y2] numbers, got {box!r}")
            labels[number - 1, CLASSES.index(sym)] = 1.0
        ids.append(name)
        meta.append({"row": number, "syms": list(syms), "boxes": [list(map(float, box)) for box in boxes]})
    logger.info("read %s: %d images, sha256 %s", path, len(ids), sha256_file(path))
    return LabelSet(ids, list(CLASSES), labels, meta, path, FORMAT_VERSION)
