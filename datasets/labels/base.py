"""The shared label-table type and the CSV helpers every label adapter uses.

A :class:`LabelSet` is what every adapter in :mod:`datasets.labels` returns: one row per image (or CT volume), a fixed
class order, and a float32 ``(N, C)`` matrix where 1 is positive, 0 negative and NaN "not labelled / ignored".

Row numbers in error messages are spreadsheet rows: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets.errors import InputError
from datasets.io import sha256_file

__all__ = [
    "LabelSet",
    "TableRow",
    "read_csv_table",
    "require_columns",
    "check_unique_ids",
    "parse_binary",
    "missing_ids_message",
    "row_list",
]

logger = logging.getLogger(__name__)

_SHOWN_IDS = 10


@dataclass(frozen=True)
class TableRow:
    """One data row of a CSV table.

    Attributes:
        number: spreadsheet row number (header = 1, first data row = 2).
        values: the row as ``{column: text}``.
    """

    number: int
    values: dict[str, str]


@dataclass
class LabelSet:
    """A zero-shot label table: images (or volumes), classes and a float32 label matrix.

    Attributes:
        image_ids: the image or volume file keys, one per row (e.g. ``"00000003_000.png"``, ``"valid_1_a_1.nii.gz"``).
        class_names: class names in their fixed order.
        labels: float32 array ``(N, C)``: 1 positive, 0 negative, NaN not labelled / ignored.
        meta: one dict per row with the table's other fields (always carries ``"row"``, the source row number).
        source: the label file read.
        format_version: the adapter's ``FORMAT_VERSION``.
        image_relpaths: path of each image relative to an image root; defaults to ``image_ids``.
        key_column: the table's column holding ``image_ids``, for messages (``"VolumeName"`` for CT-RATE,
            ``"NoteAcc_DEID"`` for RAD-ChestCT); empty when the adapter does not name it.
    """

    image_ids: list[str]
    class_names: list[str]
    labels: np.ndarray
    meta: list[dict[str, Any]]
    source: Path
    format_version: str
    image_relpaths: list[str] = field(default_factory=list)
    key_column: str = ""

    def __post_init__(self) -> None:
        n, c = len(self.image_ids), len(self.class_names)
        self.labels = np.asarray(self.labels, dtype=np.float32).reshape(n, c)
        if len(self.meta) != n:
            raise ValueError(f"LabelSet: {len(self.meta)} meta rows for {n} images")
        if not self.image_relpaths:
            self.image_relpaths = list(self.image_ids)
        if len(self.image_relpaths) != n:
            raise ValueError(f"LabelSet: {len(self.image_relpaths)} image paths for {n} images")

    def __len__(self) -> int:
        return len(self.image_ids)

    def select_classes(self, names: Sequence[str]) -> LabelSet:
        """Keep only ``names``, in that order.

        Raises:
            InputError: a name is not one of :attr:`class_names`.
        """
        unknown = [name for name in names if name not in self.class_names]
        if unknown:
            raise InputError(f"{self.source}: classes {unknown} are not in this label set; it has {self.class_names}")
        index = [self.class_names.index(name) for name in names]
        return LabelSet(
            list(self.image_ids), list(names), self.labels[:, index], self.meta, self.source, self.format_version,
            list(self.image_relpaths), self.key_column,
        )

    def select_images(self, image_ids: Sequence[str], what: str = "the image list") -> LabelSet:
        """Keep the rows of ``image_ids``, in that order (a join of this table with an image list).

        Args:
            image_ids: keys to keep.
            what: how the image list is named in the error message. Defaults to "the image list".

        Raises:
            InputError: some ids are absent from this table (the message lists them).
        """
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        absent = [image_id for image_id in image_ids if image_id not in position]
        if absent:
            raise InputError(missing_ids_message(absent, f"{what}", f"the label table {self.source}"))
        rows = [position[image_id] for image_id in image_ids]
        return LabelSet(
            [self.image_ids[i] for i in rows], list(self.class_names), self.labels[rows], [self.meta[i] for i in rows],
            self.source, self.format_version, [self.image_relpaths[i] for i in rows], self.key_column,
        )

    def image_paths(self, image_root: str | os.PathLike) -> list[Path]:
        """Resolved path of every image under ``image_root``."""
        root = Path(image_root)
        return [root / relpath for relpath in self.image_relpaths]

    def check_images(self, image_root: str | os.PathLike) -> None:
        """Check that every image of the table exists under ``image_root``.

        Raises:
            InputError: names the image folder and lists the absent image ids.
        """
        absent = [i for i, path in zip(self.image_ids, self.image_paths(image_root)) if not path.is_file()]
        if absent:
            raise InputError(missing_ids_message(absent, f"the label table {self.source}", f"the folder {image_root}"))

    def samples(self, image_root: str | os.PathLike) -> Iterator[dict[str, Any]]:
        """Yield one sample dict per row, with the data layer's fixed keys.

        Yields:
            ``{"image": Path, "mask": None, "text": None, "label": float32 (C,), "meta": dict}``; ``meta`` adds
            ``"image_id"`` to the row's fields.
        """
        for image_id, path, label, meta in zip(self.image_ids, self.image_paths(image_root), self.labels, self.meta):
            yield {"image": path, "mask": None, "text": None, "label": label, "meta": {"image_id": image_id, **meta}}

    def positives(self) -> dict[str, int]:
        """Number of positive rows per class."""
        return {name: int(np.nansum(self.labels[:, j] == 1)) for j, name in enumerate(self.class_names)}


def read_csv_table(
    path: str | os.PathLike, encoding: str = "utf-8", delimiter: str = ","
) -> tuple[list[str], list[TableRow]]:
    """Read a CSV file with a header into rows keyed by column name.

    A trailing empty column (a header ending with a comma, as in ``Data_Entry_2017.csv``) is dropped. The SHA-256
    and row count are logged.

    Args:
        path: the CSV file.
        encoding: text encoding. Defaults to "utf-8" (a UTF-8 byte-order mark is skipped).
        delimiter: field separator. Defaults to ",".

    Returns:
        The header (column names) and the data rows.

    Raises:
        FileNotFoundError: no file at ``path``.
        InputError: the file is empty, not decodable with ``encoding``, or a row has more or fewer fields than the
            header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no label table", str(path))
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        with open(path, newline="", encoding=codec) as handle:
            records = list(csv.reader(handle, delimiter=delimiter))
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line} is not valid {encoding} text (byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start}); if the file is Latin-1 / Windows-1252, pass encoding='latin-1'"
        ) from err
    if not records:
        raise InputError(f"{path} is empty: expected a header row")
    header = [name.strip() for name in records[0]]
    trailing = len(header) > 1 and header[-1] == ""
    if trailing:
        header = header[:-1]
    rows = []
    for index, record in enumerate(records[1:]):
        number = index + 2
        if not any(cell.strip() for cell in record):
            continue
        if trailing and len(record) == len(header) + 1 and record[-1].strip() == "":
            record = record[:-1]
        if len(record) != len(header):  # too few: a truncated download or a cut row, whose cells would be missing
            raise InputError(f"{path}: row {number} has {len(record)} fields but the header has {len(header)} columns")
        values = dict(zip(header, (cell.strip() for cell in record)))
        rows.append(TableRow(number, values))
    logger.info("read %s: %d rows, sha256 %s", path, len(rows), sha256_file(path))
    return header, rows


def require_columns(path: str | os.PathLike, header: Sequence[str], needed: Sequence[str]) -> None:
    """Raise :class:`InputError` naming the file and the missing columns unless all of ``needed`` are in ``header``."""
    missing = [name for name in needed if name not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; the header has {list(header)}")


def check_unique_ids(path: str | os.PathLike, column: str, rows: Sequence[TableRow]) -> None:
    """Raise :class:`InputError` naming both rows when an id in ``column`` appears twice."""
    seen: dict[str, int] = {}
    for row in rows:
        key = row.values.get(column, "")
        if key in seen:
            raise InputError(
                f"{path}: row {row.number}, column {column!r}: duplicate id {key!r} (first seen in row {seen[key]})"
            )
        seen[key] = row.number


def parse_binary(
    text: str, path: str | os.PathLike, row: int, column: str, allow_blank: bool = False
) -> float:
    """Parse a 0/1 label cell (``0``, ``1``, ``0.0``, ``1.0``).

    Args:
        text: the cell.
        path: file, for the error message.
        row: spreadsheet row number, for the error message.
        column: column name, for the error message.
        allow_blank: return NaN for an empty cell instead of raising. Defaults to False.

    Raises:
        InputError: the cell is not 0 or 1.
    """
    if text == "" and allow_blank:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        raise InputError(f"{path}: row {row}, column {column!r}: expected 0 or 1, got {text!r}")
    return value


def row_list(numbers: Sequence[int]) -> str:
    """``"3, 7, 12"``: the first few row numbers of a list, for messages (``", ..."`` when there are more)."""
    return ", ".join(map(str, numbers[:_SHOWN_IDS])) + (", ..." if len(numbers) > _SHOWN_IDS else "")


def missing_ids_message(absent: Sequence[str], listed_in: str, absent_from: str) -> str:
    """The message for a join that failed: how many ids are absent, and the first few of them."""
    shown = ", ".join(repr(image_id) for image_id in absent[:_SHOWN_IDS])
    more = f" and {len(absent) - _SHOWN_IDS} more" if len(absent) > _SHOWN_IDS else ""
    return f"{len(absent)} image id(s) listed in {listed_in} are absent from {absent_from}: {shown}{more}"
