"""The CT-RATE-format tables of the synthetic chest CT benchmark: labels, metadata, reports and the side files."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasets.synthetic.ct3d_draw import Grid
from datasets.synthetic.ct3d_reports import Report
from datasets.synthetic.ct3d_sampling import Finding
from datasets.synthetic.ct3d_spec import FINDINGS

__all__ = ["METADATA_COLUMNS", "Volume", "csv_bytes", "label_rows", "metadata_rows", "report_rows", "noise_rows",
           "drawn_rows"]

METADATA_COLUMNS = (
    "VolumeName", "Manufacturer", "SeriesDescription", "ManufacturerModelName", "PatientSex", "PatientAge",
    "ReconstructionDiameter", "DistanceSourceToDetector", "DistanceSourceToPatient", "GantryDetectorTilt",
    "TableHeight", "RotationDirection", "ExposureTime", "XRayTubeCurrent", "Exposure", "FilterType", "GeneratorPower",
    "FocalSpots", "ConvolutionKernel", "PatientPosition", "RevolutionTime", "SingleCollimationWidth",
    "TotalCollimationWidth", "TableSpeed", "TableFeedPerRotation", "SpiralPitchFactor", "DataCollectionCenterPatient",
    "ReconstructionTargetCenterPatient", "ExposureModulationType", "CTDIvol", "ImagePositionPatient",
    "ImageOrientationPatient", "SliceLocation", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns",
    "XYSpacing", "RescaleIntercept", "RescaleSlope", "RescaleType", "NumberofSlices", "ZSpacing", "StudyDate",
)
"""CT-RATE's ``*_metadata.csv`` header (44 columns, in order); columns with no synthetic meaning are left empty."""


@dataclass(frozen=True)
class Volume:
    """One stored volume (a reconstruction of a scan) and what it shows.

    Attributes:
        name: CT-RATE volume name, e.g. ``train_12_a_1.nii.gz``.
        patient: patient key, e.g. ``train_12``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        sex: ``"M"`` or ``"F"``.
        age: years.
        kernel: ``"SMOOTH"`` or ``"SHARP"``.
        grid: the voxel grid.
        study_date: ``YYYYMMDD``.
        drawn: the findings drawn.
        labelled: the finding names in the label files (``drawn`` after label noise).
        report: the report of the scan.
    """

    name: str
    patient: str
    split: str
    sex: str
    age: int
    kernel: str
    grid: Grid
    study_date: str
    drawn: tuple[Finding, ...]
    labelled: frozenset[str]
    report: Report


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A UTF-8 CSV (header row, ``\\n`` line ends) as bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def label_rows(volumes: Sequence[Volume]) -> list[list[Any]]:
    """``VolumeName`` + 0/1 per finding in CT-RATE order (the labelled, i.e. noisy, findings)."""
    return [[v.name, *(int(name in v.labelled) for name in FINDINGS)] for v in volumes]


def _list(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{value:.6g}" for value in values) + "]"


def metadata_rows(volumes: Sequence[Volume]) -> list[list[Any]]:
    """One row per volume in :data:`METADATA_COLUMNS` order; rescale slope 1 / intercept 0 (volumes store HU)."""
    rows = []
    for v in volumes:
        g = v.grid
        values = {
            "VolumeName": v.name, "Manufacturer": "medvl", "SeriesDescription": "SYNTHETIC CHEST",
            "ManufacturerModelName": "synthetic-ct3d", "PatientSex": v.sex, "PatientAge": f"{v.age:03d}Y",
            "ReconstructionDiameter": f"{g.shape[0] * g.spacing[0]:.6g}", "GantryDetectorTilt": 0,
            "ConvolutionKernel": v.kernel, "PatientPosition": "HFS", "ImagePositionPatient": _list(g.origin),
            "ImageOrientationPatient": "[1, 0, 0, 0, 1, 0]", "SliceLocation": f"{g.origin[2]:.6g}",
            "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "Rows": g.shape[1],
            "Columns": g.shape[0], "XYSpacing": _list(g.spacing[:2]), "RescaleIntercept": 0, "RescaleSlope": 1,
            "RescaleType": "HU", "NumberofSlices": g.shape[2], "ZSpacing": f"{g.spacing[2]:.6g}",
            "StudyDate": v.study_date,
        }
        rows.append([values.get(column, "") for column in METADATA_COLUMNS])
    return rows


def report_rows(volumes: Sequence[Volume]) -> list[list[Any]]:
    """Rows in :data:`datasets.reports.CTRATE_REPORT_COLUMNS` order."""
    return [[v.name, v.report.clinical, v.report.technique, v.report.findings, v.report.impression] for v in volumes]


def noise_rows(volumes: Sequence[Volume]) -> list[list[Any]]:
    """Every label cell that differs from the drawing: ``VolumeName, finding, drawn, labelled``."""
    rows = []
    for v in volumes:
        drawn = {f.name for f in v.drawn}
        rows += [[v.name, name, int(name in drawn), int(name in v.labelled)] for name in FINDINGS
                 if (name in drawn) != (name in v.labelled)]
    return rows


def drawn_rows(volumes: Sequence[Volume]) -> list[list[Any]]:
    """Every drawn finding: ``VolumeName, split, finding, side, zone, size_mm, severity, kind``."""
    return [[v.name, v.split, f.name, f.side or "", f.zone or "", "" if f.size_mm is None else f"{f.size_mm:g}",
             f.severity, f.kind] for v in volumes for f in v.drawn]

