"""Tests of ``brgsa prepare`` on tiny NIfTI volumes and pydicom's CT5N DICOM series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from brgsa.cli import main as brgsa_main
from brgsa.prepare import REPORT_NAME, find_volumes, prepare_volumes
from datasets.cache import PreprocessCache
from datasets.ct_pipeline import CTVolumePreprocessing, load_preprocessed
from datasets.nifti import save_nifti

CT5N = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
TINY = CTVolumePreprocessing(spacing=(3.0, 3.0, 4.0), size=(32, 32, 16), crop_size=(24, 24, 12), mean_std=None)
TINY_FLAGS = ["--spacing", "3", "3", "4", "--size", "32", "32", "16", "--crop-size", "24", "24", "12"]


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.json"))


@pytest.fixture
def volume_dir(tmp_path: Path) -> Path:
    root = tmp_path / "volumes"
    rng = np.random.default_rng(0)
    for i in range(3):
        hu = rng.integers(-1000, 1000, (40, 40, 20)).astype(np.int16)
        save_nifti(hu, np.diag([2.0, 2.0, 3.0, 1.0]), root / f"sub{i % 2}" / f"vol{i}.nii.gz")
    shutil.copytree(CT5N, root / "series")
    return root


def test_find_volumes_lists_nifti_files_and_dicom_folders(volume_dir: Path) -> None:
    found = [path.relative_to(volume_dir).as_posix() for path in find_volumes(volume_dir)]
    assert found == ["series", "sub0/vol0.nii.gz", "sub0/vol2.nii.gz", "sub1/vol1.nii.gz"]


def test_prepare_is_resumable_and_reports_bad_files(volume_dir: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    args = ["prepare", "--volumes", str(volume_dir), "--out", str(cache), "--no-progress", *TINY_FLAGS]
    assert brgsa_main(args) == 0
    assert "prepared 4 volumes" in capsys.readouterr().out
    assert len(_entries(cache)) == 4
    report = json.loads((cache / REPORT_NAME).read_text())
    assert (report["computed"], report["cached"], report["bad"]) == (4, 0, [])
    assert CTVolumePreprocessing.from_dict(report["preprocessing"]).cache_config() == TINY.cache_config()

    (volume_dir / "broken.nii.gz").write_bytes(b"not a nifti at all")
    save_nifti(np.zeros((40, 40), np.int16), np.eye(4), volume_dir / "flat.nii.gz")
    assert brgsa_main(args) == 2
    captured = capsys.readouterr()
    assert "4 already cached" in captured.out and "0 computed" in captured.out
    assert "broken.nii.gz" in captured.err and "flat.nii.gz" in captured.err and "2D image" in captured.err
    report = json.loads((cache / REPORT_NAME).read_text())
    assert (report["computed"], report["cached"]) == (0, 4)
    assert [Path(entry["path"]).name for entry in report["bad"]] == ["broken.nii.gz", "flat.nii.gz"]
    assert len(_entries(cache)) == 4
    assert brgsa_main([*args, "--skip-bad"]) == 0

    # what prepare stored is what the data loader reads: no recomputation
    reader = PreprocessCache(cache)
    hu, _ = load_preprocessed(volume_dir / "sub1" / "vol1.nii.gz", TINY, reader)
    assert (reader.hits, reader.computations, hu.shape) == (1, 0, (32, 32, 16))
    series, meta = load_preprocessed(volume_dir / "series", TINY, reader)
    assert reader.hits == 2 and meta["source"] == str(volume_dir / "series")


def test_parallel_workers_match_a_serial_run(volume_dir: Path, tmp_path: Path) -> None:
    volumes = find_volumes(volume_dir)
    serial = prepare_volumes(volumes, TINY, tmp_path / "serial", workers=1, progress=False)
    parallel = prepare_volumes(volumes, TINY, tmp_path / "parallel", workers=2, progress=False)
    assert serial["computed"] == parallel["computed"] == 4
    for path in volumes:
        a, _ = load_preprocessed(path, TINY, PreprocessCache(tmp_path / "serial"))
        b, _ = load_preprocessed(path, TINY, PreprocessCache(tmp_path / "parallel"))
        np.testing.assert_array_equal(a, b)


def test_list_by_volume_name_with_metadata_and_a_spacing_change(tmp_path: Path, capsys) -> None:
    root = tmp_path / "valid"
    names = ["valid_1_a_1.nii.gz", "valid_1_a_2.nii.gz"]
    for name in names:
        patient, scan = name[:7], name[:9]
        save_nifti(np.full((40, 40, 20), 1000, np.int16), np.eye(4), root / patient / scan / name)
    table = tmp_path / "metadata.csv"
    table.write_text(
        "VolumeName,XYSpacing,ZSpacing,RescaleSlope,RescaleIntercept\n"
        + "".join(f'{name},"[2.0, 2.0]",3.0,1,-1024\n' for name in names)
    )
    cache = tmp_path / "cache"
    base = ["prepare", "--list", str(table), "--volumes", str(root), "--out", str(cache), "--no-progress",
            "--metadata", str(table)]
    assert brgsa_main([*base, *TINY_FLAGS]) == 0
    assert len(_entries(cache)) == 2
    config = tmp_path / "pre.json"
    config.write_text(json.dumps({**TINY.to_dict(), "spacing": [2.5, 2.5, 4.0]}))
    assert brgsa_main([*base, "--config", str(config)]) == 0
    assert "2 computed" in capsys.readouterr().out and len(_entries(cache)) == 4


def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert brgsa_main(["prepare", "--out", str(tmp_path / "c")]) == 2
    assert "give --volumes DIR or --list CSV" in capsys.readouterr().err
    assert brgsa_main(["prepare", "--volumes", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "holds no volume" in capsys.readouterr().err
    config = tmp_path / "pre.json"
    config.write_text(json.dumps({"spacing": [1, 1, 1], "window": [0, 1]}))
    args = ["prepare", "--volumes", str(tmp_path), "--out", str(tmp_path / "c"), "--config", str(config)]
    assert brgsa_main(args) == 2
    assert "unknown CT preprocessing option" in capsys.readouterr().err
