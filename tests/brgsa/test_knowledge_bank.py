"""Tests of the Cross-Modal Knowledge Bank."""

from __future__ import annotations

import pytest
import torch

from brgsa.knowledge_bank import KnowledgeBank


def test_orthogonal_rows_when_fewer_entries_than_width():
    torch.manual_seed(0)
    bank = KnowledgeBank(num_entries=8, dim=16)
    gram = bank.entries @ bank.entries.t()  # (K, K)
    torch.testing.assert_close(gram, torch.eye(8), atol=1e-5, rtol=0)


def test_orthogonal_columns_when_more_entries_than_width():
    torch.manual_seed(0)
    bank = KnowledgeBank(num_entries=32, dim=16)
    gram = bank.entries.t() @ bank.entries  # (D, D)
    torch.testing.assert_close(gram, torch.eye(16), atol=1e-5, rtol=0)


def test_bank_is_a_parameter_with_declared_shape():
    bank = KnowledgeBank(num_entries=12, dim=6, temperature=0.5)
    assert isinstance(bank.entries, torch.nn.Parameter)
    assert bank.entries.shape == (12, 6)
    assert (bank.num_entries, bank.dim, bank.temperature) == (12, 6, 0.5)
    assert [name for name, _ in bank.named_parameters()] == ["entries"]


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16)])
def test_readout_shapes_and_weights_sum_to_one(shape):
    torch.manual_seed(0)
    bank = KnowledgeBank(num_entries=10, dim=16)
    embeds = torch.randn(*shape)
    weights = bank.attention(embeds)
    assert weights.shape == (*shape[:-1], 10)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(shape[:-1]))
    reconstruction = bank(embeds)
    assert reconstruction.shape == shape
    torch.testing.assert_close(reconstruction, weights @ bank.entries)


def test_readout_matches_explicit_formula():
    torch.manual_seed(0)
    bank = KnowledgeBank(num_entries=6, dim=4, temperature=0.7)
    embeds = torch.randn(3, 4)
    expected = torch.zeros(3, 4)
    for i in range(3):
        logits = torch.stack([embeds[i].dot(bank.entries[k]) / 0.7 for k in range(6)])
        weights = logits.exp() / logits.exp().sum()
        expected[i] = sum(weights[k] * bank.entries[k] for k in range(6))
    torch.testing.assert_close(bank(embeds), expected, atol=1e-6, rtol=1e-5)


def test_small_temperature_gives_the_nearest_entry():
    torch.manual_seed(0)
    bank = KnowledgeBank(num_entries=4, dim=8, temperature=1e-4)
    embeds = torch.randn(5, 8)
    nearest = (embeds @ bank.entries.t()).argmax(dim=1)
    torch.testing.assert_close(bank(embeds), bank.entries[nearest].detach())


def test_large_temperature_gives_the_mean_entry():
    torch.manual_seed(0)
    bank = KnowledgeBank(num_entries=4, dim=8, temperature=1e6)
    expected = bank.entries.mean(0, keepdim=True).expand(3, 8).detach()
    torch.testing.assert_close(bank(torch.randn(3, 8)), expected, atol=1e-5, rtol=0)


def test_gradients_reach_the_bank():
    bank = KnowledgeBank(num_entries=4, dim=8)
    bank(torch.randn(3, 8)).sum().backward()
    assert bank.entries.grad is not None and bank.entries.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_entries": 0}, "num_entries"),
        ({"dim": -1}, "dim"),
        ({"temperature": 0.0}, "temperature must be positive, got 0.0"),
    ],
)
def test_ill_arg(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KnowledgeBank(**kwargs)


def test_wrong_width_is_rejected():
    with pytest.raises(ValueError, match="width 8"):
        KnowledgeBank(num_entries=4, dim=8)(torch.randn(2, 7))
