"""Tests of the synthetic 3D chest CT benchmark generator (datasets.synthetic.ct3d)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from datasets.benchmarks import CONFIG_DIR, load_benchmark, read_prompt_file
from datasets.cli_utils import run_cli
from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.labels.ctrate import CLASSES, read_ctrate_labels, read_ctrate_metadata
from datasets.reports import read_ctrate_reports
from datasets.synthetic.ct3d import TABLES, TEST_LABELS, generate_ct3d, main
from datasets.synthetic.ct3d_anatomy import sample_anatomy
from datasets.synthetic.ct3d_draw import Grid
from datasets.synthetic.ct3d_render import render_scan
from datasets.synthetic.ct3d_reports import IMPRESSION, NEGATION, NORMAL, POSITIVE, write_report
from datasets.synthetic.ct3d_sampling import Finding, sample_findings, sample_patient
from datasets.synthetic.ct3d_spec import CT3D_V1, FINDINGS, CT3DSpec

TINY = replace(CT3D_V1, train_volumes=5, val_volumes=2, test_volumes=3)
PROMPTS = [text.lower() for name in ("ct-rate.txt", "synthetic-ct3d.txt")
           for texts in read_prompt_file(CONFIG_DIR / "prompts" / name) for text in texts]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data")
    info = generate_ct3d(root / "synthetic-ct3d", TINY, seed=3)
    return root, info


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_spec_is_frozen_and_validated():
    assert CT3D_V1.version == 1 and list(FINDINGS) == CLASSES
    with pytest.raises(FrozenInstanceError):
        CT3D_V1.train_volumes = 1
    with pytest.raises(ValueError, match="label_noise must be a probability"):
        CT3DSpec(label_noise=1.5)
    with pytest.raises(ValueError, match="at least one volume"):
        CT3DSpec(train_volumes=0, val_volumes=0, test_volumes=0)
    with pytest.raises(ValueError, match="not implemented"):
        generate_ct3d("unused", replace(CT3D_V1, version=2))


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    spec = replace(CT3D_V1, train_volumes=2, val_volumes=1, test_volumes=1)
    generate_ct3d(tmp_path / "a", spec, seed=7)
    generate_ct3d(tmp_path / "b", spec, seed=7)
    generate_ct3d(tmp_path / "c", spec, seed=8)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == len(TABLES) + 2 + 4
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train_reports.csv").read_bytes() != (tmp_path / "c" / "train_reports.csv").read_bytes()
    volume = next((tmp_path / "a" / "volumes").iterdir())
    assert volume.read_bytes()[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0


def test_tables_parse_with_the_ctrate_readers(bench):
    root, info = bench
    folder = root / "synthetic-ct3d"
    train = read_ctrate_labels(folder / "dataset_multi_abnormality_labels_train_predicted_labels.csv", layout="flat")
    test = read_ctrate_labels(folder / TEST_LABELS, layout="flat")
    assert len(train) == 7 and len(test) == 3 and train.class_names == CLASSES
    assert all(name.startswith("train_") for name in train.image_ids)
    assert all(name.startswith("valid_") for name in test.image_ids)
    train.check_images(folder / "volumes")
    test.check_images(folder / "volumes")
    for part, labels in (("train", train), ("validation", test)):
        geometry = read_ctrate_metadata(folder / f"{part}_metadata.csv")
        reports = read_ctrate_reports(folder / f"{part}_reports.csv", metadata=geometry, layout="flat")
        assert reports.image_ids == labels.image_ids
        assert all(meta["findings"] and meta["impression"] and meta["technique"] for meta in reports.meta)
        for name in labels.image_ids[:2]:
            image = nib.load(folder / "volumes" / name)
            array = np.asarray(image.dataobj)
            g = geometry[name]
            assert array.dtype == np.int16 and array.shape == (TINY.matrix, TINY.matrix, TINY.slices)
            np.testing.assert_allclose(image.header.get_zooms(), g.spacing, rtol=1e-5)
            assert (g.rescale_slope, g.rescale_intercept) == (1.0, 0.0)
            assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
            np.testing.assert_allclose(image.affine[:3, 3], [-g.origin[0], -g.origin[1], g.origin[2]], atol=1e-4)
            assert array.min() == -1024 and (array < -700).mean() > 0.3  # padding, air and lungs
            assert ((array > 20) & (array < 70)).mean() > 0.02 and array.max() > 300  # soft tissue and bone
    header = (folder / "train_metadata.csv").read_text().splitlines()[0]
    reference = Path(__file__).parents[1] / "data" / "labels" / "ctrate" / "validation_metadata.csv"
    assert header == reference.read_text().splitlines()[0]


def test_splits_are_by_patient_and_match_the_files(bench):
    root, info = bench
    folder = root / "synthetic-ct3d"
    rows = _rows(folder / "splits.csv")
    patients: dict[str, set[str]] = {}
    for row in rows:
        assert row["VolumeName"].startswith(row["PatientID"] + "_")
        patients.setdefault(row["split"], set()).add(row["PatientID"])
    assert set(patients) == {"train", "val", "test"}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert Counter(row["split"] for row in rows) == {"train": 5, "val": 2, "test": 3}
    test_names = {row["VolumeName"] for row in rows if row["split"] == "test"}
    assert test_names == {row["VolumeName"] for row in _rows(folder / TEST_LABELS)}
    assert info["splits"]["test"]["volumes"] == 3 and info["volumes"] == 10


def test_benchmark_json_hashes_prevalence_and_label_noise(bench):
    root, _ = bench
    folder = root / "synthetic-ct3d"
    info = json.loads((folder / "benchmark.json").read_text())
    assert info["name"] == "synthetic-ct3d" and info["version"] == 1 and info["seed"] == 3
    assert info["generator"]["spec"]["matrix"] == TINY.matrix
    assert {name: sha256_file(folder / name) for name in TABLES} == info["sha256"]
    labels = _rows(folder / "dataset_multi_abnormality_labels_train_predicted_labels.csv") + _rows(folder / TEST_LABELS)
    for name in CLASSES:
        assert info["prevalence"][name] == round(sum(row[name] == "1" for row in labels) / len(labels), 4)
    drawn = {(row["VolumeName"], row["finding"]) for row in _rows(folder / "drawn_findings.csv")}
    labelled = {(row["VolumeName"], name) for row in labels for name in CLASSES if row[name] == "1"}
    flips = {(row["VolumeName"], row["finding"]) for row in _rows(folder / "label_noise.csv")}
    assert flips == drawn ^ labelled
    assert "Zero-shot test set" in (folder / "README.md").read_text()


def test_prevalence_is_within_range_and_findings_co_occur():
    counts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    n = 3000
    for i in range(n):
        rng = np.random.default_rng([11, i])
        names = {f.name for f in sample_findings(rng, sample_patient(rng))}
        counts.update(names)
        pairs.update((a, b) for a in names for b in names if a < b)
    prevalence = {name: counts[name] / n for name in FINDINGS}
    assert all(0.08 <= p <= 0.30 for p in prevalence.values()), prevalence
    joint = pairs[("Arterial wall calcification", "Coronary artery wall calcification")] / n
    expected = prevalence["Arterial wall calcification"] * prevalence["Coronary artery wall calcification"]
    assert joint > 2 * expected


def test_follow_up_keeps_chronic_findings():
    rng = np.random.default_rng(5)
    for _ in range(200):
        patient = sample_patient(rng)
        first = {f.name: f for f in sample_findings(rng, patient)}
        second = {f.name: f for f in sample_findings(rng, patient)}
        for name in ("Lung nodule", "Emphysema", "Hiatal hernia", "Medical material"):
            assert (name in first) == (name in second)
            if name in first:
                assert first[name] == second[name]


def test_reports_never_contain_a_prompt_and_have_negations_and_sides(bench):
    root, _ = bench
    for name in FINDINGS:
        assert len(POSITIVE[name]) >= 3 and len(IMPRESSION[name]) >= 3 and len(NEGATION[name]) >= 2
        assert NORMAL[name]
    texts = []
    rng = np.random.default_rng(0)
    negations = 0
    for i in range(300):
        srng = np.random.default_rng([2, i])
        findings = sample_findings(srng, sample_patient(srng))
        report = write_report(findings, rng, 6.0, 0.35, 0.7)
        texts.append(f"{report.findings} {report.impression}")
        negations += sum(kind == "negation" for kind in report.mentions.values())
        for f in findings:
            assert report.mentions[f.name] == "positive"
            if f.side in ("right", "left") and f.name != "Medical material":
                assert f.side in report.findings.lower(), (f, report.findings)
    folder = root / "synthetic-ct3d"
    for part in ("train", "validation"):
        texts += [row["Findings_EN"] + " " + row["Impressions_EN"] for row in _rows(folder / f"{part}_reports.csv")]
    assert negations > 300
    joined = "\n".join(texts).lower()
    assert "no pleural effusion" in joined and "without emphysema" in joined
    for prompt in PROMPTS:
        assert prompt not in joined, prompt


@pytest.mark.parametrize("name", FINDINGS)
def test_every_finding_changes_the_image_with_its_cue(name):
    grid = Grid((TINY.matrix, TINY.matrix, TINY.slices), (3.3, 3.3, 6.0), (-170.0, -170.0, -141.0))
    anatomy = sample_anatomy(np.random.default_rng(1), "M", 70)
    finding = Finding(name, "right", "lower", None, "severe", "", 4)
    sizes = {"Lung nodule": 14.0, "Pleural effusion": 35.0, "Pericardial effusion": 12.0, "Lymphadenopathy": 22.0,
             "Hiatal hernia": 50.0, "Cardiomegaly": 1.35}
    side = {"Emphysema": "bilateral", "Mosaic attenuation pattern": "bilateral",
            "Interlobular septal thickening": "bilateral"}
    finding = replace(finding, size_mm=sizes.get(name), side=side.get(name, "right"),
                      kind="pacemaker" if name == "Medical material" else "")
    normal, _ = render_scan(anatomy, [], grid, np.random.default_rng(2))
    abnormal, _ = render_scan(anatomy, [finding], grid, np.random.default_rng(2))
    changed = np.abs(abnormal - normal) > 50
    assert changed.sum() > 5, name
    if name == "Medical material":
        assert abnormal.max() > 1500 >= normal.max()
    if name in ("Arterial wall calcification", "Coronary artery wall calcification"):
        assert (abnormal > 300).sum() >= (normal > 300).sum() + 5  # bright specks
    if name == "Emphysema":
        assert (abnormal < -950).sum() > (normal < -950).sum() + 100
    if name in ("Pleural effusion", "Consolidation", "Atelectasis", "Lung nodule"):
        dense = (abnormal > -100) & (abnormal < 60)  # water-like density where there was lung
        assert (dense & (normal < -600)).sum() >= 3
    if name == "Pleural effusion":
        assert grid.axis(0)[np.nonzero(changed)[0]].mean() < 0  # the patient's right (LPS x < 0)
    if name == "Cardiomegaly":
        assert ((abnormal[changed] > 20) & (abnormal[changed] < 60)).mean() > 0.5  # heart grows into fat and lung

def test_load_benchmark_on_generated_output(bench):
    root, _ = bench
    config = yaml.safe_load((CONFIG_DIR / "benchmarks" / "synthetic-ct3d.yaml").read_text())
    assert config["expected"]["images"] == CT3D_V1.test_volumes
    with pytest.raises(InputError, match=f"expected {CT3D_V1.test_volumes} images"):
        load_benchmark("synthetic-ct3d", root)
    bench_ = load_benchmark("synthetic-ct3d", root, check_counts=False)
    assert bench_.labels.labels.shape == (3, 18) and bench_.class_names == CLASSES
    bench_.check_images()
    sample = next(bench_.samples())
    assert sample["image"].is_file() and sample["meta"]["geometry"].rescale_slope == 1.0


def test_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.txt").write_text("x")
    args = ["--out", str(out), "--train-volumes", "1", "--val-volumes", "0", "--test-volumes", "1"]
    assert run_cli("ct3d", main, args) == 2
    assert "not empty" in capsys.readouterr().err
    empty = tmp_path / "fresh"
    assert main(["--out", str(empty), "--train-volumes", "1", "--val-volumes", "0", "--test-volumes", "1"]) == 0
    assert "zero-shot test labels" in capsys.readouterr().out
    assert run_cli("ct3d", main, [*args[:1], str(empty), *args[2:]]) == 2
    assert main(["--out", str(empty), "--seed", "1", "--overwrite", *args[2:]]) == 0
    assert json.loads((empty / "benchmark.json").read_text())["seed"] == 1
    assert run_cli("ct3d", main, ["--out", str(tmp_path / "z"), "--train-volumes", "0", "--val-volumes", "0",
                                  "--test-volumes", "0"]) == 2
