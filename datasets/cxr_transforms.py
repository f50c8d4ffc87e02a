"""Chest-radiograph preprocessing for image-text training and zero-shot evaluation.

One JSON-serialisable :class:`CXRPreprocessing` holds every option, so a model folder can store it (``to_dict``) and
rebuild the exact input pipeline (``from_dict``). Steps, in order:

1. per-image min-max scaling of the display-ordered grey array to ``[0, 1]`` (a constant image becomes 0);
2. resize to ``image_size x image_size`` (bilinear with antialiasing; the aspect ratio is not kept, as radiographs are
   near-square: pad first if yours are not);
3. training only, optional augmentation: a small random affine (rotation, translation, scale; zero padding) and a
   random contrast/brightness change ``x * (1 + a) + b`` clipped to ``[0, 1]``. Horizontal flips are **off by default**
   because reports name sides; ``flip_lr`` exists for image-only use;
4. ``(x - mean) / std`` and repeat to ``channels``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datasets.augment import random_affine

__all__ = ["CXRPreprocessing", "CARZERO_MEAN", "CARZERO_STD"]

CARZERO_MEAN = 0.4978
CARZERO_STD = 0.2449
"""CARZero's ``CXR_MAE`` normalisation constants (same for all three channels)."""


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

    def __call__(self, array: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Preprocess one radiograph.

        Args:
            array: ``(H, W)`` grey image in display order (e.g. ``read_cxr(path).array``).
            generator: random generator of the augmentation; None means no augmentation (evaluation).
                Defaults to None.

        Returns:
            float32 tensor ``(C, image_size, image_size)``.

        Raises:
            ValueError: ``array`` is not 2D.
        """
        if array.ndim != 2:
            raise ValueError(f"expected a 2D (H, W) grey radiograph, got shape {array.shape}")
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
        image = F.interpolate(image[None, None], size=(self.image_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=True)[0]  # (1, S, S)
        if generator is not None and self.augments:
            image = self._augment(image, generator)
        image = (image - self.mean) / self.std
        return image.expand(self.channels, -1, -1).contiguous()

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
