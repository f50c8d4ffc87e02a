"""`python -m datasets check`: every planted problem reported with row and reason in one run; filtered output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from datasets.__main__ import main
from datasets.nifti import save_nifti
from datasets.refseg import REFSEG_COLUMNS, read_refseg_manifest, write_refseg_manifest

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _dicom(path, size=16):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 16, 16, 15, 1, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness, ds.RescaleSlope, ds.RescaleIntercept = [0.8, 0.8], 2.5, 1, -1024
    ds.PixelData = np.random.default_rng(0).integers(0, 1400, (size, size), dtype=np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _row(name, **changes):
    return {
        "row_id": name, "case_id": name, "split": "train", "image": "ct.nii.gz", "slice_index": 1, "mask": "seg.nii.gz",
        "mask_value": "", "lesion_id": "1", "text": "the lesion", "template_id": "t",
    } | changes


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.uniform(-300, 300, (20, 16, 4)).astype(np.float32)
    save_nifti(volume, AFFINE, tmp_path / "ct.nii.gz")
    labels = np.zeros((20, 16, 4), dtype=np.uint8)
    labels[3:9, 3:9, 1] = 1
    save_nifti(labels, AFFINE, tmp_path / "seg.nii.gz")
    save_nifti(labels[:, :, :3], AFFINE, tmp_path / "seg_short.nii.gz")
    save_nifti(np.where(labels > 0, np.nan, volume), AFFINE, tmp_path / "nan.nii.gz")
    save_nifti(rng.uniform(-300, 300, (20, 16, 4)).astype(np.float32), AFFINE, tmp_path / "cut.nii.gz")
    data = (tmp_path / "cut.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    _dicom(tmp_path / "slice.dcm")
    data = (tmp_path / "slice.dcm").read_bytes()
    (tmp_path / "slice.dcm").write_bytes(data[:-200])
    save_nifti(np.ones((16, 16, 1), np.uint8), np.diag([-0.8, -0.8, 2.5, 1.0]), tmp_path / "seg_dcm.nii.gz")
    return tmp_path


PLANTED = [
    _row("good"),
    _row("missing", image="nowhere.nii.gz"),
    _row("dicom", image="slice.dcm", slice_index=0, mask="seg_dcm.nii.gz"),
    _row("shape", mask="seg_short.nii.gz"),
    _row("notext", text=" "),
    _row("nan", image="nan.nii.gz"),
    _row("cut", image="cut.nii.gz"),
    _row("split", split="training"),
    _row("range", slice_index=4),
    _row("empty", slice_index=2),
]


def _run(args, capsys):
    status = main(args)
    return status, capsys.readouterr().out


def _line(output: str, manifest: str, where: str, reason: str) -> bool:
    """Whether a printed problem starts with the manifest and its row, like the reader's, and gives the reason."""
    return any(line.startswith(f"{manifest} {where}") and reason in line for line in output.splitlines())


def test_every_planted_problem_in_one_run(folder, capsys):
    header = [name for name in REFSEG_COLUMNS if name != "template_id"]
    with open(folder / "m.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in PLANTED:
            writer.writerow([{"format_version": "refseg-1", **row}[name] for name in header])

    status, quick = _run(["check", str(folder / "m.csv"), "--quick", "--report", str(folder / "quick.json")], capsys)
    assert status == 2
    assert "column 'template_id': missing column 'template_id'" in quick
    manifest = str(folder / "m.csv")
    assert _line(quick, manifest, "row 3 (row_id 'missing'), column 'image': ", "file not found")
    assert _line(quick, manifest, "row 4 (row_id 'dicom'), column 'image': ", "pixel data truncated")
    assert _line(quick, manifest, "row 5 (row_id 'shape'), column 'mask': ",
                 "mask shape (20, 16, 3) does not match the image shape (20, 16, 4)")
    assert "row 6 (row_id 'notext'), column 'text': is empty" in quick
    assert "row 9 (row_id 'split'), column 'split': got 'training'" in quick
    assert _line(quick, manifest, "row 10 (row_id 'range'), column 'slice_index': ", "slice_index 4 is out of range")
    assert "row 2 " not in quick and "'nan'" not in quick and "'cut'" not in quick and "'empty'" not in quick
    report = json.loads((folder / "quick.json").read_text())
    assert report["mode"] == "quick" and report["rows"] == 10 and report["rows_with_problems"] == 6
    assert {"row": 3, "row_id": "missing", "column": "image"}.items() <= report["problems"][1].items()

    status, full = _run(["check", str(folder / "m.csv"), "--full", "--workers", "2"], capsys)
    assert status == 2
    assert _line(full, manifest, "row 7 (row_id 'nan'), column 'image': ", "image has 36 NaN/inf values")
    assert _line(full, manifest, "row 8 (row_id 'cut'), column 'image': ", "could not be read as NIfTI")
    assert _line(full, manifest, "row 11 (row_id 'empty'), column 'mask': ", "mask has no foreground at slice 2")
    assert "row 2 " not in full and "9 problem(s) in 9 of 10 rows" not in full and "in 9 of 10 rows" in full


def test_clean_manifest_exits_zero(folder, capsys):
    write_refseg_manifest(folder / "ok.csv", [_row("a"), _row("b", mask_value=1)])
    status, out = _run(["check", str(folder / "ok.csv"), "--full"], capsys)
    assert status == 0 and "no problems in 2 rows" in out


def test_write_filtered_keeps_only_good_rows(folder, capsys):
    write_refseg_manifest(folder / "m.csv", PLANTED)
    (folder / "out").mkdir()
    out = folder / "out" / "filtered.csv"
    status, text = _run(["check", str(folder / "m.csv"), "--full", "--write-filtered", str(out)], capsys)
    assert status == 2 and "1 of 10 rows kept" in text
    filtered = read_refseg_manifest(out)  # relative paths rewritten for the new folder
    assert [row.row_id for row in filtered] == ["good"]
    assert filtered.rows("train")[0].image.resolve() == folder / "ct.nii.gz"
    assert main(["check", str(out), "--full"]) == 0


def test_bad_arguments_exit_two_with_one_line(folder, capsys):
    assert main(["check", str(folder / "absent.csv")]) == 2
    assert capsys.readouterr().err.strip().startswith("python -m datasets: error:")
    write_refseg_manifest(folder / "ok.csv", [_row("a")])
    assert main(["check", str(folder / "ok.csv"), "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    before = (folder / "ok.csv").read_bytes()
    for outputs in (["--report", "same.csv", "--write-filtered", "same.csv"], ["--write-filtered", "ok.csv"]):
        outputs = [str(folder / name) if name.endswith(".csv") else name for name in outputs]
        assert main(["check", str(folder / "ok.csv"), *outputs]) == 2
        assert "three different files" in capsys.readouterr().err
    assert (folder / "ok.csv").read_bytes() == before and not (folder / "same.csv").exists()
