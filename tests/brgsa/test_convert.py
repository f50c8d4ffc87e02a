"""Tests of ``brgsa convert-official``: a state dict with the released parameter names becomes a model folder that
scores exactly like the network it came from; pickled code is refused without running."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from brgsa.cli import main
from brgsa.convert import infer_config
from brgsa.model import BrgSA, convert_released_state_dict
from brgsa.pretrained import from_pretrained

# Our parameter prefix -> the released one (laihaoran/BrgSA, CLIPProjDict under the Lightning wrapper's "gloria.").
RELEASED_NAMES = {
    "vision_encoder.": "gloria.img_encoder.model.",
    "vision_projection.": "gloria.img_encoder.global_embedder.",
    "text_projection.": "gloria.text_encoder.emb_global.",
    "text_encoder.model.": "gloria.text_encoder.model.",
}


def released_state_dict(net: BrgSA) -> dict[str, torch.Tensor]:
    """``net``'s weights under the released names, with the released extras (local projections, position ids)."""
    released = {}
    for name, tensor in net.state_dict().items():
        if name == "knowledge_bank.entries":
            released["gloria.dictionarylearning.dictionary.weight"] = tensor.clone()
            continue
        prefix = next(ours for ours in RELEASED_NAMES if name.startswith(ours))
        released[RELEASED_NAMES[prefix] + name[len(prefix):]] = tensor.clone()
    released["gloria.img_encoder.local_embedder.weight"] = torch.randn(16, 24)
    released["gloria.text_encoder.emb_local.weight"] = torch.randn(16, 32)
    released["gloria.text_encoder.model.embeddings.position_ids"] = torch.arange(128)[None]
    return released


def test_released_names_convert_to_a_folder_that_scores_identically(tmp_path, tiny_bert_dir, tiny_brgsa):
    net = tiny_brgsa(vision_depth=2).eval()
    checkpoint = tmp_path / "BrgSA_best_model.ckpt"
    torch.save({"epoch": 38, "global_step": 1000, "state_dict": released_state_dict(net)}, checkpoint)
    status = main(["convert-official", str(checkpoint), str(tmp_path / "model"), "--text-encoder", str(tiny_bert_dir),
                   "--vision-heads", "2", "--text-last-n-layers", "2"])
    assert status == 0
    converted, preprocessing, config = from_pretrained(tmp_path / "model")
    assert config["converted_from"]["path"] == str(checkpoint)
    assert {k: config["model"][k] for k in ("image_size", "vision_depth", "embed_dim", "knowledge_bank_size")} == {
        "image_size": [32, 32, 16], "vision_depth": 2, "embed_dim": 16, "knowledge_bank_size": 8}
    assert preprocessing.crop_size == (32, 32, 16) and preprocessing.spacing == (1.5, 1.5, 3.0)
    for name, tensor in net.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    volumes = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():
        prompts = ["There is Emphysema", "There is Lung nodule"]
        expected = net.zero_shot_scores(volumes, net.encode_texts(prompts)[0])
        got = converted.zero_shot_scores(volumes, converted.encode_texts(prompts)[0])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_released_shapes_give_the_released_architecture():
    """The released ViT-B / 2048 x 768 bank shapes (meta tensors: names and shapes only)."""
    shapes = {
        "gloria.img_encoder.model.patch_embed.proj.weight": (768, 1, 16, 16, 8),
        "gloria.img_encoder.model.pos_embed": (1, 1 + 14 * 14 * 14, 768),
        "gloria.img_encoder.model.cls_token": (1, 1, 768),
        "gloria.img_encoder.global_embedder.weight": (768, 768),
        "gloria.dictionarylearning.dictionary.weight": (2048, 768),
    }
    for block in range(12):
        shapes[f"gloria.img_encoder.model.blocks.{block}.mlp.fc1.weight"] = (3072, 768)
    released = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    config = infer_config(convert_released_state_dict(released), "released/M3AE_CXRBERT")
    assert config["image_size"] == [224, 224, 112] and config["patch_size"] == [16, 16, 8]
    assert (config["vision_width"], config["vision_depth"], config["vision_mlp_ratio"]) == (768, 12, 4.0)
    assert (config["embed_dim"], config["knowledge_bank_size"], config["text_max_length"]) == (768, 2048, 97)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"gloria.text_encoder.emb_global.weight": torch.zeros(2, 2)},
                "hyper_parameters": _RunsCode(marker)}, checkpoint)
    assert main(["convert-official", str(checkpoint), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert "pickled code" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "model").exists()


def test_a_foreign_checkpoint_is_refused_naming_the_key(tmp_path, capsys):
    torch.save({"state_dict": {"model.backbone.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    assert main(["convert-official", str(tmp_path / "other.ckpt"), str(tmp_path / "model")]) == 2
    assert "model.backbone.weight" in capsys.readouterr().err
