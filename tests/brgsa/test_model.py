"""Tests of the BrgSA model, its 3D ViT and its text encoder, on tiny configurations."""

from __future__ import annotations

import inspect
import json
import logging

import pytest
import torch
import torch.nn.functional as F

from brgsa.losses import BrgSALoss
from brgsa.model import BrgSA, convert_released_state_dict, zero_shot_scores
from brgsa.text_encoder import TextEncoder
from brgsa.vision import VisionTransformer3D, sincos_position_embedding_3d

TEXTS = ["There is emphysema in both upper lobes", "There is a small left pleural effusion"]


@pytest.fixture(scope="module")
def tiny_model(tiny_brgsa):
    return tiny_brgsa()


# ------------------------------------------------------------------------------------------------ vision encoder
@pytest.mark.parametrize("patch_embedding", ["linear", "conv"])
@pytest.mark.parametrize("spatial, grid", [((32, 32, 16), (2, 2, 2)), ((48, 64, 24), (3, 4, 3))])
def test_vision_shapes_at_two_volume_sizes(spatial, grid, patch_embedding):
    torch.manual_seed(0)
    encoder = VisionTransformer3D(image_size=(32, 32, 16), width=24, depth=1, num_heads=2,
                                  patch_embedding=patch_embedding)
    cls_token, tokens = encoder(torch.randn(2, 1, *spatial))
    assert cls_token.shape == (2, 24)
    assert encoder.grid_size(spatial) == grid
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], 24)


def test_patch_is_8_along_the_slice_axis():
    encoder = VisionTransformer3D(image_size=(224, 224, 112), width=12, depth=1, num_heads=2)
    assert encoder.patch_embed.proj.weight.shape == (12, 1, 16, 16, 8)
    assert encoder.base_grid == (14, 14, 14)
    assert encoder.pos_embed.shape == (1, 1 + 14**3, 12)
    assert encoder.grid_size((256, 256, 128)) == (16, 16, 16)


def test_conv_stem_halves_each_axis_until_its_patch_size():
    encoder = VisionTransformer3D(image_size=(32, 32, 16), width=32, depth=1, num_heads=2, patch_embedding="conv")
    convolutions = [module for module in encoder.patch_embed.stem if isinstance(module, torch.nn.Conv3d)]
    assert [conv.stride for conv in convolutions] == [(2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 1)]
    assert [conv.out_channels for conv in convolutions] == [8, 8, 16, 32]
    assert encoder.patch_embed.proj.kernel_size == (1, 1, 1)
    # a voxel only moves the tokens of its own patch's receptive field, not a far one
    volume = torch.zeros(1, 1, 32, 32, 16)
    encoder.eval()
    with torch.no_grad():
        base = encoder.patch_embed(volume)
        volume[0, 0, 0, 0, 0] = 10.0
        moved = encoder.patch_embed(volume)
    changed = (moved - base).abs().amax(dim=1)[0]  # (2, 2, 2) patch grid
    assert changed[0, 0, 0] > 0 and changed[1, 1, 1] == 0


def test_position_embedding_interpolation():
    encoder = VisionTransformer3D(image_size=(32, 32, 16), width=24, depth=1, num_heads=2)
    assert torch.equal(encoder.position_embedding((2, 2, 2)), encoder.pos_embed)
    resized = encoder.position_embedding((4, 3, 2))
    assert resized.shape == (1, 1 + 24, 24)
    assert torch.equal(resized[:, 0], encoder.pos_embed[:, 0])  # the CLS position is not interpolated
    base = encoder.pos_embed[0, 1:].reshape(2, 2, 2, 24)
    expected = F.interpolate(base.permute(3, 0, 1, 2)[None], size=(4, 3, 2), mode="trilinear")[0]
    torch.testing.assert_close(resized[0, 1:], expected.permute(1, 2, 3, 0).reshape(24, 24))
    # Interpolation stays within the range of the base embedding.
    assert resized.max() <= encoder.pos_embed.max() + 1e-6 and resized.min() >= encoder.pos_embed.min() - 1e-6


def test_sincos_embedding_layout():
    embedding = sincos_position_embedding_3d(12, (2, 3, 4))
    assert embedding.shape == (24, 12)
    # Z varies fastest: tokens 0 and 1 differ only in their Z coordinate, so X and Y channels agree.
    torch.testing.assert_close(embedding[0, :8], embedding[1, :8])
    assert not torch.allclose(embedding[0, 8:], embedding[1, 8:])
    # Width not a multiple of 6: leftover channels are zero.
    assert torch.count_nonzero(sincos_position_embedding_3d(16, (2, 2, 2))[:, 12:]) == 0


def test_position_embedding_is_a_saved_buffer_without_gradient():
    encoder = VisionTransformer3D(image_size=(32, 32, 16), width=24, depth=1, num_heads=2)
    assert "pos_embed" in encoder.state_dict()
    assert "pos_embed" not in dict(encoder.named_parameters())


def test_gradient_checkpointing_gives_the_same_output():
    torch.manual_seed(0)
    encoder = VisionTransformer3D(image_size=(32, 32, 16), width=24, depth=2, num_heads=2)
    volumes = torch.randn(2, 1, 32, 32, 16)
    plain, _ = encoder(volumes)
    encoder.gradient_checkpointing = True
    checkpointed, _ = encoder(volumes)
    torch.testing.assert_close(plain, checkpointed)
    checkpointed.sum().backward()
    assert encoder.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": (30, 32, 16)}, "not divisible by patch_size"),
        ({"patch_size": (16, 16)}, "three positive ints"),
        ({"width": 25}, "divisible by num_heads"),
        ({"patch_embedding": "resnet"}, "patch_embedding must be one of"),
        ({"patch_size": (16, 16, 6), "image_size": (32, 32, 12), "patch_embedding": "conv"}, "power-of-two"),
    ],
)
def test_vision_ill_arg(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VisionTransformer3D(**{"image_size": (32, 32, 16), "width": 24, "depth": 1, "num_heads": 2, **kwargs})


@pytest.mark.parametrize(
    "shape, match", [((2, 32, 32, 16), r"\(B, 1, X, Y, Z\)"), ((1, 1, 32, 32, 12), "not divisible by the patch size")]
)
def test_vision_rejects_bad_volumes(shape, match):
    encoder = VisionTransformer3D(image_size=(32, 32, 16), width=24, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=match):
        encoder(torch.randn(*shape))


# ------------------------------------------------------------------------------------------------- text encoder
def test_gloria_pooling_matches_explicit_computation(tiny_bert_dir):
    encoder = TextEncoder(str(tiny_bert_dir), max_length=20, last_n_layers=2).eval()  # no dropout
    token_states, sentences = encoder(TEXTS)
    input_ids, mask = encoder.tokenize(TEXTS)
    hidden = encoder.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for i in range(len(TEXTS)):
        real = int(mask[i].sum())
        expected = sum(layer[i, :real].sum(0) / 20 for layer in hidden[-2:])
        torch.testing.assert_close(sentences[i], expected)
    torch.testing.assert_close(token_states, hidden[-1])


def test_mean_and_cls_pooling(tiny_bert_dir):
    mean_encoder = TextEncoder(str(tiny_bert_dir), pooling="mean")
    token_states, sentences = mean_encoder(TEXTS)
    _, mask = mean_encoder.tokenize(TEXTS)
    real = int(mask[1].sum())
    torch.testing.assert_close(sentences[1], token_states[1, :real].mean(0))
    cls_encoder = TextEncoder(str(tiny_bert_dir), pooling="cls")
    token_states, sentences = cls_encoder(TEXTS)
    torch.testing.assert_close(sentences, token_states[:, 0])


def test_empty_text_names_its_position(tiny_model):
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        tiny_model.encode_texts(["There is emphysema", "   "])


def test_overlong_text_is_truncated_and_counted(tiny_bert_dir, caplog):
    encoder = TextEncoder(str(tiny_bert_dir), max_length=8, last_n_layers=2)
    with caplog.at_level(logging.WARNING, logger="brgsa.text_encoder"):
        input_ids, _ = encoder.tokenize(["short one", "this sentence is far longer than eight word pieces in total"])
    assert input_ids.shape == (2, 8)
    assert encoder.num_truncated == 1
    assert "truncated 1 text(s) to max_length=8" in caplog.text


def test_text_encoder_ill_arg(tiny_bert_dir):
    with pytest.raises(ValueError, match="pooling must be one of"):
        TextEncoder(str(tiny_bert_dir), pooling="max")
    with pytest.raises(ValueError, match="last_n_layers must be between 1 and 2"):
        TextEncoder(str(tiny_bert_dir), last_n_layers=4)


# --------------------------------------------------------------------------------------------------------- model
def test_forward_shapes_and_bank_reconstruction(tiny_model):
    out = tiny_model(torch.randn(2, 1, 32, 32, 16), TEXTS)
    for embeds in (out.image_embeds, out.image_embeds_hat, out.text_embeds, out.text_embeds_hat):
        assert embeds.shape == (2, 16)
    torch.testing.assert_close(out.image_embeds_hat, tiny_model.knowledge_bank(out.image_embeds))
    torch.testing.assert_close(out.text_embeds_hat, tiny_model.knowledge_bank(out.text_embeds))


def test_larger_test_volumes_use_the_interpolated_grid(tiny_model):
    image_embeds, image_embeds_hat = tiny_model.encode_volumes(torch.randn(1, 1, 64, 64, 32))
    assert image_embeds.shape == image_embeds_hat.shape == (1, 16)


def test_released_architecture_defaults():
    defaults = {name: p.default for name, p in inspect.signature(BrgSA).parameters.items()}
    assert defaults["image_size"] == (224, 224, 112) and defaults["patch_size"] == (16, 16, 8)
    assert (defaults["vision_width"], defaults["vision_depth"], defaults["vision_heads"]) == (768, 12, 12)
    assert (defaults["embed_dim"], defaults["knowledge_bank_size"]) == (768, 2048)
    assert defaults["knowledge_bank_temperature"] == 1.0 and defaults["use_knowledge_bank"] is True
    assert (defaults["text_max_length"], defaults["text_pooling"], defaults["text_last_n_layers"]) == (97, "gloria", 4)


def test_config_is_json_and_rebuilds_the_model(tiny_model):
    config = json.loads(json.dumps(tiny_model.config))
    rebuilt = BrgSA.from_config(config)
    rebuilt.load_state_dict(tiny_model.state_dict())
    volumes = torch.randn(1, 1, 32, 32, 16)
    torch.testing.assert_close(rebuilt.encode_volumes(volumes)[0], tiny_model.encode_volumes(volumes)[0])


def test_ablation_without_bank(tiny_brgsa):
    model = tiny_brgsa(use_knowledge_bank=False)
    assert model.knowledge_bank is None
    assert not any("knowledge_bank" in name for name, _ in model.named_parameters())
    out = model(torch.randn(2, 1, 32, 32, 16), TEXTS)
    assert out.image_embeds_hat is out.image_embeds and out.text_embeds_hat is out.text_embeds
    prompts = model.encode_texts(["There is emphysema", "There is effusion", "There is atelectasis"])[0]
    expected = F.normalize(out.image_embeds, dim=-1) @ F.normalize(prompts, dim=-1).t()
    torch.testing.assert_close(model.zero_shot_scores((out.image_embeds, out.image_embeds_hat), prompts), expected)


def test_gradients_reach_every_trainable_parameter(tiny_model):
    tiny_model.zero_grad()
    out = tiny_model(torch.randn(2, 1, 32, 32, 16), TEXTS)
    BrgSALoss()(out.image_embeds, out.text_embeds, out.image_embeds_hat, out.text_embeds_hat)["loss"].backward()
    trainable = {name: p for name, p in tiny_model.named_parameters() if p.requires_grad}
    missing = [name for name, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    # Only BERT's unused pooler head is frozen.
    frozen = [name for name, p in tiny_model.named_parameters() if not p.requires_grad]
    assert frozen and all(name.startswith("text_encoder.model.pooler.") for name in frozen)
    tiny_model.zero_grad()


def test_zero_shot_score_matches_explicit_formula(tiny_model):
    volumes = torch.randn(3, 1, 32, 32, 16)
    prompts = ["There is emphysema", "There is cardiomegaly"]
    with torch.no_grad():
        v, v_hat = tiny_model.encode_volumes(volumes)
        t = tiny_model.encode_texts(prompts)[0]
        scores = tiny_model.zero_shot_scores(volumes, t)
    assert scores.shape == (3, 2)
    for n in range(3):
        for c in range(2):
            expected = (F.cosine_similarity(v[n], t[c], dim=0) + F.cosine_similarity(v_hat[n], t[c], dim=0)) / 2
            torch.testing.assert_close(scores[n, c], expected)
    torch.testing.assert_close(tiny_model.zero_shot_scores((v, v_hat), t), scores)


def test_zero_shot_positive_negative_pairs():
    torch.manual_seed(0)
    v, v_hat, positive, negative = torch.randn(4, 8), torch.randn(4, 8), torch.randn(3, 8), torch.randn(3, 8)
    probabilities = zero_shot_scores(v, v_hat, positive, negative, pair_scale=10.0)
    pos_score, neg_score = zero_shot_scores(v, v_hat, positive), zero_shot_scores(v, v_hat, negative)
    expected = torch.exp(10 * pos_score) / (torch.exp(10 * pos_score) + torch.exp(10 * neg_score))
    torch.testing.assert_close(probabilities, expected)
    with pytest.raises(ValueError, match="one negative prompt per class"):
        zero_shot_scores(v, v_hat, positive, negative[:2])


def test_one_text_per_volume(tiny_model):
    with pytest.raises(ValueError, match="got 2 volumes but 1 texts"):
        tiny_model(torch.randn(2, 1, 32, 32, 16), TEXTS[:1])


def test_released_checkpoint_names_load(tiny_model):
    # Names as in laihaoran/BrgSA (class CLIPProjDict inside the Lightning wrapper's `gloria` attribute).
    released_prefix = {
        "vision_encoder.": "gloria.img_encoder.model.",
        "vision_projection.": "gloria.img_encoder.global_embedder.",
        "text_projection.": "gloria.text_encoder.emb_global.",
        "text_encoder.model.": "gloria.text_encoder.model.",
        "knowledge_bank.entries": "gloria.dictionarylearning.dictionary.weight",
    }
    released = {}
    for name, value in tiny_model.state_dict().items():
        ours = next(prefix for prefix in released_prefix if name.startswith(prefix))
        released[released_prefix[ours] + name[len(ours) :]] = value.clone() + 1
    assert "gloria.img_encoder.model.blocks.0.attn.qkv.weight" in released
    assert "gloria.img_encoder.model.pos_embed" in released
    released["gloria.img_encoder.local_embedder.weight"] = torch.zeros(16, 24)
    released["gloria.text_encoder.emb_local.weight"] = torch.zeros(16, 32)
    released["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(128)[None]
    model = BrgSA.from_config(tiny_model.config)
    model.load_state_dict(convert_released_state_dict(released), strict=True)
    torch.testing.assert_close(model.knowledge_bank.entries, tiny_model.knowledge_bank.entries + 1)
    with pytest.raises(ValueError, match="not a released BrgSA parameter"):
        convert_released_state_dict({"head.weight": torch.zeros(1)})


def test_model_ill_arg(tiny_brgsa):
    with pytest.raises(ValueError, match="text_pooling must be one of"):
        tiny_brgsa(text_pooling="max")
