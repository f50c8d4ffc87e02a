"""LightningModule for LSMS: loss, metrics, optimiser and schedule around an injected :class:`lsms.model.LSMS`.

Batches are the referring-segmentation DataModule's dicts: ``image`` (B, C, H, W) float in [0, 1], ``mask``
(B, 1, H, W) float in {0, 1}, ``text`` list of B expressions, ``meta`` list of B dicts (optional).
"""

from __future__ import annotations

import logging
import math
from dataclasses import fields
from typing import Any

import torch
from lightning.pytorch import LightningModule

from lsms.losses import LSMSLoss
from lsms.metrics import ReferringSegmentationMetrics
from lsms.model import LSMS, LSMSOutput

__all__ = ["LSMSModule"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("image", "mask", "text")


class LSMSModule(LightningModule):
    """Train, validate, test and predict LSMS.

    Loss: Dice + BCE on logits at the input size, plus ``deep_supervision_weight`` times the mean of the same loss
    on the deep-supervision maps, plus an optional region-sentence InfoNCE (:mod:`lsms.losses`). Optimiser: AdamW
    (no weight decay on biases, norms and the temperature; a trainable text encoder gets ``lr * text_lr_ratio``) with
    linear warm-up then cosine decay to 0 over ``trainer.estimated_stepping_batches``, stepped every batch.
    Metrics (:class:`lsms.metrics.ReferringSegmentationMetrics`): ``val/dice``, ``val/miou``, ``val/oiou``,
    ``val/p@0.5``, ``val/p@0.7``, ``val/p@0.9`` and the same under ``test/``.

    ``net`` is not a hyper-parameter; checkpoints store its constructor arguments under ``"lsms_config"``, so one
    reloads with ``config = torch.load(path, weights_only=True)["lsms_config"]`` and
    ``LSMSModule.load_from_checkpoint(path, net=LSMS(**config))``.

    Args:
        net: the :class:`lsms.model.LSMS` network (in YAML: ``class_path: lsms.model.LSMS`` with ``init_args``).
        dice_weight: weight of the Dice term. Defaults to 1.0.
        bce_weight: weight of the BCE term. Defaults to 1.0.
        deep_supervision_weight: weight of the deep-supervision loss. Defaults to 0.4.
        contrastive_weight: weight of the region-sentence contrastive loss; > 0 needs ``net`` built with
            ``contrastive_dim > 0`` (0.1 is a sensible start). Defaults to 0.0.
        lr: peak learning rate (GuideDecoder's 3e-4 with AdamW). Defaults to 3e-4.
        weight_decay: AdamW weight decay. Defaults to 0.01.
        warmup_steps: linear warm-up steps before the cosine decay. Defaults to 0.
        text_lr_ratio: learning-rate multiplier of a trainable (unfrozen) text encoder. Defaults to 0.1.
        mask_threshold: probability above which a pixel is predicted foreground. Defaults to 0.5.
    """

    def __init__(
        self,
        net: LSMS,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        deep_supervision_weight: float = 0.4,
        contrastive_weight: float = 0.0,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        text_lr_ratio: float = 0.1,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0 or warmup_steps < 0 or text_lr_ratio < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, warmup_steps >= 0 and text_lr_ratio >= 0; got lr={lr}, "
                f"weight_decay={weight_decay}, warmup_steps={warmup_steps}, text_lr_ratio={text_lr_ratio}"
            )
        if not 0 < mask_threshold < 1:
            raise ValueError(f"mask_threshold must lie in (0, 1), got {mask_threshold}")
        has_contrastive_head = net.pixel_projection is not None
        if contrastive_weight > 0 and not has_contrastive_head:
            raise ValueError(
                f"contrastive_weight={contrastive_weight} needs a contrastive head: "
                "build the net with contrastive_dim > 0"
            )
        if has_contrastive_head and contrastive_weight == 0:
            logger.warning("the net has a contrastive head (contrastive_dim > 0) but contrastive_weight=0: unused")
        self.save_hyperparameters(ignore=["net"])
        self._total_steps: int | None = None  # optimizer steps of the whole run, known once training starts
        self.net = net
        self.loss = LSMSLoss(dice_weight, bce_weight, deep_supervision_weight, contrastive_weight)
        self.val_metrics = ReferringSegmentationMetrics(mask_threshold=mask_threshold)
        self.test_metrics = ReferringSegmentationMetrics(mask_threshold=mask_threshold)

    def forward(self, images: torch.Tensor, texts: list[str]) -> LSMSOutput:
        """Run the network: images (B, C, H, W) and B texts -> :class:`lsms.model.LSMSOutput`."""
        return self.net(images, texts)

    @staticmethod
    def _check_batch(batch: dict[str, Any]) -> None:
        missing = [key for key in _REQUIRED_KEYS if key not in batch]
        if missing:
            raise ValueError(
                f"the batch lacks {missing}; LSMS batches are dicts with 'image' (B, C, H, W), 'mask' (B, 1, H, W) "
                f"and 'text' (B strings); got keys {sorted(batch)}"
            )

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[LSMSOutput, dict[str, torch.Tensor]]:
        self._check_batch(batch)
        images, masks, texts = batch["image"], batch["mask"], list(batch["text"])
        output = self.net(images, texts)
        outputs = {field.name: getattr(output, field.name) for field in fields(output)}
        losses = self.loss(**outputs, target=masks, texts=texts)
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/{name}": value.detach() for name, value in losses.items()},
            on_step=on_step,
            on_epoch=True,
            prog_bar=False,
            batch_size=images.shape[0],
            sync_dist=not on_step,
        )
        return output, losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[1]["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        output, _ = self._step(batch, "val")
        self.val_metrics.update(torch.sigmoid(output.logits), batch["mask"])

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        output, _ = self._step(batch, "test")
        self.test_metrics.update(torch.sigmoid(output.logits), batch["mask"])

    def _log_metrics(self, metrics: ReferringSegmentationMetrics, stage: str) -> None:
        values = metrics.compute()  # synchronised across processes by torchmetrics
        self.log_dict({f"{stage}/{name}": value for name, value in values.items()}, prog_bar=stage == "val")
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Return ``probs`` (B, 1, H, W) float, ``masks`` (B, 1, H, W) bool, and the batch's ``text`` and ``meta``."""
        if "image" not in batch or "text" not in batch:
            raise ValueError(f"prediction batches need 'image' and 'text'; got keys {sorted(batch)}")
        probs = torch.sigmoid(self.net(batch["image"], list(batch["text"])).logits)
        return {
            "probs": probs,
            "masks": probs > self.hparams.mask_threshold,
            "text": list(batch["text"]),
            "meta": batch.get("meta"),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lsms_config"] = dict(self.net.config)  # lets a checkpoint rebuild ``net`` without the YAML

    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay, text = [], [], []
        for name, parameter in self.net.named_parameters():
            if not parameter.requires_grad:
                continue
            if name.startswith("text_encoder."):
                text.append(parameter)
            elif parameter.ndim <= 1:  # biases, norm scales, the contrastive temperature
                no_decay.append(parameter)
            else:
                decay.append(parameter)
        lr, weight_decay = self.hparams.lr, self.hparams.weight_decay
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if text:
            groups.append({"params": text, "weight_decay": weight_decay, "lr": lr * self.hparams.text_lr_ratio})
        optimizer = torch.optim.AdamW(groups, lr=lr)

        def warmup_cosine(step: int) -> float:
            total_steps, warmup_steps = self._total_steps, self.hparams.warmup_steps
            if total_steps is not None:
                warmup_steps = min(warmup_steps, total_steps - 1)
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            if total_steps is None:  # only while the optimizer is built; on_train_start sets the real factor
                return 1.0
            progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        # The step count is read here, not in configure_optimizers: asked for earlier, Lightning builds the training
        # loader before a checkpoint's loader state is restored, and a mid-epoch resume restarts the epoch.
        self._total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                continue
            for group, base_lr, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                              scheduler.lr_lambdas):
                group["lr"] = base_lr * factor(scheduler.last_epoch)
