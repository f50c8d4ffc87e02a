"""save_nifti round trips through SimpleITK (LPS) and read_ct (RAS); NIfTI header scaling applied exactly once."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from datasets.ct import read_ct
from datasets.errors import InputError
from datasets.nifti import affine_spacing, ras_to_lps, save_nifti, to_closest_canonical

CT5N = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"


def _assert_simpleitk_agrees(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """SimpleITK (LPS world, (z, y, x) arrays) sees the same geometry and values as our RAS affine."""
    image = sitk.ReadImage(str(path))
    affine_lps = ras_to_lps(affine)
    spacing = np.array(affine_spacing(affine))
    np.testing.assert_allclose(image.GetSpacing(), spacing, rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), affine_lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), affine_lps[:3, :3] / spacing, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), array)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_ct_small_round_trip_through_simpleitk_and_read_ct(tmp_path: Path, suffix: str) -> None:
    volume = read_ct(get_testdata_file("CT_small.dcm"))
    path = save_nifti(volume.array, volume.affine, tmp_path / f"ct_small{suffix}")

    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind
    _assert_simpleitk_agrees(path, volume.array, volume.affine)
    back = read_ct(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    assert back.meta["format"] == "nifti"
    assert back.meta["orientation"] == "LPS"


@pytest.mark.parametrize("canonical", [False, True])
def test_series_round_trip_before_and_after_canonical(tmp_path: Path, canonical: bool) -> None:
    volume = read_ct(CT5N, canonical=canonical)
    path = save_nifti(volume.array, volume.affine, tmp_path / "ct5n.nii.gz")
    _assert_simpleitk_agrees(path, volume.array, volume.affine)
    # SimpleITK reading the DICOM series itself places the first voxel at the same LPS point
    series = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(CT5N)))
    corner_lps = ras_to_lps(volume.affine) @ np.array([0, 0, 0, 1.0])
    index = series.TransformPhysicalPointToContinuousIndex(corner_lps[:3].tolist())
    expected_index = (15, 15, 0) if canonical else (0, 0, 0)
    np.testing.assert_allclose(index, expected_index, atol=1e-4)
    back = read_ct(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    assert back.meta["orientation"] == ("RAS" if canonical else "LPS")


def test_nifti_header_scaling_is_applied_once(tmp_path: Path) -> None:
    stored = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) * 100
    image = nib.Nifti1Image(stored, np.diag([0.7, 0.7, 2.5, 1.0]))
    image.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)

    for already_hu in (False, True):
        volume = read_ct(path, already_hu=already_hu)
        np.testing.assert_array_equal(volume.array, stored * 2.0 - 1024.0)
        assert volume.meta["nifti_scl_slope"] == 2.0
        assert volume.meta["nifti_scl_inter"] == -1024.0
        assert volume.spacing == pytest.approx((0.7, 0.7, 2.5))


def test_nifti_without_air_is_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = np.full((4, 4, 2), 1000, dtype=np.int16)  # raw stored values: air would be 0..24, never negative
    path = save_nifti(raw, np.eye(4), tmp_path / "raw.nii")
    with caplog.at_level(logging.WARNING, logger="datasets.ct"):
        volume = read_ct(path)
    assert volume.meta["hu_plausible"] is False
    assert "not Hounsfield units" in caplog.text


def test_to_closest_canonical_on_an_oblique_real_nifti() -> None:
    from nibabel.testing import data_path

    image = nib.load(Path(data_path) / "anatomical.nii")
    array, affine = to_closest_canonical(np.asarray(image.dataobj), image.affine)
    reference = nib.as_closest_canonical(image)
    np.testing.assert_array_equal(array, np.asarray(reference.dataobj))
    np.testing.assert_allclose(affine, reference.affine)
    assert "".join(nib.aff2axcodes(affine)) == "RAS"


def test_ras_to_lps_is_an_involution() -> None:
    affine = np.array([[0.5, 0.1, 0, 10], [0, -0.7, 0.2, -3], [0.1, 0, 2.5, 7], [0, 0, 0, 1]])
    np.testing.assert_array_equal(ras_to_lps(ras_to_lps(affine)), affine)
    np.testing.assert_array_equal(ras_to_lps(affine)[:2], -affine[:2])


def test_save_nifti_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must end in \.nii or \.nii\.gz"):
        save_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "ct.nrrd")
    with pytest.raises(InputError, match=r"expected a 2D \(X, Y\) or 3D"):
        save_nifti(np.zeros((2, 2, 2, 2)), np.eye(4), tmp_path / "ct.nii")
    with pytest.raises(InputError, match="invertible 4x4 affine"):
        save_nifti(np.zeros((2, 2, 2)), np.zeros((4, 4)), tmp_path / "ct.nii")
    assert list(tmp_path.iterdir()) == []

