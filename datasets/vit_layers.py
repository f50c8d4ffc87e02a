"""Vision-transformer layers shared by CARZero's 2D ViT and BrgSA's 3D ViT (plain PyTorch).

Parameter names follow the timm / released-checkpoint layout (``proj``, ``stem.<i>``, ``norm1``, ``attn.qkv``,
``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), so the released CARZero and BrgSA weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PATCH_EMBEDDINGS", "PatchEmbedding", "TransformerBlock"]

PATCH_EMBEDDINGS = ("linear", "conv")

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class PatchEmbedding(nn.Module):
    """Patches to a token grid, in 2D or 3D: ``(B, C_in, *spatial)`` -> ``(B, width, *grid)``, grid = spatial / patch.

    ``"linear"``: one ``patch_size`` strided convolution (the ViT and released-checkpoint layout). ``"conv"``: a
    convolutional stem (Xiao et al. 2021, "Early convolutions help transformers see better": faster, steadier
    optimisation when training from scratch): ``log2(max(patch_size))`` 3x3(x3) convolutions + BatchNorm + ReLU, each
    halving every axis whose patch is not yet reached (a (16, 16, 8) patch strides (2, 2, 2) three times, then
    (2, 2, 1)), widths doubling up to ``width``, then a 1x1(x1) ``proj``.

    Args:
        in_channels: input channels C_in.
        width: token width.
        patch_size: patch size per spatial axis (2 or 3 entries).
        stem: ``"linear"`` or ``"conv"``. Defaults to ``"linear"``.

    Raises:
        ValueError: an unknown stem, or ``"conv"`` with a patch size that is not a power of two.
    """

    def __init__(self, in_channels: int, width: int, patch_size: tuple[int, ...], stem: str = "linear") -> None:
        super().__init__()
        if stem not in PATCH_EMBEDDINGS:
            raise ValueError(f"patch_embedding must be one of {PATCH_EMBEDDINGS}, got {stem!r}")
        conv = _CONV[len(patch_size)]
        if stem == "linear":
            self.stem = nn.Identity()
            self.proj = conv(in_channels, width, kernel_size=patch_size, stride=patch_size)
            return
        if any(patch & (patch - 1) for patch in patch_size):
            raise ValueError(f"patch_embedding 'conv' needs power-of-two patch sizes, got {tuple(patch_size)}")
        layers = max(patch_size).bit_length() - 1
        modules: list[nn.Module] = []
        channels, reached = in_channels, [1] * len(patch_size)
        for index in range(layers):
            stride = tuple(2 if done < patch else 1 for done, patch in zip(reached, patch_size))
            reached = [done * step for done, step in zip(reached, stride)]
            out_channels = max(width // 2 ** (layers - 1 - index), 8)
            modules += [
                conv(channels, out_channels, 3, stride=stride, padding=1, bias=False),
                _BATCH_NORM[len(patch_size)](out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.stem = nn.Sequential(*modules)
        self.proj = conv(channels, width, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(images))


class _SelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, width = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, C / heads)
        attended = F.scaled_dot_product_attention(query, key, value)  # (B, heads, L, C / heads)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, width))


class _MLP(nn.Module):
    def __init__(self, width: int, hidden_width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden_width)
        self.fc2 = nn.Linear(hidden_width, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(tokens)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on tokens (B, L, width): ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        width: token width; ``num_heads`` must divide it.
        num_heads: attention heads.
        mlp_hidden: hidden width of the GELU MLP.
        eps: LayerNorm epsilon. Defaults to 1e-6 (timm's ViT).
    """

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = _SelfAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = _MLP(width, mlp_hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))
