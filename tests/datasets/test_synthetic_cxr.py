"""Tests of the synthetic chest-radiograph benchmark generator (datasets.synthetic.cxr), on tiny generated sets."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.benchmarks import CONFIG_DIR, read_prompt_file
from datasets.cli_utils import run_cli
from datasets.errors import InputError
from datasets.labels.chestxray14 import read_data_entry, read_image_list
from datasets.labels.chexpert import read_chexpert_csv
from datasets.reports import read_pairs_manifest
from datasets.synthetic.cxr import CHEXPERT_MAP, DATA_ENTRY_HEADER, generate_cxr, main
from datasets.synthetic.cxr_reports import IMPRESSION, NEGATION, NORMAL, NORMAL_FINDINGS, POSITIVE, write_report
from datasets.synthetic.cxr_sampling import Finding, sample_findings, sample_patient
from datasets.synthetic.cxr_spec import CXR_V1, FINDINGS

TINY = replace(CXR_V1, train_images=10, val_images=4, test_images=8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cxr") / "synthetic-cxr"
    generate_cxr(out, TINY, seed=0)
    return out


def _clean(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _sample_studies(n: int) -> list[list[Finding]]:
    studies = []
    for i in range(n):
        patient = sample_patient(np.random.default_rng([7, i]), 400.0, 192, (0.01, 0.02))
        studies.append(sample_findings(np.random.default_rng([8, i]), patient, 0, 400.0, 192, (0.01, 0.02))[1])
    return studies


def test_same_seed_same_bytes_other_seed_differs(bench, tmp_path):
    again = tmp_path / "again"
    generate_cxr(again, TINY, seed=0)
    info_a = json.loads((bench / "benchmark.json").read_text())
    info_b = json.loads((again / "benchmark.json").read_text())
    assert info_a["sha256"] == info_b["sha256"]
    for name in sorted(p.name for p in (bench / "images").iterdir()):
        assert (bench / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
    other = tmp_path / "other"
    generate_cxr(other, TINY, seed=1)
    assert json.loads((other / "benchmark.json").read_text())["sha256"] != info_a["sha256"]


def test_counts_images_and_split_by_patient(bench):
    info = json.loads((bench / "benchmark.json").read_text())
    assert {k: v["images"] for k, v in info["splits"].items()} == {"train": 10, "val": 4, "test": 8}
    labels = read_data_entry(bench / "Data_Entry_2017.csv")
    assert len(labels) == 22 and labels.class_names == list(FINDINGS)
    labels.check_images(bench / "images")
    image = np.asarray(Image.open(bench / "images" / labels.image_ids[0]))
    assert image.shape == (192, 192) and image.dtype == np.uint8 and image.std() > 20
    patient = {i: m["patient_id"] for i, m in zip(labels.image_ids, labels.meta)}
    lists = {name: read_image_list(bench / f"{name}_list.txt") for name in ("train", "val", "test", "train_val")}
    assert sorted(lists["train_val"]) == sorted(lists["train"] + lists["val"])
    assert sorted(lists["train_val"] + lists["test"]) == sorted(labels.image_ids)
    owners = [{patient[i] for i in lists[name]} for name in ("train", "val", "test")]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    pairs = read_pairs_manifest(bench / "reports.csv")
    for name in ("train", "val", "test"):
        assert sorted(Path(p).name for p in pairs.split(name).image_ids) == sorted(lists[name])


def test_data_entry_exact_chestxray14_layout(bench):
    text = (bench / "Data_Entry_2017.csv").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == DATA_ENTRY_HEADER
    assert lines[0].endswith(",") and all(line.endswith(",") for line in lines[1:])
    rows = list(csv.reader(lines))
    assert rows[0] == ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                       "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", ""]
    for row in rows[1:]:
        assert len(row) == 12 and row[-1] == "" and re.fullmatch(r"\d{8}_\d{3}\.png", row[0])
        names = row[1].split("|")
        assert names == ["No Finding"] or (names == sorted(names) and set(names) <= set(FINDINGS))
        assert row[5] in ("M", "F") and row[6] in ("PA", "AP") and row[7:9] == ["192", "192"]


def test_labels_are_drawing_plus_recorded_noise(bench):
    labels = read_data_entry(bench / "Data_Entry_2017.csv")
    drawn = np.zeros_like(labels.labels)
    index = {image_id: i for i, image_id in enumerate(labels.image_ids)}
    with open(bench / "drawn_findings.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            drawn[index[row["Image Index"]], FINDINGS.index(row["finding"])] = 1
    with open(bench / "label_noise.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            i, j = index[row["Image Index"]], FINDINGS.index(row["finding"])
            assert drawn[i, j] == int(row["drawn"]) and labels.labels[i, j] == int(row["labelled"])
            drawn[i, j] = int(row["labelled"])
    np.testing.assert_array_equal(drawn, labels.labels)


def test_chexpert_file_maps_the_labels(bench):
    table = read_chexpert_csv(bench / "chexpert_test.csv", uncertainty="ignore", blank="ignore")
    assert [Path(p).name for p in table.image_ids] == read_image_list(bench / "test_list.txt")
    cxr14 = read_data_entry(bench / "Data_Entry_2017.csv").select_images([Path(p).name for p in table.image_ids])
    for j, observation in enumerate(table.class_names):
        sources = CHEXPERT_MAP[observation]
        if observation == "No Finding":
            expected = cxr14.labels.sum(axis=1) == 0
        elif sources:
            expected = cxr14.select_classes(list(sources)).labels.max(axis=1) == 1
        else:
            expected = np.zeros(len(table), dtype=bool)
        np.testing.assert_array_equal(table.labels[:, j], expected.astype(np.float32))


def test_prevalence_and_co_occurrence():
    studies = _sample_studies(3000)
    present = np.array([[any(f.name == name for f in s) for name in FINDINGS] for s in studies])
    prevalence = present.mean(axis=0)
    assert np.all((prevalence >= 0.07) & (prevalence <= 0.26)), dict(zip(FINDINGS, prevalence.round(3)))
    effusion, cardio, edema = (FINDINGS.index(n) for n in ("Effusion", "Cardiomegaly", "Edema"))
    assert present[present[:, cardio], effusion].mean() > 2 * present[~present[:, cardio], effusion].mean()
    assert present[present[:, edema], cardio].mean() > 2 * prevalence[cardio]
    assert 0.1 < (present.sum(axis=1) == 0).mean() < 0.45


def test_paraphrases_never_equal_or_contain_the_prompts():
    prompts = [text for lines in read_prompt_file(CONFIG_DIR / "prompts" / "synthetic-cxr.txt") for text in lines]
    prompts += [f"There is {name.replace('_', ' ')}" for name in FINDINGS]
    cleaned_prompts = {_clean(p) for p in prompts}
    sentences = [s for table in (NEGATION, NORMAL) for options in table.values() for s in options]
    sentences += [s for options in NORMAL_FINDINGS for s in options]
    for table in (POSITIVE, IMPRESSION):
        for name, options in table.items():
            assert len(options) >= 3, name
            for template in options:
                for side in ("right", "left", "bilateral"):
                    sentences.append(template.format(side=side, Side=side.capitalize(), zone="lower", size="small",
                                                     Size="Small", where="lateral", ctr="0.60", diameter="30"))
    for sentence in sentences:
        assert not any(p in _clean(sentence) for p in cleaned_prompts), sentence


def test_negations_sides_and_normal_reports(bench):
    mentions = [m for s in _sample_studies(400) for m in write_report(s, np.random.default_rng(0), 0.3, 0.6).mentions]
    negative = [m for m in mentions if m.kind != "positive"]
    assert len(negative) > 400 and sum(m.kind == "negation" for m in negative) / len(negative) >= 0.3
    pairs = read_pairs_manifest(bench / "reports.csv", section="findings")
    text = {Path(i).name: t for i, t in zip(pairs.image_ids, pairs.texts)}
    impressions = {Path(i).name: m["impression"] for i, m in zip(pairs.image_ids, pairs.meta)}
    drawn: dict[str, list[dict[str, str]]] = {name: [] for name in text}
    with open(bench / "drawn_findings.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            drawn[row["Image Index"]].append(row)
    for image, rows in drawn.items():
        for row in rows:
            if row["side"] in ("right", "left"):
                assert row["side"] in text[image].lower(), (image, row)
        if not rows:
            assert impressions[image] in ("No acute cardiopulmonary abnormality.", "Normal chest radiograph.",
                                          "No active disease.")


def test_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        main(["--out", str(tmp_path), "--train-images", "1", "--val-images", "0", "--test-images", "0"])
    status = run_cli("cxr", main, ["--out", str(tmp_path), "--train-images", "1"])
    assert status == 2 and "not empty" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "new"), "--train-images", "2", "--val-images", "0", "--test-images", "1"]) == 0
    assert len(list((tmp_path / "new" / "images").iterdir())) == 3
