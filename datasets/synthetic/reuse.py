"""Reuse of an earlier generated synthetic benchmark, checked against the hashes in its ``benchmark.json``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from datasets.io import sha256_file

__all__ = ["intact_benchmark", "reuse_or_generate"]

logger = logging.getLogger(__name__)


def _recorded_hashes(info: dict[str, Any]) -> dict[str, str]:
    """File name -> SHA-256 recorded at generation: ``sha256`` (CXR, CT), or the manifest's (RefHL-Seg style)."""
    if "sha256" in info:
        return dict(info["sha256"])
    if "manifest_sha256" in info:
        return {info.get("manifest", "manifest.csv"): info["manifest_sha256"]}
    return {}


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
    changed = [
        name for name, digest in _recorded_hashes(info).items()
        if not (Path(data_dir) / name).is_file() or sha256_file(Path(data_dir) / name) != digest
    ]
    if info.get("version") != version or info.get("seed") != seed or changed:
        raise InputError(
            f"{data_dir} holds a benchmark that is not an intact v{version} seed {seed} "
            f"({'changed files: ' + ', '.join(changed) if changed else 'version or seed differ'}); remove it"
        )
    return info


def reuse_or_generate(data_dir: Path, name: str, generate: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Reuse the intact v1 seed-0 benchmark in ``data_dir`` or write it with ``generate(data_dir)``.

    Returns:
        The benchmark's ``benchmark.json`` content (plus timings when it was generated now).

    Raises:
        InputError: ``data_dir`` holds a benchmark that is not an intact v1 seed 0 (see :func:`intact_benchmark`).
    """
    info = intact_benchmark(data_dir)
    if info is not None:
        logger.info("reusing the %s benchmark v1 in %s", name, data_dir)
        return info
    logger.info("generating the %s benchmark v1 into %s", name, data_dir)
    return generate(data_dir)
