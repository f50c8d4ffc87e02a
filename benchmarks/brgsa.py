"""Benchmark of the BrgSA 3D CT data pipeline at demo sizes; prints a table (not a test).

Writes synthetic int16 NIfTI volumes (default 128x128x64 at 3x3x6 mm, uncompressed, a body-like ellipse plus noise)
to a temporary folder and measures, with :data:`datasets.ct_pipeline.DEMO_PREPROCESSING` (96x96x48 random crops of
112x112x56 volumes):

1. volumes/s through the pipeline, cold (read, reorient, resample, crop/pad, clip, write the cache; one process,
   ``brgsa prepare``'s code path) and cached (read the cache, scale, random crop);
2. data-loader peak memory iterating once over the first 20 and over all 200 volumes with a cold cache
   (:class:`~datasets.volume_datamodule.VolumeZeroShotDataModule`, batch 2), each in a fresh subprocess: psutil is
   not installed here, so the figure is ``resource.getrusage`` ``ru_maxrss`` (peak resident set size) of that
   subprocess (``RUSAGE_SELF``; with workers also the largest worker's, ``RUSAGE_CHILDREN``), imports included;
3. the time of one demo training step (BrgSA ``DEMO_CONFIG``, B=2, AdamW, forward + backward) when ``brgsa.model``
   and its offline text encoder load.

Run: ``python benchmarks/brgsa.py`` (about 4 minutes on two busy CPU cores). Options: ``--volumes``, ``--shape``,
``--workers``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brgsa.prepare import prepare_volumes  # noqa: E402
from datasets.cache import PreprocessCache  # noqa: E402
from datasets.ct_pipeline import DEMO_PREPROCESSING, load_preprocessed, to_model_input  # noqa: E402
from datasets.labels.ctrate import CLASSES  # noqa: E402
from datasets.nifti import save_nifti  # noqa: E402
from datasets.volume_datamodule import VolumeZeroShotDataModule  # noqa: E402

SPACING_MM = (3.0, 3.0, 6.0)


def write_volumes(folder: Path, count: int, shape: tuple[int, int, int]) -> list[Path]:
    """``count`` synthetic volumes plus a CT-RATE-format label CSV (flat layout) in ``folder``."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = ((x / 0.85) ** 2 + (y / 0.65) ** 2 < 1)[:, :, None]
    paths = []
    for i in range(count):
        hu = np.where(body, 40, -1000) + rng.normal(0, 20, shape)
        paths.append(save_nifti(hu.astype(np.int16), np.diag([*SPACING_MM, 1.0]), folder / f"vol_{i:04d}.nii"))
    lines = ["VolumeName," + ",".join(CLASSES)]
    lines += [f"{p.name}," + ",".join(str(v) for v in rng.integers(0, 2, len(CLASSES))) for p in paths]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return paths


def throughput(paths: list[Path], cache_dir: Path) -> tuple[float, float]:
    """Volumes/s cold (computing and caching) and cached (cache read, scaling and random crop)."""
    started = time.perf_counter()
    summary = prepare_volumes(paths, DEMO_PREPROCESSING, cache_dir, workers=1, progress=False)
    cold = summary["computed"] / (time.perf_counter() - started)
    cache = PreprocessCache(cache_dir)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for path in paths:
        hu, _ = load_preprocessed(path, DEMO_PREPROCESSING, cache)
        to_model_input(hu, DEMO_PREPROCESSING, "random", generator)
    cached = len(paths) / (time.perf_counter() - started)
    if cache.computations:
        raise RuntimeError("the cached pass recomputed entries")
    return cold, cached


def measure_loader(folder: Path, count: int, workers: int) -> dict[str, float]:
    """Iterate a cold data loader over the first ``count`` volumes in this process; peak RSS in MiB."""
    labels = folder / f"labels_{count}.csv"
    labels.write_text("\n".join((folder / "labels.csv").read_text().splitlines()[: count + 1]) + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as cache_dir:
        data = VolumeZeroShotDataModule(
            labels=str(labels), volume_root=str(folder), layout="flat", preprocessing=DEMO_PREPROCESSING,
            cache_dir=cache_dir, batch_size=2, num_workers=workers,
        )
        data.setup("test")
        started = time.perf_counter()
        seen = sum(batch["image"].shape[0] for batch in data.test_dataloader())
        seconds = time.perf_counter() - started
    return {
        "volumes": seen, "seconds": seconds, "rss_before_mib": before,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def loader_in_subprocess(folder: Path, count: int, workers: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", str(folder), str(count), str(workers)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def training_step_seconds(folder: Path) -> str:
    """Mean seconds of a demo training step (after one warm-up step), or why it was skipped."""
    try:
        from brgsa.losses import BrgSALoss
        from brgsa.model import DEMO_CONFIG, BrgSA

        model = BrgSA(**DEMO_CONFIG)
    except Exception as err:  # a missing optional text encoder or dependency: report, do not fail the benchmark
        return f"skipped ({type(err).__name__}: {' '.join(str(err).split())[:100]})"
    loss_fn = BrgSALoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    labels = folder / "labels.csv"
    data = VolumeZeroShotDataModule(labels=str(labels), volume_root=str(folder), layout="flat",
                                    preprocessing=DEMO_PREPROCESSING, batch_size=2)
    data.setup("test")
    volumes = next(iter(data.test_dataloader()))["image"]  # (2, 1, 96, 96, 48)
    texts = ["There is emphysema. No pleural effusion.", "The heart is normal in size."]
    times = []
    for _ in range(4):
        started = time.perf_counter()
        out = model(volumes, texts)
        loss = loss_fn(out.image_embeds, out.text_embeds, out.image_embeds_hat, out.text_embeds_hat)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return f"{np.mean(times[1:]):.3f} s (B=2, {tuple(volumes.shape[2:])}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, nargs=2, default=(20, 200), metavar=("SMALL", "LARGE"))
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 64))
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers of the second memory run")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        folder, count, workers = options.measure
        print(json.dumps(measure_loader(Path(folder), int(count), int(workers))))
        return
    small, large = options.volumes
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "volumes"
        started = time.perf_counter()
        paths = write_volumes(folder, large, tuple(options.shape))
        print(f"wrote {large} volumes {tuple(options.shape)} int16 in {time.perf_counter() - started:.1f} s; "
              f"preprocessing {DEMO_PREPROCESSING.to_dict()}")
        cold, cached = throughput(paths[:small], Path(tmp) / "cache")
        rows = [("pipeline cold (compute + cache write)", f"{cold:.1f} volumes/s"),
                ("pipeline cached (read + scale + crop)", f"{cached:.1f} volumes/s")]
        peaks = {}
        for workers in (0, options.workers):
            for count in (small, large):
                m = loader_in_subprocess(folder, count, workers)
                peak = max(m["rss_peak_mib"], m["worker_peak_mib"])
                peaks[workers, count] = peak
                rows.append((
                    f"loader peak RSS, {count} volumes, {workers} workers",
                    f"{m['rss_peak_mib']:.0f} MiB main (after imports {m['rss_before_mib']:.0f}), "
                    f"{m['worker_peak_mib']:.0f} MiB largest worker; {m['volumes'] / m['seconds']:.1f} volumes/s",
                ))
        for workers in (0, options.workers):
            ratio = peaks[workers, large] / peaks[workers, small]
            verdict = "PASS" if ratio <= 1.10 and peaks[workers, large] < 4096 else "FAIL"
            target = f"{ratio:.3f} ({verdict}: <= 1.10 and < 4 GB)"
            rows.append((f"peak {large} / peak {small}, {workers} workers", target))
        rows.append(("demo training step", training_step_seconds(folder)))
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value\n{'-' * width}  {'-' * 60}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
