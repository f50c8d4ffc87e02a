"""Read CT volumes from NIfTI files, single DICOM files and DICOM series folders, in Hounsfield units.

Array convention (MONAI's, unlike the display order used for chest X-rays in :mod:`datasets.cxr`): ``array[x, y, z]``
with axis 0 = x (image columns), axis 1 = y (image rows), axis 2 = slice. ``affine`` maps voxel indices to RAS+ world
millimetres exactly as MONAI's ``PydicomReader`` / ``NibabelReader`` produce it, so volumes from this module can go
straight into MONAI transforms (``Orientation``, ``Spacing``) or be written with :func:`datasets.nifti.save_nifti`.

Hounsfield units, applied exactly once:

* DICOM: ``RescaleSlope`` / ``RescaleIntercept`` are applied once per slice (by MONAI's ``PydicomReader``; slices may
  carry different values). Nothing else rescales.
* NIfTI: the header's ``scl_slope`` / ``scl_inter`` are the file's own encoding and nibabel always applies them, once;
  no DICOM rescale exists for a NIfTI, so nothing more is applied. A NIfTI written from HU (dcm2niix, CT-RATE v2) is
  returned in HU.
* ``already_hu=True`` says the *stored* DICOM values are already HU: ``RescaleSlope`` / ``RescaleIntercept`` are then
  ignored (and a warning is logged if they were not the identity). For NIfTI the flag changes nothing in the values
  (see above); it is recorded in ``meta``. Use it for DICOMs re-exported from HU data that kept a stale intercept.
* After reading, a volume with no value below 0 HU (no air at all) is reported with a warning: it probably holds raw
  stored values whose rescale lives elsewhere (e.g. CT-RATE v1 NIfTIs, whose intercepts are in a metadata table).

DICOM series folders: series are found with SimpleITK's GDCM series scanner (files it does not recognise as DICOM
are ignored and logged); slices are sorted by their position along the slice normal (the cross product of the two
``ImageOrientationPatient`` directions), never by file name or ``InstanceNumber``. Slice gaps must agree with their
median within :data:`SLICE_GAP_TOLERANCE`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.data import NibabelReader, PydicomReader
from pydicom.dataset import Dataset

from datasets.dicom import check_single_frame, pixel_error, read_dataset, require_decoder
from datasets.errors import InputError
from datasets.nifti import affine_spacing, orientation_code, to_closest_canonical

__all__ = [
    "CTVolume",
    "CTSlice",
    "read_ct",
    "check_hu_plausible",
    "extract_slice",
    "SUPPORTED_ON_PROBLEM",
    "SLICE_GAP_TOLERANCE",
    "SLICE_GAP_MIN_MM",
]

logger = logging.getLogger(__name__)

SUPPORTED_ON_PROBLEM = ("error", "warn")
#: Slice gaps are even when every gap is within this fraction of the median gap (or within SLICE_GAP_MIN_MM).
SLICE_GAP_TOLERANCE = 0.05
#: Absolute floor of the gap tolerance in mm; two slices closer than this are at the same position (never allowed).
SLICE_GAP_MIN_MM = 0.01

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])  # multiplies a world-space vector


@dataclass
class CTVolume:
    """A CT volume in Hounsfield units with its geometry.

    Attributes:
        array: (X, Y, Z) float32, axis 0 = image columns, axis 1 = image rows, axis 2 = slices (Z = 1 for one 2D
            DICOM), in HU.
        affine: (4, 4) float64, voxel index (i, j, k, 1) -> RAS+ world mm.
        spacing: voxel size in mm along axes 0, 1, 2.
        source: the path that was read.
        meta: plain-Python metadata: ``format`` ("nifti", "dicom" or "dicom-series"), ``modality``, ``series_uid``,
            ``series_description``, ``rescale_slope``, ``rescale_intercept``, ``rescale_applied``, ``already_hu``,
            ``orientation`` (axis codes such as "LPS"), ``canonical``, ``hu_plausible`` (False when no value is below 0,
            None when not checked: non-CT DICOM), ``problems`` (tolerated with
            ``on_problem="warn"``), and for DICOM ``files`` and ``slice_positions`` (mm along the normal, sorted);
            ``rescale_slope``/``rescale_intercept`` become per-slice lists when the slices of a series differ.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CTSlice:
    """One axial-index slice of a :class:`CTVolume`.

    Attributes:
        array: (X, Y) float32 in HU, same axis order as the volume (axis 0 = image columns).
        affine: (4, 4) float64 mapping (i, j, 0, 1) of this slice to RAS+ world mm (the volume affine shifted to
            ``index``).
        index: slice index in the volume.
        source: the volume's source path.
    """

    array: np.ndarray
    affine: np.ndarray
    index: int
    source: str


def read_ct(
    path: str | os.PathLike,
    *,
    already_hu: bool = False,
    canonical: bool = False,
    on_problem: str = "error",
    check_hu: bool = True,
) -> CTVolume:
    """Read a CT volume in Hounsfield units from a NIfTI file, one DICOM file, or a folder holding one DICOM series.

    Args:
        path: ``.nii`` / ``.nii.gz`` file, DICOM file, or folder of DICOM slices (subfolders are not searched).
        already_hu: the stored DICOM values are already HU, so ``RescaleSlope``/``RescaleIntercept`` are not
            applied; no effect on NIfTI values (nibabel's header scaling is always applied once). Defaults to False.
        canonical: reorient (flips and axis permutations only, no resampling) to the closest RAS+ orientation,
            updating ``affine`` and ``spacing``. Defaults to False (the file's own orientation: a DICOM axial series
            comes out "LPS", with slices from inferior to superior).
        on_problem: ``"error"`` raises on a folder with several series or slices with uneven spacing; ``"warn"``
            logs a warning, records it in ``meta["problems"]`` and continues (largest series; affine from the
            mean slice step). Defaults to ``"error"``.
        check_hu: warn when the values do not look like HU (:func:`check_hu_plausible`). A caller that rescales the
            values itself afterwards (CT-RATE v1 metadata) passes False and checks the rescaled values. Defaults to
            True.

    Returns:
        The :class:`CTVolume`.

    Raises:
        InputError: missing/empty/corrupt/non-image input, multi-frame or colour DICOM, mixed orientations or
            matrix sizes, slices at the same position, a 4D NIfTI, or (with ``on_problem="error"``) several series
            or uneven slice spacing; the message names the file and what was expected.
        MissingDependencyError: the DICOM compression has no installed decoder (the message says what to install).

    Example::

        volume = read_ct("CT2/")          # folder with one series
        volume.array.shape                # (512, 512, 120): (X, Y, Z)
    """
    if on_problem not in SUPPORTED_ON_PROBLEM:
        raise InputError(f"on_problem must be one of {SUPPORTED_ON_PROBLEM}, got {on_problem!r}")
    source = Path(path)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    if source.is_dir():
        array, affine, meta = _read_series(source, already_hu=already_hu, on_problem=on_problem)
    elif source.name.lower().endswith(_NIFTI_SUFFIXES):
        array, affine, meta = _read_nifti(source)
    else:
        array, affine, meta = _read_dicom_file(source, already_hu=already_hu)
    _check_affine(affine, source, meta)
    meta["already_hu"] = already_hu
    meta.setdefault("problems", [])
    if canonical:
        array, affine = to_closest_canonical(array, affine)
    meta["canonical"] = canonical
    meta["orientation"] = orientation_code(affine)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if check_hu:
        check_hu_plausible(array, source, meta)
    return CTVolume(array=array, affine=affine, spacing=affine_spacing(affine), source=str(source), meta=meta)


def extract_slice(volume: CTVolume, index: int) -> CTSlice:
    """Take slice ``index`` along axis 2 of a volume, with the affine that places it in world space.

    Args:
        volume: the volume.
        index: slice index, ``0 <= index < Z``.

    Returns:
        The :class:`CTSlice` with a (X, Y) array.

    Raises:
        InputError: ``index`` is out of range (the message gives the valid range).
    """
    depth = volume.array.shape[2]
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < depth:
        raise InputError(f"slice index {index!r} is out of range for {volume.source}: valid indices are 0..{depth - 1}")
    shift = np.eye(4)
    shift[2, 3] = float(index)
    return CTSlice(
        array=volume.array[:, :, int(index)].copy(),
        affine=volume.affine @ shift,
        index=int(index),
        source=volume.source,
    )


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes), expected a NIfTI file")
    reader = NibabelReader()
    try:
        image = reader.read(str(path))
        array, monai_meta = reader.get_data(image)
    except Exception as err:  # nibabel, gzip and zlib raise many types on damaged files
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise InputError(f"{path} could not be read as NIfTI (truncated or not a NIfTI file?): {detail}") from err
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise InputError(f"{path} holds a {array.ndim}D image of shape {array.shape}, expected a 3D CT volume")
    affine = np.asarray(monai_meta["affine"], dtype=np.float64)
    slope, inter = image.dataobj.slope, image.dataobj.inter
    meta = {
        "format": "nifti",
        "modality": None,
        "series_uid": None,
        "series_description": None,
        "nifti_scl_slope": float(slope),
        "nifti_scl_inter": float(inter),
        "rescale_slope": None,
        "rescale_intercept": None,
        "rescale_applied": False,
        "stored_dtype": str(image.get_data_dtype()),
    }
    return array.astype(np.float32), affine, meta


def _read_dicom_file(path: Path, *, already_hu: bool) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    header = read_dataset(path, stop_before_pixels=True)
    _check_image_header(header, path)
    slice_step = _single_slice_step(header)
    array, affine, rescale = _decode_slice(path, already_hu=already_hu)
    affine[:3, 2] = _LPS_TO_RAS * _normal(header) * slice_step
    meta = _series_meta(header, rescale)
    meta.update({"format": "dicom", "files": [str(path)], "slice_positions": [_position(header)]})
    return array[:, :, None], affine, meta


def _read_series(folder: Path, *, already_hu: bool, on_problem: str) -> tuple[np.ndarray, np.ndarray, dict]:
    series = _discover_series(folder)
    problems: list[str] = []
    if len(series) > 1:
        listing = "; ".join(
            f"{uid} ({len(files)} slices, {description!r})" for uid, (files, description) in series.items()
        )
        message = f"{folder} holds {len(series)} DICOM series: {listing}; expected one series per folder"
        uid = max(series, key=lambda key: len(series[key][0]))
        suffix = f" (reading the largest, {uid})" if on_problem == "warn" else "; split the folder by series"
        _problem(message + suffix, on_problem, problems)
    else:
        uid = next(iter(series))
    files = series[uid][0]
    headers = [read_dataset(Path(name), stop_before_pixels=True) for name in files]
    for name, header in zip(files, headers):
        _check_image_header(header, Path(name))
    _check_same_geometry(folder, files, headers)
    positions = np.array([_position(header) for header in headers])
    order = np.argsort(positions, kind="stable")
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    positions = positions[order]
    if len(files) > 1:
        _check_gaps(folder, files, positions, on_problem, problems)

    decoded = [_decode_slice(Path(name), already_hu=already_hu) for name in files]
    rescales = [rescale for _, _, rescale in decoded]
    affine = decoded[0][1]  # in-plane columns and origin from the first (lowest) slice
    if len(files) > 1:  # mean step between the first and last slice centres (LPS)
        first = np.asarray(headers[0].ImagePositionPatient, dtype=np.float64)
        last = np.asarray(headers[-1].ImagePositionPatient, dtype=np.float64)
        step_lps = (last - first) / (len(files) - 1)
    else:
        step_lps = _normal(headers[0]) * _single_slice_step(headers[0])
    affine[:3, 2] = _LPS_TO_RAS * step_lps
    meta = _series_meta(headers[0], rescales[0])
    if len({r[:2] for r in rescales}) > 1:
        meta["rescale_slope"] = [r[0] for r in rescales]
        meta["rescale_intercept"] = [r[1] for r in rescales]
    meta.update(
        {
            "format": "dicom-series",
            "files": files,
            "slice_positions": [float(p) for p in positions],
            "problems": problems,
        }
    )
    return np.stack([array for array, _, _ in decoded], axis=-1), affine, meta


def _discover_series(folder: Path) -> dict[str, tuple[list[str], str]]:
    """Series UID -> (files, description) for the DICOM files directly inside ``folder``."""
    warning_display = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        grouped = {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warning_display)
    entries = sorted(os.listdir(folder))
    if not grouped:
        subfolders = [name for name in entries if (folder / name).is_dir()]
        hint = f"; it has subfolders {subfolders[:10]}, which are not searched" if subfolders else ""
        raise InputError(
            f"{folder} holds no DICOM series ({len(entries) - len(subfolders)} files{hint}); expected a folder of "
            "DICOM slices of one series"
        )
    used = {os.path.normpath(name) for files in grouped.values() for name in files}
    ignored = [name for name in entries if (folder / name).is_file() and os.path.normpath(folder / name) not in used]
    if ignored:
        logger.info("%s: ignored %d files that are not DICOM images: %s", folder, len(ignored), ignored[:5])
    series = {}
    for uid, files in grouped.items():
        header = read_dataset(Path(files[0]), stop_before_pixels=True)
        series[uid] = (files, str(header.get("SeriesDescription", "")))
    return series


def _decode_slice(path: Path, *, already_hu: bool) -> tuple[np.ndarray, np.ndarray, tuple[float | None, ...]]:
    """Decode one single-frame DICOM through MONAI: (X, Y) array, RAS affine, (slope, intercept, applied)."""
    reader = PydicomReader(force=True)  # the file was already validated by read_dataset
    ds = reader.read(str(path))
    require_decoder(ds, path)
    slope, intercept = _rescale(ds)
    applied = slope is not None and not already_hu
    if already_hu and slope is not None:
        if (slope, intercept) != (1.0, 0.0):
            logger.warning(
                "%s: already_hu=True, so RescaleSlope %s / RescaleIntercept %s in the file are NOT applied",
                path, slope, intercept,
            )
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            if keyword in ds:
                delattr(ds, keyword)
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        logger.warning(
            "%s has no ImageOrientationPatient/ImagePositionPatient: assuming an axial slice at the origin", path
        )
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, 0]
    try:
        array, monai_meta = reader.get_data(ds)
    except Exception as err:  # pydicom's decoders raise ValueError/RuntimeError/struct.error on damaged data
        raise pixel_error(path, err) from err
    affine = np.asarray(monai_meta["affine"], dtype=np.float64)
    return np.asarray(array, dtype=np.float32), affine, (slope, intercept, applied)


def _rescale(ds: Dataset) -> tuple[float | None, float | None]:
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        return None, None
    return float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))


def _check_image_header(header: Dataset, path: Path) -> None:
    check_single_frame(header, path)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InputError(
            f"{path} is a colour DICOM ({header.get('PhotometricInterpretation', '?')}, {samples} samples per pixel),"
            " expected a greyscale CT slice"
        )
    if "Rows" not in header or "Columns" not in header:
        raise InputError(f"{path} has no Rows/Columns, expected a DICOM image")


def _check_same_geometry(folder: Path, files: Sequence[str], headers: Sequence[Dataset]) -> None:
    geometry = ("ImageOrientationPatient", "ImagePositionPatient")
    missing = [name for name, h in zip(files, headers) if any(keyword not in h for keyword in geometry)]
    if missing:
        raise InputError(
            f"{folder}: {len(missing)} slices have no ImageOrientationPatient/ImagePositionPatient "
            f"(e.g. {missing[0]}), so they cannot be ordered into a volume"
        )
    orientations = {tuple(round(float(v), 4) for v in h.ImageOrientationPatient) for h in headers}
    if len(orientations) > 1:
        raise InputError(
            f"{folder}: slices of one series have {len(orientations)} different ImageOrientationPatient values "
            f"{sorted(orientations)}; expected parallel slices (is this a scout/localizer series?)"
        )
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    spacings = {tuple(round(float(v), 5) for v in h.get("PixelSpacing", [1, 1])) for h in headers}
    if len(sizes) > 1 or len(spacings) > 1:
        raise InputError(
            f"{folder}: slices have different matrix sizes {sorted(sizes)} or PixelSpacing {sorted(spacings)}; "
            "expected one size and spacing per series"
        )


def _check_gaps(folder: Path, files: list[str], positions: np.ndarray, on_problem: str, problems: list[str]) -> None:
    gaps = np.diff(positions)
    same = np.flatnonzero(gaps < SLICE_GAP_MIN_MM)
    if same.size:
        i = int(same[0])
        raise InputError(
            f"{folder}: {same.size} pairs of slices share a position along the slice normal (e.g. {files[i]} and "
            f"{files[i + 1]} at {positions[i]:.3f} mm); expected one slice per position (several acquisitions, "
            "phases or echoes in one series?)"
        )
    median = float(np.median(gaps))
    tolerance = max(SLICE_GAP_TOLERANCE * median, SLICE_GAP_MIN_MM)
    if np.any(np.abs(gaps - median) > tolerance):
        values = ", ".join(f"{gap:.4g}" for gap in gaps)
        _problem(
            f"{folder}: uneven slice spacing: gaps along the slice normal are [{values}] mm (median {median:.4g} mm, "
            f"tolerance {tolerance:.3g} mm); a slice may be missing",
            on_problem,
            problems,
        )


def _problem(message: str, on_problem: str, problems: list[str]) -> None:
    if on_problem == "error":
        raise InputError(message)
    logger.warning(message)
    problems.append(message)


def _normal(header: Dataset) -> np.ndarray:
    """Unit slice normal in LPS: row direction x column direction."""
    orientation = np.asarray(header.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def _position(header: Dataset) -> float:
    """Position of a slice along its normal in mm."""
    return float(np.dot(np.asarray(header.get("ImagePositionPatient", [0, 0, 0]), dtype=np.float64), _normal(header)))


def _single_slice_step(header: Dataset) -> float:
    """Voxel depth of a lone slice: SliceThickness, else SpacingBetweenSlices, else 1 mm."""
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):
        value = header.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _series_meta(header: Dataset, rescale: tuple[float | None, ...]) -> dict[str, Any]:
    slope, intercept, applied = rescale
    return {
        "modality": str(header.get("Modality", "")) or None,
        "series_uid": str(header.get("SeriesInstanceUID", "")) or None,
        "series_description": str(header.get("SeriesDescription", "")) or None,
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "rescale_applied": bool(applied),
        "transfer_syntax": header.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2").name,
    }


_PROJECTION_MODALITIES = ("CR", "DX", "RG", "MG", "XA", "RF", "PX", "IO")  # radiographs: no 3D voxel geometry


def _check_affine(affine: np.ndarray, source: Path, meta: dict[str, Any]) -> None:
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        expected = ("a valid sform/qform with non-zero spacing" if meta["format"] == "nifti"
                    else "positive PixelSpacing and distinct slice positions")
        hint = ""
        if meta.get("modality") in _PROJECTION_MODALITIES:
            hint = (f". Its Modality is {meta['modality']}: a projection radiograph, not a CT slice; chest radiographs "
                    "are read by datasets.cxr.read_cxr (carzero)")
        raise InputError(
            f"{source} has a singular or non-finite voxel-to-world affine (a voxel size of 0 or a collapsed axis): "
            f"{np.round(affine[:3], 4).tolist()}; expected {expected}{hint}"
        )


def check_hu_plausible(array: np.ndarray, source: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Warn when a volume's values cannot be Hounsfield units; records ``meta["hu_plausible"]``.

    ``meta`` needs ``modality`` and ``already_hu`` (as :func:`read_ct` fills them).
    """
    meta["hu_plausible"] = None
    if meta["modality"] not in (None, "CT"):
        logger.warning(
            "%s: DICOM Modality is %s, not CT: its values are not Hounsfield units, so CT windows and models "
            "trained on CT do not apply to it", source, meta["modality"],
        )
        return
    if array.size == 0:
        return
    minimum = float(array.min())
    meta["hu_plausible"] = minimum < 0
    if minimum >= 0:
        logger.warning(
            "%s: no value below 0 (minimum %g), so no air (about -1000 HU): these look like raw stored values, not "
            "Hounsfield units. If the rescale lives elsewhere (e.g. CT-RATE v1 metadata), apply it yourself%s",
            source, minimum, "; already_hu=True skipped the file's own rescale" if meta["already_hu"] else "",
        )
