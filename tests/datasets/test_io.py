"""Tests of the shared I/O utilities: atomic writes, the resumable row writer and code-free weight loading."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from datasets.errors import InputError
from datasets.io import (
    ResumableRowWriter,
    atomic_write,
    atomic_write_text,
    check_run_fingerprint,
    ensure_writable_dir,
    load_weights,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half-written")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_gives_the_umask_mode_and_refuses_a_folder(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "shared.json", "{}")
        with open(tmp_path / "plain.json", "w") as handle:
            handle.write("{}")
    finally:
        os.umask(previous)
    mode = (tmp_path / "shared.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777  # as open() would, not mkstemp's 0600
    (tmp_path / "results").mkdir()
    with pytest.raises(InputError, match="results is a folder"):
        atomic_write_text(tmp_path / "results", "{}")


def test_model_and_benchmark_folders_get_the_umask_mode(tmp_path):
    from torch import nn

    from datasets.pretrained import save_model_folder
    from datasets.synthetic.output import write_benchmark_folder

    previous = os.umask(0o022)
    try:
        model = save_model_folder(tmp_path / "model", nn.Linear(2, 2), model_type="toy", model_config={},
                                  preprocessing={})
        bench = tmp_path / "bench"
        write_benchmark_folder(bench, False, lambda folder: (folder / "benchmark.json").write_text("{}") and {})
    finally:
        os.umask(previous)
    assert (model.stat().st_mode & 0o777, bench.stat().st_mode & 0o777) == (0o755, 0o755)  # mkdtemp alone: 0700
    assert (model / "model.safetensors").stat().st_mode & 0o777 == 0o644  # safetensors alone: 0600


def test_run_fingerprint_pins_a_resumable_folder(tmp_path):
    check_run_fingerprint(tmp_path, {"model": "a", "threshold": 0.5, "size": (2, 3)})
    check_run_fingerprint(tmp_path, {"model": "a", "threshold": 0.5, "size": [2, 3]})  # the same run resumes
    with pytest.raises(InputError, match=r"differs in \['threshold'\]"):
        check_run_fingerprint(tmp_path, {"model": "a", "threshold": 0.9, "size": [2, 3]})
    assert (tmp_path / "run.json").read_text().count("0.5") == 1


def test_unwritable_output_folder_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"cannot create output folder .*deeper: .*/file is a file, not a folder"):
        ensure_writable_dir(blocker / "sub" / "deeper")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            ensure_writable_dir(locked)


def test_resumable_writer_skips_written_keys_and_drops_torn_line(tmp_path):
    path = tmp_path / "scores.csv"
    with ResumableRowWriter(path, ["image", "score"]) as out:
        out.write({"image": "a.png", "score": 0.1})
        out.write({"image": "b.png", "score": 0.2})
    with open(path, "a") as handle:  # a kill in the middle of the third row
        handle.write("c.png,0.")
    with ResumableRowWriter(path, ["image", "score"]) as out:
        assert len(out) == 2 and out.done("a.png") and not out.done("c.png")
        for image, score in [("a.png", 9.0), ("c.png", 0.3)]:
            if not out.done(image):
                out.write({"image": image, "score": score})
    assert path.read_text().splitlines() == ["image,score", "a.png,0.1", "b.png,0.2", "c.png,0.3"]


def test_resumable_writer_refuses_a_stored_row_with_other_pinned_values(tmp_path):
    path = tmp_path / "out.csv"
    with ResumableRowWriter(path, ["image", "input_sha256", "score"]) as out:
        out.write({"image": "a.png", "input_sha256": "aaa", "score": 0.1})
        out.write({"image": "b.png", "input_sha256": "bbb", "score": 0.2})
        assert out.done("b.png", {"input_sha256": "bbb"})  # a row written by this run is pinned too
    with ResumableRowWriter(path, ["image", "input_sha256", "score"]) as out:
        assert out.done("a.png", {"input_sha256": "aaa"}) and not out.done("c.png", {"input_sha256": "ccc"})
        with pytest.raises(InputError, match=r"out\.csv row 3 \(image 'b.png'\).*\['input_sha256'\].*'bbb'.*'b2'"):
            out.done("b.png", {"input_sha256": "b2"})
    assert path.read_text().splitlines() == ["image,input_sha256,score", "a.png,aaa,0.1", "b.png,bbb,0.2"]


def test_resumable_writer_refuses_other_columns(tmp_path):
    path = tmp_path / "scores.csv"
    with ResumableRowWriter(path, ["image", "score"]) as out:
        out.write({"image": "a.png", "score": 1})
    with pytest.raises(InputError, match="columns"):
        ResumableRowWriter(path, ["image", "prob"])


class _Payload:
    """Creates a marker folder when unpickled: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_load_weights_reads_tensors_and_refuses_code(tmp_path):
    from safetensors.torch import save_file

    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(weights, tmp_path / "model.safetensors")
    torch.save(weights, tmp_path / "model.pt")
    assert torch.equal(load_weights(tmp_path / "model.safetensors")["w"], weights["w"])
    assert torch.equal(load_weights(tmp_path / "model.pt")["w"], weights["w"])

    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {"w": weights["w"]}, "payload": _Payload(marker)}, tmp_path / "evil.ckpt")  # zip format
    with pytest.raises(InputError, match="evil.ckpt"):
        load_weights(tmp_path / "evil.ckpt")
    with open(tmp_path / "legacy.ckpt", "wb") as handle:  # the pre-zip pickle format
        pickle.dump({"state_dict": _Payload(marker)}, handle)
    with pytest.raises(InputError, match="legacy.ckpt"):
        load_weights(tmp_path / "legacy.ckpt")
    assert not marker.exists()
    (tmp_path / "truncated.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:20])
    with pytest.raises(InputError, match="truncated.safetensors"):
        load_weights(tmp_path / "truncated.safetensors")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.pt")


def test_a_benchmark_write_removes_temporary_folders_of_killed_runs_only(tmp_path):
    import subprocess

    from datasets.synthetic.output import write_benchmark_folder

    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = tmp_path / f".bench.tmp-{dead.pid}-abc123"  # a run killed mid-write
    running = tmp_path / f".bench.tmp-{os.getpid()}-def456"  # a run still writing
    for folder in (abandoned, running):
        (folder / "images").mkdir(parents=True)
    write_benchmark_folder(tmp_path / "bench", False, lambda out: (out / "benchmark.json").write_text("{}") and {})
    assert not abandoned.exists() and running.is_dir() and (tmp_path / "bench" / "benchmark.json").is_file()
