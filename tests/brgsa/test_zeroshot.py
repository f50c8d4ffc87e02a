"""Tests of ``brgsa zeroshot``: end-to-end scoring of a tiny synthetic-ct3d benchmark, resuming, and bad inputs."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brgsa.cli import main
from brgsa.model import zero_shot_scores
from brgsa.pretrained import from_pretrained, save_pretrained
from datasets.ct_pipeline import CTVolumePreprocessing, load_preprocessed, to_model_input
from datasets.labels.ctrate import CLASSES, read_ctrate_metadata
from datasets.pretrained import save_model_folder
from datasets.synthetic.ct3d import TEST_LABELS, generate_ct3d
from datasets.synthetic.ct3d_spec import CT3D_V1

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "configs" / "prompts" / "synthetic-ct3d.txt"
TINY_PREPROCESSING = CTVolumePreprocessing(spacing=(14.0, 14.0, 28.0), size=(32, 32, 16), crop_size=(32, 32, 16))


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny synthetic-ct3d v1 layout: 4 train, 2 val, 8 test volumes."""
    out = tmp_path_factory.mktemp("data") / "synthetic-ct3d"
    generate_ct3d(out, replace(CT3D_V1, train_volumes=4, val_volumes=2, test_volumes=8), seed=0)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_brgsa) -> Path:
    net = tiny_brgsa()
    return save_pretrained(net, tmp_path_factory.mktemp("models") / "brgsa", TINY_PREPROCESSING)


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["VolumeName"]: row for row in csv.DictReader(handle)}


def run(args: list[str]) -> int:
    return main(["zeroshot", *args, "--no-progress", "--bootstrap", "20"])


def test_benchmark_run_writes_paper_scores_and_metrics(tmp_path, bench, model_dir):
    out = tmp_path / "zs"
    assert run([str(model_dir), "--benchmark", "synthetic-ct3d", "--data-root", str(bench.parent),
                "--no-check-counts", "--out", str(out), "--batch-size", "3"]) == 0
    rows = read_rows(out / "scores.csv")
    with open(bench / TEST_LABELS, newline="", encoding="utf-8") as handle:
        names = [row["VolumeName"] for row in csv.DictReader(handle)]
    assert sorted(rows) == sorted(names) and len(names) == 8
    # the scores are the paper's (cos(v, t) + cos(v_hat, t)) / 2 of the full preprocessed volume
    net, preprocessing, _ = from_pretrained(model_dir)
    geometry = read_ctrate_metadata(bench / "validation_metadata.csv")
    name = names[0]
    hu, _ = load_preprocessed(bench / "volumes" / name, preprocessing, None, geometry[name])
    with torch.no_grad():
        prompts = net.encode_texts([f"There is {c}" for c in CLASSES])[0]
        expected = zero_shot_scores(*net.encode_volumes(to_model_input(hu, preprocessing, "none")[None]), prompts)
    got = torch.tensor([float(rows[name][c]) for c in CLASSES])
    torch.testing.assert_close(got, expected[0], rtol=0, atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == CLASSES and metrics["bootstrap"]["n_resamples"] == 20
    assert metrics["inputs"]["scores"]["path"] == str(out / "scores.csv")
    assert (out / "metrics_per_class.csv").read_text().count("\n") == 19


def test_a_killed_run_resumes_to_the_same_scores(tmp_path, bench, model_dir, capsys):
    out = tmp_path / "zs"
    args = [str(model_dir), "--benchmark", "synthetic-ct3d", "--data-root", str(bench.parent), "--no-check-counts",
            "--out", str(out)]
    assert run(args) == 0
    complete = read_rows(out / "scores.csv")
    lines = (out / "scores.csv").read_text().splitlines(keepends=True)
    (out / "scores.csv").write_text("".join(lines[:4]) + lines[4][:20])  # 3 rows and a torn fourth
    (out / "metrics.json").unlink()
    assert run(args) == 0
    assert read_rows(out / "scores.csv") == complete
    assert (out / "metrics.json").is_file()
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    assert run([*args, "--crop", "center"]) == 2  # another evaluation setting may not continue these scores
    assert f"{out} holds outputs of another run (differs in ['crop'])" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_label_csv_mode_with_negative_prompts(tmp_path, bench, model_dir):
    negatives = tmp_path / "no.txt"
    negatives.write_text("".join(f"There is no {c}\n" for c in CLASSES))
    out = tmp_path / "zs"
    assert run([str(model_dir), "--labels", str(bench / TEST_LABELS), "--volumes", str(bench / "volumes"),
                "--metadata", str(bench / "validation_metadata.csv"), "--prompts", str(PROMPTS), "--allow-unlisted",
                "--negative-prompts", str(negatives), "--out", str(out)]) == 0
    rows = read_rows(out / "scores.csv")
    values = np.array([[float(row[c]) for c in CLASSES] for row in rows.values()])
    assert values.shape == (8, 18) and (values > 0).all() and (values < 1).all()  # pair-softmax probabilities
    # one volume's scores: the softmax over (positive, negative) mixed scores at the training scale 10, i.e.
    # sigmoid(10 * (s_pos - s_neg)) with each s the paper's positive-only score of its own prompt
    assert PROMPTS.read_text().splitlines()[1:] == [f"There is {c}" for c in CLASSES]
    net, preprocessing, _ = from_pretrained(model_dir)
    name = sorted(rows)[0]
    geometry = read_ctrate_metadata(bench / "validation_metadata.csv")
    hu, _ = load_preprocessed(bench / "volumes" / name, preprocessing, None, geometry[name])
    with torch.no_grad():
        volume = net.encode_volumes(to_model_input(hu, preprocessing, "none")[None])
        positive = zero_shot_scores(*volume, net.encode_texts([f"There is {c}" for c in CLASSES])[0])
        negative = zero_shot_scores(*volume, net.encode_texts([f"There is no {c}" for c in CLASSES])[0])
    expected = torch.sigmoid(10.0 * (positive - negative))[0]
    got = torch.tensor([float(rows[name][c]) for c in CLASSES])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(expected, torch.sigmoid(10.0 * (negative - positive))[0], atol=1e-3)  # order matters


def bad_run(capsys, args: list[str], out: Path) -> str:
    assert run([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("brgsa zeroshot: error:")
    assert not out.exists()
    return err


def write_labels(path: Path, names: list[str], columns: list[str] = CLASSES) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["VolumeName", *columns])
        writer.writerows([name, *([0, 1] * len(columns))[: len(columns)]] for name in names)
    return path


def test_bad_inputs_exit_2_naming_the_culprit_and_write_nothing(tmp_path, bench, model_dir, capsys):
    base = [str(model_dir), "--volumes", str(bench / "volumes"), "--prompts", str(PROMPTS)]
    test_names = list(read_rows(bench / TEST_LABELS))
    out = tmp_path / "out"
    lacking = write_labels(tmp_path / "lacking.csv", test_names, [c for c in CLASSES if c != "Emphysema"])
    assert "Emphysema" in bad_run(capsys, [*base, "--labels", str(lacking), "--allow-unlisted"], out)
    absent = write_labels(tmp_path / "absent.csv", [*test_names, "valid_999_a_1.nii.gz"])
    assert "valid_999_a_1.nii.gz" in bad_run(capsys, [*base, "--labels", str(absent), "--allow-unlisted"], out)
    partial = write_labels(tmp_path / "partial.csv", test_names[:-1])
    err = bad_run(capsys, [*base, "--labels", str(partial)], out)
    assert "absent from the label CSV" in err and "train_" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 1), np.int16), np.eye(4)), flat / "slice.nii.gz")
    two_d = write_labels(tmp_path / "two_d.csv", ["slice.nii.gz"])
    err = bad_run(capsys, [str(model_dir), "--volumes", str(flat), "--prompts", str(PROMPTS), "--labels",
                           str(two_d)], out)
    assert "slice.nii.gz" in err and "2D image" in err
    save_model_folder(tmp_path / "lsms_model", torch.nn.Linear(2, 2), model_type="lsms", model_config={},
                      preprocessing={})
    err = bad_run(capsys, [str(tmp_path / "lsms_model"), "--benchmark", "synthetic-ct3d", "--data-root",
                           str(bench.parent), "--no-check-counts"], out)
    assert "'lsms' model" in err


def test_prompt_file_replaces_the_benchmark_prompts(tmp_path, bench, model_dir, capsys):
    prompts = tmp_path / "findings.txt"
    prompts.write_text("".join(f"Findings consistent with {c.lower()}\n" for c in CLASSES))
    args = [str(model_dir), "--benchmark", "synthetic-ct3d", "--data-root", str(bench.parent), "--no-check-counts"]
    assert run([*args, "--prompts", str(prompts), "--out", str(tmp_path / "zs")]) == 0
    assert run([*args, "--out", str(tmp_path / "default")]) == 0
    run_info = json.loads((tmp_path / "zs" / "run.json").read_text())
    assert run_info["prompts"] == [f"Findings consistent with {c.lower()}" for c in CLASSES]
    assert read_rows(tmp_path / "zs" / "scores.csv") != read_rows(tmp_path / "default" / "scores.csv")
    prompts.write_text("".join(f"Findings consistent with {c}\n" for c in CLASSES[:-1]))
    err = bad_run(capsys, [*args, "--prompts", str(prompts)], tmp_path / "short")
    assert f"{prompts} has 17 prompt lines but there are 18 classes" in err


def test_prepare_with_the_model_fills_the_cache_zeroshot_reads(tmp_path, bench, model_dir, caplog):
    """A cache filled with other parameters was silently missed; `prepare --model` fills it with the model's own."""
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    with open(bench / TEST_LABELS, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            (volumes / row["VolumeName"]).symlink_to(bench / "volumes" / row["VolumeName"])
    args = [str(model_dir), "--benchmark", "synthetic-ct3d", "--data-root", str(bench.parent), "--no-check-counts"]
    other = tmp_path / "other_cache"
    assert main(["prepare", "--volumes", str(volumes), "--out", str(other), "--no-progress", "--metadata",
                 str(bench / "validation_metadata.csv"), "--spacing", "10", "10", "20", "--size", "32", "32", "16",
                 "--crop-size", "32", "32", "16"]) == 0
    with caplog.at_level("INFO"):
        assert run([*args, "--out", str(tmp_path / "a"), "--cache", str(other)]) == 0
    assert "holds no volume preprocessed as this model needs" in caplog.text and "--model" in caplog.text

    cache = tmp_path / "cache"
    model_config = json.loads((model_dir / "config.json").read_text())
    assert "normalisation" in model_config["preprocessing"]
    for source in (["--model", str(model_dir)], ["--config", str(model_dir / "config.json")]):
        assert main(["prepare", "--volumes", str(volumes), "--out", str(cache), "--no-progress", "--metadata",
                     str(bench / "validation_metadata.csv"), *source]) == 0
    caplog.clear()
    with caplog.at_level("INFO"):
        assert run([*args, "--out", str(tmp_path / "b"), "--cache", str(cache)]) == 0
    assert "8 of 8 volumes already preprocessed" in caplog.text
    assert read_rows(tmp_path / "a" / "scores.csv") == read_rows(tmp_path / "b" / "scores.csv")


def test_rad_chestct_benchmark_reads_the_release_npz_volumes(tmp_path, model_dir, capsys):
    """RAD-ChestCT ships `<NoteAcc_DEID>.npz` archives (key `ct`, slices first); the benchmark refused them."""
    import shutil

    from datasets.ct_pipeline import read_hu_volume
    from datasets.labels.radchestct import CLASSES as RAD_CLASSES

    root = tmp_path / "RAD-ChestCT"
    (root / "volumes").mkdir(parents=True)
    table = ROOT / "tests" / "data" / "labels" / "radchestct" / "imgtest_Abnormality_and_Location_Labels.csv"
    shutil.copy(table, root / table.name)
    rng = np.random.default_rng(0)
    names = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
    for name in names:
        stored = rng.integers(-1000, 400, (24, 40, 40)).astype(np.int16)  # (slices, rows, columns), HU
        np.savez_compressed(root / "volumes" / f"{name}.npz", ct=stored)
    out = tmp_path / "zs"
    assert run([str(model_dir), "--benchmark", "rad-chestct", "--data-root", str(tmp_path), "--no-check-counts",
                "--out", str(out)]) == 0
    rows = read_rows(out / "scores.csv")
    assert sorted(rows) == sorted(names) and set(next(iter(rows.values()))) == {"VolumeName", *RAD_CLASSES}

    volume = read_hu_volume(root / "volumes" / f"{names[0]}.npz", TINY_PREPROCESSING)
    with np.load(root / "volumes" / f"{names[0]}.npz") as archive:
        stored = archive["ct"]
    assert volume.array.shape == (40, 40, 24) and volume.spacing == (0.8, 0.8, 0.8)
    assert volume.array[3, 5, 0] == stored[-1, 5, 3]  # x = column, y = row, slices flipped as BrgSA's preprocessing

    # a volume missing on disk is an error, unless asked to score the volumes present, as the released evaluation does
    (root / "volumes" / f"{names[1]}.npz").unlink()
    args = [str(model_dir), "--benchmark", "rad-chestct", "--data-root", str(tmp_path), "--no-check-counts"]
    assert run([*args, "--out", str(tmp_path / "partial")]) == 2
    assert "column 'NoteAcc_DEID'" in capsys.readouterr().err  # RAD-ChestCT's key column, not CT-RATE's
    assert run([*args, "--out", str(tmp_path / "partial"), "--skip-missing-volumes"]) == 0
    assert sorted(read_rows(tmp_path / "partial" / "scores.csv")) == sorted(set(names) - {names[1]})
