"""Tests of the LSMS network, its blocks and its text encoder (tiny configs, offline tiny BERT)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

from lsms.blocks import SVLA
from lsms.losses import LSMSLoss
from lsms.model import LSMS, LSMSOutput
from lsms.text_encoder import OFFLINE_MINILM, TextEncoder

TEXTS = ["hypodense lesion in the right lobe", "the small cyst near the portal vein"]
LONG_TEXT = "the large irregular hypodense lesion with a necrotic centre in segment seven of the right liver lobe"


def tiny_lsms(text_encoder, **overrides) -> LSMS:
    """A tiny LSMS on the 32-d tiny BERT: widths (8, 16, 16, 32), one block per stage."""
    torch.manual_seed(0)
    config = dict(
        text_encoder=str(text_encoder),
        in_channels=1,
        encoder_widths=(8, 16, 16, 32),
        encoder_depths=(1, 1, 1, 1),
        svla_kernel_sizes=(3, 7),
        svla_dilations=(1, 2),
        svla_heads=2,
        decoder_width=8,
    )
    config.update(overrides)
    return LSMS(**config)


@pytest.mark.parametrize(
    ("height", "width", "channels"), [(64, 64, 1), (97, 130, 1), (33, 47, 3), (128, 96, 3)]
)
def test_output_shapes_at_any_size(tiny_bert_dir, height, width, channels):
    net = tiny_lsms(tiny_bert_dir, in_channels=channels, contrastive_dim=16)
    out = net(torch.rand(2, channels, height, width), TEXTS)
    assert isinstance(out, LSMSOutput)
    assert out.logits.shape == (2, 1, height, width)
    assert [aux.shape for aux in out.aux_logits] == [(2, 1, height, width)] * 3
    padded_height, padded_width = -(-height // 32) * 32, -(-width // 32) * 32
    assert out.pixel_embeds.shape == (2, 16, padded_height // 4, padded_width // 4)
    assert out.sentence_embeds.shape == (2, 16)
    torch.testing.assert_close(out.sentence_embeds.norm(dim=-1), torch.ones(2))
    assert torch.isfinite(out.logits).all()


def test_without_deep_supervision_or_contrastive_head(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, deep_supervision=False)
    out = net(torch.rand(2, 1, 40, 40), TEXTS)
    assert out.aux_logits == []
    assert out.pixel_embeds is None and out.sentence_embeds is None and out.logit_scale is None


def test_padding_tokens_change_nothing(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, cache_text_features=False).eval()
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        alone = net(image, TEXTS[:1]).logits
        # batched with a longer text, TEXTS[0] gets padding tokens
        batched = net(torch.cat([image, torch.rand(1, 1, 64, 64)]), [TEXTS[0], LONG_TEXT]).logits[:1]
        # explicit garbage padding: large random features at masked positions
        text = net.encode_text(TEXTS[:1])
        garbage = 100 * torch.randn(1, 7, text.word_feats.shape[-1])
        word_feats = torch.cat([text.word_feats, garbage], dim=1)  # (1, L + 7, D)
        word_mask = torch.cat([text.word_mask, torch.zeros(1, 7, dtype=torch.bool)], dim=1)  # (1, L + 7)
        padded = net.forward_features(image, word_feats, word_mask, text.sentence).logits
    assert net.encode_text([TEXTS[0], LONG_TEXT]).word_mask[0].sum() < net.encode_text([LONG_TEXT]).word_mask.sum()
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_cached_features_match_uncached(tiny_bert_dir):
    cached = tiny_lsms(tiny_bert_dir).eval()
    uncached = tiny_lsms(tiny_bert_dir, cache_text_features=False).eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        cached(images[:1], TEXTS[:1])  # fills the cache for TEXTS[0] alone (no padding)
        torch.testing.assert_close(cached(images, TEXTS).logits, uncached(images, TEXTS).logits, atol=1e-5, rtol=0)


def test_text_cache_encodes_each_distinct_text_once(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir)
    encoded_rows = []
    net.text_encoder.model.register_forward_hook(lambda module, args, kwargs, out: encoded_rows.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    images = torch.rand(3, 1, 32, 32)
    net(images, [TEXTS[0], TEXTS[1], TEXTS[0]])
    net(images, [TEXTS[1], TEXTS[0], TEXTS[1]])
    net(images, [TEXTS[0], "a third expression", TEXTS[1]])
    assert encoded_rows == [2, 1]


def test_trainable_text_encoder_does_not_cache(tiny_bert_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="lsms.text_encoder"):
        net = tiny_lsms(tiny_bert_dir, freeze_text=False, cache_text_features=True)
    assert "cache_features=True is ignored" in caplog.text
    assert not net.text_encoder.cache_features


def _loss_with_lesions(net: LSMS, height: int = 64, width: int = 64) -> torch.Tensor:
    masks = torch.zeros(2, 1, height, width)
    masks[0, :, 10:30, 12:40] = 1
    masks[1, :, 35:60, 5:20] = 1
    out = net(torch.rand(2, net.in_channels, height, width), TEXTS)
    loss = LSMSLoss(contrastive_weight=0.1 if out.pixel_embeds is not None else 0.0)
    return loss(**vars(out), target=masks, texts=TEXTS)["loss"]


def test_gradients_reach_every_parameter_with_frozen_text(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, contrastive_dim=8).train()
    _loss_with_lesions(net).backward()
    for name, parameter in net.named_parameters():
        if name.startswith("text_encoder."):
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), name
    assert not net.text_encoder.model.training  # frozen text stays in eval mode under net.train()


def test_gradients_reach_text_encoder_when_unfrozen(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, freeze_text=False).train()
    _loss_with_lesions(net).backward()
    trainable = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    assert any(name.startswith("text_encoder.") for name, _ in trainable)
    for name, parameter in trainable:
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), name


def test_language_ablation_ignores_text(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, use_language=False).eval()
    fusion_names = [name for name, _ in net.named_parameters() if not name.startswith("text_encoder.")]
    assert not any(".query." in name or ".film." in name for name in fusion_names)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        first = net(images, TEXTS).logits
        second = net(images, ["completely different words", "x"]).logits
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    with_language = tiny_lsms(tiny_bert_dir).eval()
    with torch.no_grad():
        assert not torch.equal(with_language(images, TEXTS).logits, with_language(images, TEXTS[::-1]).logits)


def test_ablated_model_still_trains(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, use_language=False).train()
    _loss_with_lesions(net).backward()
    assert all(p.grad is not None for name, p in net.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("bad_text", ["", "   ", "\n\t"])
def test_empty_text_is_a_value_error_naming_its_position(tiny_bert_dir, bad_text):
    net = tiny_lsms(tiny_bert_dir)
    with pytest.raises(ValueError, match=r"texts\[1\] is empty or whitespace-only"):
        net(torch.rand(2, 1, 32, 32), [TEXTS[0], bad_text])


def test_overlong_text_is_truncated_and_counted(tiny_bert_dir, caplog):
    net = tiny_lsms(tiny_bert_dir, max_length=8, cache_text_features=False)
    input_ids, attention_mask = net.tokenize([LONG_TEXT, "short"])
    assert input_ids.shape == (2, 8) and attention_mask[0].all() and attention_mask[1].sum() < 8
    assert net.text_encoder.num_truncated == 1
    with caplog.at_level(logging.WARNING, logger="lsms.text_encoder"):
        out = net(torch.rand(2, 1, 32, 32), [LONG_TEXT, LONG_TEXT])
    assert out.logits.shape == (2, 1, 32, 32)
    assert net.text_encoder.num_truncated == 3
    assert "3 truncated so far" in caplog.text


def test_ill_arguments(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, H, W\)"):
        net(torch.rand(2, 3, 32, 32), TEXTS)
    with pytest.raises(ValueError, match="one text per image"):
        net(torch.rand(3, 1, 32, 32), TEXTS)
    with pytest.raises(ValueError, match="list of strings"):
        net.tokenize("a single string")
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        tiny_lsms(tiny_bert_dir, encoder="vit")
    with pytest.raises(ValueError, match="one dilation per kernel size"):
        tiny_lsms(tiny_bert_dir, svla_kernel_sizes=(3, 5, 7), svla_dilations=(1, 1))
    with pytest.raises(ValueError, match="must be odd"):
        SVLA(8, 8, kernel_sizes=(4,), dilations=(1,))
    with pytest.raises(ValueError, match="num_heads=3 must divide"):
        tiny_lsms(tiny_bert_dir, svla_heads=3)
    with pytest.raises(ValueError, match="max_length must be at least 3"):
        tiny_lsms(tiny_bert_dir, max_length=2)


def test_smp_encoder_without_the_package_names_the_extra(tiny_bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # what Python does for an uninstalled package
    with pytest.raises(ImportError, match=r"pip install 'medvl\[smp\]'"):
        tiny_lsms(tiny_bert_dir, encoder="smp:resnet34")


def test_real_minilm_text_encoder(minilm_dir):
    encoder = TextEncoder(OFFLINE_MINILM, max_length=16)
    features = encoder(TEXTS)
    assert encoder.hidden_size == 384
    assert features.word_feats.shape[:2] == features.word_mask.shape and features.word_feats.shape[-1] == 384
    assert features.sentence.shape == (2, 384)
    masked_mean = features.word_feats[1][features.word_mask[1]].mean(0)
    torch.testing.assert_close(features.sentence[1], masked_mean, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_config_rebuilds_the_same_architecture(tiny_bert_dir):
    net = tiny_lsms(tiny_bert_dir, contrastive_dim=8, use_language=True)
    rebuilt = LSMS(**net.config)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    assert rebuilt.config == net.config
    assert json.loads(json.dumps(net.config)) == net.config
