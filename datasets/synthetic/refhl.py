"""Generator of the synthetic RefHL-Seg-style referring hepatic-lesion segmentation benchmark ("refhl-synth").

RefHL-Seg (LSMS paper, arXiv 2408.17347: 2,283 abdominal CT slices of 231 cases with text and masks) is not public,
so this benchmark stands in for it with the same structure: a few annotated slices per case, several liver lesions
per slice, and one referring expression picking one lesion. Expressions are computed from each lesion's attributes
relative to the other lesions of its slice, measured on the stored label volume in world space (laterality from the
affine, never from array columns), and each is verified to identify exactly its lesion (see
:mod:`datasets.synthetic.expressions`). Slices where some lesion cannot be singled out are not annotated.

Output folder::

    DIR/
      images/c0000.nii.gz   int16 HU, (X, Y, Z), 5 mm slices, real voxel-to-RAS+ affine (qform = sform, code 1)
      labels/c0000.nii.gz   uint8, same grid; lesion n has value n (0 = background)
      manifest.csv          refseg manifest format v1 (columns in :data:`MANIFEST_COLUMNS`, extra columns after)
      benchmark.json        name, version, seed, generator spec, counts, templates, manifest SHA-256
      README.md             this format in words

Example::

    from datasets.synthetic import REFHL_V1, generate_refhl
    info = generate_refhl("data/refhl-synth-v1", REFHL_V1, seed=0)
    info["splits"]["train"]["rows"]  # about 2,000
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.laterality import patient_side, voxel_to_world
from datasets.synthetic.expressions import TEMPLATES, LesionFacts, choose_expressions
from datasets.synthetic.output import check_seed, write_benchmark_folder
from datasets.synthetic.phantom import SUPPORTED_ORIENTATIONS, Phantom, render_phantom
from datasets.synthetic.spec import REFHL_V1, SPLITS, SUPPORTED_VERSIONS, RefHLSpec

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_COLUMNS",
    "EXTRA_COLUMNS",
    "generate_refhl",
    "slice_facts",
]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "refseg-1"
MANIFEST_COLUMNS = (
    "format_version", "row_id", "case_id", "split", "image", "slice_index", "mask", "mask_value", "lesion_id", "text",
    "template_id",
)
EXTRA_COLUMNS = (
    "attribute", "value", "n_lesions_in_slice", "lobe", "density", "contrast_hu", "size_mm", "area_mm2",
    "diameter_3d_mm", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "side_of_midline",
)


def slice_facts(phantom: Phantom, labels: np.ndarray, affine: np.ndarray, slice_index: int) -> list[LesionFacts]:
    """Measure every lesion of one slice of a stored label volume, in world space.

    Args:
        phantom: the case (gives the lobe boundary and each lesion's density).
        labels: ``(X, Y, Z)`` label volume as stored on disk.
        affine: its voxel-to-RAS+ affine.
        slice_index: index along array axis 2.

    Returns:
        One :class:`LesionFacts` per lesion value present in the slice, in increasing value order.
    """
    pixel_area = float(np.linalg.norm(np.cross(affine[:3, 0], affine[:3, 1])))
    density = {lesion.value: lesion.density for lesion in phantom.lesions}
    section = labels[:, :, slice_index]
    facts = []
    for value in np.unique(section[section > 0]):
        ij = np.argwhere(section == value).mean(axis=0)
        x, y, _ = voxel_to_world(affine, [ij[0], ij[1], slice_index])
        facts.append(LesionFacts(
            lesion=int(value),
            lobe=phantom.lobe_at(float(x), float(y)),
            density=density[int(value)],
            area_mm2=float(np.count_nonzero(section == value) * pixel_area),
            x_mm=float(x),
            y_mm=float(y),
        ))
    return facts


def _nifti_gz(array: np.ndarray, affine: np.ndarray, description: str) -> bytes:
    """A gzipped NIfTI-1 file as bytes, byte-identical for identical inputs (gzip mtime 0)."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description.encode("ascii")[:79]
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _case_rows(
    case_id: str, split: str, phantom: Phantom, labels: np.ndarray, affine: np.ndarray, spec: RefHLSpec,
    rng: np.random.Generator,
) -> tuple[list[dict[str, Any]], int]:
    """Manifest rows of one case and the number of slices left unannotated because a lesion was ambiguous."""
    lesions = {lesion.value: lesion for lesion in phantom.lesions}
    rows: list[dict[str, Any]] = []
    dropped = 0
    for k in range(labels.shape[2]):
        facts = slice_facts(phantom, labels, affine, k)
        if not facts:
            continue
        picks = {
            f.lesion: choose_expressions(
                f, facts, spec.expressions(split), held_out=split == "test", rng=rng,
                size_ratio=spec.size_ratio_margin, position_margin_mm=spec.position_margin_mm,
            )
            for f in facts
        }
        if not all(picks.values()):
            dropped += 1
            continue
        owners: dict[str, set[int]] = {}
        for value, chosen in picks.items():
            for text, _, _ in chosen:
                owners.setdefault(text, set()).add(value)
        if any(len(values) > 1 for values in owners.values()):
            raise RuntimeError(f"internal error: two lesions of {case_id} slice {k} got the same expression")
        for f in facts:
            lesion = lesions[f.lesion]
            world = voxel_to_world(affine, [*np.argwhere(labels[:, :, k] == f.lesion).mean(axis=0), k])
            for e, (text, template, description) in enumerate(picks[f.lesion]):
                rows.append({
                    "format_version": MANIFEST_FORMAT,
                    "row_id": f"{case_id}-s{k:02d}-l{f.lesion}-e{e}",
                    "case_id": case_id,
                    "split": split,
                    "image": f"images/{case_id}.nii.gz",
                    "slice_index": k,
                    "mask": f"labels/{case_id}.nii.gz",
                    "mask_value": f.lesion,
                    "lesion_id": f"{case_id}-l{f.lesion}",
                    "text": text,
                    "template_id": template.template_id,
                    "attribute": description.attribute,
                    "value": description.value,
                    "n_lesions_in_slice": len(facts),
                    "lobe": f.lobe,
                    "density": f.density,
                    "contrast_hu": f"{lesion.contrast_hu:.1f}",
                    "size_mm": f"{2 * np.sqrt(f.area_mm2 / np.pi):.1f}",
                    "area_mm2": f"{f.area_mm2:.1f}",
                    "diameter_3d_mm": f"{lesion.diameter_mm:.1f}",
                    "centroid_x_mm": f"{world[0]:.2f}",
                    "centroid_y_mm": f"{world[1]:.2f}",
                    "centroid_z_mm": f"{world[2]:.2f}",
                    "side_of_midline": patient_side(world) if world[0] != 0 else "midline",
                })
    return rows, dropped


def _readme(spec: RefHLSpec, info: dict[str, Any]) -> str:
    counts = "\n".join(
        f"| {split} | {c['cases']} | {c['slices']} | {c['lesions']} | {c['rows']} |"
        for split, c in info["splits"].items()
    )
    return f"""# {spec.name} v{spec.version}: synthetic referring hepatic-lesion segmentation

Generated by `python -m datasets.synthetic refhl --seed {info['seed']} --orientation {info['orientation']}` (medvl).
A stand-in with the structure of RefHL-Seg (LSMS, arXiv 2408.17347), which is not public: abdominal CT phantoms with
1-3 liver lesions per slice and referring expressions that single out one lesion each. Synthetic data; not for
clinical use.

| split | cases | annotated slices | lesions | rows |
|---|---|---|---|---|
{counts}

## Files

- `images/<case_id>.nii.gz`: int16 CT in HU, array `(X, Y, Z)` with a voxel-to-RAS+ affine (qform = sform, code 1),
  {spec.matrix}x{spec.matrix} voxels of about 2 mm, {spec.slice_thickness_mm:g} mm slices. Stored in
  {info['orientation']} order: array axis 0 runs toward the patient's
  {'right' if info['orientation'] == 'RAS' else 'left'}. Always use the affine for directions.
- `labels/<case_id>.nii.gz`: uint8 on the same grid; lesion `n` of the case has value `n`, 0 is background.
- `manifest.csv`: one row per expression, refseg manifest format v1 (UTF-8, comma-separated, header row):
  `format_version` (always `refseg-1`), `row_id` (unique), `case_id`, `split` (by case: a case is in one split),
  `image` (path relative to this folder), `slice_index` (index along array axis 2 of the image as stored, i.e. as
  nibabel/MONAI load it), `mask` (label volume), `mask_value` (the lesion's value in it), `lesion_id`, `text`,
  `template_id`. Extra columns follow: `attribute` and `value` (what the expression says), `n_lesions_in_slice`,
  `lobe`, `density`, `contrast_hu`, `size_mm` (in-slice equivalent diameter), `area_mm2`, `diameter_3d_mm`,
  `centroid_*_mm` (RAS+ world centroid of the lesion in that slice), `side_of_midline`.
- `benchmark.json`: generator spec, seed, counts, template lists and the SHA-256 of `manifest.csv`.

## Expressions

Attributes are measured in world space on the label volume: anatomical lobe (split by the falciform fissure), density
relative to liver, in-slice size rank, position toward the patient's right/left and anterior/posterior, and count.
Each expression is checked to identify exactly one lesion of its slice (near-ties count as ambiguous: areas within a
factor {spec.size_ratio_margin:g}, positions within {spec.position_margin_mm:g} mm); slices where a lesion cannot be
singled out are not annotated. Train and val use the training templates; test uses only held-out templates
(`benchmark.json` lists both). A shuffled-prompt control (another lesion's expression of the same slice) is possible on
every slice with two or more lesions.

Version {spec.version} of this generator is frozen: the same seed gives the same files. Changes go into a new version.
"""


def generate_refhl(
    out_dir: str | os.PathLike,
    spec: RefHLSpec = REFHL_V1,
    *,
    seed: int = 0,
    orientation: str = "RAS",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the benchmark into ``out_dir``.

    The whole folder is written beside ``out_dir`` and moved into place only when complete, so an interrupted run
    leaves no partial benchmark.

    Args:
        out_dir: output folder; must be missing or empty, unless ``overwrite`` (then it must hold an earlier
            benchmark).
        spec: generator parameters. Defaults to :data:`REFHL_V1`.
        seed: random seed; the same seed and spec give byte-identical files. Defaults to 0.
        orientation: array order of the stored volumes, ``"RAS"`` or ``"LPS"``; the world-space content (and so the
            manifest's text) is the same for both. Defaults to ``"RAS"``.
        overwrite: replace an earlier benchmark in ``out_dir``. Defaults to False.

    Returns:
        The content of ``benchmark.json`` plus ``seconds`` (wall time) and ``cpu_seconds``.

    Raises:
        InputError: bad seed, orientation or output folder.
        ValueError: a spec version this generator does not implement.
    """
    if spec.version not in SUPPORTED_VERSIONS:
        raise ValueError(f"spec version {spec.version} is not implemented; supported versions: {SUPPORTED_VERSIONS}")
    if orientation not in SUPPORTED_ORIENTATIONS:
        raise InputError(f"--orientation must be one of {', '.join(SUPPORTED_ORIENTATIONS)}, got {orientation!r}")
    check_seed(seed)
    info = write_benchmark_folder(
        out_dir, overwrite, lambda folder: _write_benchmark(folder, spec, seed, orientation)
    )
    logger.info(
        "wrote %s to %s in %.1f s: %s", spec.name, out_dir, info["seconds"],
        ", ".join(f"{s} {c['cases']} cases/{c['rows']} rows" for s, c in info["splits"].items()),
    )
    return info


def _write_benchmark(folder: Path, spec: RefHLSpec, seed: int, orientation: str) -> dict[str, Any]:
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    rows: list[dict[str, Any]] = []
    splits: dict[str, dict[str, int]] = {}
    case_number = 0
    for split_code, split in enumerate(SPLITS):
        counts = {"cases": 0, "slices": 0, "lesions": 0, "rows": 0, "unannotated_ambiguous_slices": 0}
        for j in range(spec.cases(split)):
            case_id = f"c{case_number:04d}"
            case_number += 1
            phantom = render_phantom(np.random.default_rng([seed, split_code, j, 0]), spec)
            image, labels, affine = phantom.oriented(orientation)
            tag = f"{spec.name} v{spec.version} seed {seed} {case_id}"
            (folder / "images" / f"{case_id}.nii.gz").write_bytes(_nifti_gz(image, affine, tag))
            (folder / "labels" / f"{case_id}.nii.gz").write_bytes(_nifti_gz(labels, affine, tag))
            case_rows, dropped = _case_rows(
                case_id, split, phantom, labels, affine, spec, np.random.default_rng([seed, split_code, j, 1])
            )
            rows.extend(case_rows)
            counts["cases"] += 1
            counts["slices"] += len({row["slice_index"] for row in case_rows})
            counts["lesions"] += len({row["lesion_id"] for row in case_rows})
            counts["rows"] += len(case_rows)
            counts["unannotated_ambiguous_slices"] += dropped
        splits[split] = counts

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*MANIFEST_COLUMNS, *EXTRA_COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "manifest.csv").write_bytes(buffer.getvalue().encode("utf-8"))

    info: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version,
        "format": MANIFEST_FORMAT,
        "seed": seed,
        "orientation": orientation,
        "world_coordinates": "RAS+ mm (NIfTI): +x = patient's right, +y = anterior, +z = superior",
        "generator": {"command": "python -m datasets.synthetic refhl", "spec": spec.to_dict()},
        "splits": splits,
        "templates": {
            "train": {t.template_id: t.text for t in TEMPLATES if not t.held_out},
            "held_out": {t.template_id: t.text for t in TEMPLATES if t.held_out},
        },
        "template_use": {"train": "train", "val": "train", "test": "held_out"},
        "manifest": "manifest.csv",
        "manifest_sha256": sha256_file(folder / "manifest.csv"),
    }
    (folder / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_readme(spec, info), encoding="utf-8")
    return info
