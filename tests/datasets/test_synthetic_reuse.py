"""Reuse of a generated synthetic benchmark: only an intact one of the expected version and seed."""

from __future__ import annotations

import json

import pytest

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.synthetic.reuse import intact_benchmark, reuse_or_generate


def _benchmark(folder, version=1, seed=0):
    (folder / "labels.csv").write_text("Image Index,Finding Labels\na.png,No Finding\n")
    info = {"version": version, "seed": seed, "sha256": {"labels.csv": sha256_file(folder / "labels.csv")}}
    (folder / "benchmark.json").write_text(json.dumps(info))
    return info


def test_intact_benchmark_is_reused_and_a_missing_one_is_none(tmp_path):
    assert intact_benchmark(tmp_path) is None
    info = _benchmark(tmp_path)
    assert intact_benchmark(tmp_path) == info


def test_changed_file_or_other_version_is_refused_by_name(tmp_path):
    _benchmark(tmp_path)
    (tmp_path / "labels.csv").write_text("Image Index,Finding Labels\na.png,Mass\n")
    with pytest.raises(InputError, match="changed files: labels.csv"):
        intact_benchmark(tmp_path)
    _benchmark(tmp_path, seed=3)
    with pytest.raises(InputError, match="version or seed differ"):
        intact_benchmark(tmp_path)


def test_a_manifest_hash_alone_is_checked(tmp_path):
    """RefHL-Seg-style benchmarks record only the manifest's SHA-256."""
    (tmp_path / "manifest.csv").write_text("row_id,text\nr0,the larger lesion\n")
    digest = sha256_file(tmp_path / "manifest.csv")
    info = {"version": 1, "seed": 0, "manifest": "manifest.csv", "manifest_sha256": digest}
    (tmp_path / "benchmark.json").write_text(json.dumps(info))
    assert intact_benchmark(tmp_path) == info
    (tmp_path / "manifest.csv").unlink()
    with pytest.raises(InputError, match="changed files: manifest.csv"):
        intact_benchmark(tmp_path)


def test_reuse_or_generate_generates_only_when_absent(tmp_path):
    calls = []

    def generate(folder):
        calls.append(folder)
        folder.mkdir()
        return _benchmark(folder)

    first = reuse_or_generate(tmp_path / "bench", "test-bench", generate)
    assert reuse_or_generate(tmp_path / "bench", "test-bench", generate) == first
    assert calls == [tmp_path / "bench"]
