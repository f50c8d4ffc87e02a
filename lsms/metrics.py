"""Referring-segmentation metrics: Dice, mIoU, overall IoU and precision@IoU, as one torchmetrics ``Metric``.

Definitions (one "expression" = one (image, text, mask) sample):

- ``dice``: Dice of each expression, averaged over expressions. An empty prediction for a present lesion scores 0;
  an empty prediction for an empty target scores 1 (nothing to find, nothing found).
- ``miou``: IoU of each expression, averaged (same empty/empty = 1 convention).
- ``oiou``: overall IoU, total intersection / total union over every pixel of the set, so large lesions weigh more
  (1 when every target and prediction is empty).
- ``p@t``: fraction of expressions whose IoU is strictly greater than ``t``.

All states are sums with ``dist_reduce_fx="sum"``, so the values are exact across processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = ["ReferringSegmentationMetrics"]


class ReferringSegmentationMetrics(Metric):
    """Dice, mIoU, oIoU and P@t of binary masks.

    Args:
        iou_thresholds: IoU thresholds of the precision metrics. Defaults to (0.5, 0.7, 0.9).
        mask_threshold: predictions above it (probabilities) count as foreground. Defaults to 0.5.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example::

        metric = ReferringSegmentationMetrics()
        metric.update(torch.sigmoid(logits), masks)  # (B, 1, H, W) each
        metric.compute()  # {"dice": ..., "miou": ..., "oiou": ..., "p@0.5": ..., "p@0.7": ..., "p@0.9": ...}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, iou_thresholds: Sequence[float] = (0.5, 0.7, 0.9), mask_threshold: float = 0.5, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not all(0 <= threshold < 1 for threshold in iou_thresholds):
            raise ValueError(f"iou_thresholds must lie in [0, 1), got {tuple(iou_thresholds)}")
        self.iou_thresholds = tuple(float(threshold) for threshold in iou_thresholds)
        self.mask_threshold = mask_threshold
        self.add_state("dice_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_expressions", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total_intersection", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total_union", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "hits", default=torch.zeros(len(self.iou_thresholds), dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            preds: (B, 1, H, W) (or (B, H, W)) probabilities or binary masks.
            target: binary masks of the same shape.
        """
        if preds.shape != target.shape:
            raise ValueError(f"preds shape {tuple(preds.shape)} must equal target shape {tuple(target.shape)}")
        predicted = (preds > self.mask_threshold if preds.is_floating_point() else preds.bool()).flatten(1)  # (B, N)
        truth = target.bool().flatten(1)  # (B, N)
        intersection = (predicted & truth).sum(1)  # (B,)
        union = (predicted | truth).sum(1)
        total = predicted.sum(1) + truth.sum(1)
        both_empty = union == 0
        dice = torch.where(both_empty, 1.0, 2 * intersection.double() / total.double().clamp_min(1))
        iou = torch.where(both_empty, 1.0, intersection.double() / union.double().clamp_min(1))
        self.dice_sum += dice.sum()
        self.iou_sum += iou.sum()
        self.num_expressions += predicted.shape[0]
        self.total_intersection += intersection.sum()
        self.total_union += union.sum()
        thresholds = torch.tensor(self.iou_thresholds, dtype=torch.float64, device=iou.device)
        self.hits += (iou[:, None] > thresholds[None, :]).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        """Return ``dice``, ``miou``, ``oiou`` and ``p@t`` per threshold (float32 scalars; NaN before any update)."""
        count = self.num_expressions.double()
        if self.total_union > 0:
            overall_iou = self.total_intersection.double() / self.total_union.double()
        else:  # every target and prediction empty: 1, or NaN before any update
            overall_iou = torch.ones_like(count) if self.num_expressions > 0 else torch.full_like(count, float("nan"))
        values = {"dice": self.dice_sum / count, "miou": self.iou_sum / count, "oiou": overall_iou}
        for threshold, hits in zip(self.iou_thresholds, self.hits):
            values[f"p@{threshold:g}"] = hits.double() / count
        return {name: value.float() for name, value in values.items()}
