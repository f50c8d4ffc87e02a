"""Tests of the ``brgsa`` command line: LightningCLI fit on a tiny synthetic-ct3d benchmark, export to a model folder,
and clear errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from brgsa.cli import main
from brgsa.pretrained import from_pretrained
from datasets.synthetic.ct3d import generate_ct3d
from datasets.synthetic.ct3d_spec import CT3D_V1

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny synthetic-ct3d v1 layout (6 train, 4 val, 2 test volumes) and a train/val split file."""
    out = tmp_path_factory.mktemp("data") / "synthetic-ct3d"
    generate_ct3d(out, replace(CT3D_V1, train_volumes=6, val_volumes=4, test_volumes=2), seed=0)
    with open(out / "splits.csv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] != "test"]
    with open(out.parent / "train_split.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["VolumeName", "split", "patient"])
        writer.writerows([row["VolumeName"], row["split"], row["PatientID"]] for row in rows)
    return out


def write_config(tmp_path: Path, bench: Path, text_encoder: Path) -> Path:
    net = {"text_encoder": str(text_encoder), "image_size": [32, 32, 16], "vision_width": 24, "vision_depth": 1,
           "vision_heads": 2, "embed_dim": 16, "knowledge_bank_size": 8, "text_max_length": 48,
           "text_last_n_layers": 2}
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "run"),
                    "num_sanity_val_steps": 0},
        "model": {"net": {"class_path": "brgsa.model.BrgSA", "init_args": net},
                  "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}}},
        "data": {"reports": str(bench / "train_reports.csv"), "volume_root": str(bench / "volumes"),
                 "split_file": str(bench.parent / "train_split.csv"), "layout": "flat",
                 "metadata": str(bench / "train_metadata.csv"),
                 "val_labels": str(bench / "dataset_multi_abnormality_labels_train_predicted_labels.csv"),
                 "prompt_file": str(ROOT / "configs" / "prompts" / "synthetic-ct3d.txt"),
                 "preprocessing": {"spacing": [14.0, 14.0, 28.0], "size": [32, 32, 16], "crop_size": [32, 32, 16]},
                 "batch_size": 2, "val_batch_size": 2},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_fast_dev_run(tmp_path, bench, tiny_bert_dir):
    assert main(["fit", "--config", str(write_config(tmp_path, bench, tiny_bert_dir)), "--trainer.fast_dev_run=1"]) == 0


def test_fit_refuses_sizes_that_export_would_refuse_before_training(tmp_path, bench, tiny_bert_dir, capsys):
    config = write_config(tmp_path, bench, tiny_bert_dir)
    assert main(["fit", "--config", str(config), "--data.preprocessing.size=[40, 40, 16]",
                 "--data.preprocessing.crop_size=[32, 32, 16]", "--trainer.max_epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "the preprocessing's size [40, 40, 16] is not a multiple of the network's patch size" in err
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_fit_export_and_from_pretrained_give_identical_scores(tmp_path, bench, tiny_bert_dir):
    config = write_config(tmp_path, bench, tiny_bert_dir)
    assert main(["fit", "--config", str(config), "--trainer.max_epochs=1"]) == 0
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert len(checkpoints) == 1
    state = torch.load(checkpoints[0], weights_only=True)
    assert state["brgsa_config"]["vision_width"] == 24 and state["brgsa_preprocessing"]["size"] == [32, 32, 16]
    assert main(["export", str(checkpoints[0]), str(tmp_path / "model")]) == 0
    net, preprocessing, config_json = from_pretrained(tmp_path / "model")
    assert preprocessing.crop_size == (32, 32, 16) and config_json["model_type"] == "brgsa"
    trained = {name[len("net."):]: tensor for name, tensor in state["state_dict"].items() if name.startswith("net.")}
    for name, tensor in trained.items():
        assert torch.equal(net.state_dict()[name], tensor), name
    reference, _, _ = from_pretrained(tmp_path / "model")
    reference.load_state_dict(trained)  # the checkpoint's own weights, loaded directly
    volumes = torch.randn(3, 1, 32, 32, 16)
    prompts = ["There is Emphysema", "There is Pleural effusion"]
    with torch.no_grad():
        scores = net.zero_shot_scores(volumes, net.encode_texts(prompts)[0])
        expected = reference.zero_shot_scores(volumes, reference.encode_texts(prompts)[0])
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)


def test_export_refuses_a_checkpoint_without_the_config(tmp_path, capsys):
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, tmp_path / "bare.ckpt")
    assert main(["export", str(tmp_path / "bare.ckpt"), str(tmp_path / "out")]) == 2
    assert "brgsa_config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_light_commands_do_not_import_lightning():
    code = ("import sys; from brgsa.cli import main; status = main(['metrics', '--help']); "
            "sys.exit(3 if 'lightning' in sys.modules else status)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert "usage: brgsa metrics" in result.stdout
