"""The refseg-1 manifest: validation errors that name row and column, and load_sample on real files."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.nifti import save_nifti
from datasets.refseg import REFSEG_COLUMNS, load_sample, read_refseg_manifest, write_refseg_manifest
from datasets.slices import SlicePreprocessing

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _files(folder):
    """A CT volume with two labelled lesions on slice 2, and a PNG image with its mask."""
    rng = np.random.default_rng(0)
    save_nifti(rng.uniform(-200, 200, (20, 16, 4)).astype(np.float32), AFFINE, folder / "ct.nii.gz")
    labels = np.zeros((20, 16, 4), dtype=np.uint8)
    labels[2:8, 3:9, 2] = 1
    labels[12:16, 10:14, 2] = 2
    save_nifti(labels, AFFINE, folder / "mask.nii.gz")
    Image.fromarray(rng.integers(0, 255, (24, 30), dtype=np.uint8)).save(folder / "x.png")
    png_mask = np.zeros((24, 30), dtype=np.uint8)
    png_mask[5:10, 5:12] = 255
    Image.fromarray(png_mask).save(folder / "x_mask.png")


def _row(name, **changes):
    row = {
        "row_id": name, "case_id": "case1", "split": "train", "image": "ct.nii.gz", "slice_index": 2,
        "mask": "mask.nii.gz", "mask_value": 1, "lesion_id": "L1", "text": "the lesion in the right lobe",
        "template_id": "t1", "site": "A",
    }
    return row | changes


def _manifest(folder, rows):
    _files(folder)
    return write_refseg_manifest(folder / "manifest.csv", rows, extra_columns=["site"])


def test_valid_manifest_reads_and_logs_hash(tmp_path, caplog):
    path = _manifest(tmp_path, [
        _row("r1"), _row("r2", mask_value="", text="both lesions"),
        _row("r3", case_id="case2", split="test", image="x.png", slice_index="", mask="x_mask.png", mask_value=""),
    ])
    with caplog.at_level(logging.INFO, logger="datasets.refseg"):
        manifest = read_refseg_manifest(path)
    assert len(manifest) == 3 and manifest.splits == {"train": 2, "test": 1}
    assert [row.row_id for row in manifest.rows("train")] == ["r1", "r2"]
    assert manifest.rows("val") == []
    assert manifest.sha256 == sha256_file(path) and manifest.sha256 in caplog.text and "3 rows" in caplog.text
    assert manifest.rows("test")[0].extra == {"site": "A"}
    with pytest.raises(InputError, match="unknown split 'training'"):
        manifest.rows("training")


def test_load_sample_volume_row_selects_the_lesion(tmp_path):
    manifest = read_refseg_manifest(_manifest(tmp_path, [_row("r1"), _row("r2", mask_value="")]))
    pre = SlicePreprocessing(image_size=32, context_slices=1)
    one, both = (load_sample(row, pre) for row in manifest.rows("train"))
    assert set(one) == {"image", "mask", "text", "label", "meta"}
    assert one["image"].shape == (3, 32, 32) and one["mask"].shape == (1, 32, 32)
    assert one["image"].dtype == one["mask"].dtype
    assert 0.0 <= float(one["image"].min()) and float(one["image"].max()) <= 1.0
    assert set(one["mask"].unique().tolist()) == {0.0, 1.0}
    assert 0 < one["mask"].sum() < both["mask"].sum()  # mask_value 1 is one of the two lesions
    assert one["label"] is None and one["text"] == "the lesion in the right lobe"
    meta = one["meta"]
    assert meta["row_id"] == "r1" and meta["case_id"] == "case1" and meta["slice_index"] == 2
    assert meta["stored_shape"] == [20, 16] and meta["extra"] == {"site": "A"}
    shifted = AFFINE.copy()
    shifted[2, 3] = 2 * 2.5  # slice 2 at 2.5 mm spacing
    assert np.allclose(meta["slice_affine"], shifted)
    assert meta["image"].endswith("ct.nii.gz") and meta["mask"].endswith("mask.nii.gz")


def test_load_sample_png_row(tmp_path):
    manifest = read_refseg_manifest(_manifest(tmp_path, [
        _row("r1", image="x.png", slice_index="", mask="x_mask.png", mask_value=""),
    ]))
    sample = load_sample(manifest.rows("train")[0], SlicePreprocessing(image_size=15))
    assert sample["image"].shape == (1, 15, 15) and sample["mask"].shape == (1, 15, 15)
    assert sample["meta"]["slice_affine"] is None and sample["meta"]["stored_shape"] == [24, 30]
    assert sample["mask"].sum() > 0


def test_mask_with_other_geometry_is_rejected_at_load(tmp_path):
    manifest_path = _manifest(tmp_path, [_row("r1", mask="other.nii.gz")])
    save_nifti(np.ones((20, 16, 4), np.uint8), np.diag([1.0, 1.0, 1.0, 1.0]), tmp_path / "other.nii.gz")
    row = read_refseg_manifest(manifest_path).rows("train")[0]
    with pytest.raises(InputError, match="affine does not match"):
        load_sample(row, SlicePreprocessing(image_size=16))


def test_out_of_range_slice_index_fails_at_load(tmp_path):
    row = read_refseg_manifest(_manifest(tmp_path, [_row("r1", slice_index=9)])).rows("train")[0]
    with pytest.raises(InputError, match=r"out of range.*\(manifest row 2, row_id 'r1'\)"):
        load_sample(row, SlicePreprocessing(image_size=16))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"split": "training"}, r"row 3 \(row_id 'r2'\), column 'split': got 'training', expected one of train"),
        ({"text": "  "}, r"row 3 \(row_id 'r2'\), column 'text': is empty"),
        ({"slice_index": "two"}, r"row 3 \(row_id 'r2'\), column 'slice_index': got 'two', expected an integer >= 0"),
        ({"slice_index": "-1"}, r"row 3 \(row_id 'r2'\), column 'slice_index'"),
        ({"split": "test"}, r"row 3 \(row_id 'r2'\), column 'split': case 'case1' is in split 'test' here but in "
                            r"'train' on row 2"),
        ({"row_id": "r1"}, r"row 3 \(row_id 'r1'\), column 'row_id': duplicate row_id; first used on row 2"),
        ({"image": "missing.nii.gz"}, r"row 3 \(row_id 'r2'\), column 'image': file not found"),
        ({"format_version": "refseg-0"}, r"column 'format_version': got 'refseg-0', expected 'refseg-1'"),
        ({"mask_value": "0"}, r"column 'mask_value': got '0', expected a non-zero integer"),
        ({"mask": "x_mask.png"}, r"column 'mask': 'x_mask.png' is not a valid mask for a nifti image"),
        ({"image": "x.png", "mask": "x_mask.png"}, r"column 'slice_index': got '2' for a 2D png image"),
    ],
)
def test_row_errors_name_file_row_and_column(tmp_path, changes, expected):
    path = _manifest(tmp_path, [_row("r1"), _row("r2", **changes)])
    with pytest.raises(InputError, match=expected) as info:
        read_refseg_manifest(path)
    assert str(path) in str(info.value)


def test_missing_column_is_named(tmp_path):
    _files(tmp_path)
    header = [name for name in REFSEG_COLUMNS if name != "text"]
    (tmp_path / "m.csv").write_text(",".join(header) + "\n" + ",".join(["refseg-1"] + ["x"] * (len(header) - 1)) + "\n")
    with pytest.raises(InputError, match="missing column 'text'"):
        read_refseg_manifest(tmp_path / "m.csv")


def test_all_problems_are_listed_at_once(tmp_path):
    path = _manifest(tmp_path, [_row("r1", split="dev"), _row("r2", text=""), _row("r3", slice_index="x")])
    with pytest.raises(InputError, match=r"\(3 problems\)") as info:
        read_refseg_manifest(path)
    assert "row 2" in str(info.value) and "row 3" in str(info.value) and "row 4" in str(info.value)


def test_an_unreadable_2d_image_names_the_types_read(tmp_path):
    from datasets.refseg import read_2d

    header = tmp_path / "scan.hdr"  # an Analyze header: neither a 2D picture nor a volume type we read
    header.write_bytes(b"\x5c\x01\x00\x00" + bytes(344))
    with pytest.raises(InputError, match=r"scan\.hdr is not a readable 2D image .*NIfTI as \.nii or \.nii\.gz"):
        read_2d(header)


def test_a_table_of_another_format_is_named_in_one_short_message(tmp_path):
    """A pairs-1 manifest was reported as ten repeated per-row problems "and 24 more"."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("format_version,image,findings,impression,view,split,subject_id,study_id\n"
                     + "".join(f"pairs-1,img{i}.png,Effusion.,,PA,train,{i},{i}\n" for i in range(30)),
                     encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_refseg_manifest(pairs)
    message = str(caught.value)
    assert "is a pairs-1 table (its format_version column), not a refseg-1" in message and len(message) < 400
