"""Check a ``refseg-1`` manifest and every file it names, reporting all problems at once.

Two depths:

* ``quick`` (default) reads headers only: files exist and are non-empty; NIfTI headers (nibabel, lazily), DICOM
  headers (pydicom ``stop_before_pixels``), PNG headers and NPY headers parse; uncompressed pixel data is as long as the
  header says; shapes and slice indices are in range; a NIfTI mask has its image's shape and (for NIfTI images) its
  affine; 2D masks have their image's shape; plus every column and value check of the manifest reader (text non-empty,
  splits, case in two splits, ...). DICOM image affines are not derived from headers here, so a DICOM image's mask is
  compared by shape only in quick mode.
* ``full`` also decodes every image (with :func:`datasets.ct.read_ct` for volumes, like training does) and mask:
  truncated or corrupt pixel data, NaN/inf values, a DICOM image's affine against its mask, and a mask that is empty
  at the row's slice (or lacks the row's ``mask_value``).

Rows are grouped by image so each volume is opened once. Groups are checked on a thread pool: header parsing and
decoding are dominated by file I/O, zlib inflation and NumPy reductions, which release the GIL, while threads need no
pickling of rows or results and avoid forking a process that has already loaded torch.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.errors import InputError
from datasets.io import atomic_write, atomic_write_text, sha256_file
from datasets.refseg import FIRST_DATA_ROW, ManifestProblem, ParsedManifest, RefSegRow, parse_refseg_manifest, read_2d

__all__ = ["CheckReport", "check_manifest", "write_filtered_manifest", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """Outcome of :func:`check_manifest`.

    Attributes:
        manifest: the checked file.
        sha256: its SHA-256.
        mode: ``"quick"`` or ``"full"``.
        rows: number of data rows.
        problems: every problem found, sorted by row (file-level problems first).
        parsed: the parsed manifest (used to write a filtered copy).
    """

    manifest: str
    sha256: str
    mode: str
    rows: int
    problems: list[ManifestProblem]
    parsed: ParsedManifest

    @property
    def bad_rows(self) -> set[int]:
        return {problem.row for problem in self.problems if problem.row is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest, "sha256": self.sha256, "mode": self.mode, "rows": self.rows,
            "rows_with_problems": len(self.bad_rows), "problems": [problem.to_dict() for problem in self.problems],
        }


@dataclass
class _Info:
    """What was learnt about one file: ``shape`` (X, Y, Z) for volumes or (H, W) for 2D, ``affine`` if known and
    ``data`` when decoded."""

    shape: tuple[int, ...]
    affine: np.ndarray | None = None
    data: np.ndarray | None = None


def _reason(err: Exception) -> str:
    text = " ".join(str(err).split())[:300]
    return text if isinstance(err, InputError) and text else f"{type(err).__name__}: {text}"


def _nifti(path: Path, decode: bool) -> _Info:
    import nibabel as nib

    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)")
    image = nib.load(str(path))
    shape = tuple(int(s) for s in image.shape)
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise InputError(f"holds a {len(shape)}D image of shape {shape}, expected a 3D volume")
    shape = (shape + (1, 1))[:3]
    if path.name.lower().endswith(".nii"):
        needed = int(image.header["vox_offset"]) + int(np.prod(image.shape)) * image.get_data_dtype().itemsize
        if path.stat().st_size < needed:
            raise InputError(f"truncated: {path.stat().st_size} bytes, the header needs {needed}")
    data = np.asarray(image.dataobj).reshape(shape) if decode else None
    return _Info(shape, np.asarray(image.affine, dtype=float), data)


def _dicom_header(path: Path) -> _Info:
    from pydicom import dcmread
    from pydicom.uid import UID

    from datasets.dicom import check_single_frame, read_dataset

    header = read_dataset(path, stop_before_pixels=True)
    check_single_frame(header, path)
    if "Rows" not in header or "Columns" not in header:
        raise InputError("DICOM header has no Rows/Columns; not an image")
    syntax = UID(header.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if not syntax.is_compressed:
        with open(path, "rb") as handle:  # the header parse stops where the pixel data element starts
            dcmread(handle, stop_before_pixels=True, force=True)
            pixels_start = handle.tell()
        needed = int(header.Rows) * int(header.Columns) * int(header.get("BitsAllocated", 16)) // 8
        needed = pixels_start + needed * int(header.get("SamplesPerPixel", 1))
        if path.stat().st_size < needed:
            raise InputError(f"pixel data truncated: file has {path.stat().st_size} bytes, at least {needed} expected")
    return _Info((int(header.Columns), int(header.Rows), 1))


def _volume(path: Path, kind: str, decode: bool) -> _Info:
    if kind == "nifti" and not decode:
        return _nifti(path, decode=False)
    if decode:
        from datasets.ct import read_ct

        volume = read_ct(path)
        return _Info(tuple(volume.array.shape), np.asarray(volume.affine), volume.array)
    if kind == "dicom":
        return _dicom_header(path)
    files = sorted(child for child in path.iterdir() if child.is_file())
    headers = []
    for child in files:
        try:
            headers.append(_dicom_header(child))
        except InputError as err:
            if "pixel data truncated" in str(err):
                raise InputError(f"{child}: {err}") from err
    if not headers:
        raise InputError("folder holds no readable DICOM image")
    return _Info(headers[0].shape[:2] + (len(headers),))


def _plane(path: Path, kind: str, decode: bool) -> _Info:
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)")
    if kind == "npy":
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        shape = tuple(int(s) for s in header.shape)
    else:
        from PIL import Image

        with Image.open(path) as picture:
            shape = (picture.height, picture.width)
            if decode:
                picture.load()
    if len(shape) != 2:
        raise InputError(f"expected a 2D array (H, W), got shape {shape}")
    return _Info(shape, data=read_2d(path, scale=False)[0] if decode else None)


def _open(path: Path, kind: str, decode: bool) -> _Info:
    return _volume(path, kind, decode) if kind in ("nifti", "dicom", "dicom-series") else _plane(path, kind, decode)


def _check_group(manifest: Path, rows: list[RefSegRow], full: bool) -> list[ManifestProblem]:
    """Check all rows sharing one image; the image is opened once, each mask once.

    Problems are located like the manifest reader's (``manifest row N, column C``), the file at fault in the reason.
    """
    problems: list[ManifestProblem] = []

    def add(row: RefSegRow, column: str, path: Path, reason: str) -> None:
        problems.append(ManifestProblem(str(manifest), f"{path}: {reason}", row.number, row.row_id, column))

    first = rows[0]
    try:
        image = _open(first.image, first.image_kind, full)
    except Exception as err:  # every reader failure of a user file is a problem to report, not a crash
        for row in rows:
            add(row, "image", row.image, _reason(err))
        return problems
    masks: dict[Path, _Info | Exception] = {}
    for row in rows:
        if row.mask not in masks:
            try:
                masks[row.mask] = (
                    _nifti(row.mask, full) if row.is_volume else _plane(row.mask, _plane_kind(row.mask), full)
                )
            except Exception as err:  # reported on every row using this mask
                masks[row.mask] = err
        mask = masks[row.mask]
        if row.is_volume and not 0 <= row.slice_index < image.shape[2]:
            add(row, "slice_index", row.image, f"slice_index {row.slice_index} is out of range: the volume has "
                f"{image.shape[2]} slices along array axis 2 (valid 0..{image.shape[2] - 1})")
            continue
        if image.data is not None and not np.isfinite(image.data).all():
            bad = int(np.size(image.data) - np.count_nonzero(np.isfinite(image.data)))
            add(row, "image", row.image, f"image has {bad} NaN/inf values")
        if isinstance(mask, Exception):
            add(row, "mask", row.mask, _reason(mask))
            continue
        if mask.shape != image.shape:
            add(row, "mask", row.mask, f"mask shape {mask.shape} does not match the image shape {image.shape}")
            continue
        if mask.affine is not None and image.affine is not None and not np.allclose(
            mask.affine, image.affine, atol=1e-2, rtol=1e-4
        ):
            add(row, "mask", row.mask, "mask affine does not match the image affine (expected the image's geometry)")
            continue
        if mask.data is not None:
            plane = mask.data[:, :, row.slice_index] if row.is_volume else mask.data
            if not np.isfinite(plane).all():
                add(row, "mask", row.mask, "mask has NaN/inf values")
            elif not (plane != 0 if row.mask_value is None else plane == row.mask_value).any():
                where = f" at slice {row.slice_index}" if row.is_volume else ""
                label = "foreground" if row.mask_value is None else f"voxel with value {row.mask_value}"
                add(row, "mask", row.mask, f"mask has no {label}{where}")
    return problems


def _plane_kind(path: Path) -> str:
    return "npy" if path.name.lower().endswith(".npy") else "png"


def check_manifest(path: str | os.PathLike, *, full: bool = False, workers: int = 1) -> CheckReport:
    """Check a manifest and its files, collecting every problem (see the module docstring for what is checked).

    Args:
        path: the manifest CSV.
        full: decode every image and mask, not just headers. Defaults to False.
        workers: threads checking image groups in parallel. Defaults to 1 (in the calling thread).

    Returns:
        The :class:`CheckReport`.

    Raises:
        FileNotFoundError: no manifest file.
        InputError: ``workers`` < 1, or the file is not UTF-8 CSV with a header row.
    """
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    parsed = parse_refseg_manifest(path)
    groups: dict[Path, list[RefSegRow]] = {}
    for row in parsed.rows:
        groups.setdefault(row.image, []).append(row)
    problems = list(parsed.problems)
    if workers == 1:
        found: Iterable[list[ManifestProblem]] = [_check_group(parsed.path, rows, full) for rows in groups.values()]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            found = list(pool.map(lambda rows: _check_group(parsed.path, rows, full), groups.values()))
    for group_problems in found:
        problems.extend(group_problems)
    problems.sort(key=lambda p: (-1 if p.row is None else p.row, p.column))
    rows = sum(1 for raw in parsed.raw_rows if raw)
    return CheckReport(str(parsed.path), sha256_file(parsed.path), "full" if full else "quick", rows, problems, parsed)


def write_filtered_manifest(report: CheckReport, out_csv: str | os.PathLike) -> int:
    """Write (atomically) a copy of the manifest without the rows that have problems.

    Relative ``image`` / ``mask`` paths are rewritten relative to ``out_csv``'s folder, so the copy can live anywhere.

    Returns:
        Number of rows kept.

    Raises:
        InputError: the manifest has file-level problems (e.g. a missing column), which filtering rows cannot fix,
            or ``out_csv`` is the manifest itself.
    """
    out_csv = Path(out_csv)
    source = report.parsed.path
    if out_csv.resolve() == source.resolve():
        raise InputError(f"--write-filtered {out_csv} would overwrite the checked manifest; choose another path")
    header_problems = [str(problem) for problem in report.problems if problem.row is None]
    if header_problems:
        raise InputError(f"cannot write a filtered manifest: {'; '.join(header_problems)}")
    bad, kept = report.bad_rows, 0
    out_dir = out_csv.parent.resolve()
    with atomic_write(out_csv, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(report.parsed.header)
        for number, raw in enumerate(report.parsed.raw_rows, start=FIRST_DATA_ROW):
            if not raw or number in bad:
                continue
            values = dict(raw)
            for column in ("image", "mask"):
                value = Path(values[column].strip())
                if not value.is_absolute():
                    values[column] = Path(os.path.relpath(source.parent.resolve() / value, out_dir)).as_posix()
            writer.writerow([values[name] for name in report.parsed.header])
            kept += 1
    return kept


def write_report(report: CheckReport, path: str | os.PathLike) -> None:
    """Write the report as JSON (atomically)."""
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
