"""CARZero's similarity representation (SimR): query-to-memory cross-attention layers and a scoring head.

A single query vector attends to a memory of tokens through ``num_layers`` pre-norm cross-attention layers. There is
no self-attention among queries, so every (query, memory) pair is independent. Two code paths compute the same
function:

* :meth:`SimilarityFusion.forward` scores aligned pairs one to one (``B`` queries, ``B`` memories), with
  :func:`torch.nn.functional.multi_head_attention_forward` doing the attention;
* :meth:`SimilarityFusion.project_memory` + :meth:`SimilarityFusion.score_all_pairs` score every query against every
  memory: keys and values are projected once per memory item and reused for all queries, and each layer's attention
  for all pairs is one batched matmul.

Parameter layout follows :class:`torch.nn.MultiheadAttention` (``in_proj_weight (3D, D)``, ``out_proj``) and a
DETR-style decoder layer, as in the released model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

FUSION_INITS = ("released", "xavier")

__all__ = ["FUSION_INITS", "CrossAttention", "CrossAttentionLayer", "MemoryCache", "SimilarityFusion", "SimilarityHead"]


@dataclass
class MemoryCache:
    """Keys and values of every fusion layer for a batch of memories, projected once.

    Attributes:
        keys_values: per layer, ``keys`` and ``values`` of shape ``(B_m, H, S, D / H)``.
        mask: ``(B_m, S)`` bool, True at valid memory tokens, or None when all are valid.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor | None

    def __len__(self) -> int:
        return self.keys_values[0][0].shape[0]

    def select(self, index: slice | torch.Tensor) -> MemoryCache:
        """The cache of a subset of the memories (a slice or index tensor along the batch axis)."""
        return MemoryCache(
            [(keys[index], values[index]) for keys, values in self.keys_values],
            None if self.mask is None else self.mask[index],
        )


class CrossAttention(nn.Module):
    """Multi-head attention of queries over a memory, with :class:`torch.nn.MultiheadAttention`'s parameter layout.

    Args:
        width: model width ``D``.
        num_heads: heads ``H``; must divide ``width``.
        dropout: dropout on the attention weights during training. Defaults to 0.1.
    """

    def __init__(self, width: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        if width % num_heads != 0:
            raise ValueError(f"width must be divisible by num_heads, got width={width}, num_heads={num_heads}")
        self.width = width
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of one query per memory (aligned pairs).

        Args:
            queries: ``(B, D)``.
            memory: ``(B, S, D)``.
            mask: ``(B, S)`` bool, True at valid memory tokens. Defaults to None (all valid).

        Returns:
            ``(B, D)``.
        """
        attended, _ = F.multi_head_attention_forward(
            queries.unsqueeze(0),  # (1, B, D): sequence of one query, batch = pairs
            memory.transpose(0, 1),  # (S, B, D)
            memory.transpose(0, 1),
            self.width,
            self.num_heads,
            self.in_proj_weight,
            self.in_proj_bias,
            None,
            None,
            False,
            self.dropout,
            self.out_proj.weight,
            self.out_proj.bias,
            training=self.training,
            key_padding_mask=None if mask is None else ~mask,
            need_weights=False,
        )
        return attended.squeeze(0)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a batch of memories.

        Args:
            memory: ``(B_m, S, D)``.

        Returns:
            ``keys`` and ``values``, each ``(B_m, H, S, D / H)``.
        """
        batch, length, _ = memory.shape
        key_value_weight = self.in_proj_weight[self.width :]  # (2D, D)
        key_value_bias = self.in_proj_bias[self.width :]
        keys_values = F.linear(memory, key_value_weight, key_value_bias)  # (B_m, S, 2D)
        keys_values = keys_values.view(batch, length, 2, self.num_heads, self.width // self.num_heads)
        keys, values = keys_values.permute(2, 0, 3, 1, 4)  # each (B_m, H, S, d_head)
        return keys, values

    def attend_all_pairs(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Attention of every query over every memory.

        Args:
            queries: ``(Q, B_m, D)`` (one state per pair) or ``(Q, 1, D)`` (the same query for every memory).
            keys: ``(B_m, H, S, D / H)`` from :meth:`project_memory`.
            values: ``(B_m, H, S, D / H)``.
            mask: ``(B_m, S)`` bool, True at valid memory tokens, or None.

        Returns:
            ``(Q, B_m, D)``.
        """
        head_width = self.width // self.num_heads
        projected = F.linear(queries, self.in_proj_weight[: self.width], self.in_proj_bias[: self.width])
        projected = projected.unflatten(-1, (self.num_heads, head_width)) * head_width**-0.5  # (Q, B_m|1, H, d_head)
        logits = torch.einsum("qbhd,bhsd->qbhs", projected.expand(-1, keys.shape[0], -1, -1), keys)  # (Q, B_m, H, S)
        if mask is not None:
            logits = logits.masked_fill(~mask[None, :, None, :], float("-inf"))
        weights = F.dropout(logits.softmax(dim=-1), p=self.dropout, training=self.training)
        attended = torch.einsum("qbhs,bhsd->qbhd", weights, values)  # (Q, B_m, H, d_head)
        return self.out_proj(attended.flatten(-2))  # (Q, B_m, D)


class CrossAttentionLayer(nn.Module):
    """Pre-norm decoder layer without self-attention: ``h += attn(norm1(h), memory)``; ``h += ffn(norm2(h))``.

    Args:
        width: model width ``D``.
        num_heads: attention heads. Defaults to 4.
        ffn_dim: hidden width of the feed-forward block. Defaults to 1024.
        dropout: dropout on the attention weights and both residual branches. Defaults to 0.1.
    """

    def __init__(self, width: int, num_heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.cross_attn = CrossAttention(width, num_heads, dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(width)
        self.linear1 = nn.Linear(width, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, width)
        self.dropout2 = nn.Dropout(dropout)

    def _feed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        update = self.linear2(self.dropout(F.relu(self.linear1(self.norm2(hidden_states)))))
        return hidden_states + self.dropout2(update)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One layer for aligned pairs: ``queries (B, D)``, ``memory (B, S, D)``, ``mask (B, S)`` -> ``(B, D)``."""
        hidden_states = queries + self.dropout1(self.cross_attn(self.norm1(queries), memory, mask))
        return self._feed_forward(hidden_states)

    def forward_all_pairs(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """One layer for all pairs: ``queries (Q, B_m | 1, D)`` and one memory cache entry -> ``(Q, B_m, D)``."""
        attended = self.cross_attn.attend_all_pairs(self.norm1(queries), keys, values, mask)
        hidden_states = queries + self.dropout1(attended)  # broadcasts (Q, 1, D) to (Q, B_m, D)
        return self._feed_forward(hidden_states)


class SimilarityHead(nn.Sequential):
    """Maps a fused vector to a scalar logit: a linear layer, or an MLP with ReLU and dropout between layers.

    Args:
        width: input width ``D``.
        hidden_dims: widths of the hidden layers; empty for a single linear layer. Defaults to (1024, 512, 256)
            (the released "v3" head).
        dropout: dropout after each hidden ReLU. Defaults to 0.1.
    """

    def __init__(self, width: int, hidden_dims: Sequence[int] = (1024, 512, 256), dropout: float = 0.1) -> None:
        layers: list[nn.Module] = []
        previous = width
        for hidden in hidden_dims:
            if hidden < 1:
                raise ValueError(f"head hidden widths must be positive, got {list(hidden_dims)}")
            layers += [nn.Linear(previous, hidden), nn.ReLU(), nn.Dropout(dropout)]
            previous = hidden
        layers.append(nn.Linear(previous, 1))
        super().__init__(*layers)


class SimilarityFusion(nn.Module):
    """CARZero's SimR module: query-over-memory cross-attention and a head producing a similarity logit.

    A single LayerNorm, shared as in the released model, normalises the memory and the queries on input and the fused
    vector on output.

    Args:
        width: model width ``D``. Defaults to 768.
        num_layers: cross-attention layers. Defaults to 4.
        num_heads: attention heads. Defaults to 4.
        ffn_dim: feed-forward hidden width. Defaults to 1024.
        dropout: dropout inside the layers and before the head. Defaults to 0.1.
        head_hidden_dims: hidden widths of the head, empty for a linear head. Defaults to (1024, 512, 256).
        init: ``"released"``: every linear and attention weight N(0, 0.02), as the released model (fine when
            fine-tuning from pretrained encoders); ``"xavier"``: Xavier-uniform weights (DETR's reset). From scratch the
            released init starts the fusion at a saddle (all pair scores ~0, the loss flat at chance for hundreds of
            steps in our CPU demo); Xavier leaves it within ~100 steps. Biases are zero either way.
            Defaults to ``"released"``.
    """

    def __init__(
        self,
        width: int = 768,
        num_layers: int = 4,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        head_hidden_dims: Sequence[int] = (1024, 512, 256),
        init: str = "released",
    ) -> None:
        super().__init__()
        if init not in FUSION_INITS:
            raise ValueError(f"init must be one of {FUSION_INITS}, got {init!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.norm = nn.LayerNorm(width)
        self.layers = nn.ModuleList(
            [CrossAttentionLayer(width, num_heads, ffn_dim, dropout) for _ in range(num_layers)]
        )
        self.head_dropout = nn.Dropout(dropout)
        self.head = SimilarityHead(width, head_hidden_dims, dropout)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        def reset(weight: torch.Tensor) -> None:
            if init == "xavier":
                nn.init.xavier_uniform_(weight)
            else:
                nn.init.normal_(weight, std=0.02)

        for module in self.modules():
            if isinstance(module, nn.Linear):
                reset(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, CrossAttention):
                reset(module.in_proj_weight)

    def _score(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_dropout(self.norm(hidden_states))).squeeze(-1)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Score aligned pairs: query ``b`` against memory ``b``.

        Args:
            queries: ``(B, D)``.
            memory: ``(B, S, D)``.
            mask: ``(B, S)`` bool, True at valid memory tokens. Defaults to None (all valid).

        Returns:
            ``(B,)`` logits.
        """
        memory = self.norm(memory)
        hidden_states = self.norm(queries)
        for layer in self.layers:
            hidden_states = layer(hidden_states, memory, mask)
        return self._score(hidden_states)

    def project_memory(self, memory: torch.Tensor, mask: torch.Tensor | None = None) -> MemoryCache:
        """Normalise a batch of memories and project their keys and values for every layer, once.

        Args:
            memory: ``(B_m, S, D)``.
            mask: ``(B_m, S)`` bool, True at valid tokens. Defaults to None (all valid).
        """
        memory = self.norm(memory)
        return MemoryCache([layer.cross_attn.project_memory(memory) for layer in self.layers], mask)

    def score_all_pairs(self, queries: torch.Tensor, cache: MemoryCache) -> torch.Tensor:
        """Score every query against every memory of ``cache``.

        Args:
            queries: ``(Q, D)``.
            cache: from :meth:`project_memory`, ``B_m`` memories.

        Returns:
            ``(Q, B_m)`` logits.
        """
        hidden_states = self.norm(queries).unsqueeze(1)  # (Q, 1, D), broadcast over memories in the first layer
        for layer, (keys, values) in zip(self.layers, cache.keys_values):
            hidden_states = layer.forward_all_pairs(hidden_states, keys, values, cache.mask)
        return self._score(hidden_states)
