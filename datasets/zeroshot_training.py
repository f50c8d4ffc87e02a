"""What the zero-shot LightningModules (CARZero, BrgSA) share: validation by zero-shot macro AUROC and the released
optimiser defaults.

* :func:`log_zero_shot_auroc`: gathers the per-image scores and labels of a validation epoch over all processes and logs
  ``val/macro_auroc`` (classes without both positives and negatives are excluded and counted in
  ``val/auroc_classes``).
* :func:`plateau_optimizers`: the optimiser from the CLI's factory or the released default, with
  ``ReduceLROnPlateau`` on ``val/macro_auroc`` (halving after 5 epochs without gain) unless a scheduler is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule

from datasets.metrics import evaluate_multilabel

__all__ = ["log_zero_shot_auroc", "plateau_optimizers"]

logger = logging.getLogger(__name__)


def log_zero_shot_auroc(
    module: LightningModule, scores: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], prompts: Sequence[str]
) -> None:
    """Log the zero-shot macro AUROC of one validation epoch.

    Args:
        module: the LightningModule (its ``trainer`` decides whether to gather across processes).
        scores: per-batch scores, ``(B, C)`` each, columns in ``prompts`` order.
        labels: per-batch labels, ``(B, C)`` each: 1/0, NaN for "not labelled".
        prompts: the C class prompts (they name the classes in the log).
    """
    if not scores:
        return
    all_scores, all_labels = torch.cat(list(scores)).float(), torch.cat(list(labels)).float()  # (N, C) each
    if module.trainer.world_size > 1:
        all_scores = module.all_gather(all_scores).flatten(0, 1)
        all_labels = module.all_gather(all_labels).flatten(0, 1)
    result = evaluate_multilabel(all_scores.cpu().numpy(), all_labels.cpu().numpy(), list(prompts))
    if result.excluded:
        logger.info("zero-shot validation: %d classes excluded from the macro AUROC: %s", len(result.excluded),
                    result.excluded)
    module.log("val/macro_auroc", result.macro["auroc"], prog_bar=True)
    module.log("val/auroc_classes", float(len(prompts) - len(result.excluded)))


def plateau_optimizers(
    parameters: Iterable[torch.nn.Parameter],
    optimizer_factory: Callable[[Any], torch.optim.Optimizer] | None,
    scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None,
    default_optimizer: type[torch.optim.Optimizer],
) -> dict[str, Any]:
    """``configure_optimizers``' return value for the zero-shot models.

    Args:
        parameters: the trainable parameters.
        optimizer_factory: the CLI's optimiser factory, or None for ``default_optimizer`` with the released settings
            (lr 5e-5, betas (0.5, 0.999), weight decay 1e-6).
        scheduler_factory: the CLI's scheduler factory, or None for ``ReduceLROnPlateau`` (mode max, factor 0.5,
            patience 5) on ``val/macro_auroc``.
        default_optimizer: ``torch.optim.Adam`` (CARZero) or ``torch.optim.AdamW`` (BrgSA).
    """
    parameters = list(parameters)
    if optimizer_factory is not None:
        optimizer = optimizer_factory(parameters)
    else:
        optimizer = default_optimizer(parameters, lr=5e-5, betas=(0.5, 0.999), weight_decay=1e-6)
    if scheduler_factory is not None:
        scheduler = scheduler_factory(optimizer)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=5)
    # strict=False: without a validation loop the plateau scheduler is skipped with a warning instead of failing
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/macro_auroc",
                                                     "strict": False}}
