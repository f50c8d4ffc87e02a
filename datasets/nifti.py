"""NIfTI writing and the small geometry helpers shared by the CT and chest X-ray readers.

Conventions (MONAI's): volumes are indexed ``(x, y, z)`` and an affine maps voxel indices ``(i, j, k, 1)`` to world
coordinates in millimetres in RAS+ space: +x towards the subject's Right, +y Anterior, +z Superior. DICOM and
SimpleITK/ITK use LPS+ (+x Left, +y Posterior, +z Superior); :func:`ras_to_lps` converts an affine between the two
(the conversion flips the sign of the first two world rows and is its own inverse).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from datasets.errors import InputError
from datasets.io import atomic_write

__all__ = ["save_nifti", "ras_to_lps", "affine_spacing", "to_closest_canonical", "orientation_code"]

_LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_to_lps(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel-to-world affine between RAS+ and LPS+ (the same operation both ways).

    Args:
        affine: (4, 4) voxel-to-world matrix in one convention.

    Returns:
        (4, 4) float64 matrix in the other convention.
    """
    return _LPS_FLIP @ np.asarray(affine, dtype=np.float64)


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along array axes 0, 1, 2: the lengths of the affine's first three columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return float(norms[0]), float(norms[1]), float(norms[2])


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter RAS-style code of the array axes, e.g. ``"LPS"`` for a plain DICOM axial volume in MONAI order."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def to_closest_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip and permute a volume so that its axes point (as closely as possible) to R, A, S.

    Only axis flips and permutations are applied (no resampling), so values are unchanged; an oblique volume keeps
    its obliquity in the affine.

    Args:
        array: (X, Y, Z) volume.
        affine: (4, 4) voxel-to-RAS affine of ``array``.

    Returns:
        The reoriented (X', Y', Z') array (a contiguous copy) and its (4, 4) affine.
    """
    affine = np.asarray(affine, dtype=np.float64)
    current = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(("R", "A", "S")))
    reoriented = np.ascontiguousarray(nib.orientations.apply_orientation(array, transform))
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape[:3])
    return reoriented, new_affine


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a volume as NIfTI-1, atomically (readers never see a half-written file).

    The affine is stored as both qform and sform (code 1, scanner coordinates), units mm, without intensity scaling
    (``scl_slope`` unset), so any NIfTI reader returns exactly ``array``'s values.

    Args:
        array: (X, Y, Z) volume in MONAI order (2D (X, Y) is written as one slice); its dtype is kept (bool is
            written as uint8, float64 as float64).
        affine: (4, 4) voxel-to-RAS affine, e.g. ``CTVolume.affine``.
        path: output file ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).

    Returns:
        The written path.

    Raises:
        InputError: bad suffix, array of the wrong rank, or an affine that is not a finite invertible 4x4 matrix.

    Example::

        volume = read_ct("series_folder/")
        save_nifti(volume.array, volume.affine, "ct.nii.gz")
    """
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise InputError(f"NIfTI output path {path} must end in .nii or .nii.gz")
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise InputError(f"save_nifti({path}): expected a 2D (X, Y) or 3D (X, Y, Z) array, got shape {array.shape}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype == bool:
        array = array.astype(np.uint8)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"save_nifti({path}): expected a finite invertible 4x4 affine, got {affine.tolist()}")
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    data = image.to_bytes()
    if name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return path
