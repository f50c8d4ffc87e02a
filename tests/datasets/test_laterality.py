"""Patient-based laterality: RAS+ world sides, centroids through real affines, and the left/right word swap."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from datasets.laterality import (
    mask_centroid_voxel,
    mask_centroid_world,
    patient_side,
    swap_laterality_words,
    voxel_to_world,
)

RAS = np.diag([2.0, 2.0, 5.0, 1.0])
RAS[:3, 3] = [-99.0, -99.0, -40.0]  # 100 x 100 grid centred on x = 0


def _lps_of(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Affine of the same grid stored with array axes 0 and 1 reversed (LPS order)."""
    flip = np.array([[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return affine @ flip


def test_ras_plus_convention_matches_nibabel():
    # nibabel labels the positive end of world x 'R': +x is the patient's right.
    assert nib.aff2axcodes(np.eye(4)) == ("R", "A", "S")
    assert patient_side([10.0, 0.0, 0.0]) == "right"
    assert patient_side([-10.0, 0.0, 0.0]) == "left"
    assert patient_side(np.array([5.0, 80.0, -300.0]), midline_x=12.0) == "left"


def test_patient_side_on_ras_and_lps_files_agrees_with_nibabel_axis_codes():
    shape = (100, 100, 4)
    lps = _lps_of(RAS, shape)
    assert nib.aff2axcodes(RAS) == ("R", "A", "S")
    assert nib.aff2axcodes(lps) == ("L", "P", "S")
    # Voxel (90, 50, 2): near the end of axis 0. In an RAS-ordered array that is the patient's right, in an
    # LPS-ordered array the patient's left.
    assert patient_side(voxel_to_world(RAS, [90, 50, 2])) == "right"
    assert patient_side(voxel_to_world(lps, [90, 50, 2])) == "left"


def test_mask_centroid_world_is_independent_of_storage_order():
    shape = (100, 100, 4)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[70:80, 20:30, 1:3] = 3  # a blob on the patient's right (RAS array), posterior
    mask[10:14, 60:64, 2] = 1
    lps_mask = mask[::-1, ::-1, :]
    ras_world = mask_centroid_world(mask, RAS, value=3)
    lps_world = mask_centroid_world(lps_mask, _lps_of(RAS, shape), value=3)
    np.testing.assert_allclose(ras_world, lps_world)
    np.testing.assert_allclose(ras_world, [-99 + 2 * 74.5, -99 + 2 * 24.5, -40 + 5 * 1.5])
    assert patient_side(ras_world) == patient_side(lps_world) == "right"
    assert patient_side(mask_centroid_world(lps_mask, _lps_of(RAS, shape), value=1)) == "left"
    np.testing.assert_allclose(mask_centroid_voxel(mask), np.argwhere(mask > 0).mean(axis=0))


def test_voxel_to_world_batches():
    points = voxel_to_world(RAS, [[0, 0, 0], [99, 99, 3]])
    np.testing.assert_allclose(points, [[-99, -99, -40], [99, 99, -25]])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: patient_side([0.0, 1.0, 2.0]), "midline"),
        (lambda: patient_side([1.0, 2.0]), "3 finite"),
        (lambda: patient_side([np.nan, 0.0, 0.0]), "3 finite"),
        (lambda: mask_centroid_voxel(np.zeros((4, 4, 4))), "no non-zero voxel"),
        (lambda: mask_centroid_voxel(np.ones((4, 4, 4)), value=2), "no voxel with value 2"),
        (lambda: mask_centroid_voxel(np.ones((4, 4))), "3D"),
        (lambda: voxel_to_world(np.zeros((4, 4)), [0, 0, 0]), "singular"),
        (lambda: voxel_to_world(np.eye(3), [0, 0, 0]), "4x4"),
        (lambda: voxel_to_world(np.eye(4), [0, 0]), "shape"),
    ],
)
def test_ill_arg(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "text, swapped",
    [
        ("the lesion in the right lobe", "the lesion in the left lobe"),
        ("the left lobe lesion", "the right lobe lesion"),
        ("the rightmost lesion", "the leftmost lesion"),
        ("Leftmost lesion", "Rightmost lesion"),
        ("RIGHT LOBE", "LEFT LOBE"),
        ("a right-sided mass, moving leftwards", "a left-sided mass, moving rightwards"),
        ("the lesion further to the patient's right", "the lesion further to the patient's left"),
        ("brighter than the liver", "brighter than the liver"),
        ("leftover copyright, righteous bright", "leftover copyright, righteous bright"),
        ("right, left; Right. left!", "left, right; Left. right!"),
        ("", ""),
    ],
)
def test_swap_laterality_words(text, swapped):
    assert swap_laterality_words(text) == swapped
    assert swap_laterality_words(swapped) == text
