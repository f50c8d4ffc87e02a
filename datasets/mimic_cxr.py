"""MIMIC-CXR's released layout to a ``pairs-1`` manifest (:mod:`datasets.reports`): one row per image.

Inputs, as PhysioNet ships them (``.csv`` or ``.csv.gz``):

* ``mimic-cxr-2.0.0-split.csv``: ``dicom_id, study_id, subject_id, split`` (``train`` / ``validate`` / ``test``);
* ``mimic-cxr-2.0.0-metadata.csv``: ``dicom_id`` and ``ViewPosition`` (``PA``, ``AP``, ``LATERAL``, ...);
* the free-text reports (``mimic-cxr-reports``): ``files/p<first 2 digits>/p<subject_id>/s<study_id>.txt``.

Images are named as in MIMIC-CXR-JPG: ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` relative to its root. Each
report is split into sections at its upper-case headers (``FINDINGS:``, ``IMPRESSION:``, ...); the ``findings`` and
``impression`` columns hold those sections' text with whitespace collapsed, empty when the report has no such section
(``skip_empty_reports`` in the training configs leaves those rows out).

:func:`mimic_cxr_validation_labels` writes a zero-shot validation table from ``mimic-cxr-2.0.0-chexpert.csv`` (the
CheXpert labeler's 14 observations per study, values 1.0 / 0.0 / -1.0 / blank) for the images of one split, in
CheXpert's ``train.csv`` layout (adapter ``chexpert.csv``): validation on MIMIC's own ``validate`` split keeps every
zero-shot test set out of checkpoint selection.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from datasets.errors import InputError
from datasets.io import atomic_write
from datasets.reports import PAIRS_COLUMNS, PAIRS_FORMAT_VERSION

__all__ = ["report_sections", "mimic_cxr_to_pairs", "mimic_cxr_validation_labels"]

logger = logging.getLogger(__name__)

_HEADER = re.compile(r"^\s*([A-Z][A-Z /&()-]*[A-Z)]):", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """The sections of a MIMIC-CXR report, keyed by lower-cased header (``"findings"``, ``"impression"``, ...).

    Text before the first header (``FINAL REPORT`` and the like) is left out; a repeated header keeps its last text.
    """
    headers = list(_HEADER.finditer(text))
    sections = {}
    for header, following in zip(headers, [*headers[1:], None]):
        body = text[header.end(): following.start() if following else len(text)]
        sections[header.group(1).strip().lower()] = " ".join(body.split())
    return sections


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in required if name not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; expected {list(required)}")
            yield from enumerate(reader, start=2)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise InputError(f"{path} is not a readable CSV (or .csv.gz) file: {err}") from err


def _view_positions(metadata_csv: str | os.PathLike) -> dict[str, str]:
    """``dicom_id -> ViewPosition`` of the metadata table."""
    return {row["dicom_id"]: row["ViewPosition"] for _, row in _rows(Path(metadata_csv), ("dicom_id", "ViewPosition"))}


def _image_path(subject: str, study: str, dicom: str) -> str:
    """An image's path relative to the MIMIC-CXR-JPG root."""
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def mimic_cxr_to_pairs(
    split_csv: str | os.PathLike, metadata_csv: str | os.PathLike, reports_root: str | os.PathLike,
    out_csv: str | os.PathLike,
) -> dict[str, int]:
    """Write a ``pairs-1`` manifest of every image of the split table (atomically).

    Args:
        split_csv: ``mimic-cxr-2.0.0-split.csv[.gz]``.
        metadata_csv: ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (``ViewPosition`` becomes the ``view`` column).
        reports_root: the folder holding the reports' ``files/`` tree.
        out_csv: the manifest to write.

    Returns:
        Counts: ``images``, ``studies``, ``without_findings``, ``without_impression``.

    Raises:
        FileNotFoundError: a table is missing.
        InputError: a missing column, an image absent from the metadata table, or a study whose report file is
            missing (named with the split table's row).
    """
    split_csv, reports_root = Path(split_csv), Path(reports_root)
    if not (reports_root / "files").is_dir():
        raise InputError(f"--reports-root {reports_root} has no files/ folder; expected the mimic-cxr-reports layout "
                         "files/p10/p10000032/s50414267.txt")
    views = _view_positions(metadata_csv)
    sections: dict[str, dict[str, str]] = {}
    rows = []
    for number, row in _rows(split_csv, ("dicom_id", "study_id", "subject_id", "split")):
        subject, study, dicom = row["subject_id"].strip(), row["study_id"].strip(), row["dicom_id"].strip()
        if dicom not in views:
            raise InputError(f"{split_csv} row {number}: dicom_id {dicom!r} is not in {metadata_csv}")
        if study not in sections:
            report = reports_root / f"files/p{subject[:2]}/p{subject}/s{study}.txt"
            if not report.is_file():
                raise InputError(f"{split_csv} row {number}: no report for study {study} at {report}")
            sections[study] = report_sections(report.read_text(encoding="utf-8", errors="replace"))
        found = sections[study]
        rows.append({
            "format_version": PAIRS_FORMAT_VERSION, "image": _image_path(subject, study, dicom),
            "findings": found.get("findings", ""), "impression": found.get("impression", ""),
            "view": views[dicom], "split": row["split"].strip(), "subject_id": subject, "study_id": study,
        })
    if not rows:
        raise InputError(f"{split_csv} has no data rows")
    with atomic_write(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PAIRS_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    counts = {
        "images": len(rows), "studies": len(sections),
        "without_findings": sum(not found.get("findings") for found in sections.values()),
        "without_impression": sum(not found.get("impression") for found in sections.values()),
    }
    logger.info("%s: %d images of %d studies; studies without FINDINGS %d, without IMPRESSION %d", out_csv,
                counts["images"], counts["studies"], counts["without_findings"], counts["without_impression"])
    return counts


def mimic_cxr_validation_labels(
    split_csv: str | os.PathLike, metadata_csv: str | os.PathLike, chexpert_csv: str | os.PathLike,
    out_csv: str | os.PathLike, split: str = "validate", views: tuple[str, ...] = ("PA", "AP"),
) -> int:
    """Write the CheXpert-labeler labels of one split's images (of ``views``) as a CheXpert ``train.csv``-style table.

    ``Path`` is the MIMIC-CXR-JPG image path; ``Frontal/Lateral`` and ``AP/PA`` come from ``ViewPosition``; ``Sex`` and
    ``Age`` are left blank (MIMIC keeps them elsewhere). Returns the number of rows written.

    Raises:
        FileNotFoundError: a table is missing.
        InputError: a missing column, a study of the split without labels (named with its row), or no image left.
    """
    from datasets.labels.chexpert import OBSERVATIONS

    chexpert_csv = Path(chexpert_csv)
    labels = {(row["subject_id"].strip(), row["study_id"].strip()): row
              for _, row in _rows(chexpert_csv, ("subject_id", "study_id", *OBSERVATIONS))}
    views_by_image = _view_positions(metadata_csv)
    rows = []
    for number, row in _rows(Path(split_csv), ("dicom_id", "study_id", "subject_id", "split")):
        subject, study, dicom = row["subject_id"].strip(), row["study_id"].strip(), row["dicom_id"].strip()
        view = views_by_image.get(dicom, "")
        if row["split"].strip() != split or view not in views:
            continue
        if (subject, study) not in labels:
            raise InputError(f"{split_csv} row {number}: study {study} (subject {subject}) has no labels in "
                             f"{chexpert_csv}")
        rows.append({
            "Path": _image_path(subject, study, dicom), "Sex": "", "Age": "",
            "Frontal/Lateral": "Frontal", "AP/PA": view,
            **{name: labels[(subject, study)][name].strip() for name in OBSERVATIONS},
        })
    if not rows:
        raise InputError(f"{split_csv}: no image of split {split!r} has a view in {list(views)}")
    with atomic_write(out_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS])
        writer.writeheader()
        writer.writerows(rows)
    logger.info("%s: CheXpert-labeler labels of %d %s images (views %s)", out_csv, len(rows), split, list(views))
    return len(rows)
