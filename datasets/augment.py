"""Seeded geometric augmentation shared by the 2D training pipelines (radiographs, CT slices)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["random_affine"]


def random_affine(
    images: Sequence[torch.Tensor],
    generator: torch.Generator,
    rotate_deg: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
) -> list[torch.Tensor]:
    """Apply one random affine map (rotation about the centre, zoom, shift) to several aligned images.

    Every image gets the same map, bilinear resampling and zero padding, so an image and its (soft) mask stay aligned.

    Args:
        images: ``(C, H, W)`` float tensors of the same ``H, W``.
        generator: the random generator (one draw of 3 numbers).
        rotate_deg: maximum absolute rotation, degrees.
        translate: maximum absolute shift, fraction of the side.
        scale: maximum relative zoom, e.g. 0.1 for ``[0.9, 1.1]``.

    Returns:
        The transformed images, same shapes and dtypes.
    """
    u = torch.rand(4, generator=generator) * 2 - 1  # U(-1, 1)
    angle = math.radians(rotate_deg * float(u[0]))
    zoom = 1.0 + scale * float(u[1])
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[cos, -sin, 2 * translate * float(u[2])], [sin, cos, 2 * translate * float(u[3])]])[None]
    height, width = images[0].shape[-2:]
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)  # (1, H, W, 2)
    return [
        F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        .to(image.dtype)
        for image in images
    ]
