"""BrgSA: Bridged Semantic Alignment for zero-shot 3D medical image diagnosis (Lai et al., IEEE JBHI 2025,
arXiv:2501.03565).

A CLIP-style dual encoder (3D ViT + BERT, each with a linear projection to a joint width) plus a Cross-Modal
Knowledge Bank shared by both modalities. Every embedding ``x`` is also re-expressed through the bank,
``x_hat = softmax(x M^T / tau) M``, and the zero-shot score of a volume for a class prompt is
``(cos(v, t) + cos(v_hat, t)) / 2`` (the prompt is not reconstructed).

Volumes are ``(B, 1, X, Y, Z)``: MONAI's channel-first layout of a NIfTI volume, Z the slice axis (see
:mod:`brgsa.vision`). The defaults reproduce the released model's architecture; :func:`convert_released_state_dict`
renames the released checkpoint's parameters to this module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brgsa.knowledge_bank import KnowledgeBank
from brgsa.text_encoder import SUPPORTED_POOLING, TextEncoder
from brgsa.vision import VisionTransformer3D
from datasets.text_models import TextFeatureCache

__all__ = ["DEMO_CONFIG", "BrgSA", "BrgSAOutput", "convert_released_state_dict", "zero_shot_scores"]

DEMO_CONFIG: dict[str, Any] = {
    "text_encoder": "offline:all-MiniLM-L6-v2",
    "image_size": [96, 96, 48],
    "patch_size": [16, 16, 8],
    "vision_width": 128,
    "vision_depth": 4,
    "vision_heads": 4,
    "embed_dim": 128,
    "knowledge_bank_size": 256,
}
"""A small configuration for CPU demos: 96x96x48 crops (a 6x6x6 grid), a 4-layer 128-d ViT, MiniLM text."""


@dataclass
class BrgSAOutput:
    """Embeddings of a batch of volume-text pairs, un-normalised; the keys are the loss's arguments.

    Attributes:
        image_embeds: volume embeddings ``v``, shape (B, E).
        image_embeds_hat: their knowledge-bank reconstructions ``v_hat``, shape (B, E); ``v`` itself when the bank
            is disabled.
        text_embeds: text embeddings ``t``, shape (B, E).
        text_embeds_hat: their reconstructions ``t_hat``, shape (B, E); ``t`` itself when the bank is disabled.
    """

    image_embeds: torch.Tensor
    image_embeds_hat: torch.Tensor
    text_embeds: torch.Tensor
    text_embeds_hat: torch.Tensor


def zero_shot_scores(
    image_embeds: torch.Tensor,
    image_embeds_hat: torch.Tensor,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None = None,
    pair_scale: float = 10.0,
) -> torch.Tensor:
    """Zero-shot class scores of volumes.

    With positive prompts only (the paper's protocol) the score is ``(cos(v, t_c) + cos(v_hat, t_c)) / 2``, in
    [-1, 1]. With negative prompts ("There is no {c}") as well, the two mixed scores of a class go through a softmax
    over the pair, scaled by ``pair_scale``, and the positive probability is returned (CT-CLIP's pos/neg protocol).

    Args:
        image_embeds: ``(N, E)`` volume embeddings ``v``.
        image_embeds_hat: ``(N, E)`` their bank reconstructions ``v_hat`` (pass ``v`` again for a bank-free score).
        prompt_embeds: ``(C, E)`` embeddings of one positive prompt per class.
        negative_prompt_embeds: ``(C, E)`` embeddings of the matching negative prompts. Defaults to None.
        pair_scale: logit scale of the pair softmax. Defaults to 10.0 (the training logit scale).

    Returns:
        ``(N, C)`` scores; higher means the finding is more likely.
    """
    if image_embeds.shape != image_embeds_hat.shape:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)} and image_embeds_hat {tuple(image_embeds_hat.shape)} differ"
        )
    if negative_prompt_embeds is not None and negative_prompt_embeds.shape != prompt_embeds.shape:
        raise ValueError(
            f"negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} must match prompt_embeds "
            f"{tuple(prompt_embeds.shape)}: one negative prompt per class"
        )
    image_unit = F.normalize(image_embeds, dim=-1)
    image_hat_unit = F.normalize(image_embeds_hat, dim=-1)

    def mixed(prompts: torch.Tensor) -> torch.Tensor:
        prompt_unit = F.normalize(prompts, dim=-1)  # (C, E)
        return (image_unit @ prompt_unit.t() + image_hat_unit @ prompt_unit.t()) / 2  # (N, C)

    positive = mixed(prompt_embeds)
    if negative_prompt_embeds is None:
        return positive
    pair = torch.stack([positive, mixed(negative_prompt_embeds)], dim=-1) * pair_scale  # (N, C, 2)
    return pair.softmax(dim=-1)[..., 0]


class BrgSA(nn.Module):
    """BrgSA dual encoder with the Cross-Modal Knowledge Bank.

    The constructor takes only JSON-serialisable values, kept in :attr:`config` so that a model folder can rebuild
    the model (``BrgSA(**config)``).

    Args:
        text_encoder: Hugging Face id, local folder or ``"offline:all-MiniLM-L6-v2"`` (see
            :mod:`brgsa.text_encoder`); to load the released weights, the released ``M3AE_CXRBERT`` folder.
            Defaults to "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext".
        image_size: training crop ``(X, Y, Z)``, which sets the base position-embedding grid. Defaults to
            (224, 224, 112).
        patch_size: ViT patch ``(X, Y, Z)``, Z along the slices. Defaults to (16, 16, 8).
        in_channels: volume channels. Defaults to 1.
        vision_width: ViT width. Defaults to 768.
        vision_depth: ViT blocks. Defaults to 12.
        vision_heads: ViT attention heads. Defaults to 12.
        vision_mlp_ratio: ViT MLP hidden size over width. Defaults to 4.0.
        embed_dim: joint embedding width E, also the bank's width. Defaults to 768.
        knowledge_bank_size: number of bank entries K. Defaults to 2048.
        knowledge_bank_temperature: bank softmax temperature tau. Defaults to 1.0 (the released model has none).
        use_knowledge_bank: build and use the bank; when False (ablation) there are no bank parameters and
            ``v_hat`` is ``v``, ``t_hat`` is ``t``. Defaults to True.
        text_max_length: tokens per text, special tokens included. Defaults to 97.
        text_pooling: one of ``("gloria", "mean", "cls")``. Defaults to "gloria" (sum of the last 4 layers of
            GLoRIA's padded token mean, the released pooling).
        text_last_n_layers: layers summed by ``"gloria"`` pooling. Defaults to 4.
        trust_remote_code: let the text model's repository run its own code. Defaults to False.
        gradient_checkpointing: recompute ViT blocks in the backward pass to save memory. Defaults to False.
        vision_patch_embedding: the ViT's patch embedding, ``"linear"`` (released) or ``"conv"`` (a convolutional
            stem for small models trained from scratch, see :class:`~brgsa.vision.VisionTransformer3D`). Defaults to
            "linear".

    Example::

        model = BrgSA(**DEMO_CONFIG)
        out = model(torch.randn(2, 1, 96, 96, 48), ["There is emphysema", "There is no effusion"])
        out.image_embeds.shape  # torch.Size([2, 128])
    """

    def __init__(
        self,
        text_encoder: str = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
        image_size: Sequence[int] = (224, 224, 112),
        patch_size: Sequence[int] = (16, 16, 8),
        in_channels: int = 1,
        vision_width: int = 768,
        vision_depth: int = 12,
        vision_heads: int = 12,
        vision_mlp_ratio: float = 4.0,
        embed_dim: int = 768,
        knowledge_bank_size: int = 2048,
        knowledge_bank_temperature: float = 1.0,
        use_knowledge_bank: bool = True,
        text_max_length: int = 97,
        text_pooling: str = "gloria",
        text_last_n_layers: int = 4,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        vision_patch_embedding: str = "linear",
    ) -> None:
        super().__init__()
        if text_pooling not in SUPPORTED_POOLING:
            raise ValueError(f"text_pooling must be one of {SUPPORTED_POOLING}, got {text_pooling!r}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.config: dict[str, Any] = {
            "text_encoder": text_encoder,
            "image_size": [int(v) for v in image_size],
            "patch_size": [int(v) for v in patch_size],
            "in_channels": in_channels,
            "vision_width": vision_width,
            "vision_depth": vision_depth,
            "vision_heads": vision_heads,
            "vision_mlp_ratio": vision_mlp_ratio,
            "embed_dim": embed_dim,
            "knowledge_bank_size": knowledge_bank_size,
            "knowledge_bank_temperature": knowledge_bank_temperature,
            "use_knowledge_bank": use_knowledge_bank,
            "text_max_length": text_max_length,
            "text_pooling": text_pooling,
            "text_last_n_layers": text_last_n_layers,
            "trust_remote_code": trust_remote_code,
            "gradient_checkpointing": gradient_checkpointing,
            "vision_patch_embedding": vision_patch_embedding,
        }
        self.use_knowledge_bank = use_knowledge_bank
        self.vision_encoder = VisionTransformer3D(
            image_size=image_size,
            patch_size=patch_size,
            in_channels=in_channels,
            width=vision_width,
            depth=vision_depth,
            num_heads=vision_heads,
            mlp_ratio=vision_mlp_ratio,
            gradient_checkpointing=gradient_checkpointing,
            patch_embedding=vision_patch_embedding,
        )
        self.vision_projection = nn.Linear(vision_width, embed_dim)
        self.text_encoder = TextEncoder(
            text_encoder,
            max_length=text_max_length,
            pooling=text_pooling,
            last_n_layers=text_last_n_layers,
            trust_remote_code=trust_remote_code,
        )
        self.text_projection = nn.Linear(self.text_encoder.width, embed_dim)
        self.knowledge_bank = (
            KnowledgeBank(knowledge_bank_size, embed_dim, knowledge_bank_temperature) if use_knowledge_bank else None
        )
        self._sentence_cache = TextFeatureCache()  # frozen text encoder: sentence -> ((D_text,),)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BrgSA:
        """Build a model from :attr:`config` (e.g. read from a model folder's ``config.json``)."""
        return cls(**config)

    def _bridge(self, embeds: torch.Tensor) -> torch.Tensor:
        return embeds if self.knowledge_bank is None else self.knowledge_bank(embeds)

    def encode_volumes(self, volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed volumes.

        Args:
            volumes: ``(B, 1, X, Y, Z)``, each spatial size a multiple of the patch size (any size: the position
                embedding is interpolated).

        Returns:
            ``(v, v_hat)``: un-normalised embeddings ``(B, E)`` and their bank reconstructions ``(B, E)``.
        """
        cls_token, _ = self.vision_encoder(volumes)  # (B, C)
        image_embeds = self.vision_projection(cls_token)  # (B, E)
        return image_embeds, self._bridge(image_embeds)

    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed texts (reports, summary sentences or class prompts).

        Args:
            texts: B non-empty strings.

        Returns:
            ``(t, t_hat)``: un-normalised embeddings ``(B, E)`` and their bank reconstructions ``(B, E)``.

        Raises:
            ValueError: a text is empty; the message names its position.
        """
        _, sentences = self.text_encoder(texts)  # (B, D_text)
        text_embeds = self.text_projection(sentences)  # (B, E)
        return text_embeds, self._bridge(text_embeds)

    def encode_sentence_sets(self, sentence_sets: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed each set of sentences as the mean of its sentences' text-encoder vectors, projected and bridged.

        With a frozen text encoder (no parameter requiring gradients) each distinct sentence is encoded once and
        kept in memory, so a training step costs no text-encoder compute once the sentences have been seen.

        Args:
            sentence_sets: B non-empty lists of non-empty sentences.

        Returns:
            ``(t, t_hat)``: ``(B, E)`` each, as :meth:`encode_texts`.

        Raises:
            ValueError: an empty set; the message names its position.
        """
        empty = [index for index, sentences in enumerate(sentence_sets) if not sentences]
        if empty:
            raise ValueError(f"sentence set {empty[0]} is empty; every volume needs a sentence")
        unique = list(dict.fromkeys(sentence for sentences in sentence_sets for sentence in sentences))
        frozen = not any(parameter.requires_grad for parameter in self.text_encoder.parameters())
        if frozen:
            self._sentence_cache.fill(unique, lambda chunk: [(vector,) for vector in self.text_encoder(chunk)[1]])
            encoded = torch.stack([vector for (vector,) in self._sentence_cache.get(unique)])  # (U, D_text)
            encoded = encoded.to(self.text_projection.weight.device)  # the cache stays where it was filled
        else:
            self._sentence_cache.clear()
            encoded = self.text_encoder(unique)[1]  # (U, D_text)
        row = {sentence: index for index, sentence in enumerate(unique)}
        means = torch.stack(
            [encoded[[row[sentence] for sentence in sentences]].mean(0) for sentences in sentence_sets]
        )  # (B, D_text)
        text_embeds = self.text_projection(means.to(self.text_projection.weight.dtype))  # (B, E)
        return text_embeds, self._bridge(text_embeds)

    def forward(self, volumes: torch.Tensor, texts: Sequence[str] | Sequence[Sequence[str]]) -> BrgSAOutput:
        """Embed a batch of volume-text pairs.

        Args:
            volumes: ``(B, 1, X, Y, Z)``.
            texts: B strings, ``texts[i]`` describing ``volumes[i]``; or B sentence lists, embedded by
                :meth:`encode_sentence_sets`.

        Returns:
            :class:`BrgSAOutput` with four ``(B, E)`` embeddings.
        """
        if len(texts) != volumes.shape[0]:
            raise ValueError(f"got {volumes.shape[0]} volumes but {len(texts)} texts; pass one text per volume")
        image_embeds, image_embeds_hat = self.encode_volumes(volumes)
        if all(isinstance(text, str) for text in texts):
            text_embeds, text_embeds_hat = self.encode_texts(texts)
        else:
            text_embeds, text_embeds_hat = self.encode_sentence_sets(texts)
        return BrgSAOutput(image_embeds, image_embeds_hat, text_embeds, text_embeds_hat)

    def zero_shot_scores(
        self,
        images: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None = None,
        pair_scale: float = 10.0,
    ) -> torch.Tensor:
        """Zero-shot class scores, ``(cos(v, t) + cos(v_hat, t)) / 2`` (see :func:`zero_shot_scores`).

        Args:
            images: volumes ``(N, 1, X, Y, Z)``, or precomputed ``(v, v_hat)`` from :meth:`encode_volumes`.
            prompt_embeds: ``(C, E)`` prompt embeddings ``t`` from :meth:`encode_texts` (first output).
            negative_prompt_embeds: ``(C, E)`` negative-prompt embeddings for the pos/neg softmax. Defaults to None.
            pair_scale: logit scale of the pair softmax. Defaults to 10.0.

        Returns:
            ``(N, C)`` scores.
        """
        image_embeds, image_embeds_hat = images if isinstance(images, tuple | list) else self.encode_volumes(images)
        return zero_shot_scores(image_embeds, image_embeds_hat, prompt_embeds, negative_prompt_embeds, pair_scale)


# Released checkpoint prefix (laihaoran/BrgSA, class CLIPProjDict) -> this module's; None drops the parameter
# (the local projections are not used by the released global-only model).
_RELEASED_PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("img_encoder.model.", "vision_encoder."),
    ("img_encoder.global_embedder.", "vision_projection."),
    ("img_encoder.local_embedder.", None),
    ("text_encoder.emb_global.", "text_projection."),
    ("text_encoder.emb_local.", None),
    ("text_encoder.model.", "text_encoder.model."),
    ("dictionarylearning.dictionary.weight", "knowledge_bank.entries"),
)


def convert_released_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the released BrgSA checkpoint's parameters to :class:`BrgSA`'s.

    A leading ``"gloria."`` (the attribute of the original Lightning wrapper) is removed, and so is the text
    encoder's ``position_ids`` buffer, which older ``transformers`` versions saved. The unused local projections
    (``img_encoder.local_embedder``, ``text_encoder.emb_local``) are dropped.

    Args:
        state_dict: the released model's state dict (the ``"state_dict"`` entry of a Lightning checkpoint).

    Returns:
        A state dict for ``BrgSA().load_state_dict(..., strict=True)`` built with the default architecture and the
        released text-encoder folder.

    Raises:
        ValueError: a key matches none of the released prefixes (not a BrgSA checkpoint).
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key.removeprefix("gloria.")
        if name.endswith("embeddings.position_ids"):
            continue
        for released, ours in _RELEASED_PREFIXES:
            if name.startswith(released):
                if ours is not None:
                    converted[ours + name[len(released) :]] = value
                break
        else:
            raise ValueError(
                f"checkpoint key {key!r} is not a released BrgSA parameter (expected prefixes "
                f"{[prefix for prefix, _ in _RELEASED_PREFIXES]})"
            )
    return converted
