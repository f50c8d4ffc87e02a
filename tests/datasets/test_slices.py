"""Slice orientation, preprocessing and its inverse, on real NIfTI files read with datasets.ct."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from datasets.ct import read_ct
from datasets.errors import InputError
from datasets.nifti import save_nifti
from datasets.slices import (
    DisplayOrientation,
    SliceGeometry,
    SlicePreprocessing,
    prepare_2d_image,
    prepare_mask,
    prepare_slice_stack,
    preprocess_volume_slice,
    restore_slice,
)

X, Y, Z = 12, 10, 5
RAS = np.array([[0.8, 0, 0, -5.0], [0, 0.8, 0, 7.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-300, 300, size=(X, Y, Z)).astype(np.float32)


def _stored_variants(array: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, callable]]:
    """The same volume stored RAS, LPS, transposed, and with slices superior-first; (array, affine, index map)."""
    lps = np.array([[-1, 0, 0, X - 1], [0, -1, 0, Y - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    swap = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    z_flip = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, Z - 1], [0, 0, 0, 1]], dtype=float)
    return {
        "ras": (array, RAS, lambda k: k),
        "lps": (array[::-1, ::-1, :], RAS @ lps, lambda k: k),
        "transposed": (np.swapaxes(array, 0, 1), RAS @ swap, lambda k: k),
        "superior_first": (array[:, :, ::-1], RAS @ z_flip, lambda k: Z - 1 - k),
    }


@pytest.mark.parametrize("context", [0, 1])
def test_storage_order_does_not_change_model_input(tmp_path, context):
    pre = SlicePreprocessing(image_size=16, context_slices=context)
    inputs = {}
    for name, (array, affine, index_of) in _stored_variants(_volume()).items():
        path = save_nifti(np.ascontiguousarray(array), affine, tmp_path / f"{name}.nii.gz")
        volume = read_ct(path)
        image, geometry = preprocess_volume_slice(volume, index_of(0), pre)
        assert image.shape == (2 * context + 1, 16, 16) and image.dtype == np.float32
        inputs[name] = image
    for name, image in inputs.items():
        np.testing.assert_array_equal(image, inputs["ras"], err_msg=name)


def test_display_convention_top_is_anterior_left_is_patient_right():
    array = np.zeros((X, Y), dtype=np.float32)
    array[X - 1, Y - 1] = 1.0  # RAS affine: largest x = most right, largest y = most anterior
    orientation = DisplayOrientation.from_affine(RAS)
    display = orientation.apply(array)
    assert display.shape == (Y, X)  # rows first
    assert display[0, 0] == 1.0  # top-left = anterior and patient right


def test_orientation_inverse_is_exact_for_every_layout():
    array = np.arange(X * Y, dtype=np.float32).reshape(X, Y)
    for transpose, flip_rows, flip_cols in itertools.product([False, True], repeat=3):
        orientation = DisplayOrientation(transpose, flip_rows, flip_cols)
        np.testing.assert_array_equal(orientation.invert(orientation.apply(array)), array)


@pytest.mark.parametrize("variant", ["ras", "lps", "transposed"])
def test_restore_slice_maps_mask_back_exactly(variant):
    array, affine, _ = _stored_variants(_volume())[variant]
    mask = (array[:, :, 0] > 100).astype(np.float32)
    assert mask.any()
    side = max(X, Y)  # model grid = padded grid: restoring must give back every voxel
    _, geometry = prepare_slice_stack([array[:, :, 0]], affine, SlicePreprocessing(image_size=side))
    model_mask = prepare_mask(mask, geometry)
    np.testing.assert_array_equal(restore_slice(model_mask, geometry), mask)
    restored = SliceGeometry.from_dict(json.loads(json.dumps(geometry.to_dict())))
    np.testing.assert_array_equal(restore_slice(model_mask, restored), mask)


def test_restore_slice_after_resizing_keeps_shape_and_most_voxels():
    mask = np.zeros((40, 30), dtype=np.float32)
    mask[10:30, 5:20] = 1
    _, geometry = prepare_slice_stack([mask * 100], RAS, SlicePreprocessing(image_size=16))
    restored = restore_slice(prepare_mask(mask, geometry), geometry)
    assert restored.shape == (40, 30)
    dice = 2 * (restored * mask).sum() / (restored.sum() + mask.sum())
    assert dice > 0.85


def test_tiny_lesion_survives_downsampling():
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[33, 20] = 1
    _, geometry = prepare_slice_stack([mask], RAS, SlicePreprocessing(image_size=8))
    small = prepare_mask(mask, geometry)
    assert small.shape == (1, 8, 8) and small.sum() == 1
    assert set(np.unique(small)) <= {0.0, 1.0}
    assert prepare_mask(np.zeros_like(mask), geometry).sum() == 0


def test_window_scales_hu_and_png_is_not_windowed():
    pre = SlicePreprocessing(window=(-100.0, 100.0), image_size=8)
    plane = np.full((8, 8), 0.0, dtype=np.float32)
    plane[:, :4] = -1000.0
    hu_image, _ = prepare_2d_image(plane, pre, is_hu=True)
    np.testing.assert_allclose(hu_image[0, :, :4], 0.0)
    np.testing.assert_allclose(hu_image[0, :, 4:], 0.5)
    png_image, _ = prepare_2d_image(np.full((8, 8), 0.25, dtype=np.float32), pre, is_hu=False)
    np.testing.assert_allclose(png_image, 0.25)


def test_preprocessing_round_trips_through_json_and_rejects_bad_values():
    pre = SlicePreprocessing(window=(-160.0, 240.0), image_size=64, context_slices=2, already_hu=True)
    assert SlicePreprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert pre.channels == 5
    with pytest.raises(InputError, match="low < high"):
        SlicePreprocessing(window=(200.0, -100.0))
    with pytest.raises(InputError, match="image_size"):
        SlicePreprocessing(image_size=0)
    with pytest.raises(InputError, match="context_slices"):
        SlicePreprocessing(context_slices=-1)
    with pytest.raises(InputError, match="unknown"):
        SlicePreprocessing.from_dict({"spacing": 1.0})


def test_non_axial_slice_is_rejected():
    sagittal = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    with pytest.raises(InputError, match="not axial"):
        DisplayOrientation.from_affine(sagittal, "vol.nii.gz")


def test_out_of_range_slice_index_is_an_input_error(tmp_path):
    volume = read_ct(save_nifti(_volume(), RAS, tmp_path / "v.nii.gz"))
    with pytest.raises(InputError, match="out of range"):
        preprocess_volume_slice(volume, Z, SlicePreprocessing(image_size=8))
