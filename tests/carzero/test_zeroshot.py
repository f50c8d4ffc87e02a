"""End-to-end tests of ``carzero zeroshot`` on a tiny generated synthetic-cxr benchmark."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from carzero.cli import main
from carzero.model import CARZero
from carzero.pretrained import from_pretrained, save_pretrained
from carzero.scoring import CARZeroScorer
from datasets.cxr_transforms import CXRPreprocessing
from datasets.labels.chestxray14 import read_data_entry, read_image_list
from datasets.metrics import evaluate_multilabel
from datasets.pairs_datamodule import CXRDataset
from datasets.synthetic.cxr import generate_cxr
from datasets.synthetic.cxr_spec import CXR_V1

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "configs" / "prompts" / "synthetic-cxr.txt"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synthetic-cxr"
    generate_cxr(out, replace(CXR_V1, train_images=4, val_images=2, test_images=7, image_size=96), seed=1)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    torch.manual_seed(0)
    net = CARZero(text_encoder=str(tiny_bert_dir), image_size=32, patch_size=16, vision_width=32, vision_layers=1,
                  vision_heads=2, embed_dim=32, fusion_layers=1, fusion_heads=2, fusion_ffn_dim=32,
                  head_hidden_dims=[16], text_max_length=24, text_last_n_layers=1)
    return save_pretrained(net, tmp_path_factory.mktemp("models") / "tiny", CXRPreprocessing(image_size=32))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def direct_scores(model_dir: Path, bench: Path, ids: list[str], prompts: list[str]) -> torch.Tensor:
    net, preprocessing, _ = from_pretrained(model_dir)
    dataset = CXRDataset([bench / "images" / i for i in ids], preprocessing)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    return CARZeroScorer(net, prompts).score_images(images).mean


def test_benchmark_end_to_end_writes_scores_metrics_roc_and_resumes(tmp_path, bench, model_dir, capsys):
    out = tmp_path / "zs"
    args = [str(model_dir), "--benchmark", "synthetic-cxr", "--data-root", str(bench.parent), "--no-check-counts",
            "--out", str(out), "--batch-size", "3"]
    assert main(["zeroshot", *args]) == 0
    rows = read_csv(out / "scores.csv")
    test_ids = read_image_list(bench / "test_list.txt")
    assert [row["image_id"] for row in rows] == test_ids and len(rows[0]) == 15
    scores = np.array([[float(row[c]) for c in list(row)[1:]] for row in rows])
    prompts = [line.strip() for line in PROMPTS.read_text().splitlines() if line and not line.startswith("#")]
    np.testing.assert_allclose(scores, direct_scores(model_dir, bench, test_ids, prompts).numpy(), atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    labels = read_data_entry(bench / "Data_Entry_2017.csv").select_images(test_ids).labels
    expected = evaluate_multilabel(scores, labels, list(rows[0])[1:])
    assert metrics["macro"]["auroc"] == pytest.approx(expected.macro["auroc"], nan_ok=True)
    assert metrics["threshold_rule"] == "official" and "ROC corner" in metrics["threshold_rule_text"]
    assert (out / "metrics_per_class.csv").is_file()
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a killed run: the last two rows are gone; the rerun scores only those and appends them
    lines = (out / "scores.csv").read_text().splitlines(keepends=True)
    (out / "scores.csv").write_text("".join(lines[:-2]))
    assert main(["zeroshot", *args]) == 0
    resumed = read_csv(out / "scores.csv")
    assert [row["image_id"] for row in resumed] == test_ids
    assert resumed[:-2] == rows[:-2]
    np.testing.assert_allclose(np.array([[float(v) for v in list(r.values())[1:]] for r in resumed]), scores,
                               atol=1e-5)
    # resuming in another precision would mix fp32 and bf16 scores in one file: refused before anything is written
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    assert main(["zeroshot", *args, "--bf16"]) == 2
    assert f"{out} holds outputs of another run (differs in ['bf16'])" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_label_table_with_named_prompts_and_negative_pairs(tmp_path, bench, model_dir):
    (tmp_path / "pos.json").write_text(json.dumps({"Effusion": "There is pleural effusion",
                                                   "Cardiomegaly": ["There is cardiomegaly"]}))
    (tmp_path / "neg.json").write_text(json.dumps({"Effusion": "There is no pleural effusion",
                                                   "Cardiomegaly": "There is no cardiomegaly"}))
    out = tmp_path / "zs"
    assert main(["zeroshot", str(model_dir), "--labels", str(bench / "Data_Entry_2017.csv"), "--adapter",
                 "chestxray14.data_entry", "--images", str(bench / "images"), "--split-list",
                 str(bench / "test_list.txt"), "--prompts", str(tmp_path / "pos.json"), "--negative-prompts",
                 str(tmp_path / "neg.json"), "--out", str(out)]) == 0
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["image_id", "Cardiomegaly", "Effusion"]  # the label table's class order
    ids = [row["image_id"] for row in rows]
    logits = direct_scores(model_dir, bench, ids, ["There is cardiomegaly", "There is pleural effusion",
                                                   "There is no cardiomegaly", "There is no pleural effusion"])
    expected = torch.sigmoid(logits[:, :2] - logits[:, 2:]).numpy()
    np.testing.assert_allclose(np.array([[float(r["Cardiomegaly"]), float(r["Effusion"])] for r in rows]), expected,
                               atol=1e-5)
    assert "softmax" in json.loads((out / "metrics.json").read_text())["scoring"]

    # the same folder without --split-list would add every other image's scores to this run's scores.csv: refused
    before = (out / "scores.csv").read_bytes()
    assert main(["zeroshot", str(model_dir), "--labels", str(bench / "Data_Entry_2017.csv"), "--adapter",
                 "chestxray14.data_entry", "--images", str(bench / "images"), "--prompts", str(tmp_path / "pos.json"),
                 "--negative-prompts", str(tmp_path / "neg.json"), "--out", str(out)]) == 2
    assert (out / "scores.csv").read_bytes() == before


def bad_run(tmp_path: Path, model_dir: Path, labels: Path, images: Path, split: Path, prompts: Path, capsys
            ) -> str:
    out = tmp_path / "zs_bad"
    status = main(["zeroshot", str(model_dir), "--labels", str(labels), "--adapter", "chestxray14.data_entry",
                   "--images", str(images), "--split-list", str(split), "--prompts", str(prompts), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert not out.exists(), "bad input must leave no partial output"
    return err


def test_image_missing_from_disk(tmp_path, bench, model_dir, capsys):
    images = tmp_path / "images"
    shutil.copytree(bench / "images", images)
    victim = read_image_list(bench / "test_list.txt")[2]
    (images / victim).unlink()
    err = bad_run(tmp_path, model_dir, bench / "Data_Entry_2017.csv", images, bench / "test_list.txt", PROMPTS,
                  capsys)
    assert victim in err


def test_image_missing_from_the_label_table(tmp_path, bench, model_dir, capsys):
    split = tmp_path / "list.txt"
    split.write_text("99999999_000.png\n")
    err = bad_run(tmp_path, model_dir, bench / "Data_Entry_2017.csv", bench / "images", split, PROMPTS, capsys)
    assert "99999999_000.png" in err


def test_prompt_class_absent_from_the_labels(tmp_path, bench, model_dir, capsys):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"Pneumonitis": "There is pneumonitis"}))
    err = bad_run(tmp_path, model_dir, bench / "Data_Entry_2017.csv", bench / "images", bench / "test_list.txt",
                  prompts, capsys)
    assert "Pneumonitis" in err


def test_label_value_outside_the_format(tmp_path, bench, model_dir, capsys):
    lines = (bench / "Data_Entry_2017.csv").read_text().splitlines()
    first_test = read_image_list(bench / "test_list.txt")[0]
    lines = [line.replace(line.split(",")[1], "Banana", 1) if line.startswith(first_test) else line for line in lines]
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text("\n".join(lines) + "\n")
    err = bad_run(tmp_path, model_dir, table, bench / "images", bench / "test_list.txt", PROMPTS, capsys)
    assert "Banana" in err


def test_prompt_file_replaces_the_benchmark_prompts(tmp_path, bench, model_dir, capsys):
    classes = read_data_entry(bench / "Data_Entry_2017.csv").class_names
    custom = [f"Findings consistent with {name.lower()}" for name in classes]
    prompts = tmp_path / "findings.txt"
    prompts.write_text("\n".join(custom) + "\n")
    out = tmp_path / "zs"
    args = [str(model_dir), "--benchmark", "synthetic-cxr", "--data-root", str(bench.parent), "--no-check-counts"]
    assert main(["zeroshot", *args, "--prompts", str(prompts), "--out", str(out)]) == 0
    rows = read_csv(out / "scores.csv")
    scores = np.array([[float(row[c]) for c in list(row)[1:]] for row in rows])
    test_ids = read_image_list(bench / "test_list.txt")
    np.testing.assert_allclose(scores, direct_scores(model_dir, bench, test_ids, custom).numpy(), atol=1e-5)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({classes[0]: "There is something"}))
    status = main(["zeroshot", *args, "--prompts", str(partial), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert status == 2 and "must prompt every class" in err and not (tmp_path / "bad").exists()


def _two_images(bench: Path, folder: Path, names: list[str]) -> None:
    folder.mkdir()
    for source, name in zip(read_image_list(bench / "test_list.txt"), names):
        shutil.copy(bench / "images" / source, folder / name)


def test_openi_custom_table_without_an_image_list(tmp_path, bench, model_dir):
    """``--adapter openi`` on a custom.csv alone evaluates all its rows (the benchmark YAML adds an image list)."""
    _two_images(bench, tmp_path / "images", ["CXR1_1_IM-0001-3001.png", "CXR2_IM-0652-1001.png"])
    (tmp_path / "custom.csv").write_text(
        "uid,file_name,labels_major,labels_automatic\nCXR1,CXR1_1_IM-0001-3001.png,normal,\n"
        'CXR2,CXR2_IM-0652-1001.png,Cardiomegaly,"cardiomegaly;Atelectasis, Basilar"\n'
    )
    (tmp_path / "p.json").write_text(json.dumps({"Atelectasis": "There is atelectasis",
                                                 "Cardiomegaly": "There is cardiomegaly"}))
    out = tmp_path / "zs"
    assert main(["zeroshot", str(model_dir), "--labels", str(tmp_path / "custom.csv"), "--adapter", "openi",
                 "--images", str(tmp_path / "images"), "--prompts", str(tmp_path / "p.json"), "--out", str(out)]) == 0
    rows = read_csv(out / "scores.csv")
    assert [row["image_id"] for row in rows] == ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001"]
    assert list(rows[0]) == ["image_id", "Atelectasis", "Cardiomegaly"]


def test_adapter_options_choose_the_classes_of_a_chexpert_test_table(tmp_path, bench, model_dir, capsys):
    _two_images(bench, tmp_path / "images", ["a.png", "b.png"])
    (tmp_path / "test.csv").write_text("Path,Atelectasis,Cardiomegaly\na.png,1,0\nb.png,0,1\n")
    (tmp_path / "p.json").write_text(json.dumps({"Atelectasis": "There is atelectasis",
                                                 "Cardiomegaly": "There is cardiomegaly"}))
    args = ["zeroshot", str(model_dir), "--labels", str(tmp_path / "test.csv"), "--adapter", "chexpert.test",
            "--images", str(tmp_path / "images"), "--prompts", str(tmp_path / "p.json")]
    # the default classes are CheXpert's five competition tasks, so this table is refused ...
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "missing column(s) ['Consolidation', 'Edema', 'Pleural Effusion']" in capsys.readouterr().err
    # ... unless the option names the classes it holds
    out = tmp_path / "zs"
    assert main([*args, "--adapter-option", "classes=[Atelectasis, Cardiomegaly]", "--out", str(out)]) == 0
    assert [list(row.values())[0] for row in read_csv(out / "scores.csv")] == ["a.png", "b.png"]
    for option, message in [
        ("rarest=3", "adapter 'chexpert.test' takes no option ['rarest']; it takes ['classes']"),
        ("classes=[Banana]", "bad option for adapter 'chexpert.test'"),
        ("classes", "expected KEY=VALUE"),
    ]:
        assert main([*args, "--adapter-option", option, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_saved_model_reloads_without_a_transformers_load_report(model_dir, capfd):
    """The unused BERT pooler is kept frozen, so the saved text encoder is complete: transformers reports nothing."""
    capfd.readouterr()
    net, _, _ = from_pretrained(model_dir)
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "MISSING" not in err, err
    pooler = net.text.model.pooler
    assert pooler is not None and not any(parameter.requires_grad for parameter in pooler.parameters())
