"""Patient-based laterality: which side of the patient a point lies on, lesion centroids in world space, and the
word swap that goes with a left-right flip.

World coordinates follow NIfTI/nibabel's **RAS+** convention: the affine of a NIfTI image maps voxel indices
``(i, j, k)`` to millimetres ``(x, y, z)`` where **+x points to the patient's Right**, +y to the Anterior and +z to
the Superior side. This is what nibabel's ``ornt2axcodes`` documents (its default labels are
``(('L', 'R'), ('P', 'A'), ('I', 'S'))``, the second of each pair naming the positive end), and why
``nibabel.aff2axcodes(numpy.eye(4)) == ('R', 'A', 'S')``. DICOM's patient coordinate system is **LPS+** (+x to the
patient's Left, +y Posterior); the two differ by the sign of x and y, which nibabel applies when it converts DICOM.

Laterality is a property of the patient, never of the array: a column index means "right" in one file and "left" in
another, depending on the affine. Radiological display (axial slice seen from the feet) draws the patient's right on
the screen's left; nothing here depends on display.

Example::

    >>> import numpy as np
    >>> patient_side([35.0, -10.0, 0.0])  # RAS+ x > 0: patient's right
    'right'
    >>> swap_laterality_words("Rightmost lesion, brighter than the LEFT lobe")
    'Leftmost lesion, brighter than the RIGHT lobe'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "PATIENT_SIDES",
    "patient_side",
    "voxel_to_world",
    "mask_centroid_voxel",
    "mask_centroid_world",
    "swap_laterality_words",
]

PATIENT_SIDES = ("right", "left")


def patient_side(world_ras_xyz: Sequence[float] | np.ndarray, *, midline_x: float = 0.0) -> str:
    """The patient's side of a point given in RAS+ world millimetres.

    Args:
        world_ras_xyz: ``(x, y, z)`` in RAS+ mm (NIfTI/nibabel world space; +x = patient's right).
        midline_x: x coordinate (RAS+ mm) of the patient's mid-sagittal plane. Defaults to 0.0.

    Returns:
        ``"right"`` when ``x > midline_x``, ``"left"`` when ``x < midline_x``.

    Raises:
        ValueError: the point does not have 3 finite coordinates, or lies exactly on the midline.
    """
    point = np.asarray(world_ras_xyz, dtype=float).reshape(-1)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ValueError(f"world_ras_xyz must be 3 finite RAS+ coordinates in mm, got {world_ras_xyz!r}")
    if point[0] == midline_x:
        raise ValueError(f"point {point.tolist()} lies exactly on the midline x = {midline_x} mm: it has no side")
    return "right" if point[0] > midline_x else "left"


def voxel_to_world(affine: np.ndarray, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
    """Map voxel indices to RAS+ world millimetres with a 4x4 affine.

    Args:
        affine: ``(4, 4)`` voxel-to-world matrix (a NIfTI ``sform``/``qform``, as ``nibabel`` returns it).
        ijk: one index triple ``(3,)`` or several ``(N, 3)``; fractional indices are allowed.

    Returns:
        World coordinates with the same leading shape as ``ijk``: ``(3,)`` or ``(N, 3)``.
    """
    affine = _check_affine(affine)
    points = np.asarray(ijk, dtype=float)
    if points.shape[-1] != 3 or points.ndim > 2:
        raise ValueError(f"ijk must have shape (3,) or (N, 3), got {points.shape}")
    return points @ affine[:3, :3].T + affine[:3, 3]


def mask_centroid_voxel(mask: np.ndarray, value: int | None = None) -> np.ndarray:
    """Centroid of a 3D mask in (fractional) voxel indices.

    Args:
        mask: 3D array ``(X, Y, Z)`` indexed like the file on disk (axis order of ``nibabel``'s ``get_fdata``).
        value: label value to select; ``None`` selects every non-zero voxel. Defaults to None.

    Returns:
        ``(3,)`` float array of mean voxel indices.

    Raises:
        ValueError: the mask is not 3D or selects no voxel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D (X, Y, Z) array, got shape {mask.shape}")
    selected = mask != 0 if value is None else mask == value
    indices = np.argwhere(selected)
    if len(indices) == 0:
        what = "non-zero voxel" if value is None else f"voxel with value {value}"
        raise ValueError(f"mask of shape {mask.shape} has no {what}")
    return indices.mean(axis=0)


def mask_centroid_world(mask: np.ndarray, affine: np.ndarray, value: int | None = None) -> np.ndarray:
    """Centroid of a 3D mask in RAS+ world millimetres (the voxel centroid mapped through ``affine``).

    Args:
        mask: 3D array ``(X, Y, Z)`` as stored on disk.
        affine: ``(4, 4)`` voxel-to-RAS+ matrix of that array.
        value: label value to select; ``None`` selects every non-zero voxel. Defaults to None.

    Returns:
        ``(3,)`` RAS+ coordinates in mm; feed ``[0]`` to :func:`patient_side`.
    """
    return voxel_to_world(affine, mask_centroid_voxel(mask, value))


_SIDE_WORD = re.compile(r"\b(right|left)(most|wards?|sided)?\b", flags=re.IGNORECASE)
_OPPOSITE = {"right": "left", "left": "right"}


def swap_laterality_words(text: str) -> str:
    """Swap "right" and "left" in a referring expression, for left-right flip augmentation.

    Whole words only, keeping their case (``right``/``Right``/``RIGHT``), and the forms ``rightmost``, ``rightward(s)``,
    ``rightsided`` and ``right-sided`` (the hyphen is a word boundary). Words that merely contain the letters, such as
    ``bright``, ``brighter``, ``leftover`` or ``righteous``, are left alone. Abbreviations (``R``, ``L``) are not
    touched.

    Args:
        text: the expression.

    Returns:
        The expression with every laterality word replaced by its opposite.
    """

    def replace(match: re.Match[str]) -> str:
        word, suffix = match.group(1), match.group(2) or ""
        opposite = _OPPOSITE[word.lower()]
        if word.isupper() and len(word) > 1:
            opposite = opposite.upper()
        elif word[0].isupper():
            opposite = opposite.capitalize()
        return opposite + suffix

    return _SIDE_WORD.sub(replace, text)


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine is singular (its 3x3 part has zero determinant): voxels have no world position")
    return affine
