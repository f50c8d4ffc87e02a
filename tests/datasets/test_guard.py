"""The import guard: a foreign `datasets` package (Hugging Face's) must fail with an explanation, not silently."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    prefix = f"import sys; sys.path.insert(0, {str(extra_path)!r})\n" if extra_path else ""
    return subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(code)], capture_output=True, text=True)


def test_foreign_datasets_on_sys_path_raises_clear_error(tmp_path):
    foreign = tmp_path / "datasets"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("__version__ = '3.0.0'  # stands for Hugging Face datasets\n")
    result = _run("import lsms", extra_path=tmp_path)
    assert result.returncode != 0
    assert "DatasetsClashError" in result.stderr
    assert "not medvl's data layer" in result.stderr and "separate virtual environment" in result.stderr


def test_own_datasets_imports_cleanly():
    result = _run("import lsms, carzero, brgsa, datasets; print(datasets.__medvl_data_layer__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "medvl"


def test_hugging_face_files_mixed_into_our_folder_are_detected(tmp_path):
    from datasets.guard import DatasetsClashError, check_own_folder

    (tmp_path / "arrow_dataset.py").write_text("")
    with pytest.raises(DatasetsClashError, match="arrow_dataset.py"):
        check_own_folder([str(tmp_path)])
    check_own_folder([str(REPO / "datasets")])
