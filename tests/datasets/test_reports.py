"""Image-report pair tables: the pairs-1 manifest, CT-RATE reports joined with metadata, encodings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from datasets.errors import InputError
from datasets.io import sha256_file
from datasets.labels.ctrate import read_ctrate_metadata
from datasets.reports import read_ctrate_reports, read_pairs_manifest

DATA = Path(__file__).resolve().parents[1] / "data" / "labels"
PAIRS = DATA / "reports" / "mimic_pairs.csv"
CTRATE = DATA / "reports" / "validation_reports.csv"


def test_pairs_manifest_sections_splits_and_samples(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="datasets.labels.base"):
        both = read_pairs_manifest(PAIRS)
    assert sha256_file(PAIRS) in caplog.text and "3 rows" in caplog.text
    assert both.sha256 == sha256_file(PAIRS) and both.format_version == "pairs-1"
    assert both.texts[0].endswith("nipple shadows.\nNo acute cardiopulmonary process.")
    assert both.texts[1] == "No acute cardiothoracic process."  # empty findings, impression only
    assert [m["split"] for m in both.meta] == ["train", "validate", "test"]
    assert both.split("test").meta[0]["view"] == "LATERAL"
    sample = next(both.samples(tmp_path))
    assert set(sample) == {"image", "mask", "text", "label", "meta"}
    assert sample["label"] is None and sample["mask"] is None and sample["image"] == tmp_path / both.image_ids[0]
    assert sample["meta"]["subject_id"] == "10000032" and sample["meta"]["study_id"] == "50414267"
    assert read_pairs_manifest(PAIRS, section="impression").texts[2] == "Left lower lobe pneumonia."
    with pytest.raises(InputError, match=r"no row has split 'val'; the splits present are \['test', 'train'"):
        both.split("val")


def test_pairs_manifest_errors(tmp_path):
    with pytest.raises(InputError, match=r"mimic_pairs.csv: row 3, column 'findings': empty report text"):
        read_pairs_manifest(PAIRS, section="findings")
    text = PAIRS.read_text(encoding="utf-8")
    (tmp_path / "v.csv").write_text(text.replace("pairs-1,files/p10/p10000764", "pairs-0,files/p10/p10000764"))
    with pytest.raises(InputError, match=r"v.csv: row 4, column 'format_version': expected 'pairs-1', got 'pairs-0'"):
        read_pairs_manifest(tmp_path / "v.csv")
    (tmp_path / "s.csv").write_text(text.replace(",train,", ",,"))
    with pytest.raises(InputError, match=r"s.csv: row 2, column 'split': empty"):
        read_pairs_manifest(tmp_path / "s.csv")
    (tmp_path / "c.csv").write_text(text.replace("study_id", "study"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['study_id'\]"):
        read_pairs_manifest(tmp_path / "c.csv")
    with pytest.raises(ValueError, match="section must be one of"):
        read_pairs_manifest(PAIRS, section="report")


def test_empty_sections_are_an_error_or_skipped_or_kept(caplog):
    """A report without the chosen section (MIMIC-CXR reports often lack IMPRESSION): each on_empty policy."""
    with pytest.raises(InputError, match=r"row 3, column 'findings': empty report text .*skip_empty_reports: true "
                                         r".*--allow-empty"):
        read_pairs_manifest(PAIRS, section="findings", on_empty="error")
    with caplog.at_level(logging.WARNING, logger="datasets.reports"):
        skipped = read_pairs_manifest(PAIRS, section="findings", on_empty="skip")
    assert "1 of 3 rows have no findings text and are left out (rows 3)" in caplog.text
    full = read_pairs_manifest(PAIRS)
    assert skipped.image_ids == [full.image_ids[0], full.image_ids[2]] and all(skipped.texts)
    assert [m["row"] for m in skipped.meta] == [2, 4]
    kept = read_pairs_manifest(PAIRS, section="findings", on_empty="keep")
    assert kept.image_ids == full.image_ids and kept.texts[1] == ""
    impressions = read_ctrate_reports(CTRATE, section="impression", on_empty="skip")
    assert [m["row"] for m in impressions.meta] == [2, 3]  # row 4 has no Impressions_EN
    with pytest.raises(ValueError, match="on_empty must be one of"):
        read_pairs_manifest(PAIRS, on_empty="drop")


def test_latin1_manifest_is_a_clear_error_unless_asked_for():
    latin1 = DATA / "reports" / "latin1_pairs.csv"
    with pytest.raises(InputError, match=r"latin1_pairs.csv: line 2 is not valid utf-8 text .*encoding='latin-1'"):
        read_pairs_manifest(latin1)
    pairs = read_pairs_manifest(latin1, encoding="latin-1")
    assert pairs.texts[0].startswith("Sin hallazgos patológicos. Índice cardiotorácico")


def test_ctrate_reports_with_metadata_join():
    geometry = read_ctrate_metadata(DATA / "ctrate" / "validation_metadata.csv")
    reports = read_ctrate_reports(CTRATE, metadata=geometry)
    assert reports.image_relpaths[0] == "valid_1/valid_1_a/valid_1_a_1.nii.gz"
    assert reports.meta[0]["split"] == "valid" and reports.meta[0]["geometry"].spacing == (0.341796875,) * 2 + (1.5,)
    assert reports.meta[1]["geometry"].rescale_intercept == -8192.0
    assert reports.texts[0] == (
        "Trachea and both main bronchi are in the midline. Millimetric nodules in both lungs.\n"
        "Millimetric nodules in both lungs."
    )
    assert reports.texts[2] == "Hiatal hernia. Peribronchial thickening in both lower lobes."
    with pytest.raises(InputError, match=r"validation_reports.csv: row 4, column 'Impressions_EN': empty report text"):
        read_ctrate_reports(CTRATE, section="impression")
    partial = {k: v for k, v in geometry.items() if k != "valid_1_a_2.nii.gz"}
    with pytest.raises(InputError, match=r"1 image id\(s\) listed in the report table .* 'valid_1_a_2.nii.gz'"):
        read_ctrate_reports(CTRATE, metadata=partial)


def test_ctrate_reports_bad_volume_name(tmp_path):
    (tmp_path / "r.csv").write_text(CTRATE.read_text().replace("valid_2_a_1.nii.gz", "scan-2.nii.gz"))
    with pytest.raises(InputError, match=r"r.csv: row 4, column 'VolumeName': 'scan-2.nii.gz' is not a CT-RATE"):
        read_ctrate_reports(tmp_path / "r.csv")
    assert read_ctrate_reports(tmp_path / "r.csv", layout="flat").image_relpaths[2] == "scan-2.nii.gz"
