"""All-pairs scorer: equal to a naive per-pair loop, padding-invariant, chunking-invariant, reduced precision."""

from __future__ import annotations

import pytest
import torch

from carzero.model import CARZero, ImageTokens, TextTokens
from carzero.scoring import CARZeroScorer, score_all_pairs

PROMPTS = ["there is atelectasis", "there is cardiomegaly", "there is a small left pleural effusion", "edema", "mass"]


@pytest.fixture(scope="module")
def model64(tiny_carzero) -> CARZero:
    """A tiny model in float64 whose fusion weights are large enough to give widely spread scores."""
    model = tiny_carzero().double()
    with torch.no_grad():
        for name, parameter in model.fusion.named_parameters():
            if "norm" not in name:
                parameter.normal_(std=0.5)
    return model


def naive_scores(model: CARZero, image_tokens: ImageTokens, text_tokens: TextTokens) -> tuple[torch.Tensor, ...]:
    """One (image, text) pair at a time through the fusion's single-pair layers, as a plain reference."""
    fusion = model.fusion
    image_to_text = torch.empty(len(image_tokens), len(text_tokens), dtype=torch.float64)
    text_to_image = torch.empty_like(image_to_text)

    def fuse(query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        memory = fusion.norm(memory)
        hidden = fusion.norm(query)
        for layer in fusion.layers:
            hidden = layer(hidden, memory, mask)
        return fusion.head(fusion.norm(hidden)).squeeze()

    with torch.no_grad():
        for n in range(len(image_tokens)):
            image_memory = image_tokens.memory()[n : n + 1]  # (1, 1 + P, D)
            for m in range(len(text_tokens)):
                length = int(text_tokens.mask[m].sum())  # this text's own tokens only: no padding at all
                own_words = text_tokens.words[m : m + 1, :length]
                text_memory = torch.cat([text_tokens.sentence[m : m + 1, None], own_words], dim=1)
                image_to_text[n, m] = fuse(text_tokens.sentence[m : m + 1], image_memory, None)
                text_to_image[n, m] = fuse(image_tokens.global_token[n : n + 1], text_memory, None)
    return image_to_text, text_to_image


@pytest.fixture(scope="module")
def tokens64(model64) -> tuple[ImageTokens, TextTokens]:
    torch.manual_seed(1)
    with torch.no_grad():
        return model64.encode_images(torch.randn(4, 3, 32, 32, dtype=torch.float64)), model64.encode_texts(PROMPTS)


def test_equals_naive_per_pair_loop(model64, tokens64):
    image_tokens, text_tokens = tokens64
    expected_i2t, expected_t2i = naive_scores(model64, image_tokens, text_tokens)
    assert expected_i2t.std() > 0.1 and expected_t2i.std() > 0.1, "scores should be spread for a meaningful check"
    scores = score_all_pairs(model64, image_tokens, text_tokens, image_chunk_size=3, text_chunk_size=2)
    assert scores.image_to_text.dtype == torch.float64 and scores.mean.shape == (4, 5)
    torch.testing.assert_close(scores.image_to_text, expected_i2t, rtol=0, atol=1e-9)
    torch.testing.assert_close(scores.text_to_image, expected_t2i, rtol=0, atol=1e-9)
    torch.testing.assert_close(scores.mean, (expected_i2t + expected_t2i) / 2, rtol=0, atol=1e-9)
    # the model's unchunked all-pairs path used in training agrees too
    with torch.no_grad():
        unchunked = model64.all_pair_scores(image_tokens, text_tokens)
    torch.testing.assert_close(unchunked.mean, scores.mean, rtol=0, atol=1e-9)


@pytest.mark.parametrize("image_chunk_size, text_chunk_size", [(1, 1), (2, 3), (4, 5), (100, 100)])
def test_chunk_sizes_do_not_change_scores(model64, tokens64, image_chunk_size, text_chunk_size):
    image_tokens, text_tokens = tokens64
    reference = score_all_pairs(model64, image_tokens, text_tokens, image_chunk_size=64, text_chunk_size=64)
    scores = score_all_pairs(model64, image_tokens, text_tokens, image_chunk_size, text_chunk_size)
    torch.testing.assert_close(scores.mean, reference.mean, rtol=0, atol=1e-12)
    with torch.no_grad():
        text_cache = model64.project_text_memory(text_tokens)
    for first in range(0, 4, 2):  # image batches scored against one prompt cache
        batch = score_all_pairs(model64, image_tokens.select(slice(first, first + 2)), text_tokens,
                                image_chunk_size, text_chunk_size, text_cache=text_cache)
        torch.testing.assert_close(batch.mean, reference.mean[first : first + 2], rtol=0, atol=1e-12)


def test_padding_changes_no_score(model64, tokens64):
    image_tokens, _ = tokens64
    long_prompt = "a long report sentence that pads every other prompt of the batch with many positions"
    with torch.no_grad():
        alone = model64.encode_texts(["there is edema"])
        with_long = model64.encode_texts(["there is edema", long_prompt])
    assert with_long.mask.shape[1] > alone.mask.shape[1] + 5
    scores_alone = score_all_pairs(model64, image_tokens, alone)
    scores_with_long = score_all_pairs(model64, image_tokens, with_long)
    torch.testing.assert_close(scores_with_long.mean[:, :1], scores_alone.mean, rtol=0, atol=1e-9)

    # garbage (not zeros) at extra padded positions is ignored exactly
    extra = 7
    padded = TextTokens(
        alone.sentence,
        torch.cat([alone.words, torch.randn(1, extra, alone.words.shape[-1], dtype=torch.float64) * 100], dim=1),
        torch.cat([alone.mask, torch.zeros(1, extra, dtype=torch.bool)], dim=1),
    )
    scores_padded = score_all_pairs(model64, image_tokens, padded)
    torch.testing.assert_close(scores_padded.text_to_image, scores_alone.text_to_image, rtol=0, atol=1e-12)
    torch.testing.assert_close(scores_padded.image_to_text, scores_alone.image_to_text, rtol=0, atol=0)


def test_scorer_streams_batches_and_matches(model64):
    torch.manual_seed(2)
    images = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    scorer = CARZeroScorer(model64, PROMPTS, image_chunk_size=2, text_chunk_size=3)
    streamed = scorer.score_batches([images[:3], images[3:]])
    with torch.no_grad():
        direct = score_all_pairs(model64, model64.encode_images(images), model64.encode_texts(PROMPTS))
    assert streamed.mean.shape == (5, len(PROMPTS))
    torch.testing.assert_close(streamed.mean, direct.mean, rtol=0, atol=1e-9)


def test_bfloat16_close_to_float32(tiny_carzero):
    model = tiny_carzero()
    images = torch.randn(3, 3, 32, 32)
    full = CARZeroScorer(model, PROMPTS).score_images(images)
    reduced = CARZeroScorer(model, PROMPTS, dtype=torch.bfloat16).score_images(images)
    assert reduced.mean.dtype == torch.float32 and reduced.mean.shape == (3, len(PROMPTS))
    spread = full.mean.abs().max()
    assert (reduced.mean - full.mean).abs().max() <= 0.05 * spread + 1e-3


def test_ill_arg(model64, tokens64):
    image_tokens, text_tokens = tokens64
    with pytest.raises(ValueError, match="image_chunk_size"):
        score_all_pairs(model64, image_tokens, text_tokens, image_chunk_size=0)
    with pytest.raises(ValueError, match="text_chunk_size"):
        CARZeroScorer(model64, PROMPTS, text_chunk_size=-1)
    with pytest.raises(ValueError, match="dtype"):
        score_all_pairs(model64, image_tokens, text_tokens, dtype=torch.int8)
    with torch.no_grad():
        two_texts = model64.project_text_memory(text_tokens.select(slice(0, 2)))
    with pytest.raises(ValueError, match="text_cache holds 2 texts"):
        score_all_pairs(model64, image_tokens, text_tokens, text_cache=two_texts)
    with pytest.raises(ValueError, match="prompts is empty"):
        CARZeroScorer(model64, [])
    with pytest.raises(ValueError, match="no image batches"):
        CARZeroScorer(model64, PROMPTS).score_batches([])
