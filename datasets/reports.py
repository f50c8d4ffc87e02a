"""Image-report pairs: a versioned MIMIC-CXR-style manifest and CT-RATE's report tables.

**Manifest ``pairs-1``** (a CSV, one row per image; chosen for medvl, MIMIC-CXR style):

=================  ===============================================================================================
``format_version``  ``pairs-1`` on every row
``image``           image path relative to an image root (e.g. ``files/p10/p10000032/s50414267/<dicom_id>.jpg``)
``findings``        the report's FINDINGS section (may be empty when ``impression`` is used)
``impression``      the report's IMPRESSION section
``view``            view position as in the source (``PA``, ``AP``, ``LATERAL``, ...)
``split``           the split as published (MIMIC-CXR: ``train`` / ``validate`` / ``test``); never recomputed
``subject_id``      patient id
``study_id``        study id
=================  ===============================================================================================

**CT-RATE** (``dataset/radiology_text_reports/{train,validation}_reports.csv``): ``VolumeName``,
``ClinicalInformation_EN``, ``Technique_EN``, ``Findings_EN``, ``Impressions_EN``. The split is CT-RATE's own, read
from the ``VolumeName`` prefix (``train_`` / ``valid_``). Spacing and rescale values come from ``*_metadata.csv``,
joined by ``VolumeName`` (:func:`datasets.labels.ctrate.read_ctrate_metadata`).

Text: ``section`` picks ``"findings"``, ``"impression"`` or ``"findings+impression"`` (both, non-empty ones joined by
a newline). A row whose chosen text is empty is an :class:`InputError` naming the row.

Encoding: tables are read as UTF-8 (a byte-order mark is skipped). A file in another encoding (e.g. Latin-1 exported
from a spreadsheet) fails with an :class:`InputError` naming the line and the offending byte; pass
``encoding="latin-1"`` to read it deliberately. There is no silent fallback: guessing would corrupt accented report
text unnoticed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.labels.base import (
    TableRow,
    check_unique_ids,
    missing_ids_message,
    read_csv_table,
    require_columns,
    row_list,
)
from datasets.labels.ctrate import CTRateGeometry, volume_relpath

__all__ = [
    "PAIRS_FORMAT_VERSION",
    "PAIRS_COLUMNS",
    "CTRATE_REPORT_COLUMNS",
    "SECTIONS",
    "ON_EMPTY",
    "ReportSet",
    "read_pairs_manifest",
    "read_ctrate_reports",
]

PAIRS_FORMAT_VERSION = "pairs-1"
PAIRS_COLUMNS = ("format_version", "image", "findings", "impression", "view", "split", "subject_id", "study_id")
CTRATE_REPORT_COLUMNS = ("VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN")
SECTIONS = ("findings", "impression", "findings+impression")
ON_EMPTY = ("error", "skip", "keep")  # what the readers do with a row whose chosen section is empty

logger = logging.getLogger(__name__)


@dataclass
class ReportSet:
    """Image-report pairs read from one table.

    Attributes:
        image_ids: image or volume keys, one per row.
        image_relpaths: image paths relative to an image root.
        texts: the chosen report text of each row.
        meta: one dict per row (``row``, ``split``, the other sections and ids).
        source: the table read.
        sha256: SHA-256 of the table's bytes.
        format_version: ``"pairs-1"`` or ``"ct-rate-reports-1"``.
    """

    image_ids: list[str]
    image_relpaths: list[str]
    texts: list[str]
    meta: list[dict[str, Any]]
    source: Path
    sha256: str
    format_version: str

    def __len__(self) -> int:
        return len(self.image_ids)

    def split(self, name: str) -> ReportSet:
        """The rows whose stored ``split`` is ``name``.

        Raises:
            InputError: no row has that split (the message lists the splits present).
        """
        rows = [i for i, meta in enumerate(self.meta) if meta["split"] == name]
        if not rows:
            present = sorted({meta["split"] for meta in self.meta})
            raise InputError(f"{self.source}: no row has split {name!r}; the splits present are {present}")
        return self.subset(rows)

    def subset(self, indices: Sequence[int]) -> ReportSet:
        """The rows at ``indices``, in that order."""
        return ReportSet(
            [self.image_ids[i] for i in indices], [self.image_relpaths[i] for i in indices],
            [self.texts[i] for i in indices], [self.meta[i] for i in indices], self.source, self.sha256,
            self.format_version,
        )

    def samples(self, image_root: str | os.PathLike) -> Iterator[dict[str, Any]]:
        """Yield ``{"image": Path, "mask": None, "text": str, "label": None, "meta": dict}`` per row."""
        root = Path(image_root)
        for image_id, relpath, text, meta in zip(self.image_ids, self.image_relpaths, self.texts, self.meta):
            yield {"image": root / relpath, "mask": None, "text": text, "label": None,
                   "meta": {"image_id": image_id, **meta}}


def _text(path: Path, row: TableRow, section: str, findings_col: str, impression_col: str, on_empty: str) -> str:
    findings, impression = row.values[findings_col], row.values[impression_col]
    chosen = {
        "findings": findings,
        "impression": impression,
        "findings+impression": "\n".join(part for part in (findings, impression) if part),
    }[section]
    if not chosen and on_empty == "error":
        both = f"{findings_col}+{impression_col}"
        columns = {"findings": findings_col, "impression": impression_col}.get(section, both)
        raise InputError(
            f"{path}: row {row.number}, column {columns!r}: empty report text (section {section!r}); to accept such "
            "rows, set skip_empty_reports: true (training data modules) or pass --allow-empty (brgsa summarize)"
        )
    return chosen


def _check_options(section: str, on_empty: str) -> None:
    if section not in SECTIONS:
        raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")


def _apply_on_empty(reports: ReportSet, section: str, on_empty: str) -> ReportSet:
    """Leave out (``skip``) or keep (``keep``) the rows whose chosen section is empty, logging how many there are."""
    empty = [i for i, text in enumerate(reports.texts) if not text]
    if not empty:
        return reports
    shown = row_list([reports.meta[i]["row"] for i in empty])
    if on_empty == "keep":
        logger.warning("%s: %d of %d rows have no %s text (rows %s)", reports.source, len(empty), len(reports),
                       section, shown)
        return reports
    if len(empty) == len(reports):
        raise InputError(f"{reports.source}: every row's {section} text is empty; choose another section")
    logger.warning("%s: %d of %d rows have no %s text and are left out (rows %s)", reports.source, len(empty),
                   len(reports), section, shown)
    return reports.subset([i for i, text in enumerate(reports.texts) if text])


def read_pairs_manifest(
    path: str | os.PathLike, section: str = "findings+impression", encoding: str = "utf-8", on_empty: str = "error"
) -> ReportSet:
    """Read a ``pairs-1`` manifest.

    Args:
        path: the manifest CSV.
        section: report text to use, one of :data:`SECTIONS`. Defaults to "findings+impression".
        encoding: text encoding. Defaults to "utf-8".
        on_empty: a row whose ``section`` is empty (e.g. a MIMIC-CXR report without IMPRESSION) is an ``"error"``,
            left out (``"skip"``, counted in a warning) or kept with text ``""`` (``"keep"``). Defaults to "error".

    Raises:
        ValueError: an unknown ``section`` or ``on_empty``.
        InputError: a missing column, a row whose ``format_version`` is not ``pairs-1``, an empty ``image`` or
            ``split``, empty report text (``on_empty="error"``; with ``"skip"``, when every row is empty), a
            duplicate image, or a file not in ``encoding``.
    """
    _check_options(section, on_empty)
    path = Path(path)
    header, rows = read_csv_table(path, encoding=encoding)
    require_columns(path, header, PAIRS_COLUMNS)
    check_unique_ids(path, "image", rows)
    texts, meta = [], []
    for row in rows:
        if row.values["format_version"] != PAIRS_FORMAT_VERSION:
            raise InputError(
                f"{path}: row {row.number}, column 'format_version': expected {PAIRS_FORMAT_VERSION!r}, "
                f"got {row.values['format_version']!r}"
            )
        for column in ("image", "split"):
            if not row.values[column]:
                raise InputError(f"{path}: row {row.number}, column {column!r}: empty")
        texts.append(_text(path, row, section, "findings", "impression", on_empty))
        fields = {key: row.values[key] for key in PAIRS_COLUMNS[2:]}
        meta.append({"row": row.number, **fields})
    images = [row.values["image"] for row in rows]
    reports = ReportSet(images, list(images), texts, meta, path, sha256_file(path), PAIRS_FORMAT_VERSION)
    return _apply_on_empty(reports, section, on_empty)


def read_ctrate_reports(
    path: str | os.PathLike,
    metadata: Mapping[str, CTRateGeometry] | None = None,
    section: str = "findings+impression",
    layout: str = "nested",
    encoding: str = "utf-8",
    on_empty: str = "error",
) -> ReportSet:
    """Read a CT-RATE report table, optionally joined with its ``*_metadata.csv`` geometry.

    Args:
        path: ``train_reports.csv`` or ``validation_reports.csv``.
        metadata: ``{VolumeName: CTRateGeometry}`` from :func:`~datasets.labels.ctrate.read_ctrate_metadata`; each
            row's ``meta["geometry"]`` is set from it. Defaults to None (no join).
        section: report text to use, one of :data:`SECTIONS`. Defaults to "findings+impression".
        layout: volume folder layout (see :func:`~datasets.labels.ctrate.volume_relpath`). Defaults to "nested".
        encoding: text encoding. Defaults to "utf-8".
        on_empty: as in :func:`read_pairs_manifest`. Defaults to "error".

    Raises:
        ValueError: an unknown ``section``, ``layout`` or ``on_empty``.
        InputError: a missing column, a ``VolumeName`` not in CT-RATE's naming, empty report text (as in
            :func:`read_pairs_manifest`), a duplicate volume, volumes absent from ``metadata`` (listed), or a file not
            in ``encoding``.
    """
    _check_options(section, on_empty)
    path = Path(path)
    header, rows = read_csv_table(path, encoding=encoding)
    require_columns(path, header, CTRATE_REPORT_COLUMNS)
    check_unique_ids(path, "VolumeName", rows)
    names = [row.values["VolumeName"] for row in rows]
    if metadata is not None:
        absent = [name for name in names if name not in metadata]
        if absent:
            raise InputError(missing_ids_message(absent, f"the report table {path}", "the metadata table"))
    relpaths, texts, meta = [], [], []
    for row, name in zip(rows, names):
        try:
            relpaths.append(volume_relpath(name, layout))
        except ValueError as err:
            raise InputError(f"{path}: row {row.number}, column 'VolumeName': {err}") from err
        texts.append(_text(path, row, section, "Findings_EN", "Impressions_EN", on_empty))
        fields = {
            "row": row.number, "split": name.split("_", 1)[0],
            "clinical_information": row.values["ClinicalInformation_EN"], "technique": row.values["Technique_EN"],
            "findings": row.values["Findings_EN"],
            "impression": row.values["Impressions_EN"],
        }
        if metadata is not None:
            fields["geometry"] = metadata[name]
        meta.append(fields)
    reports = ReportSet(names, relpaths, texts, meta, path, sha256_file(path), "ct-rate-reports-1")
    return _apply_on_empty(reports, section, on_empty)
