"""read_ct / extract_slice on real DICOM and NIfTI files shipped in pydicom, pydicom-data, and nibabel."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path as nibabel_data
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_rescale
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGExtended12Bit

from datasets.ct import CTVolume, extract_slice, read_ct
from datasets.errors import InputError, MissingDependencyError

DICOMDIR_TESTS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
CT2 = DICOMDIR_TESTS / "77654033" / "CT2"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"
SCOUTS = DICOMDIR_TESTS / "98892001" / "CT2N"
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def _hu(path: str | Path) -> np.ndarray:
    """pydicom's own HU for a file, in pydicom's (rows, columns) order."""
    ds = pydicom.dcmread(path)
    return apply_rescale(ds.pixel_array, ds)


def _position(path: Path) -> float:
    return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm", "explicit_VR-UN.dcm"])
def test_single_dicom_gives_pydicom_hu_transposed(name: str) -> None:
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    volume = read_ct(path)

    assert isinstance(volume, CTVolume)
    assert volume.array.dtype == np.float32
    assert volume.array.shape == (ds.Columns, ds.Rows, 1)
    np.testing.assert_array_equal(volume.array[:, :, 0], _hu(path).T)
    np.testing.assert_array_equal(volume.array[:, :, 0], apply_modality_lut(ds.pixel_array, ds).T)
    assert volume.spacing[:2] == pytest.approx((float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])))
    assert volume.meta["rescale_applied"] is True
    assert volume.meta["rescale_intercept"] == float(ds.RescaleIntercept)
    assert volume.meta["modality"] == "CT"
    # voxel (0, 0, 0) sits at ImagePositionPatient, converted from LPS to RAS
    np.testing.assert_allclose(volume.affine[:3, 3], LPS_TO_RAS * np.asarray(ds.ImagePositionPatient, float))


def test_ct_small_values_and_slice_thickness() -> None:
    volume = read_ct(get_testdata_file("CT_small.dcm"))
    assert (volume.array.min(), volume.array.max()) == (-896.0, 1167.0)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert volume.meta["orientation"] == "LPS"
    assert volume.meta["hu_plausible"] is True


def test_already_hu_skips_the_rescale() -> None:
    path = get_testdata_file("CT_small.dcm")
    stored = pydicom.dcmread(path).pixel_array
    volume = read_ct(path, already_hu=True)
    np.testing.assert_array_equal(volume.array[:, :, 0], stored.T.astype(np.float32))
    assert volume.meta["rescale_applied"] is False
    assert volume.meta["already_hu"] is True
    # the default applies the intercept exactly once: default minus already_hu is the intercept everywhere
    np.testing.assert_array_equal(read_ct(path).array - volume.array, -1024.0)


def test_jpeg2000_ct_equals_uncompressed() -> None:
    lossless = read_ct(get_testdata_file("693_J2KR.dcm"))
    plain = read_ct(get_testdata_file("693_UNCR.dcm"))
    np.testing.assert_array_equal(lossless.array, plain.array)
    np.testing.assert_array_equal(lossless.affine, plain.affine)
    assert lossless.meta["transfer_syntax"].startswith("JPEG 2000")


def test_series_sorted_by_position_matches_simpleitk() -> None:
    volume = read_ct(CT5N)
    files = [Path(name) for name in volume.meta["files"]]
    assert volume.array.shape == (16, 16, 5)
    assert volume.meta["format"] == "dicom-series"
    # InstanceNumber rises while z falls in this series: position order is the reverse of instance order
    assert volume.meta["slice_positions"] == sorted(volume.meta["slice_positions"])
    assert [_position(f) for f in files] == pytest.approx(volume.meta["slice_positions"])
    for k, name in enumerate(files):
        np.testing.assert_array_equal(volume.array[:, :, k], _hu(name).T)
    assert volume.spacing == pytest.approx((0.488281, 0.488281, 2.5))

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(CT5N)))
    image = reader.Execute()
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))
    direction_lps = np.array(image.GetDirection()).reshape(3, 3)
    expected = np.eye(4)
    expected[:3, :3] = (LPS_TO_RAS[:, None] * direction_lps) * np.array(image.GetSpacing())
    expected[:3, 3] = LPS_TO_RAS * np.array(image.GetOrigin())
    np.testing.assert_allclose(volume.affine, expected, atol=1e-4)


def test_uneven_ct2_series_fails_listing_gaps_and_loads_with_warn(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InputError, match=r"uneven slice spacing.*\[202\.5, 1\.25, 1\.25\]") as info:
        read_ct(CT2)
    assert str(CT2) in str(info.value)

    with caplog.at_level(logging.WARNING, logger="datasets.ct"):
        volume = read_ct(CT2, on_problem="warn")
    assert "uneven slice spacing" in caplog.text
    assert len(volume.meta["problems"]) == 1
    assert volume.array.shape == (16, 16, 4)
    assert volume.meta["slice_positions"] == pytest.approx([-99.48, 103.02, 104.27, 105.52])
    names = [Path(name).name for name in volume.meta["files"]]
    assert names == ["17106", "17136", "17166", "17196"]
    for k, name in enumerate(volume.meta["files"]):
        np.testing.assert_array_equal(volume.array[:, :, k], _hu(name).T)
    # the affine's slice step is the mean step from the first to the last slice
    assert volume.affine[2, 2] == pytest.approx((105.52 - -99.48) / 3, abs=1e-4)


def test_missing_middle_slice_fails_listing_spacings(tmp_path: Path) -> None:
    files = sorted(CT5N.iterdir(), key=_position)
    for path in files[:2] + files[3:]:
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(InputError, match=r"gaps along the slice normal are \[2\.5, 5, 2\.5\] mm"):
        read_ct(tmp_path)


def test_folder_with_two_series_fails_listing_them_and_warn_reads_the_largest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for source in (CT5N, CT2):
        for path in source.iterdir():
            shutil.copy(path, tmp_path / path.name)
    uid5 = pydicom.dcmread(next(CT5N.iterdir())).SeriesInstanceUID
    uid2 = pydicom.dcmread(next(CT2.iterdir())).SeriesInstanceUID
    with pytest.raises(InputError) as info:
        read_ct(tmp_path)
    message = str(info.value)
    assert "2 DICOM series" in message
    assert f"{uid5} (5 slices, 'SmartScore - Gated 0.5 sec')" in message
    assert f"{uid2} (4 slices, 'Routine Brain')" in message
    assert message.endswith("split the folder by series") and "reading the largest" not in message

    with caplog.at_level(logging.WARNING, logger="datasets.ct"):
        volume = read_ct(tmp_path, on_problem="warn")
    assert "2 DICOM series" in caplog.text and f"reading the largest, {uid5}" in caplog.text
    assert volume.meta["series_uid"] == uid5
    np.testing.assert_array_equal(volume.array, read_ct(CT5N).array)


def test_series_with_mixed_orientations_fails() -> None:
    with pytest.raises(InputError, match="different ImageOrientationPatient"):
        read_ct(SCOUTS)


def test_folder_without_dicom_names_its_subfolders() -> None:
    with pytest.raises(InputError, match=r"no DICOM series.*CT2"):
        read_ct(DICOMDIR_TESTS / "77654033")


def test_canonical_reorients_to_ras_without_changing_world_positions() -> None:
    volume = read_ct(CT5N)
    canonical = read_ct(CT5N, canonical=True)
    assert volume.meta["orientation"] == "LPS"
    assert canonical.meta["orientation"] == "RAS"
    np.testing.assert_array_equal(canonical.array, volume.array[::-1, ::-1, :])
    assert canonical.spacing == pytest.approx(volume.spacing)
    # the same voxel lands on the same world point in both
    i, j, k = 3, 5, 2
    world = volume.affine @ np.array([i, j, k, 1.0])
    world_canonical = canonical.affine @ np.array([15 - i, 15 - j, k, 1.0])
    np.testing.assert_allclose(world, world_canonical, atol=1e-6)


def test_extract_slice_and_its_affine() -> None:
    volume = read_ct(CT5N)
    ct_slice = extract_slice(volume, 3)
    np.testing.assert_array_equal(ct_slice.array, volume.array[:, :, 3])
    position = pydicom.dcmread(volume.meta["files"][3]).ImagePositionPatient
    np.testing.assert_allclose(ct_slice.affine[:3, 3], LPS_TO_RAS * np.asarray(position, float), atol=1e-4)
    for bad in (5, -1):
        with pytest.raises(InputError, match=r"valid indices are 0\.\.4"):
            extract_slice(volume, bad)


def test_jpeg_lossless_decodes_or_names_what_to_install() -> None:
    path = get_testdata_file("JPEG-LL.dcm")
    ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(ts).is_available:
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(read_ct(path).array[:, :, 0], apply_modality_lut(ds.pixel_array, ds).T)
        return
    with pytest.raises(MissingDependencyError) as info:
        read_ct(path)
    message = str(info.value)
    assert path in message
    assert "JPEG Lossless" in message
    assert "pylibjpeg-libjpeg" in message and "GPL-3.0" in message and "python-gdcm" in message


def test_12_bit_jpeg_extended_decodes_or_names_what_to_install(caplog: pytest.LogCaptureFixture) -> None:
    """Pillow, the plugin installed by default, decodes JPEG Extended only at 8 bits; this file holds 12-bit data."""
    path = get_testdata_file("JPEG-lossy.dcm")
    if set(get_decoder(JPEGExtended12Bit).available_plugins) - {"pillow"}:
        assert read_ct(path).array.size == 1024 * 256
        return
    with pytest.raises(MissingDependencyError) as info:
        read_ct(path)
    message = str(info.value)
    assert path in message and "JPEG Extended" in message and "at 12 bits" in message and "only at 8 bits" in message
    assert "pylibjpeg-libjpeg" in message and "python-gdcm" in message
    assert "Traceback" not in caplog.text  # refused before pydicom tries (and logs) a decode


def test_truncated_dicom_names_the_file() -> None:
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(InputError, match="pixel data could not be decoded") as info:
        read_ct(path)
    assert path in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "empty_nifti", "garbage_nifti"])
def test_bad_inputs_name_the_file(tmp_path: Path, kind: str) -> None:
    path = {
        "missing": tmp_path / "absent.dcm",
        "empty": tmp_path / "empty.dcm",
        "text": tmp_path / "notes.dcm",
        "empty_nifti": tmp_path / "empty.nii.gz",
        "garbage_nifti": tmp_path / "garbage.nii",
    }[kind]
    if kind == "text":
        path.write_text("Findings: no acute abnormality.\n" * 20)
    elif kind == "garbage_nifti":
        path.write_bytes(b"\x00\x01not a nifti" * 100)
    elif kind != "missing":
        path.touch()
    with pytest.raises(InputError) as info:
        read_ct(path)
    assert str(path) in str(info.value)


def test_4d_nifti_is_refused() -> None:
    path = Path(nibabel_data) / "example4d.nii.gz"
    with pytest.raises(InputError, match=r"4D image of shape \(128, 96, 24, 2\)"):
        read_ct(path)


def test_bad_on_problem_value() -> None:
    with pytest.raises(InputError, match="on_problem must be one of"):
        read_ct(get_testdata_file("CT_small.dcm"), on_problem="ignore")


def test_singular_affine_is_an_input_error_naming_the_file(tmp_path):
    import nibabel as nib

    affine = np.eye(4)
    affine[2, 2] = 0.0  # slice spacing 0: the third axis collapses
    image = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), None)
    image.set_sform(affine, code=1)
    image.set_qform(None, code=0)
    path = tmp_path / "singular.nii.gz"
    nib.save(image, path)
    with pytest.raises(InputError, match=r"singular\.nii\.gz has a singular"):
        read_ct(path)


def test_zero_pixel_spacing_is_an_error_naming_the_file() -> None:
    path = get_testdata_file("RG1_J2KR.dcm")  # a real radiograph from pydicom-data whose PixelSpacing is 0
    with pytest.raises(InputError, match=r"RG1_J2KR\.dcm has a singular .* expected positive PixelSpacing.* Its "
                       r"Modality is CR: a projection radiograph, not a CT slice; .* datasets\.cxr\.read_cxr"):
        read_ct(path)


def test_non_ct_dicom_warns_that_values_are_not_hu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="datasets.ct"):
        volume = read_ct(get_testdata_file("MR_small.dcm"))
    assert volume.meta["modality"] == "MR" and volume.meta["hu_plausible"] is None
    assert "Modality is MR, not CT" in caplog.text
