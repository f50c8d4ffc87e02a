"""Reuse of a generated synthetic benchmark: only an intact one of the expected version and seed."""

from __future__ import annotations

import json

import pytest

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.synthetic.reuse import intact_benchmark


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
