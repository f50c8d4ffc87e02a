"""Read chest radiographs (DICOM CR/DX, PNG, JPEG) as display-ordered greyscale arrays.

Array convention: **display order**, unlike CT (:mod:`datasets.ct` uses MONAI's transposed (x, y) order).
``array[row, column]`` with row 0 at the top of the image as a viewer shows it, and higher values brighter: MONOCHROME1
DICOMs (where higher means darker) are inverted. Transpose (``array.T``) to get MONAI's (x, y) order.

Values:

* DICOM: the Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence) is always applied. The VOI
  LUT is applied only with ``apply_voi_lut=True`` (default False, so no display window clips the data): a VOI LUT
  Sequence if present, else the first ``WindowCenter``/``WindowWidth`` (with ``VOILUTFunction``), through pydicom's
  ``apply_voi_lut``; without either the option logs a warning and changes nothing. MONOCHROME1 images are inverted
  within their nominal value range ``(low, high)``: ``low + high - value``, where the range is that of the stored bits
  after the Modality LUT (or of the VOI LUT's output bits), so the inversion does not depend on image content.
* PNG/JPEG: the stored values (0..255 for 8 bit, 0..65535 for 16 bit), as float32; ``apply_voi_lut`` has no effect
  (the file is already display values). EXIF orientation is applied, so the array matches what a viewer shows.
* Colour input (RGB, RGBA, palette; also colour DICOM) is converted to grey: when the three channels are equal (a grey
  image saved as RGB) the first channel is taken as is, otherwise ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``,
  with a logged warning. An alpha channel is dropped (warning when it is not fully opaque).

Pixel data from DICOM is decoded by pydicom directly rather than MONAI's ``PydicomReader``, because the latter
transposes, applies only ``RescaleSlope``/``RescaleIntercept`` (not a Modality LUT Sequence) and has no VOI LUT.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.misc import is_dicom
from pydicom.pixels import apply_modality_lut
from pydicom.pixels import apply_voi_lut as pydicom_apply_voi_lut

from datasets.dicom import check_single_frame, pixel_error, read_dataset, require_decoder
from datasets.errors import InputError

__all__ = ["Radiograph", "read_cxr"]

logger = logging.getLogger(__name__)

_DICOM_SUFFIXES = (".dcm", ".dicom")
_BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass
class Radiograph:
    """A projection radiograph in display order.

    Attributes:
        array: (H, W) float32, row 0 at the top, higher = brighter.
        pixel_spacing: (row spacing, column spacing) in mm, i.e. the distance between adjacent rows and between
            adjacent columns, from ``PixelSpacing`` or else ``ImagerPixelSpacing``; None when unknown (PNG/JPEG, or a
            missing or zero value).
        photometric: the input's photometric interpretation, e.g. "MONOCHROME1", "MONOCHROME2", "RGB", "RGBA",
            "PALETTE COLOR" (PNG/JPEG greyscale is reported as "MONOCHROME2").
        source: the path that was read.
        meta: plain-Python metadata: ``format`` ("dicom", "png", "jpeg", ...), ``inverted``, ``voi_applied``,
            ``value_range`` (nominal (low, high) of ``array``), ``converted_to_grey``, ``alpha_dropped``, and for DICOM
            ``modality``, ``view_position``, ``body_part``, ``pixel_spacing_source``, ``transfer_syntax``.
    """

    array: np.ndarray
    pixel_spacing: tuple[float, float] | None
    photometric: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def read_cxr(path: str | os.PathLike, *, apply_voi_lut: bool = False) -> Radiograph:
    """Read a chest radiograph from DICOM (uncompressed, JPEG, JPEG 2000, RLE), PNG (8/16 bit) or JPEG (8 bit).

    Args:
        path: the image file. DICOM is recognised by a ``.dcm``/``.dicom`` suffix or by its ``DICM`` marker.
        apply_voi_lut: apply the DICOM VOI LUT / window (see the module docstring). Defaults to False.

    Returns:
        The :class:`Radiograph` with a (H, W) float32 array.

    Raises:
        InputError: missing, empty, truncated or unreadable file, multi-frame DICOM, or a non-image; the message names
            the file.
        MissingDependencyError: the DICOM compression has no installed decoder (the message says what to install).

    Example::

        xray = read_cxr("RG1_UNCR.dcm")
        xray.array.shape        # (1955, 1841): (H, W), lungs dark, bones bright
    """
    source = Path(path)
    if not source.exists():
        raise InputError(f"{source}: no such file")
    if source.is_dir():
        raise InputError(f"{source} is a folder, expected a radiograph file (DICOM, PNG or JPEG)")
    if source.stat().st_size == 0:
        raise InputError(f"{source} is empty (0 bytes), expected a radiograph file (DICOM, PNG or JPEG)")
    if source.suffix.lower() in _DICOM_SUFFIXES or is_dicom(source):
        return _read_dicom(source, apply_voi_lut=apply_voi_lut)
    if apply_voi_lut:
        logger.info("%s: apply_voi_lut has no effect on PNG/JPEG files (they hold display values)", source)
    return _read_bitmap(source)


def _read_dicom(path: Path, *, apply_voi_lut: bool) -> Radiograph:
    ds = read_dataset(path)
    check_single_frame(ds, path)
    require_decoder(ds, path)
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom's decoders raise ValueError/RuntimeError/struct.error on damaged data
        raise pixel_error(path, err) from err
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    meta: dict[str, Any] = {"format": "dicom", "converted_to_grey": False, "alpha_dropped": False}
    if stored.ndim == 3:  # colour: pydicom already converted YBR to RGB
        stored = _to_grey(stored, path, photometric, meta)
        values, value_range = stored, (0.0, float(2 ** int(ds.BitsStored) - 1))
    else:
        values = apply_modality_lut(stored, ds)
        value_range = _modality_range(ds)
    voi = _voi_kind(ds) if apply_voi_lut else None
    if apply_voi_lut and voi is None:
        logger.warning("%s: apply_voi_lut=True but the file has no VOI LUT or window; values left unchanged", path)
    if voi is not None:
        values = pydicom_apply_voi_lut(values, ds)
        value_range = _rescaled_stored_range(ds) if voi == "window" else _lut_range(ds.VOILUTSequence)
    values = np.asarray(values, dtype=np.float32)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        values = np.float32(value_range[0] + value_range[1]) - values
    spacing, spacing_source = _pixel_spacing(ds)
    meta.update(
        {
            "inverted": inverted,
            "voi_applied": voi,
            "value_range": value_range,
            "modality": str(ds.get("Modality", "")) or None,
            "view_position": str(ds.get("ViewPosition", "")) or None,
            "body_part": str(ds.get("BodyPartExamined", "")) or None,
            "pixel_spacing_source": spacing_source,
            "transfer_syntax": ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2").name,
        }
    )
    return Radiograph(array=values, pixel_spacing=spacing, photometric=photometric, source=str(path), meta=meta)


def _read_bitmap(path: Path) -> Radiograph:
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            file_format = (opened.format or path.suffix.lstrip(".")).lower()
    except UnidentifiedImageError as err:
        raise InputError(f"{path} is not a DICOM, PNG or JPEG image (unrecognised content)") from err
    except (OSError, SyntaxError, ValueError) as err:  # Pillow reports truncated/corrupt data this way
        raise InputError(f"{path}: image data could not be decoded (truncated or corrupt?): {err}") from err
    meta: dict[str, Any] = {
        "format": file_format,
        "inverted": False,
        "voi_applied": None,
        "converted_to_grey": False,
        "alpha_dropped": False,
        "pil_mode": image.mode,
    }
    mode = image.mode
    if mode in ("1", "L", "I;16", "I;16B", "I;16L", "I", "F"):
        photometric = "MONOCHROME2"
        values = np.asarray(image.convert("L") if mode == "1" else image)
    elif mode == "LA":
        photometric = "MONOCHROME2"
        values = _drop_alpha(np.asarray(image), path, meta)[..., 0]
    else:
        photometric = {"P": "PALETTE COLOR", "PA": "PALETTE COLOR"}.get(mode, mode)
        rgb = np.asarray(image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB"))
        if rgb.shape[-1] == 4:
            rgb = _drop_alpha(rgb, path, meta)
        values = _to_grey(rgb, path, photometric, meta)
    bits = 16 if values.dtype == np.uint16 or mode.startswith("I;16") else 8 if values.dtype == np.uint8 else None
    meta["value_range"] = (0.0, float(2**bits - 1)) if bits else (float(values.min()), float(values.max()))
    return Radiograph(
        array=np.asarray(values, dtype=np.float32), pixel_spacing=None, photometric=photometric, source=str(path),
        meta=meta,
    )


def _drop_alpha(pixels: np.ndarray, path: Path, meta: dict[str, Any]) -> np.ndarray:
    alpha = pixels[..., -1]
    opaque = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
    if np.any(alpha != opaque):
        logger.warning("%s: alpha channel is not fully opaque; it is dropped (transparency ignored)", path)
    else:
        logger.info("%s: dropped an all-opaque alpha channel", path)
    meta["alpha_dropped"] = True
    return pixels[..., :-1]


def _to_grey(rgb: np.ndarray, path: Path, photometric: str, meta: dict[str, Any]) -> np.ndarray:
    """(H, W, 3) colour -> (H, W) grey: an exact channel when R == G == B, else BT.601 luma."""
    meta["converted_to_grey"] = True
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        logger.info("%s: %s image with equal channels, read as greyscale", path, photometric)
        return rgb[..., 0]
    logger.warning("%s: colour %s image converted to grey with BT.601 luma (0.299 R + 0.587 G + 0.114 B)",
                   path, photometric)
    return (rgb.astype(np.float64) @ _BT601).astype(np.float32)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _modality_range(ds: Dataset) -> tuple[float, float]:
    """Nominal value range after the Modality LUT."""
    if "ModalityLUTSequence" in ds:
        return _lut_range(ds.ModalityLUTSequence)
    return _rescaled_stored_range(ds)


def _lut_range(sequence: Any) -> tuple[float, float]:
    """Output range of a LUT: 0 .. 2**bits - 1, with bits from the first item's LUTDescriptor."""
    return 0.0, float(2 ** int(sequence[0].LUTDescriptor[2]) - 1)


def _rescaled_stored_range(ds: Dataset) -> tuple[float, float]:
    """Stored range, rescaled when RescaleSlope is present: pydicom's output range for windowing too."""
    low, high = _stored_range(ds)
    if "RescaleSlope" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.get("RescaleIntercept", 0.0))
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high


def _voi_kind(ds: Dataset) -> str | None:
    if "VOILUTSequence" in ds:
        return "lut"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return "window"
    return None


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None or len(value) != 2:
            continue
        row, column = float(value[0]), float(value[1])
        if row > 0 and column > 0 and np.isfinite([row, column]).all():
            return (row, column), keyword
    return None, None
