"""``brgsa prepare``: fill the CT preprocessing cache in one parallel, resumable pass.

Usage::

    brgsa prepare --volumes CT-RATE/dataset/train --out cache/ --workers 8 \\
        --metadata CT-RATE/dataset/metadata/train_metadata.csv
    brgsa prepare --list train_reports.csv --volumes CT-RATE/dataset/train --out cache/ --config preprocessing.json
    brgsa prepare --volumes demo/ --out cache/ --spacing 3.5 3.5 7 --size 112 112 56 --crop-size 96 96 48
    brgsa prepare --volumes CT-RATE/dataset/valid --out cache/ --model runs/brgsa/model   # what zeroshot --cache reads

Volumes: with ``--volumes DIR`` alone, every ``.nii`` / ``.nii.gz`` file (and RAD-ChestCT ``.npz`` archive) under
DIR and every folder holding DICOM files (``.dcm`` or a ``DICM`` preamble) is one volume. ``--list CSV`` names them
instead: a ``path`` column (relative to the CSV's folder, or absolute), or a ``VolumeName`` column (any CT-RATE table:
labels, reports, metadata) resolved under ``--volumes`` with ``--layout``.

Each worker process handles one volume at a time (memory is bounded by one volume per worker, see
:mod:`datasets.ct_pipeline`); entries already in the cache are skipped, and entries are written atomically, so a
killed run resumes where it stopped. Workers exit within a second of their parent's death (even by SIGKILL) instead
of finishing their volume as orphans, and the temporary files of writes a kill cut short (older than an hour) are
removed at the next start. Bad volumes are listed (file and reason) at the end and in
``OUT/prepare_report.json``; they make the exit status 2 unless ``--skip-bad``. With ``--metadata``, a volume's
``VolumeName`` is its file name.

Entries are keyed by every deterministic preprocessing parameter, so a cache serves only runs with the parameters it
was filled with: ``--model`` fills it with a model folder's own (what ``brgsa zeroshot --cache`` reads for it).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets.cache import PreprocessCache
from datasets.cli_utils import setup_logging
from datasets.ct_pipeline import CTVolumePreprocessing, load_preprocessed, volume_cache_key
from datasets.errors import InputError, MissingDependencyError
from datasets.io import atomic_write_text, ensure_writable_dir
from datasets.labels.base import read_csv_table
from datasets.labels.ctrate import CTRateGeometry, read_ctrate_metadata, volume_relpath

__all__ = ["REPORT_NAME", "find_volumes", "read_volume_list", "prepare_volumes", "build_parser", "main"]

logger = logging.getLogger(__name__)

REPORT_NAME = "prepare_report.json"
_VOLUME_FILE_SUFFIXES = (".nii", ".nii.gz", ".npz")  # NIfTI, RAD-ChestCT archives


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def find_volumes(root: str | os.PathLike) -> list[Path]:
    """Every NIfTI file and ``.npz`` archive under ``root`` and every folder directly holding DICOM files, sorted.

    Raises:
        InputError: ``root`` is not a folder, or holds no volume.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--volumes {root} is not a folder")
    volumes = []
    for folder, _, names in os.walk(root):
        others = []
        for name in sorted(names):
            (volumes if name.lower().endswith(_VOLUME_FILE_SUFFIXES) else others).append(Path(folder) / name)
        if any(_is_dicom(path) for path in others[:3]):
            volumes.append(Path(folder))
    if not volumes:
        raise InputError(f"{root} holds no volume: no .nii/.nii.gz file and no folder of DICOM files")
    return sorted(volumes)


def read_volume_list(path: str | os.PathLike, volume_root: str | None, layout: str) -> list[Path]:
    """Volume paths from a CSV with a ``path`` column, or a ``VolumeName`` column resolved under ``volume_root``.

    Raises:
        InputError: neither column, ``VolumeName`` without ``volume_root``, or a name not in CT-RATE's naming with
            the nested layout (file, row and column named).
    """
    path = Path(path)
    header, rows = read_csv_table(path)
    if "path" in header:
        return [path.parent / row.values["path"] for row in rows]
    if "VolumeName" not in header:
        raise InputError(f"{path}: expected a 'path' or a 'VolumeName' column; the header has {header}")
    if volume_root is None:
        raise InputError(f"{path} names volumes by VolumeName: give --volumes, the folder they are under")
    volumes = []
    for row in rows:
        try:
            volumes.append(Path(volume_root) / volume_relpath(row.values["VolumeName"], layout))
        except ValueError as err:
            raise InputError(f"{path}: row {row.number}, column 'VolumeName': {err}; or use --layout flat") from err
    return volumes


_PARENT_POLL_S = 1.0


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent:  # the parent died and this process was re-parented
            os._exit(1)


def _worker_init(parent: int) -> None:
    """Set up a worker; ``parent`` is the PID of the process that started the pool, passed in because the worker
    may only get here after that process died."""
    import threading

    import torch

    torch.set_num_threads(1)  # one volume per worker; N workers use N cores
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="parent-watch").start()


def _prepare_one(
    path: str, preprocessing: dict[str, Any], cache_dir: str, geometry: CTRateGeometry | None
) -> tuple[str, str | None]:
    """Compute and store one entry; returns ``(path, None)`` or ``(path, reason)`` for a bad volume."""
    try:
        load_preprocessed(path, CTVolumePreprocessing.from_dict(preprocessing), PreprocessCache(cache_dir), geometry)
    except (InputError, MissingDependencyError, OSError) as err:
        return path, " ".join(str(err).split())
    except Exception as err:  # a bug or an unforeseen file: report it, keep the other volumes going
        logger.debug("unexpected error on %s", path, exc_info=True)
        return path, f"unexpected {type(err).__name__}: {' '.join(str(err).split())} (please report this)"
    return path, None


def prepare_volumes(
    volumes: Sequence[Path],
    preprocessing: CTVolumePreprocessing,
    cache_dir: str | os.PathLike,
    workers: int = 1,
    geometry: dict[str, CTRateGeometry] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fill the cache with the deterministic preprocessing of ``volumes``, skipping entries already there.

    Args:
        volumes: NIfTI files or DICOM series folders.
        preprocessing: the parameters (their cache part selects the entries).
        cache_dir: the :class:`~datasets.cache.PreprocessCache` folder.
        workers: worker processes; 1 runs in this process. Defaults to 1.
        geometry: CT-RATE metadata by ``VolumeName`` (the file name). Defaults to None.
        progress: show a tqdm progress bar. Defaults to True.

    Returns:
        ``{"volumes", "computed", "cached", "bad": [{"path", "reason"}], "seconds", "removed_temporaries"}``.
    """
    cache = PreprocessCache(cache_dir)
    started = time.perf_counter()
    removed_temporaries = cache.remove_stale_temporaries()
    todo, cached, bad = [], 0, []
    for path in volumes:
        volume_geometry = (geometry or {}).get(path.name)
        if geometry is not None and volume_geometry is None:
            bad.append({"path": str(path), "reason": f"{path.name!r} is not in the --metadata table"})
            continue
        if not path.exists():
            bad.append({"path": str(path), "reason": "no such file or folder"})
            continue
        key = volume_cache_key(path, preprocessing, volume_geometry)
        if cache.has(key):
            cached += 1
        else:
            todo.append((str(path), volume_geometry))
    config = preprocessing.to_dict()
    bar = tqdm(total=len(todo), unit="vol", desc="prepare", disable=not progress, file=sys.stderr)
    results = []
    if workers <= 1:
        for path, volume_geometry in todo:
            results.append(_prepare_one(path, config, str(cache.folder), volume_geometry))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_prepare_one, p, config, str(cache.folder), g) for p, g in todo]
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    bad += [{"path": path, "reason": reason} for path, reason in results if reason is not None]
    bad.sort(key=lambda entry: entry["path"])
    computed = sum(reason is None for _, reason in results)
    return {
        "volumes": len(volumes), "computed": computed, "cached": cached, "bad": bad,
        "seconds": round(time.perf_counter() - started, 3), "removed_temporaries": removed_temporaries,
    }


def _preprocessing(options: argparse.Namespace) -> CTVolumePreprocessing:
    flags = {
        "spacing": options.spacing, "size": options.size, "crop_size": options.crop_size,
        "hu_range": options.hu_range,
    }
    given = {key: value for key, value in flags.items() if value is not None}
    if options.already_hu:
        given["already_hu"] = True
    from brgsa.pretrained import MODEL_TYPE, preprocessing_from_config

    if options.model and options.config:
        raise InputError("give --model or --config, not both")
    source = f"--model {options.model}" if options.model else f"--config {options.config}"
    if (options.model or options.config) and given:
        raise InputError(f"{source} cannot be combined with {sorted(given)}: it sets every option")
    if options.model:
        from datasets.pretrained import read_model_config

        return preprocessing_from_config(read_model_config(options.model, MODEL_TYPE)["preprocessing"])
    if options.config:
        try:
            data = json.loads(Path(options.config).read_text(encoding="utf-8-sig"))
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"--config {options.config}: not a readable JSON file: {err}") from err
        if isinstance(data, dict) and isinstance(data.get("preprocessing"), dict) and "model_type" in data:
            data = data["preprocessing"]  # a model folder's config.json
        if not isinstance(data, dict):
            raise InputError(f"--config {options.config}: expected a JSON object of preprocessing options")
        return preprocessing_from_config(data)
    return CTVolumePreprocessing(**given)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``brgsa prepare``."""
    parser = argparse.ArgumentParser(
        prog="brgsa prepare", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--volumes", help="folder of volumes (searched recursively), or the root of --list names")
    parser.add_argument("--list", type=Path, help="CSV naming the volumes: a 'path' or a 'VolumeName' column")
    parser.add_argument("--layout", choices=("nested", "flat"), default="nested", help="CT-RATE folder layout")
    parser.add_argument("--out", required=True, type=Path, help="cache folder")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--model", help="BrgSA model folder: fill the cache its zeroshot runs read (its preprocessing)")
    parser.add_argument("--config", type=Path,
                        help="preprocessing JSON (CTVolumePreprocessing.to_dict(), or a model folder's config.json)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), help="mm (default 1.5 1.5 3)")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="default 256 256 128")
    parser.add_argument("--crop-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="default 224 224 112")
    parser.add_argument("--hu-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="default -1000 1000")
    parser.add_argument("--already-hu", action="store_true", help="stored values are HU (CT-RATE v2)")
    parser.add_argument("--metadata", type=Path, help="CT-RATE *_metadata.csv: spacing and rescale per VolumeName")
    parser.add_argument("--skip-bad", action="store_true", help="exit 0 despite bad volumes (listed in the report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(args: list[str]) -> int:
    """Run ``brgsa prepare`` on the argument list (without the subcommand name); returns the exit status."""
    options = build_parser().parse_args(args)
    setup_logging()
    if options.workers < 1:
        raise InputError(f"--workers must be >= 1, got {options.workers}")
    preprocessing = _preprocessing(options)
    if options.list is not None:
        volumes = read_volume_list(options.list, options.volumes, options.layout)
    elif options.volumes is not None:
        volumes = find_volumes(options.volumes)
    else:
        raise InputError("give --volumes DIR or --list CSV")
    out = ensure_writable_dir(options.out)
    geometry = read_ctrate_metadata(options.metadata) if options.metadata else None
    summary = prepare_volumes(volumes, preprocessing, out, options.workers, geometry, not options.no_progress)
    report = {"command": "brgsa prepare", "arguments": list(args), "preprocessing": preprocessing.to_dict(), **summary}
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=2))
    rate = summary["computed"] / summary["seconds"] if summary["seconds"] else 0.0
    print(
        f"prepared {summary['volumes']} volumes in {summary['seconds']:.1f} s: {summary['computed']} computed "
        f"({rate:.2f}/s), {summary['cached']} already cached, {len(summary['bad'])} bad; report {out / REPORT_NAME}"
    )
    for entry in summary["bad"]:
        print(f"brgsa prepare: error: bad volume {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 2 if summary["bad"] and not options.skip_bad else 0
