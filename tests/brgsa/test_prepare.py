"""Tests of ``brgsa prepare`` on tiny NIfTI volumes and pydicom's CT5N DICOM series."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # an exited orphan may stay a zombie where PID 1 does not reap


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from Linux /proc")
def test_workers_exit_when_prepare_is_killed_and_stale_temporaries_are_removed(tmp_path: Path) -> None:
    """A SIGKILLed parent cannot shut its pool down; its workers must notice and exit rather than live on."""
    root = tmp_path / "volumes"
    rng = np.random.default_rng(0)
    for i in range(40):
        hu = rng.integers(-1000, 1000, (160, 160, 80)).astype(np.int16)
        save_nifti(hu, np.diag([1.0, 1.0, 1.5, 1.0]), root / f"vol{i:02d}.nii.gz")
    cache = tmp_path / "cache"
    stale = cache / "ab" / ".abcdef.npz.Xy12.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half an entry")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = cache / "ab" / ".abcdef.json.Zq34.tmp"  # a write that may still be in progress elsewhere
    fresh.write_bytes(b"{")

    script = Path(sys.executable).with_name("brgsa")
    process = subprocess.Popen([str(script), "prepare", "--volumes", str(root), "--out", str(cache), "--workers", "2",
                                "--no-progress", *TINY_FLAGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = [pid for pid in _children(process.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline")
                       .read_bytes().decode(errors="replace")]
        while not _entries(cache) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the workers are busy with volumes
        assert process.poll() is None and len(workers) == 2, "prepare ended before it could be killed; make it longer"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers), "workers outlived the killed prepare"
    finally:
        process.kill()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert not stale.exists() and fresh.exists()
