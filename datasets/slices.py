"""2D slice preprocessing for referring segmentation: display orientation, HU window, resize, and its exact inverse.

Model inputs must not depend on how a file stores its axes. A CT slice arrives as an array ``(X, Y)`` (MONAI's
convention: axis 0 = image columns, axis 1 = rows, as returned by :func:`datasets.ct.extract_slice`) plus its 4x4
voxel-to-RAS affine. :class:`DisplayOrientation` derives from that affine (never from the array layout) the
transpose and flips that bring the slice to the radiological display convention, rows first ``(H, W)``:

* image top = patient anterior (row index grows towards posterior),
* image left = patient RIGHT (column index grows towards patient left).

A slice stored RAS, LPS or transposed therefore gives the same model input, and :func:`restore_slice` maps a
predicted mask back onto the input's own array layout.

:class:`SlicePreprocessing` is the complete, JSON-serialisable preprocessing configuration; it is saved next to a
trained model so that inference cannot drift from training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datasets.errors import InputError

__all__ = [
    "LIVER_WINDOW",
    "DisplayOrientation",
    "SliceGeometry",
    "SlicePreprocessing",
    "prepare_slice_stack",
    "prepare_2d_image",
    "prepare_mask",
    "restore_slice",
    "preprocess_volume_slice",
]

LIVER_WINDOW = (-160.0, 240.0)
"""Default HU window: level 40, width 400, the abdominal soft-tissue window. It keeps liver parenchyma (about 50-110 HU
across phases), hypodense lesions and cysts (about 0-40 HU) and enhancing hyperdense lesions (up to about 200 HU) on
the linear part of the ramp, while fat (about -100 HU) stays distinguishable from air."""


@dataclass(frozen=True)
class SlicePreprocessing:
    """Deterministic preprocessing of one referring-segmentation sample; stored with every trained model.

    Args:
        window: HU range ``(low, high)``; CT values are clipped to it and scaled linearly to ``[0, 1]``. Not used for
            PNG inputs, which are display images already (their 8/16-bit range is scaled to ``[0, 1]``).
            Defaults to ``(-160.0, 240.0)`` (:data:`LIVER_WINDOW`).
        image_size: side of the square model input. The display-oriented slice is zero-padded to a square (centred)
            and resized to ``image_size x image_size``, so the whole field of view is kept and pixels keep their
            aspect ratio; images are resized bilinearly (antialiased when shrinking), masks by area coverage (see
            :func:`prepare_mask`). Defaults to 128.
        context_slices: neighbouring slices stacked as extra channels on each side (``C = 2 * k + 1``), ordered from
            patient inferior to superior whatever the storage order, clamped at the volume ends. 2D inputs repeat
            their single slice. Defaults to 0 (one channel).
        already_hu: passed to :func:`datasets.ct.read_ct`: the stored values are already Hounsfield units.
            Defaults to False.

    Example::

        pre = SlicePreprocessing(window=(-160.0, 240.0), image_size=128, context_slices=1)
        SlicePreprocessing.from_dict(pre.to_dict()) == pre  # True
    """

    window: tuple[float, float] = LIVER_WINDOW
    image_size: int = 128
    context_slices: int = 0
    already_hu: bool = False

    def __post_init__(self) -> None:
        if len(self.window) != 2:
            raise InputError(f"window must be two HU values (low, high), got {self.window!r}")
        low, high = (float(value) for value in self.window)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InputError(f"window must satisfy low < high with finite values, got {self.window!r}")
        object.__setattr__(self, "window", (low, high))
        if int(self.image_size) != self.image_size or self.image_size < 8:
            raise InputError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        if int(self.context_slices) != self.context_slices or self.context_slices < 0:
            raise InputError(f"context_slices must be an integer >= 0, got {self.context_slices!r}")

    @property
    def channels(self) -> int:
        """Number of image channels ``C = 2 * context_slices + 1``."""
        return 2 * self.context_slices + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (the window as a list)."""
        data = asdict(self)
        data["window"] = list(self.window)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlicePreprocessing:
        """Inverse of :meth:`to_dict`; unknown keys are an error, so a newer config is never silently misread."""
        unknown = set(data) - {"window", "image_size", "context_slices", "already_hu"}
        if unknown:
            raise InputError(f"unknown slice preprocessing keys {sorted(unknown)}")
        values = dict(data)
        if "window" in values:
            values["window"] = tuple(values["window"])
        return cls(**values)


@dataclass(frozen=True)
class DisplayOrientation:
    """Transpose and flips taking a stored slice ``(X, Y)`` to display ``(H, W)`` (rows = anterior to posterior,
    columns = patient right to left).

    Args:
        transpose: swap the two array axes first (array axis 1 runs left-right in the patient).
        flip_rows: then reverse the rows (the stored row direction points anterior).
        flip_cols: then reverse the columns (the stored column direction points to the patient's right).
    """

    transpose: bool
    flip_rows: bool
    flip_cols: bool

    @classmethod
    def from_affine(cls, affine: np.ndarray, source: str = "slice") -> DisplayOrientation:
        """Derive the orientation from a 4x4 voxel-to-RAS affine whose first two columns span the slice.

        Raises:
            InputError: the slice is not axial (an in-plane axis points mostly superior-inferior), or both in-plane
                axes point mostly along the same patient axis.
        """
        matrix = np.asarray(affine, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise InputError(f"{source}: expected a finite 4x4 affine, got shape {matrix.shape}")
        directions = matrix[:3, :2]  # column i = RAS direction of array axis i
        dominant = [int(np.argmax(np.abs(directions[:, axis]))) for axis in range(2)]
        if sorted(dominant) != [0, 1]:
            raise InputError(
                f"{source}: the slice is not axial (array axes 0/1 point mostly along RAS axes {dominant}, expected "
                "right-left and anterior-posterior); slice_index must index the superior-inferior axis"
            )
        # Display wants rows along the anterior-posterior axis (RAS axis 1) and columns along right-left (RAS axis 0).
        row_axis = dominant.index(1)
        col_axis = dominant.index(0)
        # Row index grows towards posterior (RAS y decreasing); column index towards patient left (RAS x decreasing).
        return cls(
            transpose=row_axis == 1,
            flip_rows=bool(directions[1, row_axis] > 0),
            flip_cols=bool(directions[0, col_axis] > 0),
        )

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Stored ``(X, Y, ...)`` to display ``(H, W, ...)``."""
        out = np.swapaxes(array, 0, 1) if self.transpose else array
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Display ``(H, W, ...)`` back to stored ``(X, Y, ...)``; exact inverse of :meth:`apply`."""
        out = array
        if self.flip_cols:
            out = out[:, ::-1]
        if self.flip_rows:
            out = out[::-1]
        if self.transpose:
            out = np.swapaxes(out, 0, 1)
        return np.ascontiguousarray(out)


@dataclass(frozen=True)
class SliceGeometry:
    """Everything needed to map a model-resolution output back onto the input slice's array.

    Args:
        orientation: stored-to-display transform.
        stored_shape: shape of the input slice as stored (``(X, Y)`` for CT, ``(H, W)`` for PNG/NPY).
        display_shape: ``(H, W)`` after orientation, before padding.
        pad: zero padding ``(top, bottom, left, right)`` that made the display slice square.
        image_size: side of the model input.
    """

    orientation: DisplayOrientation
    stored_shape: tuple[int, int]
    display_shape: tuple[int, int]
    pad: tuple[int, int, int, int]
    image_size: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        return {
            "orientation": asdict(self.orientation),
            "stored_shape": list(self.stored_shape),
            "display_shape": list(self.display_shape),
            "pad": list(self.pad),
            "image_size": self.image_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliceGeometry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            orientation=DisplayOrientation(**data["orientation"]),
            stored_shape=tuple(data["stored_shape"]),
            display_shape=tuple(data["display_shape"]),
            pad=tuple(data["pad"]),
            image_size=int(data["image_size"]),
        )

    @property
    def padded_size(self) -> int:
        return max(self.display_shape)


def _geometry(orientation: DisplayOrientation, stored_shape: tuple[int, int], image_size: int) -> SliceGeometry:
    display = (stored_shape[1], stored_shape[0]) if orientation.transpose else tuple(stored_shape)
    side = max(display)
    rows, cols = side - display[0], side - display[1]
    pad = (rows // 2, rows - rows // 2, cols // 2, cols - cols // 2)
    return SliceGeometry(orientation, tuple(int(s) for s in stored_shape), display, pad, int(image_size))


def _pad_square(array: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Zero-pad display ``(C, H, W)`` to ``(C, side, side)``."""
    top, bottom, left, right = geometry.pad
    return np.pad(array, ((0, 0), (top, bottom), (left, right)))


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize ``(C, H, W)`` float32 to ``(C, size, size)``."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if mode == "bilinear":
        shrinking = tensor.shape[-1] > size
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
    elif mode == "area":
        out = F.interpolate(tensor, size=(size, size), mode="area")
    else:
        out = F.interpolate(tensor, size=(size, size), mode="nearest-exact")
    return out[0].numpy()


def prepare_slice_stack(
    slices: Sequence[np.ndarray], affine: np.ndarray, preprocessing: SlicePreprocessing, source: str = "slice"
) -> tuple[np.ndarray, SliceGeometry]:
    """Orient, window, pad and resize stored CT slices (HU) into one model input.

    Args:
        slices: ``C`` arrays ``(X, Y)`` in HU, already in channel order (inferior to superior).
        affine: 4x4 voxel-to-RAS affine of the slices (all share their in-plane geometry).
        preprocessing: the configuration.
        source: name used in error messages (file and row).

    Returns:
        The image ``(C, image_size, image_size)`` float32 in ``[0, 1]`` and the geometry to invert it.
    """
    orientation = DisplayOrientation.from_affine(affine, source)
    stored_shape = tuple(np.asarray(slices[0]).shape)
    if len(stored_shape) != 2 or any(np.asarray(s).shape != stored_shape for s in slices):
        raise InputError(f"{source}: expected 2D slices of one shape, got {[np.asarray(s).shape for s in slices]}")
    geometry = _geometry(orientation, stored_shape, preprocessing.image_size)
    low, high = preprocessing.window
    stack = np.stack([orientation.apply(np.asarray(s, dtype=np.float32)) for s in slices])  # (C, H, W)
    if not np.isfinite(stack).all():
        raise InputError(f"{source}: the slice holds NaN/inf values; expected finite HU")
    stack = (np.clip(stack, low, high) - low) / (high - low)
    image = np.clip(_resize(_pad_square(stack, geometry), preprocessing.image_size, "bilinear"), 0.0, 1.0)
    return image.astype(np.float32), geometry


def prepare_2d_image(
    array: np.ndarray, preprocessing: SlicePreprocessing, *, is_hu: bool, source: str = "image"
) -> tuple[np.ndarray, SliceGeometry]:
    """Preprocess a 2D image already in display orientation (PNG or NPY, rows first ``(H, W)``).

    Args:
        array: ``(H, W)`` values: HU when ``is_hu`` (windowed like CT), otherwise display intensities in ``[0, 1]``.
        preprocessing: the configuration; its single slice is repeated ``C`` times.
        is_hu: whether the values are Hounsfield units.
        source: name used in error messages.

    Returns:
        The image ``(C, image_size, image_size)`` float32 in ``[0, 1]`` and the geometry to invert it.
    """
    plane = np.asarray(array, dtype=np.float32)
    if plane.ndim != 2:
        raise InputError(f"{source}: expected a 2D image (H, W), got shape {plane.shape}")
    if not np.isfinite(plane).all():
        raise InputError(f"{source}: the image holds NaN/inf values")
    if is_hu:
        low, high = preprocessing.window
        plane = (np.clip(plane, low, high) - low) / (high - low)
    identity = DisplayOrientation(transpose=False, flip_rows=False, flip_cols=False)
    geometry = _geometry(identity, plane.shape, preprocessing.image_size)
    stack = np.repeat(plane[None], preprocessing.channels, axis=0)
    image = np.clip(_resize(_pad_square(stack, geometry), preprocessing.image_size, "bilinear"), 0.0, 1.0)
    return image.astype(np.float32), geometry


def prepare_mask(mask: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Bring a stored binary mask slice to the model grid, keeping a present lesion non-empty.

    The mask is oriented and padded like the image, then resampled by *area coverage*: an output pixel is foreground
    when at least half of its footprint is foreground. A lesion smaller than half an output pixel would vanish that
    way, so if the input has foreground but the result is empty, the output pixels with the largest coverage are set
    instead. Nearest-neighbour sampling is not used because it can drop small lesions or keep them depending on the
    sampling phase.

    Args:
        mask: stored ``(X, Y)`` (or ``(H, W)`` for 2D inputs) array; non-zero = foreground.
        geometry: from the matching image.

    Returns:
        ``(1, image_size, image_size)`` float32 in ``{0, 1}``.
    """
    binary = np.asarray(mask) != 0
    if binary.shape != geometry.stored_shape:
        raise InputError(f"mask slice shape {binary.shape} does not match the image slice {geometry.stored_shape}")
    display = geometry.orientation.apply(binary.astype(np.float32))[None]
    coverage = _resize(_pad_square(display, geometry), geometry.image_size, "area")
    out = coverage >= 0.5
    if binary.any() and not out.any():
        out = coverage >= coverage.max()
    return out.astype(np.float32)


def restore_slice(array: np.ndarray, geometry: SliceGeometry, mode: str = "nearest") -> np.ndarray:
    """Map a model-grid output back onto the input slice's stored array layout.

    Args:
        array: ``(image_size, image_size)`` or ``(1, image_size, image_size)`` mask or probability map.
        geometry: from the preprocessing of that input.
        mode: ``"nearest"`` for label masks, ``"bilinear"`` for probabilities. Defaults to ``"nearest"``.

    Returns:
        float32 array of shape ``geometry.stored_shape``, aligned voxel by voxel with the input slice.
    """
    if mode not in ("nearest", "bilinear"):
        raise InputError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    plane = np.asarray(array, dtype=np.float32)
    if plane.ndim == 3 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.shape != (geometry.image_size, geometry.image_size):
        raise InputError(f"expected a {geometry.image_size}x{geometry.image_size} array, got shape {plane.shape}")
    padded = _resize(plane[None], geometry.padded_size, mode)[0]
    top, _, left, _ = geometry.pad
    rows, cols = geometry.display_shape
    return geometry.orientation.invert(padded[top : top + rows, left : left + cols]).astype(np.float32)


def preprocess_volume_slice(
    volume: Any, index: int, preprocessing: SlicePreprocessing
) -> tuple[np.ndarray, SliceGeometry]:
    """Model input for slice ``index`` (along stored array axis 2) of a :class:`datasets.ct.CTVolume`.

    Args:
        volume: a ``CTVolume`` (``array`` ``(X, Y, Z)`` in HU, ``affine`` voxel-to-RAS).
        index: slice index along array axis 2.
        preprocessing: the configuration; ``context_slices`` neighbours are clamped at the volume ends.

    Returns:
        The image ``(C, image_size, image_size)`` float32 in ``[0, 1]`` and its geometry.

    Raises:
        InputError: the index is out of range or the slice is not axial.
    """
    from datasets.ct import extract_slice

    centre = extract_slice(volume, index)
    depth = int(volume.array.shape[2])
    k = preprocessing.context_slices
    indices = [min(max(index + offset, 0), depth - 1) for offset in range(-k, k + 1)]
    if np.asarray(volume.affine)[2, 2] < 0:  # array axis 2 runs superior -> inferior: keep channels inferior first
        indices.reverse()
    slices = [centre.array if i == index else extract_slice(volume, i).array for i in indices]
    return prepare_slice_stack(slices, centre.affine, preprocessing, source=f"{volume.source} slice {index}")
