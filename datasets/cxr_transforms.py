"""Chest-radiograph preprocessing for image-text training and zero-shot evaluation.

One JSON-serialisable :class:`CXRPreprocessing` holds every option, so a model folder can store it (``to_dict``) and
rebuild the exact input pipeline (``from_dict``). Steps, in order:

1. intensity to ``[0, 1]``: ``intensity="minmax"`` (default) scales each image by its own minimum and maximum (a
   constant image becomes 0); ``intensity="range"`` divides by the file's nominal value range (0..255 for 8-bit,
   0..65535 for 16-bit files, ``read_cxr(path).meta["value_range"]``), which is what CARZero's 8-bit image reader
   sees, up to its rounding;
2. geometry: ``resize="stretch"`` (default) resizes to ``image_size x image_size`` (bilinear with antialiasing; the
   aspect ratio is not kept, as radiographs are near-square); ``resize="pad_crop"`` is the released CARZero / GLoRIA
   pipeline: the longest side resized to ``load_size`` keeping the aspect ratio (the release uses OpenCV's area
   interpolation, here bilinear with antialiasing), zero-padded evenly to ``load_size x load_size``, then a centre
   crop of ``image_size`` (evaluation) or a random crop (training);
3. training only, optional augmentation: a small random affine (rotation, translation, scale; zero padding) and a
   random contrast/brightness change ``x * (1 + a) + b`` clipped to ``[0, 1]``. Horizontal flips are **off by default**
   because reports name sides; ``flip_lr`` exists for image-only use;
4. ``(x - mean) / std`` and repeat to ``channels``.

``CXRPreprocessing.released_carzero()`` gives the released model's evaluation settings (``carzero convert-official``
stores them with the converted weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datasets.augment import random_affine

__all__ = ["CXRPreprocessing", "CARZERO_MEAN", "CARZERO_STD", "RESIZE_MODES", "INTENSITY_MODES"]

CARZERO_MEAN = 0.4978
CARZERO_STD = 0.2449
"""CARZero's ``CXR_MAE`` normalisation constants (same for all three channels)."""
RESIZE_MODES = ("stretch", "pad_crop")
INTENSITY_MODES = ("minmax", "range")


@dataclass(frozen=True)
class CXRPreprocessing:
    """Radiograph preprocessing and augmentation options.

    Args:
        image_size: side of the square model input. Defaults to 224.
        channels: output channels ``C`` (the grey image repeated). Defaults to 3.
        mean: subtracted after min-max scaling. Defaults to 0.4978 (CARZero).
        std: divisor after subtracting ``mean``. Defaults to 0.2449 (CARZero).
        rotate_deg: maximum absolute random rotation, degrees. Defaults to 0.0 (off).
        translate: maximum absolute random shift, fraction of the side. Defaults to 0.0 (off).
        scale: maximum relative random zoom, e.g. 0.1 for ``[0.9, 1.1]``. Defaults to 0.0 (off).
        intensity_jitter: ``j`` of the random contrast/brightness change, ``a, b ~ U(-j, j)``. Defaults to 0.0 (off).
        flip_lr: random left-right flip with probability 0.5. Defaults to False (reports name sides).
        resize: ``"stretch"`` or ``"pad_crop"`` (see the module docstring). Defaults to ``"stretch"``.
        load_size: side of the padded square that ``"pad_crop"`` crops ``image_size`` from; at least
            ``image_size``. Defaults to 256 (CARZero). Unused by ``"stretch"``.
        intensity: ``"minmax"`` or ``"range"`` (see the module docstring). Defaults to ``"minmax"``.

    Example::

        pre = CXRPreprocessing(image_size=128, channels=3)
        pre(np.random.rand(300, 280).astype(np.float32)).shape  # torch.Size([3, 128, 128])
    """

    image_size: int = 224
    channels: int = 3
    mean: float = CARZERO_MEAN
    std: float = CARZERO_STD
    rotate_deg: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    intensity_jitter: float = 0.0
    flip_lr: bool = False
    resize: str = "stretch"
    load_size: int = 256
    intensity: str = "minmax"

    @classmethod
    def released_carzero(cls, image_size: int = 224, channels: int = 3) -> CXRPreprocessing:
        """The released CARZero evaluation pipeline: 8-bit range, longest side to 256, zero pad, centre crop 224."""
        return cls(image_size, channels, resize="pad_crop", load_size=round(image_size * 256 / 224),
                   intensity="range")

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < 8:
            problems.append(f"image_size must be >= 8, got {self.image_size}")
        if self.channels < 1:
            problems.append(f"channels must be >= 1, got {self.channels}")
        if not self.std > 0:
            problems.append(f"std must be > 0, got {self.std}")
        if not 0.0 <= self.rotate_deg <= 45.0:
            problems.append(f"rotate_deg must be in [0, 45], got {self.rotate_deg}")
        for name in ("translate", "scale", "intensity_jitter"):
            if not 0.0 <= getattr(self, name) < 0.5:
                problems.append(f"{name} must be in [0, 0.5), got {getattr(self, name)}")
        if self.resize not in RESIZE_MODES:
            problems.append(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        elif self.resize == "pad_crop" and self.load_size < self.image_size:
            problems.append(f"load_size ({self.load_size}) must be >= image_size ({self.image_size}) for 'pad_crop'")
        if self.intensity not in INTENSITY_MODES:
            problems.append(f"intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")
        if problems:
            raise ValueError("invalid CXRPreprocessing: " + "; ".join(problems))

    @property
    def augments(self) -> bool:
        """Whether any training augmentation is switched on."""
        return bool(self.rotate_deg or self.translate or self.scale or self.intensity_jitter or self.flip_lr)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CXRPreprocessing:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            ValueError: an unknown key (the message lists the known ones) or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CXRPreprocessing option(s) {unknown}; known options: {sorted(known)}")
        return cls(**values)

    def __call__(
        self,
        array: np.ndarray,
        generator: torch.Generator | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Preprocess one radiograph.

        Args:
            array: ``(H, W)`` grey image in display order (e.g. ``read_cxr(path).array``).
            generator: random generator of the augmentation; None means no augmentation (evaluation).
                Defaults to None.
            value_range: nominal ``(low, high)`` of ``array`` (``read_cxr(path).meta["value_range"]``); needed by
                ``intensity="range"``, ignored otherwise. Defaults to None.

        Returns:
            float32 tensor ``(C, image_size, image_size)``.

        Raises:
            ValueError: ``array`` is not 2D, or ``intensity="range"`` without ``value_range``.
        """
        if array.ndim != 2:
            raise ValueError(f"expected a 2D (H, W) grey radiograph, got shape {array.shape}")
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if self.intensity == "range":
            if value_range is None:
                raise ValueError("intensity='range' divides by the file's nominal value range: pass value_range "
                                 "(read_cxr(path).meta['value_range'])")
            low, high = (float(value) for value in value_range)
        else:
            low, high = float(image.min()), float(image.max())
        image = ((image - low) / (high - low)).clamp(0.0, 1.0) if high > low else torch.zeros_like(image)
        if self.resize == "pad_crop":
            image = self._pad_crop(image, generator)  # random crop in training, as released
        else:
            image = F.interpolate(image[None, None], size=(self.image_size,) * 2, mode="bilinear",
                                  align_corners=False, antialias=True)[0]  # (1, S, S)
        if generator is not None and self.augments:
            image = self._augment(image, generator)
        image = (image - self.mean) / self.std
        return image.expand(self.channels, -1, -1).contiguous()

    def _pad_crop(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(H, W)`` in [0, 1] -> ``(1, S, S)``: longest side to ``load_size``, even zero padding, then a centre crop
        (``generator`` None) or a random crop of ``image_size``."""
        height, width = image.shape
        ratio = self.load_size / max(height, width)
        size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
        resized = F.interpolate(image[None, None], size=size, mode="bilinear", align_corners=False,
                                antialias=True)[0]  # (1, h, w)
        pad_h, pad_w = self.load_size - size[0], self.load_size - size[1]
        padded = F.pad(resized, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))  # (1, L, L)
        spare = self.load_size - self.image_size
        if generator is None:
            top = left = round(spare / 2)
        else:
            top, left = (int(value) for value in torch.randint(spare + 1, (2,), generator=generator))
        return padded[:, top:top + self.image_size, left:left + self.image_size]

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random affine, intensity change and (optional) flip of a ``(1, S, S)`` image in ``[0, 1]``."""
        if self.rotate_deg or self.translate or self.scale:
            (image,) = random_affine([image], generator, self.rotate_deg, self.translate, self.scale)
        u = torch.rand(2, generator=generator) * 2 - 1  # U(-1, 1)
        if self.intensity_jitter:
            image = (image * (1 + self.intensity_jitter * float(u[0])) + self.intensity_jitter * float(u[1]))
            image = image.clamp(0.0, 1.0)
        if self.flip_lr and torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
        return image
