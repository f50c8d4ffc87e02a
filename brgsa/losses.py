"""BrgSA's training objective: InfoNCE on the raw embeddings, MSE of the knowledge-bank reconstructions, and InfoNCE
on the reconstructions (released weights 1.0 / 0.5 / 1.0, fixed logit scale 10, i.e. tau = 0.1)::

    L = w_c * InfoNCE(v, t) + w_mse * (MSE(v_hat, v) + MSE(t_hat, t)) + w_b * InfoNCE(v_hat, t_hat)

InfoNCE is the symmetric cross-entropy of cosine similarities, summed over both directions (GLoRIA's global loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BrgSALoss", "contrastive_loss"]


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    all_image_embeds: torch.Tensor | None = None,
    all_text_embeds: torch.Tensor | None = None,
    rank: int = 0,
    logit_scale: float = 10.0,
) -> torch.Tensor:
    """Symmetric InfoNCE, ``CE(S, I) + CE(S', I)``, with ``S = logit_scale * cos``; pair ``i`` is the positive.

    In multi-process training each process passes its own ``B`` embeddings and the gathered ``W * B`` of all
    processes: its images are scored against all texts and its texts against all images, the positives sitting at
    ``rank * B + i``. With one process (``all_*`` None) this is the full-batch loss.

    Args:
        image_embeds: ``(B, E)`` this process's image embeddings (un-normalised).
        text_embeds: ``(B, E)`` the matching text embeddings.
        all_image_embeds: ``(W * B, E)`` image embeddings of all processes, rank-ordered. Defaults to None
            (``image_embeds``).
        all_text_embeds: ``(W * B, E)`` text embeddings of all processes. Defaults to None (``text_embeds``).
        rank: this process's index. Defaults to 0.
        logit_scale: multiplier of the cosine similarities. Defaults to 10.0.

    Returns:
        Scalar loss.
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)} and text_embeds {tuple(text_embeds.shape)} must match"
        )
    all_image_embeds = image_embeds if all_image_embeds is None else all_image_embeds
    all_text_embeds = text_embeds if all_text_embeds is None else all_text_embeds
    image_unit, text_unit = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
    image_to_text = logit_scale * image_unit @ F.normalize(all_text_embeds, dim=-1).t()  # (B, W * B)
    text_to_image = logit_scale * text_unit @ F.normalize(all_image_embeds, dim=-1).t()  # (B, W * B)
    targets = torch.arange(image_embeds.shape[0], device=image_embeds.device) + rank * image_embeds.shape[0]
    return F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)


class BrgSALoss(nn.Module):
    """The three-term BrgSA loss.

    Args:
        contrastive_weight: weight of InfoNCE on ``(v, t)``. Defaults to 1.0.
        mse_weight: weight of ``MSE(v_hat, v) + MSE(t_hat, t)``. Defaults to 0.5.
        bridged_contrastive_weight: weight of InfoNCE on ``(v_hat, t_hat)``. Defaults to 1.0.
        logit_scale: fixed logit scale (1 / tau). Defaults to 10.0.
    """

    def __init__(
        self,
        contrastive_weight: float = 1.0,
        mse_weight: float = 0.5,
        bridged_contrastive_weight: float = 1.0,
        logit_scale: float = 10.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("contrastive_weight", contrastive_weight),
            ("mse_weight", mse_weight),
            ("bridged_contrastive_weight", bridged_contrastive_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be positive, got {logit_scale}")
        self.contrastive_weight = contrastive_weight
        self.mse_weight = mse_weight
        self.bridged_contrastive_weight = bridged_contrastive_weight
        self.logit_scale = logit_scale

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        image_embeds_hat: torch.Tensor | None = None,
        text_embeds_hat: torch.Tensor | None = None,
        gathered: dict[str, torch.Tensor] | None = None,
        rank: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss and its terms.

        Args:
            image_embeds: ``(B, E)`` raw image embeddings ``v``.
            text_embeds: ``(B, E)`` raw text embeddings ``t``.
            image_embeds_hat: ``(B, E)`` bank reconstructions ``v_hat``; None (no knowledge bank) leaves only the
                raw InfoNCE term. Defaults to None.
            text_embeds_hat: ``(B, E)`` bank reconstructions ``t_hat``; None together with ``image_embeds_hat``.
                Defaults to None.
            gathered: the same four embeddings of all processes, ``(W * B, E)`` each, under the argument names above;
                None with one process. Defaults to None.
            rank: this process's index among the gathered rows. Defaults to 0.

        Returns:
            ``{"loss", "contrastive_loss"}`` plus ``"mse_loss"`` and ``"bridged_contrastive_loss"`` when the
            reconstructions are given; the terms are unweighted, ``"loss"`` is the weighted sum.
        """
        if (image_embeds_hat is None) != (text_embeds_hat is None):
            raise ValueError("give both image_embeds_hat and text_embeds_hat, or neither")
        gathered = gathered or {}

        def info_nce(image_key: str, text_key: str, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
            return contrastive_loss(
                images, texts, gathered.get(image_key), gathered.get(text_key), rank, self.logit_scale
            )

        contrastive = info_nce("image_embeds", "text_embeds", image_embeds, text_embeds)
        losses = {"contrastive_loss": contrastive}
        total = self.contrastive_weight * contrastive
        if image_embeds_hat is not None and text_embeds_hat is not None:
            mse = F.mse_loss(image_embeds_hat, image_embeds) + F.mse_loss(text_embeds_hat, text_embeds)
            bridged = info_nce("image_embeds_hat", "text_embeds_hat", image_embeds_hat, text_embeds_hat)
            losses.update(mse_loss=mse, bridged_contrastive_loss=bridged)
            total = total + self.mse_weight * mse + self.bridged_contrastive_weight * bridged
        return {"loss": total, **losses}
