"""The ViT image encoder of CARZero (ViT-B/16 by default), written without timm or torchvision.

The layout follows the MAE/MRM ViT that CARZero's released checkpoint was trained with: a convolutional patch
embedding, a learned CLS token, a fixed 2-D sine-cosine position embedding (its channel halves in (row, column)
order, see :func:`sincos_position_embedding_2d`), pre-norm transformer blocks and a final LayerNorm (eps 1e-6).
Parameter names follow the timm convention (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``,
``norm``) so that MAE-style checkpoints map onto it by stripping their prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from datasets.vit_layers import PatchEmbedding, TransformerBlock

__all__ = ["VisionTransformer", "sincos_position_embedding_2d"]


def sincos_position_embedding_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding with a leading all-zero row for the CLS token.

    The first half of the channels encodes the row index and the second the column index (MAE's
    ``get_2d_sincos_pos_embed`` has the column half first; a loaded checkpoint's ``pos_embed`` replaces this buffer,
    so that only matters for training from scratch); each half is ``[sin(pos * w), cos(pos * w)]`` with frequencies
    ``w_k = 10000^(-k / (embed_dim / 4))``.

    Args:
        embed_dim: channel count, a multiple of 4.
        grid_size: patches per side.

    Returns:
        Tensor of shape ``(1, 1 + grid_size**2, embed_dim)``.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"a 2-D sine-cosine position embedding needs embed_dim divisible by 4, got {embed_dim}")
    quarter = embed_dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    positions = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(positions, positions, indexing="ij")  # (G, G) each

    def encode(coordinates: torch.Tensor) -> torch.Tensor:
        angles = coordinates.reshape(-1, 1) * frequencies  # (G*G, D/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (G*G, D/2)

    grid_embedding = torch.cat([encode(rows), encode(cols)], dim=1)  # (G*G, D)
    with_cls = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), grid_embedding], dim=0)
    return with_cls.unsqueeze(0).float()  # (1, 1 + G*G, D)


class VisionTransformer(nn.Module):
    """A plain ViT returning the CLS token and the patch tokens, both after the final LayerNorm.

    Args:
        image_size: side of the square input in pixels. Defaults to 224.
        patch_size: side of a patch in pixels; must divide ``image_size``. Defaults to 16.
        in_channels: image channels (3 for grey images repeated to RGB, as released; 1 for single-channel input).
            Defaults to 3.
        width: token width. Defaults to 768.
        depth: number of transformer blocks. Defaults to 12.
        num_heads: attention heads; must divide ``width``. Defaults to 12.
        mlp_ratio: hidden width of the block MLP relative to ``width``. Defaults to 4.0.
        patch_embedding: ``"linear"`` (one strided convolution, as ViT and the released model) or ``"conv"`` (a
            convolutional stem, for training small models from scratch). Defaults to ``"linear"``.

    Example::

        vit = VisionTransformer()
        global_token, patches = vit(torch.randn(2, 3, 224, 224))
        # global_token: torch.Size([2, 768]); patches: torch.Size([2, 196, 768])
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        patch_embedding: str = "linear",
    ) -> None:
        super().__init__()
        if patch_size <= 0 or image_size % patch_size != 0:
            raise ValueError(f"patch_size must divide image_size, got image_size={image_size}, patch_size={patch_size}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if width % num_heads != 0:
            raise ValueError(f"width must be divisible by num_heads, got width={width}, num_heads={num_heads}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.width = width
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = PatchEmbedding(in_channels, width, (patch_size, patch_size), patch_embedding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        # Fixed (not learned) as in MAE; persistent so that a checkpoint's `pos_embed` loads onto it.
        self.register_buffer("pos_embed", sincos_position_embedding_2d(width, image_size // patch_size))
        self.blocks = nn.ModuleList(TransformerBlock(width, num_heads, int(width * mlp_ratio)) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.cls_token, std=0.02)
        patch_weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(patch_weight.view(patch_weight.shape[0], -1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images.

        Args:
            images: ``(B, in_channels, image_size, image_size)``.

        Returns:
            ``global_token (B, width)`` and ``patches (B, num_patches, width)``.
        """
        if not torch.jit.is_scripting() and (
            images.ndim != 4 or images.shape[1] != self.in_channels or images.shape[-2:] != (self.image_size,) * 2
        ):
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, {self.image_size}, {self.image_size}), got "
                f"{tuple(images.shape)}; resize/crop to {self.image_size} px"
                + (" and repeat grey images to 3 channels" if self.in_channels == 3 else "")
            )
        patch_tokens = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, P, D)
        cls_tokens = self.cls_token.expand(patch_tokens.shape[0], -1, -1)  # (B, 1, D)
        hidden_states = torch.cat([cls_tokens, patch_tokens], dim=1) + self.pos_embed.to(patch_tokens.dtype)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.norm(hidden_states)  # (B, 1 + P, D)
        return hidden_states[:, 0], hidden_states[:, 1:]
