"""CARZero model: shapes, configuration round trip, text pooling, padding, gradients and argument checks."""

from __future__ import annotations

import json

import pytest
import torch

from carzero.losses import CARZeroLoss
from carzero.model import CARZERO_SMALL_CONFIG, CARZero, ImageTokens, TextTokens
from carzero.text_encoder import clean_report_text

PROMPTS = ["There is Pleural Effusion.", "there is cardiomegaly", "there is pneumothorax on the left side"]


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("head_hidden_dims", [[], [8]])
@pytest.mark.parametrize("patch_embedding", ["linear", "conv"])
def test_shapes(tiny_carzero, in_channels, head_hidden_dims, patch_embedding):
    model = tiny_carzero(in_channels=in_channels, head_hidden_dims=head_hidden_dims, patch_embedding=patch_embedding)
    image_tokens = model.encode_images(torch.randn(3, in_channels, 32, 32))
    text_tokens = model.encode_texts(PROMPTS)
    assert image_tokens.global_token.shape == (3, 16)
    assert image_tokens.patches.shape == (3, 4, 16)
    length = text_tokens.mask.shape[1]
    assert text_tokens.sentence.shape == (3, 16)
    assert text_tokens.words.shape == (3, length, 16)
    assert text_tokens.mask.dtype == torch.bool and text_tokens.mask[:, 0].all()
    assert model.pair_scores(image_tokens, text_tokens).shape == (3,)
    scores = model.all_pair_scores(image_tokens, text_tokens.select(slice(0, 2)))
    assert scores.image_to_text.shape == scores.text_to_image.shape == scores.mean.shape == (3, 2)
    assert torch.isfinite(scores.mean).all()


def test_small_config_runs(tiny_bert_dir):
    model = CARZero(text_encoder=str(tiny_bert_dir), **{**CARZERO_SMALL_CONFIG, "text_last_n_layers": 2}).eval()
    image_tokens = model.encode_images(torch.randn(1, 3, 128, 128))
    assert image_tokens.patches.shape == (1, 64, 128)
    assert model.pair_scores(image_tokens, model.encode_texts(["there is edema"])).shape == (1,)


def test_default_fusion_matches_released_sizes(tiny_carzero):
    """Paper sizes: 4 layers, 4 heads, FFN 1024, MLP head 768->1024->512->256->1 (vision kept tiny here)."""
    model = tiny_carzero(
        embed_dim=768, fusion_layers=4, fusion_heads=4, fusion_ffn_dim=1024, head_hidden_dims=(1024, 512, 256)
    )
    layer = model.fusion.layers[0]
    assert len(model.fusion.layers) == 4 and layer.cross_attn.num_heads == 4
    assert layer.cross_attn.in_proj_weight.shape == (3 * 768, 768)
    assert layer.linear1.weight.shape == (1024, 768)
    head_shapes = [m.weight.shape for m in model.fusion.head if isinstance(m, torch.nn.Linear)]
    assert head_shapes == [(1024, 768), (512, 1024), (256, 512), (1, 256)]
    assert isinstance(model.text_projection, torch.nn.Linear)  # 32-d tiny BERT -> 768


def test_config_round_trip(tiny_carzero):
    model = tiny_carzero()
    rebuilt = CARZero.from_config(json.loads(json.dumps(model.config))).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    images = torch.randn(2, 3, 32, 32)
    expected = model.pair_scores(model.encode_images(images), model.encode_texts(PROMPTS[:2]))
    actual = rebuilt.pair_scores(rebuilt.encode_images(images), rebuilt.encode_texts(PROMPTS[:2]))
    torch.testing.assert_close(actual, expected)


def test_padding_does_not_change_pair_scores(tiny_carzero):
    model = tiny_carzero().double()
    images = model.encode_images(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    alone = model.encode_texts(["there is edema"])
    batched = model.encode_texts(["there is edema", "a much longer report sentence with many more words in it"])
    assert batched.mask.shape[1] > alone.mask.shape[1]
    first = batched.select(slice(0, 1))
    torch.testing.assert_close(first.sentence, alone.sentence, rtol=0, atol=1e-12)
    by_direction_alone = model.pair_scores_by_direction(images, alone)
    by_direction_batched = model.pair_scores_by_direction(images, first)
    torch.testing.assert_close(by_direction_batched.text_to_image, by_direction_alone.text_to_image, rtol=0, atol=1e-9)
    torch.testing.assert_close(by_direction_batched.image_to_text, by_direction_alone.image_to_text, rtol=0, atol=1e-9)


def test_merge_word_pieces_sums_pieces(tiny_carzero):
    plain = tiny_carzero(embed_dim=32)  # 32-d text: no projection, so features are the raw sums
    merged = tiny_carzero(embed_dim=32, merge_word_pieces=True)
    merged.load_state_dict(plain.state_dict())
    text = ["there is pneumomediastinum"]
    pieces = plain.text.tokenizer.tokenize(clean_report_text(text[0]))
    assert len(pieces) > 3, "the test needs a word split into several word-pieces"
    plain_tokens, merged_tokens = plain.encode_texts(text), merged.encode_texts(text)
    assert merged_tokens.mask.sum() == 3 + 2  # [CLS] there is pneumomediastinum [SEP]
    assert plain_tokens.mask.sum() == len(pieces) + 2
    torch.testing.assert_close(merged_tokens.words.sum(1), plain_tokens.words.sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("patch_embedding, fusion_init", [("linear", "released"), ("conv", "xavier")])
def test_gradients_reach_every_trainable_parameter(tiny_carzero, patch_embedding, fusion_init):
    model = tiny_carzero(patch_embedding=patch_embedding, fusion_init=fusion_init).train()
    scores = model.all_pair_scores(model.encode_images(torch.randn(3, 3, 32, 32)), model.encode_texts(PROMPTS))
    loss = CARZeroLoss()(scores.image_to_text, scores.image_to_text.T, scores.text_to_image, scores.text_to_image.T)
    loss["loss"].backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


def test_clean_report_text():
    assert clean_report_text("There is Pleural Effusion, 2.5 cm!") == "there is pleural effusion 2 5 cm"
    assert clean_report_text("Épanchement pleural") == "panchement pleural"


def test_token_containers_select():
    images = ImageTokens(torch.randn(4, 8), torch.randn(4, 5, 8))
    texts = TextTokens(torch.randn(3, 8), torch.randn(3, 6, 8), torch.ones(3, 6, dtype=torch.bool))
    assert len(images.select(slice(1, 3))) == 2 and images.memory().shape == (4, 6, 8)
    memory, mask = texts.memory()
    assert memory.shape == (3, 7, 8) and mask.shape == (3, 7) and mask.all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"in_channels": 2}, "in_channels"),
        ({"patch_size": 12}, "patch_size"),
        ({"patch_size": 8, "image_size": 24, "patch_embedding": "stem"}, "patch_embedding"),
        ({"patch_size": 12, "image_size": 36, "patch_embedding": "conv"}, "power-of-two"),
        ({"vision_heads": 3}, "num_heads"),
        ({"fusion_heads": 3}, "num_heads"),
        ({"fusion_layers": 0}, "num_layers"),
        ({"fusion_dropout": 1.0}, "fusion_dropout"),
        ({"fusion_init": "kaiming"}, "init must be one of"),
        ({"head_hidden_dims": [0]}, "head hidden widths"),
        ({"text_last_n_layers": 5}, "last_n_layers"),
        ({"text_layer_aggregation": "max"}, "layer_aggregation"),
        ({"sentence_pooling": "max"}, "sentence_pooling"),
        ({"text_max_length": 2}, "max_length"),
    ],
)
def test_ill_arg(tiny_carzero, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_carzero(**overrides)


def test_ill_input(tiny_carzero):
    model = tiny_carzero()
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.encode_images(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="list of strings"):
        model.encode_texts("there is edema")
    with pytest.raises(ValueError, match="as many images as texts"):
        model.pair_scores(model.encode_images(torch.randn(2, 3, 32, 32)), model.encode_texts(PROMPTS))
