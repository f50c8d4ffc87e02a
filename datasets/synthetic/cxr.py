"""Generator of the synthetic chest-radiograph benchmark "synthetic-cxr" (CARZero demo data), spec :data:`CXR_V1`.

Frontal chest radiographs with the 14 ChestX-ray14 findings drawn with distinct cues (see
:func:`datasets.synthetic.cxr_render.render_cxr`), correlated through latent conditions
(:mod:`datasets.synthetic.cxr_sampling`), free-text reports (:mod:`datasets.synthetic.cxr_reports`) and label files in
the public formats. Splits are by patient.

Output folder::

    DIR/
      images/00000001_000.png   8-bit greyscale PNG, <patient>_<follow-up>, display order (patient's right on the left)
      Data_Entry_2017.csv       ChestX-ray14 format (all splits), labels as published (with label noise)
      train_val_list.txt        NIH-style image lists (one name per line); train_list.txt / val_list.txt split the
      test_list.txt             first into train and val (an addition: NIH has no validation list)
      chexpert_test.csv         the test split in CheXpert valid.csv format (mapped observations, see README)
      reports.csv               image-report pairs, pairs-1 manifest (datasets.reports), all splits, drawn truth
      drawn_findings.csv        what each image shows: finding, side, zone, size
      label_noise.csv           every label cell that differs from what is drawn
      benchmark.json            name, version, seed, spec, counts, prevalence, SHA-256 of the tables
      README.md                 this format in words

Command line (registered by the lead as ``python -m datasets.synthetic cxr``)::

    python -m datasets.synthetic.cxr --out data/synthetic-cxr --seed 0
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets.cli_utils import run_cli, setup_logging
from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.reports import PAIRS_COLUMNS, PAIRS_FORMAT_VERSION
from datasets.synthetic.cxr_render import render_cxr
from datasets.synthetic.cxr_reports import Mention, write_report
from datasets.synthetic.cxr_sampling import Finding, sample_findings, sample_patient
from datasets.synthetic.cxr_spec import CXR_SPLITS, CXR_SUPPORTED_VERSIONS, CXR_V1, FINDINGS, CXRSpec
from datasets.synthetic.output import add_generator_arguments, check_seed, write_benchmark_folder

__all__ = ["DATA_ENTRY_HEADER", "CHEXPERT_COLUMNS", "CHEXPERT_MAP", "generate_cxr", "main"]

logger = logging.getLogger(__name__)

DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
"""ChestX-ray14's header line, verbatim (unquoted commas inside the brackets, trailing comma)."""

CHEXPERT_COLUMNS = (
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly",
    "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
    "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
CHEXPERT_MAP: dict[str, tuple[str, ...]] = {
    "No Finding": (),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Lung Opacity": ("Atelectasis", "Infiltration", "Mass", "Nodule", "Pneumonia", "Consolidation", "Edema",
                     "Fibrosis"),
    "Lung Lesion": ("Mass", "Nodule"),
    "Edema": ("Edema",),
    "Consolidation": ("Consolidation",),
    "Pneumonia": ("Pneumonia",),
    "Atelectasis": ("Atelectasis",),
    "Pneumothorax": ("Pneumothorax",),
    "Pleural Effusion": ("Effusion",),
    "Pleural Other": ("Pleural_Thickening",),
    "Fracture": (),
    "Support Devices": (),
}
"""CheXpert observation -> the ChestX-ray14 findings that make it positive (1.0 if any is labelled, else 0.0).
``No Finding`` is 1.0 when no finding at all is labelled; ``Fracture`` and ``Support Devices`` are never drawn (0.0).
Emphysema and Hernia have no CheXpert observation (they only clear ``No Finding``)."""

_PATIENT_STREAM, _STUDY_STREAM, _PLAN_STREAM = 0, 1, 2


@dataclass
class _Study:
    image: str
    patient_id: int
    follow_up: int
    split: str
    sex: str
    age: int
    view: str
    spacing_mm: float
    drawn: list[Finding]
    labelled: list[str]
    findings_text: str
    impression_text: str
    mentions: tuple[Mention, ...]


def _plan(spec: CXRSpec, seed: int) -> list[tuple[str, int]]:
    """Per patient: (split, number of studies); the patient's id is its position in the list + 1."""
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    patients = []
    for split in CXR_SPLITS:
        left = spec.images(split)
        while left > 0:
            count = min(left, int(rng.choice((1, 2, 3), p=spec.images_per_patient_probs)))
            patients.append((split, count))
            left -= count
    order = rng.permutation(len(patients))  # patient ids do not reveal the split
    return [patients[i] for i in order]


def _label_noise(rng: np.random.Generator, drawn: set[str], rate: float) -> set[str]:
    labelled = set(drawn)
    if rng.random() < rate:
        absent = [name for name in FINDINGS if name not in drawn]
        if drawn and (not absent or rng.random() < 0.5):
            labelled.discard(str(rng.choice(sorted(drawn))))
        else:
            labelled.add(str(rng.choice(absent)))
    return labelled


def _studies(spec: CXRSpec, seed: int, image_dir: Path) -> list[_Study]:
    """Sample, report and render every study; the PNGs go to ``image_dir``."""
    studies = []
    for index, (split, count) in enumerate(_plan(spec, seed)):
        patient_id = index + 1
        patient = sample_patient(
            np.random.default_rng([seed, _PATIENT_STREAM, patient_id]), spec.field_of_view_mm, spec.image_size,
            spec.noise_sd,
        )
        for follow_up in range(count):
            rng = np.random.default_rng([seed, _STUDY_STREAM, patient_id, follow_up])
            anatomy, drawn = sample_findings(
                rng, patient, follow_up, spec.field_of_view_mm, spec.image_size, spec.noise_sd
            )
            report = write_report(drawn, rng, spec.negative_mention_prob, spec.negation_prob)
            labelled = _label_noise(rng, {f.name for f in drawn}, spec.label_noise)
            view = "AP" if rng.random() < spec.ap_fraction else "PA"
            study = _Study(
                f"{patient_id:08d}_{follow_up:03d}.png", patient_id, follow_up, split, patient.sex,
                patient.age + 2 * follow_up, view, anatomy.spacing_mm, drawn,
                [name for name in FINDINGS if name in labelled], report.findings, report.impression, report.mentions,
            )
            pixels = render_cxr(anatomy, drawn, spec.image_size, rng)  # (H, W) uint8
            Image.fromarray(pixels, mode="L").save(image_dir / study.image, format="PNG")
            studies.append(study)
    return sorted(studies, key=lambda s: s.image)


def _csv_bytes(header: list[str] | tuple[str, ...], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _data_entry(studies: list[_Study], size: int) -> bytes:
    lines = [DATA_ENTRY_HEADER]
    for s in studies:
        labels = "|".join(sorted(s.labelled)) or "No Finding"
        lines.append(
            f"{s.image},{labels},{s.follow_up},{s.patient_id},{s.age},{s.sex},{s.view},{size},{size},"
            f"{s.spacing_mm:.3f},{s.spacing_mm:.3f},"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def _chexpert_row(s: _Study) -> list[Any]:
    values = []
    for column in CHEXPERT_COLUMNS[5:]:
        if column == "No Finding":
            values.append("1.0" if not s.labelled else "0.0")
        else:
            values.append("1.0" if any(name in s.labelled for name in CHEXPERT_MAP[column]) else "0.0")
    sex = "Male" if s.sex == "M" else "Female"
    return [f"images/{s.image}", sex, s.age, "Frontal", s.view, *values]


def _write(folder: Path, spec: CXRSpec, seed: int) -> dict[str, Any]:
    (folder / "images").mkdir()
    studies = _studies(spec, seed, folder / "images")
    (folder / "Data_Entry_2017.csv").write_bytes(_data_entry(studies, spec.image_size))
    lists = {
        "train_val_list.txt": ("train", "val"), "test_list.txt": ("test",), "train_list.txt": ("train",),
        "val_list.txt": ("val",),
    }
    for name, splits in lists.items():
        (folder / name).write_text("".join(f"{s.image}\n" for s in studies if s.split in splits), encoding="utf-8")
    test = [s for s in studies if s.split == "test"]
    (folder / "chexpert_test.csv").write_bytes(_csv_bytes(CHEXPERT_COLUMNS, [_chexpert_row(s) for s in test]))
    pairs = [
        [PAIRS_FORMAT_VERSION, f"images/{s.image}", s.findings_text, s.impression_text, s.view, s.split,
         s.patient_id, s.patient_id * 1000 + s.follow_up]
        for s in studies
    ]
    (folder / "reports.csv").write_bytes(_csv_bytes(PAIRS_COLUMNS, pairs))
    drawn_rows = [
        [s.image, s.split, f.name, f.side or "", f.zone or "", f.size or ""] for s in studies for f in s.drawn
    ]
    (folder / "drawn_findings.csv").write_bytes(
        _csv_bytes(("Image Index", "split", "finding", "side", "zone", "size"), drawn_rows)
    )
    noise_rows = []
    for s in studies:
        drawn = {f.name for f in s.drawn}
        for name in FINDINGS:
            if (name in drawn) != (name in s.labelled):
                noise_rows.append([s.image, s.split, name, int(name in drawn), int(name in s.labelled)])
    (folder / "label_noise.csv").write_bytes(
        _csv_bytes(("Image Index", "split", "finding", "drawn", "labelled"), noise_rows)
    )
    info = _info(spec, seed, studies, noise_rows, folder)
    (folder / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_readme(spec, info), encoding="utf-8")
    return info


def _info(spec: CXRSpec, seed: int, studies: list[_Study], noise_rows: list, folder: Path) -> dict[str, Any]:
    counts = {}
    for split in CXR_SPLITS:
        members = [s for s in studies if s.split == split]
        counts[split] = {"images": len(members), "patients": len({s.patient_id for s in members})}
    n = max(len(studies), 1)
    prevalence = {
        name: round(sum(name in s.labelled for s in studies) / n, 4) for name in FINDINGS
    }
    negative = [m for s in studies for m in s.mentions if m.kind != "positive"]
    files = ("Data_Entry_2017.csv", "reports.csv", "chexpert_test.csv", "train_val_list.txt", "test_list.txt",
             "train_list.txt", "val_list.txt", "drawn_findings.csv", "label_noise.csv")
    return {
        "name": spec.name,
        "version": spec.version,
        "seed": seed,
        "generator": {"command": "python -m datasets.synthetic cxr", "spec": spec.to_dict()},
        "classes": list(FINDINGS),
        "splits": counts,
        "images": len(studies),
        "no_finding_fraction": round(sum(not s.labelled for s in studies) / n, 4),
        "prevalence": prevalence,
        "label_noise": {"cells": len(noise_rows), "images": len({row[0] for row in noise_rows})},
        "reports": {
            "negative_mentions": len(negative),
            "negation_fraction": round(sum(m.kind == "negation" for m in negative) / max(len(negative), 1), 4),
        },
        "chexpert_map": {key: list(value) for key, value in CHEXPERT_MAP.items()},
        "display_order": "display order: the patient's right is on the image's left",
        "sha256": {name: sha256_file(folder / name) for name in files},
    }


def _readme(spec: CXRSpec, info: dict[str, Any]) -> str:
    counts = "\n".join(f"| {k} | {v['patients']} | {v['images']} |" for k, v in info["splits"].items())
    prevalence = ", ".join(f"{k} {v:.1%}" for k, v in info["prevalence"].items())
    mapping = "; ".join(f"{k} <- {' or '.join(v) if v else '-'}" for k, v in CHEXPERT_MAP.items())
    return f"""# {spec.name} v{spec.version}: synthetic chest radiographs with reports and ChestX-ray14 labels

Generated by `python -m datasets.synthetic cxr --seed {info['seed']}` (medvl). Synthetic data for demos and tests of
zero-shot classifiers (CARZero-style); not for clinical use. {spec.image_size}x{spec.image_size} 8-bit frontal
radiographs, display order (the patient's right on the image's left). Splits are by patient.

| split | patients | images |
|---|---|---|
{counts}

Label prevalence (all splits): {prevalence}. Images without any labelled finding: {info['no_finding_fraction']:.1%}.

## Files

- `images/<patient>_<follow-up>.png`: 8-bit greyscale PNG.
- `Data_Entry_2017.csv`: ChestX-ray14's exact layout (header `{DATA_ENTRY_HEADER}`), `Finding Labels` sorted and
  `|`-separated or `No Finding`; `OriginalImage` is the PNG size, `OriginalImagePixelSpacing` its spacing in mm.
- `train_val_list.txt`, `test_list.txt`: NIH-style lists; `train_list.txt` + `val_list.txt` split the first.
- `chexpert_test.csv`: the test split in CheXpert `valid.csv` layout (`Path` relative to this folder, 1.0/0.0).
  Mapping: {mapping}. Emphysema, Fibrosis (except via Lung Opacity) and Hernia have no own observation.
- `reports.csv`: `pairs-1` manifest (`datasets.reports.read_pairs_manifest`), columns {', '.join(PAIRS_COLUMNS)};
  `split` is `train` / `val` / `test`. Reports describe what is drawn.
- `drawn_findings.csv`: every drawn finding with its side (the patient's), zone and size.
- `label_noise.csv`: about {spec.label_noise:.0%} of images have one label flipped relative to the drawing (a drawn
  finding dropped or an absent one added); every flipped cell is listed here. All label files carry the flipped
  labels, as real NLP-mined labels would; reports do not.
- `benchmark.json`: spec, seed, counts, prevalence, SHA-256 of every table.

## Reports

Findings and impression sections with at least three paraphrases per finding, none of them a "There is <finding>"
prompt. Each absent finding is mentioned with probability {spec.negative_mention_prob:g}, as a negation
("No pleural effusion.") with probability {spec.negation_prob:g}, else as a normal description; measured negation
fraction of negative mentions: {info['reports']['negation_fraction']:.1%}. Laterality words name the drawn side.

Version {spec.version} of this generator is frozen: the same seed gives the same files. Changes go into a new version.
"""


def generate_cxr(out_dir: str | os.PathLike, spec: CXRSpec = CXR_V1, *, seed: int = 0, overwrite: bool = False
                 ) -> dict[str, Any]:
    """Generate the benchmark into ``out_dir`` (written beside it and moved into place only when complete).

    Args:
        out_dir: output folder; must be missing or empty, unless ``overwrite`` (then it must hold a benchmark).
        spec: generator parameters. Defaults to :data:`CXR_V1`.
        seed: random seed; the same seed and spec give byte-identical files. Defaults to 0.
        overwrite: replace an earlier benchmark in ``out_dir``. Defaults to False.

    Returns:
        The content of ``benchmark.json`` plus ``seconds`` (wall time) and ``cpu_seconds``.

    Raises:
        InputError: a bad seed or output folder.
        ValueError: a spec version this generator does not implement.
    """
    if spec.version not in CXR_SUPPORTED_VERSIONS:
        raise ValueError(f"spec version {spec.version} is not implemented; supported: {CXR_SUPPORTED_VERSIONS}")
    check_seed(seed)
    info = write_benchmark_folder(out_dir, overwrite, lambda folder: _write(folder, spec, seed))
    logger.info("wrote %s v%d to %s in %.1f s", spec.name, spec.version, out_dir, info["seconds"])
    return info


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m datasets.synthetic cxr``."""
    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic cxr",
        description="Write synthetic chest radiographs (PNG), ChestX-ray14/CheXpert label files, pairs-1 reports, "
        "benchmark.json and README.md into --out.",
    )
    add_generator_arguments(parser, CXR_SPLITS, "images", CXR_V1.images)
    return parser


def main(argv: list[str]) -> int:
    """Parse ``argv``, generate, print a one-line summary; returns the exit status (0)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        spec = replace(CXR_V1, train_images=args.train_images, val_images=args.val_images, test_images=args.test_images)
    except ValueError as err:
        raise InputError(str(err)) from err
    info = generate_cxr(args.out, spec, seed=args.seed, overwrite=args.overwrite)
    counts = ", ".join(f"{name}: {c['images']} images / {c['patients']} patients" for name, c in info["splits"].items())
    print(f"wrote {args.out} in {info['seconds']} s ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("python -m datasets.synthetic cxr", main))
