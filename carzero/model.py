"""CARZero (Lai et al., "CARZero: Cross-Attention Alignment for Radiology Zero-Shot Classification", CVPR 2024).

An image encoder (ViT) and a text encoder (BERT) produce token sequences; a cross-attention similarity module (SimR,
:mod:`carzero.fusion`) scores an image-text pair in two directions and averages them:

* image-to-text (i2t): the text's sentence vector queries the image's tokens ``[global ; patches]``;
* text-to-image (t2i): the image's global token queries the text's tokens ``[sentence ; words]``, padding masked.

Defaults reproduce the released model (ViT-B/16 at 224 px, BERT-base, 768-d, 4 fusion layers, MLP head);
:data:`CARZERO_SMALL_CONFIG` is a CPU-sized configuration for demos and tests. Deliberate deviations from the released
code are listed in ``docs/carzero_deviations.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from carzero.fusion import MemoryCache, SimilarityFusion
from carzero.text_encoder import TextEncoder
from carzero.vision import VisionTransformer

__all__ = ["CARZERO_SMALL_CONFIG", "CARZero", "ImageTokens", "SimilarityScores", "TextTokens"]


@dataclass
class ImageTokens:
    """Projected image features.

    Attributes:
        global_token: ``(N, D)`` CLS token.
        patches: ``(N, P, D)`` patch tokens.
    """

    global_token: torch.Tensor
    patches: torch.Tensor

    def __len__(self) -> int:
        return self.global_token.shape[0]

    def select(self, index: slice | torch.Tensor) -> ImageTokens:
        """A subset of the images along the batch axis."""
        return ImageTokens(self.global_token[index], self.patches[index])

    def memory(self) -> torch.Tensor:
        """The image memory queried by text: ``[global ; patches]``, shape ``(N, 1 + P, D)``."""
        return torch.cat([self.global_token.unsqueeze(1), self.patches], dim=1)


@dataclass
class TextTokens:
    """Projected text features.

    Attributes:
        sentence: ``(M, D)`` sentence vectors.
        words: ``(M, L, D)`` token features, zero at padding.
        mask: ``(M, L)`` bool, True at valid tokens.
    """

    sentence: torch.Tensor
    words: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.sentence.shape[0]

    def select(self, index: slice | torch.Tensor) -> TextTokens:
        """A subset of the texts along the batch axis."""
        return TextTokens(self.sentence[index], self.words[index], self.mask[index])

    def memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The text memory queried by images, ``[sentence ; words]`` ``(M, 1 + L, D)``, and its ``(M, 1 + L)`` mask."""
        memory = torch.cat([self.sentence.unsqueeze(1), self.words], dim=1)
        mask = torch.cat([self.mask.new_ones(self.mask.shape[0], 1), self.mask], dim=1)
        return memory, mask


@dataclass
class SimilarityScores:
    """Logits of both directions; for aligned pairs each is ``(B,)``, for all pairs ``(N_images, M_texts)``.

    Attributes:
        image_to_text: text sentence vector querying image tokens.
        text_to_image: image global token querying text tokens.
    """

    image_to_text: torch.Tensor
    text_to_image: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """The CARZero score: the mean of both directions."""
        return (self.image_to_text + self.text_to_image) / 2


CARZERO_SMALL_CONFIG: dict[str, Any] = {
    "image_size": 128,
    "patch_size": 16,
    "vision_width": 128,
    "vision_layers": 4,
    "vision_heads": 4,
    "embed_dim": 128,
    "fusion_layers": 2,
    "fusion_ffn_dim": 256,
    "head_hidden_dims": [256, 128],
}
"""CPU-sized overrides (ViT 4 x 128-d at 128 px, 2 fusion layers); combine with a text encoder: ``CARZero(
text_encoder="offline:all-MiniLM-L6-v2", **CARZERO_SMALL_CONFIG)``."""


class CARZero(nn.Module):
    """CARZero image-text similarity model.

    Args:
        text_encoder: Hugging Face id, local folder or ``"offline:all-MiniLM-L6-v2"``.
            Defaults to "Laihaoran/BioClinicalMPBERT".
        image_size: input side in pixels. Defaults to 224.
        patch_size: ViT patch side. Defaults to 16.
        patch_embedding: ``"linear"`` ViT patch projection (released model) or ``"conv"`` stem (see
            :class:`carzero.vision.VisionTransformer`). Defaults to ``"linear"``.
        in_channels: 3 (grey repeated to RGB, as released) or 1. Defaults to 3.
        vision_width: ViT width. Defaults to 768.
        vision_layers: ViT blocks. Defaults to 12.
        vision_heads: ViT heads. Defaults to 12.
        embed_dim: shared width of the fusion; the image and text features are linearly projected to it when their
            width differs (the released model has equal widths and no projection). Defaults to 768.
        fusion_layers: cross-attention layers. Defaults to 4.
        fusion_heads: cross-attention heads. Defaults to 4.
        fusion_ffn_dim: feed-forward width of the fusion layers. Defaults to 1024.
        fusion_dropout: dropout in the fusion and head. Defaults to 0.1.
        head_hidden_dims: hidden widths of the scoring MLP; ``[]`` for a linear head. Defaults to (1024, 512, 256).
        fusion_init: weight init of the fusion and head, ``"released"`` (N(0, 0.02)) or ``"xavier"`` (for training
            from scratch; see :class:`carzero.fusion.SimilarityFusion`). Defaults to ``"released"``.
        text_max_length: tokens per text. Defaults to 97.
        text_last_n_layers: final BERT layers combined. Defaults to 4.
        text_layer_aggregation: "sum" or "mean" of those layers. Defaults to "sum".
        merge_word_pieces: sum word-pieces into words. Defaults to False.
        sentence_pooling: "mean" over valid tokens or "cls". Defaults to "mean".
        clean_text: lower-case and strip punctuation before tokenising. Defaults to True.
        trust_remote_code: let the text model folder run its own code. Defaults to False.

    Example::

        model = CARZero(text_encoder="offline:all-MiniLM-L6-v2", **CARZERO_SMALL_CONFIG).eval()
        scores = model.pair_scores(model.encode_images(torch.randn(2, 3, 128, 128)),
                                   model.encode_texts(["there is pleural effusion", "there is cardiomegaly"]))
        # torch.Size([2])
    """

    def __init__(
        self,
        text_encoder: str = "Laihaoran/BioClinicalMPBERT",
        image_size: int = 224,
        patch_size: int = 16,
        patch_embedding: str = "linear",
        in_channels: int = 3,
        vision_width: int = 768,
        vision_layers: int = 12,
        vision_heads: int = 12,
        embed_dim: int = 768,
        fusion_layers: int = 4,
        fusion_heads: int = 4,
        fusion_ffn_dim: int = 1024,
        fusion_dropout: float = 0.1,
        head_hidden_dims: Sequence[int] = (1024, 512, 256),
        fusion_init: str = "released",
        text_max_length: int = 97,
        text_last_n_layers: int = 4,
        text_layer_aggregation: str = "sum",
        merge_word_pieces: bool = False,
        sentence_pooling: str = "mean",
        clean_text: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= fusion_dropout < 1.0:
            raise ValueError(f"fusion_dropout must be in [0, 1), got {fusion_dropout}")
        self.config: dict[str, Any] = {
            "text_encoder": text_encoder,
            "image_size": image_size,
            "patch_size": patch_size,
            "patch_embedding": patch_embedding,
            "in_channels": in_channels,
            "vision_width": vision_width,
            "vision_layers": vision_layers,
            "vision_heads": vision_heads,
            "embed_dim": embed_dim,
            "fusion_layers": fusion_layers,
            "fusion_heads": fusion_heads,
            "fusion_ffn_dim": fusion_ffn_dim,
            "fusion_dropout": fusion_dropout,
            "head_hidden_dims": [int(width) for width in head_hidden_dims],
            "fusion_init": fusion_init,
            "text_max_length": text_max_length,
            "text_last_n_layers": text_last_n_layers,
            "text_layer_aggregation": text_layer_aggregation,
            "merge_word_pieces": merge_word_pieces,
            "sentence_pooling": sentence_pooling,
            "clean_text": clean_text,
            "trust_remote_code": trust_remote_code,
        }
        self.vision = VisionTransformer(
            image_size, patch_size, in_channels, vision_width, vision_layers, vision_heads,
            patch_embedding=patch_embedding,
        )
        self.text = TextEncoder(
            text_encoder,
            max_length=text_max_length,
            last_n_layers=text_last_n_layers,
            layer_aggregation=text_layer_aggregation,
            merge_word_pieces=merge_word_pieces,
            sentence_pooling=sentence_pooling,
            clean_text=clean_text,
            trust_remote_code=trust_remote_code,
        )
        self.image_projection = nn.Identity() if vision_width == embed_dim else nn.Linear(vision_width, embed_dim)
        self.text_projection = nn.Identity() if self.text.width == embed_dim else nn.Linear(self.text.width, embed_dim)
        self.fusion = SimilarityFusion(
            embed_dim, fusion_layers, fusion_heads, fusion_ffn_dim, fusion_dropout, head_hidden_dims, fusion_init
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CARZero:
        """Rebuild a model from its :attr:`config` (for example read back from a model folder's JSON)."""
        return cls(**config)

    def encode_images(self, images: torch.Tensor) -> ImageTokens:
        """Encode images.

        Args:
            images: ``(N, C, H, W)`` normalised images, ``C = in_channels`` and ``H = W = image_size``.

        Returns:
            :class:`ImageTokens` with ``global_token (N, D)`` and ``patches (N, P, D)``, ``D = embed_dim``.
        """
        global_token, patches = self.vision(images)
        return ImageTokens(self.image_projection(global_token), self.image_projection(patches))

    def encode_texts(self, texts: list[str]) -> TextTokens:
        """Encode texts.

        Args:
            texts: ``M`` strings.

        Returns:
            :class:`TextTokens` with ``sentence (M, D)``, ``words (M, L, D)`` and ``mask (M, L)``.
        """
        sentence, words, mask = self.text(texts)
        words = self.text_projection(words) * mask.unsqueeze(-1).to(words.dtype)
        return TextTokens(self.text_projection(sentence), words, mask)

    def pair_scores_by_direction(self, image_tokens: ImageTokens, text_tokens: TextTokens) -> SimilarityScores:
        """Both directions' logits for aligned pairs (image ``b`` with text ``b``), each ``(B,)``."""
        if len(image_tokens) != len(text_tokens):
            raise ValueError(
                f"aligned pairs need as many images as texts, got {len(image_tokens)} images and {len(text_tokens)} "
                "texts; use all_pair_scores for every combination"
            )
        text_memory, text_mask = text_tokens.memory()
        return SimilarityScores(
            image_to_text=self.fusion(text_tokens.sentence, image_tokens.memory()),
            text_to_image=self.fusion(image_tokens.global_token, text_memory, text_mask),
        )

    def pair_scores(self, image_tokens: ImageTokens, text_tokens: TextTokens) -> torch.Tensor:
        """CARZero scores of aligned pairs (image ``b`` with text ``b``): ``(B,)``, the mean of both directions."""
        return self.pair_scores_by_direction(image_tokens, text_tokens).mean

    def project_image_memory(self, image_tokens: ImageTokens) -> MemoryCache:
        """Keys and values of the image memories for every fusion layer (reusable across any number of texts)."""
        return self.fusion.project_memory(image_tokens.memory())

    def project_text_memory(self, text_tokens: TextTokens) -> MemoryCache:
        """Keys and values of the text memories for every fusion layer (reusable across any number of images)."""
        return self.fusion.project_memory(*text_tokens.memory())

    def all_pair_scores(self, image_tokens: ImageTokens, text_tokens: TextTokens) -> SimilarityScores:
        """Both directions' logits for every image with every text, each ``(N, M)``, in one pass.

        Used for the ``B x B`` training matrices; for large ``N x M`` use :func:`carzero.scoring.score_all_pairs`,
        which bounds memory by chunking.
        """
        image_to_text = self.fusion.score_all_pairs(text_tokens.sentence, self.project_image_memory(image_tokens))
        text_to_image = self.fusion.score_all_pairs(image_tokens.global_token, self.project_text_memory(text_tokens))
        return SimilarityScores(image_to_text=image_to_text.T, text_to_image=text_to_image)
