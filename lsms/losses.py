"""LSMS training losses: Dice + BCE on logits with deep supervision, and an optional region-sentence contrastive term.

The LSMS paper (v3) trains with "a segmentation loss and a vision-language contrastive loss" without giving either;
both below are our choices (``docs/lsms_reconstruction.md``). Every loss takes **logits**: Dice applies the sigmoid
itself and BCE uses ``binary_cross_entropy_with_logits``. Feeding probabilities would apply a second sigmoid (the
GuideDecoder quirk described in the research notes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LSMSLoss", "dice_loss_with_logits", "region_sentence_contrastive_loss"]


def dice_loss_with_logits(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per sample, averaged over the batch.

    Args:
        logits: (B, 1, H, W) mask logits.
        target: (B, 1, H, W) binary mask.
        smooth: added to numerator and denominator, so an empty target with an empty prediction costs ~0.
            Defaults to 1.0.

    Returns:
        Scalar loss, ``1 - mean_b (2 |P * T| + s) / (|P| + |T| + s)`` with P = sigmoid(logits).
    """
    probs = torch.sigmoid(logits).flatten(1)  # (B, HW)
    target = target.flatten(1).to(probs.dtype)  # (B, HW)
    intersection = (probs * target).sum(1)
    dice = (2 * intersection + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return 1 - dice.mean()


def _pool_to(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-pool (B, 1, H, W) masks onto the (h, w) grid of embeddings that cover the input padded at bottom/right."""
    height, width = size
    stride_h, stride_w = -(-masks.shape[-2] // height), -(-masks.shape[-1] // width)  # ceil division
    padded = F.pad(masks, (0, width * stride_w - masks.shape[-1], 0, height * stride_h - masks.shape[-2]))
    return F.avg_pool2d(padded, kernel_size=(stride_h, stride_w))  # (B, 1, h, w), fraction of lesion per cell


def region_sentence_contrastive_loss(
    pixel_embeds: torch.Tensor,
    sentence_embeds: torch.Tensor,
    masks: torch.Tensor,
    logit_scale: torch.Tensor,
    texts: Sequence[str] | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between mask-pooled visual regions and sentence embeddings across the batch.

    Each sample's region embedding is the mean of its pixel embeddings under its ground-truth mask. Samples with an
    empty mask have no region and are left out. A sample whose text repeats another sample's text is neither a positive
    nor a negative of it (masked out of the softmax), so duplicated expressions in a batch are not pushed apart.
    Computed per device batch (no gather).

    Args:
        pixel_embeds: (B, E, h, w) L2-normalised pixel embeddings covering the input padded at its bottom/right.
        sentence_embeds: (B, E) L2-normalised sentence embeddings.
        masks: (B, 1, H, W) binary ground-truth masks.
        logit_scale: scalar inverse temperature.
        texts: the B expressions, to find duplicates; None treats every sample as distinct. Defaults to None.

    Returns:
        Scalar loss; 0 (still attached to the graph) when fewer than two samples have a lesion.
    """
    weights = _pool_to(masks.to(pixel_embeds.dtype), tuple(pixel_embeds.shape[-2:]))  # (B, 1, h, w)
    area = weights.flatten(1).sum(1)  # (B,)
    valid = area > 0
    if int(valid.sum()) < 2:
        return (pixel_embeds.sum() + sentence_embeds.sum() + logit_scale) * 0.0
    regions = (pixel_embeds * weights).flatten(2).sum(2) / area.clamp_min(1e-6)[:, None]  # (B, E)
    regions = F.normalize(regions[valid], dim=-1)  # (V, E)
    sentences = sentence_embeds[valid]  # (V, E)
    logits = logit_scale * regions @ sentences.t()  # (V, V)
    if texts is not None:
        kept = [text for text, keep in zip(texts, valid.tolist()) if keep]
        duplicate = torch.tensor([[a == b for b in kept] for a in kept], device=logits.device)  # (V, V)
        duplicate.fill_diagonal_(False)
        logits = logits.masked_fill(duplicate, float("-inf"))  # a repeated text is neither positive nor negative
    targets = torch.arange(len(regions), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class LSMSLoss(nn.Module):
    """Weighted LSMS loss; keyword arguments match :class:`lsms.model.LSMSOutput` fields.

    ``loss = seg(logits) + deep_supervision_weight * mean_i seg(aux_i) + contrastive_weight * contrastive`` with
    ``seg = dice_weight * Dice + bce_weight * BCE``, all on logits at the input size.

    Args:
        dice_weight: weight of the soft Dice term. Defaults to 1.0.
        bce_weight: weight of the BCE term. Defaults to 1.0.
        deep_supervision_weight: weight of the mean deep-supervision loss. Defaults to 0.4.
        contrastive_weight: weight of :func:`region_sentence_contrastive_loss`; needs a model with
            ``contrastive_dim > 0``. Defaults to 0.0.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        deep_supervision_weight: float = 0.4,
        contrastive_weight: float = 0.0,
    ) -> None:
        super().__init__()
        weights = {
            "dice_weight": dice_weight,
            "bce_weight": bce_weight,
            "deep_supervision_weight": deep_supervision_weight,
            "contrastive_weight": contrastive_weight,
        }
        negative = {name: value for name, value in weights.items() if value < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}")
        if dice_weight + bce_weight == 0:
            raise ValueError("dice_weight and bce_weight are both 0: nothing would train the mask; set one > 0")
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.deep_supervision_weight = deep_supervision_weight
        self.contrastive_weight = contrastive_weight

    def segmentation_loss(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (Dice loss, BCE loss) of (B, 1, H, W) logits against a (B, 1, H, W) binary target."""
        bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))
        return dice_loss_with_logits(logits, target), bce

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        aux_logits: Sequence[torch.Tensor] = (),
        pixel_embeds: torch.Tensor | None = None,
        sentence_embeds: torch.Tensor | None = None,
        logit_scale: torch.Tensor | None = None,
        texts: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute every term.

        Returns:
            ``loss`` (the total to back-propagate), ``dice_loss``, ``bce_loss``, and when used ``aux_loss`` and
            ``contrastive_loss``.
        """
        if logits.shape != target.shape:
            raise ValueError(f"mask shape {tuple(target.shape)} must equal the logits shape {tuple(logits.shape)}")
        dice, bce = self.segmentation_loss(logits, target)
        losses = {"dice_loss": dice, "bce_loss": bce}
        total = self.dice_weight * dice + self.bce_weight * bce
        if aux_logits and self.deep_supervision_weight:
            aux_terms = [self.segmentation_loss(aux, target) for aux in aux_logits]
            aux = torch.stack([self.dice_weight * d + self.bce_weight * b for d, b in aux_terms]).mean()
            losses["aux_loss"] = aux
            total = total + self.deep_supervision_weight * aux
        if self.contrastive_weight:
            if pixel_embeds is None or sentence_embeds is None or logit_scale is None:
                raise ValueError(
                    f"contrastive_weight={self.contrastive_weight} needs pixel and sentence embeddings: "
                    "build the model with contrastive_dim > 0"
                )
            contrastive = region_sentence_contrastive_loss(pixel_embeds, sentence_embeds, target, logit_scale, texts)
            losses["contrastive_loss"] = contrastive
            total = total + self.contrastive_weight * contrastive
        losses["loss"] = total
        return losses
