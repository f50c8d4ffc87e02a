"""The synthetic RefHL-Seg-style benchmark: files, manifest format, uniqueness of expressions, determinism, world-space
laterality under RAS and LPS storage, and the command line."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from datasets.cli_utils import run_cli
from datasets.laterality import voxel_to_world
from datasets.synthetic import MANIFEST_COLUMNS, REFHL_V1, RefHLSpec, generate_refhl
from datasets.synthetic.__main__ import PROGRAM, main
from datasets.synthetic.expressions import TEMPLATES, Description, LesionFacts, resolve

TINY = dataclasses.replace(REFHL_V1, train_cases=3, val_cases=2, test_cases=3)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("refhl") / "ras"
    generate_refhl(folder, TINY, seed=0)
    return folder


@pytest.fixture(scope="module")
def volumes(bench) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(array, affine) of every NIfTI file of the benchmark, keyed by relative path."""
    loaded = {}
    for path in sorted(bench.glob("*/*.nii.gz")):
        image = nib.load(path)
        loaded[str(path.relative_to(bench))] = (np.asanyarray(image.dataobj), image.affine)
    return loaded


def test_manifest_format_v1(bench):
    with open(bench / "manifest.csv", newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert tuple(header[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    rows = _rows(bench)
    assert rows
    assert {row["format_version"] for row in rows} == {"refseg-1"}
    assert len({row["row_id"] for row in rows}) == len(rows)
    for row in rows:
        assert row["split"] in ("train", "val", "test")
        assert (bench / row["image"]).is_file() and (bench / row["mask"]).is_file()
        assert int(row["slice_index"]) >= 0 and int(row["mask_value"]) >= 1
        assert row["lesion_id"] == f"{row['case_id']}-l{row['mask_value']}"
        assert row["text"].strip() and row["template_id"]


def test_counts_and_split_by_case(bench):
    info = json.loads((bench / "benchmark.json").read_text())
    rows = _rows(bench)
    assert info["name"] == "refhl-synth" and info["version"] == 1 and info["seed"] == 0
    assert info["manifest_sha256"] == hashlib.sha256((bench / "manifest.csv").read_bytes()).hexdigest()
    assert info["generator"]["spec"]["train_cases"] == 3
    splits_of_case = defaultdict(set)
    for row in rows:
        splits_of_case[row["case_id"]].add(row["split"])
    assert all(len(splits) == 1 for splits in splits_of_case.values())
    for split in ("train", "val", "test"):
        mine = [row for row in rows if row["split"] == split]
        counts = info["splits"][split]
        assert counts["cases"] == TINY.cases(split)
        assert counts["rows"] == len(mine)
        assert counts["slices"] == len({(row["case_id"], row["slice_index"]) for row in mine})
        assert counts["lesions"] == len({row["lesion_id"] for row in mine})
        per_lesion_slice = defaultdict(int)
        for row in mine:
            per_lesion_slice[(row["case_id"], row["slice_index"], row["mask_value"])] += 1
        assert set(per_lesion_slice.values()) == {TINY.expressions(split)}
    assert len(list((bench / "images").glob("*.nii.gz"))) == sum(TINY.cases(s) for s in ("train", "val", "test"))
    assert "refseg-1" in (bench / "README.md").read_text()


def test_volumes_are_ct_in_hu_with_real_geometry(bench, volumes):
    for path in sorted(bench.glob("images/*.nii.gz")):
        image, affine = volumes[f"images/{path.name}"]
        labels, label_affine = volumes[f"labels/{path.name}"]
        assert image.dtype == np.int16 and labels.dtype == np.uint8
        assert image.shape == labels.shape and image.shape[:2] == (TINY.matrix, TINY.matrix)
        assert TINY.slices_per_case[0] <= image.shape[2] <= TINY.slices_per_case[1]
        np.testing.assert_allclose(affine, label_affine)
        assert nib.aff2axcodes(affine) == ("R", "A", "S")
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        assert TINY.pixel_spacing_mm[0] <= spacing[0] <= TINY.pixel_spacing_mm[1]
        assert spacing[2] == pytest.approx(TINY.slice_thickness_mm)
        assert image.min() <= -1000 and image.max() >= 400  # air and bone
        assert nib.load(path).header.get_sform(coded=True)[1] == 1


def test_every_row_masks_its_lesion_and_every_lesion_has_rows(bench, volumes):
    rows = _rows(bench)
    described = defaultdict(set)
    for row in rows:
        labels, affine = volumes[row["mask"]]
        k, value = int(row["slice_index"]), int(row["mask_value"])
        pixel_area = float(np.linalg.norm(np.cross(affine[:3, 0], affine[:3, 1])))
        assert np.count_nonzero(labels[:, :, k] == value) * pixel_area >= TINY.min_cross_section_mm2
        assert float(row["area_mm2"]) == pytest.approx(np.count_nonzero(labels[:, :, k] == value) * pixel_area, abs=0.1)
        described[(row["mask"], k)].add(value)
    for (mask, k), values in described.items():
        present = set(np.unique(volumes[mask][0][:, :, k]).tolist()) - {0}
        assert values == present, f"{mask} slice {k}: lesions {present}, rows for {values}"


def test_density_words_match_the_image(bench, volumes):
    """Hypodense lesions are darker than the liver rim around them, hyperdense ones brighter (strong contrasts)."""
    from scipy import ndimage

    checked = 0
    for row in _rows(bench):
        if abs(float(row["contrast_hu"])) < 30:
            continue
        image, _ = volumes[row["image"]]
        labels, _ = volumes[row["mask"]]
        k, value = int(row["slice_index"]), int(row["mask_value"])
        lesion = labels[:, :, k] == value
        rim = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion, iterations=1)
        rim &= labels[:, :, k] == 0
        difference = np.median(image[:, :, k][lesion]) - np.median(image[:, :, k][rim])
        assert np.sign(difference) == (-1 if row["density"] == "hypodense" else 1), row["row_id"]
        checked += 1
    assert checked > 0


def test_each_expression_identifies_its_lesion_in_world_space(bench, volumes):
    """Facts re-measured from the label volume on disk (world centroids via the affine) resolve every row's
    description to its own lesion, and the texts of different lesions of a slice differ."""
    rows = _rows(bench)
    by_slice = defaultdict(list)
    for row in rows:
        by_slice[(row["case_id"], int(row["slice_index"]))].append(row)
    multi = 0
    for (_case, k), members in by_slice.items():
        labels, affine = volumes[members[0]["mask"]]
        pixel_area = float(np.linalg.norm(np.cross(affine[:3, 0], affine[:3, 1])))
        meta = {int(row["mask_value"]): row for row in members}
        facts = []
        for value, row in sorted(meta.items()):
            section = labels[:, :, k] == value
            x, y, _ = voxel_to_world(affine, [*np.argwhere(section).mean(axis=0), k])
            facts.append(LesionFacts(value, row["lobe"], row["density"], np.count_nonzero(section) * pixel_area, x, y))
            assert float(row["centroid_x_mm"]) == pytest.approx(x, abs=0.01)
        for row in members:
            found = resolve(Description(row["attribute"], row["value"]), facts, REFHL_V1.size_ratio_margin,
                            REFHL_V1.position_margin_mm)
            assert found == [int(row["mask_value"])], (row["row_id"], row["text"], found)
        owners = defaultdict(set)
        for row in members:
            owners[row["text"]].add(row["mask_value"])
        assert all(len(values) == 1 for values in owners.values())
        multi += len(facts) > 1
    assert multi > 0, "the tiny benchmark should have slices with several lesions"


def test_test_split_uses_only_held_out_templates(bench):
    info = json.loads((bench / "benchmark.json").read_text())
    train_ids, held_ids = set(info["templates"]["train"]), set(info["templates"]["held_out"])
    assert train_ids and held_ids and not train_ids & held_ids
    assert train_ids | held_ids == {t.template_id for t in TEMPLATES}
    texts = {t.text for t in TEMPLATES}
    assert len(texts) == len(TEMPLATES)
    for attribute in {t.attribute for t in TEMPLATES}:
        assert sum(t.attribute == attribute and not t.held_out for t in TEMPLATES) >= 3
        assert sum(t.attribute == attribute and t.held_out for t in TEMPLATES) >= 2
    for row in _rows(bench):
        pool = held_ids if row["split"] == "test" else train_ids
        assert row["template_id"] in pool, row["row_id"]
        assert row["template_id"].split(".")[0] == row["attribute"]


def test_same_seed_same_files_other_seed_other_files(bench, tmp_path):
    again = tmp_path / "again"
    generate_refhl(again, TINY, seed=0)
    assert _digests(again) == _digests(bench)
    other = tmp_path / "other"
    generate_refhl(other, dataclasses.replace(TINY, val_cases=0, test_cases=0), seed=1)
    assert (other / "manifest.csv").read_bytes() != (bench / "manifest.csv").read_bytes()


def test_ras_and_lps_storage_give_the_same_benchmark_in_world_space(bench, volumes, tmp_path):
    lps = tmp_path / "lps"
    generate_refhl(lps, TINY, seed=0, orientation="LPS")
    ras_rows, lps_rows = _rows(bench), _rows(lps)
    assert [(r["row_id"], r["text"], r["template_id"], r["slice_index"]) for r in ras_rows] == [
        (r["row_id"], r["text"], r["template_id"], r["slice_index"]) for r in lps_rows
    ]
    for a, b in zip(ras_rows, lps_rows):
        for column in ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm"):
            assert float(a[column]) == pytest.approx(float(b[column]), abs=0.011)
    for path in sorted(lps.glob("*/*.nii.gz")):
        name = str(path.relative_to(lps))
        stored = nib.load(path)
        assert nib.aff2axcodes(stored.affine) == ("L", "P", "S")
        assert not np.array_equal(np.asanyarray(stored.dataobj), volumes[name][0])  # really stored differently
        canonical = nib.as_closest_canonical(stored)
        ras = nib.as_closest_canonical(nib.load(bench / name))
        np.testing.assert_array_equal(np.asanyarray(canonical.dataobj), np.asanyarray(ras.dataobj))
        np.testing.assert_allclose(canonical.affine, ras.affine, atol=1e-3)  # float32 sform rounding


def test_cli_refuses_non_empty_folder_and_overwrites_only_benchmarks(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["refhl", "--out", str(out), "--train-cases", "1", "--val-cases", "0", "--test-cases", "1"]
    assert run_cli(PROGRAM, main, args) == 0
    first = (out / "manifest.csv").read_bytes()
    assert run_cli(PROGRAM, main, [*args, "--seed", "3"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "manifest.csv").read_bytes() == first
    assert run_cli(PROGRAM, main, [*args, "--seed", "3", "--overwrite"]) == 0
    assert json.loads((out / "benchmark.json").read_text())["seed"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left behind"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert run_cli(PROGRAM, main, ["refhl", "--out", str(foreign), "--overwrite"]) == 2
    assert "holds no benchmark.json" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["refhl", "--out", "x", "--orientation", "LAS"], "invalid choice"),
        (["refhl", "--out", "x", "--train-cases", "-1"], "non-negative integer"),
        (["refhl", "--out", "x", "--seed", "s"], "non-negative integer"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        run_cli(PROGRAM, main, argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_no_cases_is_bad_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["refhl", "--out", "x", "--train-cases", "0", "--val-cases", "0", "--test-cases", "0"]
    assert run_cli(PROGRAM, main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROGRAM}: error:") and "at least one case" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_ill_arg(tmp_path):
    with pytest.raises(dataclasses.FrozenInstanceError):
        REFHL_V1.train_cases = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="lesions_per_case_probs"):
        RefHLSpec(lesions_per_case_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="expressions_per_lesion"):
        RefHLSpec(expressions_per_lesion=(2, 0, 1))
    with pytest.raises(ValueError, match="not implemented"):
        generate_refhl(tmp_path / "v2", RefHLSpec(version=2))
    with pytest.raises(ValueError, match="orientation"):
        generate_refhl(tmp_path / "o", TINY, orientation="RAI")
    assert not (tmp_path / "v2").exists() and not (tmp_path / "o").exists()
