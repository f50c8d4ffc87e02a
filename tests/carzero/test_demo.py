"""Tests of ``carzero demo`` end to end on a tiny synthetic-cxr v1 copy, and of the frozen text encoder's cache."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from carzero.cli import main
from carzero.demo import DEFAULT_CONFIG, markdown
from carzero.text_encoder import TextEncoder
from datasets.synthetic.cxr import generate_cxr
from datasets.synthetic.cxr_spec import CXR_V1

CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
           "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def tiny_demo_config(tmp_path: Path, text_encoder: Path) -> Path:
    """The demo config with a tiny network and one short epoch; loss, optimiser and scheduler stay the demo's."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    config["model"]["net"]["init_args"].update({
        "text_encoder": str(text_encoder), "image_size": 32, "patch_size": 16, "vision_width": 32, "vision_layers": 1,
        "vision_heads": 2, "embed_dim": 32, "fusion_layers": 1, "fusion_heads": 2, "fusion_ffn_dim": 32,
        "head_hidden_dims": [16], "text_max_length": 24,
    })
    config["trainer"].update({"max_epochs": 1, "check_val_every_n_epoch": 1, "log_every_n_steps": 1})
    config["data"].update({"image_size": 32, "batch_size": 8, "val_batch_size": 8})
    path = tmp_path / "tiny_demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory, tiny_bert_dir) -> Path:
    """One demo run (trained, shuffled-pairs and untrained models) on a 24/8/24-image v1 copy."""
    out = tmp_path_factory.mktemp("demo")
    generate_cxr(out / "synthetic-cxr", replace(CXR_V1, train_images=24, val_images=8, test_images=24, image_size=96),
                 seed=0)
    config = tiny_demo_config(out, tiny_bert_dir)
    assert main(["demo", "--out", str(out), "--config", str(config), "--max-minutes", "5"]) == 0
    return out


def test_results_json_has_every_run_with_per_class_figures(demo_out):
    results = json.loads((demo_out / "results.json").read_text(encoding="utf-8"))
    assert list(results["runs"]) == ["trained", "shuffled_pairs", "untrained"]
    assert results["benchmark"]["full_size"] is False and results["test_images"] == 24
    assert results["text_encoder_frozen"] is True and "There is <finding>" in results["training_text"]
    for name, run in results["runs"].items():
        for key, folder in (("test", f"zeroshot_{name}"), ("test_pairs", f"zeroshot_{name}_pairs")):
            assert list(run[key]["per_class_auroc"]) == CLASSES
            evaluable = [value for value in run[key]["per_class_auroc"].values() if value is not None]
            assert evaluable and all(0.0 <= value <= 1.0 for value in evaluable)
            assert run[key]["macro_auroc"] == pytest.approx(sum(evaluable) / len(evaluable))
            assert (demo_out / folder / "scores.csv").is_file()
        # the pair scoring really reads the negative prompts: its scores differ from the positive-only ones
        assert run["test"]["per_class_auroc"] != run["test_pairs"]["per_class_auroc"]
        assert (demo_out / f"model_{name}").is_dir()
    trained, shuffled, untrained = (results["runs"][name] for name in ("trained", "shuffled_pairs", "untrained"))
    assert trained["shuffled_reports"] is False and shuffled["shuffled_reports"] is True
    assert trained["epochs"] == shuffled["epochs"] == 1 and trained["steps"] == shuffled["steps"] == 3
    assert trained["train_cpu_seconds"] > 0 and untrained["steps"] == 0
    assert set(results["checks"]) == {"positive_prompts", "prompt_pairs"}
    for checks in results["checks"].values():
        assert set(checks) == {"trained_meets_target", "shuffled_at_chance", "untrained_at_chance"}
        assert all(isinstance(value, bool) for value in checks.values())
    # the control runs really differ from the trained model
    assert shuffled["test"]["per_class_auroc"] != trained["test"]["per_class_auroc"]


def test_results_table_is_generated_from_the_json(demo_out):
    results = json.loads((demo_out / "results.json").read_text(encoding="utf-8"))
    table = (demo_out / "results.md").read_text(encoding="utf-8")
    assert table == markdown(results)
    assert ("| class | trained (pos) | trained (pair) | shuffled_pairs (pos) | shuffled_pairs (pair) | untrained (pos) "
            "| untrained (pair) |") in table
    assert table.count("\n| ") == 2 + len(CLASSES)  # header, class and macro rows


def test_training_reports_are_aligned_copies(demo_out):
    original = (demo_out / "synthetic-cxr" / "reports.csv").read_text(encoding="utf-8").splitlines()
    aligned = (demo_out / "aligned" / "reports_aligned.csv").read_text(encoding="utf-8").splitlines()
    assert len(aligned) == len(original) and aligned[0] == original[0]
    assert all(row.startswith("pairs-1,images/") for row in aligned[1:])
    assert sum("There is " in row for row in aligned[1:]) == len(original) - 1  # "There is No Finding" for normals


def test_demo_rejects_a_bad_time_cap(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-minutes", "0"]) == 2
    assert "--max-minutes must be positive, got 0.0" in capsys.readouterr().err
    assert not out.exists()


def test_frozen_text_encoder_caches_identical_features(tiny_bert_dir):
    texts = ["Right pleural effusion.", "Normal chest radiograph.", "Right pleural effusion.", "Cardiomegaly."]
    encoder = TextEncoder(str(tiny_bert_dir), max_length=24, last_n_layers=1)
    with torch.no_grad():
        expected = encoder.eval()(texts)
    encoder.freeze()
    encoder.train()
    assert not encoder.training and not encoder.model.training
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    encoder.encode_cached(texts[:2])
    assert encoder.cached_texts() == 2
    got = encoder(texts)
    assert encoder.cached_texts() == 3  # "Cardiomegaly." encoded on demand, the repeated text once
    for want, have in zip(expected, got):
        assert have.shape == want.shape
        assert torch.allclose(have.float(), want.float(), atol=1e-5)
    assert not any(tensor.requires_grad for tensor in got)


def test_encode_cached_needs_a_frozen_cache(tiny_bert_dir):
    encoder = TextEncoder(str(tiny_bert_dir), max_length=24, last_n_layers=1)
    with pytest.raises(ValueError, match="freeze"):
        encoder.encode_cached(["Cardiomegaly."])
    encoder.freeze(cache_features=False)
    with pytest.raises(ValueError, match="freeze"):
        encoder.encode_cached(["Cardiomegaly."])
    assert encoder(["Cardiomegaly."])[0].shape == (1, encoder.width)


def test_several_seeds_write_each_seed_and_their_mean_and_reuse_finished_seeds(tmp_path, tiny_bert_dir):
    out = tmp_path / "demo"
    generate_cxr(out / "synthetic-cxr", replace(CXR_V1, train_images=24, val_images=8, test_images=24, image_size=96),
                 seed=0)
    args = ["demo", "--out", str(out), "--config", str(tiny_demo_config(tmp_path, tiny_bert_dir)), "--seeds", "0", "1",
            "--skip-controls", "--max-minutes", "5"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["seeds"] == [0, 1] and list(results["per_seed"]) == ["0", "1"]
    weights = [(out / f"seed_{seed}" / "model_trained" / "model.safetensors").read_bytes() for seed in (0, 1)]
    assert weights[0] != weights[1]  # the seeds really train different models
    for key in ("test", "test_pairs"):
        per_seed = [results["per_seed"][seed]["runs"]["trained"][key]["macro_auroc"] for seed in ("0", "1")]
        summary = results["runs"]["trained"][key]
        assert summary["macro_auroc_per_seed"] == per_seed
        assert summary["macro_auroc"] == pytest.approx(statistics.mean(per_seed))
        assert summary["macro_auroc_sd"] == pytest.approx(statistics.stdev(per_seed))
        for name, value in summary["per_class_auroc"].items():
            values = [results["per_seed"][seed]["runs"]["trained"][key]["per_class_auroc"][name] for seed in ("0", "1")]
            present = [v for v in values if v is not None]
            assert value == (pytest.approx(statistics.mean(present)) if present else None)
    assert results["checks"]["positive_prompts"] == {
        "trained_meets_target": results["runs"]["trained"]["test"]["macro_auroc"] >= 0.85,
        "shuffled_at_chance": None, "untrained_at_chance": None,
    }
    table = (out / "results.md").read_text(encoding="utf-8")
    assert table == markdown(results) and "| seed | trained (pos) | trained (pair) |" in table
    assert "\n| 0 | " in table and "\n| 1 | " in table
    # a rerun reuses both finished seeds: nothing is trained or rewritten
    stamps = [(out / f"seed_{seed}" / "results.json").stat().st_mtime_ns for seed in (0, 1)]
    assert main(args) == 0
    assert [(out / f"seed_{seed}" / "results.json").stat().st_mtime_ns for seed in (0, 1)] == stamps
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == results


def test_demo_rejects_repeated_seeds(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "1", "1"]) == 2
    assert "--seeds must be distinct, got [1, 1]" in capsys.readouterr().err
    assert not out.exists()
