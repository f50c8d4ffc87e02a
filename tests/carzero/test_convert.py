"""Tests of ``carzero convert-official`` on synthetic checkpoints with the released parameter names and shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from carzero.cli import main
from carzero.convert import convert_official
from carzero.model import CARZero
from carzero.pretrained import from_pretrained
from carzero.scoring import CARZeroScorer
from datasets.errors import InputError

WORDS = ["there", "is", "no", "pleural", "effusion", "cardiomegaly", "atelectasis"]


class FakeTrainingConfig:
    """Stands in for the OmegaConf config a Lightning 1.1 checkpoint pickles in ``hyper_parameters``."""

    def __init__(self) -> None:
        self.lr = 5e-5


class RunsCode:
    """Pickles as a call of ``os.makedirs``: loading it must never run that call."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


@pytest.fixture(scope="module")
def bert_768(tmp_path_factory) -> Path:
    """A 4-layer BERT with the released width (768) and a 12-word vocabulary, saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("bert768")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=12, hidden_size=768, num_hidden_layers=4, num_attention_heads=12,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def released_name(name: str) -> str:
    """medvl name -> the released ``CARZeroDQNWOSAGLMLP`` name (written out independently of the converter)."""
    renames = [("vision.", "img_encoder.model."), ("text.model.", "text_encoder.model."),
               ("fusion.norm.", "fusion_module.decoder_norm."), ("fusion.head.", "fusion_module.mlp_head.")]
    for ours, theirs in renames:
        if name.startswith(ours):
            return "CARZero." + theirs + name[len(ours):]
    layer, rest = name[len("fusion.layers."):].split(".", 1)
    part, tail = rest.split(".", 1)
    theirs = {"cross_attn": "multihead_attn", "norm1": "norm2", "norm2": "norm3"}.get(part, part)
    return f"CARZero.fusion_module.decoder.layers.{layer}.{theirs}.{tail}"


@pytest.fixture(scope="module")
def released(bert_768) -> tuple[CARZero, dict[str, torch.Tensor]]:
    """A model at the paper's fusion sizes (768-d, 4 layers, 4 heads, FFN 1024, head 1024-512-256-1; a 1-block ViT at
    32 px) and its weights under the released names, with the released checkpoint's unused parameters added."""
    torch.manual_seed(1)
    net = CARZero(text_encoder=str(bert_768), image_size=32, vision_layers=1, merge_word_pieces=True).eval()
    state = {released_name(k): v.clone() for k, v in net.state_dict().items()}
    for i in range(4):
        prefix = f"CARZero.fusion_module.decoder.layers.{i}."
        state[prefix + "self_attn.in_proj_weight"] = torch.randn(2304, 768)
        state[prefix + "self_attn.in_proj_bias"] = torch.randn(2304)
        state[prefix + "self_attn.out_proj.weight"] = torch.randn(768, 768)
        state[prefix + "self_attn.out_proj.bias"] = torch.randn(768)
        state[prefix + "norm1.weight"], state[prefix + "norm1.bias"] = torch.ones(768), torch.zeros(768)
    state["CARZero.fusion_module.decoder.norm.weight"] = state["CARZero.fusion_module.decoder_norm.weight"].clone()
    state["CARZero.fusion_module.decoder.norm.bias"] = state["CARZero.fusion_module.decoder_norm.bias"].clone()
    state["CARZero.fusion_module.logit_scale"] = torch.tensor(2.6593)
    return net, state


def test_released_names_at_paper_shapes_convert_to_the_same_model(tmp_path, released, bert_768):
    net, state = released
    assert state["CARZero.fusion_module.decoder.layers.3.multihead_attn.in_proj_weight"].shape == (2304, 768)
    assert state["CARZero.fusion_module.mlp_head.0.weight"].shape == (1024, 768)
    assert state["CARZero.fusion_module.mlp_head.9.weight"].shape == (1, 256)
    assert state["CARZero.img_encoder.model.blocks.0.attn.qkv.weight"].shape == (2304, 768)
    checkpoint = tmp_path / "CARZero_best_model.ckpt"
    # a Lightning 1.1-style checkpoint: tensors plus a pickled config object weights_only refuses
    torch.save({"epoch": 7, "state_dict": state, "hyper_parameters": FakeTrainingConfig()}, checkpoint)
    assert main(["convert-official", str(checkpoint), str(tmp_path / "model"), "--text-encoder", str(bert_768)]) == 0
    converted, preprocessing, config = from_pretrained(tmp_path / "model")
    assert config["model"]["fusion_layers"] == 4 and config["model"]["head_hidden_dims"] == [1024, 512, 256]
    assert config["model"]["image_size"] == 32 and preprocessing.image_size == 32
    assert (preprocessing.resize, preprocessing.load_size, preprocessing.intensity) == ("pad_crop", 37, "range")
    assert len(config["conversion"]["dropped_unused"]) == 4 * 6 + 2 + 1
    assert "CARZero.text_encoder.model.pooler.dense.weight" in state  # kept (frozen), as in the released BERT
    assert torch.equal(converted.fusion.layers[2].norm1.weight,
                       state["CARZero.fusion_module.decoder.layers.2.norm2.weight"])
    for name, tensor in net.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    images, prompts = torch.randn(2, 3, 32, 32), ["there is pleural effusion", "there is no cardiomegaly"]
    torch.testing.assert_close(CARZeroScorer(converted, prompts).score_images(images).mean,
                               CARZeroScorer(net, prompts).score_images(images).mean, rtol=0, atol=0)


def test_unknown_and_missing_keys_are_listed(tmp_path, released, bert_768, capsys):
    _, state = released
    extra = {**state, "CARZero.fusion_module.ram_proj.weight": torch.zeros(3)}
    torch.save({"state_dict": extra}, tmp_path / "extra.ckpt")
    assert main(["convert-official", str(tmp_path / "extra.ckpt"), str(tmp_path / "a"), "--text-encoder",
                 str(bert_768)]) == 2
    assert "CARZero.fusion_module.ram_proj.weight" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    folder = convert_official(tmp_path / "extra.ckpt", tmp_path / "b", str(bert_768), ignore_unknown=True)
    assert from_pretrained(folder)[2]["conversion"]["ignored_unknown"] == ["CARZero.fusion_module.ram_proj.weight"]
    partial = {k: v for k, v in state.items() if "layers.1.linear2" not in k}
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(InputError, match=r"missing \['fusion.layers.1.linear2.weight', 'fusion.layers.1.linear2.bias'"):
        convert_official(tmp_path / "partial.ckpt", tmp_path / "c", str(bert_768))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, released, capsys):
    _, state = released
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {"CARZero.fusion_module.logit_scale": torch.zeros(())}, "payload": RunsCode(marker)},
               tmp_path / "evil.ckpt")
    assert main(["convert-official", str(tmp_path / "evil.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pickled code" in err and "makedirs" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()
