"""CARZero's training loss: symmetric cross-entropy over the image-text score matrices of both fusion directions.

For a ``B x B`` score matrix ``S`` (images as rows, texts as columns, matched pairs on the diagonal) the loss is
``(CE(S, arange(B)) + CE(S^T, arange(B))) / 2``; the released model applies it to the image-to-text and the
text-to-image matrices and adds both. The fusion head outputs logits directly, so there is no temperature by default.

In multi-process training each process holds its own ``B_local`` images and texts and scores them against the
gathered global batch: its images' rows against all ``B_global`` texts and its texts' columns against all images.
``label_offset = rank * B_local`` points to the matched pair inside the global batch.

Identical texts in one batch (several normal studies whose impression is "No acute process", or the same sampled
"There is <finding>" sentence) are false negatives for the plain loss: it asks each image to prefer its own copy of a
text over the identical copy of another image. The released code has this defect. ``positives`` fixes it: every pair
whose texts are identical is a target, with the probability mass spread evenly (multi-positive InfoNCE); with no
duplicates in the batch it equals the plain loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CARZeroLoss", "symmetric_cross_entropy"]


def symmetric_cross_entropy(
    image_rows: torch.Tensor,
    text_rows: torch.Tensor,
    label_offset: int = 0,
    temperature: float | None = None,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE from the rows of the local images and the columns of the local texts.

    Args:
        image_rows: ``(B_local, B_global)`` scores of each local image against every text.
        text_rows: ``(B_local, B_global)`` scores of each local text against every image (the score matrix's columns,
            transposed). On a single process pass ``scores`` and ``scores.T``.
        label_offset: global index of the first local pair. Defaults to 0.
        temperature: divide the scores by this value; None keeps the raw logits (as released). Defaults to None.

    Returns:
        Scalar loss, ``(CE(image_rows) + CE(text_rows)) / 2``.
    """
    if image_rows.shape != text_rows.shape or image_rows.ndim != 2:
        raise ValueError(
            f"image_rows and text_rows must both be (B_local, B_global), got {tuple(image_rows.shape)} and "
            f"{tuple(text_rows.shape)}"
        )
    if image_rows.shape[1] < label_offset + image_rows.shape[0]:
        raise ValueError(
            f"label_offset {label_offset} + B_local {image_rows.shape[0]} exceeds B_global {image_rows.shape[1]}"
        )
    if temperature is not None:
        image_rows, text_rows = image_rows / temperature, text_rows / temperature
    if positives is None:
        targets = torch.arange(image_rows.shape[0], device=image_rows.device) + label_offset
        return (F.cross_entropy(image_rows, targets) + F.cross_entropy(text_rows, targets)) / 2
    if positives.shape != image_rows.shape:
        raise ValueError(f"positives must be {tuple(image_rows.shape)}, got {tuple(positives.shape)}")
    diagonal = torch.arange(image_rows.shape[0], device=positives.device)
    if not positives[diagonal, diagonal + label_offset].all():
        raise ValueError("positives must be True for every matched pair (text i equals itself)")
    soft_targets = positives.to(image_rows.dtype) / positives.sum(dim=1, keepdim=True)  # rows sum to 1
    return (F.cross_entropy(image_rows, soft_targets) + F.cross_entropy(text_rows, soft_targets)) / 2


class CARZeroLoss(nn.Module):
    """Sum of the symmetric cross-entropies of the image-to-text and text-to-image score matrices.

    Args:
        temperature: optional temperature applied to both matrices; None as in the paper. Defaults to None.
        image_to_text_weight: weight of the image-to-text term. Defaults to 1.0.
        text_to_image_weight: weight of the text-to-image term. Defaults to 1.0.
        duplicates_as_positives: treat pairs with identical texts as targets when ``forward`` gets ``positives``
            (see the module docstring). False reproduces the released loss. Defaults to True.
    """

    def __init__(
        self,
        temperature: float | None = None,
        image_to_text_weight: float = 1.0,
        text_to_image_weight: float = 1.0,
        duplicates_as_positives: bool = True,
    ) -> None:
        super().__init__()
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive or None, got {temperature}")
        self.temperature = temperature
        self.image_to_text_weight = image_to_text_weight
        self.text_to_image_weight = text_to_image_weight
        self.duplicates_as_positives = duplicates_as_positives

    def forward(
        self,
        image_to_text_image_rows: torch.Tensor,
        image_to_text_text_rows: torch.Tensor,
        text_to_image_image_rows: torch.Tensor,
        text_to_image_text_rows: torch.Tensor,
        label_offset: int = 0,
        positives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss terms.

        Args:
            image_to_text_image_rows: ``(B_local, B_global)`` image-to-text scores of local images vs all texts.
            image_to_text_text_rows: ``(B_local, B_global)`` image-to-text scores of local texts vs all images.
            text_to_image_image_rows: ``(B_local, B_global)`` text-to-image scores of local images vs all texts.
            text_to_image_text_rows: ``(B_local, B_global)`` text-to-image scores of local texts vs all images.
            label_offset: global index of the first local pair. Defaults to 0.
            positives: ``(B_local, B_global)`` bool, identical texts (see :func:`symmetric_cross_entropy`); used only
                with ``duplicates_as_positives``. Defaults to None.

        Returns:
            ``{"loss", "image_to_text_loss", "text_to_image_loss"}``, scalars.
        """
        positives = positives if self.duplicates_as_positives else None
        image_to_text_loss = symmetric_cross_entropy(
            image_to_text_image_rows, image_to_text_text_rows, label_offset, self.temperature, positives
        )
        text_to_image_loss = symmetric_cross_entropy(
            text_to_image_image_rows, text_to_image_text_rows, label_offset, self.temperature, positives
        )
        loss = self.image_to_text_weight * image_to_text_loss + self.text_to_image_weight * text_to_image_loss
        return {"loss": loss, "image_to_text_loss": image_to_text_loss, "text_to_image_loss": text_to_image_loss}
