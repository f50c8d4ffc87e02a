"""The Cross-Modal Knowledge Bank (CMKB) of BrgSA: one learnable dictionary shared by image and text embeddings.

An embedding ``x`` (D,) is re-expressed as an attention read-out over the K bank entries ``M`` (K, D)::

    a     = softmax(x M^T / tau)    # (K,) weights over the entries
    x_hat = a M                     # (D,) the "bridged" embedding

There are no query/key/value projections and one head. The released model uses K = 2048, D = 768, an orthogonal
initialisation and no temperature (tau = 1), applied to un-normalised embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KnowledgeBank"]


class KnowledgeBank(nn.Module):
    """Learnable K x D bank read out by softmax attention.

    The entries are orthogonally initialised: for ``K <= D`` the rows are orthonormal (``M M^T = I_K``); for
    ``K > D`` (the released 2048 x 768) the columns are (``M^T M = I_D``).

    Args:
        num_entries: number of bank entries K. Defaults to 2048.
        dim: embedding width D. Defaults to 768.
        temperature: softmax temperature tau; smaller values make the read-out closer to the single most similar
            entry. Defaults to 1.0 (the released model has none).

    Attributes:
        entries: the bank ``M``, an ``nn.Parameter`` of shape ``(K, D)``.

    Example::

        bank = KnowledgeBank(num_entries=64, dim=128)
        bank(torch.randn(4, 128)).shape  # torch.Size([4, 128])
    """

    def __init__(self, num_entries: int = 2048, dim: int = 768, temperature: float = 1.0) -> None:
        super().__init__()
        if num_entries < 1 or dim < 1:
            raise ValueError(f"num_entries and dim must be positive, got num_entries={num_entries}, dim={dim}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.entries = nn.Parameter(torch.empty(num_entries, dim))
        nn.init.orthogonal_(self.entries)

    @property
    def num_entries(self) -> int:
        """Number of entries K."""
        return self.entries.shape[0]

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return self.entries.shape[1]

    def attention(self, embeds: torch.Tensor) -> torch.Tensor:
        """Read-out weights over the entries.

        Args:
            embeds: ``(..., D)`` embeddings.

        Returns:
            ``(..., K)`` non-negative weights, each row summing to 1.
        """
        if embeds.shape[-1] != self.dim:
            raise ValueError(f"embeddings must have width {self.dim}, got shape {tuple(embeds.shape)}")
        return torch.softmax(embeds @ self.entries.t() / self.temperature, dim=-1)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Reconstruct embeddings from the bank.

        Args:
            embeds: ``(..., D)`` embeddings.

        Returns:
            ``(..., D)`` reconstructions ``softmax(embeds M^T / tau) M``.
        """
        return self.attention(embeds) @ self.entries

    def extra_repr(self) -> str:
        return f"num_entries={self.num_entries}, dim={self.dim}, temperature={self.temperature}"
