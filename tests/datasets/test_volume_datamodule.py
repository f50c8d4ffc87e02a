"""Tests of the CT volume DataModules on tiny CT-RATE-style folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.ct_pipeline import CTVolumePreprocessing
from datasets.errors import InputError
from datasets.labels.ctrate import CLASSES
from datasets.nifti import save_nifti
from datasets.volume_datamodule import (
    VolumeItem,
    VolumeReportDataModule,
    VolumeZeroShotDataModule,
    collate_volumes,
    reconstruction_groups,
)

TINY = CTVolumePreprocessing(spacing=(3.0, 3.0, 4.0), size=(32, 32, 16), crop_size=(24, 24, 12), mean_std=None)
TRAIN = ["train_1_a_1.nii.gz", "train_1_a_2.nii.gz", "train_2_a_1.nii.gz", "train_3_a_1.nii.gz"]
VALID = ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz", "valid_3_b_1.nii.gz"]

LABEL_DATA = Path(__file__).resolve().parents[1] / "data" / "labels"


def _volume(root: Path, name: str, seed: int) -> None:
    patient, scan = name.rsplit("_", 2)[0], name.rsplit("_", 1)[0]
    hu = np.random.default_rng(seed).integers(-1000, 1000, (40, 40, 20)).astype(np.int16)
    save_nifti(hu, np.diag([2.0, 2.0, 3.0, 1.0]), root / patient / scan / name)


@pytest.fixture
def ctrate(tmp_path: Path) -> Path:
    for i, name in enumerate(TRAIN):
        _volume(tmp_path / "train", name, i)
    for i, name in enumerate(VALID):
        _volume(tmp_path / "valid", name, 10 + i)
    sentences = [["There is emphysema.", "No effusion."], ["Normal heart."], ["Lung nodule.", "A", "B"], ["Fine."]]
    rows = [f"{name},\"{json.dumps(s).replace(chr(34), chr(34) * 2)}\"" for name, s in zip(TRAIN, sentences)]
    (tmp_path / "sentences.csv").write_text("VolumeName,sentences\n" + "\n".join(rows) + "\n")
    (tmp_path / "split.csv").write_text(
        "VolumeName,split\ntrain_1_a_1.nii.gz,train\ntrain_1_a_2.nii.gz,train\ntrain_2_a_1.nii.gz,train\n"
        "train_3_a_1.nii.gz,val\n"
    )
    rng = np.random.default_rng(0)
    lines = ["VolumeName," + ",".join(CLASSES)]
    lines += [name + "," + ",".join(str(v) for v in rng.integers(0, 2, len(CLASSES))) for name in VALID]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_report_module_batches_keep_sentence_lists(ctrate: Path) -> None:
    data = VolumeReportDataModule(
        str(ctrate / "sentences.csv"), str(ctrate / "train"), split_file=str(ctrate / "split.csv"),
        preprocessing=TINY, cache_dir=str(ctrate / "cache"), batch_size=2,
    )
    data.prepare_data()
    data.setup("fit")
    assert (len(data.datasets["train"]), len(data.datasets["val"])) == (3, 1)
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 1, 24, 24, 12) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert all(isinstance(text, list) and all(isinstance(s, str) for s in text) for text in batch["text"])
    assert "label" not in batch and {meta["split"] for meta in batch["meta"]} == {"train"}
    val = next(iter(data.val_dataloader()))
    assert val["text"] == [["Fine."]] and val["meta"][0]["VolumeName"] == "train_3_a_1.nii.gz"
    assert val["image"].shape == (1, 1, 24, 24, 12)


def test_one_volume_per_report_draws_among_a_scans_reconstructions(ctrate: Path) -> None:
    data = VolumeReportDataModule(
        str(ctrate / "sentences.csv"), str(ctrate / "train"), split_file=str(ctrate / "split.csv"),
        preprocessing=TINY, batch_size=2, one_volume_per_report=True,
    )
    data.setup("fit")
    train = data.datasets["train"]
    assert len(train) == 2 and len(data.datasets["val"]) == 1  # train_1_a_1 and train_1_a_2 are one report
    scan_a = {train[0]["meta"]["VolumeName"] for _ in range(12)}
    assert scan_a == {"train_1_a_1.nii.gz", "train_1_a_2.nii.gz"}
    assert {train[1]["meta"]["VolumeName"] for _ in range(3)} == {"train_2_a_1.nii.gz"}
    items = [VolumeItem(Path(name), name, 2 + i, Path("t.csv")) for i, name in enumerate(
        ["train_1_a_1.nii.gz", "scan7.nii.gz", "train_1_b_1.nii.gz", "train_1_a_2.nii.gz", "scan7_2.nii.gz"])]
    assert reconstruction_groups(items) == [[0, 3], [1], [2], [4]]


def test_random_crops_are_reproducible_with_workers(ctrate: Path) -> None:
    def first_batch(seed: int, workers: int) -> torch.Tensor:
        data = VolumeReportDataModule(
            str(ctrate / "sentences.csv"), str(ctrate / "train"), split_file=str(ctrate / "split.csv"),
            preprocessing=TINY, batch_size=3, num_workers=workers, seed=seed,
        )
        data.setup("fit")
        return next(iter(data.train_dataloader()))["image"]

    torch.testing.assert_close(first_batch(0, 0), first_batch(0, 0))
    torch.testing.assert_close(first_batch(1, 1), first_batch(1, 1))
    assert not torch.equal(first_batch(0, 0), first_batch(1, 0))


def test_ctrate_report_table_gives_text_strings(ctrate: Path) -> None:
    reports = ctrate / "train_reports.csv"
    reports.write_text(
        "VolumeName,ClinicalInformation_EN,Technique_EN,Findings_EN,Impressions_EN\n"
        + "".join(f"{name},,,Findings {i}.,Impression {i}.\n" for i, name in enumerate(TRAIN))
    )
    data = VolumeReportDataModule(str(reports), str(ctrate / "train"), split_file=str(ctrate / "split.csv"),
                                  preprocessing=TINY, batch_size=3, section="findings")
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert sorted(batch["text"]) == ["Findings 0.", "Findings 1.", "Findings 2."]


def test_splits_must_be_patient_disjoint_and_exclude_the_test_set(ctrate: Path) -> None:
    split = ctrate / "bad_split.csv"
    split.write_text("VolumeName,split\ntrain_1_a_1.nii.gz,train\ntrain_1_a_2.nii.gz,val\n")
    data = VolumeReportDataModule(str(ctrate / "sentences.csv"), str(ctrate / "train"), split_file=str(split),
                                  preprocessing=TINY)
    with pytest.raises(InputError, match="patient 'train_1' is in both splits"):
        data.setup("fit")
    sentences = ctrate / "with_valid.csv"
    sentences.write_text('VolumeName,sentences,split\nvalid_1_a_1.nii.gz,"[""x""]",val\n')
    data = VolumeReportDataModule(str(sentences), str(ctrate / "valid"), preprocessing=TINY)
    with pytest.raises(InputError, match=r"with_valid\.csv: row 2: 'valid_1_a_1.nii.gz' is a CT-RATE validation"):
        data.setup("fit")
    data = VolumeReportDataModule(str(ctrate / "sentences.csv"), str(ctrate / "train"), preprocessing=TINY)
    with pytest.raises(InputError, match="no 'split' column: pass split_file="):
        data.setup("fit")


def test_bad_sentences_cell_names_file_row_and_column(ctrate: Path) -> None:
    sentences = ctrate / "bad.csv"
    sentences.write_text('VolumeName,sentences,split\ntrain_1_a_1.nii.gz,"[""ok""]",train\n'
                         "train_2_a_1.nii.gz,just text,train\n")
    data = VolumeReportDataModule(str(sentences), str(ctrate / "train"), preprocessing=TINY)
    with pytest.raises(InputError, match=r"bad\.csv: row 3, column 'sentences': expected a JSON list"):
        data.setup("fit")


def test_empty_sentence_lists_are_an_error_unless_skipped(ctrate: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``brgsa summarize --allow-empty`` writes ``[]`` for a report it could not summarise."""
    sentences = ctrate / "summaries.csv"
    sentences.write_text('VolumeName,sentences,split\ntrain_1_a_1.nii.gz,"[""ok""]",train\n'
                         'train_2_a_1.nii.gz,[],train\ntrain_3_a_1.nii.gz,"[""fine""]",val\n')
    strict = VolumeReportDataModule(str(sentences), str(ctrate / "train"), preprocessing=TINY)
    with pytest.raises(InputError, match=r"row 3, column 'sentences': .*got '\[\]'; set skip_empty_reports"):
        strict.setup("fit")
    data = VolumeReportDataModule(str(sentences), str(ctrate / "train"), preprocessing=TINY, batch_size=1,
                                  skip_empty_reports=True)
    data.setup("fit")
    assert "1 of 3 rows have an empty sentence list and are left out (rows 3)" in caplog.text
    assert [item.name for item in data.datasets["train"].items] == ["train_1_a_1.nii.gz"]


def test_zero_shot_module_batches(ctrate: Path) -> None:
    data = VolumeZeroShotDataModule(labels=str(ctrate / "labels.csv"), volume_root=str(ctrate / "valid"),
                                    preprocessing=TINY, batch_size=2, crop="none")
    data.setup("test")
    batches = list(data.test_dataloader())
    assert [b["image"].shape for b in batches] == [(2, 1, 32, 32, 16), (1, 1, 32, 32, 16)]
    assert batches[0]["label"].shape == (2, 18) and batches[0]["label"].dtype == torch.float32
    assert [m["VolumeName"] for b in batches for m in b["meta"]] == VALID
    assert "text" not in batches[0] and data.class_names == CLASSES


def test_a_volume_that_breaks_mid_run_names_its_table_row(ctrate: Path) -> None:
    data = VolumeZeroShotDataModule(labels=str(ctrate / "labels.csv"), volume_root=str(ctrate / "valid"),
                                    preprocessing=TINY, batch_size=1, crop="none")
    data.setup("test")
    (ctrate / "valid" / "valid_2" / "valid_2_a" / "valid_2_a_1.nii.gz").write_bytes(b"not a volume")  # after checks
    with pytest.raises(InputError, match=r"labels\.csv row 3, VolumeName 'valid_2_a_1\.nii\.gz'\)$"):
        list(data.test_dataloader())


def test_zero_shot_from_the_synthetic_benchmark_registry(ctrate: Path) -> None:
    folder = ctrate / "synthetic-ct3d"
    names = [f"synth_{i:03d}.nii.gz" for i in range(12)]
    for i, name in enumerate(names):
        raw = np.full((20, 20, 10), 1024 + i * 10, np.int16)  # stored values; the metadata rescale gives HU
        save_nifti(raw, np.diag([3.0, 3.0, 4.0, 1.0]), folder / "volumes" / name)
    lines = ["VolumeName," + ",".join(CLASSES)] + [name + "," + ",".join(["0"] * 18) for name in names]
    (folder / "dataset_multi_abnormality_labels_valid_predicted_labels.csv").write_text("\n".join(lines) + "\n")
    header, row = (LABEL_DATA / "ctrate" / "validation_metadata.csv").read_text().splitlines()[:2]
    metadata = [header] + [name + row[row.index(","):] for name in names]
    (folder / "validation_metadata.csv").write_text("\n".join(metadata) + "\n")
    with pytest.raises(InputError, match="expected 100"):
        VolumeZeroShotDataModule(benchmark="synthetic-ct3d", data_root=str(ctrate), preprocessing=TINY).setup("test")
    data = VolumeZeroShotDataModule(benchmark="synthetic-ct3d", data_root=str(ctrate), preprocessing=TINY,
                                    batch_size=4, check_counts=False)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (4, 1, 24, 24, 12) and batch["label"].shape == (4, 18)


def test_missing_volume_2d_image_and_missing_column_errors(ctrate: Path) -> None:
    target = ctrate / "valid" / "valid_2" / "valid_2_a" / "valid_2_a_1.nii.gz"
    target.unlink()
    data = VolumeZeroShotDataModule(labels=str(ctrate / "labels.csv"), volume_root=str(ctrate / "valid"),
                                    preprocessing=TINY)
    with pytest.raises(InputError, match=r"labels\.csv: column 'VolumeName': 1 volume.*row 3: 'valid_2_a_1.nii.gz'"):
        data.prepare_data()
    save_nifti(np.zeros((40, 40), np.int16), np.eye(4), target)
    with pytest.raises(InputError, match=r"row 3, column 'VolumeName' \('valid_2_a_1.nii.gz'\).*is a 2D image"):
        data.setup("test")
    header, *rows = (ctrate / "labels.csv").read_text().splitlines()
    keep = [i for i, name in enumerate(header.split(",")) if name != "Emphysema"]
    (ctrate / "no_emphysema.csv").write_text(
        "\n".join(",".join(line.split(",")[i] for i in keep) for line in [header, *rows]) + "\n"
    )
    data = VolumeZeroShotDataModule(labels=str(ctrate / "no_emphysema.csv"), volume_root=str(ctrate / "valid"))
    with pytest.raises(InputError, match=r"no_emphysema\.csv: missing column\(s\) \['Emphysema'\]"):
        data.setup("test")


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="either labels"):
        VolumeZeroShotDataModule()
    with pytest.raises(InputError, match="needs volume_root"):
        VolumeZeroShotDataModule(labels="labels.csv")
    with pytest.raises(InputError, match="batch_size"):
        VolumeReportDataModule("r.csv", "root", batch_size=0)
    with pytest.raises(InputError, match="val_crop"):
        VolumeReportDataModule("r.csv", "root", val_crop="random")


def test_collate_keeps_lists_and_stacks_labels() -> None:
    samples = [{"image": torch.zeros(1, 4, 4, 2), "text": ["a", "b"], "label": torch.tensor([1.0, float("nan")]),
                "meta": {"VolumeName": "x"}},
               {"image": torch.ones(1, 4, 4, 2), "text": ["c"], "label": torch.tensor([0.0, 1.0]), "meta": {}}]
    batch = collate_volumes(samples)
    assert batch["image"].shape == (2, 1, 4, 4, 2) and batch["text"] == [["a", "b"], ["c"]]
    assert batch["label"].shape == (2, 2) and torch.isnan(batch["label"][0, 1])
