"""Drawing primitives of the synthetic chest CT: a float HU canvas in patient millimetres with soft-edged shapes.

Coordinates are DICOM patient coordinates (LPS+): +x towards the patient's **left**, +y **posterior**, +z
**superior**, in mm, with the array indexed ``[x, y, z]`` along those directions (the order MONAI's DICOM reader
gives). Shapes are blended into the canvas with a partial-volume weight that falls from 1 to 0 over about one voxel
at their border, so thin structures (septa, small vessels, bronchial walls) appear as faint partial-volume lines, as
on real thick-slice CT. Every shape is evaluated on its bounding box only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "Canvas", "smooth_field"]


@dataclass(frozen=True)
class Grid:
    """A voxel grid in LPS+ patient millimetres.

    Attributes:
        shape: voxels along ``(x, y, z)``.
        spacing: voxel size in mm along ``(x, y, z)``.
        origin: LPS+ position in mm of voxel ``(0, 0, 0)`` (DICOM ``ImagePositionPatient`` of the first slice).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axis(self, k: int) -> np.ndarray:
        """Millimetre coordinates of the voxel centres along array axis ``k``, float32."""
        return (self.origin[k] + self.spacing[k] * np.arange(self.shape[k])).astype(np.float32)

    def ras_affine(self) -> np.ndarray:
        """The ``(4, 4)`` voxel-to-RAS+ affine (NIfTI convention: x and y flip sign from LPS+)."""
        affine = np.diag([-self.spacing[0], -self.spacing[1], self.spacing[2], 1.0])
        affine[:3, 3] = (-self.origin[0], -self.origin[1], self.origin[2])
        return affine


def smooth_field(rng: np.random.Generator, grid: Grid, wavelength_mm: tuple[float, float], terms: int = 10
                 ) -> np.ndarray:
    """A smooth random field of unit standard deviation: a sum of random separable cosines.

    Args:
        rng: random generator.
        grid: the grid to evaluate on.
        wavelength_mm: range of the wavelengths of the cosines (uniform per term and axis).
        terms: number of cosine products. Defaults to 10.

    Returns:
        ``grid.shape`` float32 array, mean about 0 and standard deviation about 1.
    """
    field = np.zeros(grid.shape, np.float32)
    for _ in range(terms):
        factors = []
        for k in range(3):
            wave = 2 * np.pi / rng.uniform(*wavelength_mm)
            factors.append(np.cos(wave * grid.axis(k) + rng.uniform(0, 2 * np.pi)).astype(np.float32))
        field += factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    return field * np.float32(np.sqrt(8.0 / terms))


class Canvas:
    """A float32 HU volume on a :class:`Grid` with soft-edged shape painting.

    Args:
        grid: the voxel grid.
        fill: initial value in HU.
    """

    def __init__(self, grid: Grid, fill: float) -> None:
        self.grid = grid
        self.hu = np.full(grid.shape, fill, np.float32)
        self.axes = [grid.axis(k) for k in range(3)]
        self.edge_mm = float(min(grid.spacing[:2]))

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
        """Index slices and broadcastable coordinate arrays of the voxels whose centres lie in ``[lo, hi]`` mm.

        Returns:
            ``(slices, [x (X,1,1), y (1,Y,1), z (1,1,Z)])`` or None when the box misses the grid.
        """
        slices, coords = [], []
        for k in range(3):
            first = int(np.ceil((lo[k] - self.grid.origin[k]) / self.grid.spacing[k]))
            last = int(np.floor((hi[k] - self.grid.origin[k]) / self.grid.spacing[k])) + 1
            first, last = max(first, 0), min(last, self.grid.shape[k])
            if first >= last:
                return None
            slices.append(slice(first, last))
            shape = [1, 1, 1]
            shape[k] = last - first
            coords.append(self.axes[k][first:last].reshape(shape))
        return tuple(slices), coords

    def paint(self, slices: tuple[slice, ...], weight: np.ndarray, value: float | np.ndarray,
              where: np.ndarray | None = None) -> None:
        """Blend ``value`` into the canvas over ``slices`` with ``weight`` in [0, 1] (optionally masked)."""
        if where is not None:
            weight = weight * where[slices]
        region = self.hu[slices]
        region += weight * (np.float32(value) - region) if np.isscalar(value) else weight * (value - region)

    def ellipsoid(self, center: np.ndarray, radii: np.ndarray, value: float, rotation: np.ndarray | None = None,
                  where: np.ndarray | None = None) -> None:
        """Paint an ellipsoid with semi-axes ``radii`` (mm) along the columns of ``rotation`` (identity if None)."""
        center, radii = np.asarray(center, np.float32), np.asarray(radii, np.float32)
        reach = float(radii.max()) + self.edge_mm
        found = self.box(center - reach, center + reach)
        if found is None:
            return
        slices, (x, y, z) = found
        d = (x - center[0], y - center[1], z - center[2])
        if rotation is None:
            rho2 = (d[0] / radii[0]) ** 2 + (d[1] / radii[1]) ** 2 + (d[2] / radii[2]) ** 2
        else:
            rho2 = sum(((d[0] * rotation[0, j] + d[1] * rotation[1, j] + d[2] * rotation[2, j]) / radii[j]) ** 2
                       for j in range(3))
        distance = (1.0 - np.sqrt(rho2)) * float(radii.min())
        self.paint(slices, np.clip(distance / self.edge_mm + 0.5, 0.0, 1.0), value, where)

    def tube(self, start: np.ndarray, end: np.ndarray, radius: float, value: float,
             where: np.ndarray | None = None, end_radius: float | None = None) -> None:
        """Paint a capsule from ``start`` to ``end`` (mm) whose radius goes linearly to ``end_radius``."""
        start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
        end_radius = radius if end_radius is None else end_radius
        reach = max(radius, end_radius) + self.edge_mm
        found = self.box(np.minimum(start, end) - reach, np.maximum(start, end) + reach)
        if found is None:
            return
        slices, (x, y, z) = found
        axis = end - start
        length2 = max(float(axis @ axis), 1e-6)
        t = np.clip(((x - start[0]) * axis[0] + (y - start[1]) * axis[1] + (z - start[2]) * axis[2]) / length2, 0, 1)
        dist = np.sqrt((x - start[0] - t * axis[0]) ** 2 + (y - start[1] - t * axis[1]) ** 2
                       + (z - start[2] - t * axis[2]) ** 2)
        local_radius = radius + (end_radius - radius) * t
        self.paint(slices, np.clip((local_radius - dist) / self.edge_mm + 0.5, 0.0, 1.0), value, where)
