"""Tests of the 3D CT pipeline on tiny volumes (40x40x20 at 2-3 mm)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.cache import PreprocessCache
from datasets.ct_pipeline import (
    BRGSA_MEAN_STD,
    HU_LIKE_MEDIAN,
    CTVolumePreprocessing,
    crop_volume,
    load_preprocessed,
    read_hu_volume,
    to_model_input,
    volume_cache_key,
)
from datasets.errors import InputError
from datasets.labels.ctrate import CTRateGeometry
from datasets.nifti import save_nifti

TINY = CTVolumePreprocessing(spacing=(3.0, 3.0, 4.0), size=(32, 32, 16), crop_size=(24, 24, 12), mean_std=None)


def _phantom(shape: tuple[int, int, int] = (40, 40, 20), seed: int = 0) -> np.ndarray:
    """Air with a body-like ellipsoid of soft tissue and some bone, in HU (int16)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    hu = np.full(shape, -1000.0)
    hu[(x / 0.8) ** 2 + (y / 0.6) ** 2 < 1] = 40.0
    hu[(x - 0.3) ** 2 + (y + 0.1) ** 2 + z**2 < 0.05] = 1500.0
    return (hu + rng.normal(0, 10, shape)).astype(np.int16)


def _write(path: Path, hu: np.ndarray, spacing: tuple[float, float, float], lps: bool = False) -> Path:
    affine = np.diag([*spacing, 1.0])
    if lps:  # the same world grid stored with x and y reversed
        hu = hu[::-1, ::-1, :].copy()
        affine[0, 0], affine[1, 1] = -spacing[0], -spacing[1]
        affine[0, 3], affine[1, 3] = spacing[0] * (hu.shape[0] - 1), spacing[1] * (hu.shape[1] - 1)
    return save_nifti(hu, affine, path)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 3.0), (3.0, 3.0, 2.0), (2.5, 2.0, 2.5)])
def test_shapes_dtype_and_ranges_for_several_spacings(tmp_path: Path, spacing: tuple[float, float, float]) -> None:
    path = _write(tmp_path / "ct.nii.gz", _phantom(), spacing)
    hu, meta = load_preprocessed(path, TINY)
    assert hu.shape == TINY.size and hu.dtype == np.int16
    assert hu.min() >= -1000 and hu.max() <= 1000 and hu.max() == 1000  # the 1500 HU bone is clipped
    expected = [round(n * s / t) for n, s, t in zip((40, 40, 20), spacing, TINY.spacing)]
    assert [abs(a - b) <= 1 for a, b in zip(meta["resampled_shape"], expected)] == [True] * 3
    assert np.allclose(np.linalg.norm(np.asarray(meta["affine"])[:3, :3], axis=0), TINY.spacing)
    train = to_model_input(hu, TINY, "random", torch.Generator().manual_seed(0))
    assert train.shape == (1, 24, 24, 12) and train.dtype == torch.float32
    assert train.min() >= -1.0 and train.max() <= 1.0
    full = to_model_input(hu, TINY, "none")
    assert full.shape == (1, 32, 32, 16)
    np.testing.assert_allclose(full[0].numpy(), hu / 1000.0, atol=1e-6)  # [-1000, 1000] -> [-1, 1], linear


def test_released_normalisation_follows_the_scaling(tmp_path: Path) -> None:
    path = _write(tmp_path / "ct.nii.gz", _phantom(), (2.0, 2.0, 3.0))
    released = CTVolumePreprocessing(spacing=(3.0, 3.0, 4.0), size=(32, 32, 16), crop_size=(24, 24, 12))
    assert released.mean_std == BRGSA_MEAN_STD
    hu, _ = load_preprocessed(path, released)
    image = to_model_input(hu, released, "none")
    mean, std = BRGSA_MEAN_STD
    np.testing.assert_allclose(image[0].numpy(), (hu / 1000.0 - mean) / std, atol=1e-5)


def test_ras_and_lps_storage_give_the_same_result(tmp_path: Path) -> None:
    hu = _phantom()
    ras, ras_meta = load_preprocessed(_write(tmp_path / "ras.nii.gz", hu, (2.0, 2.5, 3.0)), TINY)
    lps, lps_meta = load_preprocessed(_write(tmp_path / "lps.nii.gz", hu, (2.0, 2.5, 3.0), lps=True), TINY)
    assert (ras_meta["orientation"], lps_meta["orientation"]) == ("RAS", "LPS")
    np.testing.assert_array_equal(ras, lps)
    np.testing.assert_allclose(ras_meta["affine"], lps_meta["affine"])


def test_without_canonical_the_storage_order_is_kept(tmp_path: Path) -> None:
    hu = _phantom()
    keep = CTVolumePreprocessing(**{**TINY.to_dict(), "canonical": False})
    # stored at the target spacing, so resampling is the identity and only the axis order differs
    ras, _ = load_preprocessed(_write(tmp_path / "ras.nii.gz", hu, TINY.spacing), keep)
    lps, _ = load_preprocessed(_write(tmp_path / "lps.nii.gz", hu, TINY.spacing, lps=True), keep)
    np.testing.assert_array_equal(ras, lps[::-1, ::-1, :])


def test_padding_uses_pad_hu_before_clipping(tmp_path: Path) -> None:
    path = _write(tmp_path / "ct.nii.gz", np.zeros((20, 20, 10), np.int16), (2.0, 2.0, 3.0))
    wide = CTVolumePreprocessing(spacing=(2.0, 2.0, 3.0), hu_range=(-2000.0, 1000.0), size=(32, 32, 16),
                                 crop_size=(32, 32, 16))
    hu, _ = load_preprocessed(path, wide)
    assert hu[0, 0, 0] == -1024 and hu[16, 16, 8] == 0
    assert (hu == 0).sum() == 20 * 20 * 10  # the volume, centred, and nothing else
    hu, _ = load_preprocessed(path, CTVolumePreprocessing(**{**wide.to_dict(), "hu_range": (-1000.0, 1000.0)}))
    assert hu[0, 0, 0] == -1000  # -1024 clipped to the window


def test_crops() -> None:
    image = torch.arange(32 * 32 * 16, dtype=torch.float32).reshape(1, 32, 32, 16)
    center = crop_volume(image, (24, 24, 12), "center")
    torch.testing.assert_close(center, image[:, 4:28, 4:28, 2:14])
    seen = set()
    for seed in range(8):
        crop = crop_volume(image, (24, 24, 12), "random", torch.Generator().manual_seed(seed))
        assert crop.shape == (1, 24, 24, 12)
        x, rest = divmod(int(crop[0, 0, 0, 0]), 32 * 16)
        y, z = divmod(rest, 16)
        assert 0 <= x <= 8 and 0 <= y <= 8 and 0 <= z <= 4
        seen.add((x, y, z))
    assert len(seen) > 1
    again = crop_volume(image, (24, 24, 12), "random", torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, crop_volume(image, (24, 24, 12), "random", torch.Generator().manual_seed(3)))
    assert crop_volume(image, (24, 24, 12), "none") is image
    with pytest.raises(ValueError, match="exceeds"):
        crop_volume(image, (40, 24, 12), "center")
    with pytest.raises(ValueError, match="crop mode"):
        crop_volume(image, (24, 24, 12), "middle")


def test_cache_hit_miss_and_invalidation(tmp_path: Path) -> None:
    path = _write(tmp_path / "ct.nii.gz", _phantom(), (2.0, 2.0, 3.0))
    cache = PreprocessCache(tmp_path / "cache")
    first, _ = load_preprocessed(path, TINY, cache)
    second, meta = load_preprocessed(path, TINY, cache)
    assert (cache.computations, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.int16 and meta["source"] == str(path)
    other_crop = CTVolumePreprocessing(**{**TINY.to_dict(), "crop_size": (16, 16, 8), "mean_std": [0.5, 0.25]})
    load_preprocessed(path, other_crop, cache)  # crops and normalisation happen after the cache
    assert (cache.computations, cache.hits) == (1, 2)
    finer = CTVolumePreprocessing(**{**TINY.to_dict(), "spacing": (2.5, 2.5, 4.0)})
    assert volume_cache_key(path, finer) != volume_cache_key(path, TINY)
    load_preprocessed(path, finer, cache)
    assert (cache.computations, cache.hits) == (2, 2)
    for change in ({"size": (32, 32, 20)}, {"hu_range": (-1024.0, 1000.0)}, {"pad_hu": -1000.0},
                   {"canonical": False}, {"already_hu": True}):
        changed = CTVolumePreprocessing(**{**TINY.to_dict(), **change})
        assert volume_cache_key(path, changed) != volume_cache_key(path, TINY), change
    geometry = CTRateGeometry((2.0, 2.0, 3.0), 1.0, 0.0)
    assert volume_cache_key(path, TINY, geometry) != volume_cache_key(path, TINY)


def test_metadata_geometry_overrides_header_spacing_and_rescales(tmp_path: Path) -> None:
    hu = _phantom()
    reference, _ = load_preprocessed(_write(tmp_path / "hu.nii.gz", hu, (2.0, 2.0, 3.0)), TINY)
    # a CT-RATE v1 style file: raw values (HU + 1024) and a wrong 1 mm header spacing
    raw_path = _write(tmp_path / "raw.nii.gz", (hu.astype(np.int32) + 1024).astype(np.int16), (1.0, 1.0, 1.0))
    geometry = CTRateGeometry((2.0, 2.0, 3.0), 1.0, -1024.0)
    volume = read_hu_volume(raw_path, TINY, geometry)
    assert volume.spacing == pytest.approx((2.0, 2.0, 3.0))
    np.testing.assert_array_equal(volume.array, hu.astype(np.float32))
    fixed, meta = load_preprocessed(raw_path, TINY, geometry=geometry)
    np.testing.assert_array_equal(fixed, reference)
    assert meta["rescale_applied"] and meta["metadata_geometry"]["intercept"] == -1024.0


def test_raw_values_rescaled_by_the_metadata_get_no_advice_to_rescale_them(tmp_path: Path, caplog) -> None:
    """A CT-RATE v1 volume was told "apply the metadata rescale yourself" while the pipeline applied it."""
    raw = (_phantom().astype(np.int32) + 1024).clip(0).astype(np.int16)  # no value below 0: not HU as stored
    raw_path = _write(tmp_path / "raw.nii.gz", raw, (2.0, 2.0, 3.0))
    with caplog.at_level("WARNING"):
        read_hu_volume(raw_path, TINY, CTRateGeometry((2.0, 2.0, 3.0), 1.0, -1024.0))
    assert "raw stored values" not in caplog.text
    with caplog.at_level("WARNING"):
        read_hu_volume(raw_path, TINY)  # no metadata: the warning is the user's only hint
    assert "raw stored values" in caplog.text


def test_rescale_of_values_already_in_hu_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "v2.nii.gz", _phantom(), (2.0, 2.0, 3.0))
    geometry = CTRateGeometry((2.0, 2.0, 3.0), 1.0, -1024.0)
    with pytest.raises(InputError, match=r"v2\.nii\.gz.*already look like HU.*already_hu=True"):
        read_hu_volume(path, TINY, geometry)
    trusted = CTVolumePreprocessing(**{**TINY.to_dict(), "already_hu": True})
    np.testing.assert_array_equal(read_hu_volume(path, trusted, geometry).array, _phantom().astype(np.float32))


def test_rescale_of_a_large_patients_hu_volume_is_refused(tmp_path: Path) -> None:
    """Body filling most of the field of view: the HU median is above -300, so only the soft-tissue rule sees it."""
    x, y, _ = np.meshgrid(*(np.linspace(-1, 1, n) for n in (40, 40, 20)), indexing="ij")
    hu = (np.where(x**2 + y**2 < 1.1, 40.0, -1000.0) + np.random.default_rng(0).normal(0, 10, x.shape)).astype(np.int16)
    assert np.median(hu) > HU_LIKE_MEDIAN
    geometry = CTRateGeometry((2.0, 2.0, 3.0), 1.0, -1024.0)
    path = _write(tmp_path / "v2.nii.gz", hu, (2.0, 2.0, 3.0))
    with pytest.raises(InputError, match=r"v2\.nii\.gz.*only 0\.0% of voxels would lie in soft tissue.*already_hu"):
        read_hu_volume(path, TINY, geometry)
    raw = _write(tmp_path / "v1.nii.gz", (hu + 1024).astype(np.int16), (2.0, 2.0, 3.0))
    np.testing.assert_array_equal(read_hu_volume(raw, TINY, geometry).array, hu.astype(np.float32))  # v1: accepted


def test_2d_image_is_refused(tmp_path: Path) -> None:
    path = save_nifti(np.zeros((40, 40), np.int16), np.eye(4), tmp_path / "slice.nii.gz")
    with pytest.raises(InputError, match=r"slice\.nii\.gz is a 2D image"):
        load_preprocessed(path, TINY)


def test_to_dict_round_trip_and_bad_arguments() -> None:
    data = json.loads(json.dumps(TINY.to_dict()))
    assert CTVolumePreprocessing.from_dict(data) == TINY
    assert CTVolumePreprocessing() == CTVolumePreprocessing.from_dict(CTVolumePreprocessing().to_dict())
    with pytest.raises(InputError, match="unknown CT preprocessing option.*'window'"):
        CTVolumePreprocessing.from_dict({"window": [0, 1]})
    bad = [
        ({"spacing": (1.5, 1.5)}, "spacing must have 3"),
        ({"spacing": (1.5, 0.0, 3.0)}, "positive"),
        ({"size": (256, 256, 128.5)}, "integers"),
        ({"crop_size": (300, 224, 112)}, "must not exceed"),
        ({"hu_range": (1000.0, -1000.0)}, "low < high"),
        ({"hu_range": (-1000.0, 40000.0)}, "int16"),
        ({"mean_std": (0.5, 0.0)}, "std > 0"),
    ]
    for kwargs, message in bad:
        with pytest.raises(InputError, match=message):
            CTVolumePreprocessing(**kwargs)
