"""What every synthetic benchmark generator shares: its output folder, written whole or not at all, and its CLI basics.

:func:`write_benchmark_folder` writes a benchmark into a temporary folder beside ``--out`` and moves it into place
only once complete, so an interrupted run leaves no partial benchmark and an earlier one survives until the new one is
whole. :func:`add_generator_arguments` adds the options all ``python -m datasets.synthetic <name>`` commands take.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from datasets.errors import InputError
from datasets.io import apply_default_modes, ensure_writable_dir

__all__ = ["add_generator_arguments", "check_seed", "non_negative_int", "write_benchmark_folder"]

logger = logging.getLogger(__name__)


def non_negative_int(text: str) -> int:
    """argparse type of seeds and counts: a non-negative integer, or a clear argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def check_seed(seed: Any) -> None:
    """Raise :class:`InputError` unless ``seed`` is a non-negative ``int`` (``bool`` is refused)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed!r}")


def add_generator_arguments(
    parser: argparse.ArgumentParser, splits: Iterable[str], unit: str, defaults: Callable[[str], int]
) -> None:
    """Add ``--out``, ``--seed``, one ``--<split>-<unit>`` count per split, ``--overwrite`` and ``--verbose``.

    Args:
        parser: the generator's parser.
        splits: split names, e.g. ``("train", "val", "test")``.
        unit: what a split counts, plural (``"cases"``, ``"images"``, ``"volumes"``).
        defaults: the default count of a split (the frozen spec's).
    """
    parser.add_argument("--out", required=True, help="output folder (missing or empty, unless --overwrite)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    for split in splits:
        parser.add_argument(f"--{split}-{unit}", type=non_negative_int, default=defaults(split),
                            help=f"number of {split} {unit} (default: {defaults(split)})")
    parser.add_argument("--overwrite", action="store_true", help="replace a benchmark already in --out")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out} is not empty; pass --overwrite to replace a benchmark generated there")
        if not (out / "benchmark.json").is_file():
            raise InputError(
                f"refusing to overwrite {out}: it is not empty and holds no benchmark.json, so it was not written by "
                "this generator; choose an empty or new folder"
            )


def _install(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` onto ``out``, replacing an earlier benchmark only once ``tmp`` is complete."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def _remove_abandoned(parent: Path, name: str) -> None:
    """Delete the temporary folders of earlier runs for ``name`` whose process is gone (killed mid-write)."""
    for folder in parent.glob(f".{name}.tmp-*-*"):
        pid = folder.name[len(f".{name}.tmp-"):].split("-", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by a run that was killed while writing", folder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_benchmark_folder(
    out_dir: str | os.PathLike, overwrite: bool, write: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``write(folder)`` on a fresh folder beside ``out_dir`` and move the result onto ``out_dir``.

    Args:
        out_dir: output folder; must be missing or empty, unless ``overwrite`` (then it must hold a benchmark, i.e. a
            ``benchmark.json``).
        overwrite: replace an earlier benchmark in ``out_dir``.
        write: writes the whole benchmark into the folder it is given and returns its ``benchmark.json`` content.

    Returns:
        What ``write`` returned, plus ``seconds`` (wall time) and ``cpu_seconds``.

    Raises:
        InputError: ``out_dir`` is a file, or a non-empty folder without ``overwrite`` or without a benchmark.
    """
    out = Path(out_dir)
    _check_output(out, overwrite)
    parent = ensure_writable_dir(out.parent if str(out.parent) else ".")
    start, cpu = time.perf_counter(), time.process_time()
    _remove_abandoned(parent, out.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
    try:
        info = write(tmp)
        apply_default_modes(tmp)
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["seconds"] = round(time.perf_counter() - start, 1)
    info["cpu_seconds"] = round(time.process_time() - cpu, 1)
    return info
