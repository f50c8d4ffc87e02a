"""Building blocks of the LSMS reconstruction: visual encoders, SVLA fusion and the full-scale decoder.

Every block here is our own design from the paper's abstract-level description (arXiv 2408.17347); the paper's method
section is not public. ``docs/lsms_reconstruction.md`` lists each choice and its reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RefinementHead",
    "SUPPORTED_BUILTIN_ENCODERS",
    "ConvEncoder",
    "FullScaleDecoder",
    "SVLA",
    "SmpEncoder",
    "build_visual_encoder",
]

SUPPORTED_BUILTIN_ENCODERS = ("conv",)
"""Names of the built-in visual encoders; ``"smp:<name>"`` selects a segmentation-models-pytorch encoder instead."""


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(features + self.conv2(self.conv1(features)))


class ConvEncoder(nn.Module):
    """Built-in ResNet-like four-stage encoder with strides 4, 8, 16 and 32.

    Stem: two 3x3 convolutions of stride 2. Stage ``i`` (i > 0) starts with a stride-2 3x3 convolution; every stage
    then stacks ``depths[i]`` basic residual blocks.

    Args:
        in_channels: image channels C (1 + 2 * context slices for CT). Defaults to 1.
        widths: channels of the four stages. Defaults to (64, 128, 256, 512).
        depths: residual blocks per stage. Defaults to (2, 2, 2, 2).

    Contract: ``forward(images (B, C, H, W))`` returns four maps, highest resolution first, of shapes
    (B, widths[i], H / 2**(i + 2), W / 2**(i + 2)) for H, W multiples of 32.
    """

    def __init__(
        self, in_channels: int = 1, widths: Sequence[int] = (64, 128, 256, 512), depths: Sequence[int] = (2, 2, 2, 2)
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(depths) != 4:
            raise ValueError(f"widths and depths need 4 entries (one per stage), got {tuple(widths)}, {tuple(depths)}")
        if min(widths) < 1 or min(depths) < 0:
            raise ValueError(f"widths must be positive and depths non-negative, got {tuple(widths)}, {tuple(depths)}")
        self.out_channels = tuple(int(width) for width in widths)
        stem_width = max(widths[0] // 2, 8)
        self.stem = nn.Sequential(
            _conv_bn_relu(in_channels, stem_width, stride=2), _conv_bn_relu(stem_width, widths[0], stride=2)
        )
        stages = []
        for index, (width, depth) in enumerate(zip(widths, depths)):
            down = nn.Identity() if index == 0 else _conv_bn_relu(widths[index - 1], width, stride=2)
            stages.append(nn.Sequential(down, *[_BasicBlock(width) for _ in range(depth)]))
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.stem(images)
        maps = []
        for stage in self.stages:
            features = stage(features)
            maps.append(features)
        return maps


def _import_smp():
    try:
        import segmentation_models_pytorch
    except ImportError as error:
        raise ImportError(
            "encoders named 'smp:<name>' need the optional package `segmentation-models-pytorch`: install it with "
            "`pip install 'medvl[smp]'`, or use the built-in encoder='conv'"
        ) from error
    return segmentation_models_pytorch


class SmpEncoder(nn.Module):
    """A segmentation-models-pytorch encoder (e.g. ``resnet34``) exposing its stride 4/8/16/32 maps.

    Args:
        name: smp encoder name, e.g. ``"resnet34"``, ``"efficientnet-b0"``.
        in_channels: image channels C. Defaults to 1.
        weights: smp pretrained weights name (e.g. ``"imagenet"``; downloaded by smp) or None for random
            initialisation. Defaults to None.
    """

    def __init__(self, name: str, in_channels: int = 1, weights: str | None = None) -> None:
        super().__init__()
        smp = _import_smp()
        self.encoder = smp.encoders.get_encoder(name, in_channels=in_channels, depth=5, weights=weights)
        self.out_channels = tuple(int(channels) for channels in self.encoder.out_channels[-4:])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(images)[-4:])  # smp returns strides 1, 2, 4, 8, 16, 32


def build_visual_encoder(
    encoder: str, in_channels: int, widths: Sequence[int], depths: Sequence[int], weights: str | None = None
) -> nn.Module:
    """Build the visual encoder named ``encoder``: ``"conv"`` (built-in) or ``"smp:<encoder name>"``.

    ``widths`` and ``depths`` configure the built-in encoder only; ``weights`` applies to smp encoders only.
    """
    if encoder.startswith("smp:"):
        return SmpEncoder(encoder.removeprefix("smp:"), in_channels=in_channels, weights=weights)
    if encoder not in SUPPORTED_BUILTIN_ENCODERS:
        raise ValueError(
            f"unknown encoder {encoder!r}; choose one of {list(SUPPORTED_BUILTIN_ENCODERS)} or 'smp:<name>' "
            "(e.g. 'smp:resnet34')"
        )
    if weights is not None:
        raise ValueError(f"encoder_weights={weights!r} only applies to 'smp:' encoders; the built-in one has none")
    return ConvEncoder(in_channels=in_channels, widths=widths, depths=depths)


class SVLA(nn.Module):
    """Scale-aware Vision-Language Attention (our reconstruction).

    Two branches read the same visual map ``x`` in parallel:

    - scale-aware visual attention (MSCA/LKA-style): a depth-wise 5x5 convolution, then parallel depth-wise strip
      convolutions 1xk followed by kx1 (one pair per kernel size, with its dilation), summed with the 5x5 output and
      mixed by a 1x1 convolution into an attention map ``A``; ``visual = A * x``;
    - pixel-word cross-attention (LAVT PWAM-style): queries are pixels, keys and values are words; padding tokens
      are masked out, so they change nothing.

    They are fused multiplicatively (``visual * language``), projected by a 1x1 convolution and added back through a
    tanh gate: ``x + tanh(gate(fused)) * fused``. With ``use_language=False`` the language branch does not exist and
    ``visual`` alone is gated back (a large-kernel attention block).

    Args:
        dim: channels of the visual map.
        text_dim: width D of the word features. Ignored when ``use_language`` is False.
        kernel_sizes: strip-convolution kernel sizes. Defaults to (7, 11, 21).
        dilations: dilation of each strip-convolution pair, one per kernel size. Defaults to (1, 1, 1).
        num_heads: cross-attention heads; must divide ``dim``. Defaults to 1.
        use_language: build the language branch. Defaults to True.

    Shapes: ``x`` (B, C, H, W), ``word_feats`` (B, L, D), ``word_mask`` (B, L) bool, True = real token;
    output (B, C, H, W).
    """

    def __init__(
        self,
        dim: int,
        text_dim: int,
        kernel_sizes: Sequence[int] = (7, 11, 21),
        dilations: Sequence[int] = (1, 1, 1),
        num_heads: int = 1,
        use_language: bool = True,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ValueError(
                f"need one dilation per kernel size, got kernel_sizes={tuple(kernel_sizes)} and "
                f"dilations={tuple(dilations)}"
            )
        if any(size < 1 or size % 2 == 0 for size in kernel_sizes) or any(dilation < 1 for dilation in dilations):
            raise ValueError(
                f"kernel sizes must be odd and positive and dilations positive, got {tuple(kernel_sizes)}, "
                f"{tuple(dilations)}"
            )
        if use_language and dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the stage width {dim}")
        self.use_language = use_language
        self.num_heads = num_heads
        self.local = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.strips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, (1, size), padding=(0, dilation * (size // 2)), dilation=(1, dilation), groups=dim),
                nn.Conv2d(dim, dim, (size, 1), padding=(dilation * (size // 2), 0), dilation=(dilation, 1), groups=dim),
            )
            for size, dilation in zip(kernel_sizes, dilations)
        )
        self.mix = nn.Conv2d(dim, dim, 1)
        if use_language:
            self.query = nn.Conv2d(dim, dim, 1)
            self.key = nn.Linear(text_dim, dim)
            self.value = nn.Linear(text_dim, dim)
            self.language_out = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GroupNorm(1, dim))
        self.project = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU())
        self.gate = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1), nn.Tanh())

    def _pixel_word_attention(
        self, x: torch.Tensor, word_feats: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        batch, channels, height, width = x.shape
        head_dim = channels // self.num_heads
        queries = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        queries = queries.reshape(batch, height * width, self.num_heads, head_dim).transpose(1, 2)  # (B, h, HW, C/h)
        keys = self.key(word_feats).reshape(batch, -1, self.num_heads, head_dim).transpose(1, 2)  # (B, h, L, C/h)
        values = self.value(word_feats).reshape(batch, -1, self.num_heads, head_dim).transpose(1, 2)  # (B, h, L, C/h)
        attend = word_mask[:, None, None, :]  # (B, 1, 1, L), True = real token
        language = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attend)  # (B, h, HW, C/h)
        language = language.transpose(2, 3).reshape(batch, channels, height, width)  # (B, C, H, W)
        return self.language_out(language)

    def forward(
        self, x: torch.Tensor, word_feats: torch.Tensor | None = None, word_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        local = self.local(x)
        attention = self.mix(local + sum(strip(local) for strip in self.strips))  # (B, C, H, W)
        fused = attention * x
        if self.use_language:
            if word_feats is None or word_mask is None:
                raise ValueError("this SVLA block uses language: pass word_feats (B, L, D) and word_mask (B, L)")
            fused = fused * self._pixel_word_attention(x, word_feats, word_mask)
        fused = self.project(fused)
        return x + self.gate(fused) * fused


class _FullScaleNode(nn.Module):
    """One UNet 3+ decoder node: every input resized to the node's grid, projected to ``branch_width``, concatenated,
    fused by a 3x3 convolution and (optionally) modulated by the sentence through FiLM."""

    def __init__(self, in_widths: Sequence[int], branch_width: int, text_dim: int | None) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv_bn_relu(width, branch_width) for width in in_widths)
        fused_width = branch_width * len(in_widths)
        self.fuse = _conv_bn_relu(fused_width, fused_width)
        self.film = nn.Linear(text_dim, 2 * fused_width) if text_dim is not None else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(
        self, inputs: Sequence[torch.Tensor], size: tuple[int, int], sentence: torch.Tensor | None
    ) -> torch.Tensor:
        resized = []
        for features, branch in zip(inputs, self.branches):
            height = features.shape[-2]
            if height > size[0]:
                features = F.max_pool2d(features, kernel_size=height // size[0])  # finer encoder map: pool down
            elif height < size[0]:
                features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)  # deeper: upsample
            resized.append(branch(features))
        fused = self.fuse(torch.cat(resized, dim=1))  # (B, n_inputs * branch_width, h, w)
        if self.film is not None and sentence is not None:
            scale, shift = self.film(sentence)[:, :, None, None].chunk(2, dim=1)  # (B, W, 1, 1) each
            fused = fused * (1 + scale) + shift
        return fused


class FullScaleDecoder(nn.Module):
    """UNet 3+-style full-scale decoder with sentence FiLM and deep-supervision heads.

    Decoder node ``i`` (stride 4 * 2**i, from deep to shallow: i = 2, 1, 0) receives every encoder map at stride
    <= its own (max-pooled down), and every deeper decoder output, the deepest being the stride-32 encoder map
    (bilinearly upsampled); each is projected to ``branch_width`` channels, so each node has 4 * branch_width channels.

    Args:
        encoder_widths: channels of the four encoder maps (strides 4, 8, 16, 32).
        branch_width: channels of each projected input. Defaults to 32.
        text_dim: sentence width D for FiLM, or None for no language guidance. Defaults to None.

    Shapes: ``forward(maps, sentence (B, D) | None)`` returns the stride-4 decoder map (B, 4 * branch_width, H/4, W/4)
    and the deep-supervision logits at strides 8, 16, 32: a list of (B, 1, H/s, W/s).
    """

    def __init__(self, encoder_widths: Sequence[int], branch_width: int = 32, text_dim: int | None = None) -> None:
        super().__init__()
        node_width = 4 * branch_width
        self.out_channels = node_width
        nodes = {}
        for level in (2, 1, 0):
            in_widths = list(encoder_widths[: level + 1]) + [node_width] * (2 - level) + [encoder_widths[3]]
            nodes[str(level)] = _FullScaleNode(in_widths, branch_width, text_dim)
        self.nodes = nn.ModuleDict(nodes)
        self.aux_heads = nn.ModuleList(
            [nn.Conv2d(node_width, 1, 1), nn.Conv2d(node_width, 1, 1), nn.Conv2d(encoder_widths[3], 1, 1)]
        )

    def forward(
        self, maps: Sequence[torch.Tensor], sentence: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        decoded: dict[int, torch.Tensor] = {3: maps[3]}
        for level in (2, 1, 0):
            deeper = [decoded[deep] for deep in range(level + 1, 3)]
            inputs = list(maps[: level + 1]) + deeper + [maps[3]]
            decoded[level] = self.nodes[str(level)](inputs, tuple(maps[level].shape[-2:]), sentence)
        aux_logits = [head(decoded[level]) for head, level in zip(self.aux_heads, (1, 2, 3))]
        return decoded[0], aux_logits


class RefinementHead(nn.Module):
    """Stride-2 refinement before the mask head, so lesions a few pixels wide keep their shape.

    The full-scale decoder ends at stride 4; a 6 mm lesion on a 128-pixel slice then covers about one decoder cell.
    This head projects the decoded map to ``width`` channels (1x1 convolution at stride 4, where it is cheap),
    upsamples it to stride 2, adds shallow image features computed at stride 2 (two 3x3 convolutions on the input),
    like the full-resolution level of UNet 3+, and mixes them with one 3x3 convolution.

    Args:
        in_channels: image channels C.
        decoder_channels: channels of the decoded stride-4 map.
        width: channels of the stride-2 features and of the output. Defaults to 16.
    """

    def __init__(self, in_channels: int, decoder_channels: int, width: int = 16) -> None:
        super().__init__()
        self.image_features = nn.Sequential(_conv_bn_relu(in_channels, width, stride=2), _conv_bn_relu(width, width))
        self.project = _conv_bn_relu(decoder_channels, width, kernel_size=1)
        self.fuse = _conv_bn_relu(width, width)
        self.out_channels = width

    def forward(self, images: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W) with H, W multiples of 32, decoded (B, D, H/4, W/4) -> (B, width, H/2, W/2)."""
        shallow = self.image_features(images)  # (B, width, H/2, W/2)
        deep = F.interpolate(self.project(decoded), size=shallow.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(deep + shallow)
