"""CARZero test fixtures: one tiny network configuration for the model, module and scoring tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from carzero.model import CARZero

TINY_CARZERO = {
    "image_size": 32,
    "patch_size": 16,
    "vision_width": 32,
    "vision_layers": 1,
    "vision_heads": 2,
    "embed_dim": 16,
    "fusion_layers": 2,
    "fusion_heads": 2,
    "fusion_ffn_dim": 32,
    "head_hidden_dims": [8],
    "text_last_n_layers": 2,
}


@pytest.fixture(scope="session")
def tiny_carzero(tiny_bert_dir) -> Callable[..., CARZero]:
    """Build a seeded tiny CARZero (32 px images, the tiny BERT) in eval mode, with keyword overrides of its config."""

    def build(**overrides) -> CARZero:
        torch.manual_seed(0)
        return CARZero(**{"text_encoder": str(tiny_bert_dir), **TINY_CARZERO, **overrides}).eval()

    return build
