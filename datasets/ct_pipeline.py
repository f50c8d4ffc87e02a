"""The bounded-memory 3D CT pipeline of BrgSA: load, reorient, resample, crop/pad, clip, cache, scale and crop.

Two parts (research notes ``brgsa.md`` 3.1 and 3.3, the released ``data_fix_metadata_*.py`` and data loader):

* **Deterministic, cached** (:func:`preprocess_volume`, :func:`load_preprocessed`): read the volume in HU
  (:func:`datasets.ct.read_ct`), optionally take spacing and rescale values from CT-RATE's ``*_metadata.csv``
  (:class:`~datasets.labels.ctrate.CTRateGeometry`), reorient to RAS (MONAI ``Orientation``), resample to
  ``spacing`` with trilinear interpolation (MONAI ``Spacing``), centre-crop or pad to ``size`` with ``pad_hu``
  (MONAI ``ResizeWithPadOrCrop``), clip to ``hu_range``. The result is stored as int16 HU (rounded to the nearest HU,
  at most 0.5 HU off) in a :class:`~datasets.cache.PreprocessCache` whose key covers every deterministic parameter,
  the source file's identity and the metadata geometry.
* **Per sample, after the cache** (:func:`to_model_input`): scale ``hu_range`` linearly to ``[-1, 1]`` (MONAI
  ``ScaleIntensityRange``), then ``(x - mean) / std`` with the released model's ``mean_std`` (0.4978, 0.2449)
  (MONAI ``NormalizeIntensity``), then a random ``crop_size`` crop for training, a centre crop for evaluation, or no
  crop (the released evaluation ran on full ``size`` volumes). Random crops use a ``torch.Generator`` (reseeded per
  data-loader worker), not MONAI's ``RandSpatialCrop`` and its NumPy state.

Memory: one volume is in memory at a time, as float32 during resampling (a 512x512x300 scan is about 0.3 GB, about
1 GB at the peak of resampling); a cached item is ``prod(size) * 2`` bytes (16 MiB at 256x256x128).

CT-RATE HU: v1 NIfTIs store raw values whose rescale lives in ``*_metadata.csv`` (their headers say slope 1 /
intercept 0 and may carry wrong spacing), so with a geometry the metadata spacing replaces the header's voxel sizes
and ``stored * RescaleSlope + RescaleIntercept`` is applied once. CT-RATE v2 stores HU: pass ``already_hu=True``, or
the rescale would be applied twice (CT-CLIP issue #50); a volume whose stored values already look like HU (median
below :data:`HU_LIKE_MEDIAN`, or fewer than :data:`SOFT_TISSUE_MIN_FRACTION` of its voxels in soft tissue after the
rescale) while a non-identity rescale would be applied is rejected with that advice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, ResizeWithPadOrCrop, ScaleIntensityRange, Spacing

from datasets.cache import PreprocessCache, cache_key
from datasets.ct import CTVolume, check_hu_plausible, read_ct
from datasets.errors import InputError
from datasets.labels.ctrate import CTRateGeometry
from datasets.nifti import affine_spacing, orientation_code

__all__ = [
    "PIPELINE_VERSION",
    "CROP_MODES",
    "HU_LIKE_MEDIAN",
    "SOFT_TISSUE_HU",
    "SOFT_TISSUE_MIN_FRACTION",
    "BRGSA_MEAN_STD",
    "DEMO_PREPROCESSING",
    "CTVolumePreprocessing",
    "read_hu_volume",
    "preprocess_volume",
    "volume_cache_key",
    "load_preprocessed",
    "to_model_input",
    "crop_volume",
]

PIPELINE_VERSION = "ct-volume-1"
"""Part of every cache key; bumped whenever the deterministic steps change."""
CROP_MODES = ("random", "center", "none")
HU_LIKE_MEDIAN = -300.0
"""Stored values with a median below this are already HU (raw CT stored values of a chest scan are positive)."""
SOFT_TISSUE_HU = 200.0
SOFT_TISSUE_MIN_FRACTION = 0.02
"""A chest CT has far more than 2% of its voxels within +-200 HU (chest wall, heart, mediastinum); a metadata rescale
that would leave fewer there is being applied to values already in HU (only bone maps there), even when a large
patient's HU volume has a median above :data:`HU_LIKE_MEDIAN`."""
BRGSA_MEAN_STD = (0.4978, 0.2449)
"""``NormalizeIntensity`` applied after the [-1, 1] scaling by the released BrgSA loader (CXR grey-level stats)."""
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _triple(value: Sequence[float], name: str, kind: type) -> tuple:
    values = tuple(value)
    if len(values) != 3:
        raise InputError(f"{name} must have 3 values (x, y, z), got {value!r}")
    if kind is int and any(int(v) != v for v in values):
        raise InputError(f"{name} must be integers, got {value!r}")
    converted = tuple(kind(v) for v in values)
    if not all(np.isfinite(v) and v > 0 for v in converted):
        raise InputError(f"{name} must be positive and finite, got {value!r}")
    return converted


@dataclass(frozen=True)
class CTVolumePreprocessing:
    """Preprocessing of one CT volume for BrgSA; JSON-serialisable and stored with every trained model.

    Args:
        spacing: target voxel size ``(x, y, z)`` in mm after RAS reorientation. Defaults to ``(1.5, 1.5, 3.0)``.
        hu_range: HU window ``(low, high)``: values are clipped to it and scaled linearly to ``[-1, 1]``.
            Defaults to ``(-1000.0, 1000.0)``.
        size: volume size ``(X, Y, Z)`` after the centred crop/pad (the cached array). Defaults to
            ``(256, 256, 128)``.
        crop_size: size of the random training crop and of the centre evaluation crop; at most ``size``.
            Defaults to ``(224, 224, 112)``.
        pad_hu: value of padded voxels in HU, before clipping (so -1024 becomes ``hu_range[0]``). Defaults to -1024.0.
        canonical: reorient to RAS before resampling, so that storage order (RAS, LPS, ...) does not change the
            result. Defaults to True.
        already_hu: the stored values are HU: neither a DICOM rescale nor a metadata rescale is applied (use it for
            CT-RATE v2). Defaults to False.
        mean_std: ``(mean, std)`` applied as ``(x - mean) / std`` after the ``[-1, 1]`` scaling, or None to keep
            ``[-1, 1]``. Defaults to :data:`BRGSA_MEAN_STD`, the released loader's values (needed for its weights).

    Example::

        pre = CTVolumePreprocessing(spacing=(3.0, 3.0, 6.0), size=(128, 128, 64), crop_size=(112, 112, 56))
        CTVolumePreprocessing.from_dict(pre.to_dict()) == pre  # True
    """

    spacing: tuple[float, float, float] = (1.5, 1.5, 3.0)
    hu_range: tuple[float, float] = (-1000.0, 1000.0)
    size: tuple[int, int, int] = (256, 256, 128)
    crop_size: tuple[int, int, int] = (224, 224, 112)
    pad_hu: float = -1024.0
    canonical: bool = True
    already_hu: bool = False
    mean_std: tuple[float, float] | None = BRGSA_MEAN_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", _triple(self.spacing, "spacing", float))
        object.__setattr__(self, "size", _triple(self.size, "size", int))
        object.__setattr__(self, "crop_size", _triple(self.crop_size, "crop_size", int))
        if any(c > s for c, s in zip(self.crop_size, self.size)):
            raise InputError(f"crop_size {self.crop_size} must not exceed size {self.size} along any axis")
        if len(self.hu_range) != 2:
            raise InputError(f"hu_range must be two HU values (low, high), got {self.hu_range!r}")
        low, high = (float(v) for v in self.hu_range)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InputError(f"hu_range must satisfy low < high with finite values, got {self.hu_range!r}")
        if not (-32768 <= low and high <= 32767):
            raise InputError(f"hu_range must fit int16 (the cache's storage type), got {self.hu_range!r}")
        object.__setattr__(self, "hu_range", (low, high))
        object.__setattr__(self, "pad_hu", float(self.pad_hu))
        if self.mean_std is not None:
            if len(self.mean_std) != 2 or not float(self.mean_std[1]) > 0:
                raise InputError(f"mean_std must be (mean, std) with std > 0, or None; got {self.mean_std!r}")
            object.__setattr__(self, "mean_std", (float(self.mean_std[0]), float(self.mean_std[1])))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples as lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CTVolumePreprocessing:
        """Inverse of :meth:`to_dict`.

        Raises:
            InputError: an unknown key (the message lists the known ones) or an invalid value.
        """
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(f"unknown CT preprocessing option(s) {unknown}; known options are {known}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})

    def cache_config(self) -> dict[str, Any]:
        """The deterministic parameters (everything before the cache), with :data:`PIPELINE_VERSION`."""
        data = self.to_dict()
        for key in ("crop_size", "mean_std"):
            data.pop(key)
        return {"pipeline": PIPELINE_VERSION, **data}


DEMO_PREPROCESSING = CTVolumePreprocessing(spacing=(3.5, 3.5, 7.0), size=(112, 112, 56), crop_size=(96, 96, 48))
"""The official transforms at demo sizes: 96x96x48 crops (BrgSA's ``DEMO_CONFIG``) of 112x112x56 volumes, the
released 224/256 crop ratio, with the spacing scaled so a volume covers about the released field of view."""


def read_hu_volume(
    path: str | os.PathLike, preprocessing: CTVolumePreprocessing, geometry: CTRateGeometry | None = None
) -> CTVolume:
    """Read a CT volume in HU in its stored orientation, applying CT-RATE metadata geometry when given.

    Args:
        path: NIfTI file, DICOM file, DICOM series folder, or RAD-ChestCT ``.npz`` archive
            (:func:`datasets.labels.radchestct.radchestct_ct_volume`).
        preprocessing: supplies ``already_hu``.
        geometry: spacing and rescale of this volume from a CT-RATE ``*_metadata.csv``: the spacing replaces the
            header's voxel sizes (directions and origin kept) and, unless ``already_hu``, the rescale is applied to
            the values read. Defaults to None (the file's own geometry and HU).

    Returns:
        The :class:`~datasets.ct.CTVolume` (array (X, Y, Z) float32 HU).

    Raises:
        InputError: unreadable input, a 2D image (fewer than 2 voxels along an axis), or a metadata rescale on
            values that are already HU (CT-RATE v2 without ``already_hu=True``).
    """
    rescales = geometry is not None and not preprocessing.already_hu and (
        geometry.rescale_slope, geometry.rescale_intercept) != (1.0, 0.0)
    if str(path).lower().endswith(".npz"):  # a RAD-ChestCT archive: HU, no header, documented geometry
        from datasets.labels.radchestct import radchestct_ct_volume

        volume = radchestct_ct_volume(path)
    else:
        volume = read_ct(path, already_hu=preprocessing.already_hu, canonical=False, check_hu=not rescales)
    if min(volume.array.shape) < 2:
        raise InputError(
            f"{path} is a 2D image of shape {volume.array.shape}, expected a 3D CT volume (X, Y, Z) with at least 2 "
            "voxels along every axis"
        )
    if geometry is None:
        return volume
    columns = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    volume.affine[:3, :3] = columns * np.asarray(geometry.spacing, dtype=np.float64)
    volume.spacing = affine_spacing(volume.affine)
    slope, intercept = geometry.rescale_slope, geometry.rescale_intercept
    volume.meta["metadata_geometry"] = {"spacing": list(geometry.spacing), "slope": slope, "intercept": intercept}
    if not rescales:
        return volume
    sample = volume.array[::4, ::4, ::4]
    median = float(np.median(sample))
    soft_tissue = float(np.mean(np.abs(sample * np.float32(slope) + np.float32(intercept)) <= SOFT_TISSUE_HU))
    if median < HU_LIKE_MEDIAN or soft_tissue < SOFT_TISSUE_MIN_FRACTION:
        evidence = (f"median {median:.0f}" if median < HU_LIKE_MEDIAN else
                    f"after it only {soft_tissue:.1%} of voxels would lie in soft tissue, -{SOFT_TISSUE_HU:g} to "
                    f"{SOFT_TISSUE_HU:g} HU")
        raise InputError(
            f"{path}: the stored values already look like HU ({evidence}), so the metadata rescale "
            f"(slope {slope}, intercept {intercept}) would be applied twice; CT-RATE v2 volumes store HU: set "
            "already_hu=True (`--already-hu`)"
        )
    volume.array = volume.array * np.float32(slope) + np.float32(intercept)
    volume.meta["rescale_applied"] = True
    check_hu_plausible(volume.array, path, volume.meta)  # on the values the pipeline uses, not the stored ones
    return volume


def preprocess_volume(volume: CTVolume, preprocessing: CTVolumePreprocessing) -> tuple[np.ndarray, dict[str, Any]]:
    """The deterministic steps on a volume in HU: reorient, resample, centre crop/pad, clip, round to int16.

    Args:
        volume: a volume from :func:`read_hu_volume`.
        preprocessing: the parameters.

    Returns:
        ``(hu, meta)``: ``hu`` int16 ``size`` (X, Y, Z) clipped to ``hu_range``; ``meta`` is JSON-compatible
        (``source``, ``orientation`` as stored, ``source_shape``, ``source_spacing``, ``resampled_shape``,
        ``affine`` voxel -> RAS of ``hu``, ``rescale_applied``, ``metadata_geometry``).
    """
    image = MetaTensor(torch.from_numpy(volume.array)[None], affine=torch.as_tensor(volume.affine))  # (1, X, Y, Z)
    if preprocessing.canonical:
        image = Orientation(axcodes="RAS", labels=_RAS_LABELS)(image)
    image = Spacing(pixdim=preprocessing.spacing, mode="bilinear", padding_mode="border", dtype=torch.float32)(image)
    resampled_shape = list(image.shape[1:])
    image = ResizeWithPadOrCrop(preprocessing.size, mode="constant", value=preprocessing.pad_hu)(image)
    affine = np.asarray(image.affine, dtype=np.float64)
    low, high = preprocessing.hu_range
    hu = np.rint(image.as_tensor()[0].clamp_(low, high).numpy()).astype(np.int16)
    meta = {
        "source": volume.source,
        "orientation": volume.meta.get("orientation") or orientation_code(volume.affine),
        "source_shape": list(volume.array.shape),
        "source_spacing": list(volume.spacing),
        "resampled_shape": resampled_shape,
        "affine": affine.tolist(),
        "rescale_applied": bool(volume.meta.get("rescale_applied", False)),
        "metadata_geometry": volume.meta.get("metadata_geometry"),
    }
    return hu, meta


def _geometry_fields(geometry: CTRateGeometry | None) -> dict[str, Any]:
    return {"geometry": None if geometry is None else asdict(geometry)}


def volume_cache_key(
    path: str | os.PathLike, preprocessing: CTVolumePreprocessing, geometry: CTRateGeometry | None = None
) -> str:
    """Cache key of a volume: its file identity, the metadata geometry and every deterministic parameter."""
    return cache_key([path], _geometry_fields(geometry), preprocessing.cache_config())


def load_preprocessed(
    path: str | os.PathLike,
    preprocessing: CTVolumePreprocessing,
    cache: PreprocessCache | None = None,
    geometry: CTRateGeometry | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The deterministic result for one volume, from ``cache`` when present there (computed and stored otherwise).

    Args:
        path: NIfTI file, DICOM file, DICOM series folder, or RAD-ChestCT ``.npz`` archive
            (:func:`datasets.labels.radchestct.radchestct_ct_volume`).
        preprocessing: the parameters.
        cache: the cache. Defaults to None (always computed, nothing stored).
        geometry: CT-RATE metadata geometry (see :func:`read_hu_volume`). Defaults to None.

    Returns:
        ``(hu, meta)`` as from :func:`preprocess_volume`; ``hu`` is int16 ``size``.

    Raises:
        InputError: see :func:`read_hu_volume`.
    """

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        hu, meta = preprocess_volume(read_hu_volume(path, preprocessing, geometry), preprocessing)
        return {"hu": hu}, meta

    if cache is None:
        arrays, meta = compute()
    else:
        arrays, meta = cache.get_or_compute(volume_cache_key(path, preprocessing, geometry), compute)
    return arrays["hu"], meta


def crop_volume(
    image: torch.Tensor, crop_size: Sequence[int], mode: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crop the last three axes of ``image`` (..., X, Y, Z) to ``crop_size``.

    Args:
        image: the volume, e.g. (1, X, Y, Z).
        crop_size: output size (x, y, z), at most the input's.
        mode: ``"random"`` (uniform offsets from ``generator``), ``"center"`` (MONAI ``CenterSpatialCrop``'s
            offsets, ``(size - crop) // 2``) or ``"none"`` (returned as is).
        generator: random source of ``"random"``. Defaults to None (torch's global generator).

    Returns:
        A view of ``image`` of shape (..., *crop_size) (``image`` itself for ``"none"``).

    Raises:
        ValueError: an unknown mode, or a crop larger than the image.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    if mode == "none":
        return image
    shape = image.shape[-3:]
    if any(c > s for c, s in zip(crop_size, shape)):
        raise ValueError(f"crop_size {tuple(crop_size)} exceeds the volume size {tuple(shape)}")
    if mode == "random":
        starts = [int(torch.randint(s - c + 1, (), generator=generator)) for s, c in zip(shape, crop_size)]
    else:
        starts = [(s - c) // 2 for s, c in zip(shape, crop_size)]
    x, y, z = (slice(start, start + c) for start, c in zip(starts, crop_size))
    return image[..., x, y, z]


def to_model_input(
    hu: np.ndarray,
    preprocessing: CTVolumePreprocessing,
    crop: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Turn a cached int16 HU volume into the model's input: scale, normalise, crop.

    Args:
        hu: (X, Y, Z) HU array from :func:`load_preprocessed`.
        preprocessing: the parameters (``hu_range``, ``mean_std``, ``crop_size``).
        crop: ``"random"`` (training), ``"center"`` (evaluation at ``crop_size``) or ``"none"`` (full ``size``).
            Defaults to "center".
        generator: random source of random crops. Defaults to None.

    Returns:
        float32 (1, X', Y', Z') tensor: ``crop_size`` (``size`` with ``"none"``), values in ``[-1, 1]`` before the
        optional ``mean_std`` normalisation.
    """
    image = crop_volume(torch.from_numpy(np.asarray(hu))[None], preprocessing.crop_size, crop, generator)
    low, high = preprocessing.hu_range
    image = ScaleIntensityRange(low, high, -1.0, 1.0, clip=True, dtype=torch.float32)(image.float())
    if preprocessing.mean_std is not None:
        mean, std = preprocessing.mean_std
        image = NormalizeIntensity(subtrahend=mean, divisor=std)(image)
    if isinstance(image, MetaTensor):
        image = image.as_tensor()
    return image.to(torch.float32).contiguous()
