"""DICOM helpers shared by the CT and chest X-ray readers: safe file opening and decoder checks.

Every failure caused by the file (missing, empty, not DICOM, truncated pixel data) becomes an
:class:`~datasets.errors.InputError` naming the file and the reason. A compressed transfer syntax that none of the
installed pixel decoders handles becomes a :class:`~datasets.errors.MissingDependencyError` that says what to install.

Decoder support in pydicom 3 (checked at run time through pydicom's decoder registry, so the message always matches
the environment):

* uncompressed, deflated and RLE Lossless: pydicom itself;
* JPEG Baseline / Extended (8 and 12 bit): Pillow (a core dependency);
* JPEG 2000 and High-Throughput JPEG 2000: ``pylibjpeg`` + ``pylibjpeg-openjpeg`` (the ``medvl[dicom]`` extra;
  Pillow also decodes classic JPEG 2000);
* JPEG Lossless (Process 14, the common lossless PACS export) and JPEG-LS: only ``pylibjpeg-libjpeg`` (GPL-3.0,
  which medvl does not install for you) or ``python-gdcm``; JPEG-LS also ``pyjpegls``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from datasets.errors import InputError, MissingDependencyError

__all__ = ["DicomDecoderMissingError", "read_dataset", "require_decoder", "pixel_error", "check_single_frame"]

logger = logging.getLogger(__name__)

_JPEG_LOSSLESS = {JPEGLossless, JPEGLosslessSV1}
_JPEG_LS = {JPEGLSLossless, JPEGLSNearLossless}


class DicomDecoderMissingError(MissingDependencyError):
    """No installed decoder handles a file's compressed transfer syntax, and no medvl extra provides one.

    Raised for JPEG Lossless and JPEG-LS, whose decoders are either GPL-licensed (``pylibjpeg-libjpeg``) or not on
    medvl's dependency list (``python-gdcm``, ``pyjpegls``): the message names the packages to install by hand.

    Attributes:
        extra: always ``None`` (no medvl extra installs these decoders).
        package: the first package named in the message.
    """

    def __init__(self, message: str, package: str) -> None:
        super(MissingDependencyError, self).__init__(message)
        self.extra = None
        self.package = package


def read_dataset(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Open one DICOM file with pydicom, turning every file problem into an :class:`InputError`.

    Files without the 128-byte preamble and ``DICM`` prefix (old ACR-NEMA style exports) are retried with
    ``force=True`` and accepted only if they then hold image attributes (``Rows`` and pixel data).

    Args:
        path: the file.
        stop_before_pixels: read the header only. Defaults to False.

    Returns:
        The pydicom dataset.

    Raises:
        InputError: the file is missing, empty, a folder, or not readable as DICOM.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a folder, expected a DICOM file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes), expected a DICOM file")
    try:
        return dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass
    except Exception as err:  # pydicom raises many types (EOFError, struct.error, ValueError) on damaged headers
        raise InputError(f"{path} could not be parsed as DICOM (damaged or truncated header): {_short(err)}") from err
    try:
        ds = dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    except Exception as err:
        raise InputError(f"{path} is not a DICOM file (no 'DICM' marker and not parseable): {_short(err)}") from err
    if "Rows" not in ds or (not stop_before_pixels and "PixelData" not in ds):
        raise InputError(f"{path} is not a DICOM image file (no 'DICM' marker, no image attributes)")
    return ds


def require_decoder(ds: Dataset, path: Path) -> None:
    """Check that an installed decoder handles the dataset's transfer syntax, before decoding starts.

    Args:
        ds: the dataset (header is enough).
        path: the file, for messages.

    Raises:
        InputError: the dataset has no pixel data, or uses a transfer syntax pydicom does not know.
        MissingDependencyError: JPEG 2000 / HTJ2K without ``pylibjpeg-openjpeg`` (extra ``dicom``).
        DicomDecoderMissingError: JPEG Lossless, JPEG-LS or 12-bit JPEG Extended without a decoder (packages named in
            the message).
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        kind = f" ({UID(sop).name})" if sop else ""
        raise InputError(f"{path} holds no pixel data{kind}, expected a DICOM image")
    ts = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as err:
        raise InputError(f"{path} uses transfer syntax {ts} ({ts.name}), which pydicom cannot decode") from err
    # Pillow decodes JPEG Extended only at 8 bits; 12-bit data (common in older CT/CR archives) needs another plugin
    bits = int(ds.get("BitsStored", 8) or 8)
    pillow_only_12_bit = ts == JPEGExtended12Bit and bits > 8 and set(decoder.available_plugins) <= {"pillow"}
    if decoder.is_available and not pillow_only_12_bit:
        return
    what = f"{path} is compressed with {ts.name} ({ts})" + (f" at {bits} bits" if pillow_only_12_bit else "")
    if ts in _JPEG_LOSSLESS or ts in _JPEG_LS or pillow_only_12_bit:
        options = "`pip install pylibjpeg pylibjpeg-libjpeg` (GPL-3.0 licence, so medvl does not install it) or " \
            "`pip install python-gdcm`"
        if ts in _JPEG_LS:
            options += " or `pip install pyjpegls`"
        installed = " (Pillow, installed, decodes it only at 8 bits)" if pillow_only_12_bit else ""
        raise DicomDecoderMissingError(
            f"{what}, which no installed decoder handles{installed}; install one yourself: {options}",
            package="pylibjpeg-libjpeg",
        )
    if ts.is_compressed and "JPEG 2000" in ts.name:
        raise MissingDependencyError(f"decoding {what}", extra="dicom", package="pylibjpeg-openjpeg")
    missing = "; ".join(decoder.missing_dependencies) or "no plugin registered"
    raise DicomDecoderMissingError(f"{what}, which no installed decoder handles ({missing})", package=missing)


def check_single_frame(ds: Dataset, path: Path) -> None:
    """Raise :class:`InputError` for multi-frame files, which the 2D/series readers do not interpret."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(
            f"{path} is a multi-frame DICOM ({frames} frames, {UID(ds.get('SOPClassUID', '')).name or 'unknown SOP'}); "
            "expected a single-frame image (one file per slice). Convert it, e.g. with dcm2niix, and read the NIfTI"
        )


def pixel_error(path: Path, err: Exception) -> InputError:
    """The :class:`InputError` for pixel data that failed to decode (truncated, corrupt, inconsistent header)."""
    return InputError(f"{path}: pixel data could not be decoded (truncated or corrupt file?): {_short(err)}")


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__
