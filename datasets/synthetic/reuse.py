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


def intact_benchmark(
    data_dir: Path, version: int = 1, seed: int = 0, spec: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``benchmark.json`` content of an intact earlier benchmark in ``data_dir``, or None when there is none.

    Args:
        data_dir: the benchmark folder.
        version: the generator version expected. Defaults to 1.
        seed: the generator seed expected. Defaults to 0.
        spec: the frozen specification (``spec.to_dict()``), compared with the ``generator.spec`` recorded at
            generation. A benchmark made with another specification (e.g. a smaller copy with other case counts, as
            tests write) is still served, with a warning naming the differing fields, and the returned content gets
            ``frozen_spec`` False so that results made on it say they are not v1 figures. Defaults to None.

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
    if spec is not None:
        expected = json.loads(json.dumps(spec))  # tuples as the JSON file holds them (lists)
        recorded = info.get("generator", {}).get("spec", {})
        differing = sorted(key for key in expected.keys() | recorded.keys() if expected.get(key) != recorded.get(key))
        info["frozen_spec"] = not differing
        if differing:
            logger.warning(
                "%s was generated with another specification than the frozen v%d (%s%s): results on it are not v%d "
                "figures", data_dir, version,
                ", ".join(f"{key} {recorded.get(key)!r}, frozen {expected.get(key)!r}" for key in differing[:5]),
                " ..." if len(differing) > 5 else "", version,
            )
    return info


def reuse_or_generate(
    data_dir: Path, name: str, generate: Callable[[Path], dict[str, Any]], spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Reuse the intact v1 seed-0 benchmark in ``data_dir`` or write it with ``generate(data_dir)``.

    ``spec`` (the frozen v1 specification, ``spec.to_dict()``) is compared with the reused benchmark's: the returned
    content carries ``frozen_spec`` (True for a generated one) so that results can say whether they are v1 figures.

    Returns:
        The benchmark's ``benchmark.json`` content (plus timings when it was generated now).

    Raises:
        InputError: ``data_dir`` holds a benchmark that is not an intact v1 seed 0 (see :func:`intact_benchmark`).
    """
    info = intact_benchmark(data_dir, spec=spec)
    if info is not None:
        logger.info("reusing the %s benchmark v1 in %s", name, data_dir)
        return info
    logger.info("generating the %s benchmark v1 into %s", name, data_dir)
    info = generate(data_dir)
    if spec is not None:
        info["frozen_spec"] = True
    return info
