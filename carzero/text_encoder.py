"""The text encoder of CARZero: any Hugging Face BERT-like model with GLoRIA-style pooling.

Token features are the sum (or mean) of the last ``last_n_layers`` hidden states. Word-pieces can be merged into
words by summing them (the released model does; off by default here because it needs a Python pass over the tokens).
The sentence vector is the mean of the valid token features; padding never enters it, and the returned mask lets the
fusion ignore padded positions.

:meth:`TextEncoder.freeze` turns the encoder into a fixed feature extractor (no gradients, always in eval mode) and, by
default, caches the features of each distinct text, so that training with a frozen text encoder costs one encoder
pass per distinct report instead of one per step.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from datasets.text_models import (
    OFFLINE_MINILM,
    TextFeatureCache,
    load_text_model,
    pad_token_rows,
    resolve_text_encoder,
)

__all__ = [
    "OFFLINE_MINILM",
    "SUPPORTED_LAYER_AGGREGATIONS",
    "SUPPORTED_SENTENCE_POOLINGS",
    "TextEncoder",
    "clean_report_text",
    "resolve_text_encoder",
]

SUPPORTED_LAYER_AGGREGATIONS = ("sum", "mean")
SUPPORTED_SENTENCE_POOLINGS = ("mean", "cls")
_WORD_PATTERN = re.compile(r"\w+")


def clean_report_text(text: str) -> str:
    """Lower-case a sentence and keep only its ASCII ``\\w+`` tokens joined by spaces, as CARZero's data pipeline does.

    Example::

        clean_report_text("There is Pleural Effusion.")  # 'there is pleural effusion'
    """
    ascii_text = text.encode("ascii", "ignore").decode()
    return " ".join(_WORD_PATTERN.findall(ascii_text.lower()))


class TextEncoder(nn.Module):
    """A Hugging Face encoder returning a sentence vector and padded token features with their mask.

    Args:
        model_name_or_path: Hugging Face id, local folder, or ``"offline:all-MiniLM-L6-v2"``.
            Defaults to ``"Laihaoran/BioClinicalMPBERT"`` (the released model's text encoder).
        max_length: tokens per text after truncation, [CLS] and [SEP] included. Defaults to 97.
        last_n_layers: number of final hidden layers combined into the token features. Defaults to 4.
        layer_aggregation: how those layers are combined, one of ``SUPPORTED_LAYER_AGGREGATIONS``. Defaults to "sum".
        merge_word_pieces: sum the word-pieces of each word into one token (needs a fast tokenizer). Defaults to False.
        sentence_pooling: ``"mean"`` (mean over valid token features) or ``"cls"``. Defaults to "mean".
        clean_text: lower-case and strip punctuation (:func:`clean_report_text`) before tokenising. Defaults to True.
        trust_remote_code: allow the model folder to run its own Python code. Defaults to False.
    """

    def __init__(
        self,
        model_name_or_path: str = "Laihaoran/BioClinicalMPBERT",
        max_length: int = 97,
        last_n_layers: int = 4,
        layer_aggregation: str = "sum",
        merge_word_pieces: bool = False,
        sentence_pooling: str = "mean",
        clean_text: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if layer_aggregation not in SUPPORTED_LAYER_AGGREGATIONS:
            raise ValueError(
                f"layer_aggregation must be one of {SUPPORTED_LAYER_AGGREGATIONS}, got {layer_aggregation!r}"
            )
        if sentence_pooling not in SUPPORTED_SENTENCE_POOLINGS:
            raise ValueError(f"sentence_pooling must be one of {SUPPORTED_SENTENCE_POOLINGS}, got {sentence_pooling!r}")
        if max_length < 3:
            raise ValueError(f"max_length must leave room for [CLS], one token and [SEP], got {max_length}")
        self.tokenizer, model, path = load_text_model(model_name_or_path, trust_remote_code)
        # from_pretrained returns the model in eval mode; follow nn.Module's convention (train until .eval())
        self.model = model.train()
        if isinstance(getattr(self.model, "pooler", None), nn.Module):
            # the pooled output is never used: frozen, the pooler gets no gradient (DDP-safe) and stays in the state
            # dict, so saved model folders reload through transformers without a "pooler MISSING" report
            self.model.pooler.requires_grad_(False)
        num_layers = self.model.config.num_hidden_layers
        if not 1 <= last_n_layers <= num_layers:
            raise ValueError(
                f"last_n_layers must be between 1 and {num_layers} (the layers of {path}), got {last_n_layers}"
            )
        if merge_word_pieces and not self.tokenizer.is_fast:
            raise ValueError(f"merge_word_pieces=True needs a fast tokenizer, but {path} only has a slow one")
        self.width: int = self.model.config.hidden_size
        self.max_length = max_length
        self.last_n_layers = last_n_layers
        self.layer_aggregation = layer_aggregation
        self.merge_word_pieces = merge_word_pieces
        self.sentence_pooling = sentence_pooling
        self.clean_text = clean_text
        self.frozen = False
        self.cache_features = False
        self._cache = TextFeatureCache()

    def freeze(self, cache_features: bool = True) -> TextEncoder:
        """Stop training the encoder: no gradients, eval mode from now on (``train()`` keeps it in eval mode).

        Args:
            cache_features: encode each distinct text once and reuse its features (kept on the encoder's device,
                keyed by the raw text; not part of the ``state_dict``). Defaults to True.

        Returns:
            The encoder itself.
        """
        self.requires_grad_(False)
        self.frozen = True
        self.cache_features = cache_features
        self._cache.clear()
        return self.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        """Set the training mode; a frozen encoder (:meth:`freeze`) always stays in eval mode (no dropout)."""
        return super().train(mode and not self.frozen)

    def cached_texts(self) -> int:
        """Number of distinct texts whose features are cached."""
        return len(self._cache)

    def encode_cached(self, texts: list[str], batch_size: int = 64) -> None:
        """Encode and cache the texts not cached yet, ``batch_size`` at a time (e.g. every training report up front).

        Raises:
            ValueError: the encoder is not frozen with ``cache_features=True``.
        """
        if not self.cache_features:
            raise ValueError("encode_cached needs a frozen encoder with a cache: call freeze(cache_features=True)")

        def encode(chunk: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
            sentence, tokens, mask = self._encode(chunk)  # right-padded: the valid tokens are a prefix
            return [(sentence[row], tokens[row, :length]) for row, length in enumerate(mask.sum(dim=1).tolist())]

        self._cache.fill(texts, encode, batch_size)

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a batch of texts (from the cache where :meth:`freeze` enabled it).

        Args:
            texts: ``M`` strings.

        Returns:
            ``sentence (M, width)``, ``tokens (M, L, width)`` (zero at padded positions) and ``mask (M, L)`` (bool,
            True at valid positions), with ``L`` the longest text of the batch (in words if word-pieces are merged).
        """
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts is empty; pass at least one string")
        if not self.cache_features:
            return self._encode(texts)
        self.encode_cached(texts)
        sentences, tokens = zip(*self._cache.get(texts))
        padded, mask = pad_token_rows(tokens)
        return torch.stack(sentences), padded, mask

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the Hugging Face model on a non-empty list of strings (see :meth:`forward`)."""
        if self.clean_text:
            texts = [clean_report_text(text) for text in texts]
        encoding = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = next(self.model.parameters()).device
        mask = encoding["attention_mask"].to(device).bool()  # (M, L)
        outputs = self.model(
            **{key: value.to(device) for key, value in encoding.items()}, output_hidden_states=True, return_dict=True
        )
        stacked = torch.stack(outputs.hidden_states[-self.last_n_layers :], dim=0)  # (n, M, L, W)
        tokens = stacked.sum(0) if self.layer_aggregation == "sum" else stacked.mean(0)  # (M, L, W)
        if self.merge_word_pieces:
            tokens, mask = self._merge_word_pieces(tokens, mask, encoding)
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        if self.sentence_pooling == "cls":
            sentence = tokens[:, 0]
        else:
            sentence = tokens.sum(1) / mask.sum(1, keepdim=True).to(tokens.dtype)  # (M, W)
        return sentence, tokens, mask

    @staticmethod
    def _merge_word_pieces(
        tokens: torch.Tensor, mask: torch.Tensor, encoding: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum the word-pieces of each word; special tokens ([CLS], [SEP]) stay on their own.

        Args:
            tokens: ``(M, L, W)`` token features.
            mask: ``(M, L)`` valid-token mask.
            encoding: the fast tokenizer's output, which knows each token's word index.

        Returns:
            ``(M, L_words, W)`` merged features and their ``(M, L_words)`` mask.
        """
        group_indices = []
        for row in range(tokens.shape[0]):
            groups, previous_word, next_group = [], None, 0
            for position, word in enumerate(encoding.word_ids(row)):
                if not mask[row, position]:
                    groups.append(-1)
                    continue
                if word is None or word != previous_word:
                    groups.append(next_group)
                    next_group += 1
                else:
                    groups.append(next_group - 1)
                previous_word = word
            group_indices.append(groups)
        index = torch.tensor(group_indices, device=tokens.device)  # (M, L), -1 at padding
        num_groups = int(index.max()) + 1
        valid = index >= 0
        merged = tokens.new_zeros(tokens.shape[0], num_groups + 1, tokens.shape[-1])
        # padding goes to an extra last slot that is dropped
        scatter_index = torch.where(valid, index, torch.full_like(index, num_groups))
        merged = merged.scatter_add(1, scatter_index.unsqueeze(-1).expand_as(tokens), tokens)[:, :num_groups]
        merged_mask = torch.arange(num_groups, device=tokens.device) < (index.max(1).values + 1).unsqueeze(1)
        return merged, merged_mask
