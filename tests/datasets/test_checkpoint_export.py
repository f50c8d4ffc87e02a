"""The checkpoint-export helpers the three models share (``datasets.pretrained``), on real ``torch.save`` files."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from datasets.errors import InputError
from datasets.pretrained import (
    checkpoint_provenance,
    load_module_weights,
    read_module_checkpoint,
    save_model_folder,
)


def test_read_module_checkpoint_names_what_is_missing(tmp_path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(InputError, match="model.ckpt is not a Lightning checkpoint"):
        read_module_checkpoint(path, ("toy_config",), "train it through the CLI")
    torch.save({"state_dict": {}, "toy_config": {}}, path)
    with pytest.raises(InputError, match="has no 'toy_preprocessing': train it through the CLI"):
        read_module_checkpoint(path, ("toy_config", "toy_preprocessing"), "train it through the CLI")
    assert read_module_checkpoint(path, ("toy_config",), "unused")["toy_config"] == {}


def test_another_models_checkpoint_names_its_export_command(tmp_path) -> None:
    path = tmp_path / "brgsa.ckpt"
    torch.save({"state_dict": {}, "brgsa_config": {}, "brgsa_preprocessing": {}}, path)
    with pytest.raises(InputError, match="is a checkpoint of brgsa, not of this model: use `brgsa export`"):
        read_module_checkpoint(path, ("lsms_config",), "train it through the CLI")


def test_load_module_weights_takes_the_net_prefix_only_and_refuses_other_networks() -> None:
    source = nn.Linear(2, 3)
    state = {"state_dict": {**{f"net.{name}": value + 1 for name, value in source.state_dict().items()},
                            "loss.scale": torch.zeros(1)}}
    target = nn.Linear(2, 3)
    load_module_weights("model.ckpt", state, target)
    assert torch.equal(target.weight, source.weight + 1) and torch.equal(target.bias, source.bias + 1)
    with pytest.raises(InputError, match=r"model.ckpt: weights do not match .*missing \['0.weight'"):
        load_module_weights("model.ckpt", state, nn.Sequential(nn.Linear(2, 3)))


def test_checkpoint_provenance_hashes_the_training_table_when_it_is_still_there(tmp_path, caplog) -> None:
    table = tmp_path / "manifest.csv"
    table.write_text("image,text\n", encoding="utf-8")
    state = {"global_step": 7, "hyper_parameters": {"seed": 3},
             "datamodule_hyper_parameters": {"manifest": str(table), "seed": 5}}
    provenance = checkpoint_provenance("run.ckpt", state, "manifest")
    assert provenance == {
        "seed": 3,
        "training_manifest": {"path": str(table), "sha256": hashlib.sha256(b"image,text\n").hexdigest()},
        "extra": {"exported_from": "run.ckpt", "global_step": 7},
    }
    table.unlink()
    del state["hyper_parameters"]
    with caplog.at_level("WARNING"):
        provenance = checkpoint_provenance("run.ckpt", state, "manifest")
    assert provenance["training_manifest"] is None and provenance["seed"] == 5
    assert f"the training table {table} named in run.ckpt is not found" in caplog.text  # said, not silently dropped


def test_a_model_folder_below_a_file_is_an_input_error(tmp_path) -> None:
    """``lsms|carzero|brgsa export CKPT OUT`` with a file where OUT's parent should be: one line, not a traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"a_file is a file, not a folder"):
        save_model_folder(blocker / "model", nn.Linear(2, 1), model_type="test", model_config={}, preprocessing={})
    assert blocker.read_text() == "x"
