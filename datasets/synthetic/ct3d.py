"""Generator of the synthetic 3D chest CT benchmark "synthetic-ct3d" (BrgSA demo data), spec :data:`CT3D_V1`.

Small non-contrast chest CT volumes in HU with CT-RATE's 18 abnormalities drawn with distinct cues
(:mod:`datasets.synthetic.ct3d_lesions`), correlated through latent conditions (:mod:`~.ct3d_sampling`), reports in
CT-RATE's report-table format (:mod:`~.ct3d_reports`) and label/metadata tables in CT-RATE's formats. Splits are by
patient. As in CT-RATE, training volumes are named ``train_<patient>_<scan>_<reconstruction>.nii.gz`` and the
zero-shot test volumes ``valid_...``; ``splits.csv`` marks the patient-disjoint model-selection part of the training
files.

Output folder::

    DIR/
      volumes/<VolumeName>.nii.gz     int16 HU (X, Y, Z), LPS array order, voxel-to-RAS+ affine; all splits (flat)
      dataset_multi_abnormality_labels_train_predicted_labels.csv   train + val volumes (labels with label noise)
      dataset_multi_abnormality_labels_valid_predicted_labels.csv   the zero-shot TEST set
      train_metadata.csv, validation_metadata.csv                  CT-RATE metadata layout (44 columns)
      train_reports.csv, validation_reports.csv                    CT-RATE report-table layout
      splits.csv                      VolumeName, PatientID, split (train / val / test)
      drawn_findings.csv              every drawn finding with side, zone, size, severity, kind
      label_noise.csv                 every label cell that differs from the drawing
      benchmark.json, README.md

Command line (registered by the lead as ``python -m datasets.synthetic ct3d``)::

    python -m datasets.synthetic.ct3d --out data/synthetic-ct3d --seed 0
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from datasets.cli_utils import run_cli, setup_logging
from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.reports import CTRATE_REPORT_COLUMNS
from datasets.synthetic.ct3d_anatomy import sample_anatomy
from datasets.synthetic.ct3d_draw import Grid
from datasets.synthetic.ct3d_readme import readme
from datasets.synthetic.ct3d_render import reconstruct, render_scan
from datasets.synthetic.ct3d_reports import write_report
from datasets.synthetic.ct3d_sampling import flip_one_label, sample_findings, sample_patient
from datasets.synthetic.ct3d_spec import CT3D_SPLITS, CT3D_SUPPORTED_VERSIONS, CT3D_V1, FINDINGS, CT3DSpec
from datasets.synthetic.ct3d_tables import (
    METADATA_COLUMNS,
    Volume,
    csv_bytes,
    drawn_rows,
    label_rows,
    metadata_rows,
    noise_rows,
    report_rows,
)
from datasets.synthetic.output import add_generator_arguments, check_seed, write_benchmark_folder

__all__ = ["TABLES", "TEST_LABELS", "generate_ct3d", "build_parser", "main"]

logger = logging.getLogger(__name__)

TEST_LABELS = "dataset_multi_abnormality_labels_valid_predicted_labels.csv"
"""The zero-shot test set's label file (CT-RATE's validation split plays the test set, as for CT-CLIP and BrgSA)."""
TABLES = (
    "dataset_multi_abnormality_labels_train_predicted_labels.csv", TEST_LABELS, "train_metadata.csv",
    "validation_metadata.csv", "train_reports.csv", "validation_reports.csv", "splits.csv", "drawn_findings.csv",
    "label_noise.csv",
)
_PLAN, _PATIENT, _SCAN, _NOISE = 0, 1, 2, 3


def _plan(spec: CT3DSpec, seed: int) -> list[tuple[str, list[int]]]:
    """Per patient: ``(split, reconstructions per scan)``, split by split until each volume count is reached."""
    rng = np.random.default_rng([seed, _PLAN])
    patients = []
    for split in CT3D_SPLITS:
        left = spec.volumes(split)
        while left > 0:
            scans = []
            for _ in range(1 + int(rng.choice(2, p=spec.scans_per_patient_probs))):
                recons = min(left, 1 + int(rng.choice(2, p=spec.reconstructions_probs)))
                if recons:
                    scans.append(recons)
                    left -= recons
            patients.append((split, scans))
    return patients


def _names(plan: list[tuple[str, list[int]]], seed: int) -> list[str]:
    """Patient keys: ``train_<n>`` for train and val (shuffled together), ``valid_<n>`` for test."""
    rng = np.random.default_rng([seed, _PLAN, 1])
    keys = [""] * len(plan)
    training = [i for i, (split, _) in enumerate(plan) if split != "test"]
    for number, i in enumerate(rng.permutation(training)):
        keys[int(i)] = f"train_{number + 1}"
    for number, i in enumerate(i for i, (split, _) in enumerate(plan) if split == "test"):
        keys[i] = f"valid_{number + 1}"
    return keys


def _nifti_gz(array: np.ndarray, affine: np.ndarray, description: str) -> bytes:
    """Gzipped NIfTI-1 bytes, byte-identical for identical input (gzip mtime 0; level 1 for speed)."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description.encode("ascii")[:79]
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)


def _volumes(spec: CT3DSpec, seed: int, folder: Path) -> list[Volume]:
    """Sample, report, render and write every volume into ``folder``."""
    plan = _plan(spec, seed)
    volumes = []
    for index, ((split, scans), key) in enumerate(zip(plan, _names(plan, seed))):
        prng = np.random.default_rng([seed, _PATIENT, index])
        patient = sample_patient(prng)
        anatomy = sample_anatomy(prng, patient.sex, patient.age)
        for s, recons in enumerate(scans):
            rng = np.random.default_rng([seed, _SCAN, index, s])
            findings = sample_findings(rng, patient)
            labelled = frozenset(flip_one_label(rng, {f.name for f in findings}, spec.label_noise))
            report = write_report(findings, rng, spec.slice_spacing_mm, spec.negative_mention_prob, spec.negation_prob)
            spacing = float(np.round(rng.uniform(*spec.pixel_spacing_mm), 3))
            size = (spec.matrix, spec.matrix, spec.slices)
            origin = tuple(float(np.round(-(n - 1) / 2 * d + rng.uniform(-3, 3), 2))
                           for n, d in zip(size, (spacing, spacing, spec.slice_spacing_mm)))
            grid = Grid(size, (spacing, spacing, spec.slice_spacing_mm), origin)
            hu, body = render_scan(anatomy, findings, grid, rng)
            date = f"{2019 + s}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
            noise = rng.uniform(*spec.noise_sd_hu)
            for r in range(recons):
                kernel = ("SMOOTH", "SHARP")[r]
                name = f"{key}_{'ab'[s]}_{r + 1}.nii.gz"
                sd = noise * (spec.sharp_noise_factor if r else 1.0)
                array = reconstruct(hu, body, grid, sd, np.random.default_rng([seed, _NOISE, index, s, r]))
                tag = f"{spec.name} v{spec.version} seed {seed} {name}"
                (folder / name).write_bytes(_nifti_gz(array, grid.ras_affine(), tag))
                volumes.append(Volume(name, key, split, patient.sex, patient.age, kernel, grid, date, tuple(findings),
                                      labelled, report))
    return volumes


def _write(folder: Path, spec: CT3DSpec, seed: int) -> dict[str, Any]:
    (folder / "volumes").mkdir()
    volumes = _volumes(spec, seed, folder / "volumes")
    training = sorted((v for v in volumes if v.split != "test"), key=lambda v: v.name)
    test = sorted((v for v in volumes if v.split == "test"), key=lambda v: v.name)
    header = ("VolumeName", *FINDINGS)
    for part, rows in (("train", training), ("valid", test)):
        (folder / f"dataset_multi_abnormality_labels_{part}_predicted_labels.csv").write_bytes(
            csv_bytes(header, label_rows(rows)))
    for name, rows in (("train", training), ("validation", test)):
        (folder / f"{name}_metadata.csv").write_bytes(csv_bytes(METADATA_COLUMNS, metadata_rows(rows)))
        (folder / f"{name}_reports.csv").write_bytes(csv_bytes(CTRATE_REPORT_COLUMNS, report_rows(rows)))
    ordered = training + test
    (folder / "splits.csv").write_bytes(
        csv_bytes(("VolumeName", "PatientID", "split"), [[v.name, v.patient, v.split] for v in ordered]))
    (folder / "drawn_findings.csv").write_bytes(csv_bytes(
        ("VolumeName", "split", "finding", "side", "zone", "size_mm", "severity", "kind"), drawn_rows(ordered)))
    flips = noise_rows(ordered)
    (folder / "label_noise.csv").write_bytes(csv_bytes(("VolumeName", "finding", "drawn", "labelled"), flips))
    info = _info(spec, seed, ordered, flips, folder)
    (folder / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(readme(spec, info), encoding="utf-8")
    return info


def _info(spec: CT3DSpec, seed: int, volumes: list[Volume], flips: list, folder: Path) -> dict[str, Any]:
    splits = {}
    for split in CT3D_SPLITS:
        members = [v for v in volumes if v.split == split]
        splits[split] = {"volumes": len(members), "patients": len({v.patient for v in members}),
                         "scans": len({v.name.rsplit("_", 1)[0] for v in members})}
    n = max(len(volumes), 1)
    mentions = [m for v in volumes if v.name.endswith("_1.nii.gz") for m in v.report.mentions.values()]
    negative = [m for m in mentions if m != "positive"]
    return {
        "name": spec.name,
        "version": spec.version,
        "seed": seed,
        "generator": {"command": "python -m datasets.synthetic ct3d", "spec": spec.to_dict()},
        "classes": list(FINDINGS),
        "volumes": len(volumes),
        "splits": splits,
        "zero_shot_test_labels": TEST_LABELS,
        "prevalence": {name: round(sum(name in v.labelled for v in volumes) / n, 4) for name in FINDINGS},
        "prevalence_by_split": {
            split: {name: round(sum(name in v.labelled for v in volumes if v.split == split)
                                / max(splits[split]["volumes"], 1), 4) for name in FINDINGS}
            for split in CT3D_SPLITS
        },
        "no_finding_fraction": round(sum(not v.labelled for v in volumes) / n, 4),
        "label_noise": {"cells": len(flips), "volumes": len({row[0] for row in flips})},
        "reports": {"negative_mentions": len(negative),
                    "negation_fraction": round(sum(m == "negation" for m in negative) / max(len(negative), 1), 4)},
        "coordinates": "arrays in LPS order (axis 0 -> patient's left, 1 -> posterior, 2 -> superior); "
                       "affine voxel-to-RAS+ (NIfTI); metadata ImagePositionPatient in DICOM LPS+",
        "sha256": {name: sha256_file(folder / name) for name in TABLES},
    }


def generate_ct3d(out_dir: str | os.PathLike, spec: CT3DSpec = CT3D_V1, *, seed: int = 0, overwrite: bool = False
                  ) -> dict[str, Any]:
    """Generate the benchmark into ``out_dir`` (written beside it and moved into place only when complete).

    Args:
        out_dir: output folder; must be missing or empty, unless ``overwrite`` (then it must hold a benchmark).
        spec: generator parameters. Defaults to :data:`CT3D_V1`.
        seed: random seed; the same seed and spec give byte-identical files. Defaults to 0.
        overwrite: replace an earlier benchmark in ``out_dir``. Defaults to False.

    Returns:
        The content of ``benchmark.json`` plus ``seconds`` (wall time) and ``cpu_seconds``.

    Raises:
        InputError: a bad seed or output folder.
        ValueError: a spec version this generator does not implement.

    Example::

        info = generate_ct3d("data/synthetic-ct3d", seed=0)
        info["splits"]["test"]["volumes"]  # 100
    """
    if spec.version not in CT3D_SUPPORTED_VERSIONS:
        raise ValueError(f"spec version {spec.version} is not implemented; supported: {CT3D_SUPPORTED_VERSIONS}")
    check_seed(seed)
    info = write_benchmark_folder(out_dir, overwrite, lambda folder: _write(folder, spec, seed))
    logger.info("wrote %s v%d to %s in %.1f s", spec.name, spec.version, out_dir, info["seconds"])
    return info


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m datasets.synthetic ct3d``."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic ct3d",
        description="Write synthetic chest CT volumes (NIfTI, HU) with CT-RATE-format labels, metadata and reports, "
        "splits.csv, benchmark.json and README.md into --out.",
    )
    add_generator_arguments(parser, CT3D_SPLITS, "volumes", CT3D_V1.volumes)
    return parser


def main(argv: list[str]) -> int:
    """Parse ``argv``, generate, print a one-line summary; returns the exit status (0)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        spec = replace(CT3D_V1, train_volumes=args.train_volumes, val_volumes=args.val_volumes,
                       test_volumes=args.test_volumes)
    except ValueError as err:
        raise InputError(str(err)) from err
    info = generate_ct3d(args.out, spec, seed=args.seed, overwrite=args.overwrite)
    counts = ", ".join(f"{split}: {c['volumes']} volumes / {c['patients']} patients"
                       for split, c in info["splits"].items())
    print(f"wrote {args.out} in {info['seconds']} s ({counts}); zero-shot test labels: {TEST_LABELS}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("python -m datasets.synthetic ct3d", main))
