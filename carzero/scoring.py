"""All-pairs CARZero scoring of ``N`` images against ``M`` prompts with bounded memory.

The released inference loops over images in Python and, for each image, re-projects the keys and values of every
prompt's tokens. Here the prompts are encoded once, the keys/values of the cross-attention are projected once per
prompt and once per image, and each fusion layer's attention for a whole ``images x prompts`` chunk is one batched
matmul (the queries are single vectors, so no pair needs its own memory copy). Working memory is bounded by the chunk
sizes, whatever ``N`` is.

Example::

    scorer = CARZeroScorer(model, ["there is atelectasis", "there is cardiomegaly"], dtype=torch.bfloat16)
    scores = scorer.score_images(images)  # scores.mean: torch.Size([N, 2])
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch

from carzero.fusion import MemoryCache
from carzero.model import CARZero, ImageTokens, SimilarityScores, TextTokens

__all__ = ["SUPPORTED_SCORING_DTYPES", "CARZeroScorer", "score_all_pairs"]

SUPPORTED_SCORING_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype not in SUPPORTED_SCORING_DTYPES:
        raise ValueError(f"dtype must be one of {SUPPORTED_SCORING_DTYPES}, got {dtype}")
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _check_chunk_size(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def _score_chunked(
    model: CARZero,
    image_tokens: ImageTokens,
    text_tokens: TextTokens,
    text_cache: MemoryCache,
    image_chunk_size: int,
    text_chunk_size: int,
) -> SimilarityScores:
    """Both directions for all pairs, looping over ``image_chunk_size x text_chunk_size`` blocks; ``(N, M)`` each."""
    num_images, num_texts = len(image_tokens), len(text_tokens)
    output_dtype = torch.promote_types(image_tokens.global_token.dtype, torch.float32)  # float64 models stay float64
    image_to_text = image_tokens.global_token.new_empty(num_images, num_texts, dtype=output_dtype)
    text_to_image = torch.empty_like(image_to_text)
    for image_start in range(0, num_images, image_chunk_size):
        images = slice(image_start, image_start + image_chunk_size)
        image_chunk = image_tokens.select(images)
        image_cache = model.project_image_memory(image_chunk)  # once per image, reused for every prompt
        for text_start in range(0, num_texts, text_chunk_size):
            texts = slice(text_start, text_start + text_chunk_size)
            # (M_chunk, N_chunk): prompts' sentence vectors query the images' tokens
            image_to_text[images, texts] = model.fusion.score_all_pairs(
                text_tokens.sentence[texts], image_cache
            ).T
            # (N_chunk, M_chunk): images' global tokens query the prompts' tokens
            text_to_image[images, texts] = model.fusion.score_all_pairs(
                image_chunk.global_token, text_cache.select(texts)
            )
    return SimilarityScores(image_to_text=image_to_text, text_to_image=text_to_image)


@torch.inference_mode()
def score_all_pairs(
    model: CARZero,
    image_tokens: ImageTokens,
    text_tokens: TextTokens,
    image_chunk_size: int = 64,
    text_chunk_size: int = 64,
    dtype: torch.dtype | None = None,
    text_cache: MemoryCache | None = None,
) -> SimilarityScores:
    """Score every image against every text from already encoded tokens.

    Args:
        model: the CARZero model (put it in eval mode to switch dropout off).
        image_tokens: ``N`` images' tokens from :meth:`CARZero.encode_images`.
        text_tokens: ``M`` texts' tokens from :meth:`CARZero.encode_texts`.
        image_chunk_size: images per fusion block. Defaults to 64.
        text_chunk_size: texts per fusion block. Defaults to 64.
        dtype: compute dtype of the fusion: None/float32 (as the model), or bfloat16/float16 under autocast.
            Defaults to None.
        text_cache: ``model.project_text_memory(text_tokens)`` computed once and reused across calls (e.g. one call
            per image batch); None projects it here. Defaults to None.

    Returns:
        :class:`SimilarityScores` with ``image_to_text`` and ``text_to_image`` of shape ``(N, M)`` (float32, or the
        model's dtype if it is float64) and their ``mean``.
    """
    _check_chunk_size("image_chunk_size", image_chunk_size)
    _check_chunk_size("text_chunk_size", text_chunk_size)
    with _autocast(image_tokens.global_token.device, dtype):
        if text_cache is None:
            text_cache = model.project_text_memory(text_tokens)  # once per text, reused for every image
        elif len(text_cache) != len(text_tokens):
            raise ValueError(f"text_cache holds {len(text_cache)} texts but text_tokens {len(text_tokens)}")
        return _score_chunked(model, image_tokens, text_tokens, text_cache, image_chunk_size, text_chunk_size)


class CARZeroScorer:
    """Zero-shot scorer of image batches against a fixed list of prompts.

    The prompts are encoded, and their cross-attention keys/values projected, once at construction; each call to
    :meth:`score_images` encodes one batch of images and scores it against all prompts. Only the ``(N, M)`` scores are
    kept, so a dataset of any size can be streamed through :meth:`score_batches`.

    Args:
        model: the CARZero model; it is switched to eval mode.
        prompts: ``M`` class prompts, e.g. ``"There is pleural effusion"``.
        image_chunk_size: images per fusion block. Defaults to 64.
        text_chunk_size: prompts per fusion block. Defaults to 64.
        dtype: compute dtype (None/float32, or bfloat16/float16 under autocast). Defaults to None.
    """

    def __init__(
        self,
        model: CARZero,
        prompts: list[str],
        image_chunk_size: int = 64,
        text_chunk_size: int = 64,
        dtype: torch.dtype | None = None,
    ) -> None:
        _check_chunk_size("image_chunk_size", image_chunk_size)
        _check_chunk_size("text_chunk_size", text_chunk_size)
        if not prompts:
            raise ValueError("prompts is empty; pass at least one class prompt")
        self.model = model.eval()
        self.prompts = list(prompts)
        self.image_chunk_size = image_chunk_size
        self.text_chunk_size = text_chunk_size
        self.dtype = dtype
        device = next(model.parameters()).device
        with torch.inference_mode(), _autocast(device, dtype):
            self.text_tokens = model.encode_texts(self.prompts)
            self.text_cache = model.project_text_memory(self.text_tokens)

    @torch.inference_mode()
    def score_images(self, images: torch.Tensor) -> SimilarityScores:
        """Score a batch of images ``(N, C, H, W)`` against all prompts; each direction ``(N, M)``."""
        device = next(self.model.parameters()).device
        with _autocast(device, self.dtype):
            image_tokens = self.model.encode_images(images.to(device))
            return _score_chunked(
                self.model, image_tokens, self.text_tokens, self.text_cache, self.image_chunk_size,
                self.text_chunk_size,
            )

    def score_batches(self, batches: Iterable[torch.Tensor]) -> SimilarityScores:
        """Score a stream of image batches; the scores are concatenated on the CPU, ``(N_total, M)`` each."""
        image_to_text, text_to_image = [], []
        for images in batches:
            scores = self.score_images(images)
            image_to_text.append(scores.image_to_text.cpu())
            text_to_image.append(scores.text_to_image.cpu())
        if not image_to_text:
            raise ValueError("no image batches to score")
        return SimilarityScores(torch.cat(image_to_text), torch.cat(text_to_image))
