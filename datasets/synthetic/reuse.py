"""Reuse of an earlier generated synthetic benchmark, checked against the hashes in its ``benchmark.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from datasets.io import sha256_file

__all__ = ["intact_benchmark"]


def intact_benchmark(data_dir: Path, version: int = 1, seed: int = 0) -> dict[str, Any] | None:
    """The ``benchmark.json`` content of an intact earlier benchmark in ``data_dir``, or None when there is none.

    Args:
        data_dir: the benchmark folder.
        version: the generator version expected. Defaults to 1.
        seed: the generator seed expected. Defaults to 0.

    Raises:
        InputError: ``data_dir`` holds a benchmark of another version or seed, or a file whose SHA-256 differs from
            the one recorded at generation (the message names the files).
    """
    info_path = Path(data_dir) / "benchmark.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    changed = [name for name, digest in info.get("sha256", {}).items() if sha256_file(Path(data_dir) / name) != digest]
    if info.get("version") != version or info.get("seed") != seed or changed:
        raise InputError(
            f"{data_dir} holds a benchmark that is not an intact v{version} seed {seed} "
            f"({'changed files: ' + ', '.join(changed) if changed else 'version or seed differ'}); remove it"
        )
    return info
