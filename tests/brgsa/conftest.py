"""BrgSA test fixtures: one tiny network configuration for the model, module, conversion and zero-shot tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from brgsa.model import BrgSA

TINY_BRGSA = {
    "image_size": [32, 32, 16],
    "vision_width": 24,
    "vision_depth": 1,
    "vision_heads": 2,
    "embed_dim": 16,
    "knowledge_bank_size": 8,
    "text_last_n_layers": 2,
}


@pytest.fixture(scope="session")
def tiny_brgsa(tiny_bert_dir) -> Callable[..., BrgSA]:
    """Build a seeded tiny BrgSA (32 x 32 x 16 volumes, the tiny BERT) with keyword overrides of its config."""

    def build(**overrides) -> BrgSA:
        torch.manual_seed(0)
        return BrgSA(**{"text_encoder": str(tiny_bert_dir), **TINY_BRGSA, **overrides})

    return build
