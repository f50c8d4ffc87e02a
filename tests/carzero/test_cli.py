"""Tests of the ``carzero`` command line: LightningCLI fit, export to a model folder, and clear errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from carzero.cli import main
from carzero.pretrained import from_pretrained
from carzero.scoring import CARZeroScorer
from datasets.errors import InputError
from datasets.pretrained import save_model_folder
from datasets.synthetic.cxr import generate_cxr
from datasets.synthetic.cxr_spec import CXR_V1

ROOT = Path(__file__).resolve().parents[2]


def tiny_net_args(text_encoder: Path) -> dict:
    return {
        "text_encoder": str(text_encoder), "image_size": 32, "patch_size": 16, "vision_width": 32, "vision_layers": 1,
        "vision_heads": 2, "embed_dim": 32, "fusion_layers": 1, "fusion_heads": 2, "fusion_ffn_dim": 32,
        "head_hidden_dims": [16], "text_max_length": 24, "text_last_n_layers": 1,
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny synthetic-cxr v1 layout: 8 train, 4 val, 6 test images."""
    out = tmp_path_factory.mktemp("data") / "synthetic-cxr"
    generate_cxr(out, replace(CXR_V1, train_images=8, val_images=4, test_images=6, image_size=96), seed=0)
    return out


def write_config(tmp_path: Path, bench: Path, text_encoder: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "run"),
                    "num_sanity_val_steps": 0},
        "model": {"net": {"class_path": "carzero.model.CARZero", "init_args": tiny_net_args(text_encoder)},
                  "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}}},
        "data": {"manifest": str(bench / "reports.csv"), "val_labels": str(bench / "Data_Entry_2017.csv"),
                 "val_image_root": str(bench / "images"), "val_split_list": str(bench / "val_list.txt"),
                 "prompt_file": str(ROOT / "configs" / "prompts" / "synthetic-cxr.txt"), "image_size": 32,
                 "batch_size": 4, "val_batch_size": 4},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_fast_dev_run(tmp_path, bench, tiny_bert_dir):
    assert main(["fit", "--config", str(write_config(tmp_path, bench, tiny_bert_dir)), "--trainer.fast_dev_run=1"]) == 0


def test_fit_export_and_from_pretrained_give_identical_scores(tmp_path, bench, tiny_bert_dir):
    config = write_config(tmp_path, bench, tiny_bert_dir)
    assert main(["fit", "--config", str(config), "--trainer.max_epochs=1"]) == 0
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert len(checkpoints) == 1
    state = torch.load(checkpoints[0], weights_only=True)
    assert state["carzero_config"]["vision_width"] == 32 and state["carzero_preprocessing"]["image_size"] == 32
    assert main(["export", str(checkpoints[0]), str(tmp_path / "model")]) == 0
    net, preprocessing, config_json = from_pretrained(tmp_path / "model")
    assert preprocessing.image_size == 32 and config_json["model_type"] == "carzero"
    trained = {name[len("net."):]: tensor for name, tensor in state["state_dict"].items() if name.startswith("net.")}
    reference, _, _ = from_pretrained(tmp_path / "model")
    reference.load_state_dict(trained)  # the checkpoint's own weights, loaded directly
    images = torch.randn(3, 3, 32, 32)
    prompts = ["There is Cardiomegaly", "There is Pleural Effusion"]
    torch.testing.assert_close(CARZeroScorer(net, prompts).score_images(images).mean,
                               CARZeroScorer(reference, prompts).score_images(images).mean, rtol=0, atol=0)
    for name, tensor in trained.items():
        assert torch.equal(net.state_dict()[name], tensor), name

    # a checkpoint saved before the unused BERT pooler was kept in the state dict still exports, with equal scores
    old = {**state, "state_dict": {k: v for k, v in state["state_dict"].items() if ".pooler." not in k}}
    assert len(old["state_dict"]) < len(state["state_dict"])
    torch.save(old, tmp_path / "old.ckpt")
    assert main(["export", str(tmp_path / "old.ckpt"), str(tmp_path / "model_old")]) == 0
    old_net, _, _ = from_pretrained(tmp_path / "model_old")
    torch.testing.assert_close(CARZeroScorer(old_net, prompts).score_images(images).mean,
                               CARZeroScorer(net, prompts).score_images(images).mean, rtol=0, atol=0)


def test_export_refuses_a_checkpoint_without_the_config(tmp_path, capsys):
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, tmp_path / "bare.ckpt")
    assert main(["export", str(tmp_path / "bare.ckpt"), str(tmp_path / "out")]) == 2
    assert "carzero_config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_lsms_folder_is_refused(tmp_path, capsys):
    save_model_folder(tmp_path / "lsms_model", torch.nn.Linear(2, 2), model_type="lsms", model_config={},
                      preprocessing={})
    with pytest.raises(InputError, match="'lsms' model, but a 'carzero' model was expected"):
        from_pretrained(tmp_path / "lsms_model")
    status = main(["zeroshot", str(tmp_path / "lsms_model"), "--benchmark", "synthetic-cxr", "--data-root",
                   str(tmp_path), "--out", str(tmp_path / "zs")])
    err = capsys.readouterr().err
    assert status == 2 and "'lsms' model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "zs").exists()


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
