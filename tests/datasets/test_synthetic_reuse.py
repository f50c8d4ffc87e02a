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


def test_a_benchmark_made_with_another_spec_is_marked_and_its_figures_kept_out_of_the_readme(
    tmp_path, caplog, monkeypatch
):
    """A smaller copy (as tests write) is served, but says it is not the frozen v1, and readme_tables refuses it."""
    from dataclasses import replace

    from datasets.synthetic.refhl import generate_refhl
    from datasets.synthetic.spec import REFHL_V1

    small = replace(REFHL_V1, train_cases=2, val_cases=1, test_cases=1)
    generate_refhl(tmp_path / "bench", small, seed=0)
    with caplog.at_level("WARNING", logger="datasets.synthetic.reuse"):
        info = intact_benchmark(tmp_path / "bench", spec=REFHL_V1.to_dict())
    assert info["frozen_spec"] is False
    assert "train_cases 2, frozen 120" in caplog.text and "not v1 figures" in caplog.text
    assert intact_benchmark(tmp_path / "bench", spec=small.to_dict())["frozen_spec"] is True

    import scripts.readme_tables as tables

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "lsms_demo.json").write_text(json.dumps({"benchmark": {"frozen_spec": False}}))
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="another specification than the frozen one"):
        tables.render("lsms-demo")
