"""read_cxr on pydicom-data's real PA chest radiograph (RG1) and on PNG/JPEG files written with Pillow."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.pixels import apply_voi_lut as pydicom_voi

from datasets.cxr import Radiograph, read_cxr
from datasets.errors import InputError, MissingDependencyError

RG1 = get_testdata_file("RG1_UNCR.dcm")
CR_STUB = next((Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033" / "CR1").iterdir())


@pytest.fixture(scope="module")
def rg1() -> Radiograph:
    return read_cxr(RG1)


def test_rg1_is_monochrome1_inverted_to_dark_lungs_and_bright_bones(rg1: Radiograph) -> None:
    ds = pydicom.dcmread(RG1)
    assert rg1.array.shape == (ds.Rows, ds.Columns) == (1955, 1841)  # display order, not transposed
    assert rg1.array.dtype == np.float32
    assert rg1.photometric == "MONOCHROME1"
    assert rg1.meta["inverted"] is True
    # 15-bit unsigned, no rescale: nominal range 0..32767, so inverted = 32767 - stored
    assert rg1.meta["value_range"] == (0.0, 32767.0)
    np.testing.assert_array_equal(rg1.array, 32767.0 - ds.pixel_array.astype(np.float32))
    left_lung = rg1.array[240:600, 360:640].mean()
    right_lung = rg1.array[240:600, 1160:1440].mean()
    spine_and_mediastinum = rg1.array[240:1000, 820:980].mean()
    assert spine_and_mediastinum > left_lung + 5000
    assert spine_and_mediastinum > right_lung + 5000
    # not flipped upside down: below the diaphragm (bottom rows) is brighter than the upper lung fields
    assert rg1.array[1500:1800, 300:700].mean() > left_lung + 5000


def test_rg1_zero_pixel_spacing_means_unknown(rg1: Radiograph) -> None:
    assert [float(v) for v in pydicom.dcmread(RG1, stop_before_pixels=True).PixelSpacing] == [0.0, 0.0]
    assert rg1.pixel_spacing is None
    assert rg1.meta["pixel_spacing_source"] is None
    assert (rg1.meta["modality"], rg1.meta["view_position"], rg1.meta["body_part"]) == ("CR", "PA", "CHEST")


def test_rg1_jpeg2000_equals_uncompressed(rg1: Radiograph) -> None:
    compressed = read_cxr(get_testdata_file("RG1_J2KR.dcm"))
    np.testing.assert_array_equal(compressed.array, rg1.array)
    assert compressed.meta["transfer_syntax"].startswith("JPEG 2000")


def test_voi_window_applied_only_on_request(rg1: Radiograph) -> None:
    ds = pydicom.dcmread(RG1)
    windowed = read_cxr(RG1, apply_voi_lut=True)
    expected = 32767.0 - pydicom_voi(ds.pixel_array, ds).astype(np.float32)
    np.testing.assert_allclose(windowed.array, expected, rtol=1e-6)
    assert windowed.meta["voi_applied"] == "window"
    assert rg1.meta["voi_applied"] is None
    assert not np.array_equal(windowed.array, rg1.array)


def test_imager_pixel_spacing_and_rescale_of_a_cr_file() -> None:
    ds = pydicom.dcmread(CR_STUB)
    xray = read_cxr(CR_STUB)
    assert xray.pixel_spacing == (0.1, 0.1)
    assert xray.meta["pixel_spacing_source"] == "ImagerPixelSpacing"
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    low, high = sorted((intercept, (2**12 - 1) * slope + intercept))
    assert xray.meta["value_range"] == pytest.approx((low, high))
    expected = (low + high) - apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(xray.array, expected, rtol=1e-6)


def _marker_image(dtype: type, high: int) -> np.ndarray:
    """(30, 50) dim image with a bright 6x6 marker at the top-left corner."""
    pixels = np.full((30, 50), high // 10, dtype=dtype)
    pixels[:6, :6] = high
    return pixels


@pytest.mark.parametrize(
    ("name", "dtype", "high", "mode"),
    [("cxr8.png", np.uint8, 255, "L"), ("cxr16.png", np.uint16, 65535, "I;16")],
)
def test_png_range_and_orientation(tmp_path: Path, name: str, dtype: type, high: int, mode: str) -> None:
    pixels = _marker_image(dtype, high)
    Image.fromarray(pixels).save(tmp_path / name)
    xray = read_cxr(tmp_path / name)
    assert xray.meta["pil_mode"] == mode
    assert xray.array.shape == (30, 50)
    np.testing.assert_array_equal(xray.array, pixels.astype(np.float32))
    assert xray.array[0, 0] == high and xray.array[-1, -1] == high // 10
    assert xray.meta["value_range"] == (0.0, float(high))
    assert xray.pixel_spacing is None
    assert xray.photometric == "MONOCHROME2"


def test_jpeg_range_and_orientation(tmp_path: Path) -> None:
    pixels = _marker_image(np.uint8, 255)
    Image.fromarray(pixels).save(tmp_path / "cxr.jpg", quality=95)
    xray = read_cxr(tmp_path / "cxr.jpg")
    assert xray.meta["format"] == "jpeg"
    assert xray.array.shape == (30, 50)
    assert xray.array[1:5, 1:5].mean() > 240
    assert abs(xray.array[20:, 20:].mean() - 25) < 3


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = _marker_image(np.uint8, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 3  # "rotate 180 degrees to display"
    image.save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    xray = read_cxr(tmp_path / "rotated.jpg")
    assert xray.array.shape == (30, 50)
    assert xray.array[-5:-1, -5:-1].mean() > 240  # the marker is shown at the bottom right


def test_colour_inputs_become_grey(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    grey = _marker_image(np.uint8, 255)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    xray = read_cxr(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(xray.array, grey.astype(np.float32))
    assert xray.photometric == "RGB" and xray.meta["converted_to_grey"] is True

    colour = np.zeros((4, 4, 3), dtype=np.uint8)
    colour[..., 0] = 200
    colour[..., 2] = 100
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with caplog.at_level(logging.WARNING, logger="datasets.cxr"):
        xray = read_cxr(tmp_path / "colour.png")
    np.testing.assert_allclose(xray.array, 0.299 * 200 + 0.114 * 100, rtol=1e-6)
    assert "BT.601" in caplog.text

    rgba = np.concatenate([np.stack([grey] * 3, axis=-1), np.full((30, 50, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="datasets.cxr"):
        xray = read_cxr(tmp_path / "rgba.png")
    np.testing.assert_array_equal(xray.array, grey.astype(np.float32))
    assert xray.meta["alpha_dropped"] is True
    assert "not fully opaque" in caplog.text


@pytest.mark.parametrize("kind", ["missing", "empty", "text_dcm", "text_png", "truncated_png", "folder"])
def test_bad_inputs_name_the_file(tmp_path: Path, kind: str) -> None:
    path = {
        "missing": tmp_path / "absent.png",
        "empty": tmp_path / "empty.dcm",
        "text_dcm": tmp_path / "report.dcm",
        "text_png": tmp_path / "report.png",
        "truncated_png": tmp_path / "cut.png",
        "folder": tmp_path,
    }[kind]
    if kind == "empty":
        path.touch()
    elif kind.startswith("text"):
        path.write_text("Findings: no acute cardiopulmonary abnormality.\n" * 10)
    elif kind == "truncated_png":
        noise = np.random.default_rng(0).integers(0, 256, (30, 50), dtype=np.uint8)  # incompressible: long data
        Image.fromarray(noise).save(path)
        path.write_bytes(path.read_bytes()[:800])
    with pytest.raises(InputError) as info:
        read_cxr(path)
    assert str(path) in str(info.value)


def test_truncated_dicom_names_the_file() -> None:
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(InputError, match="pixel data could not be decoded") as info:
        read_cxr(path)
    assert path in str(info.value)


def test_jpeg_lossless_dicom_decodes_or_names_what_to_install() -> None:
    """Decoded when pydicom has a decoder for the file's transfer syntax, else refused naming what to install."""
    path = get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(ts).is_available:
        ds = pydicom.dcmread(path)
        xray = read_cxr(path)
        assert xray.photometric == "MONOCHROME2" and xray.array.shape == (768, 1024)
        np.testing.assert_array_equal(xray.array, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
        return
    with pytest.raises(MissingDependencyError) as info:
        read_cxr(path)
    message = str(info.value)
    assert path in message and "JPEG Lossless" in message and "1.2.840.10008.1.2.4.70" in message
    assert "pylibjpeg-libjpeg" in message and "GPL-3.0" in message and "python-gdcm" in message
