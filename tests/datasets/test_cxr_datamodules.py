"""Tests of the radiograph preprocessing and the image-report / zero-shot DataModules on a tiny synthetic-cxr set."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.cxr_transforms import CXRPreprocessing
from datasets.errors import InputError
from datasets.labels.chestxray14 import read_data_entry, read_image_list
from datasets.pairs_datamodule import CXRDataset, ImageReportDataModule
from datasets.report_text.sentences import split_sentences
from datasets.synthetic.cxr import generate_cxr
from datasets.synthetic.cxr_spec import CXR_V1, FINDINGS
from datasets.zeroshot_datamodule import ZeroShotDataModule


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synthetic-cxr"
    generate_cxr(out, replace(CXR_V1, train_images=6, val_images=3, test_images=5), seed=3)
    return out


def test_preprocessing_shapes_json_and_augmentation():
    pre = CXRPreprocessing(image_size=32, channels=3, rotate_deg=5.0, translate=0.05, intensity_jitter=0.1)
    array = np.random.default_rng(0).random((50, 40), dtype=np.float32) * 1000
    plain = pre(array)
    assert plain.shape == (3, 32, 32) and plain.dtype == torch.float32
    assert torch.equal(plain[0], plain[2])
    unit = plain * pre.std + pre.mean
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
    assert CXRPreprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    a, b = pre(array, torch.Generator().manual_seed(1)), pre(array, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, plain)
    assert not CXRPreprocessing().flip_lr
    with pytest.raises(ValueError, match="unknown CXRPreprocessing option"):
        CXRPreprocessing.from_dict({"image_size": 32, "flip": True})
    with pytest.raises(ValueError, match="image_size"):
        CXRPreprocessing(image_size=2)


def test_released_pad_crop_keeps_the_aspect_ratio_and_scales_by_the_bit_range():
    """CARZero's release: longest side to 256, even zero padding, centre crop 224; 8-bit reading (nominal range)."""
    pre = CXRPreprocessing(image_size=56, channels=1, mean=0.0, std=1.0, resize="pad_crop", load_size=64,
                           intensity="range")
    tall = np.full((100, 50), 16383.0, dtype=np.float32)  # a 16-bit file at a quarter of its range
    image = pre(tall, value_range=(0.0, 65535.0))[0]  # (56, 56)
    # resized to 64 x 32, padded 16 + 16 columns, centre crop drops 4 on each side: 12 zero columns each side
    assert image.shape == (56, 56)
    assert torch.all(image[:, :12] == 0) and torch.all(image[:, -12:] == 0)
    np.testing.assert_allclose(image[:, 12:44], 16383 / 65535, atol=1e-6)
    minmax = CXRPreprocessing(image_size=56, channels=1, mean=0.0, std=1.0, resize="pad_crop", load_size=64)
    assert torch.all(minmax(tall)[0] == 0)  # a constant image min-max scales to 0: the range mode keeps its level
    crops = {tuple(pre(tall + np.arange(50, dtype=np.float32), torch.Generator().manual_seed(seed),
                       value_range=(0.0, 65535.0))[0, 0, :].nonzero()[[0, -1], 0].tolist()) for seed in range(6)}
    assert len(crops) > 1  # training crops move
    with pytest.raises(ValueError, match="pass value_range"):
        pre(tall)
    with pytest.raises(ValueError, match=r"load_size \(32\) must be >= image_size \(56\)"):
        CXRPreprocessing(image_size=56, resize="pad_crop", load_size=32)
    with pytest.raises(ValueError, match="resize must be one of"):
        CXRPreprocessing(resize="crop")
    released = CXRPreprocessing.released_carzero()
    assert (released.image_size, released.load_size, released.resize, released.intensity) == (
        224, 256, "pad_crop", "range")


def test_dataset_reads_the_files_bit_range_for_range_intensity(bench, tmp_path):
    from PIL import Image

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16)).save(path)
    pre = CXRPreprocessing(image_size=32, channels=1, mean=0.0, std=1.0, intensity="range")
    image = CXRDataset([path], pre)[0]["image"]
    np.testing.assert_allclose(image, 32768 / 65535, atol=1e-6)


def test_image_report_batches(bench):
    data = ImageReportDataModule(str(bench / "reports.csv"), image_size=48, batch_size=4, rotate_deg=5.0, seed=1)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == torch.float32
    assert len(batch["text"]) == 4 and all(isinstance(t, str) and t for t in batch["text"])
    assert all(m["split"] == "train" for m in batch["meta"])
    val = next(iter(data.val_dataloader()))
    assert val["image"].shape == (3, 3, 48, 48) and "label" not in val
    again = ImageReportDataModule(str(bench / "reports.csv"), image_size=48, batch_size=4, rotate_deg=5.0, seed=1)
    again.setup("fit")
    batch_again = next(iter(again.train_dataloader()))
    assert batch_again["text"] == batch["text"] and torch.equal(batch_again["image"], batch["image"])
    impression = ImageReportDataModule(str(bench / "reports.csv"), section="impression", image_size=48)
    impression.setup("test")
    assert len(next(iter(impression.test_dataloader()))["text"]) == 5


def test_reports_without_the_section_are_skipped_when_asked(bench, tmp_path):
    lines = (bench / "reports.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = next(csv.reader([lines[1]]))
    cells[header.index("impression")] = ""
    with open(tmp_path / "reports.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, cells, *csv.reader(lines[2:])])
    strict = ImageReportDataModule(str(tmp_path / "reports.csv"), image_root=str(bench), section="impression")
    with pytest.raises(InputError, match=r"row 2, column 'impression': empty report text"):
        strict.setup("fit")
    data = ImageReportDataModule(str(tmp_path / "reports.csv"), image_root=str(bench), section="impression",
                                 image_size=32, skip_empty_reports=True)
    data.setup("fit")
    train = ImageReportDataModule(str(bench / "reports.csv"), section="impression", image_size=32)
    train.setup("fit")
    assert len(data.datasets["train"]) == len(train.datasets["train"]) - (cells[header.index("split")] == "train")


def test_sentence_sampling_serves_one_sentence_of_the_report(bench):
    data = ImageReportDataModule(str(bench / "reports.csv"), image_size=32, text_sampling="sentence", seed=2)
    data.setup("fit")
    train = data.datasets["train"]
    reports = train.texts
    pools = [split_sentences(report) for report in reports]
    assert any(len(pool) > 1 for pool in pools)
    drawn = [[train[i]["text"] for _ in range(12)] for i in range(len(train))]
    for pool, texts in zip(pools, drawn):
        assert set(texts) <= set(pool)  # a whole sentence of this image's report, never another image's
        if len(pool) > 1:
            assert len(set(texts)) > 1  # a new draw each time
    assert set(train.distinct_texts) == {sentence for pool in pools for sentence in pool}
    assert data.datasets["val"].sentences is None  # validation keeps whole reports
    whole = ImageReportDataModule(str(bench / "reports.csv"), image_size=32)
    whole.setup("fit")
    assert [whole.datasets["train"][i]["text"] for i in range(len(train))] == reports
    with pytest.raises(InputError, match="text_sampling"):
        ImageReportDataModule(str(bench / "reports.csv"), text_sampling="word")


def test_worker_seeding_is_reproducible(bench):
    def first_batch() -> torch.Tensor:
        data = ImageReportDataModule(str(bench / "reports.csv"), image_size=32, batch_size=6, num_workers=1,
                                     intensity_jitter=0.2, seed=5)
        data.setup("fit")
        return next(iter(data.train_dataloader()))["image"]

    assert torch.equal(first_batch(), first_batch())


def test_zero_shot_from_label_table_and_registry(bench):
    data = ZeroShotDataModule(labels=str(bench / "Data_Entry_2017.csv"), image_root=str(bench / "images"),
                              split_list=str(bench / "test_list.txt"), image_size=32, batch_size=8)
    assert data.class_names == list(FINDINGS)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (5, 3, 32, 32) and batch["label"].shape == (5, 14)
    assert batch["label"].dtype == torch.float32
    test_ids = read_image_list(bench / "test_list.txt")
    assert [m["image_id"] for m in batch["meta"]] == test_ids
    expected = read_data_entry(bench / "Data_Entry_2017.csv").select_images(test_ids).labels
    np.testing.assert_array_equal(batch["label"].numpy(), expected)
    registry = ZeroShotDataModule(benchmark="synthetic-cxr", data_root=str(bench.parent), check_counts=False,
                                  classes=["Effusion", "Cardiomegaly"], image_size=32, batch_size=20)
    registry.setup("test")
    batch = next(iter(registry.test_dataloader()))
    assert registry.class_names == ["Effusion", "Cardiomegaly"]
    assert batch["label"].shape == (len(test_ids), 2)  # the registry entry evaluates the test list
    assert registry.prompts is not None


def test_missing_images_name_the_id_and_folder(bench, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "images").mkdir()
    for name in ("Data_Entry_2017.csv", "reports.csv", "test_list.txt"):
        (broken / name).write_bytes((bench / name).read_bytes())
    present = sorted(p.name for p in (bench / "images").iterdir())
    for name in present[1:]:
        (broken / "images" / name).write_bytes((bench / "images" / name).read_bytes())
    data = ZeroShotDataModule(labels=str(broken / "Data_Entry_2017.csv"), image_root=str(broken / "images"))
    with pytest.raises(InputError, match=rf"1 image id\(s\).*{broken / 'images'}.*{present[0]}"):
        data.setup("validate")
    pairs = ImageReportDataModule(str(broken / "reports.csv"))
    with pytest.raises(InputError, match=rf"{broken}.*images/{present[0]}"):
        pairs.setup()


def test_ill_args(bench):
    with pytest.raises(InputError, match="either benchmark"):
        ZeroShotDataModule()
    with pytest.raises(InputError, match="available adapters"):
        ZeroShotDataModule(labels="x.csv", image_root="x", adapter="nope")
    with pytest.raises(InputError, match="batch_size"):
        ImageReportDataModule(str(bench / "reports.csv"), batch_size=0)
    with pytest.raises(InputError, match="not set up"):
        ImageReportDataModule(str(bench / "reports.csv")).train_dataloader()


def test_carzero_views_keep_only_the_chosen_training_views(bench, tmp_path):
    """The MIMIC config said "frontal views only" while every row, laterals included, was trained on."""
    from carzero.datamodule import CARZeroDataModule

    with open(bench / "reports.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    train = [row for row in rows if row["split"] == "train"]
    for row in train[::3]:
        row["view"] = "LATERAL"
    with open(tmp_path / "reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    common = dict(image_root=str(bench), val_labels=str(bench / "Data_Entry_2017.csv"),
                  val_image_root=str(bench / "images"), val_split_list=str(bench / "test_list.txt"),
                  prompt_file=str(Path(__file__).parents[2] / "configs" / "prompts" / "synthetic-cxr.txt"),
                  image_size=32)
    data = CARZeroDataModule(str(tmp_path / "reports.csv"), views=["PA", "AP"], **common)
    data.setup("fit")
    kept = data.pairs.datasets["train"]
    assert len(kept) == len(train) - len(train[::3])
    assert {meta["view"] for meta in kept.meta} <= {"PA", "AP"}  # no LATERAL row left
    with pytest.raises(InputError, match=r"no training row has a view in \['DX'\]; the views present are"):
        CARZeroDataModule(str(tmp_path / "reports.csv"), views=["DX"], **common).setup("fit")
