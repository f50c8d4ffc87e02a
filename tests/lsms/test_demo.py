"""``lsms demo`` end to end on a tiny synthetic RefHL-Seg-style v1 copy: results, model folder, overlays, ablation."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from datasets.io import sha256_file
from datasets.refseg import read_refseg_manifest
from datasets.synthetic.refhl import generate_refhl
from datasets.synthetic.spec import REFHL_V1
from lsms.cli import main
from lsms.demo import DEFAULT_CONFIG, ablation_markdown, results_markdown
from lsms.model import LSMS
from lsms.pretrained import from_pretrained

from .test_cli import TINY_NET

BATCH_SIZE = 8


def tiny_demo_config(tmp_path: Path, text_encoder: Path) -> Path:
    """The demo config with the tiny network on 64-pixel slices; loss, optimiser and augmentation stay the demo's."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    config["model"]["net"]["init_args"].update({"text_encoder": str(text_encoder), **TINY_NET, "svla_heads": 1})
    # 5 steps of the demo's Dice + BCE leave every prediction empty (Dice 0 everywhere, so means and sds would be
    # 0 whatever the code did); Dice alone at a higher rate gives the no-language models masks that touch lesions
    config["model"].update({"lr": 0.02, "warmup_steps": 0, "bce_weight": 0.0})
    config["trainer"].update({"max_epochs": 1, "log_every_n_steps": 1, "callbacks": [{
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(tmp_path / "checkpoints"), "save_on_train_epoch_end": True},
    }]})
    config["data"].update({"image_size": 64, "batch_size": BATCH_SIZE})
    path = tmp_path / "tiny_demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tiny_benchmark(out: Path) -> Path:
    """A v1 seed-0 benchmark with 2 train, 1 val and 1 test case where the demo expects it (it reuses an intact one)."""
    generate_refhl(out / "data", dataclasses.replace(REFHL_V1, train_cases=2, val_cases=1, test_cases=1), seed=0)
    return out / "data" / "manifest.csv"


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, tiny_bert_dir) -> Path:
    out = tmp_path_factory.mktemp("lsms_demo")
    tiny_benchmark(out)
    assert main(["demo", "--out", str(out), "--config", str(tiny_demo_config(out, tiny_bert_dir))]) == 0
    return out


def test_results_json_matches_the_benchmark_and_the_exported_model(demo_out, capsys):
    results = json.loads((demo_out / "results.json").read_text(encoding="utf-8"))
    manifest = demo_out / "data" / "manifest.csv"
    rows = read_refseg_manifest(manifest)
    benchmark = {key: results["benchmark"][key] for key in ("name", "version", "manifest_sha256")}
    assert benchmark == {"name": "refhl-synth", "version": 1, "manifest_sha256": sha256_file(manifest)}
    assert results["variant"] == "full" and results["seed"] == 0
    assert results["epochs"] == 1 and results["steps"] == math.ceil(len(rows.rows("train")) / BATCH_SIZE)
    assert results["train_seconds"] > 0 and results["cache_seconds"] >= 0
    test_rows = rows.rows("test")
    for run in (results["test"], results["untrained"]):
        assert run["expressions"] == len(test_rows)
        assert sum(group["n"] for group in run["dice_by"]["attribute"].values()) == len(test_rows)

    # the recorded test figures are those of the exported model, scored again through `lsms evaluate`
    rescored = demo_out / "rescored.json"
    assert main(["evaluate", str(demo_out / "model"), str(manifest), "--split", "test", "--out", str(rescored),
                 "--cache-dir", str(demo_out / "cache")]) == 0
    capsys.readouterr()
    again = json.loads(rescored.read_text(encoding="utf-8"))
    assert {key: value for key, value in again.items() if key not in ("model", "manifest", "split")} == results["test"]

    net, preprocessing, config = from_pretrained(demo_out / "model")
    assert preprocessing.image_size == 64 and net.config["encoder_widths"] == TINY_NET["encoder_widths"]
    assert config["test_metrics"] == results["test"]["true_prompts"]
    assert config["benchmark"] == results["benchmark"]
    assert config["training_manifest"]["sha256"] == sha256_file(manifest)
    assert config["training_manifest"]["rows"] == len(rows.rows("train"))

    # the exported weights are the trained ones (the checkpoint of the last epoch), not the untrained control's
    checkpoints = sorted((demo_out / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 1, checkpoints
    state = torch.load(checkpoints[0], weights_only=True)["state_dict"]
    trained = {name.removeprefix("net."): value for name, value in state.items() if name.startswith("net.")}
    exported = net.state_dict()
    assert set(exported) == set(trained)
    for name, value in exported.items():
        assert torch.equal(value, trained[name]), name
    torch.manual_seed(0)
    untrained = LSMS(**net.config).state_dict()
    assert any(not torch.equal(value, untrained[name]) for name, value in exported.items())


def test_results_table_is_generated_from_the_json(demo_out):
    results = json.loads((demo_out / "results.json").read_text(encoding="utf-8"))
    table = (demo_out / "results.md").read_text(encoding="utf-8")
    assert table == results_markdown(results)
    dice = results["test"]["true_prompts"]["dice"]
    assert f"| dice (true prompts, all) | {dice:.3f} |" in table


def test_example_segmentation_writes_one_overlay_per_lesion_of_a_multi_lesion_slice(demo_out):
    example = json.loads((demo_out / "results.json").read_text(encoding="utf-8"))["example_segmentation"]
    rows = read_refseg_manifest(demo_out / "data" / "manifest.csv").rows("test")
    image, index = example[0]["image"], int(example[0]["slice_index"])
    lesion_of = {row.text: row.lesion_id for row in rows if (str(row.image), row.slice_index) == (image, index)}
    assert len(set(lesion_of.values())) >= 2  # the test case has slices with 2-3 lesions: the example is one of them
    assert all((row["image"], int(row["slice_index"])) == (image, index) for row in example)
    assert sorted(lesion_of[row["prompt"]] for row in example) == sorted(set(lesion_of.values()))  # one per lesion
    listed = (demo_out / "segment" / "segmentations.csv").read_text(encoding="utf-8").splitlines()
    assert len(listed) == 1 + len(example)
    for row in example:
        for column in ("mask_nifti", "mask_png", "overlay_png"):
            path = Path(row[column])
            path = path if path.is_absolute() else demo_out / "segment" / path
            assert path.is_file() and path.stat().st_size > 0, (column, path)


def test_ablation_over_two_seeds_writes_each_run_and_their_mean_and_sd(tmp_path, tiny_bert_dir, capsys):
    out = tmp_path / "ablation"
    tiny_benchmark(out)
    assert main(["demo", "--out", str(out), "--config", str(tiny_demo_config(tmp_path, tiny_bert_dir)),
                 "--ablation", "--seeds", "0", "1"]) == 0
    results = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert [(run["variant"], run["seed"]) for run in results["runs"]] == [
        ("full", 0), ("no_language", 0), ("full", 1), ("no_language", 1)
    ]
    assert not (out / "results.json").exists()  # the ablation writes its own file only
    for variant in ("full", "no_language"):
        runs = [run for run in results["runs"] if run["variant"] == variant]
        dice = [run["test"]["true_prompts"]["dice"] for run in runs]
        summary = results["summary"][variant]
        assert summary["seeds"] == [0, 1]
        assert summary["dice_mean"] == pytest.approx(statistics.mean(dice))
        assert summary["dice_sd"] == pytest.approx(statistics.stdev(dice))
        assert summary["grounding_mean"] == pytest.approx(
            statistics.mean(run["test"]["multi_lesion"]["grounding_accuracy"]["mean"] for run in runs))
        assert summary["shuffle_gap_mean"] == pytest.approx(
            statistics.mean(run["test"]["multi_lesion"]["gap_true_minus_shuffled"] for run in runs))
    assert results["summary"]["no_language"]["dice_sd"] > 0  # the seeds' models differ: the sd is not 0 by default
    for run in results["runs"]:
        if run["variant"] == "no_language":  # blind to the text: shuffling the prompts changes no prediction
            assert run["test"]["multi_lesion"]["gap_true_minus_shuffled"] == 0.0
    assert ablation_markdown(results) in capsys.readouterr().out


def test_missing_config_is_named_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "demo"
    missing = tmp_path / "no_such_config.yaml"
    assert main(["demo", "--out", str(out), "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"training config {missing} not found" in err, err
    assert not out.exists()
