"""The ``refseg-1`` manifest: one referring expression per row, pointing at an image slice and its lesion mask.

Format (UTF-8 CSV, a byte-order mark is tolerated), columns in this order, extra columns allowed after them and kept
in ``meta["extra"]``:

=================  ========================================================================================
``format_version`` ``refseg-1`` on every row.
``row_id``         unique, non-empty.
``case_id``        patient or study; all rows of a case share one split.
``split``          ``train``, ``val`` or ``test``; stored, never recomputed from a seed.
``image``          path relative to the manifest's folder, or absolute: NIfTI volume (``.nii``/``.nii.gz``), DICOM
                   file, DICOM series folder, or a 2D ``.png``/``.npy``.
``slice_index``    integer index along array axis 2 of the volume as stored on disk; empty for 2D images.
``mask``           NIfTI volume with the image's geometry (same shape and affine), or a 2D ``.png``/``.npy`` of the
                   2D image's shape.
``mask_value``     integer label selecting this lesion in the mask; empty = any non-zero voxel.
``lesion_id``      identifier of the lesion (may be empty).
``text``           the referring expression, non-empty.
``template_id``    identifier of the template that generated the text (may be empty for free text).
=================  ========================================================================================

Several expressions for one mask are several rows. 2D NPY images hold Hounsfield units and are windowed like CT;
PNG images are display images whose 8/16-bit range is scaled to ``[0, 1]``. Both are taken as already in display
orientation (rows first, image left = patient right).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.errors import InputError
from datasets.io import atomic_write, sha256_file
from datasets.slices import SlicePreprocessing, prepare_2d_image, prepare_mask, preprocess_volume_slice

__all__ = [
    "REFSEG_FORMAT",
    "REFSEG_COLUMNS",
    "SPLITS",
    "ManifestProblem",
    "ParsedManifest",
    "RefSegRow",
    "RefSegManifest",
    "image_kind",
    "parse_refseg_manifest",
    "read_refseg_manifest",
    "read_2d",
    "load_sample",
    "write_refseg_manifest",
]

logger = logging.getLogger(__name__)

REFSEG_FORMAT = "refseg-1"
REFSEG_COLUMNS = (
    "format_version", "row_id", "case_id", "split", "image", "slice_index", "mask", "mask_value", "lesion_id", "text",
    "template_id",
)
SPLITS = ("train", "val", "test")
FIRST_DATA_ROW = 2  # row numbers are spreadsheet rows: the header is row 1
VOLUME_KINDS = ("nifti", "dicom", "dicom-series")
PLANE_KINDS = ("png", "npy")
_MAX_LISTED = 20


@dataclass(frozen=True)
class ManifestProblem:
    """One problem found in a manifest.

    ``row`` is the spreadsheet row (the header is row 1, the first data row is row 2, as in every table this package
    reads); None for the header or the whole file.
    """

    file: str
    reason: str
    row: int | None = None
    row_id: str = ""
    column: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}" + (f" (row_id {self.row_id!r})" if self.row_id else "")
        if self.column:
            where += f", column {self.column!r}"
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "row_id": self.row_id, "column": self.column, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class RefSegRow:
    """One validated manifest row (``number``: its spreadsheet row); paths are resolved against the manifest folder."""

    number: int
    row_id: str
    case_id: str
    split: str
    image: Path
    image_kind: str
    slice_index: int | None
    mask: Path
    mask_value: int | None
    lesion_id: str
    text: str
    template_id: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        return self.image_kind in VOLUME_KINDS

    def fields(self) -> dict[str, Any]:
        """The row's own values (JSON-compatible), as used in cache keys and ``meta``."""
        return {
            "row_id": self.row_id, "case_id": self.case_id, "split": self.split, "image": str(self.image),
            "image_kind": self.image_kind, "slice_index": self.slice_index, "mask": str(self.mask),
            "mask_value": self.mask_value, "lesion_id": self.lesion_id, "text": self.text,
            "template_id": self.template_id, "extra": dict(self.extra),
        }


@dataclass
class ParsedManifest:
    """Result of :func:`parse_refseg_manifest`: every row as read, the valid ones, and every problem found."""

    path: Path
    header: list[str]
    raw_rows: list[dict[str, str]]
    rows: list[RefSegRow]
    problems: list[ManifestProblem]


class RefSegManifest:
    """A validated ``refseg-1`` manifest (see the module docstring for the format).

    Args:
        path: the CSV file.
        rows: its rows, in file order.
        sha256: SHA-256 of the file's bytes.
    """

    def __init__(self, path: Path, rows: list[RefSegRow], sha256: str) -> None:
        self.path = path
        self._rows = rows
        self.sha256 = sha256

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[RefSegRow]:
        return iter(self._rows)

    @property
    def splits(self) -> dict[str, int]:
        """Row count per split present."""
        counts: dict[str, int] = {}
        for row in self._rows:
            counts[row.split] = counts.get(row.split, 0) + 1
        return counts

    def rows(self, split: str | None = None) -> list[RefSegRow]:
        """Rows of one split (all rows if None).

        Raises:
            InputError: ``split`` is not one of ``train``, ``val``, ``test``.
        """
        if split is None:
            return list(self._rows)
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return [row for row in self._rows if row.split == split]


def image_kind(path: Path) -> str | None:
    """``nifti``, ``dicom``, ``dicom-series``, ``png`` or ``npy`` from the path or DICOM preamble; None if unknown."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom-series"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".dcm", ".dicom")):
        return "dicom"
    try:
        with open(path, "rb") as handle:
            return "dicom" if handle.read(132)[128:] == b"DICM" else None
    except OSError:
        return None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _parse_int(value: str) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        return None


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise FileNotFoundError(2, "no manifest file", str(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            table = list(csv.reader(handle))
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte {err.start}); save the manifest as UTF-8 CSV") from err
    except csv.Error as err:
        raise InputError(f"{path} is not a readable CSV file: {err}") from err
    if not table:
        raise InputError(f"{path} is empty; expected a header row with columns {', '.join(REFSEG_COLUMNS)}")
    return [name.strip() for name in table[0]], table[1:]


def _check_header(path: Path, header: list[str]) -> list[ManifestProblem]:
    problems = []
    missing = [name for name in REFSEG_COLUMNS if name not in header]
    for name in missing:
        problems.append(ManifestProblem(str(path), f"missing column {name!r}", column=name))
    duplicated = sorted({name for name in header if header.count(name) > 1})
    for name in duplicated:
        problems.append(ManifestProblem(str(path), f"column {name!r} appears more than once", column=name))
    if not missing and not duplicated and tuple(header[: len(REFSEG_COLUMNS)]) != REFSEG_COLUMNS:
        problems.append(ManifestProblem(
            str(path), f"columns are out of order: expected {', '.join(REFSEG_COLUMNS)} first, got {', '.join(header)}"
        ))
    return problems


def _check_row(base: Path, path: Path, number: int, raw: dict[str, str], check_files: bool) -> tuple[
    RefSegRow | None, list[ManifestProblem]
]:
    """Validate one row's values; every problem is collected, none stops the others."""
    row_id = raw.get("row_id", "").strip()
    problems: list[ManifestProblem] = []

    def problem(column: str, reason: str) -> None:
        problems.append(ManifestProblem(str(path), reason, number, row_id, column))

    def value(column: str) -> str:
        return (raw.get(column) or "").strip()

    if "format_version" in raw and value("format_version") != REFSEG_FORMAT:
        problem("format_version", f"got {value('format_version')!r}, expected {REFSEG_FORMAT!r}")
    for column in ("row_id", "case_id"):
        if column in raw and not value(column):
            problem(column, "is empty; expected a non-empty identifier")
    if "split" in raw and value("split") not in SPLITS:
        problem("split", f"got {value('split')!r}, expected one of {', '.join(SPLITS)}")
    if "text" in raw and not value("text"):
        problem("text", "is empty; expected the referring expression")
    mask_value = None
    if value("mask_value"):
        mask_value = _parse_int(value("mask_value"))
        if mask_value is None or mask_value == 0:
            problem("mask_value", f"got {value('mask_value')!r}, expected a non-zero integer label or empty (= any)")

    kind, image = None, None
    if "image" in raw:
        if not value("image"):
            problem("image", "is empty; expected a path to a NIfTI, DICOM, PNG or NPY file or a DICOM folder")
        else:
            image = _resolve(base, value("image"))
            if check_files and not image.exists():
                problem("image", f"file not found: {image}")
            else:
                kind = image_kind(image)
                if kind is None:
                    problem("image", f"unsupported image type {image.name!r}; expected .nii/.nii.gz, DICOM, .png, .npy")
    slice_index = None
    if "slice_index" in raw and kind is not None:
        text = value("slice_index")
        if kind in PLANE_KINDS and text:
            problem("slice_index", f"got {text!r} for a 2D {kind} image; expected empty")
        elif kind in VOLUME_KINDS:
            slice_index = _parse_int(text)
            if slice_index is None or slice_index < 0:
                problem("slice_index", f"got {text!r}, expected an integer >= 0 (index along array axis 2)")
    mask = None
    if "mask" in raw:
        if not value("mask"):
            problem("mask", "is empty; expected a path to the lesion mask")
        else:
            mask = _resolve(base, value("mask"))
            if check_files and not mask.is_file():
                problem("mask", f"file not found: {mask}")
            elif kind is not None:
                mask_kind = image_kind(mask)
                allowed = ("nifti",) if kind in VOLUME_KINDS else PLANE_KINDS
                if mask_kind not in allowed:
                    expected = " or ".join(allowed)
                    problem("mask", f"{mask.name!r} is not a valid mask for a {kind} image; expected {expected}")

    # A row with a missing non-essential column is still built, so `python -m datasets check` can check its files.
    if problems or image is None or mask is None or (kind in VOLUME_KINDS and slice_index is None):
        return None, problems
    extra = {name: raw[name] for name in raw if name not in REFSEG_COLUMNS}
    return RefSegRow(
        number, row_id, value("case_id"), value("split"), image, kind, slice_index, mask, mask_value,
        value("lesion_id"), value("text"), value("template_id"), extra,
    ), problems


def parse_refseg_manifest(path: str | os.PathLike, *, check_files: bool = True) -> ParsedManifest:
    """Read a manifest and collect every problem instead of stopping at the first.

    Args:
        path: the CSV file.
        check_files: also check that image and mask paths exist. Defaults to True.

    Raises:
        FileNotFoundError: no such file.
        InputError: the file is not UTF-8 CSV or has no header.
    """
    path = Path(path)
    header, table = _read_csv(path)
    problems = _check_header(path, header)
    raw_rows, rows = [], []
    seen_ids: dict[str, int] = {}
    case_split: dict[str, tuple[str, int]] = {}
    for number, cells in enumerate(table, start=FIRST_DATA_ROW):
        if not any(cell.strip() for cell in cells):
            raw_rows.append({})
            continue
        raw = dict(zip(header, cells))
        raw_rows.append(raw)
        if len(cells) != len(header):
            problems.append(ManifestProblem(
                str(path), f"has {len(cells)} fields, expected {len(header)} (one per header column)", number,
                raw.get("row_id", "").strip(),
            ))
            continue
        row, row_problems = _check_row(path.parent, path, number, raw, check_files)
        problems.extend(row_problems)
        row_id, case, split = (raw.get(name, "").strip() for name in ("row_id", "case_id", "split"))
        if row_id and row_id in seen_ids:
            problems.append(ManifestProblem(
                str(path), f"duplicate row_id; first used on row {seen_ids[row_id]}", number, row_id, "row_id"
            ))
            row = None
        seen_ids.setdefault(row_id, number)
        if case and split in SPLITS:
            first_split, first_row = case_split.setdefault(case, (split, number))
            if split != first_split:
                problems.append(ManifestProblem(
                    str(path), f"case {case!r} is in split {split!r} here but in {first_split!r} on row {first_row}; "
                    "all rows of a case must share one split", number, row_id, "split",
                ))
                row = None
        if row is not None:
            rows.append(row)
    if not table or not any(raw_rows):
        problems.append(ManifestProblem(str(path), "has no data rows"))
    return ParsedManifest(path, header, raw_rows, rows, problems)


def read_refseg_manifest(path: str | os.PathLike) -> RefSegManifest:
    """Read and validate a ``refseg-1`` manifest, all rows eagerly.

    Raises:
        FileNotFoundError: no such file.
        InputError: listing every problem (file, row number and row_id, column, what was expected).
    """
    parsed = parse_refseg_manifest(path)
    versions = {raw.get("format_version", "").strip() for raw in parsed.raw_rows if raw} - {"", REFSEG_FORMAT}
    if versions and not parsed.rows:
        raise InputError(
            f"{parsed.path} is a {', '.join(sorted(versions))} table (its format_version column), not a "
            f"{REFSEG_FORMAT} referring-segmentation manifest (columns: {', '.join(REFSEG_COLUMNS)})"
        )
    if parsed.problems:
        listed = "; ".join(str(p) for p in parsed.problems[:_MAX_LISTED])
        more = len(parsed.problems) - _MAX_LISTED
        suffix = f"; and {more} more (`python -m datasets check {parsed.path}` lists all)" if more > 0 else ""
        raise InputError(f"invalid {REFSEG_FORMAT} manifest ({len(parsed.problems)} problems): {listed}{suffix}")
    digest = sha256_file(parsed.path)
    manifest = RefSegManifest(parsed.path, parsed.rows, digest)
    logger.info("manifest %s: sha256 %s, %d rows %s", parsed.path, digest, len(manifest), manifest.splits)
    return manifest


def read_2d(path: Path, *, scale: bool = True) -> tuple[np.ndarray, bool]:
    """Read a 2D PNG or NPY image as ``(H, W)`` float32.

    Args:
        path: the file.
        scale: scale PNG intensities to ``[0, 1]``; False keeps the stored integer values (for label masks).
            Defaults to True.

    Returns:
        The array and whether it holds Hounsfield units (NPY: values as stored, HU; PNG: intensities scaled to
        ``[0, 1]`` by the bit depth, colour converted to grey).

    Raises:
        InputError: unreadable, not 2D, or not numeric.
    """
    if path.name.lower().endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"{path} is not a readable .npy array: {err}") from err
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{path}: expected a 2D numeric array (H, W), got {array.dtype} of shape {array.shape}")
        return array.astype(np.float32), True
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            if picture.mode not in ("L", "I;16", "I", "1"):
                picture = picture.convert("L")
            array = np.asarray(picture)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(
            f"{path} is not a readable 2D image (PNG, JPEG, TIFF, or .npy); volumes are read by type: NIfTI as .nii or "
            f".nii.gz, DICOM as .dcm, a file with the DICM preamble, or a series folder ({err})"
        ) from err
    if not scale or array.dtype == bool:
        return array.astype(np.float32), False
    return array.astype(np.float32) / (65535.0 if array.dtype.itemsize > 1 else 255.0), False


def _read_volume(path: Path, already_hu: bool) -> Any:
    """``read_ct`` through a small per-process cache: manifests list one volume on many rows (one per lesion and
    expression), so rows read in manifest order decode each volume once. The key includes size and modification time.
    """
    stat = path.stat()
    return _read_volume_cached(str(path), stat.st_size, stat.st_mtime_ns, already_hu)


@functools.lru_cache(maxsize=2)
def _read_volume_cached(path: str, size: int, mtime_ns: int, already_hu: bool) -> Any:
    from datasets.ct import read_ct

    return read_ct(path, already_hu=already_hu)


def _volume_mask_slice(row: RefSegRow, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    import nibabel as nib

    try:
        image = nib.load(str(row.mask))
        mask_shape = tuple(image.shape) + (1,) * (3 - len(image.shape))
        if mask_shape[:3] != tuple(shape) or any(size != 1 for size in mask_shape[3:]):
            raise InputError(f"{row.mask}: mask shape {image.shape} does not match the image shape {tuple(shape)} "
                             f"of {row.image} (row {row.number}, row_id {row.row_id!r})")
        if not np.allclose(image.affine, affine, atol=1e-2, rtol=1e-4):
            raise InputError(f"{row.mask}: mask affine does not match the image affine of {row.image} "
                             f"(row {row.number}, row_id {row.row_id!r}); expected the image's geometry")
        data = image.dataobj if len(image.shape) >= 3 else np.asarray(image.dataobj)[:, :, None]
        return np.asarray(data[:, :, row.slice_index]).reshape(shape[:2])
    except (OSError, EOFError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{row.mask} is not a readable NIfTI mask (row {row.number}): {err}") from err


def _select(mask: np.ndarray, value: int | None) -> np.ndarray:
    return mask != 0 if value is None else mask == value


@contextlib.contextmanager
def _naming_the_row(row: RefSegRow) -> Iterator[None]:
    """Add the manifest row to a reader's error: a bad file found mid-run must say which row to fix."""
    try:
        yield
    except InputError as err:
        raise InputError(f"{err} (manifest row {row.number}, row_id {row.row_id!r})") from err


def load_sample(row: RefSegRow, preprocessing: SlicePreprocessing) -> dict[str, Any]:
    """Load and preprocess one row into the data layer's fixed-key sample dict.

    Args:
        row: a validated manifest row.
        preprocessing: the slice preprocessing.

    Returns:
        ``{"image": (C, S, S) float32 tensor in [0, 1], "mask": (1, S, S) float32 tensor in {0, 1}, "text": str,
        "label": None, "meta": dict}`` with ``S = preprocessing.image_size``. ``meta`` holds the row's fields,
        ``slice_affine`` (4x4 list, None for 2D inputs), ``stored_shape`` and ``geometry`` (for
        :func:`datasets.slices.restore_slice`), and ``extra`` columns.

    Raises:
        InputError: unreadable files, an out-of-range slice index, or a mask that does not match its image.
    """
    if row.is_volume:
        from datasets.ct import extract_slice

        with _naming_the_row(row):
            volume = _read_volume(row.image, preprocessing.already_hu)
            image, geometry = preprocess_volume_slice(volume, row.slice_index, preprocessing)
        slice_affine = np.asarray(extract_slice(volume, row.slice_index).affine, dtype=float).tolist()
        stored_mask = _volume_mask_slice(row, volume.array.shape, np.asarray(volume.affine))
    else:
        with _naming_the_row(row):
            plane, is_hu = read_2d(row.image)
            stored_mask, _ = read_2d(row.mask, scale=False)
        image, geometry = prepare_2d_image(plane, preprocessing, is_hu=is_hu, source=f"{row.image} (row {row.number})")
        slice_affine = None
    if stored_mask.shape != geometry.stored_shape:
        raise InputError(f"{row.mask}: mask slice shape {stored_mask.shape} does not match the image slice shape "
                         f"{geometry.stored_shape} (row {row.number}, row_id {row.row_id!r})")
    target = _select(stored_mask, row.mask_value)
    mask = prepare_mask(target, geometry)
    meta = row.fields() | {
        "target_pixels": int(target.sum()),  # at the stored resolution: 0 means the row refers to nothing
        "slice_affine": slice_affine,
        "stored_shape": list(geometry.stored_shape),
        "geometry": geometry.to_dict(),
    }
    return {
        "image": torch.from_numpy(image),
        "mask": torch.from_numpy(mask),
        "text": row.text,
        "label": None,
        "meta": meta,
    }


def write_refseg_manifest(
    path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], extra_columns: Sequence[str] = ()
) -> Path:
    """Write a ``refseg-1`` manifest atomically (readers never see a half-written file).

    Args:
        path: output CSV.
        rows: mappings with the format's columns (``format_version`` may be left out; None is written as empty)
            plus ``extra_columns``.
        extra_columns: additional columns, written after the format's own. Defaults to none.

    Returns:
        The written path.
    """
    path = Path(path)
    header = list(REFSEG_COLUMNS) + [name for name in extra_columns if name not in REFSEG_COLUMNS]
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            values = {"format_version": REFSEG_FORMAT, **row}
            writer.writerow(["" if values.get(name) is None else str(values.get(name, "")) for name in header])
    return path
