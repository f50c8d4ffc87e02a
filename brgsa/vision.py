"""3D Vision Transformer image encoder of BrgSA (a ViT-B with non-cubic 16x16x8 patches and a CLS token).

Axis order: volumes are ``(B, C, X, Y, Z)``, the MONAI convention for a channel-first CT volume loaded from NIfTI
(X and Y in-plane, Z the slice axis). The patch size is given in the same order, so the default ``(16, 16, 8)`` takes
8 voxels along the slice axis Z. This is the layout of the released model, which reads ``nibabel`` arrays of shape
(X, Y, Z) = (256, 256, 128) and trains on 224x224x112 crops: a 14x14x14 grid of 2,744 patch tokens plus the CLS token.

Parameter names follow the released checkpoint (timm ``Block`` naming): ``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2`` and ``norm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from datasets.vit_layers import PatchEmbedding, TransformerBlock

__all__ = ["VisionTransformer3D", "sincos_position_embedding_3d"]


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3 or any(v <= 0 for v in values):
        raise ValueError(f"{name} must be a positive int or three positive ints (X, Y, Z), got {value!r}")
    return values  # type: ignore[return-value]


def sincos_position_embedding_3d(width: int, grid_size: Sequence[int]) -> torch.Tensor:
    """Fixed 3D sine-cosine position embedding of a patch grid, in the token order of ``flatten`` over (X, Y, Z).

    Each axis gets ``2 * (width // 6)`` channels (sines then cosines of the grid coordinate scaled to [0, 1]); the
    channels left over when ``width`` is not a multiple of 6 are zero.

    Args:
        width: embedding width C.
        grid_size: patch-grid size ``(gx, gy, gz)``.

    Returns:
        ``(gx * gy * gz, C)`` float32 tensor, Z varying fastest.
    """
    num_frequencies = width // 6
    frequencies = 10000.0 ** (-torch.arange(num_frequencies, dtype=torch.float64) / max(num_frequencies, 1))
    axes = [torch.linspace(0.0, 1.0, size, dtype=torch.float64) for size in grid_size]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (N, 3)
    parts = []
    for axis in range(3):
        angles = coords[:, axis, None] * frequencies[None, :]  # (N, F)
        parts += [torch.sin(angles), torch.cos(angles)]
    embedding = torch.cat(parts, dim=1)  # (N, 6F)
    embedding = F.pad(embedding, (0, width - embedding.shape[1]))  # (N, C)
    return embedding.float()


class VisionTransformer3D(nn.Module):
    """3D ViT with a CLS token and a fixed sine-cosine position embedding interpolated to any patch grid.

    The position embedding is built for the grid of ``image_size``; a volume of another size (e.g. the full
    256x256x128 test volumes, a 16x16x16 grid) gets it trilinearly interpolated. As in the released model the
    embedding is not trained: it is a persistent buffer, saved and loaded under the checkpoint's name ``pos_embed``.

    Args:
        image_size: training crop size ``(X, Y, Z)`` that defines the base patch grid. Defaults to (224, 224, 112).
        patch_size: patch size ``(X, Y, Z)``; the last entry is along the slice axis. Defaults to (16, 16, 8).
        in_channels: number of input channels. Defaults to 1.
        width: token width C. Defaults to 768.
        depth: number of transformer blocks. Defaults to 12.
        num_heads: attention heads; must divide ``width``. Defaults to 12.
        mlp_ratio: MLP hidden size over ``width``. Defaults to 4.0.
        gradient_checkpointing: recompute each block in the backward pass to save activation memory while
            training. Defaults to False.
        patch_embedding: ``"linear"`` (one strided convolution, as ViT and the released model) or ``"conv"`` (a
            convolutional stem, for small models trained from scratch). Defaults to "linear".

    Example::

        encoder = VisionTransformer3D(image_size=(96, 96, 48), width=128, depth=4, num_heads=4)
        cls, tokens = encoder(torch.randn(2, 1, 96, 96, 48))
        cls.shape, tokens.shape  # torch.Size([2, 128]), torch.Size([2, 216, 128])
    """

    def __init__(
        self,
        image_size: Sequence[int] = (224, 224, 112),
        patch_size: Sequence[int] = (16, 16, 8),
        in_channels: int = 1,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        gradient_checkpointing: bool = False,
        patch_embedding: str = "linear",
    ) -> None:
        super().__init__()
        self.image_size = _triple(image_size, "image_size")
        self.patch_size = _triple(patch_size, "patch_size")
        for size, patch, axis in zip(self.image_size, self.patch_size, "XYZ"):
            if size % patch:
                raise ValueError(
                    f"image_size {self.image_size} is not divisible by patch_size {self.patch_size} along {axis}"
                )
        if width % num_heads:
            raise ValueError(f"width must be divisible by num_heads, got width={width}, num_heads={num_heads}")
        if depth < 1 or in_channels < 1:
            raise ValueError(f"depth and in_channels must be at least 1, got depth={depth}, in_channels={in_channels}")
        self.in_channels = in_channels
        self.width = width
        self.gradient_checkpointing = gradient_checkpointing
        self.base_grid = tuple(size // patch for size, patch in zip(self.image_size, self.patch_size))

        self.patch_embed = PatchEmbedding(in_channels, width, self.patch_size, patch_embedding)  # (B, C, gx, gy, gz)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        patch_position = sincos_position_embedding_3d(width, self.base_grid)  # (N0, C)
        position = torch.cat([torch.zeros(1, width), patch_position]).unsqueeze(0)  # (1, 1 + N0, C); CLS gets zeros
        self.register_buffer("pos_embed", position, persistent=True)
        # The released blocks use LayerNorm eps 1e-6 and the final norm PyTorch's default 1e-5.
        self.blocks = nn.ModuleList(TransformerBlock(width, num_heads, int(width * mlp_ratio)) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def grid_size(self, spatial_size: Sequence[int]) -> tuple[int, int, int]:
        """Patch grid ``(gx, gy, gz)`` of a volume of spatial size ``(X, Y, Z)``."""
        return tuple(size // patch for size, patch in zip(spatial_size, self.patch_size))  # type: ignore[return-value]

    def position_embedding(self, grid_size: Sequence[int]) -> torch.Tensor:
        """Position embedding for a patch grid, trilinearly interpolated from the base grid when it differs.

        Args:
            grid_size: ``(gx, gy, gz)``.

        Returns:
            ``(1, 1 + gx * gy * gz, C)``: the CLS position first, then the patches with Z varying fastest.
        """
        grid_size = tuple(grid_size)
        if grid_size == self.base_grid:
            return self.pos_embed
        cls_position, patch_position = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_position = patch_position.reshape(1, *self.base_grid, self.width).permute(0, 4, 1, 2, 3)  # (1, C, g0)
        patch_position = F.interpolate(patch_position, size=grid_size, mode="trilinear", align_corners=False)
        patch_position = patch_position.flatten(2).transpose(1, 2)  # (1, N, C)
        return torch.cat([cls_position, patch_position], dim=1)

    def _check_input(self, volumes: torch.Tensor) -> None:
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return
        if volumes.dim() != 5 or volumes.shape[1] != self.in_channels:
            raise ValueError(
                f"volumes must have shape (B, {self.in_channels}, X, Y, Z), got {tuple(volumes.shape)}; add the "
                "channel axis with volumes.unsqueeze(1) if it is missing"
            )
        spatial = tuple(volumes.shape[2:])
        if any(size % patch for size, patch in zip(spatial, self.patch_size)):
            raise ValueError(
                f"volume size (X, Y, Z) = {spatial} is not divisible by the patch size {self.patch_size}; crop or pad "
                "it to a multiple (e.g. 224x224x112 or 256x256x128)"
            )

    def forward(self, volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode volumes.

        Args:
            volumes: ``(B, C_in, X, Y, Z)``, each spatial size a multiple of the patch size.

        Returns:
            ``(cls, patch_tokens)``: the normalised CLS token ``(B, C)`` and the normalised patch tokens
            ``(B, gx * gy * gz, C)`` (Z varying fastest; :meth:`grid_size` gives the grid).
        """
        self._check_input(volumes)
        patches = self.patch_embed(volumes)  # (B, C, gx, gy, gz)
        grid_size = patches.shape[2:]
        tokens = patches.flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + N, C)
        tokens = tokens + self.position_embedding(grid_size).to(tokens.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        tokens = self.norm(tokens)
        return tokens[:, 0], tokens[:, 1:]
