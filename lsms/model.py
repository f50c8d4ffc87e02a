"""LSMS: Language-guided Scale-aware MedSegmentor (Ouyang et al., arXiv 2408.17347). Unofficial reconstruction.

The paper's method section is not public; this model follows its abstract: a visual encoder whose every stage's
output is read by Scale-aware Vision-Language Attention (SVLA: multi-kernel depth-wise attention in parallel with
pixel-word attention; a side branch feeding the decoder, so the encoder itself is text-agnostic), a Full-Scale
Decoder (UNet 3+-style, here guided by the sentence) with deep supervision, and optional embeddings for a
vision-language contrastive loss. ``docs/lsms_reconstruction.md`` lists every choice the paper does not state.

Plain PyTorch: no Lightning, data-layer or CLI imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lsms.blocks import SVLA, FullScaleDecoder, RefinementHead, build_visual_encoder
from lsms.text_encoder import OFFLINE_MINILM, TextEncoder, TextFeatures

__all__ = ["LSMS", "LSMSOutput"]

_STRIDE = 32  # coarsest encoder stride; inputs are padded to a multiple of it


@dataclass
class LSMSOutput:
    """What :meth:`LSMS.forward` returns; field names match the keyword arguments of :class:`lsms.losses.LSMSLoss`.

    Attributes:
        logits: mask logits at the input size, shape (B, 1, H, W).
        aux_logits: deep-supervision logits from the decoder at strides 8 and 16 and the encoder at stride 32,
            bilinearly upsampled to the input size: a list of three (B, 1, H, W) tensors (empty when deep
            supervision is off).
        pixel_embeds: L2-normalised per-pixel embeddings at stride 4, shape (B, E, ceil(H/32)*8, ceil(W/32)*8),
            covering the input padded to a multiple of 32 at its bottom/right; None without a contrastive head.
        sentence_embeds: L2-normalised sentence embeddings, shape (B, E); None without a contrastive head.
        logit_scale: learnable contrastive temperature, exp(log-scale), a scalar tensor; None without a
            contrastive head.
    """

    logits: torch.Tensor
    aux_logits: list[torch.Tensor]
    pixel_embeds: torch.Tensor | None = None
    sentence_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


class LSMS(nn.Module):
    """Referring lesion segmentation from an image and a referring expression.

    Args:
        text_encoder: Hugging Face model id, local folder or ``"offline:all-MiniLM-L6-v2"`` (see
            :class:`lsms.text_encoder.TextEncoder`). Defaults to ``"offline:all-MiniLM-L6-v2"``.
        max_length: maximum tokens per expression; longer ones are truncated and counted. Defaults to 32.
        freeze_text: freeze the text encoder. Defaults to True.
        cache_text_features: with a frozen text encoder, encode each distinct text once. Defaults to True.
        trust_remote_code: let the text model's repository run its own code (CXR-BERT needs it). Defaults to False.
        in_channels: image channels C (1 + 2 * context slices). Defaults to 1.
        encoder: ``"conv"`` (built-in ResNet-like encoder) or ``"smp:<name>"`` (segmentation-models-pytorch,
            extra ``smp``). Defaults to ``"conv"``.
        encoder_widths: stage widths of the built-in encoder. Defaults to (64, 128, 256, 512).
        encoder_depths: residual blocks per stage of the built-in encoder. Defaults to (2, 2, 2, 2).
        encoder_weights: pretrained weights for an smp encoder (e.g. ``"imagenet"``), None for random.
            Defaults to None.
        svla_kernel_sizes: strip-convolution kernel sizes in every SVLA. Defaults to (7, 11, 21).
        svla_dilations: one dilation per kernel size. Defaults to (1, 1, 1).
        svla_heads: pixel-word attention heads; must divide every encoder width. Defaults to 1.
        decoder_width: channels of each projected input of a decoder node (a node has 4x this). Defaults to 32.
        use_language: use the text at all (SVLA language branch and decoder FiLM); False gives the visual-only
            ablation, which ignores the text. Defaults to True.
        deep_supervision: return deep-supervision logits. Defaults to True.
        contrastive_dim: width E of the pixel and sentence embeddings for the contrastive loss; 0 builds no
            contrastive head. Defaults to 0.
        refine_width: channels of the stride-2 refinement head (:class:`lsms.blocks.RefinementHead`) that sharpens
            small lesions: its zero-initialised output is added to the upsampled stride-4 prediction, so training
            starts from the plain decoder and learns the correction. 0 disables it. Defaults to 16.

    Example::

        net = LSMS(text_encoder="offline:all-MiniLM-L6-v2", encoder_widths=(16, 32, 64, 128))
        out = net(torch.rand(2, 1, 97, 130), ["lesion in the right lobe", "the larger cyst"])
        out.logits.shape  # torch.Size([2, 1, 97, 130])
    """

    def __init__(
        self,
        text_encoder: str = OFFLINE_MINILM,
        max_length: int = 32,
        freeze_text: bool = True,
        cache_text_features: bool = True,
        trust_remote_code: bool = False,
        in_channels: int = 1,
        encoder: str = "conv",
        encoder_widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        encoder_depths: tuple[int, int, int, int] = (2, 2, 2, 2),
        encoder_weights: str | None = None,
        svla_kernel_sizes: tuple[int, ...] = (7, 11, 21),
        svla_dilations: tuple[int, ...] = (1, 1, 1),
        svla_heads: int = 1,
        decoder_width: int = 32,
        use_language: bool = True,
        deep_supervision: bool = True,
        contrastive_dim: int = 0,
        refine_width: int = 16,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1 (1 + 2 * context slices), got {in_channels}")
        if decoder_width < 1 or contrastive_dim < 0 or refine_width < 0:
            raise ValueError(
                f"decoder_width must be >= 1, contrastive_dim >= 0 and refine_width >= 0, got {decoder_width}, "
                f"{contrastive_dim} and {refine_width}"
            )
        self.config = {
            "text_encoder": text_encoder,
            "max_length": max_length,
            "freeze_text": freeze_text,
            "cache_text_features": cache_text_features,
            "trust_remote_code": trust_remote_code,
            "in_channels": in_channels,
            "encoder": encoder,
            "encoder_widths": list(encoder_widths),
            "encoder_depths": list(encoder_depths),
            "encoder_weights": encoder_weights,
            "svla_kernel_sizes": list(svla_kernel_sizes),
            "svla_dilations": list(svla_dilations),
            "svla_heads": svla_heads,
            "decoder_width": decoder_width,
            "use_language": use_language,
            "deep_supervision": deep_supervision,
            "contrastive_dim": contrastive_dim,
            "refine_width": refine_width,
        }
        self.in_channels = in_channels
        self.use_language = use_language
        self.deep_supervision = deep_supervision
        self.text_encoder = TextEncoder(
            text_encoder,
            max_length=max_length,
            freeze=freeze_text,
            cache_features=cache_text_features,
            trust_remote_code=trust_remote_code,
        )
        text_dim = self.text_encoder.hidden_size
        self.visual_encoder = build_visual_encoder(
            encoder, in_channels, encoder_widths, encoder_depths, weights=encoder_weights
        )
        widths = self.visual_encoder.out_channels
        self.svla = nn.ModuleList(
            SVLA(
                width,
                text_dim,
                kernel_sizes=svla_kernel_sizes,
                dilations=svla_dilations,
                num_heads=svla_heads,
                use_language=use_language,
            )
            for width in widths
        )
        self.decoder = FullScaleDecoder(widths, branch_width=decoder_width, text_dim=text_dim if use_language else None)
        self.head = nn.Conv2d(self.decoder.out_channels, 1, 3, padding=1)
        if refine_width:
            self.refine = RefinementHead(in_channels, self.decoder.out_channels, refine_width)
            self.refine_head = nn.Conv2d(refine_width, 1, 3, padding=1)
            nn.init.zeros_(self.refine_head.weight)  # starts as the stride-4 prediction and learns the correction
            nn.init.zeros_(self.refine_head.bias)
        else:
            self.refine = self.refine_head = None
        if contrastive_dim:
            self.pixel_projection = nn.Conv2d(self.decoder.out_channels, contrastive_dim, 1)
            self.sentence_projection = nn.Linear(text_dim, contrastive_dim)
            self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            self.pixel_projection = self.sentence_projection = self.log_logit_scale = None
        self.to(memory_format=torch.channels_last)  # 4D convolution weights in NHWC to match the inputs

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise texts exactly as :meth:`forward` does: ``(input_ids (B, L), attention_mask (B, L))``."""
        return self.text_encoder.tokenize(texts)

    def encode_text(self, texts: list[str]) -> TextFeatures:
        """Encode texts: word features (B, L, D), padding mask (B, L) (True = real token), sentence (B, D)."""
        return self.text_encoder(texts)

    def forward_features(
        self, images: torch.Tensor, word_feats: torch.Tensor, word_mask: torch.Tensor, sentence: torch.Tensor
    ) -> LSMSOutput:
        """Segment from images and already encoded text.

        Args:
            images: (B, C, H, W), any H and W (padded internally to a multiple of 32 and cropped back).
            word_feats: (B, L, D) word features.
            word_mask: (B, L) bool, True for a real token; padding tokens are ignored.
            sentence: (B, D) sentence vector.

        Returns:
            :class:`LSMSOutput`.
        """
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            if images.ndim != 4 or images.shape[1] != self.in_channels:
                raise ValueError(
                    f"images must have shape (B, {self.in_channels}, H, W) (in_channels={self.in_channels}), "
                    f"got {tuple(images.shape)}"
                )
            if word_feats.shape[0] != images.shape[0]:
                raise ValueError(f"got {images.shape[0]} images but {word_feats.shape[0]} texts; pass one per image")
        height, width = images.shape[-2:]
        padded = F.pad(images, (0, (-width) % _STRIDE, 0, (-height) % _STRIDE))  # zero-pad bottom/right to 32k
        padded = padded.contiguous(memory_format=torch.channels_last)  # oneDNN convolutions are faster in NHWC

        maps = []
        for features, svla in zip(self.visual_encoder(padded), self.svla):
            maps.append(svla(features, word_feats, word_mask))  # (B, C_i, H/s_i, W/s_i)
        decoded, aux = self.decoder(maps, sentence if self.use_language else None)  # (B, W_dec, H/4, W/4)

        def to_input_size(logits: torch.Tensor) -> torch.Tensor:
            upsampled = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
            return upsampled[..., :height, :width]

        mask_logits = self.head(decoded)  # (B, 1, H/4, W/4)
        if self.refine is not None:
            fine = self.refine(padded, decoded)  # (B, refine_width, H/2, W/2)
            upsampled = F.interpolate(mask_logits, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            mask_logits = upsampled + self.refine_head(fine)  # (B, 1, H/2, W/2)
        output = LSMSOutput(
            logits=to_input_size(mask_logits),
            aux_logits=[to_input_size(logits) for logits in aux] if self.deep_supervision else [],
        )
        if self.pixel_projection is not None:
            output.pixel_embeds = F.normalize(self.pixel_projection(decoded), dim=1)  # (B, E, H/4, W/4)
            output.sentence_embeds = F.normalize(self.sentence_projection(sentence), dim=-1)  # (B, E)
            output.logit_scale = self.log_logit_scale.clamp(max=math.log(100.0)).exp()
        return output

    def forward(self, images: torch.Tensor, texts: list[str]) -> LSMSOutput:
        """Segment the lesion each text refers to.

        Args:
            images: (B, C, H, W) float images (the data layer gives [0, 1]), any H and W.
            texts: B non-empty referring expressions, one per image.

        Returns:
            :class:`LSMSOutput` with ``logits`` (B, 1, H, W).

        Raises:
            ValueError: wrong image shape, a text count different from B, or an empty text.
        """
        if not isinstance(texts, list | tuple) or len(texts) != images.shape[0]:
            count = len(texts) if isinstance(texts, list | tuple) else type(texts).__name__
            raise ValueError(f"pass one text per image: got {images.shape[0]} images and texts={count}")
        text = self.encode_text(list(texts))
        word_feats, sentence = text.word_feats.to(images.dtype), text.sentence.to(images.dtype)
        return self.forward_features(images, word_feats, text.word_mask, sentence)
